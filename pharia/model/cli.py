"""`pharia model ...`: inspect model shapes without training or loading weights.

torch is imported inside the commands, not at module level, because `pharia` registers every
sub-app at start-up and `pharia config` should not pay for importing torch.
"""

from __future__ import annotations

import json

import typer

app = typer.Typer(
    help="Inspect the Pharia transformer: parameter counts and FLOPs of a preset or config file.",
    no_args_is_help=True,
)


@app.callback()
def model_group() -> None:
    """Inspect the Pharia transformer (a group even with one command, so `pharia model info` and
    this app invoked on its own take the same arguments)."""


@app.command("info")
def info(
    preset: str | None = typer.Option(None, "--preset", "-p", help="preset name: tiny, small, 1b, pharia-1-7b"),
    config: str = typer.Option(
        "tiny", "--config", "-c", help="preset name or a YAML file (when --preset is not given)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of a table"),
) -> None:
    """Print the model shape, parameter counts and training FLOPs per token. The model is built on the meta device, so
    even the 7B preset costs no memory.

    total_params: what the forward pass applies (a block shared by several layers counts once per layer).

    unique_params: what is stored, after cross-layer sharing and embedding tying.

    active_params_per_token: what one token goes through (top_k of n_experts experts).

    flops_per_token: 6 · active matmul params + 12 · layers · d_model · attended keys (sparse: window + blocks).

    pharia-1-7b (~6.7B): tied embedding/head 50,257 × 4,096 = 0.21B; attention 4 · 4,096² = 67M × 32 layers = 2.15B;
    4 Swish experts of 3 · 4,096 · 2,752 = 34M each × 32 layers = 4.33B (top-1: 1.08B active per token);
    norms and routers < 1M. share_group 1 (no layer sharing), so unique equals total.
    """
    from pharia.config import load_config
    from pharia.model.flops import model_stats
    from pharia.model.layers import default_d_ff

    cfg = load_config(preset or config)
    stats = model_stats(cfg.model)
    shape = cfg.model.model_dump(mode="json")
    shape["d_ff"] = cfg.model.d_ff or default_d_ff(cfg.model.d_model)
    report = {
        "config": cfg.name,
        **stats.as_dict(),
        # the walking pipeline's names, kept for scripts that read them
        "params_total": stats.total_params,
        "params_unique": stats.unique_params,
        "params_active": stats.active_params_per_token,
        "model": shape,
    }
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    m = cfg.model
    typer.echo(
        f"{cfg.name}: {m.n_layers} layers × d_model {m.d_model}, {m.n_heads} heads, vocab {m.vocab_size}, "
        f"context {m.max_seq_len}, {m.n_experts} expert(s) top-{m.top_k}, {m.attention} attention, "
        f"share_group {m.share_group}"
    )
    rows = (
        ("total", stats.total_params),
        ("unique", stats.unique_params),
        ("active/token", stats.active_params_per_token),
        ("embedding", stats.embedding_params),
        ("attention", stats.attention_params),
        ("mlp/experts", stats.mlp_params),
    )
    for label, value in rows:
        typer.echo(f"  params {label:<13} {value:>15,}  ({value / 1e9:.3f} B)")
    typer.echo(f"  flops/token (train)  {stats.flops_per_token:>15,}  ({stats.flops_per_token / 1e9:.2f} GFLOP)")
