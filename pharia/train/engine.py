"""The DeepSpeed process: distributed environment, process group, optimizer groups, and reading
full weights back out of a (possibly ZeRO-partitioned) engine.

The process must already carry the distributed environment (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT): torchrun sets it, and `pharia train` sets the single-process variant
itself, so the same entrypoint runs on a laptop, under torchrun and in a Kubernetes pod.
Communication is gloo on CPU and NCCL on CUDA, through DeepSpeed's backend.
"""

from __future__ import annotations

import datetime
import logging
import os
import random
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pharia.errors import TrainingError
from pharia.memory import peak_rss_bytes

# Ranks wait in a barrier while rank 0 alone evaluates or saves (minutes for large models); the
# default 30 minutes would turn a slow evaluation into a crashed job.
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=2)
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
        deepspeed.init_distributed(dist_backend="nccl", timeout=COLLECTIVE_TIMEOUT)
        return torch.device("cuda", local_rank)
    if os.environ.get("PHARIA_DS_SHM_COMM", "0") != "1":
        skip_unused_shm_comm_op()
    deepspeed.init_distributed(dist_backend="gloo", timeout=COLLECTIVE_TIMEOUT)
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


PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 tensor-core peaks


def peak_flops(device: torch.device) -> float | None:
    """Peak dense bf16 FLOP/s of one known GPU, for MFU; None on CPUs and unknown cards."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in name), None)


def memory_stats(device: torch.device) -> dict[str, float]:
    """Memory of this rank for the run's metrics: peak resident set (CPU) and, on CUDA, the
    allocator's current and peak bytes - what an operator needs to size the next run."""
    stats = {"mem_peak_rss_mb": peak_rss_bytes() / 2**20}
    if device.type == "cuda":
        stats["mem_gpu_allocated_mb"] = torch.cuda.memory_allocated(device) / 2**20
        stats["mem_gpu_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return stats
