"""Issue 4 depth: model info / FLOPs, MoE capacity and losses, KV cache, dynamic sparse attention."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from pharia.config import ModelConfig, available_presets
from pharia.model.cli import app as model_app
from pharia.model.flops import attention_context, flops_per_token, model_stats
from pharia.model.generate import generate
from pharia.model.model import PhariaLM
from pharia.model.moe import MixtureOfExperts, admitted, expert_capacity, router_z_loss
from pharia.model.sparse import (
    block_selection,
    sparse_allowed,
    sparse_attention_flex,
    sparse_attention_reference,
)

VOCAB = 96


def cfg_of(**overrides: object) -> ModelConfig:
    base: dict[str, object] = {"vocab_size": VOCAB, "d_model": 32, "n_layers": 2, "n_heads": 4, "max_seq_len": 64}
    return ModelConfig(**{**base, **overrides})


def seeded(cfg: ModelConfig, seed: int = 0) -> PhariaLM:
    torch.manual_seed(seed)
    return PhariaLM(cfg).eval()


# ------------------------------------------------------------------------- info and FLOPs
@pytest.mark.parametrize("preset", ["tiny", "small", "1b", "pharia-1-7b"])
def test_model_info_reports_counts_and_flops_for_every_sized_preset(preset: str) -> None:
    assert preset in available_presets()
    result = CliRunner().invoke(model_app, ["info", "--preset", preset, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    for key in ("total_params", "unique_params", "active_params_per_token", "flops_per_token"):
        assert isinstance(report[key], int) and report[key] > 0
    assert report["active_params_per_token"] <= report["total_params"]
    assert report["flops_per_token"] > 6 * report["active_params_per_token"] - 6 * report["embedding_params"]
    expected = {"small": (0.10e9, 0.15e9), "1b": (0.9e9, 1.2e9), "pharia-1-7b": (6.5e9, 7.5e9)}
    if preset in expected:
        low, high = expected[preset]
        assert low < report["total_params"] < high


def test_flops_per_token_follows_6n_plus_attention_term() -> None:
    cfg = cfg_of(n_layers=3, d_model=64, n_heads=4, max_seq_len=128)
    model = PhariaLM(cfg)
    matmul = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and "tok_emb" not in n)
    matmul = matmul - 0  # tied: the one (V, d) matrix counts once, as the output head
    assert cfg.tie_embeddings and model.lm_head.weight is model.tok_emb.weight
    matmul += cfg.vocab_size * cfg.d_model
    assert flops_per_token(cfg) == 6 * matmul + 12 * 3 * 64 * 128


def test_sparse_and_moe_lower_the_flops_accounting() -> None:
    dense = cfg_of(max_seq_len=2048, n_layers=2)
    sparse = cfg_of(max_seq_len=2048, n_layers=2, attention="sparse", sparse_window=64, sparse_block_size=32)
    assert attention_context(sparse) == 64 + 2 * 32 < attention_context(dense) == 2048
    assert flops_per_token(sparse) < flops_per_token(dense)
    moe = cfg_of(n_experts=4, top_k=1)
    stats = model_stats(moe)
    assert stats.active_params_per_token == stats.total_params - 2 * 3 * stats.expert_params
    assert flops_per_token(moe) < flops_per_token(cfg_of(n_experts=4, top_k=4))


def test_sharing_shows_in_unique_params_of_model_info() -> None:
    shared, plain = model_stats(cfg_of(n_layers=4, share_group=2)), model_stats(cfg_of(n_layers=4))
    assert shared.total_params == plain.total_params
    assert plain.unique_params - shared.unique_params == 2 * (plain.attention_params + plain.mlp_params) // 4 + 2 * 64


# ----------------------------------------------------------------------------------- MoE
def test_routing_conservation_every_assignment_processed_or_counted_dropped() -> None:
    torch.manual_seed(0)
    moe = MixtureOfExperts(16, 24, n_experts=4, top_k=2, capacity_factor=1.0).train()
    with torch.no_grad():
        moe.router.weight[0] += 3.0  # skew: expert 0 is everyone's favourite, so it overflows
    tokens = torch.randn(1, 64, 16)
    moe(tokens)
    stats = moe.last_stats
    assert stats is not None and stats.capacity == 32
    assert stats.dropped > 0
    assert int(stats.tokens.sum()) + stats.dropped == stats.assignments == 64 * 2
    assert int(stats.tokens.max()) <= stats.capacity
    moe.eval()
    moe(tokens)
    assert moe.last_stats is not None and moe.last_stats.dropped == 0  # inference never drops


def test_dropped_assignments_leave_the_token_to_the_residual() -> None:
    torch.manual_seed(0)
    moe = MixtureOfExperts(8, 16, n_experts=2, top_k=1, capacity_factor=0.5).train()
    tokens = torch.randn(1, 10, 8)
    out, _, _ = moe(tokens)
    routing = moe.route(tokens[0])
    keep = admitted(routing.experts, 2, capacity=3)  # ceil(0.5 · 10 · 1 / 2)
    assert (~keep).sum() == moe.last_stats.dropped  # type: ignore[union-attr]
    dropped_rows = (~keep).any(dim=-1)
    assert torch.all(out[0, dropped_rows] == 0)  # no expert output: the block adds nothing to x
    assert torch.all(out[0, ~dropped_rows].abs().sum(-1) > 0)


@pytest.mark.parametrize(("top_k", "factor"), [(1, 0.5), (2, 1.0), (2, 1.25), (3, 4.0)])
def test_padded_dispatch_equals_the_reference_loop(top_k: int, factor: float) -> None:
    """The fixed-shape training path computes exactly what the readable per-expert loop computes."""
    torch.manual_seed(top_k)
    moe = MixtureOfExperts(16, 24, n_experts=4, top_k=top_k, capacity_factor=factor).train()
    with torch.no_grad():
        moe.router.weight[1] += 2.0  # skewed, so that small factors drop assignments
    tokens = torch.randn(50, 16, requires_grad=True)
    routing = moe.route(tokens)
    capacity = expert_capacity(50, top_k, 4, factor)
    assert capacity is not None
    fast, fast_counts = moe.dispatch_padded(tokens, routing, capacity)
    reference, counts = moe.dispatch_loop(tokens, routing, admitted(routing.experts, 4, capacity))
    assert torch.allclose(fast, reference, atol=1e-6) and fast_counts.tolist() == counts.tolist()
    grad_fast = torch.autograd.grad(fast.square().sum(), tokens, retain_graph=True)[0]
    grad_reference = torch.autograd.grad(reference.square().sum(), tokens)[0]
    assert torch.allclose(grad_fast, grad_reference, atol=1e-5)
    if factor <= 1.0:  # the skew makes the small factors drop assignments: the comparison covers dropping
        assert int(counts.sum()) < 50 * top_k


def test_first_choices_win_capacity_over_second_choices() -> None:
    experts = torch.tensor([[0, 1], [1, 0], [0, 1]])  # expert 0: first choice of tokens 0, 2
    keep = admitted(experts, n_experts=2, capacity=2)
    assert keep.tolist() == [[True, True], [True, False], [True, False]]


def test_z_loss_is_mean_squared_logsumexp_and_reaches_the_trainer() -> None:
    logits = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    expected = (torch.logsumexp(logits, -1) ** 2).mean()
    assert torch.allclose(router_z_loss(logits), expected)
    model = seeded(cfg_of(n_experts=4, top_k=2)).train()
    out = model(torch.randint(0, VOCAB, (2, 16)))
    assert out.z_loss is not None and out.z_loss.requires_grad and out.z_loss > 0
    out.z_loss.backward()
    assert model.blocks[0].mlp.router.weight.grad.abs().sum() > 0
    stats = model.moe_stats()
    assert stats["expert_load_max"] >= 1.0 and 0.0 <= stats["moe_drop_rate"] < 1.0


def test_dense_model_has_no_moe_losses_or_stats() -> None:
    model = seeded(cfg_of())
    out = model(torch.randint(0, VOCAB, (1, 8)))
    assert out.aux_loss is None and out.z_loss is None and model.moe_stats() == {}


# ------------------------------------------------------------------------------ KV cache
CACHE_CASES = {
    "dense": {},
    "sparse": {"attention": "sparse", "sparse_window": 5, "sparse_block_size": 4, "sparse_top_k_blocks": 2},
    "moe-shared": {"n_experts": 3, "top_k": 2, "n_layers": 4, "share_group": 2},
}


@pytest.mark.parametrize("case", list(CACHE_CASES))
def test_cached_logits_equal_uncached_logits(case: str) -> None:
    model = seeded(cfg_of(**CACHE_CASES[case]))
    ids = torch.randint(0, VOCAB, (2, 30))
    full = model(ids).logits
    cache = model.new_cache()
    steps = [model(ids[:, :11], cache=cache).logits]  # prefill, then one token at a time
    steps += [model(ids[:, t : t + 1], cache=cache).logits for t in range(11, 30)]
    assert cache.length == 30
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


@pytest.mark.parametrize("case", list(CACHE_CASES))
def test_cached_generation_equals_uncached_with_padding_and_truncation(case: str) -> None:
    model = seeded(cfg_of(**{**CACHE_CASES[case], "max_seq_len": 24}))
    prompts = [[3, 4, 5, 6, 7, 8, 9, 10, 11], [12, 13], [40]]
    cached = generate(model, prompts, max_new_tokens=20, temperature=0, pad_token_id=1)
    uncached = generate(model, prompts, max_new_tokens=20, temperature=0, pad_token_id=1, use_cache=False)
    assert cached == uncached and [len(r) for r in cached] == [20, 20, 20]  # 9 + 20 > 24: cache rebuilt
    seeded_args = {"temperature": 0.8, "top_p": 0.9, "pad_token_id": 1}
    a = generate(model, prompts, 12, generator=torch.Generator().manual_seed(1), **seeded_args)
    b = generate(model, prompts, 12, generator=torch.Generator().manual_seed(1), use_cache=False, **seeded_args)
    assert a == b


# --------------------------------------------------------------------- dynamic sparse attention
def _qkv(batch: int = 2, heads: int = 3, seq: int = 37, dim: int = 8, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, seq, dim, generator=generator) for _ in range(3)]


@pytest.mark.parametrize(
    ("window", "block", "top_k"), [(64, 8, 0), (37, 5, 1), (3, 4, 10), (1, 1, 40)], ids=["win", "win=T", "blk", "blk1"]
)
def test_sparse_equals_dense_when_everything_is_visible(window: int, block: int, top_k: int) -> None:
    q, k, v = _qkv()
    dense = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    sparse = sparse_attention_reference(q, k, v, window=window, block=block, top_k=top_k)
    assert torch.allclose(sparse, dense, atol=1e-5)


@pytest.mark.parametrize("padded", [False, True])
def test_gathered_reference_equals_the_explicit_mask(padded: bool) -> None:
    q, k, v = _qkv(seq=45)
    key_padding = None
    if padded:
        key_padding = torch.ones(2, 45, dtype=torch.bool)
        key_padding[1, :7] = False
    gathered = sparse_attention_reference(q, k, v, window=6, block=4, top_k=2, key_padding=key_padding)
    selected = block_selection(q, k, 4, 2)
    mask = sparse_allowed(torch.arange(45), 45, selected, 6, 4, key_padding)
    explicit = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.allclose(gathered, explicit, atol=1e-5)
    assert not torch.equal(mask, torch.ones_like(mask).tril())  # the pattern really is sparse
    # every query block beyond the first chose exactly min(top_k, earlier blocks) earlier blocks
    counts = selected.sum(-1)[0, 0]
    assert counts.tolist() == [min(2, b) for b in range(len(counts))]
    assert not torch.triu(selected.long(), diagonal=0).any()  # never the own or a later block


def test_sparse_model_is_causal_with_dynamic_blocks() -> None:
    cfg = cfg_of(attention="sparse", sparse_window=3, sparse_block_size=4, sparse_top_k_blocks=2)
    model = seeded(cfg)
    ids = torch.randint(0, VOCAB, (1, 40))
    base = model(ids).logits
    for position in (4, 13, 22, 39):
        changed = ids.clone()
        changed[0, position] = (changed[0, position] + 1) % VOCAB
        logits = model(changed).logits
        assert torch.equal(logits[:, :position], base[:, :position])
        assert not torch.allclose(logits[:, position], base[:, position])


def test_sparse_reference_work_grows_linearly_with_sequence(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gathered path attends each query block to a fixed number of keys, whatever T is."""
    seen: list[tuple[int, ...]] = []
    real_sdpa = F.scaled_dot_product_attention

    def spy(q: torch.Tensor, k: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        seen.append(tuple(k.shape))
        return real_sdpa(q, k, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    for seq in (64, 256):
        sparse_attention_reference(*_qkv(batch=1, heads=1, seq=seq), window=8, block=8, top_k=2)
    (short, long) = seen
    assert short[-2] == long[-2] == 8 + 8 - 1 + 2 * 8  # keys per query block: constant
    assert long[1] == 4 * short[1]  # (heads ·) blocks: linear in T


def test_sparse_training_step_gives_finite_gradients() -> None:
    cfg = cfg_of(attention="sparse", sparse_window=4, sparse_block_size=4, sparse_top_k_blocks=2, dropout=0.1)
    model = seeded(cfg).train()
    ids = torch.randint(0, VOCAB, (2, 33))
    mask = torch.ones(2, 33, dtype=torch.bool)
    mask[1, :5] = False
    out = model(ids, targets=ids, attention_mask=mask)
    assert out.loss is not None
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.filterwarnings("ignore")
def test_flex_attention_block_mask_matches_the_reference() -> None:
    """The BlockMask the GPU path uses, run by flex_attention's eager implementation on CPU."""
    pytest.importorskip("torch.nn.attention.flex_attention")
    q, k, v = _qkv(seq=45, dim=16)
    flex = sparse_attention_flex(q, k, v, window=6, block=4, top_k=2, compile=False)
    reference = sparse_attention_reference(q, k, v, window=6, block=4, top_k=2)
    assert torch.allclose(flex, reference, atol=1e-5)
