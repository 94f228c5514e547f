"""Pack stage: documents -> flat token files per split and domain + manifest.json.

Splits: `train`, `validation` (loss during training), `heldout` (perplexity per domain after it)
and `hq`, the high-quality subset of `train` for the intermediate training stage: training
documents of the configured domains whose quality score and toxicity pass `data.high_quality`'s
stricter bounds (they are in `train` too). With `data.canaries`, memorisation canaries are planted
into `train` just before encoding and described in `canaries.json` (pharia.data.canaries), whose
sha256 the manifest lists under `files` and `canaries`. Tokenisation is parallel: `encode_batch`
runs on all cores through the tokenizers library's Rayon pool (enabled for this stage even where
TOKENIZERS_PARALLELISM=false guards forked data loaders).

Each `<split>/<domain>.bin` is a raw little-endian array (uint16 when the vocabulary fits, else
uint32) readable with `numpy.memmap(path, dtype=manifest["dtype"], mode="r")`; every document is
followed by the eos id, so the trainer can cut windows anywhere and still see boundaries. The
directory is self-contained: it carries a copy of tokenizer.json, and the manifest lists the sha256
of every file. `manifest.json` is the contract with training and evaluation (schema
`pharia.shards/v1`); its own sha256 is the data lineage recorded with the model.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from pharia.config import DataConfig, sha256_json
from pharia.data import canaries as canary_mod
from pharia.data.manifest import atomic_dir, atomic_write_json, sha256_file
from pharia.data.tokenizer import TOKENIZER_FILE, iter_documents, load_tokenizer, special_token_ids
from pharia.data.validate import failure_message
from pharia.errors import DataError, DataValidationError

SCHEMA = "pharia.shards/v1"
SPLITS = ("train", "validation", "heldout")
HQ_SPLIT = "hq"
ENCODE_BATCH = 1024
UINT16_LIMIT = 65535


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= UINT16_LIMIT else np.uint32)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{path} not found: expected the output of `pharia data {what}`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    return data


def _validation_summary(validation_dir: Path | None, ingest_dir: Path) -> dict[str, Any] | None:
    """The validation verdict the shards are packed under; refuse a failed or foreign validation."""
    if validation_dir is None:
        return None
    summary = _read_json(Path(validation_dir) / "validation.json", "validate")
    if not summary.get("success"):
        raise DataValidationError(f"refusing to pack: {failure_message(summary)}")
    stats_sha = sha256_file(Path(ingest_dir) / "stats.parquet")
    if summary.get("stats_sha256") != stats_sha:
        raise DataError(
            f"{Path(validation_dir) / 'validation.json'} validated a different ingest "
            f"(stats sha256 {summary.get('stats_sha256')}, {ingest_dir} has {stats_sha}): rerun `pharia data validate`"
        )
    return {k: summary[k] for k in ("success", "evaluated", "successful", "data_docs")}


def _ingest_summary(report: dict[str, Any], tokens: dict[str, int]) -> dict[str, Any]:
    """The ingest's accounting per source and in total, with the tokens each source put in the shards."""
    keys = ("rows_in", "kept", "filtered", "quarantined", "chars")
    return {
        "sources": {
            name: {"domain": entry["domain"], **{k: entry[k] for k in keys}, "tokens": tokens.get(name, 0)}
            for name, entry in report["sources"].items()
        },
        "totals": {**{k: report["totals"][k] for k in keys}, "tokens": sum(tokens.values())},
        "splits": report.get("splits", {}),
    }


class _ShardWriter:
    """Open file handles per (split, domain), created on first use; counts tokens as it writes."""

    def __init__(self, root: Path, dtype: np.dtype) -> None:
        self.root, self.dtype = root, dtype
        self.handles: dict[tuple[str, str], IO[bytes]] = {}
        self.tokens: dict[tuple[str, str], int] = {}
        self.source_tokens: dict[str, int] = {}

    def write(self, split: str, domain: str, ids: np.ndarray, source: str | None) -> None:
        """Append `ids`; tokens count towards `source` unless None (the hq subset repeats train)."""
        key = (split, domain)
        if key not in self.handles:
            (self.root / split).mkdir(parents=True, exist_ok=True)
            self.handles[key] = (self.root / split / f"{domain}.bin").open("wb")
            self.tokens[key] = 0
        self.handles[key].write(ids.astype(self.dtype).tobytes())
        self.tokens[key] += int(ids.size)
        if source is not None:
            self.source_tokens[source] = self.source_tokens.get(source, 0) + int(ids.size)

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()


def is_high_quality(row: dict[str, Any], cfg: DataConfig) -> bool:
    """Whether a training document belongs to the high-quality subset (data.high_quality)."""
    hq = cfg.high_quality
    return (
        row["split"] == "train"
        and row["domain"] in hq.domains
        and row["quality"] >= hq.min_quality
        and row["toxicity"] <= hq.max_toxicity
    )


@contextlib.contextmanager
def tokenizers_parallelism(enabled: bool = True) -> Iterator[None]:
    """TOKENIZERS_PARALLELISM for the duration (the library reads it at every batch call): on for
    this stage, so `encode_batch` uses every core; the caller's setting is restored afterwards."""
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if enabled else "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous


def _checked_documents(ingest_dir: Path) -> Iterator[dict[str, Any]]:
    for number, row in enumerate(iter_documents(ingest_dir), start=1):
        if "quality" not in row or "toxicity" not in row:
            raise DataError(
                f"{Path(ingest_dir) / 'documents.jsonl'}:{number}: no quality/toxicity fields "
                "(written by an older pharia): rerun `pharia data ingest`"
            )
        yield row


def _encode_all(
    rows: Iterator[dict[str, Any]], tokenizer: Any, writer: _ShardWriter, eos_id: int, cfg: DataConfig
) -> tuple[Counter[str], Counter[str], int]:
    """Encode every document into its split's shard (and the hq subset). Returns hq documents per
    domain, planted canary documents per domain and the canaries' tokens (counted apart from the
    sources': they are not ingested rows)."""
    limit = np.iinfo(writer.dtype).max
    batch: list[dict[str, Any]] = []
    hq_docs: Counter[str] = Counter()
    canary_docs: Counter[str] = Counter()
    canary_tokens = 0

    def flush() -> None:
        nonlocal canary_tokens
        for row, encoding in zip(batch, tokenizer.encode_batch([r["text"] for r in batch]), strict=True):
            ids = np.asarray([*encoding.ids, eos_id], dtype=np.int64)
            if ids.max(initial=0) > limit:
                raise DataError(f"token id {int(ids.max())} does not fit {writer.dtype}")
            if canary_mod.CANARY_KEY in row:  # train only, never hq
                writer.write(row["split"], row["domain"], ids, source=None)
                canary_docs[row["domain"]] += 1
                canary_tokens += int(ids.size)
                continue
            writer.write(row["split"], row["domain"], ids, row["source"])
            if is_high_quality(row, cfg):
                writer.write(HQ_SPLIT, row["domain"], ids, source=None)
                hq_docs[row["domain"]] += 1
        batch.clear()

    with tokenizers_parallelism():
        for row in rows:
            batch.append(row)
            if len(batch) >= ENCODE_BATCH:
                flush()
        if batch:
            flush()
    return hq_docs, canary_docs, canary_tokens


def _canary_summary(
    cfg: DataConfig, sha256: str | None, documents: Counter[str], tokens: int, expected: int
) -> dict[str, Any]:
    """The manifest's `canaries` section; `file` and `sha256` are None when none are planted."""
    planted = sum(documents.values())
    if planted != expected:  # a bug, not a data problem: every planned copy must be in the shards
        raise AssertionError(f"planted {planted} canary documents, planned {expected}")
    return {
        "file": canary_mod.FILE if sha256 else None,
        "sha256": sha256,
        "schema": canary_mod.SCHEMA,
        **cfg.canaries.model_dump(mode="json"),
        "split": canary_mod.SPLIT,
        "planted_documents": planted,
        "documents_per_domain": dict(sorted(documents.items())),
        "tokens": tokens,
        "rule": canary_mod.RULE,
    }


def pack(
    ingest_dir: Path, tokenizer_dir: Path, cfg: DataConfig, out_dir: Path, validation_dir: Path | None = None
) -> dict[str, Any]:
    """Encode every document, write the shard files and manifest.json into `out_dir` atomically,
    and return the manifest. With `validation_dir`, a failed validation stops packing."""
    ingest_dir, tokenizer_dir = Path(ingest_dir), Path(tokenizer_dir)
    validation = _validation_summary(validation_dir, ingest_dir)
    report = _read_json(ingest_dir / "ingest_report.json", "ingest")
    tokenizer = load_tokenizer(tokenizer_dir)
    special = special_token_ids(tokenizer)  # bpe: eos 0, pad 1; gpt2: both 50256
    eos_id, pad_id = special.eos_id, special.pad_id
    if tokenizer.get_vocab_size() > cfg.vocab_size:
        raise DataError(
            f"{tokenizer_dir}: tokenizer has {tokenizer.get_vocab_size()} tokens, "
            f"more than data.vocab_size {cfg.vocab_size}"
        )
    dtype = token_dtype(cfg.vocab_size)
    canaries = canary_mod.make_canaries(cfg.canaries)
    plan = canary_mod.placements(canaries, int(report.get("splits", {}).get("train", 0)), cfg.canaries.seed)
    with atomic_dir(out_dir) as tmp:
        writer = _ShardWriter(tmp, dtype)
        try:
            rows = canary_mod.plant(_checked_documents(ingest_dir), plan)
            hq_docs, canary_docs, canary_tokens = _encode_all(rows, tokenizer, writer, eos_id, cfg)
        finally:
            writer.close()
        canaries_sha = canary_mod.write_canaries(tmp / canary_mod.FILE, cfg.canaries, canaries) if canaries else None
        source_tokenizer = tokenizer_dir / TOKENIZER_FILE if tokenizer_dir.is_dir() else tokenizer_dir
        shutil.copyfile(source_tokenizer, tmp / TOKENIZER_FILE)

        splits: dict[str, dict[str, Any]] = {split: {} for split in (*SPLITS, HQ_SPLIT)}
        for (split, domain), count in sorted(writer.tokens.items()):
            rel = f"{split}/{domain}.bin"
            splits[split][domain] = {"file": rel, "tokens": count, "sha256": sha256_file(tmp / rel)}
        files = {entry["file"]: entry["sha256"] for split in splits for entry in splits[split].values()}
        files[TOKENIZER_FILE] = sha256_file(tmp / TOKENIZER_FILE)
        if canaries_sha is not None:
            files[canary_mod.FILE] = canaries_sha
        train_total = sum(e["tokens"] for e in splits["train"].values())
        manifest = {
            "schema": SCHEMA,
            "dtype": dtype.name,
            "vocab_size": cfg.vocab_size,
            "seq_len": cfg.seq_len,
            "eos_token_id": eos_id,
            "pad_token_id": pad_id,
            "tokenizer": {
                "file": TOKENIZER_FILE,
                "sha256": files[TOKENIZER_FILE],
                "domain_tag_ids": dict(special.domain_ids),
            },
            "splits": splits,
            "files": files,
            "domain_shares": {
                domain: {
                    "target": round(target, 6),
                    "achieved": round(splits["train"].get(domain, {}).get("tokens", 0) / train_total, 6)
                    if train_total
                    else 0.0,
                }
                for domain, target in cfg.domain_targets().items()
            },
            "high_quality": {
                "split": HQ_SPLIT,
                "rule": "train-split documents with quality >= min_quality and toxicity <= max_toxicity "
                "in the listed domains (also in train)",
                **cfg.high_quality.model_dump(mode="json"),
                "documents": dict(sorted(hq_docs.items())),
                "tokens": sum(e["tokens"] for e in splits[HQ_SPLIT].values()),
            },
            "canaries": _canary_summary(
                cfg, canaries_sha, canary_docs, canary_tokens, sum(c.repeats for c in canaries)
            ),
            "ingest": _ingest_summary(report, writer.source_tokens),
            "validation": validation,
            "data_config_sha256": sha256_json(cfg.model_dump(mode="json")),
        }
        atomic_write_json(tmp / "manifest.json", manifest)
    return manifest


def verify(shards_dir: Path) -> None:
    """Raise DataError when a file listed in the manifest is missing or its sha256 differs."""
    shards_dir = Path(shards_dir)
    manifest = _read_json(shards_dir / "manifest.json", "pack")
    for rel, expected in manifest["files"].items():
        path = shards_dir / rel
        if not path.is_file():
            raise DataError(f"{path}: listed in the manifest but missing")
        if sha256_file(path) != expected:
            raise DataError(f"{path}: sha256 differs from the manifest (file changed after packing)")
