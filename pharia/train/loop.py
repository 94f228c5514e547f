"""The optimizer steps of one stage, inside every rank: batches -> content filter -> forward ->
ethics terms -> one backward -> DeepSpeed step; logging, evaluation and checkpoints at their steps.

Rows of a step's global batch are split by (rank, micro-batch), so the same windows train whatever
the world size. Exactly one `engine.backward` runs per micro-batch: the adversarial and fairness
terms add to the loss instead of running their own backward, because ZeRO 2/3 reduce each
parameter's gradient once per step.

Non-finite steps: a NaN/inf loss gives NaN gradients, which the optimizer then refuses - ZeRO 1-3
and fp16 detect the overflow and skip the step (no update, no schedule step); at ZeRO 0 with
fp32/bf16 DeepSpeed has no such check, so the loop checks the gradients itself and lets that step
run without the optimizer update (`_optimizer_step_skipped`), rewinding the schedule. Each such
step is counted; more than `train.max_nonfinite_steps` abort the run with a message.

The gathered final weights are the fp32 master weights (ZeRO's optimizer partitions, or the module
itself without a ZeRO optimizer), so a bf16 run is saved at full precision.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from pharia.config import PipelineConfig
from pharia.errors import TrainingError
from pharia.model.flops import flops_per_token
from pharia.train.data import IGNORE_INDEX
from pharia.train.engine import (  # noqa: F401  (re-exported: benchmarks import them from here)
    DistEnv,
    gather_fp32_state,
    init_distributed,
    memory_stats,
    optimizer_groups,
    peak_flops,
    quiet_deepspeed_logs,
    seed_everything,
)
from pharia.train.progress import ProgressReporter


class BatchSource(Protocol):
    """Rows [start, stop) of step `step`'s global batch of `n_windows` windows (pure function)."""

    def rows(self, step: int, n_windows: int, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass
class StepState:
    """Everything about a stage's progress that is not weights or optimizer: saved in every
    checkpoint, so a resumed run continues the counters and the loss curve where they stood."""

    step: int = 0
    losses: list[float] = field(default_factory=list)  # mean loss of every step, in order
    history: list[list[float]] = field(default_factory=list)  # [step, mean loss of the log window]
    counters: dict[str, float] = field(default_factory=dict)  # cumulative, all ranks
    nonfinite_steps: int = 0
    skipped_steps: int = 0
    tokens_seen: int = 0
    train_s: float = 0.0
    evaluations: list[dict[str, float]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "losses": self.losses,
            "history": self.history,
            "counters": self.counters,
            "nonfinite_steps": self.nonfinite_steps,
            "skipped_steps": self.skipped_steps,
            "tokens_seen": self.tokens_seen,
            "train_s": self.train_s,
            "evaluations": self.evaluations,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepState:
        return cls(
            step=int(data["step"]),
            losses=[float(x) for x in data["losses"]],
            history=[[float(a), float(b)] for a, b in data["history"]],
            counters={k: float(v) for k, v in data["counters"].items()},
            nonfinite_steps=int(data["nonfinite_steps"]),
            skipped_steps=int(data["skipped_steps"]),
            tokens_seen=int(data["tokens_seen"]),
            train_s=float(data["train_s"]),
            evaluations=list(data.get("evaluations", [])),
        )


LossTerm = Callable[..., tuple[torch.Tensor | None, dict[str, float]]]


@dataclass
class StepHooks:
    """The optional parts of a step, each None when its switch is off."""

    content_filter: Any | None = None  # ContentFilter: apply(inputs, targets) -> FilterResult
    adversarial: LossTerm | None = None  # AdversarialTerm(forward, inputs, targets, micro_step=)
    fairness: LossTerm | None = None  # FairnessTerm(forward, inputs, targets, clean_logits)
    evaluate: Callable[[int], dict[str, float] | None] | None = None  # collective; rank 0 returns metrics
    checkpoint: Callable[[StepState], None] | None = None  # collective


@dataclass
class StepContext:
    cfg: PipelineConfig
    stage_name: str
    max_steps: int
    engine: Any
    batches: BatchSource
    micro_batch_size: int
    grad_accum_steps: int
    world_size: int
    rank: int
    device: torch.device
    metrics: Any | None  # MetricLogger of the stage's MLflow run (rank 0) or None
    hooks: StepHooks


def is_count(key: str) -> bool:
    """Counters that add up over micro-batches and ranks (numbers of windows, tokens, batches);
    every other term is a value averaged over the micro-batches that reported it."""
    return key.endswith(
        ("_windows", "_tokens", "_batches", "_scored", "_flagged", "_dropped", "_masked", "_paired", "_skipped")
    )


class _Window:
    """Sums of the steps since the last log line (this rank's ethics counters included)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.steps = 0
        self.loss = self.aux = self.z_loss = self.grad_norm = 0.0
        self.grad_norms = 0
        self.counters: dict[str, float] = {}
        self.reports: dict[str, int] = {}
        self.started = time.perf_counter()

    def add_counters(self, counters: dict[str, float]) -> None:
        for key, value in counters.items():
            self.counters[key] = self.counters.get(key, 0.0) + float(value)
            self.reports[key] = self.reports.get(key, 0) + 1


def _grad_norm(engine: Any) -> float | None:
    value = engine.get_global_grad_norm()
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _loss_scale(engine: Any, precision: str) -> float:
    if precision != "fp16":
        return 1.0
    return float(getattr(engine.optimizer, "loss_scale", getattr(engine.optimizer, "cur_scale", 1.0)))


def _gradients_finite(engine: Any) -> bool:
    """ZeRO 0 without fp16: whether this step's (already all-reduced) gradients are all finite."""
    return all(bool(torch.isfinite(p.grad).all()) for p in engine.module.parameters() if p.grad is not None)


@contextmanager
def _optimizer_step_skipped(engine: Any) -> Iterator[None]:
    """Let `engine.step()` run its bookkeeping (micro/global step counters, zero_grad) without
    updating weights or Adam's state: what ZeRO 1-3 do on overflow, for ZeRO 0 which has no such
    check. The schedule's step is rewound by the caller."""
    optimizer = engine.optimizer
    optimizer.step = lambda *args, **kwargs: None  # instance attribute shadows the method
    try:
        yield
    finally:
        del optimizer.step


def _merge_counters(window: _Window, world_size: int) -> dict[str, float]:
    """Sum every rank's window counters on all ranks (one object all-gather per log window)."""
    if world_size == 1:
        merged = [(window.counters, window.reports)]
    else:
        merged = [None] * world_size
        torch.distributed.all_gather_object(merged, (window.counters, window.reports))
    sums: dict[str, float] = {}
    reports: dict[str, int] = {}
    for counters, seen in merged:  # type: ignore[misc]
        for key, value in counters.items():
            sums[key] = sums.get(key, 0.0) + value
            reports[key] = reports.get(key, 0) + seen[key]
    return {k: (v if is_count(k) else v / max(reports[k], 1)) for k, v in sums.items()}


def _micro_batch(ctx: StepContext, step: int, micro: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """This rank's rows of micro-batch `micro` of `step`, after the content filter."""
    global_windows = ctx.micro_batch_size * ctx.grad_accum_steps * ctx.world_size
    start = (ctx.rank * ctx.grad_accum_steps + micro) * ctx.micro_batch_size
    inputs, targets = ctx.batches.rows(step, global_windows, start, start + ctx.micro_batch_size)
    counters: dict[str, float] = {}
    if ctx.hooks.content_filter is not None:
        result = ctx.hooks.content_filter.apply(inputs, targets)
        counters.update(result.counters)
        if result.inputs.shape[0] == 0:  # every window dropped: a zero-loss row keeps the collectives in step
            inputs, targets = inputs[:1], torch.full_like(targets[:1], IGNORE_INDEX)
        else:
            inputs, targets = result.inputs, result.targets
    counters["train_target_tokens"] = float((targets != IGNORE_INDEX).sum())
    return inputs, targets, counters


def run_steps(ctx: StepContext, state: StepState, scheduler: Any) -> StepState:
    """Train from `state.step + 1` to `ctx.max_steps`; returns the final state (rank 0's is complete)."""
    cfg, engine, tcfg = ctx.cfg, ctx.engine, ctx.cfg.train
    is_main = ctx.rank == 0
    moe = cfg.model.n_experts > 1
    guard_stage0 = tcfg.zero_stage == 0 and tcfg.precision != "fp16"
    lockstep = tcfg.zero_stage == 3 and ctx.world_size > 1
    seq_len = cfg.data.seq_len
    tokens_per_step = ctx.micro_batch_size * ctx.grad_accum_steps * ctx.world_size * seq_len
    flops = flops_per_token(cfg.model)
    peak = peak_flops(ctx.device)
    window = _Window()
    engine.train()
    description = f"{ctx.stage_name} {cfg.name}"
    with ProgressReporter(ctx.max_steps, enabled=is_main, description=description) as progress:
        progress.skip(state.step)
        for step in range(state.step + 1, ctx.max_steps + 1):
            step_started = time.perf_counter()
            lr = float(engine.get_lr()[0])
            totals = torch.zeros(5, dtype=torch.float32, device=ctx.device)  # lm, aux, z, adversarial, fairness
            rewind = [False]
            for micro in range(ctx.grad_accum_steps):
                inputs, targets, counters = _micro_batch(ctx, step, micro)
                inputs, targets = inputs.to(ctx.device), targets.to(ctx.device)
                out = engine(inputs, targets)
                loss = out.loss
                totals[0] += out.loss.detach().float()
                if out.aux_loss is not None:
                    loss = loss + tcfg.aux_loss_coef * out.aux_loss
                    totals[1] += out.aux_loss.detach().float()
                if out.z_loss is not None:
                    loss = loss + cfg.model.router_z_loss_coef * out.z_loss
                    totals[2] += out.z_loss.detach().float()
                # the same on every rank: whether a term runs must not differ between ranks (ZeRO-3
                # forwards are collective); the ranks' perturbations differ through their seeds
                micro_index = (step - 1) * ctx.grad_accum_steps + micro
                if ctx.hooks.adversarial is not None:
                    term, extra = ctx.hooks.adversarial(
                        engine, inputs, targets, micro_step=micro_index, clean_loss=out.loss
                    )
                    counters.update(extra)
                    if term is not None:
                        loss = loss + term
                        totals[3] += term.detach().float()
                if ctx.hooks.fairness is not None:
                    term, extra = ctx.hooks.fairness(engine, inputs, targets, out.logits, lockstep=lockstep)
                    counters.update(extra)
                    if term is not None:
                        loss = loss + term
                        totals[4] += term.detach().float()
                window.add_counters(counters)
                engine.backward(loss)
                if guard_stage0 and micro == ctx.grad_accum_steps - 1 and not _gradients_finite(engine):
                    rewind[0] = True
                    with _optimizer_step_skipped(engine):
                        engine.step()
                else:
                    engine.step()  # DeepSpeed steps the optimizer only at the accumulation boundary
            if rewind[0]:
                scheduler.step(scheduler.last_batch_iteration - 1)
            torch.distributed.all_reduce(totals)
            step_loss, step_aux, step_z, step_adv, step_fair = (
                totals / (ctx.grad_accum_steps * ctx.world_size)
            ).tolist()
            applied = engine.was_step_applied() and not rewind[0]
            state.step = step
            state.tokens_seen += tokens_per_step
            state.train_s += time.perf_counter() - step_started
            state.losses.append(step_loss)
            if not applied:
                state.skipped_steps += 1
            if not math.isfinite(step_loss):
                state.nonfinite_steps += 1
                if state.nonfinite_steps > tcfg.max_nonfinite_steps:
                    raise TrainingError(
                        f"stage '{ctx.stage_name}': {state.nonfinite_steps} steps with a non-finite loss "
                        f"(limit train.max_nonfinite_steps={tcfg.max_nonfinite_steps}), the last at step {step}; "
                        "each was skipped, but training is diverging: lower the learning rate, use bf16 instead "
                        "of fp16, or resume from an earlier checkpoint"
                    )
            else:
                window.steps += 1
                window.loss += step_loss
                window.aux += step_aux
                window.z_loss += step_z
            window.add_counters({"adv_term": step_adv} if ctx.hooks.adversarial else {})
            window.add_counters({"fair_term": step_fair} if ctx.hooks.fairness else {})
            norm = _grad_norm(engine)
            if norm is not None and applied:
                window.grad_norm += norm
                window.grad_norms += 1
            progress.advance()
            last = step == ctx.max_steps
            checkpointing = ctx.hooks.checkpoint is not None and (step % tcfg.checkpoint_every == 0 or last)
            if step % tcfg.log_every == 0 or last or checkpointing:  # a checkpoint holds every counted step
                merged = _merge_counters(window, ctx.world_size)  # collective
                if is_main:
                    _log_window(ctx, state, window, merged, step, lr, tokens_per_step, flops, peak, moe, progress)
                window.reset()
            if ctx.hooks.evaluate is not None and tcfg.eval_every and (step % tcfg.eval_every == 0):
                results = ctx.hooks.evaluate(step)  # collective
                if is_main and results is not None:
                    state.evaluations.append({"step": step, **results})
                    if ctx.metrics is not None:
                        ctx.metrics.log(step, **results)
                    progress.report(step, "eval " + "  ".join(f"{k} {v:.4g}" for k, v in results.items()))
            if checkpointing:
                if ctx.metrics is not None:
                    ctx.metrics.flush()  # what a checkpoint covers is in MLflow before it counts as saved
                ctx.hooks.checkpoint(state)  # type: ignore[misc]  # collective
    return state


def _log_window(
    ctx: StepContext,
    state: StepState,
    window: _Window,
    merged: dict[str, float],
    step: int,
    lr: float,
    tokens_per_step: int,
    flops: float,
    peak: float | None,
    moe: bool,
    progress: ProgressReporter,
) -> None:
    elapsed = max(time.perf_counter() - window.started, 1e-9)
    steps_in_window = max(window.steps, 1)
    values: dict[str, float] = {"lr": lr}
    if window.steps:
        values["train_loss"] = window.loss / window.steps
        state.history.append([step, values["train_loss"]])
    values["tokens_per_s"] = steps_in_window * tokens_per_step / elapsed
    values["model_tflops_per_s"] = values["tokens_per_s"] * flops / 1e12
    if peak is not None:
        values["mfu"] = values["tokens_per_s"] * flops / (ctx.world_size * peak)
    if window.grad_norms:
        values["grad_norm"] = window.grad_norm / window.grad_norms
    values["loss_scale"] = _loss_scale(ctx.engine, ctx.cfg.train.precision)
    if moe:
        values["aux_loss"] = window.aux / steps_in_window
        values["z_loss"] = window.z_loss / steps_in_window
        module = getattr(ctx.engine, "module", None)
        if hasattr(module, "moe_stats"):
            values.update(module.moe_stats())  # this rank's last micro-batch
    for key, value in merged.items():
        if is_count(key):
            state.counters[key] = state.counters.get(key, 0.0) + value
            values[f"{key}_total"] = state.counters[key]
        else:
            values[key] = value
    values["nonfinite_steps_total"] = float(state.nonfinite_steps)
    values["skipped_steps_total"] = float(state.skipped_steps)
    values.update(memory_stats(ctx.device))
    if ctx.metrics is not None:
        ctx.metrics.log(step, **values)
    shown = {k: values[k] for k in ("train_loss", "lr", "grad_norm", "tokens_per_s") if k in values}
    progress.report(step, "  ".join(f"{k} {v:.4g}" for k, v in shown.items()))
