"""MLflow runs of a training job: one parent run, one nested run per stage (rank 0 only).

A stage's run id is stored in its output directory, so a run resumed after a crash keeps logging
into the same MLflow run (its loss curve continues) instead of starting a second, partial one.
Steps re-done after a resume are logged again at the same step numbers; MLflow shows both values
at those steps, identical within floating-point tolerance.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pharia.config import PipelineConfig, StageConfig
from pharia.registry.tracking import MetricLogger
from pharia.train.outputs import atomic_write_json

PARENT_FILE = "mlflow_parent.json"
STAGE_RUN_FILE = "mlflow_run.json"
PARENT_TAG = "mlflow.parentRunId"


def _read_id(path: Path) -> str | None:
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))["run_id"])
    except (OSError, json.JSONDecodeError, KeyError):
        return None


def _write_id(path: Path, run_id: str) -> None:
    atomic_write_json(path, {"run_id": run_id})


@dataclass
class TrainingRuns:
    """Where rank 0 logs: `parent_id` (the pipeline's run, or one created for a standalone
    `pharia train`) and one nested run per stage."""

    tracking_uri: str
    parent_id: str

    @classmethod
    def open(cls, tracking_uri: str, parent_id: str | None, cfg: PipelineConfig, out_dir: Path) -> TrainingRuns:
        """Use `parent_id` when given; otherwise reuse or create the parent run recorded in `out_dir`."""
        if parent_id is None:
            parent_id = _read_id(out_dir / PARENT_FILE)
        if parent_id is None:
            from mlflow.tracking import MlflowClient

            from pharia.registry.tracking import ensure_experiment
            from pharia.workspace import Workspace

            client = MlflowClient(tracking_uri)
            experiment = ensure_experiment(tracking_uri, cfg.registry.experiment, Workspace.from_env())
            run = client.create_run(
                experiment, tags={"mlflow.runName": f"{cfg.name}-train", "pharia.config_hash": cfg.config_hash()}
            )
            parent_id = run.info.run_id
            _write_id(out_dir / PARENT_FILE, parent_id)
        return cls(tracking_uri, parent_id)

    def stage_run(self, stage: StageConfig, index: int, stage_dir: Path, params: dict[str, Any]) -> str:
        """The nested run of `stage`: reused when `stage_dir` records one, else created with `params`."""
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.tracking_uri)
        existing = _read_id(stage_dir / STAGE_RUN_FILE)
        if existing is not None:
            client.update_run(existing, status="RUNNING")  # resumed: the same run continues
            return existing
        parent = client.get_run(self.parent_id)
        run = client.create_run(
            parent.info.experiment_id,
            run_name=f"{index + 1}-{stage.name}",
            tags={PARENT_TAG: self.parent_id, "pharia.stage": stage.name, "pharia.stage_kind": stage.kind},
        )
        items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for start in range(0, len(items), 100):
            client.log_batch(run.info.run_id, params=items[start : start + 100])
        _write_id(stage_dir / STAGE_RUN_FILE, run.info.run_id)
        return run.info.run_id

    def logger(self, run_id: str) -> MetricLogger:
        return MetricLogger(self.tracking_uri, run_id)

    def finish(self, run_id: str, ok: bool) -> None:
        from mlflow.tracking import MlflowClient

        MlflowClient(self.tracking_uri).set_terminated(run_id, status="FINISHED" if ok else "FAILED")

    def log_artifact_dir(self, run_id: str, local_dir: Path, artifact_path: str) -> None:
        from mlflow.tracking import MlflowClient

        MlflowClient(self.tracking_uri).log_artifacts(run_id, str(local_dir), artifact_path)


PARENT_KEYS = ("train_loss", "lr", "tokens_per_s", "grad_norm")
PARENT_PREFIXES = ("fast_",)  # the continuous evaluation's curves run across stages too


@dataclass
class StageMetrics:
    """Logs a stage's metrics to its own run (stage-local steps) and its headline curves to the
    parent run at global steps (`offset` = steps of earlier stages), so the parent shows one
    continuous curve across stages and each stage run its own."""

    stage: MetricLogger
    parent: MetricLogger
    offset: int

    def log(self, step: int, **values: float) -> None:
        self.stage.log(step, **values)
        headline = {k: v for k, v in values.items() if k in PARENT_KEYS or k.startswith(PARENT_PREFIXES)}
        if headline:
            self.parent.log(self.offset + step, **headline)

    def flush(self) -> None:
        self.stage.flush()
        self.parent.flush()
