"""`make bench` smoke tests: `benchmarks/run.py --quick` runs every benchmark and writes a complete
report; the data benchmark (benchmarks/data_bench.py) runs end to end on a corpus of a few MB, and its
synthetic corpus generator is deterministic.

No timing thresholds (DESIGN.md: benchmarks report ratios, a test never judges absolute speed); the
checks are that every benchmark ran every candidate, that times and ratios are positive numbers, and
that the data benchmark's row accounting matches what its generator wrote.
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
DATA_OPTIONS = ("--data-gb", "--data-small-fraction", "--data-tokenize-mb", "--data-rounds", "--data-work-dir")
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
    for option in DATA_OPTIONS:
        assert option in result.stdout


def test_data_bench_help_explains_every_option() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "data_bench.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for option in ("--quick", "--out", "--seed", *DATA_OPTIONS):
        assert option in result.stdout


def _corpus_module():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import synthetic_corpus
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return synthetic_corpus


def test_synthetic_corpus_is_deterministic_and_counts_what_it_injects(tmp_path: Path) -> None:
    corpus = _corpus_module()
    size = 400_000
    first = corpus.generate(tmp_path / "a", size, seed=3, progress=False)
    again = corpus.generate(tmp_path / "b", size, seed=3, progress=False)
    other = corpus.generate(tmp_path / "c", size, seed=4, progress=False)
    hashes = [{d: e["files"] for d, e in summary["domains"].items()} for summary in (first, again, other)]
    assert hashes[0] == hashes[1]  # same seed: byte-identical files
    assert hashes[0] != hashes[2]
    assert first["bytes"] >= 0.99 * size and set(first["domains"]) == set(corpus.DOMAINS)

    for domain, summary in first["domains"].items():
        rows = parsed = 0
        for path in sorted((tmp_path / "a" / domain).glob("*.jsonl")):
            for line in path.read_bytes().splitlines():
                rows += 1
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                parsed += isinstance(row, dict) and isinstance(row.get("text"), str) and bool(row["text"].strip())
        assert rows == summary["rows"] == sum(summary["kinds"].values()), domain
        # every row but the malformed ones is a JSON object with a non-blank text
        assert parsed == rows - summary["kinds"]["malformed"], domain
        assert summary["kinds"]["normal"] > 0.8 * rows, domain


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
    data = report["data_benchmarks"]  # --quick runs the data section at its quick sizes
    assert data["accounting_ok"] and set(data["sizes"]) == {"small", "full"}


def test_data_bench_tiny_corpus_accounts_for_every_row(tmp_path: Path) -> None:
    """The data benchmark end to end on ~2 MB: both corpus sizes ingested in child processes, the
    stage breakdown and the tokenisation candidates ran, and every generated row is accounted for."""
    out = tmp_path / "data.json"
    env = {**os.environ, "PHARIA_HOME": str(tmp_path / "pharia-home"), "PHARIA_PROGRESS": "0"}
    args = [
        "--data-gb", "0.002", "--data-small-fraction", "0.25", "--data-tokenize-mb", "0.4", "--data-rounds", "2",
        "--data-stage-docs", "60", "--data-vocab-size", "400", "--data-tokenizer-train-mb", "0.3",
        "--data-work-dir", str(tmp_path / "work"), "--out", str(out),
    ]  # fmt: skip
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "data_bench.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["schema"] == "pharia.bench.data/v1"
    assert report["accounting_ok"]
    assert not any((tmp_path / "work").iterdir())  # corpora and outputs removed

    for label in ("small", "full"):
        size = report["sizes"][label]
        corpus, ingest, parse = size["corpus"], size["ingest"], size["parse_baseline"]
        assert corpus["rows"] == sum(d["rows"] for d in corpus["domains"].values())
        assert ingest["rows"] == corpus["rows"] == parse["rows"], label
        totals = ingest["totals"]
        accounted = totals["kept"] + sum(totals["filtered"].values()) + sum(totals["quarantined"].values())
        assert accounted == totals["rows_in"] == corpus["rows"], label
        malformed = sum(d["kinds"]["malformed"] for d in corpus["domains"].values())
        assert sum(totals["quarantined"].values()) == malformed, label
        for domain in ingest["accounting"]["sources"].values():
            assert all(domain["checks"].values()), domain["checks"]
        for key in ("peak_rss_mb", "peak_tree_rss_mb", "wall_s", "docs_per_s", "mb_per_s"):
            assert ingest[key] > 0, f"{label}: {key}={ingest[key]}"
        assert parse["docs_per_s"] > 0 and size["ingest_vs_parse"] > 0
    assert report["sizes"]["full"]["corpus"]["bytes"] > report["sizes"]["small"]["corpus"]["bytes"]
    assert report["memory"]["size_growth"] > 1 and report["memory"]["rss_growth"] > 0

    for name, stage in report["stages"]["stages"].items():
        assert "error" not in stage and stage["docs_per_s"] > 0, name

    tokenize = report["tokenize"]
    assert tokenize["baseline"] == "encode_batch"
    assert set(tokenize["candidates"]) == {"encode_batch", "pack", "encode_batch_1_thread"}
    for name, cand in tokenize["candidates"].items():
        for key in ("median", "ratio", "ratio_min", "ratio_max"):
            assert math.isfinite(cand[key]) and cand[key] > 0, f"{name}: {key}={cand[key]}"
        assert cand["ratio_min"] <= cand["ratio"] <= cand["ratio_max"], name
    assert tokenize["candidates"]["encode_batch"]["ratio"] == 1.0
    # same documents, same tokenizer: the single-thread run produced the very same tokens, and pack
    # wrote at least those (plus what it adds per document: an eos, domain tags)
    assert tokenize["candidates"]["encode_batch_1_thread"]["tokens"] == tokenize["text_tokens"] > 0
    assert tokenize["pack_tokens"] >= tokenize["text_tokens"] + tokenize["docs"]
    assert "tokenisation" in result.stdout  # the tables were printed
