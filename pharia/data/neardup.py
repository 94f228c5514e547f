"""Near-duplicate detection: MinHash signatures over word shingles (datasketch), banded LSH keys,
clusters found with a sort per band instead of an in-memory index, so memory does not grow with
the text of the corpus.

Exact dedup (sha256 of the normalised text) misses documents that differ by a date, a signature or
re-wrapped whitespace. Each document becomes the set of its word `SHINGLE`-grams (lower-cased); a
MinHash of `NUM_PERM` permutations estimates the Jaccard similarity of two sets. The signature is cut
into `b` bands of `r` rows, with (b, r) chosen by datasketch's own optimiser for the threshold (the
same choice as its `MinHashLSH`); two documents are candidates when any band is equal, which happens
with probability 1 - (1 - J^r)^b for Jaccard similarity J.

Why not datasketch's `MinHashLSH`: it keeps every band of every document in Python dicts of sets,
about 2.8 kB per document measured here (2.8 GB per million documents), which breaks the promise that
a corpus larger than RAM can be processed. Instead each document contributes `b` 64-bit band keys
(72 bytes for b = 9) to an array the caller can keep on disk (`BandWriter`), and `cluster` finds
connected components with one stable sort per band and min-label propagation, all in numpy: memory
is O(documents x 8 bytes) per band, never the text. The representative of a cluster is its first
document (config order of sources, then reading order) - deterministic, and the same rule as exact
dedup. Components are transitive (A~B and B~C put C with A even when A and C differ more), as in
the BigCode / text-dedup pipelines. Shingles are hashed with crc32 (stable across processes, unlike
Python's salted `hash`); a document shorter than one shingle is one shingle.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

LIBRARY_NAME = "datasketch==2.0.0"
NUM_PERM = 128
SHINGLE = 5
SEED = 1
WORD = re.compile(r"\w+")
BAND_DTYPE = np.dtype("<u8")


def _crc32(data: bytes) -> int:
    return zlib.crc32(data)


def shingles(text: str) -> set[bytes]:
    words = WORD.findall(text.lower())
    if len(words) < SHINGLE:
        return {" ".join(words).encode()}
    return {" ".join(gram).encode() for gram in zip(*(words[i:] for i in range(SHINGLE)), strict=False)}


@lru_cache(maxsize=8)
def lsh_params(threshold: float) -> tuple[int, int]:
    """(bands, rows) minimising false positives + negatives at `threshold`, from datasketch."""
    from datasketch.lsh import _optimal_param

    bands, rows = _optimal_param(threshold, NUM_PERM, 0.5, 0.5)
    return int(bands), int(rows)


@lru_cache(maxsize=1)
def _template() -> Any:
    from datasketch import MinHash

    # The permutations are drawn once; copies share them (building them per document dominates the cost).
    return MinHash(num_perm=NUM_PERM, seed=SEED, hashfunc=_crc32)


def signature(text: str) -> np.ndarray:
    """The MinHash signature (NUM_PERM uint64 values) of a text's shingle set."""
    minhash = _template().copy()
    minhash.update_batch(list(shingles(text)))
    return np.asarray(minhash.hashvalues, dtype=np.uint64)


def band_keys(text: str, threshold: float) -> np.ndarray:
    """One 64-bit key per LSH band: blake2b of the band's `r` signature values."""
    bands, rows = lsh_params(threshold)
    values = signature(text)[: bands * rows].astype(BAND_DTYPE).reshape(bands, rows)
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little") for row in values),
        dtype=BAND_DTYPE,
        count=bands,
    )


class BandWriter:
    """Appends each document's band keys to a flat binary file (row i = the i-th document offered)."""

    def __init__(self, path: Path, threshold: float) -> None:
        self.path, self.threshold = Path(path), threshold
        self.bands = lsh_params(threshold)[0]
        self.count = 0
        self._fh = self.path.open("wb")

    def add(self, text: str) -> None:
        self.add_keys(band_keys(text, self.threshold).tobytes())

    def add_keys(self, keys: bytes) -> None:
        """Append keys computed elsewhere (a worker process) with `band_keys(...).tobytes()`."""
        if len(keys) != self.bands * BAND_DTYPE.itemsize:
            raise ValueError(f"expected {self.bands} band keys, got {len(keys) // BAND_DTYPE.itemsize}")
        self._fh.write(keys)
        self.count += 1

    def close(self) -> np.ndarray:
        """Close the file and return it memory-mapped as a (documents, bands) array."""
        self._fh.close()
        if self.count == 0:
            return np.zeros((0, self.bands), dtype=BAND_DTYPE)
        return np.memmap(self.path, dtype=BAND_DTYPE, mode="r", shape=(self.count, self.bands))


def cluster(bands: np.ndarray) -> np.ndarray:
    """labels[i] = the smallest index of the documents connected to i through equal band keys, so
    `labels[i] != i` marks a near duplicate of document `labels[i]` (which is its cluster's first)."""
    n = int(bands.shape[0])
    labels = np.arange(n, dtype=np.int64)
    if n < 2:
        return labels
    orders = []
    for band in range(bands.shape[1]):
        keys = np.asarray(bands[:, band])
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        sizes = np.diff(np.r_[starts, n])
        if (sizes > 1).any():  # bands where every key is unique connect nothing
            orders.append((order, starts, sizes))
    changed = True
    while changed:  # min-label propagation: converges in (longest chain of clusters) rounds, usually 1-2
        changed = False
        for order, starts, sizes in orders:
            group_min = np.minimum.reduceat(labels[order], starts)
            proposed = np.repeat(group_min, sizes)
            current = labels[order]
            better = proposed < current
            if better.any():
                labels[order[better]] = proposed[better]
                changed = True
        if changed:  # a label points at a document that may itself have a smaller label: follow it
            labels = labels[labels]
    return labels


def jaccard(a: str, b: str) -> float:
    """Exact Jaccard similarity of two texts' shingle sets (for tests and reports)."""
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0
