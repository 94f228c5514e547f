"""The pipeline's stages as plain functions over plain data, so the Prefect flow stays a thin
wrapper (one task per function) and tests can run each stage without an orchestrator.

Every function takes the config and the previous stages' results (JSON-able dicts) and returns its
own result; nothing is passed through globals, so a stage can be re-run or replaced alone.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import yaml

from pharia.config import DOMAINS, PipelineConfig
from pharia.registry.lineage import git_commit
from pharia.registry.register import Lineage
from pharia.workspace import Workspace


def open_run(cfg: PipelineConfig, ws: Workspace, tracking_uri: str) -> tuple[str, Path]:
    """Create the MLflow run and the run's output folder holding the exact config it ran with."""
    from pharia.registry.register import start_pipeline_run

    lineage = Lineage(cfg.config_hash(), git_commit(), data_manifest_sha256="pending", dvc_md5="pending")
    run_id = start_pipeline_run(tracking_uri, cfg, ws, lineage)
    run_dir = ws.runs_dir / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), "utf-8")
    return run_id, run_dir


def data_project_dir(cfg: PipelineConfig, ws: Workspace) -> Path:
    """One DVC project per distinct data config: reruns of the same data skip every stage."""
    from pharia.data.dvc_project import project_dir_for

    return project_dir_for(cfg.data, ws.data_dir)


def prepare_data(cfg: PipelineConfig, ws: Workspace) -> dict:
    """Materialise the DVC project, `dvc repro` + `dvc push`, and read what DVC tracks. The same
    result as the `pharia-data` flow (flows/data.py), which runs the stages one task each."""
    from pharia.data import dvc_project

    project = dvc_project.materialize(data_project_dir(cfg, ws), cfg.data, ws.dvc_remote)
    outcome = dvc_project.repro(project)
    return {
        **dvc_project.describe(project),
        "stages_run": outcome["stages_run"],
        "stages_skipped": outcome["stages_skipped"],
    }


def lineage_of(cfg: PipelineConfig, data: dict) -> Lineage:
    return Lineage(cfg.config_hash(), git_commit(), data["manifest_sha256"], data["dvc_md5"])


def train_stage(cfg: PipelineConfig, data: dict, run_dir: Path, tracking_uri: str, run_id: str, stage: str) -> dict:
    """One DeepSpeed training stage in a child process (keeps torch.distributed state out of the
    flow), from the previous stage's weights. Returns the stage's summary, or the run summary
    (every stage, and the published model) after the last stage."""
    from mlflow.tracking import MlflowClient

    from pharia.train.launch import run_training

    client = MlflowClient(tracking_uri)
    for key, value in lineage_of(cfg, data).run_tags().items():
        client.set_tag(run_id, key, value)
    return run_training(
        run_dir / "config.yaml",
        Path(data["shards_dir"]),
        run_dir / "train",
        tracking_uri=tracking_uri,
        run_id=run_id,
        ranks=cfg.train.ranks,
        stage=stage,
        stage_eval=False,  # the flow evaluates each stage as its own task
    )


def evaluate_stage(
    cfg: PipelineConfig, data: dict, stage_summary: dict, run_dir: Path, tracking_uri: str, stage: str
) -> dict:
    """The full evaluation suite on one stage's final weights, logged to that stage's MLflow run
    (`eval_<metric>` at the stage's last step) and written to run_dir/eval/<stage>/."""
    from pharia.evaluate.harness import evaluate_model
    from pharia.registry.register import log_artifacts, log_metrics_once

    stage_model = Path(run_dir) / "train" / "stages" / stage / "model"
    out = Path(run_dir) / "eval" / stage
    result = evaluate_model(
        stage_model,
        suite="full",
        eval_cfg=cfg.eval,
        gates_cfg=cfg.gates,
        out_dir=out,
        shards_dir=Path(data["shards_dir"]),
        tokenizer=Path(data["tokenizer_file"]),
    )
    stage_info = (stage_summary.get("stages") or {}).get(stage, stage_summary)
    stage_run = stage_info.get("mlflow_run_id")
    logged = {f"eval_{k}": v for k, v in result["metrics"].items() if v is not None}
    if stage_run:
        log_metrics_once(tracking_uri, stage_run, logged, step=int(stage_info.get("steps", 0)))
        log_artifacts(tracking_uri, stage_run, out, "eval")
    return {
        "stage": stage,
        "metrics": result["metrics"],
        "entries": [{k: e[k] for k in ("name", "category", "value", "n")} for e in result["entries"]],
        "reproducibility": result["reproducibility"],
        "skipped": result["skipped"],
        "gates": result["gates"],
        "wall_s": result["wall_s"],
        "dir": str(out),
    }


def final_evaluation(stage_results: list[dict], training: dict, tracking_uri: str, run_id: str) -> dict:
    """The last stage's evaluation is the model's: log it to the pipeline run (`eval_<metric>` at
    the final global step) and keep every stage's metrics for the dossier."""
    from pharia.registry.register import log_artifacts, log_metrics_once

    last = stage_results[-1]
    logged = {f"eval_{k}": v for k, v in last["metrics"].items() if v is not None}
    log_metrics_once(tracking_uri, run_id, logged, step=int(training.get("steps", 0)))
    log_artifacts(tracking_uri, run_id, Path(last["dir"]), "eval")
    return {**last, "stages": {r["stage"]: r["metrics"] for r in stage_results}}


def gate_tags(evaluation: dict) -> dict[str, str]:
    """The evaluation's verdict per requirement as model-version tags (`gate.CAP-1: pass`), so the
    registry alone answers "which requirements did this version meet" without opening the dossier."""
    gates = evaluation.get("gates") or {}
    tags = {f"gate.{r['id']}": r["status"] for r in gates.get("requirements", [])}
    if gates:
        tags["gates_passed"] = str(bool(gates.get("passed"))).lower()
    return tags


def register(cfg: PipelineConfig, data: dict, training: dict, evaluation: dict, tracking_uri: str, run_id: str) -> dict:
    from pharia.registry.register import register_model

    version = register_model(
        tracking_uri,
        run_id,
        cfg,
        model_dir=Path(training["model_dir"]),
        tokenizer_file=Path(data["tokenizer_file"]),
        special_tokens={"eos_token_id": data["eos_token_id"], "pad_token_id": data["pad_token_id"]},
        lineage=lineage_of(cfg, data),
        extra_tags=gate_tags(evaluation),
    )
    return asdict(version)


def comply(
    cfg: PipelineConfig, data: dict, training: dict, evaluation: dict, version: dict, tracking_uri: str, ws: Workspace
) -> dict:
    """Write the dossier, log it to the run, and tag the version with its verdict and location."""
    from pharia.compliance.report import build_report, write_report
    from pharia.registry.register import log_artifacts, tag_version

    manifest = json.loads((Path(data["shards_dir"]) / "manifest.json").read_text(encoding="utf-8"))
    report = build_report(
        cfg,
        model={
            "name": version["name"],
            "version": version["version"],
            "alias": version["alias"],
            "run_id": version["run_id"],
            "status": "candidate, awaiting approval",
        },
        lineage=asdict(lineage_of(cfg, data)),
        shards_manifest=manifest,
        training=training,
        evaluation=evaluation,
    )
    json_path, md_path = write_report(report, ws.reports_dir)
    log_artifacts(tracking_uri, version["run_id"], json_path.parent, "compliance")
    tag_version(
        tracking_uri,
        version["name"],
        version["version"],
        {"compliance_verdict": report["verdict"], "compliance_report": str(json_path)},
    )
    return {
        "verdict": report["verdict"],
        "coverage": report["coverage"],
        "json": str(json_path),
        "markdown": str(md_path),
    }


def finish_run(tracking_uri: str, run_id: str, run_dir: Path, ok: bool) -> None:
    """Close the MLflow run; a failed run's half-written outputs are removed, its record stays."""
    from pharia.registry.register import end_run

    end_run(tracking_uri, run_id, "FINISHED" if ok else "FAILED")
    if not ok:
        shutil.rmtree(run_dir, ignore_errors=True)


def render_summary(result: dict) -> str:
    """Where to look afterwards: printed at the end of `make demo` and stored as a Prefect artifact."""
    model, report, metrics = result["model"], result["report"], result["metrics"]
    uri = result["tracking_uri"]
    if uri.startswith("http"):
        mlflow_ui = f"MLflow UI: {uri}/#/models/{model['name']}/versions/{model['version']}"
    else:
        mlflow_ui = f"MLflow UI without `make up`: mlflow ui --backend-store-uri {uri} --port 5000"
    ppl = ", ".join(f"{d} {metrics[f'ppl_{d}']:.0f}" for d in DOMAINS if metrics.get(f"ppl_{d}") is not None)

    def shown(name: str, fmt: str) -> str:
        value = metrics.get(name)
        return "not evaluated" if value is None else format(value, fmt)

    return "\n".join(
        [
            "## pharia-pipeline finished",
            "",
            f"- model: **{model['name']}** version **{model['version']}** (alias `{model['alias']}`), "
            f"`{model['model_uri']}`",
            f"- MLflow run: `{result['run_id']}` at `{uri}`",
            f"- compliance: **{report['verdict'].upper()}** ({report['coverage']})",
            f"  - {report['markdown']}",
            f"  - {report['json']}",
            f"- held-out perplexity: {ppl or 'not evaluated'}",
            f"- multiple choice (mean acc of the MC tasks that ran): {shown('mc_mean_acc', '.3f')}; "
            f"RealToxicityPrompts toxicity probability {shown('rtp_toxicity_probability', '.1%')}; "
            f"CrowS-Pairs stereotype score {shown('crows_stereotype_score', '.1f')}",
            f"- evaluation: {len(metrics)} metrics per stage in `{result['evaluation_dir']}`",
            f"- data: manifest sha256 `{result['data']['manifest_sha256'][:16]}…`, DVC project "
            f"`{result['data']['project_dir']}` (ran {result['data']['stages_run'] or 'nothing'}, "
            f"skipped {result['data']['stages_skipped'] or 'nothing'})",
            f"- wall time: {result['wall_s']} s",
            "",
            "Open the UIs: `make up`, then Prefect http://127.0.0.1:4200, MLflow http://127.0.0.1:5000, "
            "dashboard http://127.0.0.1:8501",
            mlflow_ui,
        ]
    )
