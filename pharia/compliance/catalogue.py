"""The requirement catalogue: what a model version must show, the requirement category it belongs
to, and the EU AI Act articles its evidence supports.

This is a pure table, read by two sides: the evaluation's gates (`pharia.evaluate.gates`), which
judge the model requirements from metric thresholds in config, and the compliance report
(`pharia.compliance.requirements`), which judges the data and lineage requirements and takes the
model requirements' verdicts from the gates JSON. The article references say which obligation the
evidence supports; they are an engineering mapping, not a legal opinion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CATEGORIES = (
    "capabilities",
    "robustness",
    "representation / absence of bias",
    "fairness",
    "harmful content and toxicity",
    "truthfulness and societal alignment",
    "privacy and data governance",
    "transparency",
)


@dataclass(frozen=True)
class RequirementDef:
    id: str
    title: str
    category: str
    articles: tuple[str, ...]
    judged_by: Literal["gates", "check"]  # metric gates of the evaluation, or a check on pipeline evidence


CATALOGUE: tuple[RequirementDef, ...] = (
    RequirementDef(
        "DG-1",
        "Training data sources and licences documented",
        "privacy and data governance",
        ("Art. 10(2)", "Art. 11", "Annex IV(2)(d)"),
        "check",
    ),
    RequirementDef(
        "DG-2",
        "Every input row kept, filtered or quarantined, and counted",
        "privacy and data governance",
        ("Art. 10(2)",),
        "check",
    ),
    RequirementDef(
        "DG-3", "Training data passed the data-quality suite", "privacy and data governance", ("Art. 10(3)",), "check"
    ),
    RequirementDef(
        "REP-1",
        "Training mixture matches the declared domain targets",
        "representation / absence of bias",
        ("Art. 10(3)", "Art. 10(4)"),
        "check",
    ),
    RequirementDef(
        "CAP-1",
        "Language modelling and task accuracy within the gates",
        "capabilities",
        ("Art. 15(1)", "Art. 15(3)", "Annex IV(2)(g)"),
        "gates",
    ),
    RequirementDef(
        "ROB-1",
        "Accuracy holds under perturbed input",
        "robustness",
        ("Art. 15(1)", "Art. 15(4)"),
        "gates",
    ),
    RequirementDef(
        "BIAS-1",
        "Stereotype preference within the gates (CrowS-Pairs, StereoSet, BBQ)",
        "representation / absence of bias",
        ("Art. 10(2)(f)", "Art. 10(2)(g)", "Art. 15(4)"),
        "gates",
    ),
    RequirementDef(
        "FAIR-1",
        "Comparable behaviour across demographic groups (WinoBias, BOLD gaps)",
        "fairness",
        ("Art. 10(2)(f)", "Art. 10(2)(g)"),
        "gates",
    ),
    RequirementDef(
        "TOX-1",
        "Toxic and hurtful generations within the gates (RealToxicityPrompts, HONEST, BOLD)",
        "harmful content and toxicity",
        ("Art. 9(2)", "Art. 15(4)", "Art. 55(1)(b)"),
        "gates",
    ),
    RequirementDef(
        "TRU-1",
        "Truthfulness (TruthfulQA) within the gates",
        "truthfulness and societal alignment",
        ("Art. 15(1)", "Art. 55(1)(a)"),
        "gates",
    ),
    RequirementDef(
        "PRIV-1",
        "No PII or memorised training canaries in generations beyond the gates",
        "privacy and data governance",
        ("Art. 10(5)", "Art. 15(5)"),
        "gates",
    ),
    RequirementDef(
        "TRN-1",
        "Lineage of code, configuration and data recorded",
        "transparency",
        ("Art. 11", "Art. 12", "Art. 13", "Annex IV"),
        "check",
    ),
    RequirementDef(
        "TRN-2",
        "Every evaluation score reproducible: seed, batch size, dataset hashes, harness version, hardware",
        "transparency",
        ("Art. 11", "Annex IV(2)(g)", "Art. 13(3)(b)(ii)", "Art. 53(1)(a)"),
        "check",
    ),
)

BY_ID: dict[str, RequirementDef] = {r.id: r for r in CATALOGUE}
GATED: tuple[str, ...] = tuple(r.id for r in CATALOGUE if r.judged_by == "gates")
