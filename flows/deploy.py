"""Create the `pharia-pipeline/local` and `pharia-data/local` deployments on the Prefect server that
PREFECT_API_URL names.

The deployments run the flows from this checkout (local source) on the process work pool, so a run
triggered from the Prefect UI executes in a worker process on this machine. Their parameter forms
are the typed configs (PipelineConfig, DataConfig): the UI shows every field and refuses invalid
values. `pharia-data` alone prepares data (DVC stages, funnel artifact) without training.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from pharia import environment  # noqa: E402

environment.configure()
environment.prepare_prefect_home()

from prefect import flow  # noqa: E402

WORK_POOL = "pharia-process"
DEPLOYMENT = "local"


# (flow name, entrypoint, description) of every deployment `make up` creates
FLOWS: tuple[tuple[str, str, str], ...] = (
    (
        "pharia-pipeline",
        "flows/pipeline.py:pharia_pipeline",
        "raw text → validated data → DeepSpeed training → evaluation → MLflow → compliance dossier",
    ),
    (
        "pharia-data",
        "flows/data.py:pharia_data",
        "raw text → ingest → validate (Data Docs) → tokenize → pack → publish → dvc push; funnel artifact",
    ),
)


def deploy(
    work_pool: str = WORK_POOL, name: str = DEPLOYMENT, entrypoint: str = FLOWS[0][1], description: str = FLOWS[0][2]
) -> str:
    """Create or update one deployment (default: the pipeline's); returns its id."""
    source = flow.from_source(source=str(REPO_ROOT), entrypoint=entrypoint)
    deployment_id = source.deploy(
        name=name,
        work_pool_name=work_pool,
        description=description,
        tags=["pharia"],
        print_next_steps=False,
        ignore_warnings=True,  # Prefect suggests .serve(); the process pool + worker is the point here
    )
    return str(deployment_id)


def deploy_all(work_pool: str = WORK_POOL, name: str = DEPLOYMENT) -> dict[str, str]:
    """Every deployment of FLOWS: {"<flow>/<name>": id}."""
    return {
        f"{flow_name}/{name}": deploy(work_pool, name, entrypoint, description)
        for flow_name, entrypoint, description in FLOWS
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-pool", default=WORK_POOL, help=f"process work pool to run on (default {WORK_POOL})")
    parser.add_argument("--name", default=DEPLOYMENT, help=f"deployment name (default {DEPLOYMENT})")
    args = parser.parse_args()
    for deployment, deployment_id in deploy_all(args.work_pool, args.name).items():
        print(f"{deployment} {deployment_id}")  # one line each: `make up` reports them
    return 0


if __name__ == "__main__":
    sys.exit(main())
