"""TrainConfig -> DeepSpeed config dict (DeepSpeed 0.19.8 keys), the same on CPU and on GPUs.

Pure function of the config and the world size, so the Kubernetes launcher of a later issue can
write the identical JSON next to a job, and tests can check it without starting DeepSpeed.
"""

from __future__ import annotations

from typing import Any

from pharia.config import TrainConfig

# We log ourselves (rank 0, batched to MLflow); DeepSpeed's own periodic print would only add noise.
DS_STEPS_PER_PRINT = 2**31 - 1
ADAM_EPS = 1e-8


# DeepSpeed's WarmupCosineLR leaves the learning rate at 0 until its first `step()`, which would
# waste the first optimizer step. The trainer therefore steps the fresh scheduler to this iteration
# before training: optimizer step s (0-based) then runs at scheduler iteration s + 1.
SCHEDULE_FIRST_ITERATION = 1


def warmup_schedule(train: TrainConfig) -> dict[str, Any]:
    """WarmupCosineLR params: linear warmup, then cosine decay to lr · min_lr_ratio.

    With the scheduler started at iteration 1 (SCHEDULE_FIRST_ITERATION), optimizer step s runs at
    lr · (s + 1) / W for s < W - 1, then follows the cosine from just under lr down to lr · min_lr_ratio,
    which the last step (s = max_steps - 1) runs at. WarmupCosineLR needs W >= 1 (internally at least
    2), so `warmup_steps: 0` becomes a warmup whose start ratio is already 1.
    """
    return {
        "total_num_steps": train.max_steps,
        "warmup_num_steps": max(1, train.warmup_steps),
        "warmup_min_ratio": 1.0 if train.warmup_steps == 0 else 0.0,
        "warmup_type": "linear",
        "cos_min_ratio": train.min_lr_ratio,
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


def build_deepspeed_config(train: TrainConfig, world_size: int) -> dict[str, Any]:
    """The `config=` argument of `deepspeed.initialize` for `world_size` data-parallel ranks.

    The optimizer is torch's AdamW (`torch_adam: true`), so DeepSpeed never compiles FusedAdam or
    CPUAdam; parameter groups (weight decay on matrices only) are passed to `deepspeed.initialize`
    and override the default weight decay given here.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    zero: dict[str, Any] = {"stage": train.zero_stage}
    if train.zero_stage >= 2:
        zero.update({"overlap_comm": False, "contiguous_gradients": True})
    return {
        "train_batch_size": train.micro_batch_size * train.grad_accum_steps * world_size,
        "train_micro_batch_size_per_gpu": train.micro_batch_size,
        "gradient_accumulation_steps": train.grad_accum_steps,
        "gradient_clipping": train.grad_clip,
        "zero_optimization": zero,
        **precision_sections(train.precision),
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": train.lr,
                "betas": list(train.betas),
                "eps": ADAM_EPS,
                "weight_decay": train.weight_decay,
                "torch_adam": True,
            },
        },
        "scheduler": {"type": "WarmupCosineLR", "params": warmup_schedule(train)},
        "steps_per_print": DS_STEPS_PER_PRINT,
        "wall_clock_breakdown": False,
    }
