"""One call from a model path to written results: resolve the model (training output, checkpoint,
pharia model directory, Hugging Face directory or GGUF file), read the pipeline's inputs, run the
suite, judge the gates, write DIR. Used by `pharia eval`, the pipeline's evaluation task and the
trainer's after-stage evaluation, so all three produce identical files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pharia.config import EvalConfig, GatesConfig
from pharia.errors import PhariaError
from pharia.evaluate.pipeline_inputs import pipeline_inputs
from pharia.evaluate.suite import check_suite, gates_for, metric_specs, run_suite, write_outputs


def evaluate_model(
    model: Path,
    *,
    suite: str,
    eval_cfg: EvalConfig,
    gates_cfg: GatesConfig | None,
    out_dir: Path,
    shards_dir: Path | None = None,
    tokenizer: Path | None = None,
    device: str = "auto",
    split: str = "heldout",
    show_progress: bool = True,
) -> dict[str, Any]:
    """Evaluate `model` with `suite`; returns metrics.json's document with `gates` added."""
    from pharia.evaluate.adapters.resolve import load_eval_lm
    from pharia.evaluate.gates import check_gate_config

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    check_suite(eval_cfg, suite)  # config errors before the (slow) model load
    if gates_cfg is not None:
        check_gate_config(gates_cfg, metric_specs())
    chunk_tokens = 256
    if shards_dir is not None:
        manifest_file = Path(shards_dir) / "manifest.json"
        if not manifest_file.is_file():
            raise PhariaError(f"{shards_dir}: no manifest.json; expected a packed shard directory (pharia data pack)")
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        chunk_tokens = int(manifest.get("seq_len", chunk_tokens))
    inputs = pipeline_inputs(
        shards_dir, split=split, chunk_tokens=chunk_tokens, toxicity_threshold=eval_cfg.toxicity_threshold
    )
    lm = load_eval_lm(Path(model), batch_size=eval_cfg.batch_size, tokenizer=tokenizer, device=device)
    result = run_suite(lm, suite, eval_cfg, inputs, show_progress=show_progress)
    result["inputs"] = {
        "shards_dir": str(shards_dir) if shards_dir else None,
        "split": split,
        "heldout_sha256": inputs.heldout_sha256,
        "canaries_sha256": inputs.canaries_sha256,
    }
    gates = gates_for(result, gates_cfg) if gates_cfg is not None else None
    write_outputs(result, gates, Path(out_dir))
    result.pop("samples", None)
    result["gates"] = gates
    return result
