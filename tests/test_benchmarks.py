"""`make bench` smoke test: `benchmarks/run.py --quick` runs every benchmark and writes a complete report.

No timing thresholds (DESIGN.md: benchmarks report ratios, a test never judges absolute speed); the
checks are that every benchmark ran every candidate, and that times and ratios are positive numbers.
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
EXPECTED = {
    "train_step": ("bare", {"bare", "zero0", "zero2", "zero3"}),
    "activation_checkpointing": ("off", {"off", "on"}),
    "heldout_eval": ("batch_1", {"batch_1", "batch_8"}),
}


def test_bench_help_explains_every_option() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for option in ("--quick", "--out", "--only", "--config", "--rounds", "--steps", "--eval-windows", "--threads"):
        assert option in result.stdout


@pytest.mark.integration
def test_quick_bench_reports_every_benchmark_with_positive_ratios(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "PHARIA_HOME": str(tmp_path / "pharia-home")}
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text(encoding="utf-8"))

    assert report["schema"] == "pharia.bench/v1"
    assert report["settings"]["profile"] == "quick"
    machine = report["machine"]
    assert machine["cpu_count"] >= 1 and machine["torch_threads"] >= 1
    assert machine["torch"] and machine["deepspeed"] and machine["python"]

    assert set(report["benchmarks"]) == set(EXPECTED)
    for name, (baseline, candidates) in EXPECTED.items():
        bench = report["benchmarks"][name]
        assert bench["baseline"] == baseline
        assert set(bench["candidates"]) == candidates
        for cand_name, cand in bench["candidates"].items():
            where = f"{name}/{cand_name}"
            for key in ("median", "ratio", "ratio_min", "ratio_max"):
                assert math.isfinite(cand[key]) and cand[key] > 0, f"{where}: {key}={cand[key]}"
            assert cand["samples"] >= 1 and all(v > 0 for v in cand["round_medians"]), where
            assert cand["ratio_min"] <= cand["ratio"] <= cand["ratio_max"], where
        assert bench["candidates"][baseline]["ratio"] == 1.0

    # the candidates of a benchmark did the same work: same losses, same held-out scores
    for name in ("train_step", "activation_checkpointing"):
        for cand in report["benchmarks"][name]["candidates"].values():
            assert cand["max_loss_diff_vs_baseline"] < 1e-3
    for cand in report["benchmarks"]["heldout_eval"]["candidates"].values():
        assert cand["max_nll_diff_vs_baseline"] < 1e-4
    assert "train_step" in result.stdout and "heldout_eval" in result.stdout  # the table was printed
