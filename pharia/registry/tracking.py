"""Where MLflow lives and how metrics reach it.

The embedded default is SQLite inside the workspace, so a laptop needs no server; `make up` or a
cluster points `MLFLOW_TRACKING_URI` at a server instead. Metrics are buffered and sent with
`log_batch` (one call per ~50 points instead of one per point: 0.03 s vs 2 s per 100, ASSETS.md).
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from pharia.config import RegistryConfig
from pharia.errors import PhariaError
from pharia.workspace import Workspace


class TrackingUnavailable(PhariaError):
    """The MLflow tracking server cannot be reached; the message names it."""


def resolve_tracking_uri(cfg: RegistryConfig, workspace: Workspace) -> str:
    """Config wins, then $MLFLOW_TRACKING_URI, then the workspace's SQLite database."""
    return cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or workspace.mlflow_uri


def check_reachable(tracking_uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, before any work, when an HTTP tracking server does not answer /health."""
    if not tracking_uri.startswith(("http://", "https://")):
        if tracking_uri.startswith("sqlite:///"):
            Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return
    url = tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (http only)
            if response.status != 200:
                raise TrackingUnavailable(f"MLflow server {tracking_uri} answered {response.status} on /health")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingUnavailable(f"MLflow server {tracking_uri} is unreachable: {reason}") from None


def ensure_experiment(tracking_uri: str, name: str, workspace: Workspace) -> str:
    """Experiment id for `name`, created with its artifacts under the workspace when new.

    With a SQLite store MLflow would otherwise put artifacts in `./mlruns` of whatever directory the
    process started in; an HTTP server decides the location itself.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if not tracking_uri.startswith(("http://", "https://")):
        location = (workspace.mlflow_artifacts / name).as_uri()
    return client.create_experiment(name, artifact_location=location)


@dataclass
class MetricLogger:
    """Buffers metrics of one run and flushes them with `log_batch` every `flush_every` points."""

    tracking_uri: str
    run_id: str
    flush_every: int = 50
    _buffer: list = field(default_factory=list)

    def log(self, step: int, **values: float) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for key, value in values.items():
            self._buffer.append(Metric(key=key, value=float(value), timestamp=now, step=int(step)))
        if len(self._buffer) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.tracking_uri)
        for start in range(0, len(self._buffer), 1000):  # MLflow's per-call limit
            client.log_batch(self.run_id, metrics=self._buffer[start : start + 1000])
        self._buffer.clear()
