"""A world-size-independent ("portable") training state: resume a run saved on N ranks on M ranks.

DeepSpeed's own checkpoints store each rank's flat optimizer partition, so they only load on the
world size (and ZeRO layout) that wrote them. The portable state instead holds every trainable
parameter *unpartitioned*, under its module name, as one flat safetensors file:

    param/<name>        fp32 master weight (ZeRO's partitions / the bf16-fp16 optimizer's masters)
    exp_avg/<name>      Adam's first moment, fp32
    exp_avg_sq/<name>   Adam's second moment, fp32
    optimizer_step      int64 scalar: Adam's step count (its bias correction; can differ from the
                        engine's step count once fp16 overflow steps were skipped)
    loss_scale          fp16 only: the dynamic loss scale, plus loss_scale_since_overflow (optimizer
                        steps since the last overflow, which decides when the scale next doubles)
                        and loss_scale_hysteresis (overflows still tolerated before it halves)

Shared parameters (tied embeddings, cross-layer blocks) appear once, under the first name
`named_parameters()` yields, as in the model files (pharia.model.io). Every rank reads the same
file and writes only its own partitions, whatever the world size that saved it.

Where each optimizer keeps Adam's state (always torch AdamW, `torch_adam: true`):

    ZeRO 0, fp32          engine.optimizer is the torch optimizer; state[module_param]
    ZeRO 0, bf16/fp16     FP16_UnfusedOptimizer: optimizer.optimizer.state[fp32 master], one master per param
                          (it takes one zero-gradient step when built: its count is one ahead of the engine's)
    ZeRO 1/2              optimizer.optimizer.state[single_partition_of_fp32_groups[g]], one flat per group
    ZeRO 3                optimizer.optimizer.state[fp32_partitioned_groups_flat[s]], one flat per sub-group
    BF16_Optimizer        optimizer.optimizer.state[fp32_groups_flat_partition[g]], one flat per group

and "step" sits next to exp_avg/exp_avg_sq in each of those entries. torch creates that state
lazily on the first optimizer step, so a freshly built engine has none; the import creates it
exactly as torch's AdamW would (zeros, then filled) and, for ZeRO 1/2 and BF16_Optimizer, links
DeepSpeed's per-parameter views (`_lazy_init_hp_params_optimizer_state`) before writing into it.

What the portable state does NOT hold, and the training loop must save and restore itself:
  * the learning-rate schedule: save `scheduler.last_batch_iteration`, and after building the new
    engine call `scheduler.step(saved_value)` (WarmupCosineLR recomputes the lr of that iteration);
  * the data position (sampler state) and the RNG state, if dropout or sampling depend on it;
  * engine counters used only for logging (`engine.global_steps`, `global_samples`).
The global batch (micro_batch_size x grad_accum_steps x world_size) must stay the same for the
resumed losses to continue the old curve; the per-rank split may change. Export and import only at
an optimizer-step boundary: gradients of a half-accumulated step are not part of the state.

Memory: the export assembles one full parameter at a time on every rank (collective), and rank 0
keeps all of them: 3x the fp32 model size on rank 0's CPU. The import holds the whole file on every
rank (3x fp32 model size per rank) while writing its partitions.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from pharia.errors import TrainingError

SCHEMA = "pharia.portable-train-state/v1"
PARAM_PREFIX = "param/"
MOMENTS = ("exp_avg", "exp_avg_sq")
OPTIMIZER_STEP = "optimizer_step"
LOSS_SCALE = "loss_scale"
LOSS_SCALE_SINCE_OVERFLOW = "loss_scale_since_overflow"
LOSS_SCALE_HYSTERESIS = "loss_scale_hysteresis"
SCALARS = (OPTIMIZER_STEP, LOSS_SCALE, LOSS_SCALE_SINCE_OVERFLOW, LOSS_SCALE_HYSTERESIS)
TENSOR_PREFIXES = (PARAM_PREFIX, *(f"{m}/" for m in MOMENTS))


# ------------------------------------------------------------------------------ optimizer layout
@dataclass
class _Layout:
    """Which DeepSpeed wrapper holds the master weights, and the tensors its torch Adam keys state by."""

    kind: str  # "torch" | "unfused" | "zero12" | "zero3" | "bf16"
    wrapper: Any  # engine.optimizer
    inner: torch.optim.Optimizer  # the torch AdamW that owns the state
    state_keys: list[torch.Tensor]  # the tensors `inner.state` is (or will be) keyed by
    masters: dict[int, torch.Tensor]  # unfused only: id(module param) -> its fp32 master


def _layout(engine: Any) -> _Layout:
    from deepspeed.runtime.bf16_optimizer import BF16_Optimizer
    from deepspeed.runtime.fp16.unfused_optimizer import FP16_UnfusedOptimizer
    from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3
    from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer

    opt = engine.optimizer
    masters: dict[int, torch.Tensor] = {}
    if isinstance(opt, DeepSpeedZeroOptimizer_Stage3):
        kind, inner, keys = "zero3", opt.optimizer, list(opt.fp32_partitioned_groups_flat)
        if getattr(opt, "swap_optimizer", False):
            raise TrainingError("portable training state: ZeRO-3 with NVMe optimizer offload is not supported")
    elif isinstance(opt, DeepSpeedZeroOptimizer):
        kind, inner, keys = "zero12", opt.optimizer, list(opt.single_partition_of_fp32_groups)
    elif isinstance(opt, BF16_Optimizer):
        kind, inner, keys = "bf16", opt.optimizer, list(opt.fp32_groups_flat_partition)
    elif isinstance(opt, FP16_UnfusedOptimizer):
        kind, inner = "unfused", opt.optimizer
        keys = [master for group in opt.fp32_groups for master in group]
        for lp_group, fp32_group in zip(opt.fp16_groups, opt.fp32_groups, strict=True):
            masters.update({id(lp): master for lp, master in zip(lp_group, fp32_group, strict=True)})
    elif isinstance(opt, torch.optim.Optimizer):
        kind, inner = "torch", opt
        keys = [p for group in opt.param_groups for p in group["params"]]
    else:
        raise TrainingError(
            f"portable training state: unsupported DeepSpeed optimizer wrapper {type(opt).__name__} "
            "(supported: none with fp32, FP16_UnfusedOptimizer, ZeRO 1-3, BF16_Optimizer)"
        )
    if not isinstance(inner, torch.optim.Adam):  # torch's AdamW subclasses Adam
        raise TrainingError(
            f"portable training state needs torch Adam/AdamW (torch_adam: true), not {type(inner).__name__}"
        )
    if inner.defaults.get("amsgrad"):
        raise TrainingError("portable training state: AdamW with amsgrad is not supported")
    return _Layout(kind, opt, inner, keys, masters)


def _trainable(engine: Any) -> list[tuple[str, torch.nn.Parameter]]:
    """Unique trainable parameters in module order: the same list, in the same order, on every rank."""
    return [(name, p) for name, p in engine.module.named_parameters() if p.requires_grad]


def _full_shape(param: torch.Tensor) -> tuple[int, ...]:
    """ZeRO-3 leaves an empty placeholder in `param`; the real shape is `ds_shape`."""
    return tuple(getattr(param, "ds_shape", param.shape))


def _new_step(inner: torch.optim.Optimizer, key: torch.Tensor) -> torch.Tensor:
    """A zero step counter placed and typed as torch's Adam creates it (`_init_group`): on the
    parameter's device when fused or capturable, else a CPU scalar; float64 only under a float64
    default dtype and not fused."""
    fused = bool(inner.defaults.get("fused"))
    dtype = torch.float64 if torch.get_default_dtype() == torch.float64 and not fused else torch.float32
    device = key.device if fused or inner.defaults.get("capturable") else torch.device("cpu")
    return torch.zeros((), dtype=dtype, device=device)


def _ensure_adam_state(layout: _Layout) -> None:
    """Create Adam's state where the first optimizer step would (zeros, step 0) if it is missing.

    A freshly built engine has none (torch initialises lazily), and DeepSpeed's per-parameter
    views into the flat ZeRO/bf16 state are only linked after the first step; both are needed
    before the full optimizer state can be written. Zeros at step 0 are exactly what torch would
    create, so on an engine that has not stepped this changes nothing.
    """
    for key in layout.state_keys:
        state = layout.inner.state[key]
        if len(state) == 0:
            state["step"] = _new_step(layout.inner, key)
            for moment in MOMENTS:
                state[moment] = torch.zeros_like(key, memory_format=torch.preserve_format)
        missing = [k for k in ("step", *MOMENTS) if k not in state]
        if missing:
            raise TrainingError(f"portable training state: Adam state lacks {missing} (not torch Adam/AdamW?)")
    if layout.kind in ("zero12", "bf16"):
        # (Re-)link every parameter's views into the flat state. Always, not only when created:
        # DeepSpeed 0.19.8's ZeRO 1/2 links all groups right after stepping the *first* one, so
        # the views of every later group (here: the no-decay norm gains) stay empty for good.
        # Linking is idempotent (narrowed views of the same tensors).
        layout.wrapper._hp_optimizer_states_linked = False
        layout.wrapper._lazy_init_hp_params_optimizer_state()


def _adam_step(layout: _Layout) -> int:
    steps = {float(layout.inner.state[key]["step"]) for key in layout.state_keys}
    if len(steps) != 1:
        raise TrainingError(f"portable training state: Adam step counts differ between parameter groups: {steps}")
    return int(steps.pop())


def _loss_scaler(engine: Any, layout: _Layout) -> Any | None:
    """fp16's loss-scale bookkeeping: ZeRO's `loss_scaler` or the unfused optimizer's `loss_scale_config`."""
    if not engine.fp16_enabled():
        return None
    return getattr(layout.wrapper, "loss_scaler", None) or getattr(layout.wrapper, "loss_scale_config", None)


def _check_boundary(engine: Any) -> None:
    """Half-accumulated gradients are not part of the state: only an optimizer-step boundary is portable."""
    gas = engine.gradient_accumulation_steps()
    if engine.micro_steps % gas:
        raise TrainingError(
            f"portable training state taken mid-accumulation (micro step {engine.micro_steps}, "
            f"gradient_accumulation_steps {gas}): export right after an optimizer step"
        )


# ----------------------------------------------------------------------------------- export
def export_portable_state(engine: Any) -> dict[str, torch.Tensor] | None:
    """Full fp32 weights, Adam moments and step count of `engine`, on CPU, on rank 0 (None elsewhere).

    COLLECTIVE: every rank calls it, in the same order. Each parameter is assembled on its own
    (ZeRO: an all-reduce / all-gather per tensor), so a rank holds at most one full tensor it does
    not keep. Must be called at an optimizer-step boundary.
    """
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

    _check_boundary(engine)
    layout = _layout(engine)
    keep = torch.distributed.get_rank() == 0 if torch.distributed.is_initialized() else True
    state: dict[str, torch.Tensor] = {}

    def put(key: str, value: torch.Tensor, shape: tuple[int, ...]) -> None:
        if keep:
            state[key] = value.detach().to("cpu", torch.float32).reshape(shape).contiguous().clone()

    with torch.no_grad():
        _ensure_adam_state(layout)  # an engine that never stepped exports zero moments at step 0
        for name, param in _trainable(engine):
            shape = _full_shape(param)
            if layout.kind == "torch":
                put(PARAM_PREFIX + name, param, shape)
                for moment in MOMENTS:
                    put(f"{moment}/{name}", layout.inner.state[param][moment], shape)
            elif layout.kind == "unfused":
                master = layout.masters[id(param)]
                put(PARAM_PREFIX + name, master, shape)
                for moment in MOMENTS:
                    put(f"{moment}/{name}", layout.inner.state[master][moment], shape)
            else:  # ZeRO 1-3 / BF16_Optimizer: collectives, every rank takes part
                put(PARAM_PREFIX + name, safe_get_full_fp32_param(param), shape)
                for moment in MOMENTS:
                    put(f"{moment}/{name}", safe_get_full_optimizer_state(param, moment), shape)
        step = _adam_step(layout)
        scaler = _loss_scaler(engine, layout)
    if not keep:
        return None
    state[OPTIMIZER_STEP] = torch.tensor(step, dtype=torch.int64)
    if scaler is not None:
        state[LOSS_SCALE] = torch.tensor(float(scaler.cur_scale), dtype=torch.float64)
        if getattr(scaler, "last_overflow_iter", None) is not None:  # dynamic scaling
            since = int(scaler.cur_iter) - int(scaler.last_overflow_iter)
            state[LOSS_SCALE_SINCE_OVERFLOW] = torch.tensor(since, dtype=torch.int64)
        if getattr(scaler, "cur_hysteresis", None) is not None:
            state[LOSS_SCALE_HYSTERESIS] = torch.tensor(int(scaler.cur_hysteresis), dtype=torch.int64)
    return state


# ----------------------------------------------------------------------------------- import
def check_portable_state(expected: dict[str, tuple[int, ...]], state: dict[str, torch.Tensor]) -> None:
    """Raise a TrainingError naming the parameters whose names or shapes differ from `expected`
    (model name -> full shape, in module order; the message lists them in that order).

    Run on every rank before any collective, so all ranks fail together instead of deadlocking.
    """
    if OPTIMIZER_STEP not in state:
        raise TrainingError(f"portable training state lacks '{OPTIMIZER_STEP}': not a portable state")
    problems: list[str] = []
    for name, shape in expected.items():  # one line per parameter, its first mismatching entry
        for key in (prefix + name for prefix in TENSOR_PREFIXES):
            if key in state and tuple(state[key].shape) != shape:
                problems.append(
                    f"parameter '{name}': '{key}' has shape {tuple(state[key].shape)} in the state "
                    f"but {shape} in the model"
                )
                break
    for prefix in TENSOR_PREFIXES:
        stored = [k[len(prefix) :] for k in state if k.startswith(prefix)]
        missing = [n for n in expected if prefix + n not in state]
        unexpected = [n for n in stored if n not in expected]
        if missing:
            problems.append(f"model parameter(s) missing from the state under '{prefix}': {', '.join(missing[:5])}")
        if unexpected:
            problems.append(f"state has '{prefix}' entries the model lacks: {', '.join(unexpected[:5])}")
    strays = [k for k in state if not k.startswith(TENSOR_PREFIXES) and k not in SCALARS]
    if strays:
        problems.append(f"unknown entries: {', '.join(strays[:5])}")
    if problems:
        shown = "; ".join(problems[:8]) + (f"; ... ({len(problems) - 8} more)" if len(problems) > 8 else "")
        raise TrainingError(f"portable training state does not match the model: {shown}")


def import_portable_state(engine: Any, state: dict[str, torch.Tensor]) -> None:
    """Write `state` (the full dict, the same on every rank) into `engine`'s partitions.

    COLLECTIVE: every rank calls it with the same dict. Sets the fp32 masters, Adam's moments and
    step count, the fp16 loss scale, then refreshes the low-precision / module weights from the
    masters (ZeRO 1/2 and bf16: all-gather of the bit16 partitions; ZeRO-3: the partitioned copies
    and the persistent, always-gathered parameters), so the next forward already uses them.
    Learning-rate schedule and data position are the caller's (see the module docstring).
    """
    from deepspeed.utils import safe_set_full_fp32_param, safe_set_full_optimizer_state

    params = _trainable(engine)
    check_portable_state({name: _full_shape(p) for name, p in params}, state)
    _check_boundary(engine)
    layout = _layout(engine)
    step = int(state[OPTIMIZER_STEP])
    with torch.no_grad():
        _ensure_adam_state(layout)
        for key in layout.state_keys:
            layout.inner.state[key]["step"].fill_(step)
        for name, param in params:
            if layout.kind in ("torch", "unfused"):
                target = param if layout.kind == "torch" else layout.masters[id(param)]
                target.data.copy_(state[PARAM_PREFIX + name].reshape(target.shape))
                for moment in MOMENTS:
                    buffer = layout.inner.state[target][moment]
                    buffer.copy_(state[f"{moment}/{name}"].reshape(buffer.shape))
                if layout.kind == "unfused":
                    param.data.copy_(target.data)  # the module's bf16/fp16 copy
            else:
                # each rank copies only its own fragment out of the full CPU tensor (copy_ crosses devices)
                safe_set_full_fp32_param(param, state[PARAM_PREFIX + name])
                for moment in MOMENTS:
                    safe_set_full_optimizer_state(param, state[f"{moment}/{name}"], moment)
        _refresh_low_precision(layout)
        scaler = _loss_scaler(engine, layout)
        if scaler is not None and LOSS_SCALE in state:
            scaler.cur_scale = float(state[LOSS_SCALE])
            if LOSS_SCALE_SINCE_OVERFLOW in state and getattr(scaler, "last_overflow_iter", None) is not None:
                scaler.last_overflow_iter = int(scaler.cur_iter) - int(state[LOSS_SCALE_SINCE_OVERFLOW])
            if LOSS_SCALE_HYSTERESIS in state and getattr(scaler, "cur_hysteresis", None) is not None:
                scaler.cur_hysteresis = int(state[LOSS_SCALE_HYSTERESIS])


def _refresh_low_precision(layout: _Layout) -> None:
    """Copy the new fp32 masters into the weights the forward reads (collective for ZeRO)."""
    opt = layout.wrapper
    if layout.kind in ("zero12", "bf16"):
        opt.update_lp_params()  # own partition <- master, then all-gather into the flat bit16 buffer
        if layout.kind == "zero12":
            for group in range(len(opt.bit16_groups)):
                opt._update_model_bit16_weights(group)  # re-point module params into the flat buffer
    elif layout.kind == "zero3":
        for sub_group in range(len(opt.fp16_groups)):
            opt._reassign_or_swap_out_partitioned_parameters(sub_group)
        if opt.persistent_parameters:  # small params stay gathered on every rank: re-gather them, as step() does
            opt.persistent_parameters[0].all_gather(opt.persistent_parameters)
        invalidate = getattr(opt, "invalidate_secondary_tensor", None)
        if invalidate is not None:
            invalidate()


# -------------------------------------------------------------------------------------- file
def save_portable_state(state: dict[str, torch.Tensor], path: Path) -> None:
    """Write `state` as safetensors; a reader never sees a half-written file (tmp + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in state.items()}, tmp, metadata={"format": "pt", "schema": SCHEMA})
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_portable_state(path: Path) -> dict[str, torch.Tensor]:
    """The dict `save_portable_state` wrote, on CPU; refuses files of another schema."""
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"portable training state not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            schema = (handle.metadata() or {}).get("schema")
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise TrainingError(f"{path}: not a safetensors file: {exc}") from None
    if schema != SCHEMA:
        raise TrainingError(f"{path}: schema is {schema!r}, expected {SCHEMA!r} (not a portable training state)")
    return load_file(path, device="cpu")
