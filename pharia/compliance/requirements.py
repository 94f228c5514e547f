"""Judging the requirement catalogue (`pharia.compliance.catalogue`) on the evidence a pipeline
assembled (data manifest, training summary, evaluation results and gates, lineage). Data and lineage
requirements are checked here; model requirements take the evaluation's gate verdicts, so the
thresholds live in one place (`gates.metrics` in config). Each check reads only the evidence dict,
so the same checks run on a fresh pipeline result and on a stored dossier."""

from __future__ import annotations

from collections.abc import Callable

from pharia.compliance.catalogue import CATALOGUE
from pharia.config import GatesConfig, ValidationConfig

PASS, FAIL, NOT_EVALUATED = "pass", "fail", "not_evaluated"
Outcome = tuple[str, list[str]]


def _sources_documented(ev: dict, gates: GatesConfig, val: ValidationConfig) -> Outcome:
    sources = ev["data"]["sources"]
    unknown = [s["name"] for s in sources if s.get("license", "unknown") in ("", "unknown")]
    evidence = [f"{s['name']} ({s['domain']}): licence {s.get('license')}" for s in sources]
    if unknown:
        return FAIL, [f"sources without a licence: {', '.join(unknown)}", *evidence]
    return PASS, evidence


def _rows_accounted(ev: dict, gates: GatesConfig, val: ValidationConfig) -> Outcome:
    evidence, ok = [], True
    for s in ev["data"]["sources"]:
        filtered, quarantined = sum(s["filtered"].values()), sum(s["quarantined"].values())
        balanced = s["rows_in"] == s["kept"] + filtered + quarantined
        ok &= balanced
        evidence.append(
            f"{s['name']}: {s['rows_in']} in = {s['kept']} kept + {filtered} filtered + {quarantined} quarantined"
            + ("" if balanced else "  <-- does not add up")
        )
    return (PASS if ok else FAIL), evidence


def _validated(ev: dict, gates: GatesConfig, val: ValidationConfig) -> Outcome:
    v = ev["data"]["validation"]
    evidence = [
        f"Great Expectations: {v['successful']} of {v['evaluated']} expectations met",
        f"Data Docs: {v['data_docs']}",
    ]
    if not gates.require_data_validation:
        return NOT_EVALUATED, ["gate disabled in config (gates.require_data_validation: false)", *evidence]
    return (PASS if v["success"] else FAIL), evidence


def _mixture(ev: dict, gates: GatesConfig, val: ValidationConfig) -> Outcome:
    """Judged on what training actually drew when the trainer recorded it, else on packed tokens.

    Packed token shares can drift from the character-based sampling targets (other scripts cost
    more tokens per character); the trainer draws windows by the targets, so the drawn shares are
    the mixture the model saw. Both are shown.
    """
    packed = ev["data"]["domain_shares"]
    drawn = ev.get("training", {}).get("mixture") or {}
    tol = val.domain_share_tolerance
    evidence, off = [], []
    for domain, share in sorted(packed.items()):
        line = f"{domain}: target {share['target']:.1%}, packed tokens {share['achieved']:.1%}"
        judged = share["achieved"]
        if domain in drawn:
            d = drawn[domain]
            line += f", training windows {d['drawn']:.1%} ({d['epochs']:.2f} epochs)"
            judged = d["drawn"]
        if abs(judged - share["target"]) > tol:
            off.append(domain)
            line += "  <-- outside tolerance"
        evidence.append(line)
    basis = "training windows" if drawn else "packed tokens"
    evidence.append(f"judged on {basis}, tolerance ±{tol:.0%} (data.validation.domain_share_tolerance)")
    return (FAIL if off else PASS), evidence


def _lineage(ev: dict, gates: GatesConfig, val: ValidationConfig) -> Outcome:
    lin = ev["lineage"]
    missing = [k for k in ("config_hash", "git_commit", "data_manifest_sha256") if lin.get(k) in (None, "", "unknown")]
    evidence = [f"{k}: {v}" for k, v in lin.items()]
    training = ev.get("training", {})
    evidence.append(
        f"trained {training.get('steps')} steps, DeepSpeed ZeRO-{training.get('zero_stage')}, "
        f"{training.get('precision')} on {training.get('device')} x{training.get('world_size')}"
    )
    if missing:
        return FAIL, [f"missing lineage: {', '.join(missing)}", *evidence]
    return PASS, evidence


def _gated(req_id: str) -> Callable[[dict, GatesConfig, ValidationConfig], Outcome]:
    """A model requirement: its verdict is the evaluation's gate roll-up (gates.json)."""

    def check(ev: dict, gates: GatesConfig, val: ValidationConfig) -> Outcome:
        judged = (ev.get("evaluation") or {}).get("gates") or {}
        for req in judged.get("requirements", []):
            if req["id"] == req_id:
                return req["status"], list(req["evidence"])
        return NOT_EVALUATED, ["the evaluation judged no gates (run the full suite with a gates config)"]

    return check


def _evaluation_reproducible(ev: dict, gates: GatesConfig, val: ValidationConfig) -> Outcome:
    judged = (ev.get("evaluation") or {}).get("gates") or {}
    repro = judged.get("reproducibility")
    if not repro or not repro.get("entries"):
        return NOT_EVALUATED, ["no evaluation results"]
    fields = (ev.get("evaluation") or {}).get("reproducibility") or {}
    evidence = [f"{k}: {v}" for k, v in fields.items()]
    evidence.insert(
        0, f"{repro['entries']} metric entries, each with seed, batch size, dataset sha256s, harness, hardware"
    )
    if not repro["complete"]:
        return FAIL, [f"{len(repro['gaps'])} gaps, e.g. " + "; ".join(repro["gaps"][:5]), *evidence]
    return PASS, evidence


CHECKS: dict[str, Callable[[dict, GatesConfig, ValidationConfig], Outcome]] = {
    "DG-1": _sources_documented,
    "DG-2": _rows_accounted,
    "DG-3": _validated,
    "REP-1": _mixture,
    "TRN-1": _lineage,
    "TRN-2": _evaluation_reproducible,
}


def assess(evidence: dict, gates: GatesConfig, validation: ValidationConfig) -> list[dict]:
    """Every catalogue requirement judged: data and lineage by their checks, model requirements by
    the evaluation's gates."""
    results = []
    for req in CATALOGUE:
        check = _gated(req.id) if req.judged_by == "gates" else CHECKS[req.id]
        status, lines = check(evidence, gates, validation)
        results.append(
            {
                "id": req.id,
                "title": req.title,
                "category": req.category,
                "articles": list(req.articles),
                "status": status,
                "evidence": lines,
            }
        )
    return results
