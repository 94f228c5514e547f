"""Tokenizer stage: a byte-level BPE trained on the train split only (held-out text must not shape
the vocabulary it is evaluated with). Byte-level means every string round-trips exactly, whatever
its script, so German umlauts, emoji and code whitespace need no special handling.

Special tokens: `<|endoftext|>` (id 0) separates documents in the packed shards; `<|pad|>` (id 1)
pads batches. Literal occurrences of these strings inside documents are encoded as ordinary text
(see `load_tokenizer`), so data can never forge a document boundary.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pharia.config import DataConfig
from pharia.data.manifest import atomic_dir, atomic_write_json, sha256_file
from pharia.errors import DataError

EOS_TOKEN = "<|endoftext|>"  # noqa: S105 - a token string, not a password
PAD_TOKEN = "<|pad|>"  # noqa: S105
SPECIAL_TOKENS = (EOS_TOKEN, PAD_TOKEN)
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_FIELDS = ("vocab_size",)  # the DataConfig fields this stage reads (its DVC params)


def iter_documents(ingest_dir: Path, split: str | None = None) -> Iterator[dict[str, Any]]:
    """Rows of `documents.jsonl`, optionally only one split, in file order."""
    path = Path(ingest_dir) / "documents.jsonl"
    if not path.is_file():
        raise DataError(f"{path} not found: expected the output of `pharia data ingest`")
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            try:
                row = json.loads(line)
                valid = isinstance(row["text"], str) and row["split"] in ("train", "heldout")
            except (ValueError, KeyError, TypeError):
                valid = False
            if not valid:
                raise DataError(f"{path}:{number}: expected a JSON object with a string 'text' and a 'split'")
            if split is None or row["split"] == split:
                yield row


def build_tokenizer(texts: Iterator[str], vocab_size: int, length: int | None = None) -> Any:
    """Train a byte-level BPE with the special tokens first (ids 0 and 1)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer, length=length)
    return tokenizer


def load_tokenizer(path: Path) -> Any:
    """Load `tokenizer.json` (or the directory holding it) for encoding documents: special-token
    strings that occur in text are encoded as text; the packer inserts the eos id itself."""
    from tokenizers import Tokenizer

    path = Path(path)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    if not path.is_file():
        raise DataError(f"tokenizer not found: {path} (run `pharia data tokenize` first)")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust side raises a plain Exception for malformed files
        raise DataError(f"{path}: not a tokenizers JSON file ({str(exc).splitlines()[0]})") from None
    tokenizer.encode_special_tokens = True
    return tokenizer


def train_tokenizer(ingest_dir: Path, cfg: DataConfig, out_dir: Path) -> dict[str, Any]:
    """Train on the train-split documents of `ingest_dir`; publish tokenizer.json + tokenizer_meta.json."""
    docs = [row["text"] for row in iter_documents(ingest_dir, "train")]
    if not docs:
        raise DataError(f"{Path(ingest_dir) / 'documents.jsonl'} has no train-split documents to train a tokenizer on")
    tokenizer = build_tokenizer(iter(docs), cfg.vocab_size, length=len(docs))
    for token_id, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.token_to_id(token) == token_id, f"{token} must have id {token_id}"
    with atomic_dir(out_dir) as tmp:
        tokenizer.save(str(tmp / TOKENIZER_FILE))
        meta = {
            "schema": "pharia.tokenizer/v1",
            "file": TOKENIZER_FILE,
            "sha256": sha256_file(tmp / TOKENIZER_FILE),
            "model": "byte-level BPE (HF tokenizers)",
            "vocab_size_requested": cfg.vocab_size,
            "vocab_size": tokenizer.get_vocab_size(),
            "special_tokens": {token: i for i, token in enumerate(SPECIAL_TOKENS)},
            "trained_on": {
                "split": "train",
                "documents": len(docs),
                "chars": sum(len(d) for d in docs),
                "documents_sha256": sha256_file(Path(ingest_dir) / "documents.jsonl"),
            },
        }
        atomic_write_json(tmp / "tokenizer_meta.json", meta)
    return meta
