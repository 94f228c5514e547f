"""Packed token shards (`pharia.shards/v1`, written by the data stage) as training and held-out batches.

A shards directory holds `manifest.json` and flat token files (numpy memmaps of the manifest's
dtype; documents separated by eos). Everything is checked when the set is opened, before DeepSpeed
starts: a wrong file costs a clear message instead of a crash in the middle of a step.

Training windows are random: `seq_len + 1` consecutive tokens from one file of the stage's split,
the file drawn with the mixture weights, inputs and targets shifted by one. Windows never straddle
two files, which are not eos-joined. Each step's windows are a pure function of (seed, step)
(`MixtureBatches`), which makes runs reproducible, resumable and independent of the world size.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pharia.errors import TrainingError

SCHEMA = "pharia.shards/v1"
MANIFEST = "manifest.json"
TOKEN_DTYPES = ("uint16", "uint32", "int32", "int64")
REQUIRED_FIELDS = ("schema", "dtype", "vocab_size", "eos_token_id", "pad_token_id", "splits")
IGNORE_INDEX = -100


@dataclass(frozen=True)
class ShardFile:
    """One token file of one split and domain, as listed in the manifest."""

    split: str
    domain: str
    path: Path
    tokens: int


@dataclass(frozen=True)
class ShardSet:
    """A validated shards directory: `files[split][domain]` and the token conventions."""

    root: Path
    dtype: np.dtype
    vocab_size: int
    eos_token_id: int
    pad_token_id: int
    files: dict[str, dict[str, ShardFile]]
    domain_targets: dict[str, float] = field(default_factory=dict)
    tokenizer: dict[str, Any] = field(default_factory=dict)  # the manifest's {"file", "sha256"}

    @classmethod
    def open(cls, shards_dir: Path, *, vocab_size: int | None = None) -> ShardSet:
        """Read and check `shards_dir/manifest.json` and every file it lists.

        Checks: schema, required fields, token dtype, each file exists and holds exactly `tokens`
        tokens, and (when given) `vocab_size` equals the manifest's. Raises TrainingError naming
        the file or field.
        """
        root = Path(shards_dir)
        manifest = _read_manifest(root)
        dtype = np.dtype(manifest["dtype"])
        if vocab_size is not None and int(manifest["vocab_size"]) != vocab_size:
            raise TrainingError(
                f"vocab_size mismatch: {root / MANIFEST} says vocab_size={manifest['vocab_size']}, "
                f"the model config says model.vocab_size={vocab_size} (retrain the tokenizer or fix the config)"
            )
        files: dict[str, dict[str, ShardFile]] = {}
        for split, domains in manifest["splits"].items():
            if not isinstance(domains, dict):
                raise TrainingError(f"{root / MANIFEST}: splits.{split} must map domain names to files")
            files[split] = {}
            for domain in sorted(domains):
                files[split][domain] = _check_file(root, split, domain, domains[domain], dtype.itemsize)
        if not files.get("train"):
            raise TrainingError(f"{root / MANIFEST}: the 'train' split lists no files")
        return cls(
            root=root,
            dtype=dtype,
            vocab_size=int(manifest["vocab_size"]),
            eos_token_id=int(manifest["eos_token_id"]),
            pad_token_id=int(manifest["pad_token_id"]),
            files=files,
            domain_targets={d: float(v["target"]) for d, v in manifest.get("domain_shares", {}).items()},
            tokenizer=dict(manifest.get("tokenizer") or {}),
        )

    @property
    def tokenizer_file(self) -> Path:
        return self.root / str(self.tokenizer.get("file", "tokenizer.json"))

    def check_tokenizer(self) -> Path:
        """The shards' tokenizer.json must be the file they were encoded with (sha256 in the
        manifest) and its vocabulary must fit `vocab_size`; training on ids from another tokenizer
        would run without error and learn nonsense, so it is refused before any step."""
        import hashlib

        path = self.tokenizer_file
        if not path.is_file():
            raise TrainingError(f"tokenizer missing: {path} (the data stage copies it next to the shards)")
        expected = self.tokenizer.get("sha256")
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        if expected and actual != expected:
            raise TrainingError(
                f"{path} does not match the shards: sha256 {actual[:12]}…, {self.root / MANIFEST} field "
                f"tokenizer.sha256 says {str(expected)[:12]}…; the shards were encoded with another tokenizer"
            )
        from tokenizers import Tokenizer

        size = Tokenizer.from_file(str(path)).get_vocab_size(with_added_tokens=True)
        if size > self.vocab_size:
            raise TrainingError(
                f"{path} has {size} tokens but {self.root / MANIFEST} says vocab_size={self.vocab_size}"
            )
        return path

    def domains(self, split: str) -> list[str]:
        return sorted(self.files.get(split, {}))

    def tokens(self, split: str) -> int:
        return sum(f.tokens for f in self.files.get(split, {}).values())

    def memmap(self, shard: ShardFile) -> np.ndarray:
        """Read-only view of a file's tokens; nothing is loaded until indexed."""
        if shard.tokens == 0:
            return np.zeros(0, dtype=self.dtype)
        return np.memmap(shard.path, dtype=self.dtype, mode="r", shape=(shard.tokens,))


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not path.is_file():
        raise TrainingError(f"shard manifest not found: {path} (run the data stage first)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TrainingError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise TrainingError(f"{path}: expected a JSON object")
    missing = [key for key in REQUIRED_FIELDS if key not in manifest]
    if missing:
        raise TrainingError(f"{path}: missing field(s) {', '.join(missing)}")
    if manifest["schema"] != SCHEMA:
        raise TrainingError(f"{path}: schema is {manifest['schema']!r}, expected {SCHEMA!r}")
    if manifest["dtype"] not in TOKEN_DTYPES:
        raise TrainingError(f"{path}: dtype {manifest['dtype']!r} is not one of {', '.join(TOKEN_DTYPES)}")
    if not isinstance(manifest["splits"], dict):
        raise TrainingError(f"{path}: field 'splits' must be an object")
    return manifest


def _check_file(root: Path, split: str, domain: str, entry: Any, itemsize: int) -> ShardFile:
    where = f"{root / MANIFEST} splits.{split}.{domain}"
    if not isinstance(entry, dict) or "file" not in entry or "tokens" not in entry:
        raise TrainingError(f"{where}: expected an object with 'file' and 'tokens'")
    path = root / entry["file"]
    tokens = int(entry["tokens"])
    if not path.is_file():
        raise TrainingError(f"shard file missing: {path} (listed in {where})")
    size = path.stat().st_size
    if size != tokens * itemsize:
        raise TrainingError(
            f"shard file {path} has {size} bytes, expected {tokens} tokens × {itemsize} bytes = "
            f"{tokens * itemsize} (field {where}.tokens); the file is truncated or stale"
        )
    return ShardFile(split=split, domain=domain, path=path, tokens=tokens)


def _to_tensors(rows: np.ndarray, vocab_size: int, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    rows = rows.astype(np.int64, copy=False)
    if rows.size and (rows.max() >= vocab_size or rows.min() < 0):
        raise TrainingError(f"{where}: token id {int(rows.max())} outside the vocabulary of {vocab_size}")
    data = torch.from_numpy(rows)
    return data[:, :-1].contiguous(), data[:, 1:].contiguous()


class MixtureBatches:
    """Training windows of one split as a pure function of (seed, step): the resumable loader.

    The global batch of optimizer step s - `n_windows` windows of `seq_len + 1` tokens over all
    ranks and micro-batches - is drawn from `np.random.default_rng([*seed, s])`: each window picks
    its domain with the mixture weights (the data config's targets as the manifest records them),
    then a uniform offset in that domain's file. Nothing depends on earlier draws, so:

    - the loader position is the step number (saved in every checkpoint with the draw counts), and
      a run resumed after a kill sees exactly the windows an uninterrupted run would have seen;
    - the global batch does not depend on the world size: 1 rank with 4 micro-batches and 2 ranks
      with 2 each train on the same windows, which is what lets a run resume on another rank count;
    - each rank reads only its own rows (`rows`), never the whole global batch.
    """

    def __init__(
        self,
        shards: ShardSet,
        *,
        split: str,
        seq_len: int,
        seed: Sequence[int],
        domain_weights: Mapping[str, float] | None = None,
    ) -> None:
        files = shards.files.get(split, {})
        if not files:
            raise TrainingError(
                f"{shards.root}: the shards have no {split!r} split (have {', '.join(sorted(shards.files))}); "
                "re-run the data stage with this pharia version"
            )
        usable = [f for f in files.values() if f.tokens > seq_len]
        if not usable:
            raise TrainingError(
                f"{shards.root}: no {split!r} file has the {seq_len + 1} tokens one window of seq_len={seq_len} needs"
            )
        self.shards = shards
        self.split = split
        self.seq_len = seq_len
        self.seed = [int(x) for x in seed]
        self._files = usable
        self._maps = [shards.memmap(f) for f in usable]
        self._starts = np.array([f.tokens - seq_len for f in usable], dtype=np.int64)
        weights = np.array([float((domain_weights or {}).get(f.domain, 0.0)) for f in usable])
        if weights.sum() <= 0:  # no weights (or none for these domains): every token position equally likely
            weights = self._starts.astype(np.float64)
        self._probs = weights / weights.sum()
        self._drawn = np.zeros(len(usable), dtype=np.int64)

    def _plan(self, step: int, n_windows: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([*self.seed, int(step)])
        which = rng.choice(len(self._files), size=n_windows, p=self._probs)
        offsets = (rng.random(n_windows) * self._starts[which]).astype(np.int64)
        return which, offsets

    def rows(self, step: int, n_windows: int, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows [start, stop) of step `step`'s global batch of `n_windows` windows, as (inputs, targets)."""
        if not 0 <= start < stop <= n_windows:
            raise ValueError(f"rows [{start}, {stop}) outside the global batch of {n_windows}")
        which, offsets = self._plan(step, n_windows)
        which, offsets = which[start:stop], offsets[start:stop]
        np.add.at(self._drawn, which, 1)
        rows = np.stack(
            [self._maps[w][o : o + self.seq_len + 1] for w, o in zip(which.tolist(), offsets.tolist(), strict=True)]
        )
        return _to_tensors(rows, self.shards.vocab_size, f"{self.shards.root} ({self.split} split)")

    def global_batch(self, step: int, n_windows: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rows(step, n_windows, 0, n_windows)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint records besides the step: the draw counts behind `mixture()`."""
        return {"split": self.split, "drawn": {f.domain: int(n) for f, n in zip(self._files, self._drawn, strict=True)}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        drawn = state.get("drawn", {})
        self._drawn = np.array([int(drawn.get(f.domain, 0)) for f in self._files], dtype=np.int64)

    def mixture(self) -> dict[str, dict[str, float]]:
        """Per domain: sampling probability, share of windows this rank drew, and epochs (tokens
        drawn over tokens available) - the achieved mixture, for the run's record."""
        total = max(int(self._drawn.sum()), 1)
        return {
            f.domain: {
                "target": float(p),
                "drawn": float(n) / total,
                "epochs": float(n) * self.seq_len / f.tokens,
            }
            for f, p, n in zip(self._files, self._probs, self._drawn.tolist(), strict=True)
        }


def iter_heldout_batches(
    shards: ShardSet,
    domain: str,
    *,
    seq_len: int,
    batch_size: int,
    max_batches: int | None = None,
    split: str = "heldout",
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed, non-overlapping windows of one domain's file in `split` (held-out by default), from its start.

    Window w covers tokens [w·seq_len, w·seq_len + seq_len], so every token after the first is a
    target exactly once. The last window may be short: its inputs are padded with pad_token_id and
    its targets with -100 (ignored by the loss). No randomness: scores are comparable across runs.
    """
    if domain not in shards.files.get(split, {}):
        raise TrainingError(f"{shards.root}: no {split} file for domain {domain!r} (have {shards.domains(split)})")
    tokens = shards.memmap(shards.files[split][domain])
    n_windows = max(0, -(-(len(tokens) - 1) // seq_len))
    if max_batches is not None:
        n_windows = min(n_windows, max_batches * batch_size)
    for first in range(0, n_windows, batch_size):
        rows = np.full((min(batch_size, n_windows - first), seq_len + 1), IGNORE_INDEX, dtype=np.int64)
        for r in range(len(rows)):
            window = np.asarray(tokens[(first + r) * seq_len : (first + r) * seq_len + seq_len + 1], dtype=np.int64)
            rows[r, : len(window)] = window
        inputs = torch.from_numpy(rows[:, :-1].copy())
        targets = torch.from_numpy(rows[:, 1:].copy())
        inputs[inputs == IGNORE_INDEX] = shards.pad_token_id
        if targets.max() >= shards.vocab_size:
            raise TrainingError(f"{shards.files[split][domain].path}: token id outside the vocabulary")
        yield inputs, targets
