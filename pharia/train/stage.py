"""One training stage from start (or its newest checkpoint) to its final weights, in every rank.

A stage directory `OUT/stages/<name>/` holds `checkpoints/`, `model/` (the final fp32 weights),
`summary.json` (written last: its presence means the stage is done) and `mlflow_run.json`.
Resuming picks the newest complete checkpoint: DeepSpeed's own files when the world size is the
one that wrote them (bit-exact), else the portable fp32 state (weights, Adam moments and step,
any world size).
"""

from __future__ import annotations

import gc
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from pharia.config import PipelineConfig, StageConfig, sha256_json
from pharia.errors import TrainingError
from pharia.model.flops import flops_per_token
from pharia.train.checkpoint import DS_DIR, DS_TAG, PORTABLE_FILE, CheckpointStore, require_compatible
from pharia.train.data import MixtureBatches, ShardSet
from pharia.train.engine import DistEnv, gather_fp32_state, optimizer_groups, peak_flops, seed_everything
from pharia.train.loop import StepContext, StepHooks, StepState, run_steps
from pharia.train.outputs import STAGE_SUMMARY, STAGES_DIR, atomic_write_json

MODEL_DIR = "model"

# Settings that may change between a run and its resumption without changing what is trained:
# how many ranks, how the global batch is cut into micro-batches, and how often to log or save.
RESUMABLE_CHANGES = (
    "device",
    "ranks",
    "micro_batch_size",
    "grad_accum_steps",  # the global batch itself is compared on resume (plan.global_windows)
    "max_micro_batch_size",
    "memory_budget_gb",
    "gpu_memory_fraction",
    "offload_optimizer",
    "log_every",
    "checkpoint_every",
    "keep_checkpoints",
    "eval_every",
    "eval_after_stage",
    "max_nonfinite_steps",
)


def stage_dir(out_dir: Path, stage: StageConfig) -> Path:
    return Path(out_dir) / STAGES_DIR / stage.name


def resume_hash(cfg: PipelineConfig, stage: StageConfig) -> str:
    """What a checkpoint must agree with to be resumed: model, data, stage and the training
    settings that shape the trajectory (not the ones in RESUMABLE_CHANGES)."""
    train = cfg.train.model_dump(mode="json", exclude={"stages", *RESUMABLE_CHANGES})
    return sha256_json(
        {
            "model": cfg.model.model_dump(mode="json"),
            "data": cfg.data.model_dump(mode="json"),
            "train": train,
            "stage": stage.model_dump(mode="json"),
        }
    )


@dataclass(frozen=True)
class Schedule:
    max_steps: int
    lr: float
    warmup_steps: int
    min_lr_ratio: float


def schedule_of(cfg: PipelineConfig, stage: StageConfig) -> Schedule:
    tcfg = cfg.train
    return Schedule(
        max_steps=stage.max_steps,
        lr=stage.lr if stage.lr is not None else tcfg.lr,
        warmup_steps=stage.warmup_steps if stage.warmup_steps is not None else tcfg.warmup_steps,
        min_lr_ratio=stage.min_lr_ratio if stage.min_lr_ratio is not None else tcfg.min_lr_ratio,
    )


class TaskRows:
    """TaskBatches as a BatchSource: each rank takes its rows of the (pure) global batch."""

    def __init__(self, batches: Any) -> None:
        self.batches = batches

    def rows(self, step: int, n_windows: int, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = self.batches.global_batch(step, n_windows)
        return inputs[start:stop], targets[start:stop]

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    def mixture(self) -> dict[str, Any]:
        return self.batches.describe()


def open_batches(cfg: PipelineConfig, index: int, stage: StageConfig, shards: ShardSet) -> Any:
    """The stage's batch source, opened (and so checked) before DeepSpeed starts."""
    seed = [cfg.train.seed, index]
    if stage.kind == "task":
        from pharia.train.task_data import TaskBatches, load_task_examples

        assert stage.task is not None  # enforced by TrainConfig
        examples = load_task_examples(stage.task)
        if not examples:
            raise TrainingError(f"stage '{stage.name}': the task sources {stage.task.sources} gave no examples")
        return TaskRows(
            TaskBatches(
                examples,
                shards.tokenizer_file,
                seq_len=cfg.data.seq_len,
                eos_token_id=shards.eos_token_id,
                pad_token_id=shards.pad_token_id,
                seed=cfg.train.seed + index,
            )
        )
    return MixtureBatches(
        shards, split=stage.split, seq_len=cfg.data.seq_len, seed=seed, domain_weights=shards.domain_targets
    )


def barrier(device: torch.device) -> None:
    if device.type == "cuda":
        torch.distributed.barrier(device_ids=[device.index])
    else:
        torch.distributed.barrier()


def _sum_loader_state(batches: Any, world_size: int) -> dict[str, Any]:
    """The loader's draw counts summed over ranks (collective): world-size independent."""
    state = batches.state_dict()
    if world_size == 1 or "drawn" not in state:
        return state
    gathered: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(gathered, state["drawn"])
    total: dict[str, int] = {}
    for drawn in gathered:
        for domain, n in drawn.items():
            total[domain] = total.get(domain, 0) + int(n)
    return {**state, "drawn": total}


@dataclass
class Process:
    """What every stage of this process shares."""

    cfg: PipelineConfig
    env: DistEnv
    device: torch.device
    world_size: int
    shards: ShardSet
    out_dir: Path
    run_token: str
    runs: Any | None  # TrainingRuns on rank 0 with tracking, else None
    step_offset: int = 0

    @property
    def is_main(self) -> bool:
        return self.env.rank == 0


def _build_engine(proc: Process, index: int, schedule: Schedule, init_from: Path | None) -> tuple[Any, Any, Any]:
    import deepspeed

    from pharia.model.io import load_pretrained
    from pharia.model.model import PhariaLM
    from pharia.train.batch_size import cuda_probe, plan_batches
    from pharia.train.deepspeed_config import SCHEDULE_FIRST_ITERATION, build_deepspeed_config

    cfg, tcfg = proc.cfg, proc.cfg.train
    seed_everything(tcfg.seed + index)
    if init_from is not None:
        model, _ = load_pretrained(init_from)
        model.train()
    else:
        model = PhariaLM(cfg.model)
    model.set_activation_checkpointing(tcfg.activation_checkpointing)
    probe = None
    if proc.device.type == "cuda" and tcfg.micro_batch_size == "auto":
        probe = cuda_probe(model, cfg.data.seq_len, cfg.model.vocab_size, proc.device, precision=tcfg.precision)
    plan = plan_batches(tcfg, cfg.model, cfg.data.seq_len, proc.world_size, device=proc.device, probe=probe)
    ds_config = build_deepspeed_config(
        tcfg,
        plan,
        lr=schedule.lr,
        warmup_steps=schedule.warmup_steps,
        min_lr_ratio=schedule.min_lr_ratio,
        total_steps=schedule.max_steps,
    )
    engine, _, _, scheduler = deepspeed.initialize(
        model=model, model_parameters=optimizer_groups(model, tcfg.weight_decay), config=ds_config
    )
    scheduler.step(SCHEDULE_FIRST_ITERATION)
    return engine, scheduler, plan


def _hooks(
    proc: Process,
    stage: StageConfig,
    engine: Any,
    store: CheckpointStore,
    batches: Any,
    scheduler: Any,
    config_hash: str,
    plan: Any,
) -> StepHooks:
    tcfg = proc.cfg.train
    ethics = stage.ethics or tcfg.ethics
    tokenizer_file = proc.shards.tokenizer_file
    hooks = StepHooks()
    if ethics.content_filter.enabled:
        from pharia.train.ethics.content_filter import ContentFilter

        hooks.content_filter = ContentFilter(ethics.content_filter, tokenizer_file)
    if ethics.adversarial.enabled:
        from pharia.train.ethics.adversarial import AdversarialTerm

        hooks.adversarial = AdversarialTerm(ethics.adversarial, seed=tcfg.seed * 65_536 + proc.env.rank)
    if ethics.fairness.enabled:
        from pharia.train.ethics.fairness import FairnessTerm

        hooks.fairness = FairnessTerm(ethics.fairness, tokenizer_file)
    if tcfg.eval_every:
        hooks.evaluate = _evaluation(proc, engine, stage.name)

    def save(state: StepState) -> None:
        from pharia.train.portable import export_portable_state, save_portable_state

        temp = store.temp_dir(state.step, proc.run_token)
        engine.save_checkpoint(str(temp / DS_DIR), tag=DS_TAG, client_state={}, save_latest=False)
        portable = export_portable_state(engine)  # collective
        loader = _sum_loader_state(batches, proc.world_size)  # collective
        barrier(proc.device)  # every rank's partition is on disk
        if proc.is_main:
            assert portable is not None
            save_portable_state(portable, temp / PORTABLE_FILE)
            store.commit(
                temp,
                state.step,
                {
                    "stage": stage.name,
                    "config_hash": config_hash,
                    "world_size": proc.world_size,
                    "zero_stage": tcfg.zero_stage,
                    "precision": tcfg.precision,
                    "plan": asdict(plan),
                    "scheduler_iteration": int(scheduler.last_batch_iteration),
                    "loader": loader,
                    "progress": state.to_json(),
                },
            )
        barrier(proc.device)

    hooks.checkpoint = save
    return hooks


def _evaluation(proc: Process, engine: Any, stage_name: str) -> Any:
    """The continuous-evaluation hook: collective. Every rank takes part in gathering the full fp32
    weights (ZeRO-3 partitions them; a forward on rank 0 alone would wait for the others' shards
    forever), then rank 0 evaluates a plain copy outside the engine while the others wait."""
    from pharia.model.io import model_from_state
    from pharia.train.eval_hook import FastSuite

    cfg = proc.cfg
    light = FastSuite(proc.shards.root, cfg.eval, label=stage_name) if proc.is_main else None

    def evaluate(step: int) -> dict[str, float] | None:
        state = gather_fp32_state(engine, keep=proc.is_main)  # collective
        results = None
        if light is not None:
            copy = model_from_state(cfg.model, state).to(proc.device)
            results = light(copy, step)
            del copy
        barrier(proc.device)
        return results

    return evaluate


def run_stage(proc: Process, index: int, stage: StageConfig, batches: Any, init_from: Path | None) -> dict[str, Any]:
    """Train `stage` to its last step (resuming if it has checkpoints); return its summary."""
    cfg, tcfg = proc.cfg, proc.cfg.train
    sdir = stage_dir(proc.out_dir, stage)
    summary_path = sdir / STAGE_SUMMARY
    config_hash = resume_hash(cfg, stage)
    if summary_path.is_file():  # finished by an earlier run: nothing to redo, if it is this config's
        done = json.loads(summary_path.read_text(encoding="utf-8"))
        if done.get("config_hash") != config_hash:
            raise TrainingError(
                f"{summary_path}: stage '{stage.name}' in this --out was trained with a different config; "
                "use a new --out directory (or the config it was trained with)"
            )
        return done
    schedule = schedule_of(cfg, stage)
    store = CheckpointStore(sdir / "checkpoints", keep=tcfg.keep_checkpoints)
    if proc.is_main:
        sdir.mkdir(parents=True, exist_ok=True)
        store.root.mkdir(parents=True, exist_ok=True)
        store.remove_temporaries()
    barrier(proc.device)

    engine, scheduler, plan = _build_engine(proc, index, schedule, init_from)
    state = StepState()
    resumed_from: dict[str, Any] | None = None
    checkpoint = store.newest()
    if checkpoint is not None:
        require_compatible(checkpoint, config_hash, stage.name)
        saved_windows = int(checkpoint.state["plan"]["global_windows"])
        if saved_windows != plan.global_windows:  # the windows of every later step would differ
            raise TrainingError(
                f"{checkpoint.path}: written with a global batch of {saved_windows} windows per step, this run "
                f"plans {plan.global_windows} ({plan.reason}); set train.global_batch_tokens so that the "
                "global batch does not depend on the rank count, or resume with the original --ranks"
            )
        if checkpoint.world_size == proc.world_size:
            loaded, _ = engine.load_checkpoint(
                str(checkpoint.ds_dir), tag=DS_TAG, load_optimizer_states=True, load_lr_scheduler_states=True
            )
            if loaded is None:  # DeepSpeed returns None instead of raising when its files are missing
                raise TrainingError(f"{checkpoint.ds_dir}: DeepSpeed found no checkpoint '{DS_TAG}' to resume from")
            how = "deepspeed"
        else:
            from pharia.train.portable import import_portable_state, load_portable_state

            import_portable_state(engine, load_portable_state(checkpoint.portable_file))
            scheduler.step(int(checkpoint.state["scheduler_iteration"]))
            how = f"portable ({checkpoint.world_size} -> {proc.world_size} ranks)"
        state = StepState.from_json(checkpoint.state["progress"])
        if proc.is_main:
            batches.load_state_dict(checkpoint.state.get("loader", {}))
        resumed_from = {"step": checkpoint.step, "path": str(checkpoint.path), "how": how}

    metrics = None
    run_id = None
    if proc.runs is not None:
        params = {
            "stage": stage.name,
            "kind": stage.kind,
            "split": stage.split,
            **{f"schedule.{k}": v for k, v in asdict(schedule).items()},
            **{f"batch.{k}": v for k, v in asdict(plan).items() if k != "memory"},
            "world_size": proc.world_size,
            "zero_stage": tcfg.zero_stage,
            "precision": tcfg.precision,
            "device": str(proc.device),
            "init_from": str(init_from) if init_from else "random",
        }
        run_id = proc.runs.stage_run(stage, index, sdir, params)
        from pharia.train.runs import StageMetrics

        metrics = StageMetrics(proc.runs.logger(run_id), proc.runs.logger(proc.runs.parent_id), proc.step_offset)
    if proc.is_main:
        atomic_write_json(proc.out_dir / "batch_plan.json", {"stage": stage.name, **asdict(plan)})
        print(f"[{stage.name}] batch plan: {plan.reason}", flush=True)
        if resumed_from:
            print(f"[{stage.name}] resumed from step {resumed_from['step']} ({resumed_from['how']})", flush=True)

    hooks = _hooks(proc, stage, engine, store, batches, scheduler, config_hash, plan)
    ctx = StepContext(
        cfg=cfg,
        stage_name=stage.name,
        max_steps=schedule.max_steps,
        engine=engine,
        batches=batches,
        micro_batch_size=plan.micro_batch_size,
        grad_accum_steps=plan.grad_accum_steps,
        world_size=proc.world_size,
        rank=proc.env.rank,
        device=proc.device,
        metrics=metrics,
        hooks=hooks,
    )
    ok = False
    try:
        if state.step < schedule.max_steps:
            state = run_steps(ctx, state, scheduler)
        ok = True
    finally:
        if metrics is not None:
            metrics.flush()
        if proc.runs is not None and run_id is not None and not ok:
            proc.runs.finish(run_id, ok=False)

    loader = _sum_loader_state(batches, proc.world_size)  # collective
    full = gather_fp32_state(engine, keep=proc.is_main)  # collective
    summary: dict[str, Any] = {}
    if proc.is_main:
        from pharia.model.io import model_from_state, save_pretrained

        batches.load_state_dict(loader)
        model_dir = save_pretrained(model_from_state(cfg.model, full), cfg.model, sdir / MODEL_DIR)
        final_eval = _stage_evaluation(proc, model_dir, sdir, metrics, schedule.max_steps)
        tokens_per_s = state.tokens_seen / state.train_s if state.train_s else 0.0
        peak = peak_flops(proc.device)
        summary = {
            "stage": stage.name,
            "kind": stage.kind,
            "split": stage.split,
            "index": index,
            "config_hash": config_hash,
            "steps": state.step,
            "first_loss": state.losses[0] if state.losses else None,
            "final_loss": state.history[-1][1] if state.history else None,
            "losses": state.losses,
            "loss_history": state.history,
            "tokens_seen": state.tokens_seen,
            "train_s": state.train_s,
            "tokens_per_s": tokens_per_s,
            "model_tflops_per_s": tokens_per_s * flops_per_token(cfg.model) / 1e12,
            "mfu": tokens_per_s * flops_per_token(cfg.model) / (proc.world_size * peak) if peak else None,
            "schedule": asdict(schedule),
            "batch_plan": asdict(plan),
            "counters": state.counters,
            "nonfinite_steps": state.nonfinite_steps,
            "skipped_steps": state.skipped_steps,
            "evaluations": state.evaluations,
            "final_evaluation": final_eval,
            "mixture": batches.mixture(),
            "resumed_from": resumed_from,
            "init_from": str(init_from) if init_from else None,
            "model_dir": str(model_dir),
            "mlflow_run_id": run_id,
            "world_size": proc.world_size,
            "zero_stage": tcfg.zero_stage,
            "precision": tcfg.precision,
            "device": str(proc.device),
        }
        atomic_write_json(summary_path, summary)
        if proc.runs is not None and run_id is not None:
            proc.runs.finish(run_id, ok=True)
    barrier(proc.device)
    if not proc.is_main:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    del engine, scheduler
    gc.collect()
    return summary


def _stage_evaluation(proc: Process, model_dir: Path, sdir: Path, metrics: Any | None, step: int) -> dict[str, float]:
    """The evaluation suite on the stage's final weights (rank 0), logged to the stage's run: the
    "full evaluation between stages" slot of the training hook."""
    if not proc.cfg.train.eval_after_stage:
        return {}
    from pharia.evaluate.harness import evaluate_model

    result = evaluate_model(
        model_dir,
        suite="full",
        eval_cfg=proc.cfg.eval,
        gates_cfg=proc.cfg.gates,
        out_dir=sdir / "eval",
        shards_dir=proc.shards.root,
        tokenizer=proc.shards.tokenizer_file,
        device=str(proc.device),
        show_progress=False,
    )
    values = {f"eval_{k}": float(v) for k, v in result["metrics"].items() if v is not None}
    if metrics is not None:
        metrics.stage.log(step, **values)
        metrics.stage.flush()
    return values
