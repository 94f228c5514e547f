"""Batched log-likelihood scoring shared by every adapter: tokenisation at the context/continuation
boundary, windows, length-sorted right-padded batches, one forward per batch.

Only the model call differs between our PhariaLM and a `transformers` model, so each adapter hands
`TokenScorer` a `forward_logits(ids, attention_mask) -> logits` and an `encode(text) -> ids`; the
rest follows lm-evaluation-harness so that scores are comparable with published numbers:

- A (context, continuation) pair is encoded as `encode(context + continuation)` and `encode(context)`;
  the continuation's tokens are the whole's tokens after the context's. Trailing whitespace of the
  context is moved onto the continuation first ("Question: … Answer:" + " Paris"), because BPE
  vocabularies attach a leading space to the following word. An empty context is replaced by the
  document-start token: the continuation is then scored as the beginning of a document.
- Every scored token is predicted from as much preceding context as fits in `max_length` inputs:
  the sequence is left-truncated, the continuation kept. A continuation longer than `max_length`
  (and every `loglikelihood_rolling` text) is cut into consecutive chunks of at most `max_length`
  scored tokens; each chunk's window is the `max_length` tokens that end just before its last
  token, so the first chunk sees the document start and each later chunk is conditioned on the
  tokens before it that fit (for a full chunk: exactly one; lm-evaluation-harness's
  `get_rolling_token_windows` with context_len=1, i.e. non-overlapping windows, each token scored once).
- Windows from all requests are sorted by length, longest first, and cut into batches of
  `batch_size`, right-padded: sorting keeps padding (wasted compute) small, and right padding with a
  causal model and an attention mask leaves every real position's logits as they would be alone,
  so scores do not depend on the batch size (up to float rounding of different matmul shapes).
- log-softmax is taken in float32 over the scored positions only (bf16 logits would lose ~2
  significant digits in the normaliser); `greedy` is whether every scored token was the argmax.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from pharia.evaluate.lm import Scored

ForwardLogits = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Encode = Callable[[str], list[int]]


@dataclass(frozen=True)
class Window:
    """One row of a batch: `tokens[:-1]` are the inputs, `tokens[1:]` the targets, of which the
    last `n_scored` count towards request `request`."""

    request: int
    tokens: tuple[int, ...]
    n_scored: int


def split_context(context: str, continuation: str) -> tuple[str, str]:
    """Move the context's trailing whitespace onto the continuation (lm-evaluation-harness)."""
    stripped = context.rstrip()
    if len(stripped) == len(context):
        return context, continuation
    return stripped, context[len(stripped) :] + continuation


def score_windows(request: int, tokens: Sequence[int], first_scored: int, max_length: int) -> list[Window]:
    """Windows scoring `tokens[first_scored:]` (first_scored >= 1: the first token is never
    predicted), each token once, in chunks of at most `max_length` scored tokens, each chunk
    conditioned on as many preceding tokens as fit in `max_length` inputs."""
    if first_scored < 1:
        raise ValueError("the first token of a sequence has no context to be predicted from")
    windows: list[Window] = []
    start = first_scored
    while start < len(tokens):
        end = min(start + max_length, len(tokens))
        first = max(0, end - max_length - 1)
        windows.append(Window(request, tuple(tokens[first:end]), end - start))
        start = end
    return windows


@dataclass
class TokenScorer:
    """Scores token sequences with any causal LM through `forward_logits`.

    `forward_logits(ids (B, T) long, attention_mask (B, T) bool, True = real token)` returns logits
    (B, T, V) for right-padded rows; `encode` must not add special tokens; `document_start_id` is
    prepended where a text starts a document; `pad_id` only fills padding (never attended to or
    scored); `device` is where the id tensors are built.
    """

    forward_logits: ForwardLogits
    encode: Encode
    document_start_id: int
    pad_id: int
    max_length: int
    batch_size: int
    device: torch.device | str = "cpu"

    def __post_init__(self) -> None:
        if self.max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {self.max_length}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")

    # ------------------------------------------------------------------------------ requests
    def pair_tokens(self, requests: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        """(context ids, continuation ids) per request; contexts shared by several requests (the
        choices of one multiple-choice question) are encoded once."""
        cache: dict[str, list[int]] = {}

        def encode(text: str) -> list[int]:
            if text not in cache:
                cache[text] = list(self.encode(text))
            return cache[text]

        pairs: list[tuple[list[int], list[int]]] = []
        for context, continuation in requests:
            if context == "":
                pairs.append(([self.document_start_id], list(self.encode(continuation))))
                continue
            context, continuation = split_context(context, continuation)
            if context == "":  # the context was only whitespace: it now leads the continuation
                pairs.append(([self.document_start_id], list(self.encode(continuation))))
                continue
            context_ids = encode(context)
            whole = list(self.encode(context + continuation))
            pairs.append((context_ids, whole[len(context_ids) :]))
        return pairs

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[Scored]:
        """log p(continuation | context) per request, in input order."""
        windows: list[Window] = []
        lengths: list[int] = []
        for index, (context_ids, continuation_ids) in enumerate(self.pair_tokens(requests)):
            lengths.append(len(continuation_ids))
            windows += score_windows(index, context_ids + continuation_ids, len(context_ids), self.max_length)
        return self._collect(windows, lengths)

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[Scored]:
        """log p(text) from a document start per text, in input order (see the module docstring
        for the windows of texts longer than `max_length`)."""
        windows: list[Window] = []
        lengths: list[int] = []
        for index, text in enumerate(texts):
            ids = list(self.encode(text))
            lengths.append(len(ids))
            windows += score_windows(index, [self.document_start_id, *ids], 1, self.max_length)
        return self._collect(windows, lengths)

    # ------------------------------------------------------------------------------- batching
    def _collect(self, windows: list[Window], lengths: list[int]) -> list[Scored]:
        logprob = [0.0] * len(lengths)
        greedy = [True] * len(lengths)
        for window, value, is_greedy in self.score(windows):
            logprob[window.request] += value
            greedy[window.request] = greedy[window.request] and is_greedy
        return [Scored(logprob=logprob[i], n_tokens=lengths[i], greedy=greedy[i]) for i in range(len(lengths))]

    def score(self, windows: Sequence[Window]) -> list[tuple[Window, float, bool]]:
        """(window, summed log-prob of its scored tokens, all of them argmax) for every window,
        longest windows batched first."""
        order = sorted(range(len(windows)), key=lambda i: (-len(windows[i].tokens), i))
        results: list[tuple[Window, float, bool]] = []
        for start in range(0, len(order), self.batch_size):
            batch = [windows[i] for i in order[start : start + self.batch_size]]
            results += zip(batch, *self._score_batch(batch), strict=True)
        return results

    @torch.no_grad()
    def _score_batch(self, batch: list[Window]) -> tuple[list[float], list[bool]]:
        width = max(len(w.tokens) for w in batch) - 1
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.bool)
        for row, window in enumerate(batch):
            inputs = window.tokens[:-1]
            ids[row, : len(inputs)] = torch.tensor(inputs, dtype=torch.long)
            mask[row, : len(inputs)] = True
        logits = self.forward_logits(ids.to(self.device), mask.to(self.device))
        sums: list[torch.Tensor] = []
        argmax_ok: list[torch.Tensor] = []
        for row, window in enumerate(batch):
            n_inputs = len(window.tokens) - 1
            positions = logits[row, n_inputs - window.n_scored : n_inputs].float()
            targets = torch.tensor(window.tokens[-window.n_scored :], dtype=torch.long, device=positions.device)
            logprobs = positions.log_softmax(dim=-1).gather(-1, targets[:, None]).squeeze(-1)
            sums.append(logprobs.sum())
            argmax_ok.append((positions.argmax(dim=-1) == targets).all())
        return torch.stack(sums).tolist(), torch.stack(argmax_ok).tolist()
