"""`pharia train --config FILE [--stage NAME] [--out DIR] [--ranks N]`: the DeepSpeed stages.

One command, two roles:

- run from a shell (RANK unset) it is the supervisor: it starts the workers - one process with the
  single-process distributed environment, or N under torchrun - and waits. When a worker ran out
  of GPU memory it restarts them with half the micro-batch (gradient accumulation doubles, the
  global batch stays), resuming from the newest checkpoint;
- started with RANK in the environment (torchrun, a Kubernetes pod, the supervisor) it is one
  worker. Nothing prompts; everything comes from options and the environment.

Re-running the same command with the same --out resumes: finished stages are skipped and an
interrupted stage continues from its newest complete checkpoint.

torch and DeepSpeed are imported only when training runs, so registering this sub-app costs
`pharia` nothing.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from pharia import environment
from pharia.errors import PhariaError

if TYPE_CHECKING:
    from pharia.config import DataConfig, PipelineConfig

app = typer.Typer(
    help="Train the model with DeepSpeed: pre-training, intermediate and task fine-tuning stages (CPU or CUDA).",
    add_completion=False,
    pretty_exceptions_enable=False,
)

WORKER_MODULE = "pharia.train"
OOM_EXIT_CODE = 75  # EX_TEMPFAIL: the supervisor may retry with a smaller micro-batch
OOM_MARKER = ".oom.json"
BATCH_PLAN_FILE = "batch_plan.json"
MAX_OOM_RETRIES = 4


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it; a tiny race is accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def single_process_env() -> dict[str, str]:
    """What torchrun would set for one local process; without it DeepSpeed looks for MPI (mpi4py)."""
    return {
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }


def torchrun_command(ranks: int, worker_args: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(ranks),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "-m",
        WORKER_MODULE,
        *worker_args,
    ]


def default_shards(config_data: DataConfig) -> Path:
    """The shards the data stage of this config wrote into the workspace (`make demo`, `pharia-data`)."""
    from pharia.data.dvc_project import SHARDS_DIR, project_dir_for
    from pharia.workspace import Workspace

    return project_dir_for(config_data, Workspace.from_env().data_dir) / SHARDS_DIR


def default_out(name: str) -> Path:
    from pharia.workspace import Workspace

    return Workspace.from_env().home / "train" / name


def smaller_batches(out: Path) -> tuple[int, int] | None:
    """After a GPU out-of-memory: (micro-batch, accumulation) with half the micro-batch of the failed
    attempt and the same global batch (`batch_size.smaller_plan`), or None when it cannot shrink."""
    from dataclasses import fields

    from pharia.train.batch_size import BatchPlan, smaller_plan

    marker = out / OOM_MARKER
    if not marker.is_file():
        return None
    marker.unlink()
    try:
        saved = json.loads((out / BATCH_PLAN_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    try:
        plan = BatchPlan(**{f.name: saved[f.name] for f in fields(BatchPlan) if f.name in saved})
    except TypeError:  # a plan file from another pharia version: do not guess
        return None
    smaller = smaller_plan(plan)
    return (smaller.micro_batch_size, smaller.grad_accum_steps) if smaller else None


def _supervise(worker_args: list[str], ranks: int, out: Path) -> int:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // ranks)))
    shrunk: tuple[int, int] | None = None
    for _attempt in range(MAX_OOM_RETRIES + 1):
        args = list(worker_args)
        if shrunk:
            args += ["--micro-batch-size", str(shrunk[0]), "--grad-accum-steps", str(shrunk[1])]
        if ranks > 1:
            code = subprocess.call(torchrun_command(ranks, args), env=env)
        else:
            code = subprocess.call([sys.executable, "-m", WORKER_MODULE, *args], env={**env, **single_process_env()})
        if code == 0:
            return 0
        shrunk = smaller_batches(out)
        if shrunk is None:
            return code  # the failing worker has already printed its error
        typer.secho(
            f"out of GPU memory: retrying with micro-batch {shrunk[0]} x {shrunk[1]} accumulation steps",
            err=True,
            fg=typer.colors.YELLOW,
        )
    return code


@app.callback(invoke_without_command=True)
def train_command(
    config: str = typer.Option(..., "--config", "-c", help="pipeline config: a YAML file or a preset name (tiny)"),
    stage: str | None = typer.Option(
        None, "--stage", help="run only this stage (it starts from the previous stage's final weights in --out)"
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="output directory: stages/<name>/{checkpoints,model}, model/ and train_summary.json; "
        "an existing one is resumed (default: $PHARIA_HOME/train/<config name>)",
    ),
    shards: Path | None = typer.Option(
        None,
        "--shards",
        help="directory of packed token shards (manifest.json inside); default: the workspace's data project "
        "of this config, as `make demo` / the pharia-data flow write it",
    ),
    ranks: int | None = typer.Option(
        None, "--ranks", min=1, help="local data-parallel processes (default: train.ranks of the config)"
    ),
    micro_batch_size: int | None = typer.Option(
        None,
        "--micro-batch-size",
        min=1,
        help="override train.micro_batch_size (with global_batch_tokens set, the global batch stays)",
    ),
    grad_accum_steps: int | None = typer.Option(
        None, "--grad-accum-steps", min=1, help="override train.grad_accum_steps (used without global_batch_tokens)"
    ),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="MLflow tracking URI for metrics"),
    run_id: str | None = typer.Option(
        None, "--run-id", help="existing MLflow run to nest the stage runs under (default: a new parent run)"
    ),
    no_stage_eval: bool = typer.Option(
        False,
        "--no-stage-eval",
        help="skip the full evaluation suite after each stage (train.eval_after_stage), e.g. when the "
        "caller evaluates each stage itself as the pipeline flow does",
    ),
) -> None:
    """Train every configured stage in order and write OUT/model/ and OUT/train_summary.json."""
    from pharia.config import load_config

    cfg = load_config(config)
    n_ranks = ranks or cfg.train.ranks
    shards = shards or default_shards(cfg.data)
    out = out or default_out(cfg.name)
    # The config decides the accelerator (DeepSpeed reads DS_ACCELERATOR once, at import), never
    # a stale shell variable.
    os.environ["DS_ACCELERATOR"] = cfg.train.device
    if "RANK" not in os.environ:
        from pharia.train.data import ShardSet

        ShardSet.open(shards, vocab_size=cfg.model.vocab_size).check_tokenizer()  # seconds, not a worker start
        args = ["--config", config, "--shards", str(shards), "--out", str(out), "--ranks", str(n_ranks)]
        for flag, value in (
            ("--stage", stage),
            ("--micro-batch-size", micro_batch_size),
            ("--grad-accum-steps", grad_accum_steps),
        ):
            if value is not None:
                args += [flag, str(value)]
        for flag, value in (("--tracking-uri", tracking_uri), ("--run-id", run_id)):
            if value:
                args += [flag, value]
        if no_stage_eval:
            args.append("--no-stage-eval")
        code = _supervise(args, n_ranks, out)
        if code:
            raise typer.Exit(code)
        if stage is not None and (out / "stages" / stage / "summary.json").is_file():
            done = json.loads((out / "stages" / stage / "summary.json").read_text(encoding="utf-8"))
            typer.echo(
                f"trained stage {stage}: {done['steps']} steps on {n_ranks} rank(s), loss {done['first_loss']:.3f} -> "
                f"{done['final_loss']:.3f}; weights in {done['model_dir']}"
            )
            return
        summary = json.loads((out / "train_summary.json").read_text(encoding="utf-8"))
        typer.echo(
            f"trained {summary['steps']} steps over {', '.join(summary['stage_order'])} on {n_ranks} rank(s): "
            f"loss {summary['first_loss']:.3f} -> {summary['final_loss']:.3f}; model in {summary['model_dir']}"
        )
        return

    if micro_batch_size is not None:
        cfg.train.micro_batch_size = micro_batch_size
    if grad_accum_steps is not None:
        cfg.train.grad_accum_steps = grad_accum_steps
    if no_stage_eval:
        cfg.train.eval_after_stage = False  # not part of the resume hash: checkpoints stay valid
    _work(cfg, shards, out, tracking_uri, run_id, stage)


def _work(
    cfg: PipelineConfig, shards: Path, out: Path, tracking_uri: str | None, run_id: str | None, stage: str | None
) -> None:
    """One worker; an out-of-GPU-memory leaves a marker for the supervisor and exits 75."""
    import torch

    from pharia.train.trainer import train

    try:
        train(cfg, shards, out, tracking_uri, run_id, only_stage=stage)
    except torch.cuda.OutOfMemoryError as exc:
        out.mkdir(parents=True, exist_ok=True)
        (out / OOM_MARKER).write_text(json.dumps({"rank": os.environ.get("RANK"), "error": str(exc)[:500]}))
        typer.secho(f"error: out of GPU memory on rank {os.environ.get('RANK')}: {exc}", err=True)
        sys.exit(OOM_EXIT_CODE)


def main() -> None:
    """Entry point of `python -m pharia.train` (what torchrun and the supervisor start)."""
    environment.configure()  # DS_ACCELERATOR is set from the config by the command
    try:
        app(prog_name="pharia train")
    except PhariaError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(2)
