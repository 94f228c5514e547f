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


def assign_splits(
    domains: dict[str, str], heldout_fraction: float, seed: int, validation_fraction: float = 0.0
) -> dict[str, str]:
    """`heldout` for documents whose score is below `heldout_fraction`, `validation` below
    `heldout_fraction + validation_fraction`, else `train`. Then, per domain, make sure every split
    that can exist does: with at least two documents one held-out (the lowest score) and one
    training document (the highest), with at least three and a validation fraction one validation
    document (the lowest-scoring training document), so every domain can be evaluated."""
    scores = {doc_id: split_score(doc_id, seed) for doc_id in domains}
    split = {
        doc_id: "heldout"
        if score < heldout_fraction
        else "validation"
        if score < heldout_fraction + validation_fraction
        else "train"
        for doc_id, score in scores.items()
    }
    by_domain: dict[str, list[str]] = {}
    for doc_id, domain in domains.items():
        by_domain.setdefault(domain, []).append(doc_id)
    for ids in by_domain.values():
        if len(ids) < 2:
            continue
        ranked = sorted(ids, key=lambda d: (scores[d], d))
        if all(split[d] != "heldout" for d in ids):
            split[ranked[0]] = "heldout"
        if all(split[d] != "train" for d in ids):
            split[ranked[-1]] = "train"
        trains = [d for d in ranked if split[d] == "train"]
        has_validation = any(split[d] == "validation" for d in ids)
        if validation_fraction > 0 and len(ids) >= 3 and len(trains) >= 2 and not has_validation:
            split[trains[0]] = "validation"
    return split
