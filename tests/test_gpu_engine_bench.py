"""Smoke tests of benchmarks/gpu_engine.py (engine vs bare PyTorch loop, tokens/s and MFU).

The real measurement needs a GPU; here the script runs end to end on CPU with the tiny preset, which
exercises everything but CUDA: synthetic shards the engine accepts, the derived config, the
`python -m pharia.train` subprocess, reading its MLflow windows, the bare loop with the engine's
batch plan, and the report. No timing thresholds (benchmarks report ratios, a test never judges
absolute speed): the checks are that both sides measured the same work and gave positive numbers.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_engine.py"
OPTIONS = (
    "--preset",
    "--device",
    "--steps",
    "--warmup-steps",
    "--zero-stage",
    "--micro-batch-size",
    "--precision",
    "--peak-tflops",
    "--workdir",
    "--out",
)


def test_gpu_engine_help_explains_every_option() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for option in OPTIONS:
        assert option in result.stdout


@pytest.mark.integration
def test_gpu_engine_cpu_smoke(tmp_path: Path) -> None:
    out = tmp_path / "gpu_engine.json"
    env = {
        **os.environ,
        "DS_ACCELERATOR": "cpu",
        "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR") or str(REPO / ".pharia" / "torch_extensions"),
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",  # both sides get the same; one thread keeps a shared CI machine from oversubscribing
        "PHARIA_HOME": str(tmp_path / "home"),
    }
    command = [sys.executable, str(SCRIPT), "--device", "cpu", "--preset", "tiny", "--steps", "4"]
    command += ["--warmup-steps", "1", "--workdir", str(tmp_path / "work"), "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    report = json.loads(out.read_text(encoding="utf-8"))
    engine, bare = report["engine"], report["bare"]
    for side in (engine, bare):
        assert side["tokens_per_s"] > 0
        assert side["measured_steps"] == 4
        assert side["mfu"] is None  # no peak on CPU
    assert engine["tokens_per_s_step_windows"] > 0 and engine["stage_tokens_per_s_all_steps"] > 0
    ratio = report["ratio_engine_over_bare_tokens_per_s"]
    assert math.isfinite(ratio) and ratio > 0
    # the same work on both sides: the engine's batch plan, precision and warmup
    plan = engine["batch_plan"]
    assert (bare["micro_batch_size"], bare["grad_accum_steps"]) == (plan["micro_batch_size"], plan["grad_accum_steps"])
    assert bare["tokens_per_step"] == engine["tokens_per_step"] == plan["global_tokens"]
    assert engine["precision"] == bare["precision"] == "fp32"
    assert engine["stage_steps"] == report["warmup_steps"] + 4 and report["warmup_steps"] >= 1
    assert bare["warmup_steps"] == report["warmup_steps"]
    assert all(math.isfinite(loss) for loss in bare["losses"]) and engine["skipped_steps"] == 0
    assert engine["command"][1:3] == ["-m", "pharia.train"] and report["commands"]["engine"] == engine["command"]
    assert report["machine"]["torch"] and report["machine"]["deepspeed"]
