"""Continuous evaluation: the evaluation harness's `fast` suite on the weights at every
`eval_every` steps, run on rank 0 and logged with the step.

The hook is a plain callable `(model, step) -> {metric: value}`; it wraps the model in place (no
copy beyond the gathered fp32 one the caller makes) as an `EvalLM` and runs exactly the suite that
`pharia eval --suite fast --split validation` runs, with the same rows and seeds at every step, so
the curves move only because the weights do. Held-out text comes from the `validation` split only
(the final evaluation scores `heldout`), so choosing checkpoints by these curves never touches the
test text; shards without a validation split leave the `heldout` task "not evaluated" here. Metric
names are the suite's, prefixed `fast_` in MLflow.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from pharia.config import EvalConfig

EvalHook = Callable[[torch.nn.Module, int], dict[str, float]]
PREFIX = "fast_"


class FastSuite:
    """`__call__(model, step)`: the fast suite's metrics (those with a value) prefixed `fast_`."""

    def __init__(self, shards_dir: Path, eval_cfg: EvalConfig, *, label: str) -> None:
        from pharia.data.tokenizer import load_tokenizer
        from pharia.evaluate.pipeline_inputs import load_canaries, pipeline_inputs
        from pharia.evaluate.suite import check_suite
        from pharia.evaluate.tasks.base import PipelineInputs
        from pharia.train.data import ShardSet

        check_suite(eval_cfg, "fast")
        shards = ShardSet.open(Path(shards_dir))
        manifest = json.loads((Path(shards_dir) / "manifest.json").read_text(encoding="utf-8"))
        if shards.files.get("validation"):
            self.inputs = pipeline_inputs(
                shards_dir,
                split="validation",
                chunk_tokens=int(manifest["seq_len"]),
                toxicity_threshold=eval_cfg.toxicity_threshold,
            )
        else:  # never fall back to `heldout`: checkpoints chosen by these curves would have seen the test text
            canaries, canaries_sha = load_canaries(shards_dir)
            self.inputs = PipelineInputs(
                canaries=canaries, canaries_sha256=canaries_sha, toxicity_threshold=eval_cfg.toxicity_threshold
            )
        self.tokenizer_file = shards.tokenizer_file
        self.tokenizer = load_tokenizer(self.tokenizer_file)
        self.eos, self.pad = shards.eos_token_id, shards.pad_token_id
        self.cfg = eval_cfg
        self.label = label

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module, step: int) -> dict[str, float]:
        from pharia.evaluate.adapters.pharia_lm import PhariaEvalLM
        from pharia.evaluate.suite import run_suite

        lm = PhariaEvalLM(
            model,  # type: ignore[arg-type]
            self.tokenizer,
            eos_token_id=self.eos,
            pad_token_id=self.pad,
            batch_size=self.cfg.batch_size,
            model_id=f"{self.label}@step{step}",
            tokenizer_file=self.tokenizer_file,
        )
        result = run_suite(lm, "fast", self.cfg, self.inputs, show_progress=False)
        return {PREFIX + name: float(v) for name, v in result["metrics"].items() if v is not None}
