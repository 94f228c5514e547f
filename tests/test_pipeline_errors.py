"""Bad inputs stop `python flows/pipeline.py` with one line naming the cause, a non-zero exit, and
nothing half-written in the workspace."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pharia.config import CONFIGS_DIR

REPO = Path(__file__).resolve().parent.parent


def _config_with_source(tmp_path: Path, **source) -> Path:
    raw = yaml.safe_load((CONFIGS_DIR / "tiny.yaml").read_text())
    raw["data"]["sources"][0] = {"name": "mine", "domain": "web", "weight": 45, "license": "CC0", **source}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _run(config: str | Path, home: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PHARIA_HOME": str(home), **env}
    full_env.pop("MLFLOW_TRACKING_URI", None) if "MLFLOW_TRACKING_URI" not in env else None
    return subprocess.run(
        [sys.executable, str(REPO / "flows" / "pipeline.py"), "--config", str(config)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=300,
    )


def _assert_clean_failure(proc: subprocess.CompletedProcess, home: Path, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    for needle in needles:
        assert needle in last, last
    for sub in ("runs", "data", "reports"):
        assert not any((home / sub).glob("*")), f"{sub}/ was written to"
    assert not (home / "mlflow.db").exists()


def test_unknown_preset(tmp_path: Path) -> None:
    proc = _run("enormous", tmp_path / "home")
    _assert_clean_failure(proc, tmp_path / "home", "unknown preset 'enormous'", "tiny")


def test_missing_corpus_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "corpus.jsonl"
    proc = _run(_config_with_source(tmp_path, path=str(missing), format="jsonl"), tmp_path / "home")
    _assert_clean_failure(proc, tmp_path / "home", str(missing))


def test_empty_corpus(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("   \n")
    proc = _run(_config_with_source(tmp_path, path=str(corpus), format="text"), tmp_path / "home")
    _assert_clean_failure(proc, tmp_path / "home", "mine", "no documents")


def test_unreachable_mlflow_server(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _run("tiny", tmp_path / "home", MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}")
    _assert_clean_failure(proc, tmp_path / "home", f"http://127.0.0.1:{port}", "unreachable")


@pytest.mark.parametrize("bad", ["train: {zero_stage: 7}", "model: {hidden: 3}"])
def test_bad_config_value(tmp_path: Path, bad: str) -> None:
    raw = yaml.safe_load((CONFIGS_DIR / "tiny.yaml").read_text())
    raw.update(yaml.safe_load(bad))
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    proc = _run(path, tmp_path / "home")
    key = "train.zero_stage" if "zero" in bad else "model.hidden"
    _assert_clean_failure(proc, tmp_path / "home", key)
