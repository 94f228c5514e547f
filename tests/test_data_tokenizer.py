"""Tokenizer: byte-level BPE (trained, with or without domain tags) and the real GPT-2 vocabulary
round-trip any text through save/load, expose their special ids through `special_token_ids`, never
turn special strings inside text into specials, and GPT-2 encodes exactly like tiktoken."""

from __future__ import annotations

import base64
import difflib
import hashlib
import inspect
import json
import re
from pathlib import Path
from typing import Any

import pytest
from test_data_fixtures import data_config, write_corpus

from pharia.config import DOMAINS, ConfigError, DataConfig
from pharia.data.ingest import ingest
from pharia.data.tokenizer import (
    DOMAIN_TOKENS,
    EOS_TOKEN,
    GPT2_PATTERN,
    PAD_TOKEN,
    TOKENIZER_FIELDS,
    SpecialTokenIds,
    bpe_special_tokens,
    build_gpt2_tokenizer,
    build_tokenizer,
    bytes_to_unicode,
    default_gpt2_vocab_file,
    iter_documents,
    load_tokenizer,
    read_tiktoken_ranks,
    special_token_ids,
    train_tokenizer,
)
from pharia.errors import DataError

SAMPLE = [
    "Der kleine Hund läuft über die grüne Wiese. Grüße aus Köln! ÄÖÜ äöü ß",
    "def f(x):\n\tif x:\n        return {'a': [1, 2]}  # trailing  spaces  \n",
    "emoji 😀🚀👩‍👩‍👧, CJK 你好世界, Arabic مرحبا, zero-width\u200bjoiner, combining e\u0301",
    "   leading, inner     runs\n\n\n\tof\r\n whitespace and trailing   ",
    "It's, they'll, we'd, I'M, don't - 3.14159, 1,000,000 and 2024-01-31",
    "literal specials: <|endoftext|> <|pad|> <|web|><|code|> <|endoftext",
    "",
]
GPT2_MIN = 50257  # GPT-2's 50,256 ranks + <|endoftext|>
R50K_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"  # tiktoken_ext.openai_public


def with_(cfg: DataConfig, **changes: Any) -> DataConfig:
    """A validated copy of `cfg` with some fields changed."""
    return DataConfig.model_validate({**cfg.model_dump(), **changes})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[DataConfig, Path]:
    root = tmp_path_factory.mktemp("tok")
    cfg = data_config(write_corpus(root / "corpus"))
    ingest(cfg, root / "ingest")
    return cfg, root / "ingest"


@pytest.fixture(scope="module")
def built(corpus: tuple, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[DataConfig, Path, dict]]:
    """kind -> (config, tokenizer dir, meta) for a BPE with and without domain tags and GPT-2."""
    cfg, ingest_dir = corpus
    root = tmp_path_factory.mktemp("built")
    configs = {
        "bpe-tags": cfg,
        "bpe-plain": with_(cfg, domain_tags=False),
        "gpt2": with_(cfg, tokenizer="gpt2", vocab_size=GPT2_MIN + len(DOMAINS)),
    }
    return {kind: (c, root / kind, train_tokenizer(ingest_dir, c, root / kind)) for kind, c in configs.items()}


def in_memory(kind: str, cfg: DataConfig, ingest_dir: Path) -> Any:
    """The tokenizer as built before saving, by the public builders."""
    if kind == "gpt2":
        return build_gpt2_tokenizer(read_tiktoken_ranks(default_gpt2_vocab_file()), cfg.domain_tags)
    texts = (row["text"] for row in iter_documents(ingest_dir, "train"))
    return build_tokenizer(texts, cfg.vocab_size, special_tokens=bpe_special_tokens(cfg.domain_tags))


@pytest.mark.parametrize("kind", ["bpe-tags", "bpe-plain", "gpt2"])
def test_save_load_round_trip(built: dict, corpus: tuple, kind: str) -> None:
    cfg, tok_dir, meta = built[kind]
    before = in_memory(kind, cfg, corpus[1])
    before.encode_special_tokens = True
    after = load_tokenizer(tok_dir)
    assert special_token_ids(after) == special_token_ids(before)
    assert after.get_vocab_size() == before.get_vocab_size() == meta["vocab_size"] <= cfg.vocab_size
    for text in SAMPLE:
        ids = after.encode(text).ids
        assert ids == before.encode(text).ids
        assert after.decode(ids, skip_special_tokens=False) == text
    # streaming training (train_tokenizer) and the list-free builder agree byte for byte
    assert json.loads((tok_dir / "tokenizer.json").read_text()) == json.loads(before.to_str())


def test_special_token_layout(built: dict) -> None:
    ids = {kind: special_token_ids(load_tokenizer(tok_dir)) for kind, (_, tok_dir, _) in built.items()}
    assert ids["bpe-tags"] == SpecialTokenIds(0, 1, {d: 2 + i for i, d in enumerate(DOMAINS)})
    assert ids["bpe-plain"] == SpecialTokenIds(0, 1, {})
    assert ids["gpt2"] == SpecialTokenIds(50256, 50256, {d: GPT2_MIN + i for i, d in enumerate(DOMAINS)})
    for kind, (cfg, _, meta) in built.items():
        assert meta["tokenizer"] == cfg.tokenizer
        assert (meta["eos_token_id"], meta["pad_token_id"], meta["domain_tags"]) == (
            ids[kind].eos_id,
            ids[kind].pad_id,
            ids[kind].domain_ids,
        )
    assert built["bpe-tags"][2]["special_tokens"] == {t: i for i, t in enumerate(bpe_special_tokens(True))}
    assert built["gpt2"][2]["special_tokens"] == {
        EOS_TOKEN: 50256,
        **{DOMAIN_TOKENS[d]: ids["gpt2"].domain_ids[d] for d in DOMAINS},
    }
    assert load_tokenizer(built["bpe-plain"][1]).token_to_id("<|web|>") is None


@pytest.mark.parametrize("kind", ["bpe-tags", "bpe-plain", "gpt2"])
def test_special_strings_in_text_are_text(built: dict, kind: str) -> None:
    tokenizer = load_tokenizer(built[kind][1])
    ids = special_token_ids(tokenizer)
    reserved = {ids.eos_id, ids.pad_id, *ids.domain_ids.values()}
    text = "a <|endoftext|> b <|pad|> " + " ".join(DOMAIN_TOKENS.values())
    encoded = tokenizer.encode(text).ids
    assert reserved.isdisjoint(encoded) and tokenizer.decode(encoded) == text


def test_bpe_training_counts_and_is_deterministic(built: dict, corpus: tuple, tmp_path: Path) -> None:
    cfg, tok_dir, meta = built["bpe-tags"]
    docs = [json.loads(line) for line in (corpus[1] / "documents.jsonl").read_text().splitlines()]
    train = [d["text"] for d in docs if d["split"] == "train"]
    assert (meta["trained_on"]["documents"], meta["trained_on"]["chars"]) == (len(train), sum(map(len, train)))
    again = train_tokenizer(corpus[1], cfg, tmp_path / "tok")
    assert again["sha256"] == meta["sha256"]
    assert (tmp_path / "tok" / "tokenizer.json").read_bytes() == (tok_dir / "tokenizer.json").read_bytes()


# ----------------------------------------------------------------------------------------- gpt2
@pytest.mark.parametrize("pattern", ["gpt2", "r50k"])
def test_gpt2_encodes_exactly_like_tiktoken(built: dict, pattern: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Against tiktoken on the same file, with GPT-2's original regex and tiktoken's own r50k one."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe
    from tiktoken_ext.openai_public import r50k_pat_str

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # no cache copy of the file under /tmp
    path = default_gpt2_vocab_file()
    reference = tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_PATTERN if pattern == "gpt2" else r50k_pat_str,
        mergeable_ranks=load_tiktoken_bpe(str(path)),
        special_tokens={EOS_TOKEN: 50256},
    )
    tokenizer = load_tokenizer(built["gpt2"][1])
    assert built["gpt2"][2]["source"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    long_texts = [inspect.getsource(difflib), inspect.getsource(json)]  # ~90 KB of real code and prose
    for text in SAMPLE + long_texts:
        ids = tokenizer.encode(text).ids
        assert ids == reference.encode_ordinary(text), text[:60]
        assert tokenizer.decode(ids) == reference.decode(ids) == text
    assert tokenizer.encode("Hello world").ids == [15496, 995]  # GPT-2's well-known ids
    assert reference.encode(EOS_TOKEN, allowed_special="all") == [special_token_ids(tokenizer).eos_id]


def test_gpt2_ids_are_the_ranks(built: dict) -> None:
    tokenizer = load_tokenizer(built["gpt2"][1])
    ranks = read_tiktoken_ranks(default_gpt2_vocab_file())
    to_byte = {c: b for b, c in bytes_to_unicode().items()}
    assert len(ranks) == 50256
    # the file is OpenAI's r50k_base/GPT-2 vocabulary: tiktoken pins this sha256 for its download
    assert hashlib.sha256(default_gpt2_vocab_file().read_bytes()).hexdigest() == R50K_SHA256
    for token, rank in ranks.items():
        assert bytes(to_byte[c] for c in tokenizer.id_to_token(rank)) == token


def test_gpt2_vocab_size_must_fit(built: dict, corpus: tuple, tmp_path: Path) -> None:
    cfg = built["gpt2"][0]
    with pytest.raises(ConfigError, match=r"data.vocab_size is 50257 .* needs 50262 .*domain_tags: false"):
        train_tokenizer(corpus[1], with_(cfg, vocab_size=GPT2_MIN), tmp_path / "a")
    with pytest.raises(ConfigError, match=r"data.vocab_size is 4096 .* at least 50257$"):
        train_tokenizer(corpus[1], with_(cfg, vocab_size=4096, domain_tags=False), tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    # the 7B preset's 50,257 fits without domain tags: pad shares eos
    meta = train_tokenizer(corpus[1], with_(cfg, vocab_size=GPT2_MIN, domain_tags=False), tmp_path / "c")
    assert (meta["vocab_size"], meta["eos_token_id"], meta["pad_token_id"], meta["domain_tags"]) == (
        GPT2_MIN,
        50256,
        50256,
        {},
    )


def test_gpt2_vocab_file_is_honoured_and_checked(built: dict, corpus: tuple, tmp_path: Path) -> None:
    cfg = built["gpt2"][0]
    # a toy .tiktoken: the 256 bytes, then "ab" and "abc"
    tokens = [bytes([b]) for b in range(256)] + [b"ab", b"abc"]
    toy = tmp_path / "toy.tiktoken"
    toy.write_text("".join(f"{base64.b64encode(t).decode()} {r}\n" for r, t in enumerate(tokens)))
    meta = train_tokenizer(corpus[1], with_(cfg, gpt2_vocab_file=str(toy), vocab_size=300), tmp_path / "toy")
    assert (meta["vocab_size"], meta["eos_token_id"], meta["source"]["file"]) == (264, 258, str(toy))
    assert "distribution" not in meta["source"]
    tokenizer = load_tokenizer(tmp_path / "toy")
    assert tokenizer.encode("xabcab").ids == [ord("x"), 257, 256]

    missing = tmp_path / "nope.tiktoken"
    with pytest.raises(DataError, match=re.escape(f"GPT-2 vocabulary {missing} not found")):
        train_tokenizer(corpus[1], with_(cfg, gpt2_vocab_file=str(missing)), tmp_path / "x")
    bad = tmp_path / "bad.tiktoken"
    bad.write_text("YQ== 0\nnot-base64!! 1\n")
    with pytest.raises(DataError, match=re.escape(f"{bad}:2: expected")):
        read_tiktoken_ranks(bad)
    bad.write_text("YQ== 0\nYg== 5\n")
    with pytest.raises(DataError, match="ranks must be 0..1"):
        read_tiktoken_ranks(bad)
    bad.write_text("YQ== 0\nYg== 1\n")
    with pytest.raises(DataError, match="some of the 256 single bytes are missing"):
        read_tiktoken_ranks(bad)


def test_missing_whisper_distribution_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    def absent(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    with pytest.raises(DataError, match="install `openai-whisper`.*data.gpt2_vocab_file"):
        default_gpt2_vocab_file()


# ---------------------------------------------------------------------------------- the helper
def test_special_token_ids_rejects_incomplete_tokenizers() -> None:
    no_eos = build_tokenizer(iter(["abc abd"]), 300, special_tokens=[PAD_TOKEN])
    with pytest.raises(DataError, match="no <\\|endoftext\\|> token"):
        special_token_ids(no_eos)
    partial = build_tokenizer(iter(["abc abd"]), 300, special_tokens=[EOS_TOKEN, PAD_TOKEN, "<|web|>"])
    with pytest.raises(DataError, match="only some domain tags, missing <\\|academic\\|>"):
        special_token_ids(partial)
    no_pad = build_tokenizer(iter(["abc abd"]), 300, special_tokens=[EOS_TOKEN])
    assert special_token_ids(no_pad) == SpecialTokenIds(0, 0, {})  # the GPT-2 convention


def test_stage_params_are_data_config_fields() -> None:
    assert set(TOKENIZER_FIELDS) <= set(DataConfig.model_fields)
    assert {"tokenizer", "gpt2_vocab_file", "domain_tags", "vocab_size"} <= set(TOKENIZER_FIELDS)


def test_missing_inputs_are_clear_errors(tmp_path: Path, built: dict) -> None:
    with pytest.raises(DataError, match="documents.jsonl not found"):
        train_tokenizer(tmp_path, built["bpe-tags"][0], tmp_path / "tok")
    (tmp_path / "documents.jsonl").write_text(json.dumps({"text": "held out", "split": "heldout"}) + "\n")
    with pytest.raises(DataError, match="no train-split documents"):
        train_tokenizer(tmp_path, built["bpe-tags"][0], tmp_path / "tok")
    with pytest.raises(DataError, match="tokenizer not found"):
        load_tokenizer(tmp_path / "nothing")
    (tmp_path / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match="not a tokenizers JSON file"):
        load_tokenizer(tmp_path)
