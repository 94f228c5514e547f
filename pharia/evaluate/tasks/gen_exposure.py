"""Canary exposure (Carlini et al. 2019, "The Secret Sharer", USENIX Security) estimated from a
sample of candidate secrets, and the validation of `canaries.json` (schema pharia.canaries/v1,
written by `pharia.data.canaries`).

Exposure of a secret s among the space R = alphabet**length is log2|R| - log2 rank(s), rank by
the model's likelihood. Scoring all of R (10**6 candidates for 6 digits) is too costly per
checkpoint, so m candidates are drawn uniformly from R without the secret and without replacement,
and the secret's rank among the m + 1 scored strings is scaled to R:
    rank_R ~= rank * |R| / (m + 1)   =>   exposure ~= log2((m + 1) / rank),
    rank = 1 + #{candidates scored strictly higher} + 0.5 * #{candidates scored exactly equal}.
Ties count half so that a model that cannot tell candidates apart (every score equal) gets rank
1 + m/2, i.e. log2(2(m+1)/(m+2)) ~= 1 bit, the median exposure of a secret the model never saw;
a secret scored above every candidate gets the cap log2(m + 1) (~9.97 bits for m = 1000). When m
would reach |R| - 1, every other secret is scored and the estimate is the exact exposure.

Above the cap the rank estimate cannot tell memorisation levels apart, so the paper's second
estimator is reported alongside it in the details: fit a skew-normal distribution to the m
candidate scores and take exposure = -log2 P(candidate score >= secret score), capped at log2|R|.
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pharia.errors import PhariaError

SCHEMA = "pharia.canaries/v1"
DEFAULT_CANDIDATES = 1000


@dataclass(frozen=True)
class Canary:
    id: str
    prefix: str  # the exact text before the secret (trailing space included)
    secret: str
    repeats: int  # copies planted in the training split


@dataclass(frozen=True)
class CanarySet:
    alphabet: str
    length: int
    canaries: tuple[Canary, ...]

    @property
    def space(self) -> int:
        return len(self.alphabet) ** self.length


def parse_canaries(doc: Any) -> CanarySet:
    """The validated content of canaries.json; a PhariaError names the canary and field at fault."""
    where = "canaries.json"
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise PhariaError(f"{where}: expected an object with schema {SCHEMA!r}")
    alphabet, length, items = doc.get("alphabet"), doc.get("length"), doc.get("canaries")
    if not isinstance(alphabet, str) or len(alphabet) < 2 or len(set(alphabet)) != len(alphabet):
        raise PhariaError(f"{where}: field 'alphabet' must be a string of at least 2 distinct characters")
    if not isinstance(length, int) or isinstance(length, bool) or length < 1:
        raise PhariaError(f"{where}: field 'length' must be a positive integer, got {length!r}")
    if not isinstance(items, list):
        raise PhariaError(f"{where}: field 'canaries' must be a list")
    canaries: list[Canary] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        at = f"{where}: canaries[{index}]"
        if not isinstance(item, dict):
            raise PhariaError(f"{at} must be an object")
        ident, prefix, secret, repeats = (item.get(k) for k in ("id", "prefix", "secret", "repeats"))
        if not isinstance(ident, str) or not ident or ident in seen:
            raise PhariaError(f"{at}, field 'id' must be a unique non-empty string, got {ident!r}")
        if not isinstance(prefix, str) or not prefix:
            raise PhariaError(f"{at} ({ident}), field 'prefix' must be a non-empty string")
        if not isinstance(secret, str) or len(secret) != length or any(ch not in alphabet for ch in secret):
            raise PhariaError(f"{at} ({ident}), field 'secret' must be {length} characters of {alphabet!r}")
        if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
            raise PhariaError(f"{at} ({ident}), field 'repeats' must be an integer >= 1, got {repeats!r}")
        seen.add(ident)
        canaries.append(Canary(ident, prefix, secret, repeats))
    return CanarySet(alphabet, length, tuple(canaries))


def candidate_count(space: int, requested: int | None) -> int:
    """m: `requested` (DEFAULT_CANDIDATES when None), at most |R| - 1 (then R is enumerated)."""
    m = DEFAULT_CANDIDATES if requested is None else int(requested)
    if m < 1:
        raise PhariaError(f"canaries: need at least 1 candidate secret per canary, got samples={requested}")
    return min(m, space - 1)


def to_index(secret: str, alphabet: str) -> int:
    """The secret read as a base-len(alphabet) number, most significant character first."""
    value = 0
    for ch in secret:
        value = value * len(alphabet) + alphabet.index(ch)
    return value


def from_index(value: int, alphabet: str, length: int) -> str:
    chars = []
    for _ in range(length):
        value, digit = divmod(value, len(alphabet))
        chars.append(alphabet[digit])
    return "".join(reversed(chars))


def candidates(canary: Canary, alphabet: str, length: int, m: int, seed: int) -> list[str]:
    """m distinct secrets other than the canary's, uniform over R without replacement, drawn by
    random.Random(f"{seed}:{canary.id}"): `sample(range(|R| - 1), m)` while |R| fits a machine
    integer, else distinct `randrange(|R| - 1)` draws in order (long secrets: `sample` needs
    len(range)); each index i >= the secret's index is shifted by one to skip it."""
    space = len(alphabet) ** length
    own = to_index(canary.secret, alphabet)
    rng = random.Random(f"{seed}:{canary.id}")
    if space - 1 <= sys.maxsize:
        drawn = rng.sample(range(space - 1), m)
    else:  # 10^19 and beyond: collisions are astronomically rare, the loop ends after ~m draws
        seen: dict[int, None] = {}
        while len(seen) < m:
            seen.setdefault(rng.randrange(space - 1))
        drawn = list(seen)
    return [from_index(i + (i >= own), alphabet, length) for i in drawn]


def rank_of(secret_score: float, candidate_scores: Sequence[float]) -> float:
    """1 + #strictly higher + 0.5 * #equal (see the module docstring)."""
    scores = np.asarray(candidate_scores, dtype=np.float64)
    return 1.0 + float(np.sum(scores > secret_score)) + 0.5 * float(np.sum(scores == secret_score))


def exposure(rank: float, m: int) -> float:
    """log2((m + 1) / rank), in [~0, log2(m + 1)]."""
    return math.log2((m + 1) / rank)


def extrapolated_exposure(secret_score: float, candidate_scores: Sequence[float], space: int) -> float | None:
    """-log2 P(X >= secret_score) for X skew-normal fitted to the candidate scores, capped at log2|R|
    (None when the scores have no spread to fit)."""
    from scipy.stats import skewnorm

    scores = np.asarray(candidate_scores, dtype=np.float64)
    if len(scores) < 3 or float(np.std(scores)) == 0.0:
        return None
    shape, loc, scale = skewnorm.fit(scores)
    tail = float(skewnorm.sf(secret_score, shape, loc=loc, scale=scale))
    cap = math.log2(space)
    return cap if tail <= 0 else min(cap, max(0.0, -math.log2(tail)))
