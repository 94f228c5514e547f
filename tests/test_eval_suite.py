"""The suite runner: every registered task on one model through the EvalLM interface, metric
entries with their reproducibility record, the files an auditor reads, and configs that only name
tasks and metrics that exist."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from pharia.config import EvalConfig, TaskRunConfig, load_config
from pharia.errors import PhariaError
from pharia.evaluate.docs import DOC, render
from pharia.evaluate.gates import check_gate_config
from pharia.evaluate.lm import Sampling, Scored
from pharia.evaluate.metrics import CATEGORIES
from pharia.evaluate.suite import gates_for, metric_specs, run_suite, write_outputs
from pharia.evaluate.tasks import all_tasks
from pharia.evaluate.tasks.base import PipelineInputs

REPRO_FIELDS = ("seed", "batch_size", "datasets", "harness", "hardware", "model", "model_sha256")


def _unit(text: str) -> float:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") / 2**32


class HashLM:
    """A deterministic stand-in model: scores and continuations are functions of the text (and,
    for sampling, of the seed), so two runs agree exactly and different seeds differ."""

    batch_size = 4

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[Scored]:
        return [Scored(-len(c.encode()) * (0.5 + _unit(x + c)), max(1, len(c.split())), False) for x, c in requests]

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[Scored]:
        return [Scored(-len(t.encode()) * (0.5 + _unit(t)), max(1, len(t.split())), False) for t in texts]

    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[str]:
        words = ["kind", "people", "the", "garden", "idiot", "bank", "river", "calm"]
        out = []
        for p in prompts:
            key = p if sampling.temperature == 0 else f"{p}/{sampling.seed}"
            n = 1 + int(_unit(key) * min(sampling.max_new_tokens, 6))
            out.append(" " + " ".join(words[int(_unit(f"{key}{i}") * len(words))] for i in range(n)))
        return out

    def describe(self) -> dict:
        return {"model": "hash-lm", "kind": "test", "sha256": "0" * 64, "parameters": 0, "dtype": "none"}


HELDOUT = {
    "web": [
        "The council met on Tuesday to discuss the new bridge over the river near the market square. "
        "Residents had asked for the bridge for years, and the mayor promised that the work would start "
        "in spring. Engineers explained how the old crossing had been damaged by floods, and why a "
        "stronger design was needed. After a long debate the members voted, and the council approved the bridge."
    ]
    * 3,
    "code": ["def add(a, b):\n    return a + b\n\nprint(add(1, 2))"] * 3,
}
CANARIES = {
    "schema": "pharia.canaries/v1",
    "alphabet": "0123456789",
    "length": 4,
    "seed": 0,
    "canaries": [{"id": "c0", "prefix": "canary c0: the code is ", "secret": "1234", "repeats": 2, "text": "x"}],
}


def small_config(seed: int = 0) -> EvalConfig:
    """Every registered task on a handful of rows."""
    tasks = {name: TaskRunConfig(samples=6, k=2, max_new_tokens=6) for name in all_tasks()}
    return EvalConfig(seed=seed, batch_size=4, suites={"fast": {"heldout": TaskRunConfig(samples=2)}, "full": tasks})


def inputs() -> PipelineInputs:
    return PipelineInputs(heldout_texts=HELDOUT, heldout_sha256="h" * 64, canaries=CANARIES, canaries_sha256="c" * 64)


@pytest.fixture(scope="module")
def full_result() -> dict:
    return run_suite(HashLM(), "full", small_config(), inputs(), show_progress=False)


def test_every_task_runs_and_reports_its_declared_metrics(full_result: dict) -> None:
    reported = {e["name"] for e in full_result["entries"]}
    skipped = full_result["skipped"]
    assert set(skipped) == {"hellaswag"}  # the shipped HellaSwag file has no gold labels
    for name, task in all_tasks().items():
        if name in skipped:
            continue
        declared = {s.name for s in task.specs}
        assert reported & declared, name
    assert len(reported) >= 50
    assert {"mc_mean_acc", "mc_mean_ece"} <= reported


def test_every_entry_carries_the_reproducibility_record(full_result: dict) -> None:
    for entry in full_result["entries"]:
        assert all(entry[f] not in (None, "", {}) for f in REPRO_FIELDS), entry["name"]
        assert entry["category"] in CATEGORIES and entry["description"]
        assert entry["n"] > 0 or entry["value"] is None  # e.g. a CrowS-Pairs bias type absent from a small subset
        assert all(len(h) == 64 for h in entry["datasets"].values()), entry["name"]


def test_same_seed_same_scores_and_another_seed_other_rows(full_result: dict) -> None:
    again = run_suite(HashLM(), "full", small_config(), inputs(), show_progress=False)
    assert again["metrics"] == full_result["metrics"]
    other = run_suite(HashLM(), "full", small_config(seed=1), inputs(), show_progress=False)
    assert other["metrics"] != full_result["metrics"]


def test_outputs_metrics_gates_markdown_and_samples(full_result: dict, tmp_path: Path) -> None:
    gates = gates_for(full_result, load_config("tiny").gates)
    write_outputs(full_result, gates, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["schema"] == "pharia.eval/v2" and len(metrics["entries"]) == len(full_result["entries"])
    assert "samples" not in metrics
    judged = json.loads((tmp_path / "gates.json").read_text())
    assert {r["status"] for r in judged["requirements"]} <= {"pass", "fail", "not_evaluated"}
    assert judged["reproducibility"]["complete"]
    summary = (tmp_path / "summary.md").read_text()
    assert "## Gates" in summary and "## bias" in summary and "`hellaswag`" in summary
    assert (tmp_path / "samples" / "crows_pairs.jsonl").read_text().strip()


def test_tasks_without_pipeline_inputs_are_not_evaluated_with_a_reason() -> None:
    cfg = small_config()
    result = run_suite(HashLM(), "full", cfg, PipelineInputs(), tasks=["heldout", "canaries"], show_progress=False)
    assert result["entries"] == [] and set(result["skipped"]) == {"heldout", "canaries"}


def test_unknown_tasks_are_refused_with_the_known_names() -> None:
    cfg = EvalConfig(suites={"fast": {"no_such_task": TaskRunConfig()}, "full": {"heldout": TaskRunConfig()}})
    with pytest.raises(PhariaError, match="unknown task.*no_such_task.*known tasks"):
        run_suite(HashLM(), "fast", cfg, inputs(), show_progress=False)


@pytest.mark.parametrize("preset", ["tiny", "pharia-1-7b"])
def test_presets_name_only_existing_tasks_and_metrics(preset: str) -> None:
    cfg = load_config(preset)
    for suite in ("fast", "full"):
        assert set(cfg.eval.suites[suite]) <= set(all_tasks()), suite
    check_gate_config(cfg.gates, metric_specs())
    assert set(cfg.eval.suites["full"]) == set(all_tasks())  # the full suite runs every task


def test_metric_names_are_unique_and_documented() -> None:
    specs = metric_specs()
    assert len(specs) >= 50
    assert {s.category for s in specs.values()} == set(CATEGORIES)
    assert DOC.read_text(encoding="utf-8") == render(), "run `python -m pharia.evaluate.docs`"


class BrokenRollingLM(HashLM):
    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[Scored]:
        raise RuntimeError("CUDA error: device-side assert")


def test_a_failing_task_is_recorded_and_the_others_still_run() -> None:
    result = run_suite(
        BrokenRollingLM(), "full", small_config(), inputs(), tasks=["piqa", "crows_pairs"], show_progress=False
    )
    assert result["failed"] == {"crows_pairs": "RuntimeError: CUDA error: device-side assert"}
    assert result["skipped"]["crows_pairs"].startswith("failed: ")
    assert "piqa_acc" in result["metrics"] and "crows_stereotype_score" not in result["metrics"]


def test_the_suite_leaves_the_callers_random_state_alone() -> None:
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run_suite(HashLM(), "full", small_config(), inputs(), tasks=["piqa"], show_progress=False)
    assert torch.equal(torch.rand(3), expected)  # e.g. dropout masks of the training rank that evaluated
