"""Real-time content filter: every training window is scored before it reaches the optimiser.

The data stage already removes toxic documents, but windows are cut from packed shards after that
filter ran, a corpus may be swapped for one that was never filtered, and a document under the
threshold as a whole can still hold a toxic passage. This filter scores what the model is about to
learn from, with the same classifier as the data stage (`pharia.classifiers.toxicity.toxicity_scores`,
alt-profanity-check: offline, tens of thousands of texts per second on a CPU), in one batched call
per micro-batch.

- `drop`: a window whose decoded input text scores above the threshold is removed from the batch.
- `mask`: the window's target positions are cut into spans of `span_tokens`; the target tokens of
  each span are decoded and scored, and a flagged span's targets become -100. The model still reads
  the text as context (later tokens may depend on it) but is never trained to produce it.

Deterministic: the classifier is a fixed linear model and spans are cut at fixed offsets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from pharia.classifiers.toxicity import toxicity_scores
from pharia.config import ContentFilterConfig
from pharia.model.model import IGNORE_INDEX

COUNTER_KEYS = (
    "filter_windows_scored",
    "filter_windows_flagged",
    "filter_windows_dropped",
    "filter_spans_scored",
    "filter_spans_flagged",
    "filter_tokens_masked",
)


@dataclass
class FilterResult:
    """The micro-batch to train on and what the filter did to it.

    `inputs`/`targets` are (B', T): B' < B when `drop` removed windows (B' may be 0), the tensors
    passed in when nothing was flagged. Counters are always all of `COUNTER_KEYS`, so sums over
    micro-batches and ranks line up.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    counters: dict[str, float] = field(default_factory=dict)


class ContentFilter:
    """Scores micro-batches with the toxicity classifier; see the module docstring for the actions."""

    def __init__(self, cfg: ContentFilterConfig, tokenizer_file: Path) -> None:
        from tokenizers import Tokenizer

        self.cfg = cfg
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))

    def apply(self, inputs: torch.Tensor, targets: torch.Tensor) -> FilterResult:
        """Filter one micro-batch of (B, T) token ids; `targets` uses -100 for ignored positions."""
        if inputs.shape != targets.shape or inputs.dim() != 2:
            raise ValueError(f"inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)} must be the same (B, T)")
        if self.cfg.action == "drop":
            return self._drop(inputs, targets)
        return self._mask(inputs, targets)

    def _decode(self, rows: list[list[int]]) -> list[str]:
        """Text of token-id lists; special tokens (eos, pad, domain tags) are not text and are skipped."""
        return self.tokenizer.decode_batch(rows, skip_special_tokens=True)

    def _drop(self, inputs: torch.Tensor, targets: torch.Tensor) -> FilterResult:
        texts = self._decode(inputs.tolist())
        scored = [i for i, text in enumerate(texts) if text.strip()]
        scores = toxicity_scores([texts[i] for i in scored])
        flagged = {i for i, score in zip(scored, scores.tolist(), strict=True) if score > self.cfg.threshold}
        counters = dict.fromkeys(COUNTER_KEYS, 0.0)
        counters["filter_windows_scored"] = float(len(scored))
        counters["filter_windows_flagged"] = counters["filter_windows_dropped"] = float(len(flagged))
        if not flagged:
            return FilterResult(inputs, targets, counters)
        keep = torch.tensor([i for i in range(inputs.shape[0]) if i not in flagged], dtype=torch.long)
        keep = keep.to(inputs.device)
        return FilterResult(inputs.index_select(0, keep), targets.index_select(0, keep.to(targets.device)), counters)

    def _mask(self, inputs: torch.Tensor, targets: torch.Tensor) -> FilterResult:
        span = self.cfg.span_tokens
        rows = targets.tolist()
        where: list[tuple[int, int]] = []  # (window, first position) of each span with scorable text
        pieces: list[list[int]] = []
        for row, ids in enumerate(rows):
            for start in range(0, len(ids), span):
                tokens = [t for t in ids[start : start + span] if t != IGNORE_INDEX]
                if tokens:
                    where.append((row, start))
                    pieces.append(tokens)
        texts = self._decode(pieces)
        kept = [i for i, text in enumerate(texts) if text.strip()]
        scores = toxicity_scores([texts[i] for i in kept])
        flagged = [where[i] for i, score in zip(kept, scores.tolist(), strict=True) if score > self.cfg.threshold]
        counters = dict.fromkeys(COUNTER_KEYS, 0.0)
        counters["filter_windows_scored"] = float(len({where[i][0] for i in kept}))
        counters["filter_spans_scored"] = float(len(kept))
        counters["filter_spans_flagged"] = float(len(flagged))
        counters["filter_windows_flagged"] = float(len({row for row, _ in flagged}))
        if not flagged:
            return FilterResult(inputs, targets, counters)
        masked = targets.detach().cpu().clone()
        for row, start in flagged:
            piece = masked[row, start : start + span]
            counters["filter_tokens_masked"] += float((piece != IGNORE_INDEX).sum())
            piece.fill_(IGNORE_INDEX)
        return FilterResult(inputs, masked.to(targets.device), counters)
