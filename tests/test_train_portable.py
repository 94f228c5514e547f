"""Portable (world-size-independent) training state: save on N ranks, resume on M, same losses.

The DeepSpeed tests start real gloo jobs under torchrun (tests/portable_worker.py): every ZeRO
stage / precision case trains STEPS_BEFORE steps on 1 and on 2 ranks, exports, and keeps going to
TOTAL_STEPS (the uninterrupted reference); fresh 1- and 2-rank jobs then import each saved state
into a never-stepped engine and train the rest. Four launches serve all cases (each DeepSpeed
start costs seconds); the per-case assertions are parametrized below.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from pharia.errors import TrainingError
from pharia.train.portable import (
    OPTIMIZER_STEP,
    SCHEMA,
    check_portable_state,
    load_portable_state,
    save_portable_state,
)

REPO = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "portable_worker.py"
STEPS_BEFORE, TOTAL_STEPS = 3, 6  # as in portable_worker.py

# Tolerances (relative) per ZeRO stage / precision:
#   rtol     a resumed run vs the uninterrupted run it continues (same first STEPS_BEFORE steps, on
#            the source world size). fp32 differs only by the order of the gradient reduction
#            (observed ~1e-7); bf16/fp16 also round the module weights and gradients (~6e-5).
#   ws_rtol  the 1-rank vs the 2-rank uninterrupted run, and so a resumed run vs the run of its
#            target world size: in bf16/fp16 different micro-batch shapes round differently, and
#            Adam amplifies that over the first steps (~3e-3 at this learning rate).
#   state    the exported states of 1 and 2 ranks, as ||a - b|| / ||a|| per tensor: fp32 ~1e-6; in
#            bf16 only a sanity bound (same cause as ws_rtol; a norm gain's second moment, summed
#            over every token in bf16, differs by ~0.13) - the loss comparisons are the real check.
FP32 = {"rtol": 1e-5, "ws_rtol": 1e-5, "state": 1e-5}
LOW = {"rtol": 5e-4, "ws_rtol": 1e-2, "state": 0.3}
CASES: dict[str, dict[str, Any]] = {
    "zero0-fp32": {"stage": 0, "precision": "fp32", **FP32},
    "zero1-fp32": {"stage": 1, "precision": "fp32", **FP32},
    "zero2-fp32": {"stage": 2, "precision": "fp32", **FP32, "controls": True, "mismatch": True},
    "zero3-fp32": {"stage": 3, "precision": "fp32", **FP32, "mismatch": True},
    "zero2-bf16": {"stage": 2, "precision": "bf16", **LOW},
    "zero3-bf16": {"stage": 3, "precision": "bf16", **LOW, "controls": True},
    "zero0-bf16": {"stage": 0, "precision": "bf16", **LOW},  # FP16_UnfusedOptimizer
    "zero2-fp16": {"stage": 2, "precision": "fp16", **LOW},
    "zero3-bf16-offload": {"stage": 3, "precision": "bf16", "offload": True, **LOW},  # masters in host memory
}
WORKER_KEYS = ("stage", "precision", "offload", "controls", "mismatch")
# DeepSpeed's FP16_UnfusedOptimizer (ZeRO 0 with bf16/fp16) runs one zero-gradient Adam step when it
# is built, so its Adam step count is one ahead of the engine's.
PHANTOM_STEP = {"zero0-bf16": 1}


# --------------------------------------------------------------------------- file and checks
def _tiny_state() -> dict[str, torch.Tensor]:
    state = {OPTIMIZER_STEP: torch.tensor(7, dtype=torch.int64)}
    for prefix in ("param/", "exp_avg/", "exp_avg_sq/"):
        state[prefix + "w"] = torch.randn(3, 2)
        state[prefix + "b"] = torch.randn(2)
    return state


def test_save_and_load_round_trip_atomically(tmp_path: Path) -> None:
    state = _tiny_state()
    path = tmp_path / "ckpt" / "portable.safetensors"
    save_portable_state(state, path)
    loaded = load_portable_state(path)
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert int(loaded[OPTIMIZER_STEP]) == 7
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind

    with pytest.raises(NotImplementedError, match="meta"):  # a write that fails midway (no data to copy)
        save_portable_state({**state, "param/w": torch.empty(3, 2, device="meta")}, path)
    assert torch.equal(load_portable_state(path)["param/w"], state["param/w"])
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_load_refuses_other_files(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="portable training state not found"):
        load_portable_state(tmp_path / "missing.safetensors")
    weights = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(2)}, weights, metadata={"format": "pt"})  # a model file, not a state
    with pytest.raises(TrainingError, match=rf"schema is None, expected '{SCHEMA}'"):
        load_portable_state(weights)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not safetensors at all")
    with pytest.raises(TrainingError, match="not a safetensors file"):
        load_portable_state(garbage)


def test_check_names_the_mismatching_parameter() -> None:
    expected = {"w": (3, 2), "b": (2,)}
    check_portable_state(expected, _tiny_state())  # matches: no error

    wide = {"w": (4, 2), "b": (2,)}
    with pytest.raises(TrainingError, match=r"parameter 'w': 'param/w' has shape \(3, 2\) in the state but \(4, 2\)"):
        check_portable_state(wide, _tiny_state())
    moments_only = {**_tiny_state(), "exp_avg_sq/b": torch.zeros(5)}
    with pytest.raises(TrainingError, match=r"parameter 'b': 'exp_avg_sq/b' has shape \(5,\)"):
        check_portable_state(expected, moments_only)
    with pytest.raises(TrainingError, match=r"missing from the state under 'exp_avg/': c"):
        check_portable_state({**expected, "c": (1,)}, _tiny_state())
    with pytest.raises(TrainingError, match=r"state has 'param/' entries the model lacks: b"):
        check_portable_state({"w": (3, 2)}, _tiny_state())
    with pytest.raises(TrainingError, match="lacks 'optimizer_step'"):
        check_portable_state(expected, {k: v for k, v in _tiny_state().items() if k != OPTIMIZER_STEP})
    with pytest.raises(TrainingError, match="unknown entries: lr"):
        check_portable_state(expected, {**_tiny_state(), "lr": torch.tensor(1.0)})


# ----------------------------------------------------------------------- DeepSpeed, for real
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _launch(mode: str, ranks: int, out: Path) -> dict[str, Any]:
    cases = [{k: v for k, v in case.items() if k in WORKER_KEYS} for case in CASES.values()]
    env = {
        **os.environ,
        "DS_ACCELERATOR": "cpu",
        "OMP_NUM_THREADS": "1",
        "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR") or str(REPO / ".pharia" / "torch_extensions"),
    }
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks),
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        str(WORKER), mode, "--cases", json.dumps(cases), "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    if done.returncode:
        raise AssertionError(f"{mode} on {ranks} rank(s) failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}")
    return json.loads((out / f"{mode}-ws{ranks}.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Both references, then the resumes: every import lands in a fresh engine of a job that has not
    trained before it (the resume jobs only ever import)."""
    out = tmp_path_factory.mktemp("portable")
    result = {"out": out}
    for ranks in (1, 2):
        result[f"phase1-ws{ranks}"] = _launch("phase1", ranks, out)
    for ranks in (2, 1):
        result[f"resume-ws{ranks}"] = _launch("resume", ranks, out)
    return result


def _close(actual: list[float], expected: list[float], rtol: float) -> bool:
    return len(actual) == len(expected) and all(
        math.isclose(a, e, rel_tol=rtol, abs_tol=0.0) for a, e in zip(actual, expected, strict=True)
    )


def _diff(actual: list[float], expected: list[float]) -> str:
    return f"{actual} vs {expected} (max rel {max(abs(a - e) / abs(e) for a, e in zip(actual, expected)):.2e})"


@pytest.mark.integration
@pytest.mark.parametrize("case", list(CASES))
def test_export_is_the_same_on_one_and_two_ranks(runs: dict[str, Any], case: str) -> None:
    """The gathered state does not depend on how it was partitioned, and the references agree."""
    tol = CASES[case]
    one, two = runs["phase1-ws1"][case], runs["phase1-ws2"][case]
    assert _close(two["losses"], one["losses"], tol["ws_rtol"]), _diff(two["losses"], one["losses"])
    assert one["losses"][-1] < one["losses"][0]  # it trains
    assert one["returned_by_rank"] == [True] and two["returned_by_rank"] == [True, False]  # rank 0 keeps it
    assert one["optimizer_step"] == two["optimizer_step"] == STEPS_BEFORE + PHANTOM_STEP.get(case, 0)
    assert one["keys"] == two["keys"]
    assert all(norm > 0 for norm in one["moment_norms"].values())

    first = load_portable_state(runs["out"] / case / "from-ws1.safetensors")
    second = load_portable_state(runs["out"] / case / "from-ws2.safetensors")
    for key, value in first.items():
        if key.startswith(("param/", "exp_avg/", "exp_avg_sq/")):
            assert value.dtype == second[key].dtype == torch.float32, key
            assert value.shape == second[key].shape, key
            relative = float((second[key] - value).norm() / value.norm())
            assert relative < tol["state"], f"{key}: ||ws2 - ws1|| / ||ws1|| = {relative:.1e}"
        else:
            assert torch.equal(second[key], value), key
    if CASES[case]["precision"] == "fp16":
        assert float(first["loss_scale"]) == 2.0**16  # no overflow in these steps: the initial scale
        assert int(first["loss_scale_since_overflow"]) == STEPS_BEFORE + 1


@pytest.mark.integration
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize(("source", "target"), [(1, 2), (2, 1), (1, 1), (2, 2)])
def test_resume_on_another_world_size_continues_the_losses(
    runs: dict[str, Any], case: str, source: int, target: int
) -> None:
    """Resumed losses equal the uninterrupted run's, step by step, on either world size."""
    tol = CASES[case]
    resumed = runs[f"resume-ws{target}"][case][f"ws{source}"]
    continued = runs[f"phase1-ws{source}"][case]["losses"][STEPS_BEFORE:]
    assert _close(resumed, continued, tol["rtol"]), f"ws{source}->ws{target}: " + _diff(resumed, continued)
    on_target = runs[f"phase1-ws{target}"][case]["losses"][STEPS_BEFORE:]
    assert _close(resumed, on_target, tol["ws_rtol"]), f"ws{source}->ws{target}: " + _diff(resumed, on_target)
    if source == target:  # same world size: the very same partitions, so the very same arithmetic
        assert _close(resumed, continued, 1e-6), _diff(resumed, continued)


@pytest.mark.integration
@pytest.mark.parametrize("case", [name for name, case in CASES.items() if case.get("controls")])
@pytest.mark.parametrize("target", [1, 2])
def test_the_comparison_sees_the_optimizer_state(runs: dict[str, Any], case: str, target: int) -> None:
    """Controls: dropping Adam's moments, or its step count, changes the resumed losses well beyond
    the tolerance - so the agreement above is not something the weights alone would give."""
    source = 3 - target
    continued = runs[f"phase1-ws{source}"][case]["losses"][STEPS_BEFORE:]
    for control in ("zero_moments", "reset_step"):
        resumed = runs[f"resume-ws{target}"][case][f"ws{source}-{control}"]
        assert not _close(resumed, continued, 5 * CASES[case]["rtol"]), (control, _diff(resumed, continued))


@pytest.mark.integration
@pytest.mark.parametrize("case", [name for name, case in CASES.items() if case.get("mismatch")])
@pytest.mark.parametrize("target", [1, 2])
def test_import_into_another_shape_names_the_parameter(runs: dict[str, Any], case: str, target: int) -> None:
    errors = runs[f"resume-ws{target}"][case]["mismatch"]
    assert "does not match the model" in errors["shape"]
    first = errors["shape"].split(": ", 1)[1]  # module order: the embedding comes first
    assert first.startswith(
        "parameter 'tok_emb.weight': 'param/tok_emb.weight' has shape (128, 32) in the state but (128, 48)"
    )
    assert "missing from the state under 'param/': tok_emb.weight" in errors["name"]
    assert "state has 'param/' entries the model lacks: embedding.weight" in errors["name"]
