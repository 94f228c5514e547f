"""Where a training run's outputs live inside its `--out` directory, shared by the worker that
writes them and the launcher that reads them back."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SUMMARY_FILE = "train_summary.json"
MODEL_DIR = "model"


def atomic_write_json(path: Path, data: dict[str, Any]) -> None:
    """Write to a temporary sibling and rename, so a reader never sees half a summary."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
