"""`pharia model ...`: inspect model shapes without training or loading weights.

torch is imported inside the commands, not at module level, because `pharia` registers every
sub-app at start-up and `pharia config` should not pay for importing torch.
"""

from __future__ import annotations

import json

import typer

app = typer.Typer(
    help="Inspect the Pharia transformer: parameter counts of a preset or config file.",
    no_args_is_help=True,
)


@app.callback()
def model_group() -> None:
    """Inspect the Pharia transformer (a group even with one command, so `pharia model info` and
    this app invoked on its own take the same arguments)."""


@app.command("info")
def info(
    config: str = typer.Option(
        "tiny", "--config", "-c", help="preset name from configs/ (tiny, pharia-1-7b) or a YAML file"
    ),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of a table"),
) -> None:
    """Print the model shape and its parameter counts: total (each layer counts its block, even when
    shared), unique (stored) and active per token (MoE top-k). The model is built on the meta device,
    so even the 7B preset costs no memory."""
    from pharia.config import load_config
    from pharia.model.layers import default_d_ff
    from pharia.model.model import build_model

    cfg = load_config(config)
    counts = build_model(cfg.model, device="meta").num_parameters()
    shape = cfg.model.model_dump(mode="json")
    shape["d_ff"] = cfg.model.d_ff or default_d_ff(cfg.model.d_model)
    report = {
        "config": cfg.name,
        "params_total": counts.total,
        "params_unique": counts.unique,
        "params_active": counts.active,
        "model": shape,
    }
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(
        f"{cfg.name}: {cfg.model.n_layers} layers × d_model {cfg.model.d_model}, {cfg.model.n_heads} heads, "
        f"vocab {cfg.model.vocab_size}, context {cfg.model.max_seq_len}"
    )
    for label, value in (("total", counts.total), ("unique", counts.unique), ("active/token", counts.active)):
        typer.echo(f"  params {label:<13} {value:>15,}  ({value / 1e9:.3f} B)")
