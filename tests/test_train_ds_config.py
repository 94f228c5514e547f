"""The DeepSpeed config built from a batch plan and a stage's schedule: batch sizes, ZeRO sections,
optimizer offload, precisions - and a real DeepSpeed engine stepping with the offload config."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pharia.config import ModelConfig, TrainConfig
from pharia.errors import TrainingError
from pharia.train.batch_size import BatchPlan, plan_batches
from pharia.train.deepspeed_config import MIN_BUCKET_ELEMENTS, build_deepspeed_config

REPO = Path(__file__).resolve().parent.parent
SMALL = ModelConfig(vocab_size=512, d_model=32, n_layers=2, n_heads=2, max_seq_len=32)
LARGE = ModelConfig(vocab_size=4096, d_model=4096, n_layers=2, n_heads=32, max_seq_len=128)  # counted on meta
SCHEDULE = {"lr": 3e-4, "warmup_steps": 10, "min_lr_ratio": 0.2, "total_steps": 500}


def plan_for(train: TrainConfig, model: ModelConfig = SMALL, world_size: int = 1) -> BatchPlan:
    return plan_batches(train, model, 32, world_size, device=torch.device("cpu"))


def ds_config(train: TrainConfig, model: ModelConfig = SMALL, world_size: int = 1) -> dict:
    return build_deepspeed_config(train, plan_for(train, model, world_size), **SCHEDULE)


def test_batch_sizes_come_from_the_plan_and_the_schedule_from_the_stage() -> None:
    train = TrainConfig(zero_stage=3, precision="bf16", micro_batch_size=4, global_batch_tokens=32 * 4 * 8 * 64, lr=1.0)
    plan = plan_for(train, world_size=64)
    ds = build_deepspeed_config(train, plan, **SCHEDULE)
    assert (plan.micro_batch_size, plan.grad_accum_steps) == (4, 8)
    assert ds["train_batch_size"] == 4 * 8 * 64 == plan.global_windows
    assert ds["train_micro_batch_size_per_gpu"] == 4 and ds["gradient_accumulation_steps"] == 8
    params = ds["optimizer"]["params"]
    assert params["lr"] == 3e-4 and params["torch_adam"] is True and params["betas"] == [0.9, 0.95]
    assert ds["scheduler"]["params"] == {
        "total_num_steps": 500,
        "warmup_num_steps": 10,
        "warmup_min_ratio": 0.0,
        "warmup_type": "linear",
        "cos_min_ratio": 0.2,
    }
    json.dumps(ds)  # the same dict is written as JSON for cluster jobs


def test_zero_sections_per_stage_with_buckets_from_d_model() -> None:
    stage0 = ds_config(TrainConfig(zero_stage=0))["zero_optimization"]
    assert stage0 == {"stage": 0}
    stage1 = ds_config(TrainConfig(zero_stage=1))["zero_optimization"]
    assert stage1 == {"stage": 1, "reduce_bucket_size": MIN_BUCKET_ELEMENTS}  # 32² is below the floor
    stage2 = ds_config(TrainConfig(zero_stage=2), LARGE)["zero_optimization"]
    assert stage2 == {
        "stage": 2,
        "overlap_comm": False,
        "contiguous_gradients": True,
        "reduce_bucket_size": 4096 * 4096,
    }
    stage3 = ds_config(TrainConfig(zero_stage=3), LARGE)["zero_optimization"]
    assert stage3["reduce_bucket_size"] == 4096 * 4096
    assert stage3["stage3_prefetch_bucket_size"] == int(0.9 * 4096 * 4096)
    assert stage3["stage3_param_persistence_threshold"] == 40960
    assert "stage3_max_live_parameters" not in stage3  # DeepSpeed's default, see zero_bucket_sizes


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_offload_moves_the_optimizer_to_cpu(stage: int) -> None:
    zero = ds_config(TrainConfig(zero_stage=stage, offload_optimizer=True))["zero_optimization"]
    assert zero["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    assert "offload_optimizer" not in ds_config(TrainConfig(zero_stage=stage))["zero_optimization"]


def test_offload_without_zero_is_an_error() -> None:
    train = TrainConfig(zero_stage=0, offload_optimizer=True)
    plan = plan_for(TrainConfig(zero_stage=0))
    with pytest.raises(TrainingError, match="offload_optimizer needs ZeRO"):
        build_deepspeed_config(train, plan, **SCHEDULE)


def test_precision_sections() -> None:
    fp16 = ds_config(TrainConfig(precision="fp16"))
    assert fp16["fp16"]["enabled"] is True and fp16["fp16"]["loss_scale"] == 0  # dynamic loss scaling
    assert fp16["bf16"]["enabled"] is False
    bf16 = ds_config(TrainConfig(precision="bf16"))
    assert bf16["bf16"] == {"enabled": True} and bf16["fp16"]["enabled"] is False
    fp32 = ds_config(TrainConfig(precision="fp32"))
    assert not fp32["fp16"]["enabled"] and not fp32["bf16"]["enabled"]


def test_warmup_zero_starts_at_full_rate_and_bad_schedules_are_rejected() -> None:
    train = TrainConfig()
    plan = plan_for(train)
    params = build_deepspeed_config(train, plan, **{**SCHEDULE, "warmup_steps": 0})["scheduler"]["params"]
    assert params["warmup_num_steps"] == 1 and params["warmup_min_ratio"] == 1.0
    with pytest.raises(ValueError, match="total_steps"):
        build_deepspeed_config(train, plan, **{**SCHEDULE, "total_steps": 0})
    with pytest.raises(ValueError, match="lr"):
        build_deepspeed_config(train, plan, **{**SCHEDULE, "lr": 0.0})


ENGINE = """
import json, os, sys
os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1])
import torch
torch.set_num_threads(1)
import deepspeed
from pharia.config import ModelConfig, TrainConfig
from pharia.model.model import PhariaLM
from pharia.train.batch_size import plan_batches
from pharia.train.deepspeed_config import SCHEDULE_FIRST_ITERATION, build_deepspeed_config
from pharia.train.loop import init_distributed, optimizer_groups, quiet_deepspeed_logs

quiet_deepspeed_logs()
device = init_distributed("cpu", 0)
cfg = ModelConfig(vocab_size=512, d_model=32, n_layers=2, n_heads=2, max_seq_len=32)
tokens = torch.randint(0, 512, (4, 33), generator=torch.Generator().manual_seed(0))
results = []
for stage in (1, 2, 3):  # ZeRO-3 last: it replaces torch.nn.functional.linear process-wide
    train = TrainConfig(zero_stage=stage, offload_optimizer=True, micro_batch_size=4, lr=1e-2)
    plan = plan_batches(train, cfg, 32, 1, device=device)
    config = build_deepspeed_config(train, plan, lr=1e-2, warmup_steps=0, min_lr_ratio=0.1, total_steps=10)
    torch.manual_seed(0)
    model = PhariaLM(cfg)
    engine, _, _, scheduler = deepspeed.initialize(
        model=model, model_parameters=optimizer_groups(model, 0.1), config=config
    )
    scheduler.step(SCHEDULE_FIRST_ITERATION)
    losses = []
    for _ in range(4):
        loss = engine(tokens[:, :-1], tokens[:, 1:]).loss
        engine.backward(loss)
        engine.step()
        losses.append(float(loss.detach()))
    results.append({
        "stage": stage,
        "offload": engine.zero_cpu_offload(),
        "basic_optimizer": type(engine.basic_optimizer).__module__ + "." + type(engine.basic_optimizer).__name__,
        "losses": losses,
    })
print(json.dumps(results))
"""


def test_deepspeed_steps_with_optimizer_offload_and_torch_adam(tmp_path: Path) -> None:
    """DeepSpeed 0.19.8 accepts the offload config with torch's AdamW (no CPUAdam compile) and trains."""
    env = {
        **os.environ,
        "DS_ACCELERATOR": "cpu",
        "PYTHONPATH": str(REPO),
        "TORCH_EXTENSIONS_DIR": str(tmp_path / "torch_extensions"),  # a compile would land here
    }
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = str(free.getsockname()[1])
    done = subprocess.run(
        [sys.executable, "-c", ENGINE, port], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert [r["stage"] for r in results] == [1, 2, 3]
    for result in results:
        assert result["offload"] is True
        assert result["basic_optimizer"] == "torch.optim.adamw.AdamW"
        assert result["losses"][-1] < result["losses"][0] - 0.1, result
    assert not (tmp_path / "torch_extensions").exists() or not any((tmp_path / "torch_extensions").iterdir())
