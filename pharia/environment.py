"""Process environment every pharia entry point needs, set once before heavy imports.

Prefect reads PREFECT_HOME at import time and DeepSpeed probes accelerators at import time, so
entry points call `configure()` first. Existing values win: a user's settings are never overridden.
"""

from __future__ import annotations

import os
from pathlib import Path

from pharia.workspace import Workspace

QUIET_DEFAULTS = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "GIT_PYTHON_REFRESH": "quiet",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def configure(workspace: Workspace | None = None) -> Workspace:
    """Point Prefect, DeepSpeed's op cache and analytics switches at the workspace.

    DS_ACCELERATOR is not set here: the training launcher sets it from `train.device`."""
    ws = workspace or Workspace.from_env()
    os.environ.setdefault("PHARIA_HOME", str(ws.home))
    os.environ.setdefault("PREFECT_HOME", str(ws.prefect_home))
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ws.torch_extensions))
    for key, value in QUIET_DEFAULTS.items():
        os.environ.setdefault(key, value)
    return ws


def prepare_prefect_home() -> Path:
    """Create PREFECT_HOME before Prefect is imported (it warns and falls back otherwise). Called by
    the entry points that use Prefect, so that `pharia --help` writes nothing to the workspace."""
    home = Path(os.environ["PREFECT_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    return home
