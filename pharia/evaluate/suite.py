"""Run a suite (`fast` or `full`) of evaluation tasks on one model and write what an auditor needs.

Output directory:
- `metrics.json` (schema `pharia.eval/v2`): one entry per metric with name, category, value, n,
  its definition, and the reproducibility fields (seed, batch size, sha256 of every dataset file
  read, harness version, hardware, model identity and weights hash), plus tasks that could not run
  and why;
- `gates.json`: the config's gates judged per compliance requirement (`pharia.evaluate.gates`);
- `summary.md`: the table a person reads, grouped by category, with the gate verdicts;
- `samples/<task>.jsonl`: a few scored examples per task.

The same call with `out_dir=None` and no progress bar is the training loop's continuous evaluation.
"""

from __future__ import annotations

import json
import math
import platform
import shutil
import sys
import time
import traceback
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

import pharia
from pharia.config import EvalConfig, GatesConfig
from pharia.data.manifest import atomic_write_json
from pharia.data.progress import progress
from pharia.errors import PhariaError
from pharia.evaluate.lm import EvalLM
from pharia.evaluate.metrics import MC_TASKS, MetricSpec, MetricValue
from pharia.evaluate.tasks import all_specs, all_tasks
from pharia.evaluate.tasks.base import PipelineInputs, Task, TaskContext, TaskOutput, TaskSettings

HARNESS = f"pharia-eval/{pharia.__version__}"
SCHEMA = "pharia.eval/v2"
AGGREGATE_SPECS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "mc_mean_acc",
        "capabilities",
        "suite",
        "Unweighted mean of `<task>_acc` over the multiple-choice tasks that ran "
        "(HellaSwag, PIQA, BoolQ, OpenBookQA, CommonsenseQA, SIQA, MMLU); n = their summed examples.",
        "higher",
    ),
    MetricSpec(
        "mc_mean_ece",
        "calibration",
        "suite",
        "Unweighted mean of `<task>_ece` over the multiple-choice tasks that ran; n = their summed examples.",
        "lower",
    ),
)


def hardware() -> str:
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({platform.machine()})"
    return f"{device}; torch {torch.__version__}; {torch.get_num_threads()} threads"


def metric_specs() -> dict[str, MetricSpec]:
    """Every metric the harness can report: the tasks' plus the suite's aggregates."""
    return {**all_specs(), **{s.name: s for s in AGGREGATE_SPECS}}


def check_suite(cfg: EvalConfig, suite: str) -> list[str]:
    """The suite's task names, failing with the known names when one is unknown."""
    if suite not in cfg.suites:
        raise PhariaError(f"unknown suite {suite!r}: use one of {sorted(cfg.suites)}")
    known = all_tasks()
    unknown = [name for name in cfg.suites[suite] if name not in known]
    if unknown:
        raise PhariaError(f"eval.suites.{suite}: unknown task(s) {unknown}; known tasks: {sorted(known)}")
    return list(cfg.suites[suite])


def _aggregates(values: dict[str, MetricValue]) -> list[MetricValue]:
    out = []
    for metric, suffix in (("mc_mean_acc", "_acc"), ("mc_mean_ece", "_ece")):
        parts = [values[t + suffix] for t in MC_TASKS if t + suffix in values]
        if parts:
            out.append(
                MetricValue(
                    metric,
                    sum(p.value for p in parts) / len(parts),
                    sum(p.n for p in parts),
                    {"tasks": [p.name for p in parts]},
                )
            )
    return out


def run_suite(
    lm: EvalLM,
    suite: str,
    cfg: EvalConfig,
    inputs: PipelineInputs,
    *,
    tasks: Sequence[str] | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Run the suite's tasks (or the given subset) and return the metrics.json document."""
    names = check_suite(cfg, suite)
    if tasks is not None:
        missing = [t for t in tasks if t not in names]
        if missing:
            raise PhariaError(f"task(s) {missing} are not in suite {suite!r} ({names})")
        names = [t for t in names if t in tasks]
    registry, specs = all_tasks(), metric_specs()
    model = lm.describe()
    repro = {
        "seed": cfg.seed,
        "batch_size": lm.batch_size,
        "harness": HARNESS,
        "hardware": hardware(),
        "model": model.get("model"),
        "model_sha256": model.get("sha256"),
    }
    started = time.perf_counter()
    entries: list[dict[str, Any]] = []
    values: dict[str, MetricValue] = {}
    skipped: dict[str, str] = {}
    failed: dict[str, str] = {}
    task_log: dict[str, dict[str, Any]] = {}
    samples: dict[str, list[dict[str, Any]]] = {}
    for index, name in enumerate(names, 1):
        task, run_cfg = registry[name], cfg.suites[suite][name]
        settings = TaskSettings(**run_cfg.model_dump())
        task_started = time.perf_counter()
        done = 0
        label = f"eval {suite} [{index}/{len(names)}] {name}"
        with progress(label, total=settings.samples) if show_progress else nullcontext(_ignore) as advance:

            def step(n: int, advance=advance) -> None:
                nonlocal done
                done += n
                advance(n)

            output = _run_isolated(
                task, TaskContext(lm=lm, settings=settings, seed=cfg.seed, inputs=inputs, progress=step)
            )
        wall = time.perf_counter() - task_started
        task_log[name] = {"wall_s": round(wall, 3), "examples": done, "datasets": output.datasets}
        if output.error:
            failed[name] = output.error
            continue
        if output.skipped:
            skipped[name] = output.skipped
            continue
        declared = {s.name for s in task.specs}
        for value in output.metrics:
            if value.name not in declared:
                raise PhariaError(f"task {name} reported {value.name!r}, which it does not declare")
            values[value.name] = value
            entries.append(_entry(value, specs[value.name], repro, output.datasets, wall))
        samples[name] = output.records
    by_name = {e["name"]: e for e in entries}
    for value in _aggregates(values):  # an average cites the files of every task it averages
        datasets = {k: v for t in value.details["tasks"] for k, v in by_name[t]["datasets"].items()}
        entries.append(_entry(value, specs[value.name], repro, datasets, 0.0))
    return {
        "schema": SCHEMA,
        "suite": suite,
        "model": model,
        "reproducibility": repro,
        "metrics": {e["name"]: e["value"] for e in entries},
        "entries": entries,
        "skipped": {**skipped, **{name: f"failed: {why}" for name, why in failed.items()}},
        "failed": failed,
        "tasks": task_log,
        "samples": samples,
        "wall_s": round(time.perf_counter() - started, 2),
    }


def _run_isolated(task: Task, ctx: TaskContext) -> TaskOutput:
    """One task, on its own RNG state, its failure recorded rather than raised.

    `fork_rng` seeds the task's torch RNG from the suite seed and restores the caller's afterwards,
    so continuous evaluation inside training leaves the trainer's RNG stream (dropout) untouched.
    A task that raises is reported under `failed` (and `skipped`, so its gates read "not
    evaluated" and the dossier "incomplete"), with its traceback on stderr: one broken task must
    not cost the other results, nor kill rank 0 of a training job while the other ranks wait.
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(ctx.seed)
        try:
            return task.run(ctx)
        except Exception as exc:  # recorded with its traceback, see the docstring
            traceback.print_exc(file=sys.stderr)
            return TaskOutput(error=f"{type(exc).__name__}: {exc}")


def _entry(
    value: MetricValue, spec: MetricSpec, repro: dict[str, Any], datasets: dict[str, str], wall: float
) -> dict[str, Any]:
    number = float(value.value)
    return {
        "name": value.name,
        "category": spec.category,
        "task": spec.task,
        "value": None if math.isnan(number) else number,
        "n": int(value.n),
        "better": spec.better,
        "target": spec.target,
        "unit": spec.unit,
        "description": spec.description,
        **repro,
        "datasets": datasets,
        "task_wall_s": round(wall, 3),
        "details": value.details,
    }


def _ignore(n: int = 1) -> None:
    """The progress callback when no bar is shown (continuous evaluation inside training)."""


def write_outputs(result: dict[str, Any], gates: dict[str, Any] | None, out_dir: Path) -> None:
    """metrics.json, gates.json, summary.md and samples/*.jsonl under `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sample_dir = out_dir / "samples"
    shutil.rmtree(sample_dir, ignore_errors=True)  # a reused DIR never mixes two evaluations
    (out_dir / "gates.json").unlink(missing_ok=True)
    sample_dir.mkdir()
    for task, records in result.get("samples", {}).items():
        with (sample_dir / f"{task}.jsonl").open("w", encoding="utf-8") as fh:
            for record in records:
                fh.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    document = {k: v for k, v in result.items() if k != "samples"}
    if gates is not None:
        atomic_write_json(out_dir / "gates.json", gates)
    (out_dir / "summary.md").write_text(render_markdown(document, gates), encoding="utf-8")
    atomic_write_json(out_dir / "metrics.json", document)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def render_markdown(result: dict[str, Any], gates: dict[str, Any] | None) -> str:
    """The suite's results as Markdown: gate verdicts per requirement, then metrics by category."""
    from pharia.evaluate.metrics import CATEGORIES

    repro = result["reproducibility"]
    lines = [
        f"# Evaluation: suite `{result['suite']}`",
        "",
        f"Model `{result['model'].get('model')}` ({result['model'].get('kind')}, "
        f"{result['model'].get('parameters', 0):,} parameters, sha256 `{str(repro.get('model_sha256'))[:12]}`). "
        f"Seed {repro['seed']}, batch size {repro['batch_size']}, {repro['harness']}, {repro['hardware']}. "
        f"{len(result['entries'])} metrics in {result['wall_s']:.0f} s.",
        "",
    ]
    if gates is not None:
        lines += ["## Gates", "", "| requirement | category | articles | status | evidence |", "|---|---|---|---|---|"]
        for req in gates["requirements"]:
            evidence = "<br>".join(req["evidence"])
            lines.append(
                f"| {req['id']} {req['title']} | {req['category']} | {', '.join(req['articles'])} | "
                f"**{req['status']}** | {evidence} |"
            )
        lines.append("")
    by_category: dict[str, list[dict[str, Any]]] = {}
    for entry in result["entries"]:
        by_category.setdefault(entry["category"], []).append(entry)
    for category in CATEGORIES:
        rows = by_category.get(category)
        if not rows:
            continue
        lines += [f"## {category.replace('_', ' ')}", "", "| metric | value | n | better | definition |"]
        lines.append("|---|---:|---:|---|---|")
        for e in rows:
            better = f"target {e['target']:g}" if e["better"] == "target" else e["better"]
            lines.append(f"| {e['name']} | {_fmt(e['value'])} | {e['n']} | {better} | {e['description']} |")
        lines.append("")
    if result.get("skipped"):
        lines += ["## Not evaluated", ""] + [f"- `{t}`: {why}" for t, why in result["skipped"].items()] + [""]
    return "\n".join(lines)


def gates_for(result: dict[str, Any], gates_cfg: GatesConfig) -> dict[str, Any]:
    from pharia.evaluate.gates import evaluate_gates

    gates = evaluate_gates(result["entries"], gates_cfg, metric_specs())
    gates["suite"] = result["suite"]
    gates["model"] = result["model"]
    return gates
