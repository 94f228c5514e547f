"""MLflow side of the pipeline: one run per pipeline run, config as params, and the registered
model version carrying its lineage as tags (data manifest hash, git commit, config hash)."""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from pharia.config import PipelineConfig
from pharia.registry.lineage import flatten
from pharia.registry.tracking import ensure_experiment
from pharia.workspace import Workspace

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
PACKAGE_DIR = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Lineage:
    config_hash: str
    git_commit: str
    data_manifest_sha256: str
    dvc_md5: str

    def run_tags(self) -> dict[str, str]:
        return {f"pharia.{k}": v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    alias: str
    run_id: str
    model_uri: str


def start_pipeline_run(
    tracking_uri: str, cfg: PipelineConfig, workspace: Workspace, lineage: Lineage, run_name: str | None = None
) -> str:
    """Create the run every stage logs into; returns its id (the run stays open for other processes)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment_id = ensure_experiment(tracking_uri, cfg.registry.experiment, workspace)
    tags = {"pharia.pipeline": cfg.name, "mlflow.runName": run_name or f"{cfg.name}-pipeline", **lineage.run_tags()}
    run = client.create_run(experiment_id, tags=tags)
    params = flatten(cfg.model_dump(mode="json"))
    from mlflow.entities import Param

    items = [Param(k, v[:6000]) for k, v in sorted(params.items())]
    for start in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=items[start : start + 100])
    return run.info.run_id


def log_metrics_once(tracking_uri: str, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    from pharia.registry.tracking import MetricLogger

    logger = MetricLogger(tracking_uri, run_id)
    logger.log(step, **metrics)
    logger.flush()


def log_artifacts(tracking_uri: str, run_id: str, local_dir: Path, artifact_path: str) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri).log_artifacts(run_id, str(local_dir), artifact_path)


def register_model(
    tracking_uri: str,
    run_id: str,
    cfg: PipelineConfig,
    *,
    model_dir: Path,
    tokenizer_file: Path,
    special_tokens: dict[str, int],
    lineage: Lineage,
    extra_tags: dict[str, str] | None = None,
) -> RegisteredVersion:
    """Log the model as a pyfunc (code + safetensors, nothing pickled), register it, set the alias."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        special_file = Path(tmp) / "special_tokens.json"
        special_file.write_text(json.dumps(special_tokens))
        with mlflow.start_run(run_id=run_id, nested=False):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(PYFUNC_CODE),
                artifacts={
                    "model": str(model_dir),
                    "tokenizer": str(tokenizer_file),
                    "special_tokens": str(special_file),
                },
                code_paths=[str(PACKAGE_DIR)],
                pip_requirements=_requirements(),
                registered_model_name=cfg.registry.model_name,
                await_registration_for=60,
            )
        # log_model ends the run when it leaves the context; the pipeline ends it itself afterwards.
        client.update_run(run_id, status="RUNNING")
    version = str(info.registered_model_version)
    tags = {**{k: v for k, v in asdict(lineage).items()}, **(extra_tags or {})}
    for key, value in tags.items():
        client.set_model_version_tag(cfg.registry.model_name, version, key, value)
    client.set_registered_model_alias(cfg.registry.model_name, cfg.registry.alias, version)
    return RegisteredVersion(
        name=cfg.registry.model_name,
        version=version,
        alias=cfg.registry.alias,
        run_id=run_id,
        model_uri=f"models:/{cfg.registry.model_name}/{version}",
    )


def tag_version(tracking_uri: str, name: str, version: str, tags: dict[str, str]) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def end_run(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri).set_terminated(run_id, status=status)


def _requirements() -> list[str]:
    import importlib.metadata as md

    names = ["torch", "tokenizers", "safetensors", "numpy", "pydantic", "pyyaml", "mlflow"]
    return [f"{n}=={md.version(n).split('+')[0]}" for n in names]
