"""Packed token shards (`pharia.shards/v1`, written by the data stage) as training and held-out batches.

A shards directory holds `manifest.json` and flat token files (numpy memmaps of the manifest's
dtype; documents separated by eos). Everything is checked when the set is opened, before DeepSpeed
starts: a wrong file costs a clear message instead of a crash in the middle of a step.

Training windows are random: `seq_len + 1` consecutive tokens from one train file (chosen in
proportion to its size, so the mixture is the one the data stage built), inputs and targets shifted
by one. Windows never straddle two files, which are not eos-joined. The generator is seeded with
(seed, rank), so a run is reproducible and every rank sees different windows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
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
        )

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


class TrainBatchSampler:
    """Endless, seeded random (inputs, targets) batches of shape (batch_size, seq_len) from the train split.

    With `domain_weights` (the data config's mixture targets, as the manifest records them) each
    window first draws its domain with those probabilities, then a uniform offset inside that
    domain's file. The training mixture then follows the declared weights whatever each domain's
    token count turned out to be (a tokenizer trained mostly on English spends more tokens per
    character on other scripts); small domains are revisited more often, which `mixture()` reports
    as epochs. Without weights every token position is equally likely.
    """

    def __init__(
        self,
        shards: ShardSet,
        *,
        seq_len: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        domain_weights: Mapping[str, float] | None = None,
    ) -> None:
        usable = [f for f in shards.files["train"].values() if f.tokens > seq_len]
        if not usable:
            raise TrainingError(
                f"{shards.root}: no train file has the {seq_len + 1} tokens one window of seq_len={seq_len} needs"
            )
        self.shards = shards
        self.seq_len = seq_len
        self.batch_size = batch_size
        self._files = usable
        self._maps = [shards.memmap(f) for f in usable]
        self._starts = np.array([f.tokens - seq_len for f in usable], dtype=np.int64)  # valid start offsets
        self._rng = np.random.default_rng([seed, rank])
        if domain_weights:
            weights = np.array([float(domain_weights.get(f.domain, 0.0)) for f in usable])
            if weights.sum() <= 0:
                raise TrainingError(f"{shards.root}: no usable train file belongs to a weighted domain")
        else:
            weights = self._starts.astype(np.float64)
        self._probs = weights / weights.sum()
        self._target = {f.domain: float(p) for f, p in zip(usable, self._probs, strict=True)}
        self._drawn = np.zeros(len(usable), dtype=np.int64)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        which = self._rng.choice(len(self._files), size=self.batch_size, p=self._probs)
        offsets = (self._rng.random(self.batch_size) * self._starts[which]).astype(np.int64)
        np.add.at(self._drawn, which, 1)
        rows = np.stack(
            [self._maps[w][o : o + self.seq_len + 1] for w, o in zip(which.tolist(), offsets.tolist(), strict=True)]
        )
        return _to_tensors(rows, self.shards.vocab_size, f"{self.shards.root} (train split)")

    def mixture(self) -> dict[str, dict[str, float]]:
        """Per domain: sampling probability, share of windows drawn so far, and epochs (tokens drawn
        over tokens available) - the achieved training mixture, for the run's record."""
        total = max(int(self._drawn.sum()), 1)
        return {
            f.domain: {
                "target": self._target[f.domain],
                "drawn": float(n) / total,
                "epochs": float(n) * self.seq_len / f.tokens,
            }
            for f, n in zip(self._files, self._drawn.tolist(), strict=True)
        }

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield self.next_batch()


def iter_heldout_batches(
    shards: ShardSet, domain: str, *, seq_len: int, batch_size: int, max_batches: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed, non-overlapping windows of one domain's held-out file, from its start.

    Window w covers tokens [w·seq_len, w·seq_len + seq_len], so every token after the first is a
    target exactly once. The last window may be short: its inputs are padded with pad_token_id and
    its targets with -100 (ignored by the loss). No randomness: scores are comparable across runs.
    """
    if domain not in shards.files.get("heldout", {}):
        raise TrainingError(f"{shards.root}: no held-out file for domain {domain!r} (have {shards.domains('heldout')})")
    tokens = shards.memmap(shards.files["heldout"][domain])
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
            raise TrainingError(f"{shards.files['heldout'][domain].path}: token id outside the vocabulary")
        yield inputs, targets
