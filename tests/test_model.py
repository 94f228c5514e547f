"""PhariaLM: shapes, masks, norms, MoE routing, sharing, I/O, generation and the `model info` CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from pharia.config import ModelConfig, load_config
from pharia.model.attention import build_attention_mask, sliding_window_mask
from pharia.model.cli import app as model_app
from pharia.model.generate import generate, sample_next_token
from pharia.model.io import load_pretrained, save_pretrained
from pharia.model.layers import RMSNorm, default_d_ff
from pharia.model.model import PhariaLM, build_model
from pharia.model.moe import MixtureOfExperts, Routing, load_balancing_loss

VOCAB = 96


def small_cfg(**overrides: object) -> ModelConfig:
    base: dict[str, object] = {"vocab_size": VOCAB, "d_model": 32, "n_layers": 2, "n_heads": 4, "max_seq_len": 32}
    return ModelConfig(**{**base, **overrides})


def seeded_model(cfg: ModelConfig, seed: int = 0) -> PhariaLM:
    torch.manual_seed(seed)
    return PhariaLM(cfg).eval()


# ------------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize(
    "overrides",
    [{}, {"attention": "sparse", "sparse_window": 4}, {"n_experts": 4, "top_k": 2}, {"tie_embeddings": False}],
    ids=["dense", "sparse", "moe", "untied"],
)
def test_forward_shapes_and_loss(overrides: dict) -> None:
    cfg = small_cfg(**overrides)
    model = seeded_model(cfg)
    ids, targets = torch.randint(0, VOCAB, (2, 3, 20))
    out = model(ids, targets=targets)
    assert out.logits.shape == (3, 20, VOCAB)
    assert out.loss is not None and out.loss.dim() == 0
    # at initialisation the prediction is close to uniform: loss on random targets near ln(V)
    assert abs(out.loss.item() - math.log(VOCAB)) < 0.5
    assert (out.aux_loss is not None) == (cfg.n_experts > 1)


def test_loss_ignores_minus_100_targets() -> None:
    model = seeded_model(small_cfg())
    ids = torch.randint(0, VOCAB, (2, 16))
    targets = ids.clone()
    targets[:, 8:] = -100
    out = model(ids, targets=targets)
    logits = out.logits[:, :8].reshape(-1, VOCAB)
    expected = torch.nn.functional.cross_entropy(logits, ids[:, :8].reshape(-1))
    assert torch.allclose(out.loss, expected, atol=1e-6)


def test_too_long_input_is_rejected() -> None:
    model = seeded_model(small_cfg(max_seq_len=16))
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_default_d_ff_is_eight_thirds_rounded_to_eight() -> None:
    assert default_d_ff(128) == 344  # 341.33 -> 344
    assert default_d_ff(4096) == 10928
    assert all(default_d_ff(d) % 8 == 0 and default_d_ff(d) >= 8 * d / 3 for d in (8, 96, 100, 768))


# ------------------------------------------------------------------------------------- masks
@pytest.mark.parametrize("attention", ["dense", "sparse"])
def test_future_tokens_never_change_earlier_logits(attention: str) -> None:
    model = seeded_model(small_cfg(attention=attention, sparse_window=5))
    ids = torch.randint(0, VOCAB, (1, 24))
    base = model(ids).logits
    for position in (5, 12, 23):
        changed = ids.clone()
        changed[0, position] = (changed[0, position] + 1) % VOCAB
        logits = model(changed).logits
        assert torch.equal(logits[:, :position], base[:, :position])
        assert not torch.allclose(logits[:, position], base[:, position])


def test_sliding_window_mask_matches_definition() -> None:
    mask = sliding_window_mask(7, 3)
    for i in range(7):
        for j in range(7):
            assert bool(mask[i, j]) == (j <= i and i - j < 3)


def test_sparse_attention_sees_only_the_window() -> None:
    """One layer, window w (blocks of 1, none selected): token p influences outputs p .. p+w-1 and
    nothing from p+w on."""
    window = 4
    cfg = small_cfg(n_layers=1, attention="sparse", sparse_window=window, sparse_block_size=1, sparse_top_k_blocks=0)
    model = seeded_model(cfg)
    ids = torch.randint(0, VOCAB, (1, 20))
    base = model(ids).logits
    changed = ids.clone()
    changed[0, 6] = (changed[0, 6] + 1) % VOCAB
    logits = model(changed).logits
    for position in range(6, 6 + window):
        assert not torch.allclose(logits[0, position], base[0, position])
    assert torch.allclose(logits[0, 6 + window :], base[0, 6 + window :], atol=1e-6)


def test_padding_mask_hides_padding_and_keeps_rows_finite() -> None:
    key_padding = torch.tensor([[False, False, True, True]])
    mask = build_attention_mask(4, window=None, key_padding=key_padding)
    assert mask.shape == (1, 1, 4, 4)
    assert not mask[0, 0, 2:, :2].any()  # real queries never see padding
    assert mask[0, 0].diagonal().all()  # padded queries attend to themselves: no all-masked row
    model = seeded_model(small_cfg())
    out = model(torch.randint(0, VOCAB, (1, 4)), attention_mask=key_padding)
    assert torch.isfinite(out.logits).all()


# --------------------------------------------------------------------------------- precision
def test_rmsnorm_computes_in_fp32_under_bf16() -> None:
    torch.manual_seed(0)
    norm = RMSNorm(512)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = (torch.randn(4, 512) * 30).bfloat16()
    reference = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + norm.eps) * norm.weight
    out = norm(x)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, reference.bfloat16())
    # the same arithmetic in bf16 gives a different answer: the fp32 path is not a no-op
    x_bf16, w_bf16 = x, norm.weight.bfloat16()
    naive = x_bf16 * torch.rsqrt(x_bf16.pow(2).mean(-1, keepdim=True) + norm.eps) * w_bf16
    assert not torch.equal(naive, out)


def test_model_runs_in_bf16() -> None:
    model = seeded_model(small_cfg(n_experts=2)).bfloat16()
    ids = torch.randint(0, VOCAB, (2, 16))
    out = model(ids, targets=ids)
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)


# ---------------------------------------------------------------------------------------- MoE
def test_every_token_goes_to_top_k_distinct_experts_with_softmax_gates() -> None:
    torch.manual_seed(0)
    moe = MixtureOfExperts(d_model=16, d_ff=24, n_experts=4, top_k=2)
    tokens = torch.randn(50, 16)
    routing = moe.route(tokens)
    assert routing.experts.shape == (50, 2) and routing.gates.shape == (50, 2)
    assert (routing.experts[:, 0] != routing.experts[:, 1]).all()
    assert torch.allclose(routing.gates.sum(-1), torch.ones(50))
    assert torch.allclose(routing.probs.sum(-1), torch.ones(50))
    # the chosen experts are the most probable ones
    best = routing.probs.topk(2, dim=-1).indices
    assert torch.equal(routing.experts, best)
    # and the output is exactly the gated sum of the chosen experts' outputs
    out, _, _ = moe(tokens[None])
    for t in (0, 17, 49):
        expected = sum(
            routing.gates[t, s] * moe.experts[int(routing.experts[t, s])](tokens[t : t + 1])[0] for s in range(2)
        )
        assert torch.allclose(out[0, t], expected, atol=1e-6)


def test_top1_gate_is_the_router_probability() -> None:
    torch.manual_seed(1)
    moe = MixtureOfExperts(d_model=8, d_ff=16, n_experts=3, top_k=1)
    routing = moe.route(torch.randn(10, 8))
    assert torch.allclose(routing.gates[:, 0], routing.probs.max(dim=-1).values)


def test_load_balancing_loss_is_one_when_balanced_and_higher_when_not() -> None:
    n, e = 8, 4
    uniform = torch.full((n, e), 1 / e)
    balanced = Routing(experts=torch.arange(n)[:, None] % e, gates=torch.ones(n, 1), probs=uniform)
    assert load_balancing_loss(balanced, e).item() == pytest.approx(1.0)
    skewed_probs = torch.tensor([[0.7, 0.1, 0.1, 0.1]]).repeat(n, 1)
    collapsed = Routing(experts=torch.zeros(n, 1, dtype=torch.long), gates=torch.ones(n, 1), probs=skewed_probs)
    assert load_balancing_loss(collapsed, e).item() == pytest.approx(4 * 0.7)


def test_aux_loss_trains_the_router() -> None:
    model = seeded_model(small_cfg(n_experts=4, top_k=1)).train()
    ids = torch.randint(0, VOCAB, (2, 16))
    out = model(ids, targets=ids)
    out.aux_loss.backward()
    router = model.blocks[0].mlp.router.weight
    assert router.grad is not None and router.grad.abs().sum() > 0
    assert out.aux_loss.item() >= 1.0 - 1e-5  # E·Σ f·P >= 1 only up to rounding for top-1 routing


def test_every_expert_receives_a_gradient_even_if_unused() -> None:
    model = seeded_model(small_cfg(n_experts=8, top_k=1)).train()
    ids = torch.randint(0, VOCAB, (1, 2))  # 2 tokens cannot reach 8 experts
    model(ids, targets=ids).loss.backward()
    assert all(p.grad is not None for p in model.parameters())


# ------------------------------------------------------------------------------------ sharing
def test_cross_layer_sharing_reduces_unique_parameters() -> None:
    plain = build_model(small_cfg(n_layers=4))
    shared = build_model(small_cfg(n_layers=4, share_group=2))
    assert len(shared.blocks) == 2 and shared.layers()[0] is shared.layers()[1]
    assert shared.layers()[1] is not shared.layers()[2]
    p, s = plain.num_parameters(), shared.num_parameters()
    assert s.total == p.total
    block = sum(x.numel() for x in plain.blocks[0].parameters())
    assert s.unique == p.unique - 2 * block


def test_tied_embeddings_share_one_tensor() -> None:
    tied, untied = build_model(small_cfg()), build_model(small_cfg(tie_embeddings=False))
    assert tied.lm_head.weight is tied.tok_emb.weight
    assert untied.num_parameters().unique - tied.num_parameters().unique == VOCAB * 32


def test_moe_active_parameters() -> None:
    cfg = small_cfg(n_experts=4, top_k=1, d_ff=40)
    counts = build_model(cfg).num_parameters()
    expert = 3 * 32 * 40
    assert counts.total - counts.active == cfg.n_layers * 3 * expert


def test_activation_checkpointing_gives_the_same_gradients() -> None:
    cfg = small_cfg(n_experts=2)
    ids = torch.randint(0, VOCAB, (2, 16))
    grads = []
    for enabled in (False, True):
        model = seeded_model(cfg).train().set_activation_checkpointing(enabled)
        out = model(ids, targets=ids)
        (out.loss + 0.01 * out.aux_loss).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for plain, recomputed in zip(*grads, strict=True):
        assert torch.allclose(plain, recomputed, atol=1e-6)


# ----------------------------------------------------------------------------------------- io
def test_save_load_round_trip_gives_identical_logits(tmp_path) -> None:
    cfg = small_cfg(n_layers=4, share_group=2, n_experts=3, top_k=2, attention="sparse", sparse_window=6)
    model = seeded_model(cfg)
    out_dir = save_pretrained(model, cfg, tmp_path / "model")
    assert sorted(p.name for p in out_dir.iterdir()) == ["config.json", "model.safetensors"]
    assert ModelConfig.model_validate(json.loads((out_dir / "config.json").read_text())) == cfg
    loaded, loaded_cfg = load_pretrained(out_dir)
    assert loaded_cfg == cfg and not loaded.training
    assert loaded.lm_head.weight is loaded.tok_emb.weight
    assert loaded.layers()[0] is loaded.layers()[1]
    ids = torch.randint(0, VOCAB, (2, 20))
    assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_save_replaces_atomically_and_leaves_no_temporaries(tmp_path) -> None:
    cfg = small_cfg()
    save_pretrained(seeded_model(cfg, seed=0), cfg, tmp_path / "model")
    second = seeded_model(cfg, seed=1)
    save_pretrained(second, cfg, tmp_path / "model")
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    loaded, _ = load_pretrained(tmp_path / "model")
    assert torch.equal(loaded.tok_emb.weight, second.tok_emb.weight)


def test_load_rejects_weights_of_another_shape(tmp_path) -> None:
    from pharia.errors import PhariaError

    save_pretrained(seeded_model(small_cfg()), small_cfg(), tmp_path / "model")
    (tmp_path / "model" / "config.json").write_text(small_cfg(n_layers=3).model_dump_json())
    with pytest.raises(PhariaError, match="does not match its config"):
        load_pretrained(tmp_path / "model")


# --------------------------------------------------------------------------------- generation
def test_generation_respects_max_new_tokens_and_is_seeded() -> None:
    model = seeded_model(small_cfg())
    prompts = [[5, 6, 7], [9]]
    first = generate(model, prompts, max_new_tokens=6, temperature=1.0, generator=torch.Generator().manual_seed(3))
    again = generate(model, prompts, max_new_tokens=6, temperature=1.0, generator=torch.Generator().manual_seed(3))
    assert [len(row) for row in first] == [6, 6]
    assert first == again
    assert all(0 <= t < VOCAB for row in first for t in row)


def test_generation_stops_each_row_at_eos() -> None:
    model = seeded_model(small_cfg())
    prompts = [[5, 6, 7], [20, 21, 22, 23]]
    greedy = generate(model, prompts, max_new_tokens=5, temperature=0)
    eos = greedy[0][2]  # the token row 0 emits third becomes the end-of-sequence token
    stopped = generate(model, prompts, max_new_tokens=5, temperature=0, eos_token_id=eos)
    assert stopped[0] == greedy[0][: greedy[0].index(eos)]
    expected_row1 = greedy[1][: greedy[1].index(eos)] if eos in greedy[1] else greedy[1]
    assert stopped[1] == expected_row1


def test_batched_left_padded_generation_equals_one_row_at_a_time() -> None:
    for attention in ("dense", "sparse"):
        model = seeded_model(small_cfg(attention=attention, sparse_window=4))
        prompts = [[3, 4, 5, 6, 7, 8, 9], [11, 12], [40]]
        batched = generate(model, prompts, max_new_tokens=8, temperature=0, pad_token_id=1)
        single = [generate(model, [p], max_new_tokens=8, temperature=0)[0] for p in prompts]
        assert batched == single


def test_generation_truncates_context_to_max_seq_len() -> None:
    model = seeded_model(small_cfg(max_seq_len=16))
    prompt = list(range(2, 30))  # 28 tokens > 16
    out = generate(model, [prompt], max_new_tokens=4, temperature=0)
    assert len(out[0]) == 4
    # the first new token only depends on the last 16 prompt tokens
    expected = int(model(torch.tensor([prompt[-16:]])).logits[0, -1].argmax())
    assert out[0][0] == expected


def test_top_p_keeps_only_the_nucleus() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    generator = torch.Generator().manual_seed(0)
    draws = {int(sample_next_token(logits, 1.0, 0.7, generator)) for _ in range(300)}
    assert draws == {0, 1}


# ---------------------------------------------------------------------------------- training
def test_tiny_model_overfits_one_batch_in_50_steps() -> None:
    torch.manual_seed(0)
    cfg = small_cfg(d_model=64, n_heads=4)
    model = PhariaLM(cfg).train()
    ids = torch.randint(0, VOCAB, (8, 33))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(50):
        loss = model(ids[:, :-1], targets=ids[:, 1:]).loss
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert first > 4.0
    assert loss.item() < 0.1, f"loss {loss.item():.3f} after 50 steps on one batch"


# ------------------------------------------------------------------------------------ the CLI
def test_model_info_tiny_matches_a_real_instantiation() -> None:
    result = CliRunner().invoke(model_app, ["info", "--config", "tiny", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    counts = PhariaLM(load_config("tiny").model).num_parameters()
    assert report["params_total"] == counts.total and report["params_unique"] == counts.unique
    assert report["model"]["d_ff"] == 344


def test_model_info_7b_preset_on_meta_device() -> None:
    result = CliRunner().invoke(model_app, ["info", "--config", "pharia-1-7b", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    print(
        f"pharia-1-7b: total {report['params_total']:,} unique {report['params_unique']:,} "
        f"active {report['params_active']:,}"
    )
    assert 6.0e9 < report["params_total"] < 7.5e9  # SPEC.md: 7 billion parameters
    assert report["params_active"] < report["params_total"]  # 4 experts, top-1


def test_model_info_text_output_and_help() -> None:
    runner = CliRunner()
    result = runner.invoke(model_app, ["info", "--config", "tiny"])
    assert result.exit_code == 0 and "params total" in result.output and "unique" in result.output
    assert "meta device" in runner.invoke(model_app, ["info", "--help"]).output
