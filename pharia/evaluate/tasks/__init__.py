"""The task registry: every task the suites can run, by name. Each module listed in `MODULES`
exports `TASKS: tuple[Task, ...]`; names are unique across modules (tested)."""

from __future__ import annotations

import importlib
from functools import cache

from pharia.evaluate.metrics import MetricSpec
from pharia.evaluate.tasks.base import Task

MODULES = (
    "lm_quality",
    "multiple_choice",
    "robustness",
    "bias",
    "toxicity",
    "truthfulness",
    "privacy",
    "generation",
)


@cache
def all_tasks() -> dict[str, Task]:
    tasks: dict[str, Task] = {}
    for module in MODULES:
        for task in importlib.import_module(f"pharia.evaluate.tasks.{module}").TASKS:
            if task.name in tasks:
                raise ValueError(f"task name {task.name!r} is defined twice (pharia.evaluate.tasks.{module})")
            tasks[task.name] = task
    return tasks


def all_specs() -> dict[str, MetricSpec]:
    """Every metric any task can report, by name."""
    specs: dict[str, MetricSpec] = {}
    for task in all_tasks().values():
        for spec in task.specs:
            if spec.name in specs:
                raise ValueError(f"metric {spec.name!r} is declared by two tasks")
            specs[spec.name] = spec
    return specs
