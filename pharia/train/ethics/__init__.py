"""The ethical constraints applied during training, each a pluggable term of the training loop.

- `content_filter`: `ContentFilter.apply(inputs, targets)` scores every window (or span of its targets)
  with the data stage's toxicity classifier and drops flagged windows or masks their targets.
- `adversarial`: `AdversarialTerm(forward, inputs, targets, micro_step=)` returns the weighted loss at
  a PGD perturbation of the token embeddings, to add to the clean loss before the single backward.
- `fairness`: `FairnessTerm(forward, inputs, targets, clean_logits)` returns a counterfactual logit
  pairing penalty on windows mentioning a demographic term (he <-> she, ...).

Every term returns float counters for MLflow next to its tensor, and none calls `backward()` itself:
the loop runs one backward per micro-batch on clean loss + terms, which is what DeepSpeed ZeRO-2/3
requires (parameter gradients are reduced once per micro-batch). `docs/training-ethics.md` has the
methods, costs and references. Modules are imported lazily so `import pharia.train.ethics` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pharia.train.ethics.adversarial import AdversarialTerm
    from pharia.train.ethics.content_filter import ContentFilter, FilterResult
    from pharia.train.ethics.fairness import FairnessTerm

__all__ = ["AdversarialTerm", "ContentFilter", "FairnessTerm", "FilterResult"]

_HOMES = {
    "AdversarialTerm": "pharia.train.ethics.adversarial",
    "ContentFilter": "pharia.train.ethics.content_filter",
    "FilterResult": "pharia.train.ethics.content_filter",
    "FairnessTerm": "pharia.train.ethics.fairness",
}


def __getattr__(name: str) -> Any:
    """`from pharia.train.ethics import ContentFilter` without importing torch for the CLI's sake."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_HOMES[name]), name)
