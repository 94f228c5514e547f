"""What `make up` runs: the five local services, their commands, environments, health checks and
URLs. Kept apart from the process bookkeeping (procs.py) and the CLI (platform.py) so the list of
services can change without touching how processes are started or stopped.

Every service listens on 127.0.0.1 only. Ports come from the environment so tests (and users with a
busy 5000) can move them: PHARIA_PREFECT_PORT, PHARIA_MLFLOW_PORT, PHARIA_DASHBOARD_PORT.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pharia.workspace import Workspace

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[2]
WORK_POOL = "pharia-process"
DEPLOYMENT = "local"
FLOW_NAME = "pharia-pipeline"
WORKER_NAME = "pharia-local-worker"


@dataclass(frozen=True)
class Ports:
    prefect: int
    mlflow: int
    dashboard: int

    @classmethod
    def from_env(cls) -> Ports:
        return cls(
            prefect=_port("PHARIA_PREFECT_PORT", 4200),
            mlflow=_port("PHARIA_MLFLOW_PORT", 5000),
            dashboard=_port("PHARIA_DASHBOARD_PORT", 8501),
        )


def _port(var: str, default: int) -> int:
    raw = os.environ.get(var) or str(default)
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise SystemExit(f"{var}={raw!r} is not a TCP port (1-65535)")
    return int(raw)


@dataclass(frozen=True)
class Platform:
    """Addresses derived from the workspace and the ports; one place for every URL `up` prints."""

    workspace: Workspace
    ports: Ports

    @property
    def prefect_url(self) -> str:
        return f"http://{HOST}:{self.ports.prefect}"

    @property
    def prefect_api(self) -> str:
        return f"{self.prefect_url}/api"

    @property
    def mlflow_url(self) -> str:
        return f"http://{HOST}:{self.ports.mlflow}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{HOST}:{self.ports.dashboard}"

    @property
    def services_dir(self) -> Path:
        return self.workspace.services_dir

    def log(self, name: str) -> Path:
        return self.services_dir / f"{name}.log"


@dataclass(frozen=True)
class Service:
    name: str
    title: str
    argv: list[str]
    env: dict[str, str]
    port: int | None
    healthy: Callable[[], bool]
    stop_signal: signal.Signals = signal.SIGTERM
    extra: dict[str, str] = field(default_factory=dict)


def _python() -> str:
    return sys.executable


def base_env(p: Platform) -> dict[str, str]:
    """The caller's environment plus the workspace and quiet switches, without the caller's MLflow or
    Prefect API URLs: each service gets the one of this platform it must use."""
    env = dict(os.environ)
    for inherited in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL"):
        env.pop(inherited, None)
    env.update(
        PHARIA_HOME=str(p.workspace.home),
        PREFECT_HOME=str(p.workspace.prefect_home),
        PYTHONUNBUFFERED="1",
        DO_NOT_TRACK="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
    )
    return env


def prefect_env(p: Platform) -> dict[str, str]:
    """Environment of every Prefect client we start (worker, CLI, deploy script)."""
    return {**base_env(p), "PREFECT_API_URL": p.prefect_api, "MLFLOW_TRACKING_URI": p.mlflow_url}


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (fixed http URL)
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def api_json(url: str, payload: dict | None = None, timeout_s: float = 5.0) -> tuple[int, object]:
    """POST `payload` (or GET without one) and return (status, decoded body); status 0 when unreachable."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


def worker_online(p: Platform, since: float) -> bool:
    """The worker has registered with the pool and sent a heartbeat after we started it."""
    status, body = api_json(f"{p.prefect_api}/work_pools/{WORK_POOL}/workers/filter", {})
    if status != 200 or not isinstance(body, list):
        return False
    from datetime import datetime

    for worker in body:
        if worker.get("name") != WORKER_NAME or not worker.get("last_heartbeat_time"):
            continue
        beat = datetime.fromisoformat(worker["last_heartbeat_time"].replace("Z", "+00:00")).timestamp()
        if beat >= since - 1:
            return True
    return False


def servers(p: Platform) -> list[Service]:
    """The three servers: started together because each takes seconds to become healthy."""
    ws = p.workspace
    python = _python()
    prefect = Service(
        name="prefect-server",
        title="Prefect server",
        argv=[python, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(p.ports.prefect)],
        env=base_env(p),
        port=p.ports.prefect,
        healthy=lambda: http_ok(f"{p.prefect_api}/health"),
    )
    mlflow = Service(
        name="mlflow-server",
        title="MLflow server",
        # --default-artifact-root (not --artifacts-destination): new experiments get file:// locations
        # like the ones the embedded SQLite default writes, so runs made with or without the server
        # stay readable both ways; the server serves file:// artifacts of old runs directly.
        argv=[
            python,
            "-m",
            "mlflow",
            "server",
            "--host",
            HOST,
            "--port",
            str(p.ports.mlflow),
            "--backend-store-uri",
            ws.mlflow_uri,
            "--default-artifact-root",
            ws.mlflow_artifacts.as_uri(),
            "--no-serve-artifacts",
            "--workers",
            "1",
        ],
        env=base_env(p),
        port=p.ports.mlflow,
        healthy=lambda: http_ok(f"{p.mlflow_url}/health"),
    )
    dashboard = Service(
        name="dashboard",
        title="Streamlit dashboard",
        argv=[
            python,
            "-m",
            "streamlit",
            "run",
            str(REPO_ROOT / "dashboards" / "app.py"),
            "--server.headless",
            "true",
            "--server.address",
            HOST,
            "--server.port",
            str(p.ports.dashboard),
            "--server.fileWatcherType",
            "none",
            "--browser.gatherUsageStats",
            "false",
            "--client.toolbarMode",
            "minimal",  # a read-only dashboard: no "Deploy" button or developer menu
        ],
        # No tqdm bars in the log for every dossier the Compliance page downloads.
        env={**base_env(p), "MLFLOW_TRACKING_URI": p.mlflow_url, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"},
        port=p.ports.dashboard,
        healthy=lambda: http_ok(f"{p.dashboard_url}/_stcore/health"),
    )
    return [prefect, mlflow, dashboard]


def worker(p: Platform, since: float) -> Service:
    return Service(
        name="prefect-worker",
        title="Prefect worker",
        argv=[_python(), "-m", "prefect", "worker", "start", "--pool", WORK_POOL, "--name", WORKER_NAME],
        env=prefect_env(p),
        port=None,
        healthy=lambda: worker_online(p, since),
        stop_signal=signal.SIGINT,  # the worker ignores SIGTERM (ASSETS.md)
    )


def pool_exists(p: Platform) -> bool:
    status, _ = api_json(f"{p.prefect_api}/work_pools/{WORK_POOL}")
    return status == 200


def create_pool_argv() -> list[str]:
    return [_python(), "-m", "prefect", "work-pool", "create", WORK_POOL, "--type", "process"]


def deploy_argv() -> list[str]:
    return [_python(), str(REPO_ROOT / "flows" / "deploy.py"), "--work-pool", WORK_POOL, "--name", DEPLOYMENT]


# Stop order for `down`: clients first, so nothing reconnects to a server that is going away.
STOP_ORDER = ("prefect-worker", "dashboard", "mlflow-server", "prefect-server")
