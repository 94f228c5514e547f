"""`pharia eval`: run the evaluation suite on any causal LM and write metrics.json, gates.json and a
Markdown summary."""

from __future__ import annotations

import json
import time
from enum import StrEnum
from pathlib import Path

import typer


class Split(StrEnum):
    """Splits the model was not trained on: `heldout` (the test text) or `validation`."""

    heldout = "heldout"
    validation = "validation"


app = typer.Typer(help="Evaluate a model with the fast or full suite.", invoke_without_command=True)


@app.callback()
def eval_command(
    model: Path = typer.Option(
        ...,
        help="what to evaluate: a `pharia train --out` directory (its newest complete checkpoint, or the "
        "published final model), a checkpoint directory, a pharia model directory (model.safetensors + "
        "config.json), a Hugging Face model directory, or a .gguf file",
    ),
    suite: str = typer.Option("fast", help="`fast` (the continuous-evaluation subset) or `full` (every task)"),
    out: Path = typer.Option(..., help="directory for metrics.json, gates.json, summary.md and samples/"),
    config: str = typer.Option(
        "tiny", help="preset name or YAML file whose `eval:` (suites, sample sizes, seed) and `gates:` sections apply"
    ),
    shards: Path | None = typer.Option(
        None,
        help="packed shard directory (manifest.json): held-out text for perplexity/bits-per-byte/cloze and the "
        "planted canaries; default: the one recorded by the training run, else these tasks are not evaluated",
    ),
    tokenizer: Path | None = typer.Option(
        None, help="tokenizer.json for a pharia model whose training run does not record one"
    ),
    split: Split = typer.Option(Split.heldout, help="shard split to read held-out text from (never a training split)"),
    device: str = typer.Option("auto", help="auto (cuda when available), cpu or cuda[:N]"),
    batch_size: int | None = typer.Option(None, help="override eval.batch_size (recorded with every score)"),
    seed: int | None = typer.Option(None, help="override eval.seed"),
    no_gates: bool = typer.Option(False, "--no-gates", help="skip judging the config's gates"),
) -> None:
    """Score MODEL on the suite's tasks; prints one line per requirement and writes OUT."""
    from pharia.config import load_config
    from pharia.evaluate.adapters.resolve import describe_source
    from pharia.evaluate.harness import evaluate_model

    cfg = load_config(config)
    eval_cfg = cfg.eval
    if batch_size is not None or seed is not None:
        eval_cfg = eval_cfg.model_copy(
            update={k: v for k, v in (("batch_size", batch_size), ("seed", seed)) if v is not None}
        )
    source = describe_source(model, tokenizer)
    if shards is None and source.get("shards_dir"):
        shards = Path(source["shards_dir"])
    typer.echo(f"evaluating {source['path']}: {source['detail']}", err=True)
    started = time.perf_counter()
    result = evaluate_model(
        model,
        suite=suite,
        eval_cfg=eval_cfg,
        gates_cfg=None if no_gates else cfg.gates,
        out_dir=out,
        shards_dir=shards,
        tokenizer=tokenizer,
        device=device,
        split=split.value,
    )
    summary = {
        "out": str(out),
        "metrics": len(result["entries"]),
        "not_evaluated": result["skipped"],
        "wall_s": round(time.perf_counter() - started, 1),
    }
    if result.get("gates"):
        summary["requirements"] = {r["id"]: r["status"] for r in result["gates"]["requirements"]}
    typer.echo(json.dumps(summary, indent=2))
