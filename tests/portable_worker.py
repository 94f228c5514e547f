"""One rank of the portable-state tests (tests/test_train_portable.py), started under torchrun.

    python -m torch.distributed.run --nproc_per_node N tests/portable_worker.py MODE --cases JSON --out DIR

Every step trains on a fixed *global* batch (a function of the step only); each rank takes its
contiguous slice, so 1 and 2 ranks see the same data and - with the gradient averaged over ranks -
take the same optimizer step. The logged loss is the mean over ranks, i.e. the global-batch loss.

Modes (each case is one engine, built fresh: new model, same seed, never stepped before import):
  phase1   train STEPS_BEFORE steps, export + save the portable state (and the scheduler iteration,
           as the training loop will), then keep training to TOTAL_STEPS: the uninterrupted
           reference of the same total steps.
  resume   for every state file of the case: fresh engine, import, restore the scheduler, train
           the remaining steps. Also two controls that must NOT reproduce the reference (moments
           zeroed, Adam step reset), proving the loss comparison sees the optimizer state.
           Cases flagged "mismatch" then import into a model of another shape and with a renamed
           parameter, recording the error text.
Rank 0 writes DIR/<mode>-ws<N>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from pharia.config import ModelConfig
from pharia.errors import TrainingError
from pharia.model.model import PhariaLM
from pharia.train.portable import (
    MOMENTS,
    OPTIMIZER_STEP,
    export_portable_state,
    import_portable_state,
    load_portable_state,
    save_portable_state,
)

MODEL = ModelConfig(vocab_size=128, d_model=32, n_layers=2, n_heads=2, max_seq_len=16)
GLOBAL_BATCH, SEQ_LEN = 4, 16
STEPS_BEFORE, TOTAL_STEPS = 3, 6
SEED = 0
SCHEDULE_FIRST_ITERATION = 1  # as the trainer: WarmupCosineLR is stepped once before training


def case_name(case: dict[str, Any]) -> str:
    return f"zero{case['stage']}-{case['precision']}" + ("-offload" if case.get("offload") else "")


def global_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Step `step`'s global batch: learnable successor chains from seeded random starts."""
    generator = torch.Generator().manual_seed(1000 + step)
    successor = torch.randperm(MODEL.vocab_size, generator=torch.Generator().manual_seed(7))
    tokens = torch.empty(GLOBAL_BATCH, SEQ_LEN + 1, dtype=torch.long)
    tokens[:, 0] = torch.randint(0, MODEL.vocab_size, (GLOBAL_BATCH,), generator=generator)
    for t in range(SEQ_LEN):
        tokens[:, t + 1] = successor[tokens[:, t]]
    return tokens[:, :-1], tokens[:, 1:]


def deepspeed_config(case: dict[str, Any], world_size: int) -> dict[str, Any]:
    """What pharia.train.deepspeed_config builds for a run (torch AdamW, WarmupCosineLR, gradient
    clipping, dynamic fp16 loss scaling), written out here so this test does not follow that
    module's signature. The global batch is fixed; the micro batch is its share per rank."""
    zero: dict[str, Any] = {"stage": case["stage"]}
    if case["stage"] >= 2:
        zero.update({"overlap_comm": False, "contiguous_gradients": True})
    if case["stage"] == 3:
        # Below this size ZeRO-3 keeps a parameter whole on every rank ("persistent"): the tiny
        # model's matrices are larger, its norm gains smaller, so both refresh paths are exercised.
        zero["stage3_param_persistence_threshold"] = 10 * MODEL.d_model
    if case.get("offload"):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    fp16 = {"loss_scale": 0, "initial_scale_power": 16, "loss_scale_window": 1000, "hysteresis": 2, "min_loss_scale": 1}
    return {
        "train_batch_size": GLOBAL_BATCH,
        "train_micro_batch_size_per_gpu": GLOBAL_BATCH // world_size,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 1.0,
        "zero_optimization": zero,
        "bf16": {"enabled": case["precision"] == "bf16"},
        "fp16": {"enabled": case["precision"] == "fp16", **fp16},
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": 3e-2, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.1, "torch_adam": True},
        },
        "scheduler": {
            "type": "WarmupCosineLR",
            "params": {
                "total_num_steps": TOTAL_STEPS,
                "warmup_num_steps": 2,
                "warmup_min_ratio": 0.0,
                "warmup_type": "linear",
                "cos_min_ratio": 0.1,
            },
        },
        "steps_per_print": 2**31 - 1,
    }


def build_engine(case: dict[str, Any], world_size: int, model_cfg: ModelConfig = MODEL) -> tuple[Any, Any]:
    import deepspeed

    torch.manual_seed(SEED)
    model = PhariaLM(model_cfg)
    decay = [p for p in model.parameters() if p.dim() >= 2]  # the trainer's groups: no decay on norm gains
    keep = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": keep, "weight_decay": 0.0}]
    engine, _, _, scheduler = deepspeed.initialize(
        model=model, model_parameters=groups, config=deepspeed_config(case, world_size)
    )
    return engine, scheduler


def init_distributed() -> None:
    """gloo on CPU, without compiling DeepSpeed's shared-memory op (it serves only inference all-reduce;
    the trainer skips it the same way)."""
    import logging

    import deepspeed
    import deepspeed.ops
    from deepspeed.ops.op_builder.cpu.comm import ShareMemCommBuilder

    deepspeed.ops.__compatible_ops__[ShareMemCommBuilder.NAME] = False
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    deepspeed.init_distributed(dist_backend="gloo")


def train_steps(engine: Any, first: int, last: int, rank: int, world_size: int) -> list[float]:
    """Steps first..last-1 on the fixed global batches; the global-batch loss of each."""
    losses = []
    for step in range(first, last):
        inputs, targets = global_batch(step)
        share = GLOBAL_BATCH // world_size
        rows = slice(rank * share, (rank + 1) * share)
        out = engine(inputs[rows], targets[rows])
        engine.backward(out.loss)
        engine.step()
        loss = out.loss.detach().float().reshape(1)
        torch.distributed.all_reduce(loss)
        losses.append(loss.item() / world_size)
    return losses


def release(engine: Any) -> None:
    destroy = getattr(engine, "destroy", None)
    if destroy is not None:
        destroy()


def run_phase1(case: dict[str, Any], out: Path, rank: int, world_size: int) -> dict[str, Any]:
    engine, scheduler = build_engine(case, world_size)
    scheduler.step(SCHEDULE_FIRST_ITERATION)
    losses = train_steps(engine, 0, STEPS_BEFORE, rank, world_size)
    state = export_portable_state(engine)
    returned: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(returned, state is not None)
    result: dict[str, Any] = {"returned_by_rank": returned}
    if rank == 0:
        assert state is not None
        path = out / case_name(case) / f"from-ws{world_size}.safetensors"
        save_portable_state(state, path)
        meta = {"last_batch_iteration": scheduler.last_batch_iteration}
        (path.with_suffix(".json")).write_text(json.dumps(meta))
        result["keys"] = sorted(state)
        result["optimizer_step"] = int(state[OPTIMIZER_STEP])
        result["moment_norms"] = {
            m: sum(float(v.norm()) for k, v in state.items() if k.startswith(m + "/")) for m in MOMENTS
        }
    losses += train_steps(engine, STEPS_BEFORE, TOTAL_STEPS, rank, world_size)
    release(engine)
    return {**result, "losses": losses}


def resume_from(
    case: dict[str, Any], path: Path, rank: int, world_size: int, control: str | None = None
) -> list[float]:
    engine, scheduler = build_engine(case, world_size)
    state = load_portable_state(path)
    if control == "zero_moments":
        state = {
            k: torch.zeros_like(v) if k.startswith(tuple(f"{m}/" for m in MOMENTS)) else v for k, v in state.items()
        }
    elif control == "reset_step":
        state = {**state, OPTIMIZER_STEP: torch.tensor(0, dtype=torch.int64)}
    import_portable_state(engine, state)
    scheduler.step(json.loads(path.with_suffix(".json").read_text())["last_batch_iteration"])
    losses = train_steps(engine, STEPS_BEFORE, TOTAL_STEPS, rank, world_size)
    release(engine)
    return losses


def run_resume(case: dict[str, Any], out: Path, rank: int, world_size: int) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for path in sorted((out / case_name(case)).glob("from-ws*.safetensors")):
        source = path.stem.removeprefix("from-")
        result[source] = resume_from(case, path, rank, world_size)
        if case.get("controls"):
            for control in ("zero_moments", "reset_step"):
                result[f"{source}-{control}"] = resume_from(case, path, rank, world_size, control)
    if case.get("mismatch"):
        result["mismatch"] = mismatch_errors(case, path, world_size)
    return result


def mismatch_errors(case: dict[str, Any], path: Path, world_size: int) -> dict[str, str]:
    """Import into a wider model, and with a renamed parameter: the TrainingError text of each."""
    state = load_portable_state(path)
    errors: dict[str, str] = {}
    wider = MODEL.model_copy(update={"d_model": 48})
    engine, _ = build_engine(case, world_size, wider)
    try:
        import_portable_state(engine, state)
        errors["shape"] = "no error"
    except TrainingError as exc:
        errors["shape"] = str(exc)
    release(engine)
    engine, _ = build_engine(case, world_size)
    renamed = {k.replace("tok_emb.weight", "embedding.weight"): v for k, v in state.items()}
    try:
        import_portable_state(engine, renamed)
        errors["name"] = "no error"
    except TrainingError as exc:
        errors["name"] = str(exc)
    release(engine)
    return errors


MODES = {"phase1": run_phase1, "resume": run_resume}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=sorted(MODES))
    parser.add_argument("--cases", required=True, help="JSON list of {stage, precision[, offload, controls, mismatch]}")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()

    init_distributed()
    rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    results = {case_name(case): MODES[args.mode](case, args.out, rank, world_size) for case in json.loads(args.cases)}
    if rank == 0:
        (args.out / f"{args.mode}-ws{world_size}.json").write_text(json.dumps(results, indent=1))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
