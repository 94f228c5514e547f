"""Gates: thresholds from config judged per requirement, with the categories and EU AI Act articles
of the catalogue; configuration mistakes fail before any model is loaded."""

from __future__ import annotations

import pytest

from pharia.compliance.catalogue import BY_ID, CATALOGUE, CATEGORIES
from pharia.config import GateConfig, GatesConfig
from pharia.errors import PhariaError
from pharia.evaluate.gates import FAIL, NOT_EVALUATED, PASS, evaluate_gates
from pharia.evaluate.metrics import MetricSpec

SPECS = {
    "mmlu_acc": MetricSpec("mmlu_acc", "capabilities", "mmlu", "accuracy", "higher"),
    "ppl_worst_domain": MetricSpec("ppl_worst_domain", "language_modelling", "heldout", "ppl", "lower"),
    "crows_stereotype_score": MetricSpec("crows_stereotype_score", "bias", "crows", "ss", "target", target=50.0),
    "rtp_toxicity_probability": MetricSpec("rtp_toxicity_probability", "toxicity", "rtp", "p", "lower"),
}
REPRO = {"seed": 0, "batch_size": 4, "harness": "h", "hardware": "cpu", "model_sha256": "m", "datasets": {"d": "s"}}


def entries(**values: float | None) -> list[dict]:
    return [{"name": k, "value": v, "n": 7, **REPRO} for k, v in values.items()]


def gates(**metrics: GateConfig) -> GatesConfig:
    return GatesConfig(metrics=metrics)


def requirement(result: dict, rid: str) -> dict:
    return next(r for r in result["requirements"] if r["id"] == rid)


def test_min_max_and_deviation_bounds() -> None:
    cfg = gates(
        mmlu_acc=GateConfig(requirement="CAP-1", min=0.3),
        ppl_worst_domain=GateConfig(requirement="CAP-1", max=100),
        crows_stereotype_score=GateConfig(requirement="BIAS-1", max_deviation=10),
    )
    ok = evaluate_gates(entries(mmlu_acc=0.31, ppl_worst_domain=100.0, crows_stereotype_score=41.0), cfg, SPECS)
    assert requirement(ok, "CAP-1")["status"] == PASS and requirement(ok, "BIAS-1")["status"] == PASS
    low = evaluate_gates(entries(mmlu_acc=0.29, ppl_worst_domain=50.0, crows_stereotype_score=61.0), cfg, SPECS)
    assert requirement(low, "CAP-1")["status"] == FAIL and requirement(low, "BIAS-1")["status"] == FAIL
    assert any("mmlu_acc = 0.29 (n=7), gate >= 0.3: fail" == line for line in requirement(low, "CAP-1")["evidence"])
    assert any("within 10 of 50" in g["threshold"] for g in low["gates"])
    assert not low["passed"]


def test_missing_or_nan_metrics_are_not_evaluated_and_never_pass() -> None:
    cfg = gates(
        mmlu_acc=GateConfig(requirement="CAP-1", min=0.3),
        ppl_worst_domain=GateConfig(requirement="CAP-1", max=100),
        rtp_toxicity_probability=GateConfig(requirement="TOX-1", max=0.1),
    )
    result = evaluate_gates(entries(mmlu_acc=0.5, rtp_toxicity_probability=None), cfg, SPECS)
    assert requirement(result, "CAP-1")["status"] == NOT_EVALUATED  # one of its two gates has no value
    assert requirement(result, "TOX-1")["status"] == NOT_EVALUATED
    assert requirement(result, "ROB-1")["evidence"] == ["no gate configured for this requirement (gates.metrics)"]
    assert result["summary"][PASS] == 0 and not result["passed"]


def test_a_failing_gate_fails_its_requirement_even_when_another_is_missing() -> None:
    cfg = gates(
        mmlu_acc=GateConfig(requirement="CAP-1", min=0.3),
        ppl_worst_domain=GateConfig(requirement="CAP-1", max=100),
    )
    assert requirement(evaluate_gates(entries(mmlu_acc=0.1), cfg, SPECS), "CAP-1")["status"] == FAIL


def test_every_requirement_carries_its_category_and_articles() -> None:
    result = evaluate_gates(entries(), gates(mmlu_acc=GateConfig(requirement="CAP-1", min=0)), SPECS)
    gated = [r for r in CATALOGUE if r.judged_by == "gates"]
    assert [r["id"] for r in result["requirements"]] == [r.id for r in gated]
    for r in result["requirements"]:
        assert r["category"] in CATEGORIES and r["articles"] == list(BY_ID[r["id"]].articles)
    assert set(CATEGORIES) == {r.category for r in CATALOGUE}  # every category has a requirement


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (gates(no_such_metric=GateConfig(requirement="CAP-1", max=1)), "no_such_metric: no such metric"),
        (gates(mmlu_acc=GateConfig(requirement="DG-1", min=0)), "not a gated requirement"),
        (gates(mmlu_acc=GateConfig(requirement="CAP-1", max_deviation=1)), "has no ideal value"),
    ],
)
def test_bad_gate_config_is_refused_with_the_field(cfg: GatesConfig, message: str) -> None:
    with pytest.raises(PhariaError, match=message):
        evaluate_gates(entries(mmlu_acc=0.5), cfg, SPECS)


def test_a_gate_needs_a_bound() -> None:
    with pytest.raises(ValueError, match="min, max or max_deviation"):
        GateConfig(requirement="CAP-1")


def test_missing_reproducibility_fields_are_listed() -> None:
    rows = entries(mmlu_acc=0.5)
    rows[0]["hardware"] = ""
    result = evaluate_gates(rows, gates(mmlu_acc=GateConfig(requirement="CAP-1", min=0)), SPECS)
    assert result["reproducibility"] == {"complete": False, "gaps": ["mmlu_acc: missing hardware"], "entries": 1}
