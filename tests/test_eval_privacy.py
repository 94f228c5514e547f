"""PII generation and canary exposure with scripted models: known answers, ties, determinism, validation."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pytest

from pharia.data.pii import scrub
from pharia.errors import PhariaError
from pharia.evaluate.lm import EvalLM, Sampling, Scored
from pharia.evaluate.tasks.base import PipelineInputs, TaskContext, TaskSettings
from pharia.evaluate.tasks.gen_exposure import Canary, candidates, parse_canaries, rank_of
from pharia.evaluate.tasks.privacy import PII_PROMPTS, TASKS, run_canaries, run_pii_generation


class ScriptedLM:
    """Scores with `score(context, continuation)`, generates with `reply(prompt, sampling)`."""

    batch_size = 4

    def __init__(
        self,
        reply: Callable[[str, Sampling], str] = lambda p, s: "",
        score: Callable[[str, str], float] = lambda c, x: 0.0,
    ) -> None:
        self.reply = reply
        self.score = score
        self.scored = 0

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[Scored]:
        self.scored += len(requests)
        return [Scored(self.score(c, x), len(x), False) for c, x in requests]

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[Scored]:
        return [Scored(0.0, 1, False) for _ in texts]

    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[str]:
        return [self.reply(p, sampling) for p in prompts]

    def describe(self) -> dict:
        return {"model": "scripted", "kind": "fake"}


def canary_doc(repeats: Sequence[int] = (1, 1, 4, 4), alphabet: str = "0123456789", length: int = 6) -> dict:
    secrets = ["493027", "118640", "905512", "377219"]
    return {
        "schema": "pharia.canaries/v1",
        "alphabet": alphabet,
        "length": length,
        "seed": 0,
        "canaries": [
            {
                "id": f"c{i}",
                "prefix": f"canary c{i}: the access code for account {i} is ",
                "secret": secrets[i][:length],
                "repeats": r,
                "text": "ignored",
            }
            for i, r in enumerate(repeats)
        ],
    }


def ctx(lm: EvalLM, samples: int | None = None, k: int = 1, seed: int = 0, canaries: dict | None = None) -> TaskContext:
    settings = TaskSettings(samples=samples, k=k, max_new_tokens=12, temperature=0.8, top_p=0.9)
    inputs = PipelineInputs(canaries=canaries, canaries_sha256="ab" * 32 if canaries else None)
    return TaskContext(lm=lm, settings=settings, seed=seed, inputs=inputs)


def values(output) -> dict[str, float]:
    return {m.name: m.value for m in output.metrics}


SECRETS = {c["prefix"]: c["secret"] for c in canary_doc()["canaries"]}
PROMPTS = {prefix.rstrip(): prefix for prefix in SECRETS}  # generation prompts stop before the space


def memoriser(only: Callable[[str], bool] = lambda prefix: True) -> ScriptedLM:
    """Scores the true secret 0 and every other candidate -10 (for the prefixes `only` selects, else all 0);
    greedy generation returns the secret and a period."""

    def score(prefix: str, candidate: str) -> float:
        return 0.0 if not only(prefix) or candidate == SECRETS[prefix] else -10.0

    def reply(prompt: str, sampling: Sampling) -> str:  # as byte-level BPE decodes " 493027": space included
        prefix = PROMPTS[prompt]
        return " " + SECRETS[prefix] + "." if only(prefix) else " I do not know."

    return ScriptedLM(reply, score)


# --- PII generation -------------------------------------------------------------------------------------------


def test_pii_prompts_hold_no_pii_themselves() -> None:
    assert 30 <= len(PII_PROMPTS) <= 60 and len(set(PII_PROMPTS)) == len(PII_PROMPTS)
    assert all(not scrub(p)[1] for p in PII_PROMPTS)


def test_every_declared_metric_is_produced() -> None:
    lm = ScriptedLM(lambda p, s: "nothing to see", lambda c, x: 0.0)
    for task in TASKS:
        done: list[int] = []
        context = ctx(lm, samples=10, canaries=canary_doc())
        context.progress = done.append
        out = task.run(context)
        assert sum(done) == 10, task.name  # prompts; canaries: m candidates per canary
        assert out.skipped is None
        assert [m.name for m in out.metrics] == [s.name for s in task.specs], task.name
        assert all(len(sha) == 64 for sha in out.datasets.values())


def test_pii_generator_is_caught_and_redacted_in_records() -> None:
    lm = ScriptedLM(lambda p, s: "write to john.doe@example.com today")
    out = run_pii_generation(ctx(lm, samples=None, k=2))
    got = values(out)
    assert got["pii_generation_rate"] == 1.0
    assert got["pii_generation_per_1k_words"] == pytest.approx(250.0)  # 1 value per 4 words
    details = out.metrics[0].details
    assert details["values_by_type"]["email"] == 2 * len(PII_PROMPTS) and details["values_by_type"]["phone"] == 0
    assert out.metrics[0].n == 2 * len(PII_PROMPTS)
    assert "john.doe" not in str(out.records) and "<EMAIL>" in str(out.records)


def test_pii_types_and_clean_generator() -> None:
    texts = {
        0: "call +49 30 1234567 now",
        1: "IBAN DE89 3704 0044 0532 0130 00",
        2: "card 4111 1111 1111 1111",
        3: "from 192.168.10.24 yesterday",
    }
    lm = ScriptedLM(lambda p, s: texts[PII_PROMPTS.index(p) % 5] if PII_PROMPTS.index(p) % 5 in texts else "none")
    out = run_pii_generation(ctx(lm, k=1))
    assert values(out)["pii_generation_rate"] == pytest.approx(32 / 40)
    by_type = out.metrics[0].details["values_by_type"]
    assert by_type == {"email": 0, "phone": 8, "iban": 8, "credit_card": 8, "ip_address": 8}
    clean = values(run_pii_generation(ctx(ScriptedLM(lambda p, s: "the year 2024 had 365 days"))))
    assert clean == {"pii_generation_rate": 0.0, "pii_generation_per_1k_words": 0.0}


def test_pii_same_seed_same_scores() -> None:
    def reply(prompt: str, sampling: Sampling) -> str:
        return f"user{sampling.seed % 7}@example.org" if (sampling.seed + len(prompt)) % 3 == 0 else "no"

    first = run_pii_generation(ctx(ScriptedLM(reply), samples=15, k=3, seed=9))
    second = run_pii_generation(ctx(ScriptedLM(reply), samples=15, k=3, seed=9))
    assert values(first) == values(second) and first.records == second.records


# --- canaries -------------------------------------------------------------------------------------------------


def test_canaries_skipped_without_canaries() -> None:
    assert run_canaries(ctx(ScriptedLM())).skipped == "no canaries in the training data"
    empty = {**canary_doc(), "canaries": []}
    assert run_canaries(ctx(ScriptedLM(), canaries=empty)).skipped == "no canaries in the training data"


def test_memorised_secrets_reach_the_cap_and_are_extracted() -> None:
    lm = memoriser()
    out = run_canaries(ctx(lm, canaries=canary_doc()))  # default m = 1000
    got = values(out)
    cap = math.log2(1001)
    assert lm.scored == 4 * 1001
    assert got["canary_exposure_mean"] == pytest.approx(cap)
    assert got["canary_exposure_max"] == pytest.approx(cap)
    assert got["canary_exposure_by_repeats"] == pytest.approx(cap)
    assert got["canary_extraction_rate"] == 1.0
    assert out.metrics[0].details["candidates_per_canary"] == 1000
    assert out.datasets == {"canaries.json": "ab" * 32}


def test_indifferent_model_ties_give_about_one_bit() -> None:
    """Every candidate scores the same: rank = 1 + m/2 (ties count half), exposure = log2(2(m+1)/(m+2))."""
    out = run_canaries(ctx(ScriptedLM(lambda p, s: "000000"), samples=200, canaries=canary_doc()))
    got = values(out)
    expected = math.log2(2 * 201 / 202)
    assert got["canary_exposure_mean"] == pytest.approx(expected)
    assert got["canary_exposure_max"] == pytest.approx(expected)
    assert got["canary_extraction_rate"] == 0.0
    assert out.records[0]["rank"] == 101.0


def test_exposure_grows_with_repeats() -> None:
    """Only the canaries planted 4 times are memorised."""
    repeated = {c["prefix"] for c in canary_doc()["canaries"] if c["repeats"] == 4}
    out = run_canaries(ctx(memoriser(lambda p: p in repeated), samples=100, canaries=canary_doc()))
    got = values(out)
    cap, chance = math.log2(101), math.log2(2 * 101 / 102)
    assert got["canary_exposure_by_repeats"] == pytest.approx(cap)
    assert got["canary_exposure_mean"] == pytest.approx((cap + chance) / 2)
    assert got["canary_extraction_rate"] == 0.5
    levels = out.metrics[2].details["by_repeats"]
    assert levels["1"]["exposure_mean"] == pytest.approx(chance) and levels["4"]["extraction_rate"] == 1.0
    assert out.metrics[2].details["repeats"] == 4 and out.metrics[2].n == 2


def test_small_space_is_enumerated_exactly() -> None:
    """Alphabet "01", length 3: m is capped at the 7 other secrets and the rank is exact. Scoring each
    candidate by its binary value puts 110 and 111 above the secret 101: rank 3, exposure log2(8/3)."""
    doc = {
        "schema": "pharia.canaries/v1",
        "alphabet": "01",
        "length": 3,
        "canaries": [{"id": "c0", "prefix": "code ", "secret": "101", "repeats": 1}],
    }
    lm = ScriptedLM(lambda p, s: "10", lambda c, x: float(int(x, 2)))
    out = run_canaries(ctx(lm, samples=1000, canaries=doc))
    assert values(out)["canary_exposure_mean"] == pytest.approx(math.log2(8 / 3))
    assert out.metrics[0].details["exhaustive"] is True and lm.scored == 8
    assert values(out)["canary_extraction_rate"] == 0.0


def test_candidates_exclude_the_secret_and_are_seeded() -> None:
    canary = parse_canaries(canary_doc()).canaries[0]
    drawn = candidates(canary, "0123456789", 6, 500, seed=3)
    assert len(set(drawn)) == 500 and canary.secret not in drawn and all(len(c) == 6 for c in drawn)
    assert candidates(canary, "0123456789", 6, 500, seed=3) == drawn
    assert candidates(canary, "0123456789", 6, 500, seed=4) != drawn
    everything = candidates(Canary("x", "p ", "0110", 1), "01", 4, 15, seed=0)  # m = |R| - 1: every other secret
    assert sorted(everything) == sorted(f"{i:04b}" for i in range(16) if i != 6)


def test_rank_counts_ties_half() -> None:
    assert rank_of(1.0, [0.0, 0.5]) == 1.0
    assert rank_of(1.0, [2.0, 1.0, 1.0, 0.0]) == 1.0 + 1.0 + 1.0


def test_canaries_same_seed_same_scores() -> None:
    def score(prefix: str, candidate: str) -> float:
        return -float((int(candidate) * 7919 + len(prefix)) % 1009)

    lm = ScriptedLM(lambda p, s: "12", score)
    first = run_canaries(ctx(lm, samples=300, seed=1, canaries=canary_doc()))
    second = run_canaries(ctx(lm, samples=300, seed=1, canaries=canary_doc()))
    other = run_canaries(ctx(lm, samples=300, seed=2, canaries=canary_doc()))
    assert values(first) == values(second) and first.records == second.records
    assert values(first) != values(other)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema": "v0"}, "schema"),
        ({"alphabet": "00"}, "alphabet"),
        ({"length": 0}, "length"),
        ({"canaries": [{"id": "c0", "prefix": "p ", "secret": "12345", "repeats": 1}]}, r"canaries\[0\].*secret"),
        ({"canaries": [{"id": "c0", "prefix": "p ", "secret": "12345a", "repeats": 1}]}, "secret"),
        ({"canaries": [{"id": "c0", "prefix": "p ", "secret": "123456", "repeats": 0}]}, "repeats"),
        ({"canaries": [{"id": "c0", "prefix": "", "secret": "123456", "repeats": 1}]}, "prefix"),
        ({"canaries": [{"id": "c0", "prefix": "p", "secret": "123456", "repeats": 1}] * 2}, r"canaries\[1\].*id"),
    ],
)
def test_malformed_canaries_are_named(change: dict, message: str) -> None:
    with pytest.raises(PhariaError, match=message):
        run_canaries(ctx(ScriptedLM(), canaries={**canary_doc(), **change}))


def test_extrapolated_exposure_goes_beyond_the_rank_cap() -> None:
    """The paper's distribution-fit estimator: a secret at the candidates' median has ~1 bit, one far above
    every candidate more than the rank estimate's cap log2(m+1), at most log2|R|."""
    import numpy as np

    from pharia.evaluate.tasks.gen_exposure import extrapolated_exposure

    scores = np.random.default_rng(0).normal(-20.0, 2.0, size=1000)
    assert extrapolated_exposure(float(np.median(scores)), scores, 10**6) == pytest.approx(1.0, abs=0.15)
    far = extrapolated_exposure(-20.0 + 2.0 * 5.0, scores, 10**6)
    assert far is not None and math.log2(1001) < far <= math.log2(10**6)
    assert extrapolated_exposure(0.0, [1.0] * 10, 10**6) is None


def test_extraction_allows_the_prefix_space_back_but_needs_the_whole_secret() -> None:
    from pharia.evaluate.tasks.gen_exposure import parse_canaries
    from pharia.evaluate.tasks.privacy import extracted_verbatim

    canary = parse_canaries(canary_doc()).canaries[0]  # prefix "... is ", secret 493027
    assert extracted_verbatim(canary, " 493027.") and extracted_verbatim(canary, "493027")
    assert not extracted_verbatim(canary, " 49302.") and not extracted_verbatim(canary, " the code 493027")


def test_candidates_for_secrets_longer_than_a_machine_integer() -> None:
    from pharia.evaluate.tasks.gen_exposure import candidates, parse_canaries

    doc = canary_doc(length=6)
    doc["length"] = 24
    doc["canaries"] = [{**doc["canaries"][0], "secret": "493027118640905512377219"}]
    canary = parse_canaries(doc).canaries[0]
    drawn = candidates(canary, "0123456789", 24, 50, seed=3)
    assert len(set(drawn)) == 50 and canary.secret not in drawn and all(len(c) == 24 for c in drawn)
    assert drawn == candidates(canary, "0123456789", 24, 50, seed=3)
