"""The requirement catalogue: what a model version must show, the category each requirement belongs
to, and the EU AI Act articles its evidence supports. Each check reads only the evidence dict the
pipeline assembled (data manifest, training summary, evaluation metrics, lineage), so the same
checks run on a fresh pipeline result and on a stored dossier."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pharia.config import GatesConfig, ValidationConfig

PASS, FAIL, NOT_EVALUATED = "pass", "fail", "not_evaluated"
Outcome = tuple[str, list[str]]


@dataclass(frozen=True)
class Requirement:
    id: str
    title: str
    category: str
    articles: tuple[str, ...]
    check: Callable[[dict, GatesConfig, ValidationConfig], Outcome]


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


def _lm_quality(ev: dict, gates: GatesConfig, val: ValidationConfig) -> Outcome:
    m = ev["evaluation"]["metrics"]
    worst = m.get("eval_ppl_worst_domain")
    if worst is None:
        return NOT_EVALUATED, ["no held-out perplexity in the evaluation"]
    per_domain = [f"{k.removeprefix('eval_ppl_')}: {v:.1f}" for k, v in sorted(m.items()) if k.startswith("eval_ppl_")]
    evidence = [f"worst-domain held-out perplexity {worst:.1f} (gate <= {gates.max_perplexity:g})", *per_domain]
    return (PASS if worst <= gates.max_perplexity else FAIL), evidence


def _toxicity(ev: dict, gates: GatesConfig, val: ValidationConfig) -> Outcome:
    m = ev["evaluation"]["metrics"]
    rate = m.get("eval_toxicity_rate")
    if rate is None:
        return NOT_EVALUATED, ["no toxicity probe in the evaluation"]
    mean, worst = m.get("eval_toxicity_mean", float("nan")), m.get("eval_toxicity_max", float("nan"))
    evidence = [
        f"toxic continuation rate {rate:.1%} on RealToxicityPrompts-challenging prompts "
        f"(gate <= {gates.max_toxicity_rate:.0%})",
        f"mean toxicity {mean:.3f}, max {worst:.3f}",
    ]
    return (PASS if rate <= gates.max_toxicity_rate else FAIL), evidence


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


def _later(suite: str) -> Callable[[dict, GatesConfig, ValidationConfig], Outcome]:
    def check(ev: dict, gates: GatesConfig, val: ValidationConfig) -> Outcome:
        return NOT_EVALUATED, [f"{suite} is not part of this pipeline's evaluation yet"]

    return check


CATALOGUE: tuple[Requirement, ...] = (
    Requirement(
        "DG-1",
        "Training data sources and licences documented",
        "privacy and data governance",
        ("Art. 10(2)", "Art. 11", "Annex IV(2)(d)"),
        _sources_documented,
    ),
    Requirement(
        "DG-2",
        "Every input row kept, filtered or quarantined, and counted",
        "privacy and data governance",
        ("Art. 10(2)",),
        _rows_accounted,
    ),
    Requirement(
        "DG-3",
        "Training data passed the data-quality suite",
        "privacy and data governance",
        ("Art. 10(3)",),
        _validated,
    ),
    Requirement(
        "REP-1",
        "Training mixture matches the declared domain targets",
        "representation / absence of bias",
        ("Art. 10(3)", "Art. 10(4)"),
        _mixture,
    ),
    Requirement(
        "CAP-1", "Held-out language-modelling quality within the gate", "capabilities", ("Art. 15(1)",), _lm_quality
    ),
    Requirement(
        "TOX-1",
        "Toxicity of generations within the gate",
        "harmful content and toxicity",
        ("Art. 9", "Art. 15(4)"),
        _toxicity,
    ),
    Requirement(
        "TRN-1",
        "Lineage of code, configuration and data recorded",
        "transparency",
        ("Art. 11", "Art. 12", "Art. 13", "Annex IV"),
        _lineage,
    ),
    Requirement(
        "BIAS-1",
        "Bias benchmarks (CrowS-Pairs, StereoSet, BBQ, WinoBias)",
        "representation / absence of bias",
        ("Art. 10(2)(f)", "Art. 15"),
        _later("the bias suite"),
    ),
    Requirement(
        "FAIR-1",
        "Fairness across demographic groups (BOLD gaps)",
        "fairness",
        ("Art. 10(2)(f)",),
        _later("the fairness suite"),
    ),
    Requirement(
        "TRU-1",
        "Truthfulness (TruthfulQA)",
        "truthfulness and societal alignment",
        ("Art. 15(1)",),
        _later("the truthfulness suite"),
    ),
    Requirement(
        "ROB-1",
        "Robustness to adversarial input",
        "robustness",
        ("Art. 15(4)", "Art. 15(5)"),
        _later("the robustness suite"),
    ),
    Requirement(
        "PRIV-1",
        "No PII or memorised canaries in generations",
        "privacy and data governance",
        ("Art. 10(5)",),
        _later("the privacy suite"),
    ),
)


def assess(evidence: dict, gates: GatesConfig, validation: ValidationConfig) -> list[dict]:
    results = []
    for req in CATALOGUE:
        status, lines = req.check(evidence, gates, validation)
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
