"""Near-duplicate detection: MinHash signatures over word shingles, candidates from LSH (datasketch).

Exact dedup (sha256 of the normalised text) misses documents that differ by a date, a signature or
re-wrapped whitespace. Each document becomes the set of its word `SHINGLE`-grams (lower-cased); a
MinHash of `NUM_PERM` permutations estimates the Jaccard similarity of two sets and MinHashLSH finds
pairs above `threshold` without comparing all pairs. Documents are offered in a fixed order (config
order of sources, then reading order) and the first member of a cluster is kept: the result is
deterministic and the same rule as exact dedup. Shingles are hashed with crc32 (C speed, stable
across processes, unlike Python's salted `hash`); a document shorter than one shingle is one shingle.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

LIBRARY_NAME = "datasketch==2.0.0"
NUM_PERM = 128
SHINGLE = 5
SEED = 1
WORD = re.compile(r"\w+")


def _crc32(data: bytes) -> int:
    return zlib.crc32(data)


def shingles(text: str) -> set[bytes]:
    words = WORD.findall(text.lower())
    if len(words) < SHINGLE:
        return {" ".join(words).encode()}
    return {" ".join(gram).encode() for gram in zip(*(words[i:] for i in range(SHINGLE)), strict=False)}


@dataclass
class NearDuplicateIndex:
    """Offer documents one at a time; `offer` answers the cluster each belongs to."""

    threshold: float
    _lsh: object = field(init=False)
    _template: object = field(init=False)

    def __post_init__(self) -> None:
        from datasketch import MinHash, MinHashLSH

        self._lsh = MinHashLSH(threshold=self.threshold, num_perm=NUM_PERM)
        # The permutations are drawn once; copies share them (building them per document dominates the cost).
        self._template = MinHash(num_perm=NUM_PERM, seed=SEED, hashfunc=_crc32)

    def signature(self, text: str) -> object:
        minhash = self._template.copy()  # type: ignore[attr-defined]
        minhash.update_batch(list(shingles(text)))
        return minhash

    def offer(self, key: str, text: str) -> str | None:
        """None when `text` is new (it is indexed under `key`), else the key of the first document
        it nearly duplicates (it is not indexed: clusters are represented by their first member)."""
        minhash = self.signature(text)
        matches = self._lsh.query(minhash)  # type: ignore[attr-defined]
        if matches:
            return str(min(matches))  # several clusters may match: a stable choice
        self._lsh.insert(key, minhash)  # type: ignore[attr-defined]
        return None


def jaccard(a: str, b: str) -> float:
    """Exact Jaccard similarity of two texts' shingle sets (for tests and reports)."""
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0
