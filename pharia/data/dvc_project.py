"""The data stages as a DVC pipeline: `dvc.yaml` is rendered from `STAGES` below, so the installed
package always carries its pipeline (no package-data file to lose in a wheel) and the repo's root
`dvc.yaml` is the same rendering (a test keeps them equal; regenerate with
`python -m pharia.data.dvc_project > dvc.yaml`).

Each stage declares as DVC params exactly the DataConfig fields its code reads (the `*_FIELDS`
constants next to that code), so changing `vocab_size` reruns tokenize and pack but not ingest, and
changing `canaries` (planted by pack) reruns pack and publish only. The last stage, `publish`, writes
the `pharia data prepare` contract (manifest.json with the DVC hashes of the four stage outputs,
clean/, quarantine/) into data/, so data/ reads like a prepare directory.

`materialize` creates a standalone DVC project (no git) anywhere, e.g. the workspace's data dir;
`repro` runs `dvc repro` + `dvc push` there as subprocesses and re-raises the pharia error a failed
stage reported; `repro_stage` runs one stage (`dvc repro --single-item`) for an orchestrator that
wants one task per stage; `push` / `pull` move the outputs to and from the local remote;
`lock_hashes` reads the md5 DVC recorded for every output.

Failures that a retry may cure (an OSError inside a stage, the remote unwritable, DVC's repository
lock held) are raised as `DataIOError`, an OSError; bad data or config keep their own pharia class.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from pharia.config import ConfigError, DataConfig, sha256_json
from pharia.data.cli import ERROR_FILE_ENV
from pharia.data.ingest import INGEST_FIELDS
from pharia.data.manifest import atomic_write_text
from pharia.data.tokenizer import TOKENIZER_FIELDS
from pharia.data.validate import VALIDATE_FIELDS
from pharia.errors import DataError, DataValidationError, PhariaError, TrainingError

PARAMS_FILE = "params.yaml"
REMOTE_NAME = "pharia"
HEADER = (
    "# Data stages of pharia (rendered by pharia.data.dvc_project; edit STAGES there, then run\n"
    "#   python -m pharia.data.dvc_project > dvc.yaml). Outputs go to data/ (git-ignored).\n"
)


def _params(fields: tuple[str, ...]) -> list[str]:
    return [f"data.{name}" for name in fields]


STAGES: dict[str, dict[str, Any]] = {
    "ingest": {
        "cmd": f"pharia data ingest --config {PARAMS_FILE} --out data/ingest",
        "params": _params(INGEST_FIELDS),
        "outs": ["data/ingest"],
    },
    "validate": {
        "cmd": f"pharia data validate --config {PARAMS_FILE} --ingest data/ingest --out data/validation",
        "deps": ["data/ingest"],
        "params": _params(VALIDATE_FIELDS),
        "outs": ["data/validation"],
    },
    "tokenize": {
        "cmd": f"pharia data tokenize --config {PARAMS_FILE} --ingest data/ingest --out data/tokenizer",
        "deps": ["data/ingest"],
        "params": _params(TOKENIZER_FIELDS),
        "outs": ["data/tokenizer"],
    },
    "pack": {
        "cmd": (
            f"pharia data pack --config {PARAMS_FILE} --ingest data/ingest --tokenizer data/tokenizer "
            "--validation data/validation --out data/shards"
        ),
        "deps": ["data/ingest", "data/tokenizer", "data/validation"],
        # the manifest records the hash of the whole data config; data.canaries is read here only
        # (planted after ingest, validation and tokenizer training), so changing it reruns pack + publish
        "params": ["data"],
        "outs": ["data/shards"],
    },
    # Reads no config: everything it records comes from the four outputs, hence no params.
    "publish": {
        "cmd": (
            "pharia data publish --ingest data/ingest --validation data/validation --tokenizer data/tokenizer "
            "--shards data/shards --out data"
        ),
        "deps": ["data/ingest", "data/validation", "data/tokenizer", "data/shards"],
        "outs": ["data/manifest.json", "data/clean", "data/quarantine"],
    },
}
DATA_DIR = "data"
SHARDS_DIR = "data/shards"
CONTRACT_MANIFEST = "data/manifest.json"


class DataIOError(DataError, OSError):
    """An I/O failure around the data stages (filesystem, DVC remote, DVC's repository lock): the
    data and config may be fine, so an orchestrator may retry. It is an OSError for that reason."""


ERROR_TYPES: dict[str, type[PhariaError]] = {
    cls.__name__: cls for cls in (PhariaError, DataError, DataValidationError, ConfigError, TrainingError, DataIOError)
}
ERROR_TYPES["OSError"] = DataIOError  # what `pharia data` records for any OSError in a stage
# DVC's own transient failures (no stage ran or the stage could not write): another DVC process
# holds the repository lock, or the filesystem refused (errno messages, a full disk).
DVC_IO_ERROR = re.compile(r"Unable to acquire lock|\[Errno \d+\]|No space left|Permission denied|Read-only file system")
RAN = re.compile(r"^Running stage '([^']+)'", re.MULTILINE)
# "didn't change": outputs up to date; "is cached": outputs restored from DVC's run cache. Neither ran.
SKIPPED = re.compile(r"^Stage '([^']+)' (?:didn't change, skipping|is cached - skipping run)", re.MULTILINE)


def project_dir_for(data_cfg: DataConfig, data_root: Path) -> Path:
    """One DVC project per distinct data config under `data_root`: reruns of the same data skip
    every stage, and a changed config never overwrites another config's outputs. The pipeline
    (`pharia.pipeline_steps.data_project_dir`) calls this too, so the data flow and the pipeline
    share projects."""
    return Path(data_root) / sha256_json(data_cfg.model_dump(mode="json"))[:12]


def render_dvc_yaml() -> str:
    return HEADER + yaml.safe_dump({"stages": STAGES}, sort_keys=False, width=120)


def render_params(data_cfg: DataConfig) -> str:
    """params.yaml holding only the `data:` section; relative source paths made absolute, because
    the stages run with the project directory as working directory."""
    data = data_cfg.model_dump(mode="json")
    for source in data["sources"]:
        if source.get("path") and not os.path.isabs(os.path.expanduser(source["path"])):
            source["path"] = str(Path(source["path"]).absolute())
    return yaml.safe_dump({"data": data}, sort_keys=False, allow_unicode=True, width=120)


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)


def _env(error_file: Path | None = None) -> dict[str, str]:
    """The stages call `pharia`: put this interpreter's bin dir first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    if error_file is not None:
        env[ERROR_FILE_ENV] = str(error_file)
    return env


def _dvc(project_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=project_dir,
        env=env or _env(),
        capture_output=True,
        text=True,
        check=False,
    )


def _last_error_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("ERROR", "error:"))]
    return (errors or lines or ["(no output)"])[-1]


def _check(proc: subprocess.CompletedProcess[str], what: str, project_dir: Path) -> None:
    if proc.returncode != 0:
        raise DataError(f"`dvc {what}` failed in {project_dir}: {_last_error_line(proc.stdout + proc.stderr)}")


def materialize(project_dir: Path, data_cfg: DataConfig, remote_dir: Path) -> Path:
    """Create or update (idempotently) a standalone DVC project with the data stages, `params.yaml`
    from `data_cfg` and a default local remote at `remote_dir`. Returns the project directory."""
    project_dir, remote_dir = Path(project_dir).absolute(), Path(remote_dir).absolute()
    project_dir.mkdir(parents=True, exist_ok=True)
    if not (project_dir / ".dvc").is_dir():
        _check(_dvc(project_dir, "init", "--no-scm", "-q"), "init --no-scm", project_dir)
    _write_if_changed(project_dir / "dvc.yaml", render_dvc_yaml())
    _write_if_changed(project_dir / PARAMS_FILE, render_params(data_cfg))
    config = (project_dir / ".dvc" / "config").read_text(encoding="utf-8")
    if f"url = {remote_dir}" not in config or f"remote = {REMOTE_NAME}" not in config:
        remote_dir.mkdir(parents=True, exist_ok=True)
        proc = _dvc(project_dir, "remote", "add", "--default", "--force", REMOTE_NAME, str(remote_dir))
        _check(proc, "remote add", project_dir)
    return project_dir


def _stage_error(error_file: Path, output: str, project_dir: Path) -> PhariaError:
    """The error a failed stage reported (same class and message), else DVC's own error line
    (a DataIOError when it is an I/O failure a retry may cure)."""
    if error_file.is_file() and error_file.stat().st_size:
        try:
            reported = json.loads(error_file.read_text(encoding="utf-8"))
            return ERROR_TYPES.get(reported["type"], PhariaError)(reported["message"])
        except (ValueError, KeyError):
            pass
    child = [line for line in output.splitlines() if line.startswith("error: ")]
    if child:
        return DataError(child[-1].removeprefix("error: "))
    line = _last_error_line(output)
    error = DataIOError if DVC_IO_ERROR.search(line) else DataError
    return error(f"`dvc repro` failed in {project_dir}: {line}")


def _require_project(project_dir: Path) -> Path:
    project_dir = Path(project_dir).absolute()
    if not (project_dir / "dvc.yaml").is_file():
        raise DataError(f"{project_dir} has no dvc.yaml: call materialize() first")
    return project_dir


def _run_repro(project_dir: Path, args: list[str], log_name: str) -> str:
    """`dvc repro ARGS` with the stage error channel; returns DVC's output, raises the stage's error."""
    log = project_dir / ".dvc" / "tmp" / log_name
    log.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pharia-dvc-") as tmp:
        error_file = Path(tmp) / "error.json"
        proc = _dvc(project_dir, "repro", *args, env=_env(error_file))
        output = proc.stdout + proc.stderr
        atomic_write_text(log, output)
        if proc.returncode != 0:
            raise _stage_error(error_file, output, project_dir)
    return output


def repro(project_dir: Path) -> dict[str, Any]:
    """`dvc repro` then `dvc push` in `project_dir`; returns the stages that ran and were skipped,
    the output md5s and the wall time. A failing stage's pharia error is re-raised as is."""
    project_dir = _require_project(project_dir)
    started = time.perf_counter()
    output = _run_repro(project_dir, [], "pharia-repro.log")
    push(project_dir)
    return {
        "project_dir": str(project_dir),
        "stages_run": RAN.findall(output),
        "stages_skipped": SKIPPED.findall(output),
        "outs_md5": lock_hashes(project_dir),
        "shards_dir": str(project_dir / SHARDS_DIR),
        "log": str(project_dir / ".dvc" / "tmp" / "pharia-repro.log"),
        "wall_s": round(time.perf_counter() - started, 2),
    }


def repro_stage(project_dir: Path, stage: str) -> dict[str, Any]:
    """`dvc repro --single-item STAGE`: run one stage if its deps, params or outputs changed, skip it
    otherwise. Upstream stages are not touched (the caller runs them first, in STAGES order).

    Returns {stage, status: "ran" | "skipped", outs_md5 (this stage's outputs), log, wall_s}; a
    failing stage's pharia error is re-raised with its class (DataIOError for I/O failures)."""
    if stage not in STAGES:
        raise DataError(f"unknown data stage {stage!r}: expected one of {', '.join(STAGES)}")
    project_dir = _require_project(project_dir)
    started = time.perf_counter()
    log_name = f"pharia-{stage}.log"
    output = _run_repro(project_dir, ["--single-item", stage], log_name)
    if stage in RAN.findall(output):
        status = "ran"
    elif stage in SKIPPED.findall(output):
        status = "skipped"
    else:  # DVC changed its wording: say so rather than guess
        raise DataError(f"`dvc repro --single-item {stage}` neither ran nor skipped it: see {project_dir}")
    outs = set(STAGES[stage]["outs"])
    return {
        "stage": stage,
        "status": status,
        "outs_md5": {path: md5 for path, md5 in lock_hashes(project_dir).items() if path in outs},
        "log": str(project_dir / ".dvc" / "tmp" / log_name),
        "wall_s": round(time.perf_counter() - started, 2),
    }


PUSHED = re.compile(r"\b(\d+) files? pushed")
FETCHED = re.compile(r"\b(\d+) files? fetched")
ADDED = re.compile(r"\b(\d+) files? added")


def _transfer(project_dir: Path, command: str) -> tuple[str, float]:
    """`dvc push` / `dvc pull`: both talk to the remote, so every failure is a DataIOError."""
    project_dir = _require_project(project_dir)
    started = time.perf_counter()
    proc = _dvc(project_dir, command)
    output = proc.stdout + proc.stderr
    atomic_write_text(project_dir / ".dvc" / "tmp" / f"pharia-{command}.log", output)
    if proc.returncode != 0:
        raise DataIOError(f"`dvc {command}` failed in {project_dir}: {_last_error_line(output)}")
    return output, round(time.perf_counter() - started, 2)


def push(project_dir: Path) -> dict[str, Any]:
    """Send every output in dvc.lock to the default remote (objects it already has are skipped)."""
    output, wall_s = _transfer(project_dir, "push")
    return {"pushed": sum(int(n) for n in PUSHED.findall(output)), "wall_s": wall_s}


def pull(project_dir: Path) -> dict[str, Any]:
    """Restore the outputs dvc.lock names from the cache, fetching from the remote what the cache
    lacks: a copy of dvc.yaml, dvc.lock, params.yaml and .dvc/config is enough to get the data back."""
    output, wall_s = _transfer(project_dir, "pull")
    return {
        "project_dir": str(Path(project_dir).absolute()),
        "fetched": sum(int(n) for n in FETCHED.findall(output)),
        "added": sum(int(n) for n in ADDED.findall(output)),
        "outs_md5": lock_hashes(project_dir),
        "wall_s": wall_s,
    }


def describe(project_dir: Path) -> dict[str, Any]:
    """What downstream stages need from a reproduced project: paths, the shard manifest's sha256
    and special tokens, and the md5 DVC recorded for every output (`dvc_md5`: the shards)."""
    from pharia.data.manifest import manifest_sha256

    project_dir = Path(project_dir).absolute()
    shards_dir = project_dir / SHARDS_DIR
    shards_manifest = shards_dir / "manifest.json"
    if not shards_manifest.is_file():
        raise DataError(f"{shards_manifest} not found: the pack stage has not run in {project_dir}")
    manifest = json.loads(shards_manifest.read_text(encoding="utf-8"))
    hashes = lock_hashes(project_dir)
    return {
        "project_dir": str(project_dir),
        "shards_dir": str(shards_dir),
        "tokenizer_file": str(project_dir / DATA_DIR / "tokenizer" / "tokenizer.json"),
        "manifest_sha256": manifest_sha256(shards_manifest),
        "dvc_md5": hashes.get(SHARDS_DIR, ""),
        "dvc_hashes": hashes,
        "eos_token_id": int(manifest["eos_token_id"]),
        "pad_token_id": int(manifest["pad_token_id"]),
        "manifest": str(project_dir / CONTRACT_MANIFEST),
    }


def lock_hashes(project_dir: Path) -> dict[str, str]:
    """{out path: md5} as recorded in dvc.lock (directory outs end in `.dir`)."""
    lock = Path(project_dir) / "dvc.lock"
    if not lock.is_file():
        raise DataError(f"{lock} not found: run `dvc repro` first")
    data = yaml.safe_load(lock.read_text(encoding="utf-8")) or {}
    return {
        out["path"]: out["md5"]
        for stage in (data.get("stages") or {}).values()
        for out in stage.get("outs", [])
        if "md5" in out
    }


if __name__ == "__main__":
    sys.stdout.write(render_dvc_yaml())
