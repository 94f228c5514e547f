"""Tracking URI resolution and the fail-fast check of an MLflow server."""

import socket
from pathlib import Path

import pytest

from pharia.config import RegistryConfig
from pharia.registry.lineage import flatten, git_commit
from pharia.registry.tracking import TrackingUnavailable, check_reachable, resolve_tracking_uri
from pharia.workspace import Workspace


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_is_named() -> None:
    uri = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(TrackingUnavailable, match=f"MLflow server {uri} is unreachable"):
        check_reachable(uri, timeout_s=2)


def test_resolution_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(RegistryConfig(), ws) == f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri(RegistryConfig(), ws) == "http://127.0.0.1:5000"
    assert resolve_tracking_uri(RegistryConfig(tracking_uri="sqlite:///x.db"), ws) == "sqlite:///x.db"


def test_sqlite_check_creates_the_folder(tmp_path: Path) -> None:
    check_reachable(f"sqlite:///{tmp_path}/new/mlflow.db")
    assert (tmp_path / "new").is_dir()


def test_flatten_and_commit() -> None:
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": "x"}) == {"a.b": "1", "a.c": "[1, 2]", "d": "x"}
    commit = git_commit()
    assert commit == "unknown" or len(commit.removesuffix("-dirty")) == 40
    assert git_commit(Path("/")) == "unknown"
