"""Mixture sampling and the held-out split: the two places where randomness enters the data, both
derived from the configured seed so a rerun produces byte-identical outputs.

Sampling rule (also written into the ingest report): each source gets a character budget of
weight / sum(weights) * target_chars; its documents are visited in a seeded random order and taken
while the characters taken so far are below the budget (the last document taken may overshoot it
by less than one document). Documents never reached are counted as `mixture_downsample`. A source
with fewer characters than its budget contributes everything it has: there is no upsampling yet,
so its domain ends below its target share and the report shows by how much.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")

SAMPLING_RULE = (
    "each source gets weight/sum(weights) * target_chars characters; its documents (after the "
    "too_short, exact_duplicate and toxicity filters, truncated to max_doc_chars) are taken in a "
    "random order seeded by (seed, source name) while the characters taken are below the budget; "
    "the rest are filtered as mixture_downsample. A source smaller than its budget contributes all "
    "its documents: no upsampling, so its domain falls short of its target share."
)


def source_budgets(weights: dict[str, float], target_chars: int) -> dict[str, float]:
    total = sum(weights.values())
    return {name: w / total * target_chars for name, w in weights.items()}


def sample(items: Sequence[T], budget: float, size: Callable[[T], int], seed: int, key: str) -> tuple[list[T], list[T]]:
    """(taken in sampled order, not taken) under the sampling rule above."""
    order = list(range(len(items)))
    random.Random(f"{seed}:{key}").shuffle(order)
    taken: list[T] = []
    dropped: list[T] = []
    chars = 0
    for index in order:
        if chars < budget:
            taken.append(items[index])
            chars += size(items[index])
        else:
            dropped.append(items[index])
    return taken, dropped


def split_score(doc_id: str, seed: int) -> float:
    """A uniform number in [0, 1) fixed by the document id and the seed, independent of order."""
    digest = hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


SPLIT_NAMES = ("train", "validation", "heldout")
TRAIN, VALIDATION, HELDOUT = range(3)


def assign_split_codes(
    domains: np.ndarray, scores: np.ndarray, heldout_fraction: float, validation_fraction: float
) -> np.ndarray:
    """Split code (index into SPLIT_NAMES) per document from its domain code and `split_score`, as
    arrays, so a corpus of millions of documents costs a few bytes per document.

    `heldout` for scores below `heldout_fraction`, `validation` below `heldout_fraction +
    validation_fraction`, else `train`. Then, per domain, every split that can exist does: with at
    least two documents one held-out (the lowest score) and one training document (the highest),
    with at least three and a validation fraction one validation document (the lowest-scoring
    training document), so every domain can be evaluated."""
    codes = np.full(len(scores), TRAIN, dtype=np.uint8)
    codes[scores < heldout_fraction + validation_fraction] = VALIDATION
    codes[scores < heldout_fraction] = HELDOUT
    for domain in np.unique(domains):
        members = np.flatnonzero(domains == domain)
        if len(members) < 2:
            continue
        ranked = members[np.argsort(scores[members], kind="stable")]
        if not (codes[members] == HELDOUT).any():
            codes[ranked[0]] = HELDOUT
        if not (codes[members] == TRAIN).any():
            codes[ranked[-1]] = TRAIN
        trains = ranked[codes[ranked] == TRAIN]
        if (
            validation_fraction > 0
            and len(members) >= 3
            and len(trains) >= 2
            and not (codes[members] == VALIDATION).any()
        ):
            codes[trains[0]] = VALIDATION
    return codes


def assign_splits(
    domains: dict[str, str], heldout_fraction: float, seed: int, validation_fraction: float = 0.0
) -> dict[str, str]:
    """`assign_split_codes` for a dict {doc_id: domain}: {doc_id: split name}."""
    ids = list(domains)
    names = sorted(set(domains.values()))
    domain_codes = np.array([names.index(domains[d]) for d in ids], dtype=np.int64)
    scores = np.array([split_score(d, seed) for d in ids], dtype=np.float64)
    codes = assign_split_codes(domain_codes, scores, heldout_fraction, validation_fraction)
    return {doc_id: SPLIT_NAMES[code] for doc_id, code in zip(ids, codes, strict=True)}
