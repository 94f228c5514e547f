"""How many windows a rank runs per forward, and how many micro batches make one optimizer step.

`plan_batches` turns the `train` section into a `BatchPlan`:

- `micro_batch_size: auto` picks the largest micro batch that fits this rank's memory. On CPU it is
  estimated (model state from the parameter count, activations analytically, see
  `activation_bytes_per_window`); on CUDA it is measured by probing one forward+backward of the
  real model at micro batch 1 and 2, extrapolating the line to the budget and verifying the choice
  with one more probe (bisecting down on out-of-memory). Either way `max_micro_batch_size` caps it.
- `global_batch_tokens` fixes the tokens per optimizer step over all ranks; gradient accumulation
  is derived from it, so the optimisation does not change when memory (and so the micro batch) or
  the number of ranks does. Without it, `grad_accum_steps` applies as configured.

`smaller_plan` halves the micro batch of a plan and doubles its accumulation, for the trainer to
retry after a GPU out-of-memory without changing the global batch.

Memory budgets are in GiB (2**30 bytes), the binary units `free -g` and nvidia-smi use. An explicit
`memory_budget_gb` is the per-rank budget on either device (on CUDA it replaces the free-memory
measurement); the budget covers model state and activations, not the interpreter and libraries.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pharia.config import ModelConfig, TrainConfig
from pharia.errors import TrainingError
from pharia.model.flops import attention_context
from pharia.model.layers import default_d_ff
from pharia.train.deepspeed_config import check_offload, zero_bucket_sizes

if TYPE_CHECKING:
    from pharia.model.model import PhariaLM

GIB = 2**30
MIB = 2**20
CPU_BUDGET_FRACTION = 0.8  # of MemAvailable, shared by the ranks of this machine
PROBE_OOM = -1  # what a probe returns when the micro batch ran out of device memory
FP32 = 4
ADAM_STATE_BYTES = 8  # exp_avg + exp_avg_sq, fp32
MASTER_BYTES = 4  # fp32 master copy of the weights

Probe = Callable[[int], int]


@dataclass(frozen=True)
class BatchPlan:
    """Batch sizes of one training run, and why (see the module docstring)."""

    micro_batch_size: int  # windows per rank per forward
    grad_accum_steps: int
    world_size: int
    seq_len: int
    global_windows: int  # micro_batch_size * grad_accum_steps * world_size
    global_tokens: int  # global_windows * seq_len
    requested_tokens: int | None
    reason: str  # one sentence: what bounded the micro batch and how accumulation was derived
    memory: dict[str, float]  # the numbers behind it, bytes
    # ZeRO bucket sizes (elements) the static-memory estimate assumed; build_deepspeed_config writes
    # them into `zero_optimization`, so the estimate and the engine agree. Empty: DeepSpeed defaults.
    zero_buckets: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------------------------- estimates
def dtype_bytes(precision: str) -> int:
    """Bytes per element of weights, gradients and activations in the training precision."""
    return 2 if precision in ("bf16", "fp16") else FP32


@dataclass(frozen=True)
class ModelShape:
    """What memory depends on, counted on the meta device (no allocation, exact for any preset)."""

    params: int  # stored (unique) parameters
    largest_gathered: int  # elements ZeRO-3 gathers at once at most: the biggest block or the embedding

    @classmethod
    def of(cls, cfg: ModelConfig) -> ModelShape:
        from pharia.model.model import build_model

        model = build_model(cfg, device="meta")
        block = max(sum(p.numel() for p in b.parameters()) for b in model.blocks)
        return cls(params=model.num_parameters().unique, largest_gathered=max(block, model.tok_emb.weight.numel()))


def static_bytes(
    train: TrainConfig, shape: ModelShape, world_size: int, *, on_gpu: bool, zero_buckets: dict[str, int]
) -> dict[str, float]:
    """Model state per rank that does not grow with the micro batch, as DeepSpeed 0.19.8 allocates it.

    Weights and gradients are in the training precision; the optimizer holds Adam's two fp32 moments
    and an fp32 master copy of the weights (ZeRO 1-3 always clone one, see `stage_1_and_2.py` /
    `stage3.py`; without ZeRO only bf16/fp16 need it). ZeRO shards across `world_size` ranks:
    stage 1 the optimizer states, 2 also the gradients, 3 also the weights. `offload_optimizer`
    moves the optimizer states to host memory: on a GPU they leave the device budget, on a CPU they
    stay in the same memory. Buffers: ZeRO's gradient-reduction bucket (allocated each micro step,
    counted in fp32) and, for ZeRO-3, the gathered working set (largest block or embedding plus the
    prefetch bucket). Transients of the optimizer step itself (ZeRO 1/2's fp32 gradient partition)
    come after backward has freed the activations and are not counted.
    """
    width, stage, n, params = dtype_bytes(train.precision), train.zero_stage, world_size, shape.params
    weights = width * params / (n if stage >= 3 else 1)
    grads = width * params / (n if stage >= 2 else 1)
    master = MASTER_BYTES * params if (stage >= 1 or width < FP32) else 0
    optimizer = (ADAM_STATE_BYTES * params + master) / (n if stage >= 1 else 1)
    if train.offload_optimizer and on_gpu:
        optimizer = 0.0
    buffers = float(FP32 * zero_buckets.get("reduce_bucket_size", 0))
    if stage == 3:
        buffers += width * (shape.largest_gathered + zero_buckets.get("stage3_prefetch_bucket_size", 0))
    return {
        "weights_bytes": weights,
        "gradients_bytes": grads,
        "optimizer_bytes": optimizer,
        "buffers_bytes": buffers,
        "static_bytes": weights + grads + optimizer + buffers,
    }


def layer_bytes_per_token(model: ModelConfig, seq_len: int, precision: str) -> float:
    """Activation bytes one transformer layer keeps for backward, per token.

    The method of Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
    Models" (sec. 4.1): count every tensor autograd saves. For their GPT layer in 16-bit that is
    s·b·h·(34 + 5·a·s/h) bytes (s tokens, b windows, h = d_model, a heads). Pharia's layer differs,
    so the count is redone for it (w = bytes per element of the precision, f = d_ff):

    - two RMSNorms, each computing in fp32: the fp32 input (the layer input itself in fp32), the
      fp32 normalised value, the output in w: 2·(8h + w·h)
    - attention: the fused qkv output 3wh (the saved v is a view of it), the rotated q and k 2wh,
      SDPA's output wh; fused SDPA kernels (flash / memory-efficient, CPU and CUDA) keep only a
      log-sum-exp per head (4a bytes) instead of Korthikanti's 5·a·s score term. With dropout the
      math path keeps scores, mask and dropped probabilities: + a·s·(4 + 1 + w). The dynamic sparse
      mode's CPU reference keeps fp32 scores and probabilities over its context C (window plus
      selected blocks, `attention_context`) and gathered keys/values: + 8·a·C + 2·w·h·C/block.
    - SwiGLU: gate and up outputs, silu(gate), their product: 4·w·f; an MoE layer runs top_k
      experts per token and keeps the routed copy of its input and the gated output: top_k·(4wf + 2wh)
      plus fp32 router logits and probabilities (12 bytes per expert).
    - dropout (p > 0): one byte mask for the attention and MLP outputs: 2h.

    Checked against measured peak RSS in tests/test_train_batch_size.py.
    """
    w, h, a = dtype_bytes(precision), model.d_model, model.n_heads
    f = model.d_ff or default_d_ff(h)
    norms = 2 * (8 * h + w * h)
    attention = 6 * w * h + FP32 * a
    if model.attention == "sparse":
        context = attention_context(model.model_copy(update={"max_seq_len": seq_len}))
        attention += 8 * a * context + 2 * w * h * context / model.sparse_block_size
    elif model.dropout > 0:
        attention += a * seq_len * (FP32 + 1 + w)
    if model.n_experts > 1:
        mlp = model.top_k * (4 * w * f + 2 * w * h) + 3 * FP32 * model.n_experts
    else:
        mlp = 4 * w * f
    masks = 2 * h if model.dropout > 0 else 0
    return float(norms + attention + mlp + masks)


def head_bytes_per_token(model: ModelConfig, precision: str) -> float:
    """The final norm and the loss head, per token, at the start of backward (the peak).

    The final RMSNorm keeps 8h + wh like the layers' norms. The logits (w·V) stay referenced by the
    model output during backward; cross entropy runs in fp32, so 16-bit logits get an fp32 copy
    (4V), log_softmax keeps its fp32 output (4V), and backward starts with the fp32 gradients of
    log_softmax and of the logits (2·4V) plus, in 16-bit, the gradient of the 16-bit logits (w·V):
    the "logits × 2-3" that dominates small models with large vocabularies.
    """
    w, h, vocab = dtype_bytes(precision), model.d_model, model.vocab_size
    norm = 8 * h + w * h
    logits = w * vocab + FP32 * vocab + 2 * FP32 * vocab
    if w < FP32:
        logits += FP32 * vocab + w * vocab
    return float(norm + logits)


def activation_bytes_per_window(model: ModelConfig, seq_len: int, precision: str, checkpointing: bool) -> float:
    """Peak activation bytes of one window of `seq_len` tokens during forward+backward.

    Without checkpointing: every layer's saved tensors, the head, and one layer's worth of
    activation gradients while backward runs through it. With activation checkpointing (the model
    wraps each block in torch.utils.checkpoint) only each block's input (w·h per token) is kept;
    backward recomputes one block at a time, so one layer's saved tensors plus its gradients are
    live on top, plus the head.
    """
    layer = layer_bytes_per_token(model, seq_len, precision)
    head = head_bytes_per_token(model, precision)
    if checkpointing:
        per_token = model.n_layers * dtype_bytes(precision) * model.d_model + 2 * layer + head
    else:
        per_token = model.n_layers * layer + layer + head
    return per_token * seq_len


# -------------------------------------------------------------------------------------- budgets
def mem_available_bytes() -> int:
    """Memory the kernel can give new allocations without swapping (MemAvailable), via psutil if
    installed, else /proc/meminfo."""
    try:
        import psutil
    except ImportError:
        for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
        raise TrainingError("cannot read MemAvailable from /proc/meminfo: set train.memory_budget_gb") from None
    return int(psutil.virtual_memory().available)


def cpu_budget_bytes(train: TrainConfig, world_size: int) -> tuple[float, str]:
    """Per-rank budget on CPU and where it came from: memory_budget_gb, else 80% of MemAvailable
    shared by the ranks (which all run on this machine)."""
    if train.memory_budget_gb is not None:
        return train.memory_budget_gb * GIB, "train.memory_budget_gb"
    share = CPU_BUDGET_FRACTION * mem_available_bytes() / world_size
    return share, f"{CPU_BUDGET_FRACTION:.0%} of MemAvailable / {world_size} ranks"


def cuda_budget_bytes(train: TrainConfig, device: torch.device) -> tuple[float, str]:
    """Per-rank device budget: memory_budget_gb, else gpu_memory_fraction of what this process could
    hold (free device memory + what torch's caching allocator already reserved here)."""
    if train.memory_budget_gb is not None:
        return train.memory_budget_gb * GIB, "train.memory_budget_gb"
    free, _total = torch.cuda.mem_get_info(device)
    usable = free + torch.cuda.memory_reserved(device)
    return train.gpu_memory_fraction * usable, f"{train.gpu_memory_fraction:.0%} of free device memory"


# ------------------------------------------------------------------------------------- the probe
def cuda_probe(
    model: PhariaLM, seq_len: int, vocab: int, device: torch.device, *, precision: str | None = None
) -> Probe:
    """`probe(micro_batch_size) -> peak bytes` of one forward+backward of `model`'s shape on `device`.

    Each call builds a twin of `model` (same config and activation checkpointing, fresh weights: the
    values do not change memory) directly on `device` in the training `precision` (default: the
    dtype of `model`'s parameters), allocates its gradients, runs one forward+backward at the micro
    batch, and frees the twin again. `model` itself is not touched, so it can go to DeepSpeed as it
    is, and nothing of the probe stays on the device afterwards. The peak is counted above what was
    allocated before the step, so the twin's weights and gradients are excluded (the plan adds
    DeepSpeed's own, sharded model state) and activations plus per-step workspace remain. The twin
    is unsharded: under ZeRO-3 its weights and gradients must fit one device while probing.
    Out of memory returns PROBE_OOM.
    """
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    dtype = dtypes[precision] if precision is not None else next(model.parameters()).dtype
    cfg, checkpointing = model.cfg, model.activation_checkpointing

    def step(micro: int) -> int:
        """Build, measure, drop: on out-of-memory this frame and its tensors go with the traceback."""
        from pharia.model.model import build_model

        twin = build_model(cfg, device=device).to(dtype).set_activation_checkpointing(checkpointing)
        twin.train()
        for param in twin.parameters():
            param.grad = torch.zeros_like(param)
        tokens = torch.randint(0, vocab, (micro, seq_len + 1), device=device)
        torch.cuda.synchronize(device)
        baseline = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = twin(tokens[:, :-1], tokens[:, 1:])
        loss = out.loss if out.aux_loss is None else out.loss + out.aux_loss
        loss.backward()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - baseline)

    def probe(micro: int) -> int:
        try:
            return step(micro)
        except torch.cuda.OutOfMemoryError:
            return PROBE_OOM
        finally:
            gc.collect()
            torch.cuda.empty_cache()

    return probe


# ------------------------------------------------------------------------------------ planning
def _fmt(nbytes: float) -> str:
    return f"{nbytes / GIB:.2f} GiB" if abs(nbytes) >= GIB else f"{nbytes / MIB:.1f} MiB"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _state_words(train: TrainConfig, world_size: int, static: dict[str, float]) -> str:
    return (
        f"{_fmt(static['static_bytes'])} of model state (weights {_fmt(static['weights_bytes'])}, gradients "
        f"{_fmt(static['gradients_bytes'])}, optimizer {_fmt(static['optimizer_bytes'])}, buffers "
        f"{_fmt(static['buffers_bytes'])}; ZeRO-{train.zero_stage}, {_count(world_size, 'rank')}, {train.precision})"
    )


def _remedies(train: TrainConfig, on_gpu: bool) -> str:
    options = []
    if train.memory_budget_gb is not None or not on_gpu:
        options.append("a larger train.memory_budget_gb (or more free memory)")
    if train.zero_stage < 3:
        options.append("a higher train.zero_stage or more ranks (shards the model state)")
    if on_gpu and not train.offload_optimizer and train.zero_stage >= 1:
        options.append("train.offload_optimizer: true")
    if not train.activation_checkpointing:
        options.append("train.activation_checkpointing: true")
    options.append("a shorter data.seq_len or a smaller model")
    return "; ".join(options)


def _cpu_micro(
    train: TrainConfig,
    model: ModelConfig,
    seq_len: int,
    world_size: int,
    static: dict[str, float],
    device: torch.device,
) -> tuple[int, str, dict[str, float]]:
    """The analytic path (CPU, or CUDA without a probe): floor((budget - static) / per window), capped."""
    on_gpu = device.type == "cuda"
    if on_gpu:
        budget, source = cuda_budget_bytes(train, device)
    else:
        budget, source = cpu_budget_bytes(train, world_size)
    per_window = activation_bytes_per_window(model, seq_len, train.precision, train.activation_checkpointing)
    fit = math.floor((budget - static["static_bytes"]) / per_window)
    numbers = {"budget_bytes": budget, "activation_bytes_per_window": per_window}
    if fit < 1:
        raise TrainingError(
            f"micro_batch_size auto: not one window of {seq_len} tokens fits: budget {_fmt(budget)} per rank "
            f"({source}) minus {_state_words(train, world_size, static)} leaves "
            f"{_fmt(budget - static['static_bytes'])}, one window needs {_fmt(per_window)} of activations. "
            f"Options: {_remedies(train, on_gpu)}"
        )
    micro = min(fit, train.max_micro_batch_size)
    capped = f", capped at max_micro_batch_size {train.max_micro_batch_size}" if fit > micro else ""
    reason = (
        f"micro batch {micro} from the memory estimate: budget {_fmt(budget)} per rank ({source}) minus "
        f"{_state_words(train, world_size, static)} fits {fit} windows of {_fmt(per_window)} activations{capped}"
    )
    return micro, reason, numbers


def _probe_micro(
    train: TrainConfig, world_size: int, seq_len: int, static: dict[str, float], probe: Probe, device: torch.device
) -> tuple[int, str, dict[str, float]]:
    """The measured path (CUDA): probes at 1 and 2 give a line, extrapolated to the budget, then verified.

    A size fits when its probe did not run out of memory and model state + probe peak stays within
    the budget (the probe does not see DeepSpeed's optimizer states and buffers). If the
    extrapolated size does not fit, bisect between the largest size known to fit and the smallest
    known not to (the first step halves it), so the plan lands on the largest fitting size.
    """
    budget, source = cuda_budget_bytes(train, device)
    room = budget - static["static_bytes"]
    peaks: dict[int, int] = {}

    def fits(micro: int) -> bool:
        if micro not in peaks:
            peaks[micro] = probe(micro)
        return peaks[micro] != PROBE_OOM and peaks[micro] <= room

    if not fits(1):
        measured = "ran out of memory" if peaks[1] == PROBE_OOM else f"peaked at {_fmt(peaks[1])}"
        raise TrainingError(
            f"micro_batch_size auto: one window of {seq_len} tokens does not fit: the probe at micro batch 1 "
            f"{measured}, and budget {_fmt(budget)} ({source}) minus {_state_words(train, world_size, static)} "
            f"leaves {_fmt(room)}. Options: {_remedies(train, True)}"
        )
    cap = train.max_micro_batch_size
    slope, intercept, extrapolated = float(peaks[1]), 0.0, 1
    if cap == 1 or not fits(2):
        good, bad = 1, 2
    else:
        slope = max(float(peaks[2] - peaks[1]), 1.0)
        intercept = peaks[1] - slope
        extrapolated = math.floor((room - intercept) / slope)
        target = max(2, min(cap, extrapolated))
        good, bad = (target, target + 1) if fits(target) else (2, target)
        while bad - good > 1:
            middle = (good + bad) // 2
            good, bad = (middle, bad) if fits(middle) else (good, middle)
    micro = min(good, cap)
    failed = sorted(m for m, peak in peaks.items() if m > micro)
    numbers = {
        "budget_bytes": budget,
        "probe_intercept_bytes": intercept,
        "probe_bytes_per_window": slope,
        "probe_peak_bytes": float(peaks[micro]),
    }
    steps = f"; {', '.join(str(m) for m in failed)} did not fit" if failed else ""
    capped = f", capped at max_micro_batch_size {cap}" if extrapolated > cap and micro == cap else ""
    line = f"probes gave {_fmt(intercept)} + {_fmt(slope)} per window" if 2 in peaks else "probed micro batch 1 only"
    reason = (
        f"micro batch {micro} measured: {line}, budget {_fmt(budget)} ({source}) minus "
        f"{_state_words(train, world_size, static)} leaves {_fmt(room)}, peak {_fmt(peaks[micro])} at {micro}"
        f"{steps}{capped}"
    )
    return micro, reason, numbers


def _accumulation(requested: int, seq_len: int, bound: int, world_size: int) -> tuple[int, int, str]:
    """Micro batch and accumulation reaching `requested` tokens: G = ceil(tokens / seq_len) windows,
    accum = ceil(G / (bound · ranks)), then micro = ceil(G / (accum · ranks)) <= bound, the smallest
    micro batch that reaches G with that many steps (the global batch exceeds G by less than
    accum · ranks windows)."""
    windows = math.ceil(requested / seq_len)
    accum = math.ceil(windows / (bound * world_size))
    micro = math.ceil(windows / (accum * world_size))
    ranks = _count(world_size, "rank")
    words = (
        f"{_count(accum, 'accumulation step')} = ceil({windows} windows / ({bound} x {ranks})) for "
        f"global_batch_tokens {requested}, micro batch {micro} = ceil({windows} / ({accum} x {world_size}))"
    )
    return micro, accum, words


def _agree_across_ranks(micro: int, world_size: int, device: torch.device) -> int:
    """The smallest micro batch any rank found (a collective when a process group of `world_size`
    ranks is up): ranks measure their memory at slightly different moments, but DeepSpeed needs one
    batch shape everywhere. Without a process group (planning ahead, tests) the local value."""
    import torch.distributed as dist

    if world_size == 1 or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() != world_size:
        return micro
    value = torch.tensor([micro], dtype=torch.long, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return int(value.item())


def plan_batches(
    train: TrainConfig,
    model: ModelConfig,
    seq_len: int,
    world_size: int,
    *,
    device: torch.device,
    probe: Probe | None = None,
) -> BatchPlan:
    """The batch plan of a run on `world_size` ranks of `device.type` (see the module docstring).

    `probe` (CUDA, micro_batch_size auto) measures one forward+backward at a micro batch and
    returns its peak bytes or PROBE_OOM; `cuda_probe` builds it for a model. Without a probe,
    CUDA falls back to the analytic estimate against the device budget. With micro_batch_size
    auto inside a process group of `world_size` ranks this is a collective (every rank must call
    it): the ranks agree on the smallest micro batch any of them found.
    """
    if seq_len < 1 or world_size < 1:
        raise ValueError(f"seq_len and world_size must be >= 1, got {seq_len} and {world_size}")
    check_offload(train)
    on_gpu = device.type == "cuda"
    buckets = zero_bucket_sizes(model.d_model, train.zero_stage)
    static = static_bytes(train, ModelShape.of(model), world_size, on_gpu=on_gpu, zero_buckets=buckets)
    memory: dict[str, float] = dict(static)
    if train.micro_batch_size == "auto":
        failure: TrainingError | None = None
        try:
            if on_gpu and probe is not None:
                bound, micro_words, numbers = _probe_micro(train, world_size, seq_len, static, probe, device)
                numbers["estimated_activation_bytes_per_window"] = activation_bytes_per_window(
                    model, seq_len, train.precision, train.activation_checkpointing
                )
            else:
                bound, micro_words, numbers = _cpu_micro(train, model, seq_len, world_size, static, device)
            memory.update(numbers)
        except TrainingError as error:  # still take part in the agreement, or the other ranks would hang
            bound, micro_words, failure = 0, "", error
        agreed = _agree_across_ranks(bound, world_size, device)
        if failure is not None:
            raise failure
        if agreed < 1:
            raise TrainingError("micro_batch_size auto: another rank cannot fit one window; its log says why")
        if agreed < bound:
            micro_words += f", lowered to {agreed}, the smallest over the {world_size} ranks"
            bound = agreed
    else:
        bound = train.micro_batch_size
        micro_words = f"micro batch {bound} as configured (train.micro_batch_size)"
        memory["activation_bytes_per_window"] = activation_bytes_per_window(
            model, seq_len, train.precision, train.activation_checkpointing
        )
    requested = train.global_batch_tokens
    if requested is None:
        micro, accum = bound, train.grad_accum_steps
        accum_words = f"{_count(accum, 'accumulation step')} as configured (train.grad_accum_steps)"
    else:
        micro, accum, accum_words = _accumulation(requested, seq_len, bound, world_size)
    windows = micro * accum * world_size
    tokens = windows * seq_len
    versus = f" ({requested} requested)" if requested is not None else ""
    reason = f"{micro_words}; {accum_words}: {windows} windows = {tokens} tokens per optimizer step{versus}."
    return BatchPlan(
        micro_batch_size=micro,
        grad_accum_steps=accum,
        world_size=world_size,
        seq_len=seq_len,
        global_windows=windows,
        global_tokens=tokens,
        requested_tokens=requested,
        reason=reason,
        memory=memory,
        zero_buckets=buckets,
    )


def smaller_plan(plan: BatchPlan) -> BatchPlan | None:
    """The plan to retry with after a GPU out-of-memory: micro batch halved, accumulation doubled.

    The global batch stays exactly the same: the new micro batch is the largest divisor of the
    windows per rank per step (micro · accum) that is at most half the old one, which for an even
    micro batch is exactly half with twice the accumulation. None when the micro batch is already 1.
    """
    if plan.micro_batch_size <= 1:
        return None
    per_rank = plan.micro_batch_size * plan.grad_accum_steps
    micro = next(d for d in range(plan.micro_batch_size // 2, 0, -1) if per_rank % d == 0)
    accum = per_rank // micro
    reason = (
        f"micro batch {micro} x {accum} accumulation steps after an out-of-memory at micro batch "
        f"{plan.micro_batch_size} x {plan.grad_accum_steps}, same {plan.global_windows} windows per step; before: "
        f"{plan.reason}"
    )
    return replace(plan, micro_batch_size=micro, grad_accum_steps=accum, reason=reason)
