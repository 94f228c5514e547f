"""Tokenizer: byte-level BPE round-trips any text, specials are ids 0/1, training is deterministic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_data_fixtures import data_config, write_corpus

from pharia.config import DataConfig
from pharia.data.ingest import ingest
from pharia.data.tokenizer import load_tokenizer, train_tokenizer
from pharia.errors import DataError


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[DataConfig, Path, Path, dict]:
    root = tmp_path_factory.mktemp("tok")
    cfg = data_config(write_corpus(root / "corpus"))
    ingest(cfg, root / "ingest")
    meta = train_tokenizer(root / "ingest", cfg, root / "tokenizer")
    return cfg, root / "ingest", root / "tokenizer", meta


@pytest.mark.parametrize(
    "text",
    [
        "Der kleine Hund läuft über die grüne Wiese. Grüße aus Köln!",
        "def f(x):\n\tif x:\n        return {'a': [1, 2]}  # trailing  spaces  \n",
        "emoji 😀🚀, CJK 你好世界, Arabic مرحبا, zero-width\u200bjoiner",
        "",
    ],
)
def test_round_trip(trained: tuple, text: str) -> None:
    tokenizer = load_tokenizer(trained[2])
    ids = tokenizer.encode(text).ids
    assert tokenizer.decode(ids, skip_special_tokens=False) == text


def test_special_tokens_and_vocab(trained: tuple) -> None:
    cfg, ingest_dir, tok_dir, meta = trained
    tokenizer = load_tokenizer(tok_dir / "tokenizer.json")
    assert tokenizer.token_to_id("<|endoftext|>") == 0 and tokenizer.token_to_id("<|pad|>") == 1
    assert tokenizer.get_vocab_size() <= cfg.vocab_size and meta["vocab_size"] == tokenizer.get_vocab_size()
    # a literal special-token string inside a document is text, not a document boundary
    ids = tokenizer.encode("a <|endoftext|> b").ids
    assert 0 not in ids and tokenizer.decode(ids) == "a <|endoftext|> b"
    docs = [json.loads(line) for line in (ingest_dir / "documents.jsonl").read_text().splitlines()]
    assert meta["trained_on"]["documents"] == sum(d["split"] == "train" for d in docs)


def test_training_is_deterministic(trained: tuple, tmp_path: Path) -> None:
    cfg, ingest_dir, tok_dir, meta = trained
    again = train_tokenizer(ingest_dir, cfg, tmp_path / "tok")
    assert again["sha256"] == meta["sha256"]
    assert (tmp_path / "tok" / "tokenizer.json").read_bytes() == (tok_dir / "tokenizer.json").read_bytes()


def test_missing_inputs_are_clear_errors(tmp_path: Path, trained: tuple) -> None:
    with pytest.raises(DataError, match="documents.jsonl not found"):
        train_tokenizer(tmp_path, trained[0], tmp_path / "tok")
    with pytest.raises(DataError, match="tokenizer not found"):
        load_tokenizer(tmp_path / "nothing")
    (tmp_path / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match="not a tokenizers JSON file"):
        load_tokenizer(tmp_path)
