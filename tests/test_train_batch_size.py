"""Batch planning: configured and derived accumulation, the CPU memory estimate (checked against the
peak RSS of real forward+backward passes), the GPU path through an injected probe, OOM fallback."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys

import pytest
import torch

from pharia.config import ModelConfig, TrainConfig, load_config
from pharia.errors import TrainingError
from pharia.train.batch_size import (
    GIB,
    PROBE_OOM,
    BatchPlan,
    ModelShape,
    activation_bytes_per_window,
    plan_batches,
    smaller_plan,
    static_bytes,
)

MIB = 2**20
CPU = torch.device("cpu")
CUDA = torch.device("cuda")  # constructing it needs no GPU; the planner only reads device.type
SMALL = ModelConfig(vocab_size=2048, d_model=128, n_layers=4, n_heads=4, max_seq_len=128)


def plan(train: TrainConfig, world_size: int = 1, seq_len: int = 128, **kwargs: object) -> BatchPlan:
    return plan_batches(train, SMALL, seq_len, world_size, **{"device": CPU, **kwargs})  # type: ignore[arg-type]


def assert_consistent(p: BatchPlan) -> None:
    assert p.global_windows == p.micro_batch_size * p.grad_accum_steps * p.world_size
    assert p.global_tokens == p.global_windows * p.seq_len


# ------------------------------------------------------------------------------ arithmetic
def test_configured_micro_batch_keeps_the_configured_accumulation() -> None:
    p = plan(TrainConfig(micro_batch_size=8, grad_accum_steps=3), world_size=2)
    assert (p.micro_batch_size, p.grad_accum_steps, p.global_windows, p.global_tokens) == (8, 3, 48, 6144)
    assert p.requested_tokens is None and "configured" in p.reason
    assert p.memory["static_bytes"] > 0 and p.memory["activation_bytes_per_window"] > 0
    assert_consistent(p)


@pytest.mark.parametrize(
    ("micro", "tokens", "world", "expected"),
    [
        # G = ceil(100000/128) = 782; accum = ceil(782/(12*2)) = 33; micro = ceil(782/(33*2)) = 12
        (12, 100_000, 2, (12, 33, 792, 101_376)),
        # G = 64; accum = ceil(64/12) = 6; micro = ceil(64/6) = 11: 66 windows, not 72
        (12, 8192, 1, (11, 6, 66, 8448)),
        # exact: G = 64 = 8 * 4 * 2
        (8, 8192, 2, (8, 4, 64, 8192)),
        # fewer windows than ranks: one window per rank is the least a step can do
        (8, 128, 4, (1, 1, 4, 512)),
        # micro batch already larger than needed: no accumulation, smaller micro batch
        (64, 1000, 1, (8, 1, 8, 1024)),
    ],
)
def test_global_batch_tokens_derives_accumulation(
    micro: int, tokens: int, world: int, expected: tuple[int, int, int, int]
) -> None:
    p = plan(TrainConfig(micro_batch_size=micro, global_batch_tokens=tokens), world_size=world)
    assert (p.micro_batch_size, p.grad_accum_steps, p.global_windows, p.global_tokens) == expected
    assert p.requested_tokens == tokens and p.global_tokens >= tokens
    assert str(tokens) in p.reason and str(expected[3]) in p.reason
    assert_consistent(p)


def test_auto_micro_batch_is_the_upper_bound_of_the_derived_plan() -> None:
    per = plan(TrainConfig()).memory
    budget = (per["static_bytes"] + 10.5 * per["activation_bytes_per_window"]) / GIB
    auto = plan(TrainConfig(micro_batch_size="auto", memory_budget_gb=budget, global_batch_tokens=128 * 64))
    # bound 10: accum = ceil(64/10) = 7, micro = ceil(64/7) = 10 -> 70 windows
    assert (auto.micro_batch_size, auto.grad_accum_steps, auto.global_windows) == (10, 7, 70)
    assert "memory estimate" in auto.reason and "global_batch_tokens 8192" in auto.reason


# ---------------------------------------------------------------------------- CPU estimate
def test_static_memory_follows_zero_stage_precision_and_offload() -> None:
    shape = ModelShape.of(SMALL)
    p, n = shape.params, 4

    def state(**train: object) -> dict[str, float]:
        return static_bytes(TrainConfig(**train), shape, n, on_gpu=False, zero_buckets={})

    assert state(zero_stage=0)["static_bytes"] == 16 * p  # fp32 weights, grads, Adam moments, no master copy
    assert state(zero_stage=0, precision="bf16")["static_bytes"] == 2 * p + 2 * p + 12 * p
    assert state(zero_stage=1)["static_bytes"] == 4 * p + 4 * p + 12 * p / n  # ZeRO clones an fp32 master
    assert state(zero_stage=2)["static_bytes"] == 4 * p + 4 * p / n + 12 * p / n
    assert state(zero_stage=3)["static_bytes"] == 4 * p / n + 4 * p / n + 12 * p / n + 4 * shape.largest_gathered
    offloaded = static_bytes(TrainConfig(zero_stage=2, offload_optimizer=True), shape, n, on_gpu=True, zero_buckets={})
    assert offloaded["optimizer_bytes"] == 0 and offloaded["static_bytes"] == 4 * p + 4 * p / n
    on_cpu = static_bytes(TrainConfig(zero_stage=2, offload_optimizer=True), shape, n, on_gpu=False, zero_buckets={})
    assert on_cpu == state(zero_stage=2)  # offloading to the memory it is already in changes nothing


def test_activation_estimate_shrinks_with_checkpointing_and_16_bit() -> None:
    fp32 = activation_bytes_per_window(SMALL, 128, "fp32", checkpointing=False)
    assert activation_bytes_per_window(SMALL, 128, "fp32", checkpointing=True) < 0.8 * fp32
    assert activation_bytes_per_window(SMALL, 128, "bf16", checkpointing=False) < fp32
    assert activation_bytes_per_window(SMALL, 256, "fp32", checkpointing=False) == pytest.approx(2 * fp32)


def test_auto_cpu_fills_the_budget_exactly() -> None:
    per = plan(TrainConfig()).memory
    budget = (per["static_bytes"] + 5.5 * per["activation_bytes_per_window"]) / GIB
    p = plan(TrainConfig(micro_batch_size="auto", memory_budget_gb=budget, grad_accum_steps=2))
    assert (p.micro_batch_size, p.grad_accum_steps) == (5, 2)
    assert p.memory["budget_bytes"] == pytest.approx(budget * GIB)
    assert "fits 5 windows" in p.reason and "train.memory_budget_gb" in p.reason


def test_auto_cpu_small_budget_picks_a_smaller_micro_batch() -> None:
    small = plan(TrainConfig(micro_batch_size="auto", memory_budget_gb=0.25))
    large = plan(TrainConfig(micro_batch_size="auto", memory_budget_gb=4.0, max_micro_batch_size=1000))
    assert 1 <= small.micro_batch_size < large.micro_batch_size
    capped = plan(TrainConfig(micro_batch_size="auto", memory_budget_gb=4.0, max_micro_batch_size=7))
    assert capped.micro_batch_size == 7 and "capped at max_micro_batch_size 7" in capped.reason


def test_auto_cpu_default_budget_is_a_share_of_available_memory() -> None:
    one = plan(TrainConfig(micro_batch_size="auto"))
    four = plan(TrainConfig(micro_batch_size="auto"), world_size=4)
    assert "MemAvailable" in one.reason
    # both read MemAvailable at slightly different moments; a quarter each, within 10% drift
    assert four.memory["budget_bytes"] == pytest.approx(one.memory["budget_bytes"] / 4, rel=0.1)


def test_impossible_budget_names_the_numbers_and_the_remedies() -> None:
    with pytest.raises(TrainingError) as error:
        plan(TrainConfig(micro_batch_size="auto", memory_budget_gb=0.02, zero_stage=1))
    message = str(error.value)
    assert "budget 20.5 MiB per rank" in message and "ZeRO-1" in message
    assert "one window needs 11.3 MiB" in message
    assert "train.zero_stage" in message and "activation_checkpointing" in message
    assert "memory_budget_gb" in message


def test_offload_without_zero_is_refused() -> None:
    with pytest.raises(TrainingError, match="zero_stage to 1, 2 or 3"):
        plan(TrainConfig(zero_stage=0, offload_optimizer=True))


# --------------------------------------------------------------------------- estimate vs RSS
PEAK_RSS = """
import json, sys
import torch
torch.set_num_threads(1)
from pharia.config import ModelConfig
from pharia.model.model import PhariaLM
cfg, micro, seq, precision, ckpt = json.loads(sys.argv[1])
cfg = ModelConfig(**cfg)
torch.manual_seed(0)
model = PhariaLM(cfg).to({"fp32": torch.float32, "bf16": torch.bfloat16}[precision])
model.set_activation_checkpointing(ckpt).train()
def step(batch):
    tokens = torch.randint(0, cfg.vocab_size, (batch, seq + 1))
    out = model(tokens[:, :-1], tokens[:, 1:])
    out.loss.backward()
step(1)  # gradients, thread pools and lazy tables exist before the measured step
model.zero_grad(set_to_none=False)
step(micro)
# VmHWM is this address space's peak; ru_maxrss would also count the parent's size at fork (Linux keeps
# the larger across exec), which hides the step when the caller is a big pytest process
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps(int(hwm.split()[1]) * 1024))
"""


def peak_rss(model: ModelConfig, micro: int, seq_len: int, precision: str, checkpointing: bool) -> int:
    """Peak RSS (bytes) of a fresh process running one forward+backward at `micro` windows."""
    args = json.dumps([model.model_dump(), micro, seq_len, precision, checkpointing])
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, args], capture_output=True, text=True, check=True)
    return int(done.stdout.strip().splitlines()[-1])


TINY = load_config("tiny")
LAYER_HEAVY = ModelConfig(vocab_size=256, d_model=256, n_layers=6, n_heads=4, max_seq_len=128)


@pytest.mark.parametrize(
    ("model", "precision", "checkpointing"),
    [
        (TINY.model, "fp32", False),
        (TINY.model, "fp32", True),
        (TINY.model, "bf16", False),
        (LAYER_HEAVY, "fp32", False),  # the layers, not the logits, dominate
    ],
    ids=["tiny-fp32", "tiny-fp32-checkpointing", "tiny-bf16", "layer-heavy-fp32"],
)
def test_activation_estimate_matches_measured_peak_rss(model: ModelConfig, precision: str, checkpointing: bool) -> None:
    """The planned per-window bytes against the measured per-window growth of peak RSS between the
    planned micro batch and 4x it. On the development machine (glibc malloc, 1 thread) estimate /
    measured was 0.94, 1.10, 1.14 and 0.81 for these cases. With MALLOC_MMAP_THRESHOLD_ fixed (freed
    blocks go straight back to the kernel) the measured growth matches the saved-tensor count closely;
    with glibc's default dynamic threshold, freed activation blocks stay in its heap, which is why
    the layer-heavy shape measures more than the estimate (0.58 with checkpointing, not asserted)."""
    seq_len = TINY.data.seq_len
    train = TrainConfig(
        micro_batch_size="auto",
        memory_budget_gb=8.0,
        max_micro_batch_size=8,
        precision=precision,  # type: ignore[arg-type]
        activation_checkpointing=checkpointing,
    )
    planned = plan_batches(train, model, seq_len, 1, device=CPU)
    small, big = planned.micro_batch_size, 4 * planned.micro_batch_size
    assert small == 8
    low = peak_rss(model, small, seq_len, precision, checkpointing)
    high = peak_rss(model, big, seq_len, precision, checkpointing)
    growth = (high - low) / (big - small)
    estimate = planned.memory["activation_bytes_per_window"]
    ratio = estimate / growth
    print(f"estimate {estimate / MIB:.2f} MiB/window, measured {growth / MIB:.2f} MiB/window, ratio {ratio:.2f}")
    assert 0.5 <= ratio <= 3.0


# ------------------------------------------------------------------------------- GPU probes
class LinearProbe:
    """The injected measurement: peak = intercept + per_window · micro, out of memory above `oom_above`."""

    def __init__(self, intercept: float, per_window: float, oom_above: int | None = None) -> None:
        self.intercept, self.per_window, self.oom_above = intercept, per_window, oom_above
        self.calls: list[int] = []

    def __call__(self, micro: int) -> int:
        self.calls.append(micro)
        if self.oom_above is not None and micro > self.oom_above:
            return PROBE_OOM
        return int(self.intercept + self.per_window * micro)


def gpu_train(**train: object) -> TrainConfig:
    return TrainConfig(**{"micro_batch_size": "auto", "memory_budget_gb": 8.0, "max_micro_batch_size": 1000, **train})


def test_gpu_extrapolates_the_probes_to_the_budget_and_verifies_once() -> None:
    probe = LinearProbe(300 * MIB, 100 * MIB)
    p = plan_batches(gpu_train(), SMALL, 128, 1, device=CUDA, probe=probe)
    room = 8 * GIB - p.memory["static_bytes"]
    expected = math.floor((room - 300 * MIB) / (100 * MIB))
    assert p.micro_batch_size == expected and probe.calls == [1, 2, expected]
    assert p.memory["probe_bytes_per_window"] == 100 * MIB and p.memory["probe_intercept_bytes"] == 300 * MIB
    assert "measured" in p.reason and f"at {expected}" in p.reason


def test_gpu_out_of_memory_above_a_size_lands_on_the_largest_fitting_size() -> None:
    probe = LinearProbe(300 * MIB, 100 * MIB, oom_above=20)
    p = plan_batches(gpu_train(), SMALL, 128, 1, device=CUDA, probe=probe)
    extrapolated = math.floor((8 * GIB - p.memory["static_bytes"] - 300 * MIB) / (100 * MIB))
    assert p.micro_batch_size == 20
    assert probe.calls[:3] == [1, 2, extrapolated] and len(probe.calls) <= 3 + math.ceil(math.log2(extrapolated))
    assert probe.calls[3] == (2 + extrapolated) // 2  # the first step down halves
    assert "did not fit" in p.reason


def test_gpu_offload_frees_the_optimizer_states_for_activations() -> None:
    budget = {"zero_stage": 1, "memory_budget_gb": 0.1}  # 102.4 MiB; model state 24.1 MiB, 12.0 offloaded
    kept = plan_batches(gpu_train(**budget), SMALL, 128, 1, device=CUDA, probe=LinearProbe(0, 2 * MIB))
    offloaded = plan_batches(
        gpu_train(**budget, offload_optimizer=True), SMALL, 128, 1, device=CUDA, probe=LinearProbe(0, 2 * MIB)
    )
    assert offloaded.memory["optimizer_bytes"] == 0 < kept.memory["optimizer_bytes"]
    assert (kept.micro_batch_size, offloaded.micro_batch_size) == (39, 45)


def test_gpu_cap_and_global_tokens_apply_to_the_measured_size() -> None:
    probe = LinearProbe(300 * MIB, 100 * MIB)
    train = gpu_train(max_micro_batch_size=16, global_batch_tokens=128 * 100)
    p = plan_batches(train, SMALL, 128, 2, device=CUDA, probe=probe)
    assert probe.calls == [1, 2, 16] and "capped at max_micro_batch_size 16" in p.reason
    # G = 100, bound 16, 2 ranks: accum = ceil(100/32) = 4, micro = ceil(100/8) = 13
    assert (p.micro_batch_size, p.grad_accum_steps, p.global_windows) == (13, 4, 104)


def test_gpu_one_window_out_of_memory_raises() -> None:
    with pytest.raises(TrainingError, match="probe at micro batch 1 ran out of memory"):
        plan_batches(gpu_train(), SMALL, 128, 1, device=CUDA, probe=LinearProbe(0, MIB, oom_above=0))
    with pytest.raises(TrainingError, match=r"peaked at 9\.00 GiB"):
        plan_batches(gpu_train(), SMALL, 128, 1, device=CUDA, probe=LinearProbe(0, 9 * GIB))


def test_the_device_type_decides_between_probe_and_estimate() -> None:
    probe = LinearProbe(0, MIB)
    p = plan_batches(gpu_train(), SMALL, 128, 1, device=CPU, probe=probe)
    assert probe.calls == [] and "memory estimate" in p.reason


# ---------------------------------------------------------------------------- OOM fallback
@pytest.mark.parametrize(
    ("micro", "accum", "expected"),
    [(8, 3, (4, 6)), (6, 1, (3, 2)), (2, 5, (1, 10)), (5, 2, (2, 5)), (7, 1, (1, 7))],
)
def test_smaller_plan_keeps_the_global_batch(micro: int, accum: int, expected: tuple[int, int]) -> None:
    p = plan(TrainConfig(micro_batch_size=micro, grad_accum_steps=accum), world_size=2)
    smaller = smaller_plan(p)
    assert smaller is not None
    assert (smaller.micro_batch_size, smaller.grad_accum_steps) == expected
    assert (smaller.global_windows, smaller.global_tokens) == (p.global_windows, p.global_tokens)
    assert smaller.micro_batch_size <= micro // 2 and "out-of-memory" in smaller.reason
    assert_consistent(smaller)


def test_smaller_plan_ends_at_one_window() -> None:
    current: BatchPlan | None = plan(TrainConfig(micro_batch_size=16, grad_accum_steps=1))
    sizes = []
    while current is not None:
        sizes.append(current.micro_batch_size)
        current = smaller_plan(current)
    assert sizes == [16, 8, 4, 2, 1]


# ----------------------------------------------------------------------------- rank agreement
AGREE = """
import json, os, sys
import torch
import torch.distributed as dist
from pharia.config import ModelConfig, TrainConfig
from pharia.errors import TrainingError
from pharia.train.batch_size import plan_batches
rank, port = int(sys.argv[1]), sys.argv[2]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
model = ModelConfig(vocab_size=2048, d_model=128, n_layers=4, n_heads=4, max_seq_len=128)
cpu = torch.device("cpu")
out = {}
budget = 0.25 if rank == 0 else 1.0  # ranks see different memory
plan = plan_batches(TrainConfig(micro_batch_size="auto", memory_budget_gb=budget), model, 128, 2, device=cpu)
out["micro"], out["reason"] = plan.micro_batch_size, plan.reason
try:
    impossible = 0.01 if rank == 1 else 1.0  # one rank cannot fit a window: the other must not hang
    plan_batches(TrainConfig(micro_batch_size="auto", memory_budget_gb=impossible), model, 128, 2, device=cpu)
    out["error"] = None
except TrainingError as error:
    out["error"] = str(error)
print(json.dumps(out))
"""


def test_ranks_agree_on_the_smallest_micro_batch() -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = str(free.getsockname()[1])
    ranks = [
        subprocess.Popen([sys.executable, "-c", AGREE, str(rank), port], stdout=subprocess.PIPE, text=True)
        for rank in (0, 1)
    ]
    outputs = [json.loads(rank.communicate(timeout=300)[0].strip().splitlines()[-1]) for rank in ranks]
    alone = plan(TrainConfig(micro_batch_size="auto", memory_budget_gb=0.25), world_size=2).micro_batch_size
    assert outputs[0]["micro"] == outputs[1]["micro"] == alone
    assert f"lowered to {alone}, the smallest over the 2 ranks" in outputs[1]["reason"]
    assert "not one window" in outputs[1]["error"] and "another rank" in outputs[0]["error"]


# ------------------------------------------------------------------------- the real CUDA probe
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_probe_measures_activation_growth_and_reports_out_of_memory() -> None:
    from pharia.model.model import PhariaLM
    from pharia.train.batch_size import cuda_probe

    device = torch.device("cuda", torch.cuda.current_device())
    model = PhariaLM(SMALL)  # stays on the CPU: the probe builds its own twin on the device
    probe = cuda_probe(model, 128, SMALL.vocab_size, device, precision="bf16")
    one, two, eight = probe(1), probe(2), probe(8)
    assert 0 < one < two < eight
    estimate = activation_bytes_per_window(SMALL, 128, "bf16", checkpointing=False)
    assert 0.3 <= estimate / ((eight - two) / 6) <= 3.0
    assert probe(10**7) == PROBE_OOM  # ~10^7 windows of logits cannot fit any device
    assert next(model.parameters()).device.type == "cpu"
    assert torch.cuda.memory_allocated(device) < 64 * MIB  # the twin is gone
