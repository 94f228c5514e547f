"""`pharia eval`: score a trained model on held-out shards and toxicity probes."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="Evaluate a trained model.", invoke_without_command=True, no_args_is_help=True)


@app.callback()
def eval_command(
    model: Path = typer.Option(..., help="model directory (model.safetensors + config.json) written by training"),
    shards: Path = typer.Option(..., help="packed shard directory holding manifest.json"),
    tokenizer: Path = typer.Option(..., help="tokenizer.json of the data stage"),
    config: str = typer.Option("tiny", help="preset name or YAML file whose `eval:` section is used"),
    out: Path = typer.Option(..., help="directory for metrics.json, summary.md, generations.jsonl"),
) -> None:
    """Held-out perplexity per domain and toxicity of sampled generations."""
    from pharia.config import load_config
    from pharia.evaluate.suite import evaluate

    cfg = load_config(config)
    result = evaluate(model, shards, tokenizer, cfg.eval, out)
    typer.echo(json.dumps(result["metrics"], indent=2))
