"""The four data stages in one call, for the CLI's `prepare` and for callers without DVC."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pharia.config import DataConfig
from pharia.data.contract import write_contract
from pharia.data.ingest import ingest
from pharia.data.manifest import manifest_sha256
from pharia.data.shards import pack
from pharia.data.tokenizer import train_tokenizer
from pharia.data.validate import validate

STAGE_DIRS = ("ingest", "validation", "tokenizer", "shards")


def prepare(cfg: DataConfig, out: Path) -> dict[str, Any]:
    """ingest -> validate -> tokenize -> pack under `out`, then the output contract (manifest.json
    with the DVC hash of every stage output, clean/, quarantine/: pharia.data.contract); stops at
    the first failing stage (a failed validation leaves its report in out/validation and raises
    DataValidationError)."""
    out = Path(out)
    dirs = {name: out / name for name in STAGE_DIRS}
    report = ingest(cfg, dirs["ingest"])
    validation = validate(dirs["ingest"], cfg, dirs["validation"])
    tokenizer = train_tokenizer(dirs["ingest"], cfg, dirs["tokenizer"])
    manifest = pack(dirs["ingest"], dirs["tokenizer"], cfg, dirs["shards"], dirs["validation"])
    contract = write_contract(out, dirs, validation)
    return {
        "dirs": {name: str(path) for name, path in dirs.items()},
        "documents": {
            "kept": report["totals"]["kept"],
            "filtered": report["totals"]["filtered"],
            "quarantined": report["totals"]["quarantined"],
            "splits": report["splits"],
        },
        "validation": {k: validation[k] for k in ("success", "evaluated", "successful", "data_docs")},
        "tokenizer_vocab_size": tokenizer["vocab_size"],
        "manifest_sha256": manifest_sha256(dirs["shards"]),
        "manifest": str(out / "manifest.json"),
        "clean": str(out / "clean"),
        "quarantine": str(out / "quarantine"),
        "files": len(contract["files"]),
        "dvc_md5": {path: entry["md5"] for path, entry in contract["dvc"]["outs"].items()},
        "tokens": {split: sum(e["tokens"] for e in entries.values()) for split, entries in manifest["splits"].items()},
        "canaries_planted": manifest["canaries"]["planted_documents"],
        "domain_shares_tokens": manifest["domain_shares"],
    }
