"""The `pharia data prepare` output contract (issue 3, point 2), written after the four stages.

Other tools read `DIR/manifest.json`, `DIR/clean/` and `DIR/quarantine/` without knowing the stage
layout, so these are derived views over the stage outputs (which DVC tracks and the training code
reads) rather than a second pipeline:

- `clean/documents.jsonl`: one kept, cleaned document per line with its per-document statistics
  (domain, language, quality score, toxicity, PII counts, duplicate cluster, split);
- `quarantine/records.jsonl`: one record per rejected row or raw line (source, file, line, reason,
  detail, raw content truncated);
- `manifest.json`: per source and in total rows_in, kept, filtered{}, quarantined{}, tokens and the
  PII values scrubbed, the validation summary, and the sha256 of every other file under DIR.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pharia.data.manifest import atomic_dir, atomic_write_json, sha256_file

SCHEMA = "pharia.prepare/v1"
ACCOUNT_KEYS = ("domain", "rows_in", "kept", "filtered", "quarantined", "tokens", "pii_scrubbed")


def _write_clean(ingest_dir: Path, out_dir: Path) -> None:
    import pyarrow.parquet as pq

    stats = pq.read_table(ingest_dir / "stats.parquet").to_pylist()
    by_id = {row["doc_id"]: row for row in stats}
    with (
        (ingest_dir / "documents.jsonl").open(encoding="utf-8") as src,
        (out_dir / "documents.jsonl").open("w", encoding="utf-8") as dst,
    ):
        for line in src:
            doc = json.loads(line)
            dst.write(json.dumps({**by_id[doc["doc_id"]], "text": doc["text"]}, ensure_ascii=False) + "\n")


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
        "validation": {k: validation[k] for k in ("success", "evaluated", "successful", "data_docs")},
        "domain_shares": shards_manifest["domain_shares"],
        "stages": {name: str(path.relative_to(out)) for name, path in dirs.items()},
        "shards_manifest": "shards/manifest.json",
        "files": files,
    }
    atomic_write_json(out / "manifest.json", manifest)
    return manifest
