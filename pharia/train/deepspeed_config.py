"""TrainConfig + BatchPlan + a stage's schedule -> DeepSpeed config dict (DeepSpeed 0.19.8 keys).

Pure function of its arguments, the same on CPU and on GPUs, so the Kubernetes launcher can write
the identical JSON next to a job, and tests can check it without starting DeepSpeed. The batch
sizes come from `pharia.train.batch_size.plan_batches` (memory-driven micro batch, accumulation to
a global batch in tokens), the learning-rate schedule from the stage being trained.

Activation checkpointing is not configured here: the model applies it itself
(`PhariaLM.set_activation_checkpointing`, torch.utils.checkpoint per block). DeepSpeed's own
`activation_checkpointing` section only affects its `deepspeed.checkpointing` API (Megatron-style
models), which PhariaLM does not call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pharia.config import TrainConfig
from pharia.errors import TrainingError

if TYPE_CHECKING:  # batch_size imports this module for the bucket sizes its estimate assumes
    from pharia.train.batch_size import BatchPlan

# We log ourselves (rank 0, batched to MLflow); DeepSpeed's own periodic print would only add noise.
DS_STEPS_PER_PRINT = 2**31 - 1
ADAM_EPS = 1e-8

# DeepSpeed's WarmupCosineLR leaves the learning rate at 0 until its first `step()`, which would
# waste the first optimizer step. The trainer therefore steps the fresh scheduler to this iteration
# before training: optimizer step s (0-based) then runs at scheduler iteration s + 1.
SCHEDULE_FIRST_ITERATION = 1

# Smallest gradient-reduction / prefetch bucket, in elements (4 MiB of fp32). Below this a bucket
# costs more in per-collective latency than it saves in memory; tiny models then use one bucket.
MIN_BUCKET_ELEMENTS = 2**20


def warmup_schedule(total_steps: int, warmup_steps: int, min_lr_ratio: float) -> dict[str, Any]:
    """WarmupCosineLR params: linear warmup, then cosine decay to lr · min_lr_ratio.

    With the scheduler started at iteration 1 (SCHEDULE_FIRST_ITERATION), optimizer step s runs at
    lr · (s + 1) / W for s < W - 1, then follows the cosine from just under lr down to lr · min_lr_ratio,
    which the last step (s = total_steps - 1) runs at. WarmupCosineLR needs W >= 1 (internally at
    least 2), so `warmup_steps: 0` becomes a warmup whose start ratio is already 1.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    return {
        "total_num_steps": total_steps,
        "warmup_num_steps": max(1, warmup_steps),
        "warmup_min_ratio": 1.0 if warmup_steps == 0 else 0.0,
        "warmup_type": "linear",
        "cos_min_ratio": min_lr_ratio,
    }


def precision_sections(precision: str) -> dict[str, Any]:
    """bf16 needs no loss scaling; fp16 uses dynamic loss scaling (loss_scale 0 = dynamic)."""
    return {
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {
            "enabled": precision == "fp16",
            "loss_scale": 0,
            "initial_scale_power": 16,
            "loss_scale_window": 1000,
            "hysteresis": 2,
            "min_loss_scale": 1,
        },
    }


def check_offload(train: TrainConfig) -> None:
    """Optimizer offload moves ZeRO's optimizer partitions to host memory; without ZeRO (stage 0)
    there are no partitions and DeepSpeed has no offload path, so refuse instead of ignoring it."""
    if train.offload_optimizer and train.zero_stage == 0:
        raise TrainingError(
            "train.offload_optimizer needs ZeRO: set train.zero_stage to 1, 2 or 3 (stage 0 keeps the "
            "optimizer states with the model and cannot offload them)"
        )


def zero_bucket_sizes(d_model: int, zero_stage: int) -> dict[str, int]:
    """Bucket sizes (elements) derived from d_model, as Hugging Face's DeepSpeed integration does for "auto".

    - `reduce_bucket_size` (ZeRO 1-3): gradients are reduced in buckets of this many elements, and
      ZeRO allocates the bucket as a buffer every micro step. DeepSpeed's default of 5e8 elements is
      a 1-2 GB buffer whatever the model size; d_model² (one square weight matrix, 32 MiB of bf16 at
      d_model 4096) keeps collectives large enough to run at bandwidth.
    - `stage3_prefetch_bucket_size`: elements of upcoming parameters ZeRO-3 all-gathers ahead of
      use, so gathering overlaps compute: about one matrix ahead (0.9·d_model²).
    - `stage3_param_persistence_threshold`: parameters with fewer elements stay whole on every rank
      instead of being partitioned and gathered each step; 10·d_model keeps the norm gains (d_model
      each) persistent and partitions every matrix.

    `stage3_max_live_parameters` keeps DeepSpeed's default (1e9 elements gathered at most, 2 GB of
    bf16): ZeRO-3 releases a module's gathered parameters after use, so the working set stays near
    one block plus the prefetch bucket far below that cap, which only matters for giant layers.
    """
    if zero_stage == 0:
        return {}
    square = d_model * d_model
    sizes = {"reduce_bucket_size": max(square, MIN_BUCKET_ELEMENTS)}
    if zero_stage == 3:
        sizes["stage3_prefetch_bucket_size"] = max(int(0.9 * square), MIN_BUCKET_ELEMENTS)
        sizes["stage3_param_persistence_threshold"] = 10 * d_model
    return sizes


def zero_section(train: TrainConfig, plan: BatchPlan) -> dict[str, Any]:
    """`zero_optimization`: the stage, the bucket sizes the plan's memory estimate assumed, and the
    optimizer offload (ZeRO 1-3 only, see `check_offload`)."""
    check_offload(train)
    zero: dict[str, Any] = {"stage": train.zero_stage}
    if train.zero_stage >= 2:
        zero.update({"overlap_comm": False, "contiguous_gradients": True})
    if train.zero_stage >= 1:
        zero.update(plan.zero_buckets)
    if train.offload_optimizer:
        # pin_memory: page-locked host buffers for faster device<->host copies on CUDA; a no-op on CPU.
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    return zero


def build_deepspeed_config(
    train: TrainConfig,
    plan: BatchPlan,
    *,
    lr: float,
    warmup_steps: int,
    min_lr_ratio: float,
    total_steps: int,
) -> dict[str, Any]:
    """The `config=` argument of `deepspeed.initialize` for one stage on `plan.world_size` ranks.

    The optimizer is torch's AdamW (`torch_adam: true`), so DeepSpeed never compiles FusedAdam or
    CPUAdam; parameter groups (weight decay on matrices only) are passed to `deepspeed.initialize`
    and override the default weight decay given here.

    With `offload_optimizer` this still holds: DeepSpeed 0.19.8 (`DeepSpeedEngine.
    get_optimizer_configuration`) returns torch.optim.AdamW for `torch_adam` before it reaches the
    ZeRO-Offload branch that would build DeepSpeedCPUAdam (the compiled `cpu_adam` op, which needs
    a C++ toolchain at first start). The ZeRO optimizer then steps torch's AdamW on the fp32
    partitions in host memory: correct, slower per step than CPUAdam's vectorised kernel, and no
    compile. (`zero_force_ds_cpu_optimizer` only rejects client-built optimizer objects; we pass
    none.) DeepSpeed's fp16/bf16 master-weights options would need CPUAdam; we do not set them.
    """
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    return {
        "train_batch_size": plan.global_windows,
        "train_micro_batch_size_per_gpu": plan.micro_batch_size,
        "gradient_accumulation_steps": plan.grad_accum_steps,
        "gradient_clipping": train.grad_clip,
        "zero_optimization": zero_section(train, plan),
        **precision_sections(train.precision),
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": lr,
                "betas": list(train.betas),
                "eps": ADAM_EPS,
                "weight_decay": train.weight_decay,
                "torch_adam": True,
            },
        },
        "scheduler": {"type": "WarmupCosineLR", "params": warmup_schedule(total_steps, warmup_steps, min_lr_ratio)},
        "steps_per_print": DS_STEPS_PER_PRINT,
        "wall_clock_breakdown": False,
    }
