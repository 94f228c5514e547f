"""The per-document content work of the ingest, one batch at a time: PII scrubbing, language,
quality, toxicity and the near-duplicate band keys.

A pure function of (settings, batch) with picklable inputs and outputs, so the ingest can run it
in-process or in worker processes (`PHARIA_DATA_WORKERS`) without changing a single output byte:
batches are submitted and their results applied in reading order. Reading, normalisation and exact
dedup stay in the parent (they are cheap and need the global digest set); this is the ~95 % of the
per-document CPU time that parallelises.
"""

from __future__ import annotations

from dataclasses import dataclass

from pharia.classifiers.language import CODE, detect_languages
from pharia.classifiers.toxicity import toxicity_by_language
from pharia.data.neardup import band_keys
from pharia.data.normalize import truncate
from pharia.data.pii import scrub
from pharia.data.quality import quality

PII_MARGIN = 200  # characters scrubbed beyond max_doc_chars: longer than any PII value


@dataclass(frozen=True, slots=True)
class ContentSettings:
    """The DataConfig fields the content filters read (small and cheap to send to a worker)."""

    max_doc_chars: int
    allowed_languages: frozenset[str]
    quality_min_words: int
    quality_threshold: float
    toxicity_threshold: float
    near_duplicate_threshold: float


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the content filters decided for one document: `rejected_by` a filter name (with
    `detail`) or None, and everything the ingest keeps about it."""

    rejected_by: str | None
    detail: str
    text: str  # scrubbed and truncated to max_doc_chars: what is stored (and previewed when filtered)
    language: str = ""
    quality: float = 0.0
    quality_failed: tuple[str, ...] = ()
    toxicity: float = 0.0
    pii: tuple[tuple[str, int], ...] = ()
    bands: bytes = b""


def filter_batch(settings: ContentSettings, batch: list[tuple[str, str]]) -> list[Outcome]:
    """Outcomes for a batch of (domain, normalised text), in order. Filters run as in the ingest's
    order: language, quality, toxicity; band keys only for documents that pass all three."""
    stored, pii = [], []
    for _, text in batch:
        # Scrub only what can be kept (scrubbing is the costliest text step), plus a margin so a value
        # across the cut is replaced whole, never left as a fragment; then cut.
        scrubbed, counts = scrub(text[: settings.max_doc_chars + PII_MARGIN])
        stored.append(truncate(scrubbed, settings.max_doc_chars))
        pii.append(tuple(sorted(counts.items())))
    prose = [i for i, (domain, _) in enumerate(batch) if domain != "code"]
    languages = [CODE] * len(batch)
    for i, language in zip(prose, detect_languages([stored[i] for i in prose]), strict=True):
        languages[i] = language
    outcomes: list[Outcome | None] = [None] * len(batch)
    scored: list[tuple[int, float, tuple[str, ...]]] = []
    for i, (domain, _) in enumerate(batch):
        language = languages[i]
        if language != CODE and language not in settings.allowed_languages:
            detail = f"language '{language}' not in allowed_languages"
            outcomes[i] = Outcome("language", detail, stored[i], language, pii=pii[i])
            continue
        result = quality(stored[i], domain, settings.quality_min_words)
        if result.score < settings.quality_threshold:
            detail = f"quality {result.score:.3f} < {settings.quality_threshold}; failed: {', '.join(result.failed)}"
            outcomes[i] = Outcome("quality", detail, stored[i], language, result.score, result.failed, pii=pii[i])
            continue
        scored.append((i, result.score, result.failed))
    toxicity, _ = toxicity_by_language([stored[i] for i, _, _ in scored], [languages[i] for i, _, _ in scored])
    for (i, score, failed), tox in zip(scored, toxicity, strict=True):
        tox = float(tox)
        if tox > settings.toxicity_threshold:
            detail = f"toxicity {tox:.3f} > {settings.toxicity_threshold}"
            outcomes[i] = Outcome("toxicity", detail, stored[i], languages[i], score, failed, tox, pii[i])
            continue
        bands = band_keys(stored[i], settings.near_duplicate_threshold).tobytes()
        outcomes[i] = Outcome(None, "", stored[i], languages[i], score, failed, tox, pii[i], bands)
    assert all(o is not None for o in outcomes)
    return [o for o in outcomes if o is not None]
