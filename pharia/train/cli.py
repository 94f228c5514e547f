"""`pharia train --config FILE --shards DIR --out DIR`: one DeepSpeed pre-training stage.

The same command is every role of a launch: run from a shell it prepares the single-process
distributed environment itself (ranks 1) or re-launches itself under torchrun (ranks > 1); started
by torchrun (RANK is set) it is one worker. torch and DeepSpeed are imported only when training
runs, so registering this sub-app costs `pharia` nothing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import typer

from pharia import environment
from pharia.errors import PhariaError

app = typer.Typer(
    help="Train the model on packed token shards with DeepSpeed (pre-training stage; CPU or CUDA).",
    add_completion=False,
    pretty_exceptions_enable=False,
)

WORKER_MODULE = "pharia.train"


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


@app.callback(invoke_without_command=True)
def train_command(
    config: str = typer.Option(..., "--config", "-c", help="pipeline config: a YAML file or a preset name (tiny)"),
    shards: Path = typer.Option(..., "--shards", help="directory of packed token shards (manifest.json inside)"),
    out: Path = typer.Option(..., "--out", help="output directory: model/ and train_summary.json go here"),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="MLflow tracking URI for metrics"),
    run_id: str | None = typer.Option(None, "--run-id", help="existing MLflow run to log metrics to"),
    ranks: int | None = typer.Option(
        None, "--ranks", min=1, help="local data-parallel processes (default: train.ranks of the config)"
    ),
) -> None:
    """Pre-train for train.max_steps optimizer steps and write OUT/model/ and OUT/train_summary.json."""
    from pharia.config import load_config

    cfg = load_config(config)
    n_ranks = ranks or cfg.train.ranks
    # The config decides the accelerator (DeepSpeed reads DS_ACCELERATOR once, at import), never
    # a stale shell variable.
    os.environ["DS_ACCELERATOR"] = cfg.train.device
    if "RANK" not in os.environ and n_ranks > 1:
        args = ["--config", config, "--shards", str(shards), "--out", str(out), "--ranks", str(n_ranks)]
        if tracking_uri:
            args += ["--tracking-uri", tracking_uri]
        if run_id:
            args += ["--run-id", run_id]
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n_ranks)))
        code = subprocess.call(torchrun_command(n_ranks, args), env=env)
        if code:
            raise typer.Exit(code)  # the failing worker has already printed its error
        typer.echo(f"trained with {n_ranks} ranks: {out / 'model'}")
        return
    if "RANK" not in os.environ:
        os.environ.update(single_process_env())

    from pharia.train.loop import train

    summary = train(cfg, shards, out, tracking_uri, run_id)
    if summary:
        typer.echo(
            f"trained {summary['steps']} steps: loss {summary['first_loss']:.3f} -> {summary['final_loss']:.3f}, "
            f"{summary['tokens_per_s']:.0f} tokens/s; model in {summary['model_dir']}"
        )


def main() -> None:
    """Entry point of `python -m pharia.train` (what torchrun and the launcher start)."""
    environment.configure()  # DS_ACCELERATOR is set from the config by the command
    try:
        app(prog_name="pharia train")
    except PhariaError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(2)
