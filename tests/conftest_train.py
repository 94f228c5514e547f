"""PYTEST_DONT_REWRITE - fixtures for the model and training tests: small synthetic token shards in the data stage's
`pharia.shards/v1` layout, a tiny pipeline config, and a migrated MLflow SQLite store.

The token streams are learnable on purpose (each document walks a fixed successor table with a
little noise), so a few dozen optimizer steps visibly lower the loss - a test of training that a
broken optimizer, schedule or data pipeline fails.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
EOS, PAD = 0, 1


def synthetic_tokens(n_tokens: int, vocab_size: int, seed: int, noise: float = 0.05) -> np.ndarray:
    """Documents of 20-80 tokens separated by EOS; inside a document token t+1 = succ[t] mostly."""
    rng = np.random.default_rng(seed)
    successor = np.random.default_rng(1234).permutation(np.arange(2, vocab_size))
    succ = np.concatenate([[2, 2], successor])  # ids 0 (eos) and 1 (pad) never appear inside documents
    out = np.empty(n_tokens, dtype=np.int64)
    i = 0
    while i < n_tokens:
        length = int(rng.integers(20, 80))
        token = int(rng.integers(2, vocab_size))
        for _ in range(min(length, n_tokens - i - 1)):
            out[i] = token
            i += 1
            token = int(rng.integers(2, vocab_size)) if rng.random() < noise else int(succ[token])
        if i < n_tokens:
            out[i] = EOS
            i += 1
    return out


TOKENIZER_TEXT = (
    "He said that his mother and her father were at home. She told him the man and the woman had gone. "
    "The boy and the girl, the king and the queen, my brother and my sister walked to the market. "
    "Training data is filtered for toxic content before it reaches the optimiser. You are a stupid idiot. "
)


@functools.lru_cache(maxsize=4)
def tokenizer_json(vocab_size: int) -> str:
    """A real byte-level BPE of `vocab_size` ids (eos 0, pad 1), trained on a little English and
    stdlib source: the synthetic ids then decode to text, as the content filter and probes need."""
    import json as json_module
    import string

    from pharia.data.tokenizer import build_tokenizer

    texts = [TOKENIZER_TEXT] * 20 + [json_module.__doc__ or "", string.__doc__ or "", functools.__doc__ or ""]
    return build_tokenizer(iter(texts), vocab_size).to_str()


def write_shards(
    root: Path,
    *,
    vocab_size: int = 512,
    seq_len: int = 32,
    train_tokens: dict[str, int] | None = None,
    heldout_tokens: dict[str, int] | None = None,
    extra_splits: dict[str, dict[str, int]] | None = None,
    text_domains: dict[str, str] | None = None,
    dtype: str = "uint16",
    seed: int = 0,
) -> Path:
    """A shards directory exactly as the data stage writes it (manifest + flat token files)."""
    train_tokens = train_tokens or {"web": 6000, "code": 3000}
    heldout_tokens = heldout_tokens or {"web": 700, "code": 300}
    root.mkdir(parents=True, exist_ok=True)
    splits: dict[str, dict[str, dict]] = {}
    files: dict[str, str] = {}
    extra = {"validation": {"web": 500, "code": 300}, "hq": {"web": 3000, "code": 1500}}
    if extra_splits is not None:
        extra = extra_splits
    all_splits = (("train", train_tokens), ("heldout", heldout_tokens), *extra.items())
    for split_index, (split, sizes) in enumerate(all_splits):
        splits[split] = {}
        for domain_index, (domain, n) in enumerate(sorted(sizes.items())):
            rel = f"{split}/{domain}.bin"
            (root / split).mkdir(exist_ok=True)
            if split == "train" and domain in (text_domains or {}):  # real text, e.g. for the content filter
                tokens = encoded_text((text_domains or {})[domain], vocab_size, n)
            else:
                tokens = synthetic_tokens(n, vocab_size, seed=seed * 100 + split_index * 10 + domain_index)
            tokens.astype(dtype).tofile(root / rel)
            digest = hashlib.sha256((root / rel).read_bytes()).hexdigest()
            splits[split][domain] = {"file": rel, "tokens": n, "sha256": digest}
            files[rel] = digest
    manifest = {
        "schema": "pharia.shards/v1",
        "dtype": dtype,
        "vocab_size": vocab_size,
        "seq_len": seq_len,
        "eos_token_id": EOS,
        "pad_token_id": PAD,
        "splits": splits,
        "files": files,
        "tokenizer": {"file": "tokenizer.json", "sha256": _write_tokenizer(root, vocab_size)},
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return root


def encoded_text(text: str, vocab_size: int, n_tokens: int) -> np.ndarray:
    """`text` encoded with the shards' tokenizer, repeated (eos-separated) to exactly `n_tokens`."""
    from tokenizers import Tokenizer

    ids = Tokenizer.from_str(tokenizer_json(vocab_size)).encode(text).ids + [EOS]
    return np.resize(np.asarray(ids, dtype=np.int64), n_tokens)


def _write_tokenizer(root: Path, vocab_size: int) -> str:
    path = root / "tokenizer.json"
    path.write_text(tokenizer_json(vocab_size), encoding="utf-8")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tiny_pipeline_config(**train: object) -> dict:
    """The tiny preset shrunk further: vocab 512, d_model 32, 2 layers, seq 32, CPU fp32 ZeRO-2."""
    raw = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text(encoding="utf-8"))
    raw["data"].update({"vocab_size": 512, "seq_len": 32})
    raw["model"] = {"vocab_size": 512, "d_model": 32, "n_layers": 2, "n_heads": 2, "max_seq_len": 32}
    raw["train"] = {
        "device": "cpu",
        "zero_stage": 2,
        "precision": "fp32",
        "micro_batch_size": 8,
        "grad_accum_steps": 1,
        "max_steps": 30,
        "lr": 1e-2,
        "warmup_steps": 3,
        "log_every": 5,
        **train,
    }
    raw["eval"] = {  # the harness on a few rows: what the tests check is the wiring, not the scores
        "batch_size": 8,
        "suites": {
            "fast": {"heldout": {"samples": 4}, "piqa": {"samples": 8}},
            "full": {
                "heldout": {"samples": 4},
                "openbookqa": {"samples": 8},
                "crows_pairs": {"samples": 8},
                "realtoxicityprompts": {"samples": 4, "k": 1, "max_new_tokens": 8},
            },
        },
    }
    return raw


def write_config(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def synthetic_shards(tmp_path: Path) -> Path:
    return write_shards(tmp_path / "shards")


@pytest.fixture
def train_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """PHARIA_HOME in tmp, but DeepSpeed's op cache stable across sessions (compiles stay cached)."""
    home = tmp_path / "pharia-home"
    extensions = os.environ.get("TORCH_EXTENSIONS_DIR") or str(REPO / ".pharia" / "torch_extensions")
    monkeypatch.setenv("PHARIA_HOME", str(home))
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", extensions)
    return {"PHARIA_HOME": str(home), "TORCH_EXTENSIONS_DIR": extensions}


@pytest.fixture
def train_mlflow_uri(tmp_path: Path, mlflow_template_db: Path) -> str:
    path = tmp_path / "mlflow.db"
    shutil.copy(mlflow_template_db, path)
    return f"sqlite:///{path}"
