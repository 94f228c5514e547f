"""Multiple-choice capability tasks and calibration: known answers from scripted models, the real
packaged files (row counts as documented), and the ECE definition on hand-made numbers."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from pharia.errors import DataError
from pharia.evaluate.lm import EvalLM, Sampling, Scored
from pharia.evaluate.tasks.base import PipelineInputs, TaskContext, TaskSettings
from pharia.evaluate.tasks.mc_data import SOURCES, load_set, read_set, split_options
from pharia.evaluate.tasks.mc_scoring import choice_score, expected_calibration_error
from pharia.evaluate.tasks.multiple_choice import TASKS, select_items

SCORED = [name for name in SOURCES if name != "hellaswag"]


class ScriptedLM:
    """`score(context, continuation) -> logprob`; `greedy` is never used by these tasks."""

    batch_size = 4

    def __init__(self, score: Callable[[str, str], float]) -> None:
        self.score = score
        self.calls = 0

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[Scored]:
        self.calls += 1
        return [Scored(self.score(c, x), max(len(x.encode()) // 2, 1), False) for c, x in requests]

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[Scored]:
        raise AssertionError("multiple-choice tasks do not score whole texts")

    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[str]:
        raise AssertionError("multiple-choice tasks do not generate")

    def describe(self) -> dict[str, Any]:
        return {"model": "scripted", "kind": "fake"}


def _ctx(lm: EvalLM, samples: int | None = 24, seed: int = 0) -> TaskContext:
    return TaskContext(lm=lm, settings=TaskSettings(samples=samples), seed=seed, inputs=PipelineInputs())


def _pairs(name: str, samples: int, seed: int, pick: Callable[[int, int], int]) -> set[tuple[str, str]]:
    """The (context, continuation) requests of option `pick(gold, n_options)` of each selected row."""
    mc = load_set(name)
    out = set()
    for item in select_items(mc, samples, seed):
        requests = mc.source.requests(item)
        out.add(requests[pick(item.gold, len(requests))])
    return out


def _preferring(pairs: set[tuple[str, str]]) -> ScriptedLM:
    # preferred option: tiny loss per byte; others: 20 nats per byte, so it wins with and without normalisation
    return ScriptedLM(lambda c, x: -(0.001 if (c, x) in pairs else 20.0) * len(x.encode()))


def _run(name: str, lm: EvalLM, **kw: Any):
    return next(task for task in TASKS if task.name == name).run(_ctx(lm, **kw))


def test_protocol_is_met_by_the_fake() -> None:
    assert isinstance(ScriptedLM(lambda c, x: 0.0), EvalLM)


@pytest.mark.parametrize("name", SCORED)
def test_model_preferring_gold_scores_one(name: str) -> None:
    lm = _preferring(_pairs(name, 24, 0, lambda gold, n: gold))
    out = _run(name, lm)
    values = {m.name: m for m in out.metrics}
    assert values[f"{name}_acc"].value == 1.0 and values[f"{name}_acc_norm"].value == 1.0
    assert values[f"{name}_acc"].n == 24
    assert values[f"{name}_ece"].value == pytest.approx(0.0, abs=1e-6)  # confident and right
    assert out.datasets and all(len(h) == 64 for h in out.datasets.values())
    assert 0 < len(out.records) <= 5 and json.dumps(out.records)
    assert lm.calls == 1  # 24 questions: one batched call, not one per question


@pytest.mark.parametrize("name", SCORED)
def test_model_preferring_a_wrong_option_scores_zero(name: str) -> None:
    lm = _preferring(_pairs(name, 24, 0, lambda gold, n: (gold + 1) % n))
    values = {m.name: m.value for m in _run(name, lm).metrics}
    assert values[f"{name}_acc"] == 0.0 and values[f"{name}_acc_norm"] == 0.0
    assert values[f"{name}_ece"] == pytest.approx(1.0, abs=1e-6)  # confident and wrong


def test_every_declared_metric_is_reported_and_seeds_are_reproducible() -> None:
    def noise(c: str, x: str) -> float:
        return -int(hashlib.sha256((c + "|" + x).encode()).hexdigest()[:6], 16) / 2**24 * 5

    for task in TASKS:
        if task.name == "hellaswag":
            continue
        first = task.run(_ctx(ScriptedLM(noise), samples=16, seed=3))
        again = task.run(_ctx(ScriptedLM(noise), samples=16, seed=3))
        assert {m.name for m in first.metrics} == {s.name for s in task.specs}
        assert [(m.name, m.value) for m in first.metrics] == [(m.name, m.value) for m in again.metrics]
        other = task.run(_ctx(ScriptedLM(noise), samples=16, seed=4))
        assert [r["line"] for r in other.records] != [r["line"] for r in first.records]
        assert {s.category for s in task.specs} == {"capabilities", "calibration"}


def test_hellaswag_ships_without_gold_and_is_not_evaluated() -> None:
    out = _run("hellaswag", ScriptedLM(lambda c, x: 0.0))
    assert out.metrics == [] and out.skipped and "gold" in out.skipped
    assert load_set("hellaswag").rows == 3000


def test_hellaswag_format_scores_a_labelled_file(tmp_path: Path) -> None:
    row = {"question": "A man [title] is on a roof. he", "answer": ["falls.", "fixes the roof.", "a", "b"], "label": 1}
    path = tmp_path / "hs.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    mc = read_set(SOURCES["hellaswag"], path)
    item = mc.items[0]
    assert item.gold == 1
    assert mc.source.requests(item)[1] == ("A man. is on a roof. he", " fixes the roof.")


def test_packaged_files_load_with_documented_row_counts() -> None:
    for name, source in SOURCES.items():
        mc = load_set(name)
        assert mc.rows == source.rows, name
        assert sum(item.gold is not None for item in mc.items) == source.scorable, name
        assert all(len(item.options) == len(source.continuations(item)) for item in mc.items)
    csqa = load_set("commonsenseqa")
    assert [q["line"] for q in csqa.quarantined] == [103]  # options split between question and options fields
    assert [item.options[-1] for item in csqa.items if item.line == 117] == ["sail boat"]  # stray '?' moved back


def test_prompt_formats_follow_lm_eval() -> None:
    boolq = load_set("boolq")
    context, yes = boolq.source.requests(boolq.items[0])[1]
    assert context.endswith("?\nAnswer:") and "\nQuestion: " in context and yes == " yes"
    mmlu = load_set("mmlu")
    context, cont = mmlu.source.requests(mmlu.items[0])[0]
    assert context.startswith("The following are multiple choice questions (with answers).\n\n")
    assert "\nA. " in context and "\nD. " in context and context.endswith("\nAnswer:") and cont == " A"
    piqa = load_set("piqa")
    context, cont = piqa.source.requests(piqa.items[0])[0]
    assert context.startswith("Question: ") and context.endswith("\nAnswer:") and cont.startswith(" ")


def test_option_parsing_and_malformed_rows(tmp_path: Path) -> None:
    assert split_options("A. one\nB. two\n  more\nC. three", 3) == ("one", "two\n  more", "three")
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "q", "options": "A. x\\nB. y", "answer": "A. x"}\n{"question": "q"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl: line 2: field 'options'"):
        read_set(SOURCES["piqa"], path)
    path.write_text("{not json\n")
    with pytest.raises(DataError, match="line 1 is not JSON"):
        read_set(SOURCES["piqa"], path)
    rows = [{"question": f"q{i}", "options": "A. x\nB. y", "answer": "A. x"} for i in range(50)]
    rows[7]["answer"] = "B. z"  # content damage: quarantined, but 1 of 50 is over the 1% allowed
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match="format has changed"):
        read_set(SOURCES["piqa"], path)


def test_expected_calibration_error_known_values() -> None:
    assert expected_calibration_error([1.0] * 10, [True] * 5 + [False] * 5) == pytest.approx(0.5)
    assert expected_calibration_error([0.25, 0.25, 0.75, 0.75], [False, True, True, True]) == pytest.approx(0.25)
    # 0.3 belongs to the bin (0.2, 0.3] together with 0.25: |0.5 - 0.275| = 0.225 (else 0.475)
    assert expected_calibration_error([0.3, 0.25], [True, False]) == pytest.approx(0.225)
    assert expected_calibration_error([0.9, 0.9], [True, True], bins=1) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        expected_calibration_error([], [])
    with pytest.raises(ValueError):
        expected_calibration_error([1.2], [True])


def test_choice_score_normalises_by_bytes_and_softmaxes() -> None:
    score = choice_score([-4.0, -6.0], [" ab", " abcdefghi"])  # per byte: -1.33 vs -0.6
    assert score.pred == 0 and score.pred_norm == 1
    assert score.confidence == pytest.approx(1 / (1 + math.exp(-2.0)))
