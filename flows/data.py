"""Prefect flow `pharia-data`: sources → ingest → validate → tokenize → pack → publish → push, one
task per DVC stage in the workspace's DVC project, then a funnel artifact (rows in → filtered →
quarantined → kept, per source, with a link to the Great Expectations Data Docs).

Each stage task runs `dvc repro --single-item <stage>` (pharia.data.dvc_project.repro_stage), so DVC
still decides what to skip: a second run with the same config skips every stage. I/O failures (an
OSError in a stage, the remote unwritable, DVC's lock held) are retried; bad data, a failed
validation or a bad config fail at once, since a retry would fail the same way.

Run it:  python flows/data.py --config configs/tiny.yaml   (or a params.yaml with only `data:`)
Deploy:  python flows/deploy.py   (deployment `pharia-data/local`, next to `pharia-pipeline/local`)
The pipeline flow (flows/pipeline.py) runs this flow as its data subflow.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # deployments load this file by path
    sys.path.insert(0, str(REPO_ROOT))

from pharia import environment  # noqa: E402

environment.configure()
environment.prepare_prefect_home()

from prefect import Task, flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402
from prefect.client.schemas.objects import State, TaskRun  # noqa: E402

from pharia.config import DataConfig, load_config, load_data_config  # noqa: E402
from pharia.data.dvc_project import STAGES  # noqa: E402
from pharia.errors import PhariaError  # noqa: E402
from pharia.workspace import Workspace  # noqa: E402

IO_RETRIES = 2
IO_RETRY_DELAY_S = 2
FUNNEL_ARTIFACT_KEY = "data-funnel"


def retry_on_io(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect `retry_condition_fn`: retry only I/O failures (OSError, which DataIOError is). A
    DataValidationError, DataError or ConfigError describes the data or the config: never retried."""
    error = state.result(raise_on_failure=False)
    return isinstance(error, OSError)


@task(
    name="dvc-stage",
    retries=IO_RETRIES,
    retry_delay_seconds=IO_RETRY_DELAY_S,
    retry_condition_fn=retry_on_io,
)
def dvc_stage(project_dir: str, stage: str) -> dict[str, Any]:
    """`dvc repro --single-item <stage>`: runs the stage when its deps, params or outputs changed."""
    from pharia.data.dvc_project import repro_stage

    return repro_stage(Path(project_dir), stage)


# One named task per stage, so the Prefect UI shows ingest, validate, ... rather than one name.
STAGE_TASKS = {stage: dvc_stage.with_options(name=stage, task_run_name=stage) for stage in STAGES}


@task(
    name="push",
    task_run_name="push",
    retries=IO_RETRIES,
    retry_delay_seconds=IO_RETRY_DELAY_S,
    retry_condition_fn=retry_on_io,
)
def push(project_dir: str) -> dict[str, Any]:
    """`dvc push` of every output to the workspace's DVC remote."""
    from pharia.data.dvc_project import push as step

    return step(Path(project_dir))


@flow(name="pharia-data", log_prints=True)
def pharia_data(config: DataConfig = load_config("tiny").data) -> dict[str, Any]:  # noqa: B008
    """Prepare the data of one data config (default: the tiny preset's) in its DVC project and
    return what training needs (shards, tokenizer, hashes) plus which stages ran or were skipped."""
    from pharia.data import dvc_project
    from pharia.data.funnel import render_funnel

    logger = get_run_logger()
    ws = Workspace.from_env().ensure()
    project = dvc_project.materialize(dvc_project.project_dir_for(config, ws.data_dir), config, ws.dvc_remote)
    logger.info("DVC project %s, remote %s", project, ws.dvc_remote)
    outcomes = [STAGE_TASKS[stage](str(project), stage) for stage in STAGES]

    manifest = json.loads((project / dvc_project.CONTRACT_MANIFEST).read_text(encoding="utf-8"))
    create_markdown_artifact(
        markdown=render_funnel(manifest, title=f"Data funnel: {project.name}"),
        key=FUNNEL_ARTIFACT_KEY,
        description="rows in → filtered → quarantined → kept per source; link to the Data Docs",
    )
    pushed = push(str(project))
    return {
        **dvc_project.describe(project),
        "stages_run": [o["stage"] for o in outcomes if o["status"] == "ran"],
        "stages_skipped": [o["stage"] for o in outcomes if o["status"] == "skipped"],
        "pushed": pushed["pushed"],
        "data_docs": manifest["validation"]["data_docs"],
    }


def load_data(config: str) -> DataConfig:
    """A preset name (tiny, pharia-1-7b), a pipeline config YAML, or a file with only `data:`."""
    path = Path(config)
    if path.is_file():
        return load_data_config(path)
    return load_config(config).data


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python flows/data.py",
        description="Run the pharia-data Prefect flow once, in this process (no server needed).",
    )
    parser.add_argument(
        "--config",
        default="tiny",
        help="preset name (tiny, pharia-1-7b), a pipeline config YAML or a params.yaml with only `data:` "
        "(default: tiny)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    try:
        cfg = load_data(args.config)
        from pharia.data.sources import check_sources

        check_sources(cfg)  # before Prefect starts: a missing corpus costs seconds
        result = pharia_data(config=cfg)
    except PhariaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ran = ", ".join(result["stages_run"]) or "nothing (all stages up to date)"
    print(f"data in {result['project_dir']}: ran {ran}; Data Docs {result['data_docs']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
