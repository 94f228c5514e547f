"""The `pharia data prepare` output contract (issue 3, point 2), written after the four stages.

Other tools read `DIR/manifest.json`, `DIR/clean/` and `DIR/quarantine/` without knowing the stage
layout, so these are derived views over the stage outputs (which DVC tracks and the training code
reads) rather than a second pipeline:

- `clean/documents.jsonl`: one kept, cleaned document per line with its per-document statistics
  (domain, language, quality score, toxicity, PII counts, duplicate cluster, split);
- `quarantine/records.jsonl`: one record per rejected row or raw line (source, file, line, reason,
  detail, raw content truncated);
- `manifest.json`: per source and in total rows_in, kept, filtered{}, quarantined{}, tokens and the
  PII values scrubbed, the validation summary, the sha256 of every other file under DIR, and under
  `dvc` the hash DVC gives each stage output directory; under `canaries` the memorisation canaries
  the pack stage planted into the train split (documents, tokens, `shards/canaries.json` and its
  sha256; pharia.data.canaries). They are not ingested rows, so they are counted there, apart from
  the per-source accounting and its totals.

The `dvc` section is computed with DVC's own hashing library (dvc_data), not re-implemented, so it
is byte-for-byte what `dvc.lock` records for the same directory (md5 of a JSON listing of the file
md5s, suffixed `.dir`). A `pharia data prepare` directory can therefore be matched against a DVC
remote or a `dvc.lock` without DVC having produced it; inside the DVC project (`publish` stage) the
values equal the lock entries of the upstream stages, which a test checks.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pharia.data.manifest import atomic_dir, atomic_write_json, sha256_file
from pharia.errors import DataError

SCHEMA = "pharia.prepare/v1"
DVC_HASH_NAME = "md5"  # DVC 3's hash for new outputs (no dos2unix); dvc.lock records `hash: md5`
ACCOUNT_KEYS = ("domain", "rows_in", "kept", "filtered", "quarantined", "tokens", "pii_scrubbed")


def _stats_rows(path: Path) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        yield from batch.to_pylist()


@contextlib.contextmanager
def _row_count_mismatch(ingest_dir: Path) -> Iterator[None]:
    try:
        yield
    except ValueError as exc:  # zip(strict=True): one file ended before the other
        if "zip()" not in str(exc):
            raise
        raise DataError(f"{ingest_dir}: documents.jsonl and stats.parquet differ in length ({exc})") from None


def _write_clean(ingest_dir: Path, out_dir: Path) -> None:
    """documents.jsonl joined with stats.parquet. The ingest writes both in the same order, so they
    are zipped row by row (streamed, bounded memory); a mismatch is a corrupt ingest, not data."""
    with (
        (ingest_dir / "documents.jsonl").open(encoding="utf-8") as src,
        (out_dir / "documents.jsonl").open("w", encoding="utf-8") as dst,
        _row_count_mismatch(ingest_dir),
    ):
        for number, (line, stats) in enumerate(zip(src, _stats_rows(ingest_dir / "stats.parquet"), strict=True), 1):
            doc = json.loads(line)
            if doc["doc_id"] != stats["doc_id"]:
                raise DataError(
                    f"{ingest_dir}: documents.jsonl line {number} is {doc['doc_id']} but stats.parquet row "
                    f"{number} is {stats['doc_id']}: rerun `pharia data ingest`"
                )
            dst.write(json.dumps({**stats, "text": doc["text"]}, ensure_ascii=False) + "\n")


def _accounts(ingest_report: dict[str, Any], shards_manifest: dict[str, Any]) -> dict[str, Any]:
    tokens = shards_manifest["ingest"]
    sources = {
        name: {
            **{k: entry[k] for k in ACCOUNT_KEYS if k in entry},
            "tokens": tokens["sources"][name]["tokens"],
        }
        for name, entry in ingest_report["sources"].items()
    }
    totals = {k: v for k, v in ingest_report["totals"].items() if k in ACCOUNT_KEYS}
    return {"sources": sources, "totals": {**totals, "tokens": tokens["totals"]["tokens"]}}


def _canaries(shards_manifest: dict[str, Any]) -> dict[str, Any]:
    """The shards manifest's canary accounting, with the file path relative to the contract dir."""
    section = shards_manifest.get("canaries")
    if section is None:  # shards packed before canaries existed: nothing was planted
        return {"file": None, "sha256": None, "count": 0, "planted_documents": 0, "tokens": 0}
    keys = ("sha256", "schema", "count", "repeats", "length", "split", "planted_documents", "tokens")
    return {
        "file": f"shards/{section['file']}" if section.get("file") else None,
        **{k: section[k] for k in keys if k in section},
    }


def dvc_hash(path: Path) -> dict[str, Any]:
    """{md5, size, nfiles} of a directory (md5 ending in `.dir`) or {md5, size} of a file, exactly as
    `dvc add` / `dvc repro` record them. Hashing runs in memory (dry run): nothing is cached."""
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem
    from dvc_objects.fs.memory import MemoryFileSystem

    # build() stages the directory listing (the `.dir` object) in an object store: an in-memory one
    # here, dropped afterwards, so hashing writes nothing to disk and needs no DVC repository.
    odb = HashFileDB(MemoryFileSystem(), "/pharia-dvc-hash")
    staging, meta, obj = build(odb, str(Path(path).absolute()), LocalFileSystem(), DVC_HASH_NAME, dry_run=True)
    try:
        value = obj.hash_info.value if obj.hash_info else None
        if not value:
            raise DataError(f"DVC computed no hash for {path}")
        entry: dict[str, Any] = {"md5": value, "size": meta.size}
        if meta.isdir:
            entry["nfiles"] = meta.nfiles
        return entry
    finally:
        with contextlib.suppress(FileNotFoundError):
            staging.fs.rm(staging.path, recursive=True)


def dvc_section(out: Path, dirs: dict[str, Path]) -> dict[str, Any]:
    """The manifest's `dvc` section: DVC's hash of every stage output, keyed by its path relative to
    `out` (in the DVC project `out` is `data/`, so key `ingest` is dvc.lock's `data/ingest`)."""
    return {
        "hash": DVC_HASH_NAME,
        "outs": {str(path.relative_to(out)): dvc_hash(path) for path in dirs.values()},
    }


def publish(out: Path, dirs: dict[str, Path]) -> dict[str, Any]:
    """The contract over finished stage outputs (the DVC `publish` stage): like `write_contract`,
    with the validation summary read from the validation stage's `validation.json`."""
    out = Path(out).absolute()
    dirs = {name: Path(path).absolute() for name, path in dirs.items()}
    for name, path in dirs.items():
        if not path.is_relative_to(out):
            raise DataError(f"stage output {name} ({path}) must lie inside the contract directory {out}")
        if not path.is_dir():
            raise DataError(f"stage output {name} not found: {path} (run the {name} stage first)")
    summary = dirs["validation"] / "validation.json"
    if not summary.is_file():
        raise DataError(f"{summary} not found: run `pharia data validate` first")
    return write_contract(out, dirs, json.loads(summary.read_text(encoding="utf-8")))


def write_contract(out: Path, dirs: dict[str, Path], validation: dict[str, Any]) -> dict[str, Any]:
    """Write clean/, quarantine/ and manifest.json under `out`; return the manifest."""
    ingest_dir = dirs["ingest"]
    report = json.loads((ingest_dir / "ingest_report.json").read_text(encoding="utf-8"))
    shards_manifest = json.loads((dirs["shards"] / "manifest.json").read_text(encoding="utf-8"))
    with atomic_dir(out / "clean") as tmp:
        _write_clean(ingest_dir, tmp)
    with atomic_dir(out / "quarantine") as tmp:
        shutil.copyfile(ingest_dir / "quarantine.jsonl", tmp / "records.jsonl")
    # Only what prepare wrote: DIR may hold unrelated files of the user's.
    roots = [*dirs.values(), out / "clean", out / "quarantine"]
    files = {
        str(path.relative_to(out)): sha256_file(path)
        for root in roots
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }
    manifest = {
        "schema": SCHEMA,
        **_accounts(report, shards_manifest),
        "canaries": _canaries(shards_manifest),
        "validation": {k: validation[k] for k in ("success", "evaluated", "successful", "data_docs")},
        "domain_shares": shards_manifest["domain_shares"],
        "stages": {name: str(path.relative_to(out)) for name, path in dirs.items()},
        "shards_manifest": "shards/manifest.json",
        "files": files,
        "dvc": dvc_section(out, dirs),
    }
    atomic_write_json(out / "manifest.json", manifest)
    return manifest
