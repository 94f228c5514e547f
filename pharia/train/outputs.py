"""Where a training run's outputs live inside its `--out` directory, shared by the worker that
writes them and the launcher that reads them back."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SUMMARY_FILE = "train_summary.json"
MODEL_DIR = "model"
STAGES_DIR = "stages"  # OUT/stages/<name>/ holds a stage's checkpoints, model/ and summary.json
STAGE_SUMMARY = "summary.json"
INPUTS_FILE = "inputs.json"  # the shards and tokenizer a run trains on: evaluation finds them here
CONFIG_FILE = "config.yaml"  # the exact config the run was started with (model section for checkpoints)


def atomic_write_json(path: Path, data: dict[str, Any]) -> None:
    """Write to a temporary sibling and rename, so a reader never sees half a summary."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
