"""The data stages as a DVC pipeline: `dvc.yaml` is rendered from `STAGES` below, so the installed
package always carries its pipeline (no package-data file to lose in a wheel) and the repo's root
`dvc.yaml` is the same rendering (a test keeps them equal; regenerate with
`python -m pharia.data.dvc_project > dvc.yaml`).

Each stage declares as DVC params exactly the DataConfig fields its code reads (the `*_FIELDS`
constants next to that code), so changing `vocab_size` reruns tokenize and pack but not ingest.

`materialize` creates a standalone DVC project (no git) anywhere, e.g. the workspace's data dir;
`repro` runs `dvc repro` + `dvc push` there as subprocesses and re-raises the pharia error a failed
stage reported; `lock_hashes` reads the md5 DVC recorded for every output.
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

from pharia.config import ConfigError, DataConfig
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
        "params": ["data"],  # the manifest records the hash of the whole data config
        "outs": ["data/shards"],
    },
}
SHARDS_DIR = "data/shards"

ERROR_TYPES: dict[str, type[PhariaError]] = {
    cls.__name__: cls for cls in (PhariaError, DataError, DataValidationError, ConfigError, TrainingError)
}
RAN = re.compile(r"^Running stage '([^']+)'", re.MULTILINE)
# "didn't change": outputs up to date; "is cached": outputs restored from DVC's run cache. Neither ran.
SKIPPED = re.compile(r"^Stage '([^']+)' (?:didn't change, skipping|is cached - skipping run)", re.MULTILINE)


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
    """The error a failed stage reported (same class and message), else DVC's own error line."""
    if error_file.is_file() and error_file.stat().st_size:
        try:
            reported = json.loads(error_file.read_text(encoding="utf-8"))
            return ERROR_TYPES.get(reported["type"], PhariaError)(reported["message"])
        except (ValueError, KeyError):
            pass
    child = [line for line in output.splitlines() if line.startswith("error: ")]
    if child:
        return DataError(child[-1].removeprefix("error: "))
    return DataError(f"`dvc repro` failed in {project_dir}: {_last_error_line(output)}")


def repro(project_dir: Path) -> dict[str, Any]:
    """`dvc repro` then `dvc push` in `project_dir`; returns the stages that ran and were skipped,
    the output md5s and the wall time. A failing stage's pharia error is re-raised as is."""
    project_dir = Path(project_dir).absolute()
    if not (project_dir / "dvc.yaml").is_file():
        raise DataError(f"{project_dir} has no dvc.yaml: call materialize() first")
    started = time.perf_counter()
    log = project_dir / ".dvc" / "tmp" / "pharia-repro.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pharia-dvc-") as tmp:
        error_file = Path(tmp) / "error.json"
        proc = _dvc(project_dir, "repro", env=_env(error_file))
        output = proc.stdout + proc.stderr
        log.write_text(output, encoding="utf-8")
        if proc.returncode != 0:
            raise _stage_error(error_file, output, project_dir)
    _check(_dvc(project_dir, "push", "-q"), "push", project_dir)
    return {
        "project_dir": str(project_dir),
        "stages_run": RAN.findall(output),
        "stages_skipped": SKIPPED.findall(output),
        "outs_md5": lock_hashes(project_dir),
        "shards_dir": str(project_dir / SHARDS_DIR),
        "log": str(log),
        "wall_s": round(time.perf_counter() - started, 2),
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
