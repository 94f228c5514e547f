"""Crash-safe training checkpoints of one stage: written aside, complete only when whole.

Layout of a stage's checkpoint directory:

    checkpoints/
      step-00000040/          a complete checkpoint (only whole ones ever carry this name)
        ds/                   DeepSpeed's own files (per-rank ZeRO partitions, module, scheduler)
        portable.safetensors  world-size-independent fp32 weights + Adam moments (see portable.py)
        state.json            pharia's part: step, loader position, counters, loss history, world size
      latest                  the name of the newest complete checkpoint (written atomically)
      .tmp-step-00000050-...  a checkpoint being written, or left behind by a killed run

Every rank writes its DeepSpeed partition into the hidden temporary directory; after a barrier,
rank 0 adds state.json and renames the directory into place, which is atomic on one filesystem.
A kill at any moment therefore leaves either the previous complete checkpoint or the new one,
never a half-written one that looks finished. `latest` is a convenience pointer; the truth is the
set of complete directories, so a stale or missing pointer cannot lose a checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pharia.errors import TrainingError
from pharia.train.outputs import atomic_write_json

DS_DIR = "ds"
DS_TAG = "state"
PORTABLE_FILE = "portable.safetensors"
STATE_FILE = "state.json"
LATEST = "latest"
_NAME = re.compile(r"^step-(\d{8})$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


@dataclass(frozen=True)
class Checkpoint:
    """One complete checkpoint directory and its pharia state."""

    path: Path
    step: int
    state: dict[str, Any]

    @property
    def ds_dir(self) -> Path:
        return self.path / DS_DIR

    @property
    def portable_file(self) -> Path:
        return self.path / PORTABLE_FILE

    @property
    def world_size(self) -> int:
        return int(self.state["world_size"])


class CheckpointStore:
    """The checkpoints of one stage: `begin` a temporary directory, `commit` it, find the newest."""

    def __init__(self, root: Path, keep: int) -> None:
        self.root = Path(root)
        self.keep = keep

    def temp_dir(self, step: int, run_token: str) -> Path:
        """Where every rank writes checkpoint `step`; `run_token` is the same on all ranks of a run
        (rank 0's pid, broadcast) so they agree on the directory."""
        return self.root / f".tmp-{checkpoint_name(step)}-{run_token}"

    def commit(self, temp: Path, step: int, state: dict[str, Any]) -> Checkpoint:
        """Rank 0, after every rank has written into `temp`: add state.json, rename into place,
        point `latest` at it, and prune to the newest `keep`."""
        state = {**state, "step": step, "complete": True}
        atomic_write_json(temp / STATE_FILE, state)
        final = self.root / checkpoint_name(step)
        if final.exists():  # the same step saved by an earlier attempt that died before pruning
            shutil.rmtree(final)
        os.replace(temp, final)
        self._write_latest(final.name)
        self.prune()
        return Checkpoint(final, step, state)

    def _write_latest(self, name: str) -> None:
        tmp = self.root / f".{LATEST}.tmp-{os.getpid()}"
        tmp.write_text(name + "\n", encoding="utf-8")
        os.replace(tmp, self.root / LATEST)

    def complete(self) -> list[Checkpoint]:
        """Every complete checkpoint, oldest first. A directory without a readable state.json is
        not complete (it cannot come from `commit`), and is ignored rather than trusted."""
        if not self.root.is_dir():
            return []
        found: list[Checkpoint] = []
        for child in self.root.iterdir():
            match = _NAME.match(child.name)
            if not match or not child.is_dir():
                continue
            try:
                state = json.loads((child / STATE_FILE).read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            if state.get("complete") is True and {"world_size", "plan", "progress"} <= state.keys():
                found.append(Checkpoint(child, int(match.group(1)), state))
        return sorted(found, key=lambda c: c.step)

    def newest(self) -> Checkpoint | None:
        """The newest complete checkpoint (the one `latest` names when the pointer is current)."""
        complete = self.complete()
        return complete[-1] if complete else None

    def prune(self) -> None:
        """Keep the newest `keep` complete checkpoints, delete the older ones (temporaries of killed
        writers are `remove_temporaries`' job, at start, when no rank is writing)."""
        complete = self.complete()
        for old in complete[: -self.keep]:
            shutil.rmtree(old.path, ignore_errors=True)

    def remove_temporaries(self) -> int:
        """Delete `.tmp-*` directories left by killed runs; call once at start, before any rank writes."""
        if not self.root.is_dir():
            return 0
        removed = 0
        for child in self.root.iterdir():
            if child.name.startswith(".tmp-") and child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
                removed += 1
        return removed


def require_compatible(checkpoint: Checkpoint, config_hash: str, stage: str) -> None:
    """Refuse to resume from a checkpoint of another configuration: its batches and schedule would
    silently differ from what this config asks for."""
    saved = checkpoint.state.get("config_hash")
    if saved != config_hash:
        raise TrainingError(
            f"{checkpoint.path}: checkpoint of stage '{stage}' was written with a different config "
            f"(config_hash {str(saved)[:12]}…, now {config_hash[:12]}…); use a new --out directory or the old config"
        )
