"""Run a training stage in a child process and hand back its summary.

torch.distributed and DeepSpeed keep process-global state (the process group, the comm backend,
the accelerator choice made at import), so the caller - a Prefect flow, a test, a notebook - never
trains in its own process: it starts `python -m pharia.train ...`, streams the child's output
through, and on failure raises TrainingError with the child's own explanation.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from pharia.config import load_config
from pharia.errors import TrainingError
from pharia.train.outputs import MODEL_DIR, STAGE_SUMMARY, STAGES_DIR, SUMMARY_FILE
from pharia.workspace import Workspace

WORKER_MODULE = "pharia.train"
DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
STDERR_TAIL = 400
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Interrupt|Exit): ")
_WRAPPER_ERRORS = ("ChildFailedError", "CalledProcessError")


def failure_line(stderr_lines: Iterable[str]) -> str:
    """The line of a failed child's stderr that explains the failure.

    Preference: pharia's own one-line message (`error: ...`, printed by the CLI for every
    PhariaError; the first one, since with several ranks the root cause comes first), then the first
    Python exception line that is not a launcher's wrapper (torchrun's ChildFailedError), then the
    last non-empty line.
    """
    lines = [line.strip() for line in stderr_lines if line.strip()]
    for line in lines:
        if line.startswith("error: "):
            return line.removeprefix("error: ")
    for line in lines:
        if _EXCEPTION_LINE.match(line) and not any(w in line for w in _WRAPPER_ERRORS):
            return line
    return lines[-1] if lines else "no output on stderr"


def child_environment(
    device: str, ranks: int, env: dict[str, str] | None, base: dict[str, str] | None = None
) -> dict[str, str]:
    """The child's environment: the caller's, then `env`, then pharia's defaults where unset.

    The DeepSpeed op cache defaults to the workspace (one compile per installation, not per run);
    OMP threads split the cores between ranks; DeepSpeed's accelerator follows the config's device;
    a distributed environment of the caller never leaks into the child, which sets up its own.
    """
    child = dict(os.environ if base is None else base)
    child.update(env or {})
    home = child.get("PHARIA_HOME")
    workspace = Workspace(Path(home).expanduser().resolve()) if home else Workspace.from_env()
    child.setdefault("PHARIA_HOME", str(workspace.home))
    child.setdefault("TORCH_EXTENSIONS_DIR", str(workspace.torch_extensions))
    child.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // ranks)))
    child["DS_ACCELERATOR"] = device  # "cpu" or "cuda": the config decides, not a stale shell variable
    child["PYTHONUNBUFFERED"] = "1"
    for var in DIST_VARS:
        child.pop(var, None)
    return child


def _pump(stream: IO[str], sink: Callable[[str], None], tail: deque[str] | None) -> None:
    for raw in stream:
        line = raw.rstrip("\n")
        sink(line)
        if tail is not None:
            tail.append(line)
    stream.close()


def _writer(target: IO[str]) -> Callable[[str], None]:
    def write(line: str) -> None:
        target.write(line + "\n")
        target.flush()

    return write


def run_training(
    config_path: Path,
    shards_dir: Path,
    out_dir: Path,
    *,
    tracking_uri: str | None,
    run_id: str | None,
    ranks: int = 1,
    env: dict[str, str] | None = None,
    echo: Callable[[str], None] | None = None,
    stage: str | None = None,
    stage_eval: bool = True,
) -> dict[str, Any]:
    """Train in a subprocess; return `train_summary.json` plus "model_dir".

    With `stage`, only that stage runs (from the previous stage's weights in `out_dir`); unless it
    is the last stage, the stage's own summary is returned, with "model_dir" its final weights.
    `stage_eval=False` skips the trainer's after-stage evaluation (the caller evaluates).

    `config_path` is a YAML file or preset name. The child's stdout and stderr are forwarded line
    by line to this process's stdout/stderr, or to `echo` (lines without their newline) when given,
    e.g. a flow's logger.
    """
    cfg = load_config(config_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary_path = out_dir / SUMMARY_FILE
    summary_path.unlink(missing_ok=True)  # never report a previous run's summary as this one's
    command = [
        sys.executable,
        "-m",
        WORKER_MODULE,
        "--config",
        str(config_path),
        "--shards",
        str(shards_dir),
        "--out",
        str(out_dir),
        "--ranks",
        str(ranks),
    ]
    if tracking_uri:
        command += ["--tracking-uri", tracking_uri]
    if run_id:
        command += ["--run-id", run_id]
    if stage is not None:
        command += ["--stage", stage]
    if not stage_eval:
        command.append("--no-stage-eval")
    last_stage = cfg.train.stage_list()[-1].name
    if stage is not None and stage != last_stage:
        summary_path = out_dir / STAGES_DIR / stage / STAGE_SUMMARY

    child = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_environment(cfg.train.device, ranks, env),
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
    )
    tail: deque[str] = deque(maxlen=STDERR_TAIL)
    assert child.stdout is not None and child.stderr is not None
    pumps = [
        threading.Thread(target=_pump, args=(child.stdout, echo or _writer(sys.stdout), None), daemon=True),
        threading.Thread(target=_pump, args=(child.stderr, echo or _writer(sys.stderr), tail), daemon=True),
    ]
    for pump in pumps:
        pump.start()
    try:
        code = child.wait()
    except BaseException:
        child.kill()
        child.wait()
        raise
    finally:
        for pump in pumps:
            pump.join(timeout=10)
    if code != 0:
        raise TrainingError(f"training failed (exit code {code}): {failure_line(tail)}")
    if not summary_path.is_file():
        raise TrainingError(f"training exited cleanly but wrote no {summary_path}")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    if stage is None or stage == last_stage:
        summary["model_dir"] = str(out_dir / MODEL_DIR)
    return summary
