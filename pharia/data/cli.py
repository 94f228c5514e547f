"""`pharia data ...`: the data stages from a shell, as DVC runs them.

Every command takes `--config`: a full pipeline config or a file with only a `data:` section (DVC's
params.yaml). Commands print a short JSON summary on stdout; progress goes to stderr. pharia errors
propagate to `pharia.cli.main`, which prints them as one line and exits 2. When PHARIA_ERROR_FILE is
set, the error's class and message are also written there, so a parent process (`dvc_project.repro`
runs these commands through `dvc repro`) can re-raise the same error class. OSErrors (a full disk, a
vanished file) are recorded too, as type `OSError`: the parent re-raises them as an I/O error that
the Prefect data flow retries, whereas a pharia error means bad data or config and is never retried.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import typer

from pharia.errors import PhariaError

P = ParamSpec("P")
R = TypeVar("R")

ERROR_FILE_ENV = "PHARIA_ERROR_FILE"

app = typer.Typer(
    help=(
        "Data stages: ingest -> validate (Great Expectations) -> tokenize (BPE or GPT-2) -> pack (token shards)"
        " -> publish (manifest.json, clean/, quarantine/)."
    ),
    no_args_is_help=True,
)

CONFIG_HELP = "pipeline config YAML, or a file with only a `data:` section (e.g. params.yaml)"


def _report_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Record a PhariaError's class (or `OSError` for any I/O error) for a parent process, then let
    the error propagate unchanged."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (PhariaError, OSError) as exc:
            target = os.environ.get(ERROR_FILE_ENV)
            if target:
                kind = type(exc).__name__ if isinstance(exc, PhariaError) else "OSError"
                Path(target).write_text(json.dumps({"type": kind, "message": str(exc)}), encoding="utf-8")
            raise

    return wrapper


def _echo(summary: dict[str, Any], started: float) -> None:
    typer.echo(json.dumps({**summary, "wall_s": round(time.perf_counter() - started, 2)}, indent=2, ensure_ascii=False))


def _load(config: Path) -> Any:
    from pharia.config import load_data_config

    return load_data_config(config)


@app.command("sources")
@_report_errors
def sources_cmd(
    as_json: bool = typer.Option(False, "--json", help="print the table as JSON"),
) -> None:
    """List the built-in packaged corpora: domain, licence and whether they are installed here."""
    from pharia.data.sources import describe_builtins

    rows = describe_builtins()
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="built-in corpora (file locations: --json)")
    table.add_column("name", no_wrap=True)
    table.add_column("domain", no_wrap=True)
    table.add_column("licence")
    table.add_column("installed", no_wrap=True)
    for row in rows:
        table.add_row(str(row["name"]), str(row["domain"]), str(row["license"]), "yes" if row["installed"] else "no")
    Console().print(table)


@app.command("ingest")
@_report_errors
def ingest_cmd(
    config: Path = typer.Option(..., help=CONFIG_HELP),
    out: Path = typer.Option(
        ..., help="output directory (replaced atomically): documents.jsonl, stats.parquet, quarantine/filtered.jsonl"
    ),
) -> None:
    """Read, normalise, filter and mix the sources (streamed); assign train/validation/heldout splits;
    one record per quarantined row (quarantine.jsonl) and per filtered row (filtered.jsonl)."""
    from pharia.data.ingest import ingest

    started = time.perf_counter()
    report = ingest(_load(config), out)
    _echo({"out": str(out), "totals": report["totals"], "domain_shares": report["domain_shares"]}, started)


@app.command("validate")
@_report_errors
def validate_cmd(
    config: Path = typer.Option(..., help=CONFIG_HELP),
    ingest: Path = typer.Option(..., help="output directory of `pharia data ingest`"),
    out: Path = typer.Option(..., help="output directory: validation.json and the gx/ context with Data Docs"),
) -> None:
    """Run the Great Expectations suite over the ingest statistics; exit 2 when it fails."""
    from pharia.data.validate import validate

    started = time.perf_counter()
    summary = validate(ingest, _load(config), out)
    _echo({k: summary[k] for k in ("success", "evaluated", "successful", "data_docs")}, started)


@app.command("tokenize")
@_report_errors
def tokenize_cmd(
    config: Path = typer.Option(..., help=CONFIG_HELP),
    ingest: Path = typer.Option(..., help="output directory of `pharia data ingest` (train split is used)"),
    out: Path = typer.Option(..., help="output directory: tokenizer.json and tokenizer_meta.json"),
) -> None:
    """Train the byte-level BPE on the train-split documents (data.tokenizer: bpe), or convert the real
    GPT-2 vocabulary offline (data.tokenizer: gpt2); special tokens eos, pad and domain tags."""
    from pharia.data.tokenizer import train_tokenizer

    started = time.perf_counter()
    _echo(train_tokenizer(ingest, _load(config), out), started)


@app.command("pack")
@_report_errors
def pack_cmd(
    config: Path = typer.Option(..., help=CONFIG_HELP),
    ingest: Path = typer.Option(..., help="output directory of `pharia data ingest`"),
    tokenizer: Path = typer.Option(..., help="output directory of `pharia data tokenize`"),
    validation: Path | None = typer.Option(
        None, help="output directory of `pharia data validate`; packing refuses a failed validation"
    ),
    out: Path = typer.Option(..., help="output directory: <split>/<domain>.bin token files and manifest.json"),
) -> None:
    """Encode the documents into flat token shards per split and domain, with manifest.json."""
    from pharia.data.manifest import manifest_sha256
    from pharia.data.shards import pack

    started = time.perf_counter()
    manifest = pack(ingest, tokenizer, _load(config), out, validation)
    _echo(
        {
            "out": str(out),
            "manifest_sha256": manifest_sha256(out),
            "domain_shares": manifest["domain_shares"],
            "canaries_planted": manifest["canaries"]["planted_documents"],
        },
        started,
    )


@app.command("publish")
@_report_errors
def publish_cmd(
    ingest: Path = typer.Option(..., help="output directory of `pharia data ingest`"),
    validation: Path = typer.Option(..., help="output directory of `pharia data validate`"),
    tokenizer: Path = typer.Option(..., help="output directory of `pharia data tokenize`"),
    shards: Path = typer.Option(..., help="output directory of `pharia data pack`"),
    out: Path = typer.Option(..., help="directory holding the four stage outputs: manifest.json, clean/, quarantine/"),
) -> None:
    """Write the output contract over finished stages: manifest.json (accounting, validation, file
    sha256s, DVC hashes), clean/documents.jsonl, quarantine/records.jsonl. The same layout as
    `pharia data prepare --out`, so the DVC project's data/ reads like a prepare directory."""
    from pharia.data.contract import publish

    started = time.perf_counter()
    dirs = {"ingest": ingest, "validation": validation, "tokenizer": tokenizer, "shards": shards}
    manifest = publish(out, dirs)
    _echo(
        {
            "out": str(out),
            "manifest": str(out / "manifest.json"),
            "totals": manifest["totals"],
            "dvc": {path: entry["md5"] for path, entry in manifest["dvc"]["outs"].items()},
        },
        started,
    )


@app.command("prepare")
@_report_errors
def prepare_cmd(
    config: Path = typer.Option(..., help=CONFIG_HELP),
    out: Path = typer.Option(..., help="output root: ingest/, validation/, tokenizer/ and shards/ are written inside"),
) -> None:
    """All stages in one process (no DVC): ingest, validate, tokenize, pack, then the output
    contract that `publish` writes."""
    from pharia.data.prepare import prepare

    started = time.perf_counter()
    _echo(prepare(_load(config), out), started)
