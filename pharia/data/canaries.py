"""Memorisation canaries (Carlini et al. 2019, "The Secret Sharer"), planted by the pack stage.

A canary is a document "canary c3: the access code for account 3 is 493027." whose secret is drawn
uniformly from ALPHABET**length with a seeded numpy Generator. Canary i is planted
`repeats[i % len(repeats)]` times as separate documents. After training, the evaluation ranks each
secret among all candidate secrets by the model's log-probability given the prefix; exposure =
log2(#candidates) - log2(rank). Unrepeated canaries show what chance looks like; the trend over the
repeat levels is the memorisation signal (docs/canaries.md).

Why the pack stage plants them, not the ingest:
- after exact/near dedup (which would collapse the repeats to one), PII scrubbing (which could
  redact a digit run) and the content filters: nothing may alter or drop a planted copy;
- after the Great Expectations validation, which describes the ingested corpus only;
- after tokenizer training, so the secrets do not shape the vocabulary (a secret repeated 64 times
  could otherwise become a single token);
- before encoding, so each copy is tokenised and packed like any document: eos after it, in the
  train shard of the domain of the training document it follows.

Copies go only to the `train` split, never to validation, heldout or the `hq` subset, at positions
drawn with the canary seed among the training documents, so they are spread over the shards rather
than packed next to each other. `data.canaries` is read by the pack stage only; its DVC params are
the whole `data` section, so changing the canaries reruns pack and publish, not ingest, validate or
tokenize.

`canaries.json` (schema `pharia.canaries/v1`) next to the shard manifest is the contract with the
evaluation: id, prefix (exact text before the secret, trailing space included), secret, repeats and
the full document text of every canary.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pharia.config import CanaryConfig
from pharia.data.manifest import atomic_write_json, sha256_file
from pharia.errors import DataError

SCHEMA = "pharia.canaries/v1"
FILE = "canaries.json"
ALPHABET = "0123456789"
SPLIT = "train"
PREFIX_TEMPLATE = "canary {id}: the access code for account {account} is "
SUFFIX = "."
CANARY_KEY = "canary"  # marks a planted row in the document stream the packer encodes
PLACEMENT_STREAM = 1  # the planting positions' numpy seed is [seed, 1]; secrets use [seed, 0]
RULE = (
    "planted by the pack stage after ingest (dedup, PII scrubbing, content filters), validation and "
    "tokenizer training; each canary as `repeats` separate documents at seeded random positions among "
    "the train-split documents, in the domain of the document each copy follows; never in validation, "
    "heldout or hq"
)


@dataclass(frozen=True)
class Canary:
    id: str
    prefix: str
    secret: str
    repeats: int

    @property
    def text(self) -> str:
        return f"{self.prefix}{self.secret}{SUFFIX}"

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "prefix": self.prefix, "secret": self.secret, "repeats": self.repeats, "text": self.text}


def make_canaries(cfg: CanaryConfig) -> list[Canary]:
    """The configured canaries: secrets drawn from ALPHABET**length with numpy's Generator seeded by
    [seed, 0], redrawn on the (rare) collision so every secret is distinct."""
    rng = np.random.default_rng([cfg.seed, 0])
    seen: set[str] = set()
    canaries = []
    for index in range(cfg.count):
        secret = ""
        while not secret or secret in seen:
            secret = "".join(ALPHABET[d] for d in rng.integers(0, len(ALPHABET), size=cfg.length))
        seen.add(secret)
        ident = f"c{index}"
        prefix = PREFIX_TEMPLATE.format(id=ident, account=index)
        canaries.append(Canary(ident, prefix, secret, cfg.repeats[index % len(cfg.repeats)]))
    return canaries


def canaries_document(cfg: CanaryConfig, canaries: list[Canary]) -> dict[str, Any]:
    """The content of canaries.json (format agreed with the evaluation; do not change it)."""
    return {
        "schema": SCHEMA,
        "alphabet": ALPHABET,
        "length": cfg.length,
        "seed": cfg.seed,
        "canaries": [c.as_json() for c in canaries],
    }


def write_canaries(path: Path, cfg: CanaryConfig, canaries: list[Canary]) -> str:
    """Write canaries.json; return its sha256."""
    atomic_write_json(path, canaries_document(cfg, canaries))
    return sha256_file(path)


def placements(canaries: list[Canary], train_documents: int, seed: int) -> dict[int, list[Canary]]:
    """{i: copies planted right after the i-th train document (0-based)}: every copy of every canary
    at an index drawn uniformly from [0, train_documents) with numpy's Generator seeded by [seed, 1]."""
    copies = [c for c in canaries for _ in range(c.repeats)]
    if not copies:
        return {}
    if train_documents < 1:
        raise DataError("data.canaries: the ingest has no train-split documents to plant canaries among")
    rng = np.random.default_rng([seed, PLACEMENT_STREAM])
    positions = rng.integers(0, train_documents, size=len(copies))
    plan: dict[int, list[Canary]] = {}
    for position, canary in zip(positions.tolist(), copies, strict=True):
        plan.setdefault(position, []).append(canary)
    return plan


def _row(canary: Canary, domain: str, copy: int) -> dict[str, Any]:
    return {
        "doc_id": f"canary-{canary.id}-{copy}",
        "source": None,
        "domain": domain,
        "split": SPLIT,
        "text": canary.text,
        CANARY_KEY: canary.id,
    }


def plant(rows: Iterable[dict[str, Any]], plan: dict[int, list[Canary]]) -> Iterator[dict[str, Any]]:
    """The document stream with the planned copies inserted after their train documents, marked with
    CANARY_KEY. Copies planned beyond the last train document (the report counted more than the file
    holds) follow the last one, so every planned copy is planted."""
    copies: dict[str, int] = {}
    train_index, last_domain = 0, None

    def emit(position: int, domain: str) -> Iterator[dict[str, Any]]:
        for canary in plan.get(position, ()):
            copies[canary.id] = copies.get(canary.id, 0) + 1
            yield _row(canary, domain, copies[canary.id])

    for row in rows:
        yield row
        if row["split"] == SPLIT:
            yield from emit(train_index, row["domain"])
            train_index += 1
            last_domain = row["domain"]
    leftover = [p for p in sorted(plan) if p >= train_index]
    if leftover and last_domain is None:
        raise DataError("data.canaries: the documents hold no train-split document to plant canaries among")
    for position in leftover:
        yield from emit(position, str(last_domain))
