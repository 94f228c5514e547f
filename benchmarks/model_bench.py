"""Model-level benchmarks of `make bench`: dynamic sparse vs dense attention, MoE vs dense MLP.

Called by benchmarks/run.py with its interleaving and ratio machinery, and reported in the JSON's
`model_benchmarks` section (the pipeline benchmarks keep their own `benchmarks` section). CPU, fp32.

  sparse_attention_T{512,1024,2048}  forward+backward of the attention op alone on (B, H, T, d) =
      (1, 4, T, 64): SDPA causal (dense baseline) vs pharia.model.sparse's block-gathered reference
      (window 128 ∪ own block of 64, plus 2 selected blocks of 64: < 320 keys per query). Ratio:
      sparse step_ms / dense step_ms in the same round; it should fall as T grows (dense is
      quadratic, sparse linear).
  moe_vs_dense  forward+backward of one MLP layer over 2048 tokens of width 256: a dense SwiGLU of
      width 688 (baseline) vs 4 SwiGLU experts of width 688 with top-1 routing and capacity factor
      1.25 — equal active parameters per token (the router's 256·4 aside). Ratio: MoE step_ms /
      dense step_ms, i.e. the price of routing, gather/scatter and the per-expert loop.

Both candidates of a benchmark see the same inputs; the report records the max difference between
sparse and dense outputs at window ≥ T as a correctness check of the same code path.
"""

from __future__ import annotations

from typing import Any

SPARSE_SEQS = (512, 1024, 2048)
SPARSE_SHAPE = {"batch": 1, "heads": 4, "head_dim": 64, "window": 128, "block": 64, "top_k": 2}
MOE_SHAPE = {"tokens": 2048, "d_model": 256, "d_ff": 688, "n_experts": 4, "top_k": 1, "capacity_factor": 1.25}


def _attention_steps(seq: int) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from pharia.model.sparse import sparse_attention_reference

    s = SPARSE_SHAPE
    generator = torch.Generator().manual_seed(seq)
    shape = (s["batch"], s["heads"], seq, s["head_dim"])
    q, k, v = (torch.randn(shape, generator=generator, requires_grad=True) for _ in range(3))
    grad = torch.randn(shape, generator=generator)

    def dense(_: int) -> float:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        out.backward(grad)
        return float(out.detach().abs().mean())

    def sparse(_: int) -> float:
        out = sparse_attention_reference(q, k, v, window=s["window"], block=s["block"], top_k=s["top_k"])
        out.backward(grad)
        return float(out.detach().abs().mean())

    with torch.no_grad():
        full = sparse_attention_reference(q, k, v, window=seq, block=s["block"], top_k=s["top_k"])
        check = float((full - F.scaled_dot_product_attention(q, k, v, is_causal=True)).abs().max())
    return {"steps": {"dense": dense, "sparse": sparse}, "dense_equivalence_max_diff": check}


def _moe_steps() -> dict[str, Any]:
    import torch

    from pharia.model.layers import SwiGLU
    from pharia.model.moe import MixtureOfExperts

    m = MOE_SHAPE
    torch.manual_seed(0)
    dense_mlp = SwiGLU(m["d_model"], m["d_ff"])
    moe = MixtureOfExperts(
        m["d_model"], m["d_ff"], m["n_experts"], m["top_k"], capacity_factor=m["capacity_factor"]
    ).train()
    x = torch.randn(1, m["tokens"], m["d_model"])
    dropped: list[float] = []

    def dense(_: int) -> float:
        out = dense_mlp(x)
        out.pow(2).mean().backward()
        return float(out.detach().abs().mean())

    def mixture(_: int) -> float:  # the fixed-shape padded dispatch (the GPU default)
        moe.padded_dispatch = True
        out, aux, z_loss = moe(x)
        (out.pow(2).mean() + 0.01 * aux + 1e-3 * z_loss).backward()
        assert moe.last_stats is not None
        dropped.append(moe.last_stats.dropped / moe.last_stats.assignments)
        return float(out.detach().abs().mean())

    def mixture_loop(_: int) -> float:  # the reference per-expert loop (one host sync per expert)
        moe.padded_dispatch = False
        out, aux, z_loss = moe(x)
        (out.pow(2).mean() + 0.01 * aux + 1e-3 * z_loss).backward()
        return float(out.detach().abs().mean())

    active_dense = sum(p.numel() for p in dense_mlp.parameters())
    active_moe = sum(p.numel() for p in moe.experts[0].parameters()) * m["top_k"] + moe.router.weight.numel()
    return {
        "steps": {"dense": dense, "moe": mixture, "moe_loop": mixture_loop},
        "active_params": {"dense": active_dense, "moe": active_moe},
        "dropped": dropped,
    }


def run_model_benchmarks(settings: Any, interleave: Any, summarise: Any) -> dict[str, Any]:
    """Every model benchmark, each a dict shaped like run.py's (baseline, metric, candidates, ...)."""
    results: dict[str, Any] = {}
    # at most 8 rounds: these ratios are stable (no optimizer state, no I/O) and `make bench` stays short
    rounds, steps, warmup = min(settings.rounds, 8), max(1, settings.steps), max(1, settings.warmup)
    for seq in SPARSE_SEQS:
        bench = _attention_steps(seq)
        series = interleave(bench["steps"], rounds, steps, warmup)
        results[f"sparse_attention_T{seq}"] = {
            "description": f"attention op forward+backward at T={seq}: block-sparse reference vs SDPA causal",
            "baseline": "dense",
            "metric": "step_ms",
            "shape": {**SPARSE_SHAPE, "seq": seq},
            "keys_per_query_sparse_max": SPARSE_SHAPE["window"] + SPARSE_SHAPE["block"] * (1 + SPARSE_SHAPE["top_k"]),
            "dense_equivalence_max_diff": bench["dense_equivalence_max_diff"],
            "candidates": summarise(series, "dense", "step_ms"),
            "ratio_definition": "median over rounds of sparse step_ms / dense step_ms in the same round",
        }
    bench = _moe_steps()
    series = interleave(bench["steps"], rounds, steps, warmup)
    results["moe_vs_dense"] = {
        "description": (
            "one MLP layer forward+backward: 4 experts top-1 vs dense SwiGLU, equal active params; "
            "moe = fixed-shape capacity dispatch (GPU default), moe_loop = the reference loop (CPU default)"
        ),
        "baseline": "dense",
        "metric": "step_ms",
        "shape": MOE_SHAPE,
        "active_params": bench["active_params"],
        "moe_drop_rate_mean": sum(bench["dropped"]) / max(1, len(bench["dropped"])),
        "candidates": summarise(series, "dense", "step_ms"),
        "ratio_definition": "median over rounds of moe step_ms / dense step_ms in the same round",
    }
    return results
