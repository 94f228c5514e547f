"""Models behind the `EvalLM` protocol: our PhariaLM (`pharia_lm`), any local Hugging Face causal LM
or GGUF file (`hf_lm`), and `load_eval_lm(path)` (`resolve`), which tells which of them a path is.

Names are imported on first use, so importing this package costs neither torch nor transformers.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "PhariaEvalLM": "pharia.evaluate.adapters.pharia_lm",
    "HFEvalLM": "pharia.evaluate.adapters.hf_lm",
    "TokenScorer": "pharia.evaluate.adapters.batching",
    "load_eval_lm": "pharia.evaluate.adapters.resolve",
    "describe_source": "pharia.evaluate.adapters.resolve",
    "resolve_source": "pharia.evaluate.adapters.resolve",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
