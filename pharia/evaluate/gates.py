"""Gates: metric thresholds from config, judged into pass / fail / not evaluated per compliance
requirement, with the evidence an auditor needs to recheck each verdict.

The output (`gates.json`, schema `pharia.gates/v1`) is what registration tags the model version
with and what the compliance report shows for the model requirements; the thresholds live in
config (`gates.metrics`), the requirement categories and EU AI Act articles in the catalogue.
"""

from __future__ import annotations

import math
from typing import Any

from pharia.compliance.catalogue import BY_ID, CATALOGUE
from pharia.config import GateConfig, GatesConfig
from pharia.errors import PhariaError
from pharia.evaluate.metrics import MetricSpec

PASS, FAIL, NOT_EVALUATED = "pass", "fail", "not_evaluated"
GATES_SCHEMA = "pharia.gates/v1"
REPRO_FIELDS = ("seed", "batch_size", "datasets", "harness", "hardware", "model_sha256")


def check_gate_config(gates: GatesConfig, specs: dict[str, MetricSpec]) -> None:
    """Fail before any model is loaded when a gate names an unknown metric or requirement."""
    problems = []
    for metric, gate in gates.metrics.items():
        if metric not in specs:
            problems.append(f"gates.metrics.{metric}: no such metric (see docs/metrics.md)")
            continue
        req = BY_ID.get(gate.requirement)
        if req is None or req.judged_by != "gates":
            gated = ", ".join(r.id for r in CATALOGUE if r.judged_by == "gates")
            problems.append(
                f"gates.metrics.{metric}.requirement: {gate.requirement!r} is not a gated requirement ({gated})"
            )
        if gate.max_deviation is not None and specs[metric].target is None:
            problems.append(f"gates.metrics.{metric}.max_deviation: {metric} has no ideal value; use min or max")
    if problems:
        raise PhariaError("invalid gates config:\n  " + "\n  ".join(problems))


def _judge(metric: str, gate: GateConfig, entry: dict[str, Any] | None, spec: MetricSpec) -> dict[str, Any]:
    bounds = []
    if gate.min is not None:
        bounds.append(f">= {gate.min:g}")
    if gate.max is not None:
        bounds.append(f"<= {gate.max:g}")
    if gate.max_deviation is not None:
        bounds.append(f"within {gate.max_deviation:g} of {spec.target:g}")
    threshold = " and ".join(bounds)
    result: dict[str, Any] = {
        "metric": metric,
        "requirement": gate.requirement,
        "threshold": threshold,
        "min": gate.min,
        "max": gate.max,
        "max_deviation": gate.max_deviation,
        "target": spec.target,
    }
    value = None if entry is None else entry.get("value")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return {**result, "status": NOT_EVALUATED, "value": None, "n": 0, "evidence": f"{metric}: not computed"}
    ok = True
    if gate.min is not None:
        ok &= value >= gate.min
    if gate.max is not None:
        ok &= value <= gate.max
    if gate.max_deviation is not None and spec.target is not None:
        ok &= abs(value - spec.target) <= gate.max_deviation
    status = PASS if ok else FAIL
    n = int(entry.get("n", 0)) if entry else 0
    evidence = f"{metric} = {value:.4g} (n={n}), gate {threshold}: {status}"
    return {**result, "status": status, "value": value, "n": n, "evidence": evidence}


def reproducibility_gaps(entries: list[dict[str, Any]]) -> list[str]:
    """Metric entries lacking a reproducibility field (TRN-2's evidence)."""
    return [
        f"{e.get('name')}: missing {field}" for e in entries for field in REPRO_FIELDS if e.get(field) in (None, "", {})
    ]


def evaluate_gates(entries: list[dict[str, Any]], gates: GatesConfig, specs: dict[str, MetricSpec]) -> dict[str, Any]:
    """Judge every configured gate on the metric entries and roll them up per gated requirement."""
    check_gate_config(gates, specs)
    by_name = {e["name"]: e for e in entries}
    judged = [_judge(metric, gate, by_name.get(metric), specs[metric]) for metric, gate in gates.metrics.items()]
    requirements = []
    for req in CATALOGUE:
        if req.judged_by != "gates":
            continue
        mine = [g for g in judged if g["requirement"] == req.id]
        statuses = {g["status"] for g in mine}
        if not mine:
            status, evidence = NOT_EVALUATED, ["no gate configured for this requirement (gates.metrics)"]
        else:
            status = FAIL if FAIL in statuses else PASS if statuses == {PASS} else NOT_EVALUATED
            evidence = [g["evidence"] for g in mine]
            if status == NOT_EVALUATED and PASS in statuses:
                evidence.insert(0, "some gated metrics were not computed, so the requirement cannot pass")
        requirements.append(
            {
                "id": req.id,
                "title": req.title,
                "category": req.category,
                "articles": list(req.articles),
                "status": status,
                "evidence": evidence,
                "gates": [g["metric"] for g in mine],
            }
        )
    gaps = reproducibility_gaps(entries)
    counts = {s: sum(r["status"] == s for r in requirements) for s in (PASS, FAIL, NOT_EVALUATED)}
    return {
        "schema": GATES_SCHEMA,
        "gates": judged,
        "requirements": requirements,
        "summary": counts,
        "passed": counts[FAIL] == 0 and counts[NOT_EVALUATED] == 0,
        "reproducibility": {"complete": not gaps, "gaps": gaps[:50], "entries": len(entries)},
    }
