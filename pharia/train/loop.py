"""One training stage under DeepSpeed, run inside every rank of a distributed job.

The process must already carry the distributed environment (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT): torchrun sets it, and `pharia train` sets the single-process variant
itself. Every rank trains; only rank 0 logs (MLflow, progress) and writes files. Communication is
gloo on CPU and NCCL on CUDA, through DeepSpeed's backend.

The gathered final weights are the fp32 master weights (ZeRO's optimizer partitions, or the module
itself without a ZeRO optimizer), so a bf16 run is saved at full precision.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pharia.config import PipelineConfig
from pharia.errors import TrainingError
from pharia.model.flops import flops_per_token
from pharia.model.io import model_from_state, save_pretrained
from pharia.model.model import PhariaLM
from pharia.train.data import ShardSet, TrainBatchSampler
from pharia.train.deepspeed_config import SCHEDULE_FIRST_ITERATION, build_deepspeed_config
from pharia.train.outputs import MODEL_DIR, SUMMARY_FILE, atomic_write_json
from pharia.train.progress import ProgressReporter

DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int

    @classmethod
    def from_environ(cls) -> DistEnv:
        missing = [v for v in DIST_VARS if v not in os.environ]
        if missing:
            raise TrainingError(
                f"distributed environment incomplete (missing {', '.join(missing)}): start training with "
                "`pharia train` or torchrun, not by calling train() in a bare process"
            )
        return cls(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))


def seed_everything(seed: int) -> None:
    """Same seed on every rank: identical initial weights everywhere (data order differs by rank)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def optimizer_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices (linear, embedding), none on norm gains: decaying a gain towards 0
    would fight the normalisation it scales."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    keep = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]


def skip_unused_shm_comm_op() -> None:
    """Keep DeepSpeed from compiling its CPU shared-memory all-reduce op (35-155 s of gcc).

    DeepSpeed's TorchBackend builds `deepspeed_shm_comm` at init whenever it is marked compatible,
    but the op serves only `inference_all_reduce` (AutoTP inference); training collectives go
    through torch.distributed (gloo here) either way. DeepSpeed keeps its compatibility table as a
    mutable module-level dict for exactly this kind of override.
    """
    import deepspeed.ops
    from deepspeed.ops.op_builder.cpu.comm import ShareMemCommBuilder

    deepspeed.ops.__compatible_ops__[ShareMemCommBuilder.NAME] = False


class _DropScheduleStartWarning(logging.Filter):
    """WarmupCosineLR warns "before it has started" when DeepSpeed builds it; we start it right
    after (SCHEDULE_FIRST_ITERATION), so the warning is expected and would only mislead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "before it has started" not in record.getMessage()


def quiet_deepspeed_logs() -> None:
    """DeepSpeed logs its whole config at INFO on every start; keep warnings and errors only.

    torch 2.13 also warns (FutureWarning) on every call of the collectives DeepSpeed 0.19.8 still
    uses (all_gather_into_tensor, reduce_scatter_tensor): thousands of identical lines per run,
    nothing a pharia user can act on.
    """
    logger = logging.getLogger("DeepSpeed")
    logger.setLevel(logging.WARNING)
    logger.addFilter(_DropScheduleStartWarning())
    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning)


def init_distributed(device: str, local_rank: int) -> torch.device:
    """DeepSpeed's process group: NCCL on CUDA, gloo on CPU; returns this rank's device.

    On CPU the shared-memory op is not built (see `skip_unused_shm_comm_op`); PHARIA_DS_SHM_COMM=1
    restores DeepSpeed's default of compiling it into $TORCH_EXTENSIONS_DIR.
    """
    import deepspeed

    if device == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError("train.device is 'cuda' but no CUDA device is visible")
        torch.cuda.set_device(local_rank)
        deepspeed.init_distributed(dist_backend="nccl")
        return torch.device("cuda", local_rank)
    if os.environ.get("PHARIA_DS_SHM_COMM", "0") != "1":
        skip_unused_shm_comm_op()
    deepspeed.init_distributed(dist_backend="gloo")
    return torch.device("cpu")


def gather_fp32_state(engine: Any, keep: bool) -> dict[str, torch.Tensor]:
    """Full fp32 weights of every unique parameter, on CPU, kept only where `keep` (rank 0).

    Collective: every rank must call it, in the same order. Parameters are gathered one at a time,
    so a rank never holds more than one full tensor it does not keep.
    """
    from deepspeed.utils import safe_get_full_fp32_param

    state: dict[str, torch.Tensor] = {}
    for name, param in engine.module.named_parameters():
        full = safe_get_full_fp32_param(param)  # ZeRO 1-3 / bf16 optimizer: the master weights
        if full is None:  # no ZeRO optimizer: the module holds the weights itself
            full = param.detach()
        if keep:
            state[name] = full.detach().float().cpu().contiguous().clone()
    return state


class _Window:
    """Loss/aux/grad-norm sums and timing of the steps since the last log line."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.steps, self.loss, self.aux, self.grad_norm, self.grad_norms = 0, 0.0, 0.0, 0.0, 0
        self.z_loss = 0.0
        self.started = time.perf_counter()

    def add(self, loss: float, aux: float, grad_norm: float | None, z_loss: float = 0.0) -> None:
        self.steps += 1
        self.loss += loss
        self.aux += aux
        self.z_loss += z_loss
        if grad_norm is not None:
            self.grad_norm += grad_norm
            self.grad_norms += 1


def _grad_norm(engine: Any) -> float | None:
    value = engine.get_global_grad_norm()
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 tensor-core peaks


def _peak_flops(device: torch.device) -> float | None:
    """Peak dense bf16 FLOP/s of one known GPU, for MFU; None on CPUs and unknown cards."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in name), None)


@dataclass
class StepsResult:
    history: list[list[float]]  # [step, mean loss of the log window ending there]
    first_loss: float
    train_s: float


def run_steps(
    engine: Any,
    sampler: TrainBatchSampler,
    cfg: PipelineConfig,
    device: torch.device,
    world_size: int,
    metrics: Any | None,
    is_main: bool,
) -> StepsResult:
    """The optimizer steps: forward/backward per micro-batch, rank-mean loss per step, logging per window."""
    tcfg = cfg.train
    moe = cfg.model.n_experts > 1
    tokens_per_step = tcfg.micro_batch_size * tcfg.grad_accum_steps * world_size * cfg.data.seq_len
    flops = flops_per_token(cfg.model)  # model FLOPs per token (6N + attention), for TFLOP/s and MFU
    peak = _peak_flops(device)
    history: list[list[float]] = []
    first_loss: float | None = None
    window = _Window()
    started = time.perf_counter()
    engine.train()
    with ProgressReporter(tcfg.max_steps, enabled=is_main, description=f"pretrain {cfg.name}") as progress:
        for step in range(1, tcfg.max_steps + 1):
            lr = float(engine.get_lr()[0])
            # summed on the device and read once per step: one host sync, NCCL-compatible
            totals = torch.zeros(3, dtype=torch.float32, device=device)
            for _ in range(tcfg.grad_accum_steps):
                inputs, targets = sampler.next_batch()
                out = engine(inputs.to(device), targets.to(device))
                loss = out.loss
                totals[0] += out.loss.detach().float()
                if out.aux_loss is not None:
                    loss = loss + tcfg.aux_loss_coef * out.aux_loss
                    totals[1] += out.aux_loss.detach().float()
                if out.z_loss is not None:
                    loss = loss + cfg.model.router_z_loss_coef * out.z_loss
                    totals[2] += out.z_loss.detach().float()
                engine.backward(loss)
                engine.step()  # DeepSpeed steps the optimizer only at the accumulation boundary
            torch.distributed.all_reduce(totals)
            step_loss, step_aux, step_z = (totals / (tcfg.grad_accum_steps * world_size)).tolist()
            if not math.isfinite(step_loss):
                raise TrainingError(f"training diverged: loss is {step_loss} at step {step} (lower train.lr?)")
            first_loss = step_loss if first_loss is None else first_loss
            window.add(step_loss, step_aux, _grad_norm(engine), step_z)
            progress.advance()
            if step % tcfg.log_every == 0 or step == tcfg.max_steps:
                elapsed = max(time.perf_counter() - window.started, 1e-9)
                values = {
                    "train_loss": window.loss / window.steps,
                    "lr": lr,
                    "tokens_per_s": window.steps * tokens_per_step / elapsed,
                }
                values["model_tflops_per_s"] = values["tokens_per_s"] * flops / 1e12
                if peak is not None:
                    values["mfu"] = values["tokens_per_s"] * flops / (world_size * peak)
                if window.grad_norms:
                    values["grad_norm"] = window.grad_norm / window.grad_norms
                if moe:
                    values["aux_loss"] = window.aux / window.steps
                    values["z_loss"] = window.z_loss / window.steps
                    module = getattr(engine, "module", None)
                    if hasattr(module, "moe_stats"):
                        values.update(module.moe_stats())  # this rank's last micro-batch
                history.append([step, values["train_loss"]])
                if metrics is not None:
                    metrics.log(step, **values)
                progress.report(step, "  ".join(f"{k} {v:.4g}" for k, v in values.items()))
                window.reset()
    assert first_loss is not None  # max_steps >= 1
    return StepsResult(history=history, first_loss=first_loss, train_s=time.perf_counter() - started)


def train(
    cfg: PipelineConfig, shards_dir: Path, out_dir: Path, tracking_uri: str | None, run_id: str | None
) -> dict[str, Any]:
    """Train `cfg.train.max_steps` optimizer steps of the pre-training stage; return the summary
    (rank 0; other ranks return {}).

    Rank 0 writes `out_dir/model/` (safetensors + config.json) and `out_dir/train_summary.json`, and
    logs train_loss, lr, tokens_per_s, grad_norm (and aux_loss for MoE) every `log_every` steps to
    the MLflow run `run_id` when both `tracking_uri` and `run_id` are given.
    """
    started = time.perf_counter()
    env = DistEnv.from_environ()
    tcfg = cfg.train
    is_main = env.rank == 0
    shards = ShardSet.open(shards_dir, vocab_size=cfg.model.vocab_size)  # fail before DeepSpeed starts
    sampler = TrainBatchSampler(
        shards,
        seq_len=cfg.data.seq_len,
        batch_size=tcfg.micro_batch_size,
        seed=tcfg.seed,
        rank=env.rank,
        domain_weights=shards.domain_targets,
    )

    import deepspeed

    quiet_deepspeed_logs()
    seed_everything(tcfg.seed)
    init_started = time.perf_counter()
    device = init_distributed(tcfg.device, env.local_rank)
    world_size = torch.distributed.get_world_size()
    model = PhariaLM(cfg.model).set_activation_checkpointing(tcfg.activation_checkpointing)
    counts = model.num_parameters()  # before ZeRO-3 partitions the parameters away
    engine, _, _, scheduler = deepspeed.initialize(
        model=model,
        model_parameters=optimizer_groups(model, tcfg.weight_decay),
        config=build_deepspeed_config(tcfg, world_size),
    )
    scheduler.step(SCHEDULE_FIRST_ITERATION)
    init_s = time.perf_counter() - init_started  # process group + engine (+ any op compile)

    metrics = None
    if is_main and tracking_uri and run_id:
        from pharia.registry.tracking import MetricLogger

        metrics = MetricLogger(tracking_uri, run_id)
    try:
        result = run_steps(engine, sampler, cfg, device, world_size, metrics, is_main)
    finally:
        if metrics is not None:
            metrics.flush()

    state = gather_fp32_state(engine, keep=is_main)
    summary: dict[str, Any] = {}
    if is_main:
        model_dir = save_pretrained(model_from_state(cfg.model, state), cfg.model, Path(out_dir) / MODEL_DIR)
        tokens = tcfg.max_steps * tcfg.micro_batch_size * tcfg.grad_accum_steps * world_size * cfg.data.seq_len
        summary = {
            "steps": tcfg.max_steps,
            "final_loss": result.history[-1][1],
            "first_loss": result.first_loss,
            "loss_history": result.history,
            "tokens_seen": tokens,
            "tokens_per_s": tokens / result.train_s,
            "steps_per_s": tcfg.max_steps / result.train_s,
            "wall_s": time.perf_counter() - started,
            "init_s": init_s,
            "train_s": result.train_s,
            "world_size": world_size,
            "zero_stage": tcfg.zero_stage,
            "precision": tcfg.precision,
            "device": tcfg.device,
            "micro_batch_size": tcfg.micro_batch_size,
            "grad_accum_steps": tcfg.grad_accum_steps,
            "seq_len": cfg.data.seq_len,
            "deepspeed_version": deepspeed.__version__,
            "torch_version": torch.__version__,
            "params_total": counts.total,
            "params_unique": counts.unique,
            "params_active": counts.active,
            "model_dir": str(model_dir),
            "config_hash": cfg.config_hash(),
            "mixture": sampler.mixture(),
        }
        atomic_write_json(Path(out_dir) / SUMMARY_FILE, summary)
    if device.type == "cuda":
        torch.distributed.barrier(device_ids=[device.index])
    else:
        torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    return summary
