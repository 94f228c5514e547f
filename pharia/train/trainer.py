"""`train()`: every configured stage in order, inside every rank of a distributed job.

Each stage starts from the previous stage's final weights (the first from a random
initialisation) and has its own schedule, checkpoints and nested MLflow run. Everything that can be
checked without DeepSpeed - the shards, the tokenizer, each stage's split or task examples - is
checked first, so a wrong input costs a message, not a crash after minutes of training.

Rank 0 writes `OUT/model/` (the last stage's weights) and `OUT/train_summary.json`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from pharia.config import PipelineConfig, StageConfig
from pharia.errors import TrainingError
from pharia.train.data import ShardSet
from pharia.train.engine import DistEnv, init_distributed, quiet_deepspeed_logs
from pharia.train.outputs import (
    CONFIG_FILE,
    INPUTS_FILE,
    MODEL_DIR,
    STAGE_SUMMARY,
    SUMMARY_FILE,
    atomic_write_json,
)
from pharia.train.stage import MODEL_DIR as STAGE_MODEL_DIR
from pharia.train.stage import Process, barrier, open_batches, run_stage, stage_dir


def _select(cfg: PipelineConfig, only: str | None) -> list[int]:
    stages = cfg.train.stage_list()
    if only is None:
        return list(range(len(stages)))
    names = [s.name for s in stages]
    if only not in names:
        raise TrainingError(f"--stage {only!r}: the config defines the stages {', '.join(names)}")
    return [names.index(only)]


def _broadcast_token(device: torch.device, rank: int) -> str:
    """Rank 0's pid on every rank: names the temporary checkpoint directories of this run."""
    token = torch.tensor([os.getpid() if rank == 0 else 0], dtype=torch.long, device=device)
    torch.distributed.broadcast(token, src=0)
    return str(int(token.item()))


def record_inputs(cfg: PipelineConfig, shards: ShardSet, out_dir: Path) -> None:
    """OUT/config.yaml and OUT/inputs.json: what `pharia eval OUT` needs to rebuild a checkpoint's
    model and find its tokenizer and held-out shards without being told."""
    import yaml

    (out_dir / CONFIG_FILE).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), "utf-8")
    atomic_write_json(
        out_dir / INPUTS_FILE,
        {
            "shards_dir": str(Path(shards.root).resolve()),
            "tokenizer_file": str(Path(shards.tokenizer_file).resolve()),
            "config_hash": cfg.config_hash(),
        },
    )


def _finished_summary(out_dir: Path, stage: StageConfig) -> dict[str, Any]:
    """An earlier stage's summary.json, so the run summary covers every stage when the last one
    was trained alone (the pipeline flow trains and evaluates one stage per task)."""
    path = stage_dir(out_dir, stage) / STAGE_SUMMARY
    if not path.is_file():
        raise TrainingError(f"stage '{stage.name}' has no {path}: train it before the stages after it")
    return json.loads(path.read_text(encoding="utf-8"))


def _publish_model(source: Path, out_dir: Path) -> Path:
    """Copy the last stage's weights to OUT/model atomically (temporary sibling + rename)."""
    target = out_dir / MODEL_DIR
    temp = out_dir / f".{MODEL_DIR}.tmp-{os.getpid()}"
    shutil.rmtree(temp, ignore_errors=True)
    shutil.copytree(source, temp)
    if target.exists():
        shutil.rmtree(target)
    os.replace(temp, target)
    return target


def aggregate(cfg: PipelineConfig, summaries: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    """The run's summary: totals over stages plus each stage's own summary."""
    first, last = summaries[0], summaries[-1]
    history: list[list[float]] = []
    offset = 0
    for summary in summaries:
        history += [[offset + step, loss] for step, loss in summary["loss_history"]]
        offset += summary["steps"]
    tokens = sum(s["tokens_seen"] for s in summaries)
    train_s = sum(s["train_s"] for s in summaries)
    plan = first["batch_plan"]
    import deepspeed

    from pharia.model.model import build_model

    counts = build_model(cfg.model, device="meta").num_parameters()
    return {
        "steps": sum(s["steps"] for s in summaries),
        "first_loss": first["first_loss"],
        "final_loss": last["final_loss"],
        "loss_history": history,
        "tokens_seen": tokens,
        "tokens_per_s": tokens / train_s if train_s else 0.0,
        "train_s": train_s,
        "wall_s": wall_s,
        "world_size": last["world_size"],
        "zero_stage": cfg.train.zero_stage,
        "precision": cfg.train.precision,
        "device": cfg.train.device,
        "micro_batch_size": plan["micro_batch_size"],
        "grad_accum_steps": plan["grad_accum_steps"],
        "seq_len": cfg.data.seq_len,
        "config_hash": cfg.config_hash(),
        "params_total": counts.total,
        "params_unique": counts.unique,
        "params_active": counts.active,
        "deepspeed_version": deepspeed.__version__,
        "torch_version": torch.__version__,
        "stages": {s["stage"]: {k: v for k, v in s.items() if k != "losses"} for s in summaries},
        "stage_order": [s["stage"] for s in summaries],
        "counters": {k: v for s in summaries for k, v in ((f"{s['stage']}.{c}", x) for c, x in s["counters"].items())},
        "nonfinite_steps": sum(s["nonfinite_steps"] for s in summaries),
        "mixture": first["mixture"],
    }


def train(
    cfg: PipelineConfig,
    shards_dir: Path,
    out_dir: Path,
    tracking_uri: str | None,
    run_id: str | None,
    only_stage: str | None = None,
) -> dict[str, Any]:
    """Run the configured stages (or only `only_stage`); return the run summary on rank 0, {} elsewhere."""
    started = time.perf_counter()
    env = DistEnv.from_environ()
    out_dir = Path(out_dir)
    stages = cfg.train.stage_list()
    selected = _select(cfg, only_stage)
    shards = ShardSet.open(shards_dir, vocab_size=cfg.model.vocab_size)
    shards.check_tokenizer()
    sources = {i: open_batches(cfg, i, stages[i], shards) for i in selected}  # every input checked up front
    first = selected[0]
    init_from = None
    if first > 0:
        previous = stages[first - 1]
        init_from = stage_dir(out_dir, previous) / STAGE_MODEL_DIR
        if not (init_from / "model.safetensors").is_file():
            raise TrainingError(
                f"stage '{stages[first].name}' starts from the final weights of stage '{previous.name}', "
                f"which {init_from} does not hold: run `pharia train` without --stage "
                f"(or with --stage {previous.name}) first"
            )

    quiet_deepspeed_logs()
    device = init_distributed(cfg.train.device, env.local_rank)
    world_size = torch.distributed.get_world_size()
    runs = None
    if env.rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        record_inputs(cfg, shards, out_dir)
        if tracking_uri:
            from pharia.train.runs import TrainingRuns

            runs = TrainingRuns.open(tracking_uri, run_id, cfg, out_dir)
    proc = Process(
        cfg=cfg,
        env=env,
        device=device,
        world_size=world_size,
        shards=shards,
        out_dir=out_dir,
        run_token=_broadcast_token(device, env.rank),
        runs=runs,
        step_offset=sum(stages[i].max_steps for i in range(first)),
    )
    summaries = []
    for index in selected:
        summary = run_stage(proc, index, stages[index], sources[index], init_from)
        summaries.append(summary)
        init_from = Path(summary["model_dir"])
        proc.step_offset += stages[index].max_steps

    result: dict[str, Any] = {}
    if env.rank == 0 and selected[-1] == len(stages) - 1:  # OUT/model is the last stage's, never an earlier one
        assert init_from is not None
        model_dir = _publish_model(init_from, out_dir)
        earlier = [_finished_summary(out_dir, stages[i]) for i in range(selected[0])]  # `--stage last` alone
        result = {**aggregate(cfg, earlier + summaries, time.perf_counter() - started), "model_dir": str(model_dir)}
        atomic_write_json(out_dir / SUMMARY_FILE, result)
    barrier(device)
    torch.distributed.destroy_process_group()
    return result
