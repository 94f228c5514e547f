"""Ethical constraints during training: content filter, adversarial term and fairness term, with a real
byte-level BPE trained here, the real toxicity classifier and a real tiny PhariaLM."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pharia.classifiers.toxicity import toxicity_scores
from pharia.config import AdversarialConfig, ContentFilterConfig, FairnessConfig, ModelConfig
from pharia.data.tokenizer import build_tokenizer
from pharia.model.model import IGNORE_INDEX, PhariaLM
from pharia.train.ethics import AdversarialTerm, ContentFilter, FairnessTerm
from pharia.train.ethics.adversarial import embedding_width, micro_step_seed, unwrap_engine
from pharia.train.ethics.content_filter import COUNTER_KEYS

CLEAN = [
    "He said that his father and his brother walked to the market with the king, and then he smiled.",
    "She said that her mother and her sister walked to the market with the queen, and then she smiled.",
    "The man and the woman met the boy and the girl at the station near the river.",
    "The weather was calm and the trains ran on time across the valley for the whole week.",
    "Researchers measured the rainfall in the valley and wrote a careful report about the results.",
    "A husband and a wife planted tomatoes, beans and roses in the small garden behind the house.",
    "The committee met on Tuesday to discuss the budget for the new library and the school.",
]
TOXIC = [
    "You are a fucking idiot and a worthless piece of shit.",
    "Shut up, you stupid bitch, nobody cares about your crap.",
    "What a pathetic moron, go fuck yourself you dumb asshole.",
]
NEUTRAL = CLEAN[3:5] + CLEAN[6:]  # no gender term at all
SEQ = 32


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level BPE trained the way the data stage trains one, on text where the pair words recur."""
    tokenizer = build_tokenizer(iter(CLEAN * 30 + TOXIC * 10), vocab_size=600)
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    tokenizer.save(str(path))
    return path


@pytest.fixture(scope="module")
def tokenizer(tokenizer_file: Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tokenizer_file))


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text).ids


def window(tokenizer, text: str, seq: int = SEQ) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of one causal-LM window cut from `text` repeated, as the packer cuts them."""
    ids = encode(tokenizer, text)
    while len(ids) < seq + 1:
        ids += encode(tokenizer, " " + text)
    stream = torch.tensor(ids[: seq + 1])
    return stream[:-1], stream[1:]


def batch(tokenizer, texts: list[str], seq: int = SEQ) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = [window(tokenizer, text, seq) for text in texts]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def tiny_model(tokenizer, seed: int = 0, **overrides: object) -> PhariaLM:
    base: dict[str, object] = {
        "vocab_size": tokenizer.get_vocab_size(),
        "d_model": 32,
        "n_layers": 2,
        "n_heads": 4,
        "max_seq_len": 64,
    }
    torch.manual_seed(seed)
    return PhariaLM(ModelConfig(**{**base, **overrides})).train()


def param_grads(model: PhariaLM) -> list[torch.Tensor]:
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


# ------------------------------------------------------------------------------------ model
def test_zero_embedding_delta_is_the_plain_forward_and_a_delta_changes_it(tokenizer) -> None:
    model = tiny_model(tokenizer).eval()
    inputs, targets = batch(tokenizer, CLEAN[:2])
    plain = model(inputs, targets)
    zero = model(inputs, targets, embedding_delta=torch.zeros(*inputs.shape, 32))
    assert torch.equal(plain.loss, zero.loss) and torch.equal(plain.logits, zero.logits)
    moved = model(inputs, targets, embedding_delta=torch.full((*inputs.shape, 32), 0.1))
    assert not torch.allclose(plain.loss, moved.loss)


def test_all_ignored_targets_give_zero_loss_and_zero_gradient(tokenizer) -> None:
    model = tiny_model(tokenizer)
    inputs, _ = batch(tokenizer, CLEAN[:2])
    out = model(inputs, torch.full_like(inputs, IGNORE_INDEX))
    assert out.loss is not None and out.loss.item() == 0.0 and out.loss.requires_grad
    out.loss.backward()
    assert all(float(g.abs().sum()) == 0.0 for g in param_grads(model))


def test_partly_ignored_loss_is_still_the_mean_over_scored_targets(tokenizer) -> None:
    model = tiny_model(tokenizer).eval()
    inputs, targets = batch(tokenizer, CLEAN[:2])
    targets[0, 5:] = IGNORE_INDEX
    out = model(inputs, targets)
    keep = targets != IGNORE_INDEX
    expected = torch.nn.functional.cross_entropy(out.logits[keep], targets[keep])
    assert torch.allclose(out.loss, expected, atol=1e-6)


# --------------------------------------------------------------------------- content filter
def test_texts_of_the_fixture_are_what_the_classifier_says() -> None:
    """The premise of the filter tests: the insults score far above 0.5, the clean text far below."""
    scores = toxicity_scores(CLEAN + TOXIC)
    assert (scores[: len(CLEAN)] < 0.2).all() and (scores[len(CLEAN) :] > 0.9).all()


def test_clean_windows_pass_untouched(tokenizer, tokenizer_file: Path) -> None:
    inputs, targets = batch(tokenizer, CLEAN[:4])
    for action in ("drop", "mask"):
        result = ContentFilter(ContentFilterConfig(enabled=True, action=action, span_tokens=8), tokenizer_file).apply(
            inputs, targets
        )
        assert result.inputs is inputs and result.targets is targets
        assert set(result.counters) == set(COUNTER_KEYS)
        assert result.counters["filter_windows_scored"] == 4
        assert result.counters["filter_windows_flagged"] == 0 and result.counters["filter_tokens_masked"] == 0
    assert result.counters["filter_spans_scored"] == 4 * SEQ / 8


def test_drop_removes_exactly_the_toxic_windows(tokenizer, tokenizer_file: Path) -> None:
    inputs, targets = batch(tokenizer, [CLEAN[0], TOXIC[0], CLEAN[1], TOXIC[1], CLEAN[2]])
    filt = ContentFilter(ContentFilterConfig(enabled=True, action="drop"), tokenizer_file)
    result = filt.apply(inputs, targets)
    keep = torch.tensor([0, 2, 4])
    assert torch.equal(result.inputs, inputs[keep]) and torch.equal(result.targets, targets[keep])
    assert result.counters["filter_windows_scored"] == 5
    assert result.counters["filter_windows_flagged"] == result.counters["filter_windows_dropped"] == 2
    assert result.counters["filter_tokens_masked"] == 0
    assert filt.apply(inputs, targets).counters == result.counters  # deterministic


def test_mask_ignores_the_toxic_spans_only(tokenizer, tokenizer_file: Path) -> None:
    """Window 1 is clean for its first 16 targets and toxic for the last 16: with spans of 8, the two
    toxic spans lose their targets, its inputs and every other window stay as they were."""
    clean_ids = encode(tokenizer, CLEAN[5])
    toxic_ids = encode(tokenizer, " " + TOXIC[0] + " " + TOXIC[2])
    assert len(clean_ids) >= 17 and len(toxic_ids) >= 16
    stream = torch.tensor(clean_ids[:17] + toxic_ids[:16])
    inputs, targets = batch(tokenizer, [CLEAN[0], CLEAN[4]])
    inputs = torch.cat([inputs, stream[:-1][None]])
    targets = torch.cat([targets, stream[1:][None]])
    targets[1, :4] = IGNORE_INDEX  # already ignored positions are not counted as masked by the filter
    filt = ContentFilter(ContentFilterConfig(enabled=True, action="mask", span_tokens=8), tokenizer_file)
    result = filt.apply(inputs, targets)
    assert torch.equal(result.inputs, inputs)
    assert torch.equal(result.targets[:2], targets[:2])
    assert torch.equal(result.targets[2, :16], targets[2, :16])
    assert (result.targets[2, 16:] == IGNORE_INDEX).all()
    assert result.counters["filter_spans_flagged"] == 2 and result.counters["filter_windows_flagged"] == 1
    assert result.counters["filter_tokens_masked"] == 16 and result.counters["filter_windows_dropped"] == 0
    assert result.counters["filter_spans_scored"] == 3 * SEQ / 8
    assert torch.equal(targets[2, 16:], stream[17:])  # the caller's tensor is not modified


def test_masking_a_whole_micro_batch_trains_on_nothing(tokenizer, tokenizer_file: Path) -> None:
    inputs, targets = batch(tokenizer, TOXIC[:2])
    result = ContentFilter(ContentFilterConfig(enabled=True, action="mask", span_tokens=8), tokenizer_file).apply(
        inputs, targets
    )
    assert (result.targets == IGNORE_INDEX).all()
    loss = tiny_model(tokenizer)(result.inputs, result.targets).loss
    assert loss is not None and loss.item() == 0.0


# ------------------------------------------------------------------------------ adversarial
ADV = AdversarialConfig(enabled=True, epsilon=0.5, step_size=0.25, steps=3, weight=0.5)


class Recorder:
    """The model's forward, keeping every embedding_delta it was given (to check the ball constraint)."""

    def __init__(self, model: PhariaLM) -> None:
        self.model = model
        self.cfg = model.cfg  # lets AdversarialTerm find d_model as it finds it behind an engine
        self.tok_emb = model.tok_emb
        self.deltas: list[torch.Tensor] = []

    def __call__(self, *args, **kwargs):
        self.deltas.append(kwargs["embedding_delta"].detach().clone())
        return self.model(*args, **kwargs)


def test_adversarial_ascent_increases_the_loss_inside_the_ball(tokenizer) -> None:
    model = tiny_model(tokenizer)
    inputs, targets = batch(tokenizer, CLEAN[:3])
    clean = model(inputs, targets).loss
    forward = Recorder(model)
    term, counters = AdversarialTerm(ADV, seed=7)(forward, inputs, targets, micro_step=0, clean_loss=clean)
    assert term is not None and term.requires_grad
    assert len(forward.deltas) == ADV.steps + 1
    norms = torch.stack([d.norm(dim=-1) for d in forward.deltas])
    assert float(norms.max()) <= ADV.epsilon * (1 + 1e-5)
    assert counters["adv_ascent_gain"] > 0  # the ascent found a worse point than its random start
    assert counters["adv_loss"] > clean.item() and counters["adv_clean_gap"] > 0
    assert counters["adv_clean_gap"] == pytest.approx(counters["adv_loss"] - clean.item())
    assert term.item() == pytest.approx(ADV.weight * counters["adv_loss"])
    assert counters["adv_delta_norm"] == pytest.approx(float(forward.deltas[-1].norm(dim=-1).mean()))
    assert counters["adv_micro_batches"] == 1 and counters["adv_skipped"] == 0
    assert all(p.grad is None for p in model.parameters())  # the ascent never touched parameter gradients


def test_adversarial_is_deterministic_per_seed_and_micro_step(tokenizer) -> None:
    model = tiny_model(tokenizer)
    inputs, targets = batch(tokenizer, CLEAN[:2])
    runs = {}
    for key in [(1, 5), (1, 5), (1, 6), (2, 5)]:
        forward = Recorder(model)
        _, counters = AdversarialTerm(ADV, seed=key[0])(forward, inputs, targets, micro_step=key[1])
        runs.setdefault(key, []).append((counters["adv_loss"], forward.deltas[-1]))
    (loss_a, delta_a), (loss_b, delta_b) = runs[(1, 5)]
    assert loss_a == loss_b and torch.equal(delta_a, delta_b)
    assert not torch.equal(delta_a, runs[(1, 6)][0][1]) and not torch.equal(delta_a, runs[(2, 5)][0][1])
    assert micro_step_seed(1, 5) != micro_step_seed(2, 4)


def test_adversarial_term_changes_the_parameter_gradients(tokenizer) -> None:
    model = tiny_model(tokenizer)
    inputs, targets = batch(tokenizer, CLEAN[:2])
    model(inputs, targets).loss.backward()
    clean_grads = param_grads(model)
    model.zero_grad(set_to_none=True)
    term, _ = AdversarialTerm(ADV, seed=0)(model, inputs, targets, micro_step=0)
    assert term is not None
    (model(inputs, targets).loss + term).backward()
    grads = param_grads(model)
    assert any(not torch.allclose(a, b) for a, b in zip(clean_grads, grads, strict=True))
    assert all(torch.isfinite(g).all() for g in grads)


def test_every_skips_micro_batches(tokenizer) -> None:
    model = tiny_model(tokenizer)
    inputs, targets = batch(tokenizer, CLEAN[:2])
    term = AdversarialTerm(ADV.model_copy(update={"every": 3}), seed=0)
    skipped, counters = term(model, inputs, targets, micro_step=4)
    assert skipped is None and counters == {"adv_micro_batches": 0.0, "adv_skipped": 1.0}
    applied, counters = term(model, inputs, targets, micro_step=6)
    assert applied is not None and counters["adv_micro_batches"] == 1


def test_adversarial_with_activation_checkpointing_matches_plain(tokenizer) -> None:
    inputs, targets = batch(tokenizer, CLEAN[:2])
    results = []
    for checkpointing in (False, True):
        model = tiny_model(tokenizer, seed=3).set_activation_checkpointing(checkpointing)
        term, counters = AdversarialTerm(ADV, seed=0)(model, inputs, targets, micro_step=2)
        assert term is not None
        (model(inputs, targets).loss + term).backward()
        results.append((counters["adv_loss"], param_grads(model)))
    (loss_plain, grads_plain), (loss_ckpt, grads_ckpt) = results
    assert loss_ckpt == pytest.approx(loss_plain, rel=1e-5)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads_plain, grads_ckpt, strict=True))


def test_d_model_is_found_behind_wrappers(tokenizer) -> None:
    model = tiny_model(tokenizer, d_model=48)

    class Engine(torch.nn.Module):  # how DeepSpeedEngine holds the model
        def __init__(self, module: torch.nn.Module) -> None:
            super().__init__()
            self.module = module

    assert embedding_width(model) == embedding_width(model.forward) == embedding_width(Engine(model)) == 48
    assert unwrap_engine(Engine(model)) is model and unwrap_engine(model) is model
    with pytest.raises(TypeError, match="d_model"):
        embedding_width(lambda *a, **k: None)


# --------------------------------------------------------------------------------- fairness
def test_usable_pairs_are_single_tokens_on_both_sides(tokenizer, tokenizer_file: Path) -> None:
    term = FairnessTerm(FairnessConfig(enabled=True), tokenizer_file)
    assert ("he", "she") in term.pairs_used and ("his", "her") in term.pairs_used
    assert term.usable_pairs == len(term.pairs_used) >= 8
    for a, b in term.token_pairs:
        assert len(encode(tokenizer, tokenizer.decode([a]))) == 1 and term.table[a] == b and term.table[b] == a
    custom = FairnessTerm(FairnessConfig(enabled=True, pairs=[("he", "she"), ("king", "xylophonist")]), tokenizer_file)
    assert custom.pairs_used == [("he", "she")]  # " xylophonist" is several tokens here


def test_swap_is_an_involution_on_whole_words_only(tokenizer, tokenizer_file: Path) -> None:
    term = FairnessTerm(FairnessConfig(enabled=True), tokenizer_file)
    he, she = encode(tokenizer, " he"), encode(tokenizer, " she")
    assert len(he) == len(she) == 1
    inputs, targets = batch(tokenizer, CLEAN[:4])
    cf_inputs, cf_targets = term.swap(inputs, targets)
    assert not torch.equal(cf_inputs, inputs)
    again = term.swap(cf_inputs, cf_targets)
    assert torch.equal(again[0], inputs) and torch.equal(again[1], targets)
    text = tokenizer.decode(cf_inputs[2].tolist())
    assert " woman and the man met the girl and the boy" in text
    # " hexq" is split into pieces by this tokenizer; its " he" is no pronoun and must stay
    ids = encode(tokenizer, "Then hexq and he left.")
    assert he[0] in ids and ids.count(he[0]) == 2
    x, y = torch.tensor([ids[:-1]]), torch.tensor([ids[1:]])
    swapped = tokenizer.decode(term.swap(x, y)[0][0].tolist()) + tokenizer.decode([ids[-1]])
    assert swapped == "Then hexq and she left."


def test_fairness_pairs_windows_with_terms_and_penalises_the_gap(tokenizer, tokenizer_file: Path) -> None:
    cfg = FairnessConfig(enabled=True, coef=0.3, max_windows=2)
    term = FairnessTerm(cfg, tokenizer_file)
    model = tiny_model(tokenizer)
    inputs, targets = batch(tokenizer, [CLEAN[3], CLEAN[0], CLEAN[4], CLEAN[1], CLEAN[2]])
    out = model(inputs, targets)
    penalty, counters = term(model, inputs, targets, out.logits)
    assert penalty is not None and penalty.requires_grad
    assert counters["fair_windows_paired"] == 2  # three windows have terms; max_windows caps it
    assert counters["fair_usable_pairs"] == term.usable_pairs
    assert counters["fair_gap"] > 0 and counters["fair_penalty"] == pytest.approx(cfg.coef * counters["fair_gap"])
    assert penalty.item() == pytest.approx(counters["fair_penalty"])
    (out.loss + penalty).backward()
    assert any(float(g.abs().sum()) > 0 for g in param_grads(model))


def test_fairness_has_no_term_without_pair_words(tokenizer, tokenizer_file: Path) -> None:
    term = FairnessTerm(FairnessConfig(enabled=True), tokenizer_file)
    model = tiny_model(tokenizer)
    inputs, targets = batch(tokenizer, NEUTRAL)
    penalty, counters = term(model, inputs, targets, model(inputs, targets).logits)
    assert penalty is None and counters == {"fair_windows_paired": 0.0, "fair_usable_pairs": float(term.usable_pairs)}


def test_fairness_penalty_vanishes_for_a_symmetric_model(tokenizer, tokenizer_file: Path) -> None:
    """Give every swapped pair the same (tied) embedding: the model then cannot tell the words apart,
    a window and its counterfactual are equally likely, and the penalty is zero. An asymmetric model
    (the same weights before the tie) has a gap, so the check can fail."""
    term = FairnessTerm(FairnessConfig(enabled=True), tokenizer_file)
    model = tiny_model(tokenizer).eval()
    inputs, targets = batch(tokenizer, CLEAN[:3])
    asym, _ = term(model, inputs, targets, model(inputs, targets).logits)
    assert asym is not None and asym.item() > 1e-4
    with torch.no_grad():
        for a, b in term.token_pairs:
            model.tok_emb.weight[b] = model.tok_emb.weight[a]
    sym, counters = term(model, inputs, targets, model(inputs, targets).logits)
    assert sym is not None and counters["fair_windows_paired"] == 3
    assert sym.item() < 1e-6


# ------------------------------------------------------------------------ inside DeepSpeed
def deepspeed_check(stage: int, tokenizer_dir: Path) -> float:
    """Run in a child process (one rank, gloo): two optimizer steps of 2 micro-batches each, clean loss +
    adversarial + fairness terms through a DeepSpeed engine with activation checkpointing, and the same
    three terms in plain PyTorch on a copy of the engine's weights. Returns the worst mismatch of the
    totals and the relative mismatch of the global gradient norm (which DeepSpeed reduces itself)."""
    import math

    import deepspeed

    from pharia.train.engine import optimizer_groups, skip_unused_shm_comm_op

    skip_unused_shm_comm_op()
    deepspeed.init_distributed(dist_backend="gloo")
    tokenizer_file = tokenizer_dir / "tokenizer.json"
    build_tokenizer(iter(CLEAN * 30 + TOXIC * 10), vocab_size=600).save(str(tokenizer_file))
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    model = tiny_model(tokenizer).set_activation_checkpointing(True)
    gas = 2
    zero: dict[str, object] = {"stage": stage, "overlap_comm": False, "contiguous_gradients": True}
    config = {  # the shape pharia.train.deepspeed_config builds: torch AdamW, fp32
        "train_batch_size": 3 * gas,
        "train_micro_batch_size_per_gpu": 3,
        "gradient_accumulation_steps": gas,
        "gradient_clipping": 100.0,
        "zero_optimization": zero,
        "optimizer": {"type": "AdamW", "params": {"lr": 3e-3, "weight_decay": 0.1, "torch_adam": True}},
        "steps_per_print": 2**31 - 1,
    }
    engine, *_ = deepspeed.initialize(model=model, model_parameters=optimizer_groups(model, 0.1), config=config)
    engine.train()
    adversarial = AdversarialTerm(ADV, seed=0)
    fairness = FairnessTerm(FairnessConfig(enabled=True, coef=0.5), tokenizer_file)
    inputs, targets = batch(tokenizer, CLEAN[:3])

    def total_loss(forward, micro_step: int) -> torch.Tensor:
        out = forward(inputs, targets)
        adv, adv_counters = adversarial(forward, inputs, targets, micro_step=micro_step, clean_loss=out.loss)
        fair, fair_counters = fairness(forward, inputs, targets, out.logits)
        assert adv is not None and fair is not None and adv_counters["adv_ascent_gain"] > 0
        return out.loss + adv + fair

    def engine_weights() -> dict[str, torch.Tensor]:
        from deepspeed.runtime.zero import GatheredParameters

        params = dict(engine.module.named_parameters())
        with GatheredParameters(list(params.values()), enabled=stage == 3):
            return {name: p.detach().clone() for name, p in params.items()}

    worst = 0.0
    for step in range(2):
        reference = tiny_model(tokenizer).set_activation_checkpointing(True)
        reference.load_state_dict(engine_weights(), strict=False)
        expected = []
        for k in range(gas):
            total = total_loss(reference, step * gas + k)
            (total / gas).backward()
            expected.append(total.item())
        ref_norm = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in reference.parameters() if p.grad is not None))
        for k in range(gas):
            total = total_loss(engine, step * gas + k)
            engine.backward(total)
            engine.step()
            worst = max(worst, abs(total.item() - expected[k]))
        ds_norm = float(engine.get_global_grad_norm())
        worst = max(worst, abs(ds_norm - ref_norm) / ref_norm)
        print(
            f"zero {stage} step {step}: total {total.item():.6f} grad norm {ds_norm:.6f} (plain torch {ref_norm:.6f})"
        )
    return worst


@pytest.mark.integration
@pytest.mark.parametrize("stage", [2, 3])
def test_terms_train_through_a_deepspeed_engine(stage: int, tmp_path: Path) -> None:
    """ZeRO-2 reduces parameter gradients in hooks and ZeRO-3 also gathers partitioned parameters in
    hooks: the terms' extra forwards and the ascent's autograd.grad must leave one correct backward."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = os.environ | {
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "DS_ACCELERATOR": "cpu",
        "TOKENIZERS_PARALLELISM": "false",
    }
    done = subprocess.run(
        [sys.executable, __file__, str(stage), str(tmp_path)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert f"OK zero {stage}" in done.stdout, done.stdout


if __name__ == "__main__":
    import sys

    mismatch = deepspeed_check(int(sys.argv[1]), Path(sys.argv[2]))
    assert mismatch < 1e-4, f"DeepSpeed and plain PyTorch disagree by {mismatch:.3g}"
    print(f"OK zero {sys.argv[1]}: worst mismatch {mismatch:.2e}")
