"""The one interface through which the harness talks to a causal language model.

Every task is written against `EvalLM` alone, so the same code scores our own checkpoints
(`pharia.evaluate.adapters.pharia_lm`) and any Hugging Face `transformers` causal LM loaded from a
local directory or GGUF file (`pharia.evaluate.adapters.hf_lm`). Three operations cover every
metric in the suite:

- `loglikelihood`: log p(continuation | context) for (context, continuation) pairs, batched: the
  basis of multiple choice, cloze, pairwise bias scores and canary exposure;
- `loglikelihood_rolling`: log p(text) of whole texts (perplexity, bits per byte);
- `generate`: greedy (temperature 0) or sampled continuations of prompts (toxicity, BOLD, HONEST,
  PII, repetition).

Scores are natural-log probabilities summed over the continuation's tokens; `n_tokens` and the
text's UTF-8 byte count let callers normalise per token or per byte.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Scored:
    """log p(continuation | context), natural log, summed over the continuation's tokens."""

    logprob: float
    n_tokens: int
    greedy: bool  # every continuation token was the model's argmax (LAMBADA-style exact match)


@dataclass(frozen=True)
class Sampling:
    """How `generate` decodes: temperature 0 is greedy; `seed` makes sampling reproducible for a
    given batch size (recorded with every score)."""

    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0


@runtime_checkable
class EvalLM(Protocol):
    """What a model must offer to be evaluated. `batch_size` is how many sequences go through one
    forward pass; it is recorded with every score because sampled generations depend on it."""

    batch_size: int

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[Scored]:
        """One `Scored` per (context, continuation), in input order. An empty context means the
        continuation starts a document (scored after the model's document-start token)."""
        ...

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[Scored]:
        """log p(text) of each whole text from a document start, in windows of the model's context
        length when longer; `greedy` is whether every token was the argmax."""
        ...

    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[str]:
        """One continuation per prompt (new text only, stopped at end of document)."""
        ...

    def describe(self) -> dict[str, Any]:
        """Identity for the reproducibility record: at least `model` (path or name), `kind`,
        `sha256` of the weights, `parameters`, `dtype`, `max_length`, `tokenizer`."""
        ...
