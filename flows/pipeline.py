"""Prefect flow `pharia-pipeline`: raw text → validated data → DeepSpeed-trained model → evaluation →
MLflow registration → compliance dossier. Training runs one task per training stage, each followed by
its own full-suite evaluation task; every task is a thin call into pharia/.
The data stages are the `pharia-data` flow (flows/data.py), run here as a subflow: one task per DVC
stage, I/O retries and the data funnel artifact come with it.

Run it:  python flows/pipeline.py --config configs/tiny.yaml   (what `make demo` does)
Deploy:  python flows/deploy.py   (what `make up` does; then trigger it from the Prefect UI)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # deployments load this file by path
    sys.path.insert(0, str(REPO_ROOT))

from pharia import environment  # noqa: E402

environment.configure()
environment.prepare_prefect_home()

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402

from flows.data import pharia_data  # noqa: E402
from pharia.config import PipelineConfig, load_config  # noqa: E402
from pharia.errors import PhariaError  # noqa: E402
from pharia.workspace import Workspace  # noqa: E402


@task(name="preflight")
def preflight(cfg: PipelineConfig) -> str:
    """Fail in seconds, before any work, on a missing corpus or an unreachable MLflow server."""
    from pharia.preflight import run_preflight

    return run_preflight(cfg, Workspace.from_env())


@task(name="train-stage", task_run_name="train-{stage}")
def train_stage(cfg: PipelineConfig, data: dict, run_dir: str, tracking_uri: str, run_id: str, stage: str) -> dict:
    """One training stage (DeepSpeed in a child process), from the previous stage's weights."""
    from pharia.pipeline_steps import train_stage as step

    return step(cfg, data, Path(run_dir), tracking_uri, run_id, stage)


@task(name="evaluate-stage", task_run_name="evaluate-{stage}")
def evaluate_stage(
    cfg: PipelineConfig, data: dict, stage_summary: dict, run_dir: str, tracking_uri: str, stage: str
) -> dict:
    """The full evaluation suite on one stage's final weights: one task per suite, not per sample."""
    from pharia.pipeline_steps import evaluate_stage as step

    return step(cfg, data, stage_summary, Path(run_dir), tracking_uri, stage)


@task(name="register")
def register(cfg: PipelineConfig, data: dict, training: dict, evaluation: dict, tracking_uri: str, run_id: str) -> dict:
    from pharia.pipeline_steps import register as step

    return step(cfg, data, training, evaluation, tracking_uri, run_id)


@task(name="compliance-report")
def compliance_report(
    cfg: PipelineConfig, data: dict, training: dict, evaluation: dict, version: dict, tracking_uri: str
) -> dict:
    from pharia.pipeline_steps import comply as step

    return step(cfg, data, training, evaluation, version, tracking_uri, Workspace.from_env())


@flow(name="pharia-pipeline", log_prints=True)
def pharia_pipeline(config: PipelineConfig = load_config("tiny")) -> dict:  # noqa: B008
    """Run the whole chain for one configuration (default: the tiny preset) and return where to look."""
    from pharia.pipeline_steps import final_evaluation, finish_run, open_run, render_summary

    logger = get_run_logger()
    started = time.perf_counter()
    cfg = config
    tracking_uri = preflight(cfg)
    ws = Workspace.from_env().ensure()
    run_id, run_dir = open_run(cfg, ws, tracking_uri)
    logger.info("MLflow run %s, outputs in %s", run_id, run_dir)
    try:
        data = pharia_data(config=cfg.data)  # subflow: ingest → validate → tokenize → pack → publish → push
        stage_results = []
        for stage in cfg.train.stage_list():  # train a stage, evaluate it, then the next from its weights
            training = train_stage(cfg, data, str(run_dir), tracking_uri, run_id, stage.name)
            stage_results.append(evaluate_stage(cfg, data, training, str(run_dir), tracking_uri, stage.name))
        evaluation = final_evaluation(stage_results, training, tracking_uri, run_id)
        version = register(cfg, data, training, evaluation, tracking_uri, run_id)
        report = compliance_report(cfg, data, training, evaluation, version, tracking_uri)
    except BaseException:
        finish_run(tracking_uri, run_id, run_dir, ok=False)
        raise
    finish_run(tracking_uri, run_id, run_dir, ok=True)
    result = {
        "run_id": run_id,
        "tracking_uri": tracking_uri,
        "model": version,
        "report": report,
        "metrics": evaluation["metrics"],
        "evaluation_dir": str(Path(evaluation["dir"]).parent),
        "stage_evaluations": {r["stage"]: r["dir"] for r in stage_results},
        "data": {k: data[k] for k in ("manifest_sha256", "dvc_md5", "project_dir", "stages_run", "stages_skipped")},
        "wall_s": round(time.perf_counter() - started, 1),
    }
    summary = render_summary(result)
    create_markdown_artifact(markdown=summary, key="pharia-pipeline-summary", description="where to look")
    print(summary)
    return result


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python flows/pipeline.py",
        description="Run the pharia-pipeline Prefect flow once, in this process (no server needed).",
    )
    parser.add_argument(
        "--config", default="tiny", help="preset name (tiny, pharia-1-7b) or a YAML config file (default: tiny)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    try:
        cfg = load_config(args.config)
        from pharia.preflight import run_preflight

        run_preflight(cfg, Workspace.from_env())  # before Prefect starts: a bad input costs seconds
        pharia_pipeline(config=cfg)
    except PhariaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
