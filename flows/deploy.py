"""Create the `pharia-pipeline/local` deployment on the Prefect server that PREFECT_API_URL names.

The deployment runs the flow from this checkout (local source) on the process work pool, so a run
triggered from the Prefect UI executes in a worker process on this machine. Its parameter form is
the typed PipelineConfig: the UI shows every field and refuses invalid values.
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


def deploy(work_pool: str = WORK_POOL, name: str = DEPLOYMENT) -> str:
    """Create or update the deployment; returns its id."""
    source = flow.from_source(source=str(REPO_ROOT), entrypoint="flows/pipeline.py:pharia_pipeline")
    deployment_id = source.deploy(
        name=name,
        work_pool_name=work_pool,
        description="raw text → validated data → DeepSpeed training → evaluation → MLflow → compliance dossier",
        tags=["pharia"],
        print_next_steps=False,
        ignore_warnings=True,  # Prefect suggests .serve(); the process pool + worker is the point here
    )
    return str(deployment_id)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-pool", default=WORK_POOL, help=f"process work pool to run on (default {WORK_POOL})")
    parser.add_argument("--name", default=DEPLOYMENT, help=f"deployment name (default {DEPLOYMENT})")
    args = parser.parse_args()
    print(deploy(args.work_pool, args.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
