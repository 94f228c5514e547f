"""Metric definitions: every number the suite reports has a `MetricSpec` here, declared next to the
code that computes it (each task module's `SPECS`), so the documentation (`docs/metrics.md`,
generated from these specs and checked by a test) cannot drift from the code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

# the 0-shot multiple-choice tasks whose accuracy and calibration the suite averages
MC_TASKS = ("hellaswag", "piqa", "boolq", "openbookqa", "commonsenseqa", "siqa", "mmlu")
Category = Literal[
    "language_modelling",
    "capabilities",
    "calibration",
    "robustness",
    "toxicity",
    "bias",
    "fairness",
    "truthfulness",
    "privacy",
    "generation",
]
CATEGORIES: tuple[str, ...] = get_args(Category)  # report order


@dataclass(frozen=True)
class MetricSpec:
    """`name` is the metric's key everywhere (metrics.json, MLflow, gates); `better` says which
    direction is good ("higher", "lower", or "target" with the ideal `target` value, e.g. a
    stereotype score of 50); `description` is the definition a reader of the report sees."""

    name: str
    category: Category
    task: str
    description: str
    better: Literal["higher", "lower", "target"]
    target: float | None = None
    unit: str = ""


@dataclass
class MetricValue:
    """One computed metric: `n` is how many examples (or tokens, for perplexity: see `unit`) it is
    computed from; `details` holds task-specific extras kept in metrics.json (per-group values)."""

    name: str
    value: float
    n: int
    details: dict[str, Any] = field(default_factory=dict)
