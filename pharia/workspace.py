"""One directory holds all state (MLflow, Prefect, DVC, checkpoints, reports) so a user can
inspect, back up or delete a whole installation at once. Default `./.pharia`, or `$PHARIA_HOME`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "PHARIA_HOME"
DEFAULT_HOME = ".pharia"


@dataclass(frozen=True)
class Workspace:
    """Paths of everything pharia keeps on disk; creating the object creates nothing."""

    home: Path

    @classmethod
    def from_env(cls) -> "Workspace":
        return cls(Path(os.environ.get(ENV_VAR) or DEFAULT_HOME).expanduser().resolve())

    @property
    def mlflow_db(self) -> Path:
        return self.home / "mlflow.db"

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{self.mlflow_db}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

    @property
    def dvc_remote(self) -> Path:
        return self.home / "dvc-remote"

    @property
    def data_dir(self) -> Path:
        """DVC project the pipeline materialises its data stages in."""
        return self.home / "data"

    @property
    def runs_dir(self) -> Path:
        """Training outputs and checkpoints, one folder per pipeline run."""
        return self.home / "runs"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def services_dir(self) -> Path:
        """PID files and logs of the services `make up` started."""
        return self.home / "services"

    @property
    def torch_extensions(self) -> Path:
        """DeepSpeed's compiled ops cache (first compile takes minutes; reuse it)."""
        return self.home / "torch_extensions"

    def ensure(self) -> "Workspace":
        for path in (self.home, self.mlflow_artifacts, self.runs_dir, self.reports_dir, self.data_dir):
            path.mkdir(parents=True, exist_ok=True)
        return self
