"""Shared fixtures: a throwaway workspace per test, a Prefect test server per session, and a stable
DeepSpeed op cache (compiling it takes minutes; it is keyed by the venv, not by the test)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STABLE_EXTENSIONS = os.environ.get("TORCH_EXTENSIONS_DIR") or str(REPO / ".pharia" / "torch_extensions")
os.environ["TORCH_EXTENSIONS_DIR"] = STABLE_EXTENSIONS
os.environ.setdefault("DS_ACCELERATOR", "cpu")
for key, value in {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
}.items():
    os.environ.setdefault(key, value)


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """PHARIA_HOME in tmp; MLflow resolves to the workspace's SQLite database."""
    from pharia.workspace import Workspace

    home = tmp_path / "pharia-home"
    monkeypatch.setenv("PHARIA_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return Workspace(home)


@pytest.fixture(scope="session")
def prefect_server():
    """A real Prefect API (temporary SQLite database) for the flow tests of this session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def mlflow_template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated MLflow SQLite store: migrating takes seconds, copying the file per test milliseconds."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path
