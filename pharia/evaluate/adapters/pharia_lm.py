"""`PhariaEvalLM`: our own PhariaLM behind the `EvalLM` protocol.

Two ways in. `from_dir(model_dir, tokenizer_file)` loads a model directory written by
`pharia.model.io.save_pretrained` (what `pharia train` publishes as `OUT/model`). The plain
constructor wraps a module that is already in memory, without copying it: the training loop's
continuous-evaluation hook builds one on rank 0 from the gathered fp32 weights and scores it
between steps, so the module may be in training mode and is put back as it was after every call.

The tokenizer is the data stage's `tokenizer.json` loaded with `pharia.data.tokenizer.load_tokenizer`
(special-token strings inside evaluation text stay text, so a prompt cannot forge a document
boundary); `<|endoftext|>` separates documents in the training shards, so it is the document start
a continuation is scored after when its context is empty.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pharia.data.manifest import sha256_file
from pharia.errors import PhariaError
from pharia.evaluate.adapters.batching import TokenScorer
from pharia.evaluate.lm import Sampling, Scored
from pharia.model.model import PhariaLM

DEFAULT_BATCH_SIZE = 8


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """ "auto": the first CUDA device when there is one, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def state_dict_sha256(model: torch.nn.Module) -> str:
    """sha256 over every stored parameter's name, dtype, shape and bytes, in module order: the
    identity of in-memory weights, which have no file to hash."""
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        tensor = param.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def special_ids_for(tokenizer: Any, tokenizer_file: Path | None) -> tuple[int, int]:
    """(eos, pad): from the shards manifest next to the tokenizer when there is one (the ids the
    model was trained with), else read from the tokenizer's own special tokens."""
    from pharia.data.tokenizer import special_token_ids

    if tokenizer_file is not None:
        manifest = Path(tokenizer_file).parent / "manifest.json"
        if manifest.is_file():
            try:
                data = json.loads(manifest.read_text(encoding="utf-8"))
                return int(data["eos_token_id"]), int(data["pad_token_id"])
            except (ValueError, KeyError, TypeError):
                raise PhariaError(
                    f"{manifest}: expected a shards manifest with eos_token_id and pad_token_id"
                ) from None
    ids = special_token_ids(tokenizer)
    return ids.eos_id, ids.pad_id


class PhariaEvalLM:
    """A PhariaLM and its tokenizer as an `EvalLM`; see the module docstring."""

    def __init__(
        self,
        model: PhariaLM,
        tokenizer: Any,
        *,
        eos_token_id: int,
        pad_token_id: int,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_length: int | None = None,
        model_id: str | None = None,
        weights_sha256: str | None = None,
        tokenizer_file: Path | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """`model` is used in place (never copied) on whatever device it lives on; `tokenizer` is a
        `tokenizers.Tokenizer` from `load_tokenizer`. `model_id` / `weights_sha256` name the
        weights in `describe()` (default: "in-memory" and a hash of the state dict at describe
        time); `extra` is merged into `describe()` (e.g. which checkpoint this is)."""
        cfg = model.cfg
        self.model = model
        self.tokenizer = tokenizer
        self.eos_token_id = int(eos_token_id)
        self.pad_token_id = int(pad_token_id)
        self.batch_size = int(batch_size)
        self.max_length = min(int(max_length or cfg.max_seq_len), cfg.max_seq_len)
        self.model_id = model_id
        self.weights_sha256 = weights_sha256
        self.tokenizer_file = Path(tokenizer_file) if tokenizer_file is not None else None
        self.extra = dict(extra or {})
        self._tokenizer_sha256 = (
            sha256_file(self.tokenizer_file)
            if self.tokenizer_file is not None
            else hashlib.sha256(tokenizer.to_str().encode()).hexdigest()  # its JSON, as a file would hold it
        )
        self.scorer = TokenScorer(
            forward_logits=self._forward_logits,
            encode=self._encode,
            document_start_id=self.eos_token_id,
            pad_id=self.pad_token_id,
            max_length=self.max_length,
            batch_size=self.batch_size,
            device=self.device,
        )

    @classmethod
    def from_dir(
        cls,
        model_dir: Path,
        tokenizer_file: Path,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        device: str | torch.device = "auto",
        dtype: torch.dtype | None = None,
        max_length: int | None = None,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> PhariaEvalLM:
        """Load `model_dir` (model.safetensors + config.json) and `tokenizer_file` (tokenizer.json,
        or the directory holding it). eos/pad default to the shards manifest beside the tokenizer,
        else the tokenizer's `<|endoftext|>` / `<|pad|>`."""
        from pharia.data.tokenizer import TOKENIZER_FILE, load_tokenizer
        from pharia.model.io import WEIGHTS_FILE, load_pretrained

        model_dir = Path(model_dir)
        tokenizer_file = Path(tokenizer_file)
        if tokenizer_file.is_dir():
            tokenizer_file = tokenizer_file / TOKENIZER_FILE
        tokenizer = load_tokenizer(tokenizer_file)
        eos, pad = special_ids_for(tokenizer, tokenizer_file)
        model, _ = load_pretrained(model_dir, map_location=pick_device(device), dtype=dtype)
        return cls(
            model,
            tokenizer,
            eos_token_id=eos if eos_token_id is None else eos_token_id,
            pad_token_id=pad if pad_token_id is None else pad_token_id,
            batch_size=batch_size,
            max_length=max_length,
            model_id=str(model_dir.resolve()),
            weights_sha256=sha256_file(model_dir / WEIGHTS_FILE),
            tokenizer_file=tokenizer_file.resolve(),
            extra=extra,
        )

    # ----------------------------------------------------------------------------- internals
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def _forward_logits(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # Rows are right-padded: with dense causal attention no real position can see a pad, so the
        # mask is only needed by the sparse pattern; without it SDPA takes its is_causal kernel.
        mask = attention_mask if self.model.cfg.attention == "sparse" else None
        return self.model(ids, attention_mask=mask).logits

    def _in_eval_mode(self) -> _EvalMode:
        return _EvalMode(self.model)

    # ------------------------------------------------------------------------------ EvalLM
    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[Scored]:
        with self._in_eval_mode():
            return self.scorer.loglikelihood(requests)

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[Scored]:
        with self._in_eval_mode():
            return self.scorer.loglikelihood_rolling(texts)

    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[str]:
        """Continuations in batches of `batch_size`, in input order, from one CPU generator seeded
        with `sampling.seed` per call: the same prompts, seed and batch size give the same text."""
        from pharia.model.generate import generate

        generator = torch.Generator(device="cpu").manual_seed(sampling.seed)
        texts: list[str] = []
        with self._in_eval_mode():
            for start in range(0, len(prompts), self.batch_size):
                chunk = [self._encode(p) for p in prompts[start : start + self.batch_size]]
                new_ids = generate(
                    self.model,
                    chunk,
                    max_new_tokens=sampling.max_new_tokens,
                    temperature=sampling.temperature,
                    top_p=sampling.top_p,
                    eos_token_id=self.eos_token_id,
                    pad_token_id=self.pad_token_id,
                    generator=generator,
                )
                texts += [self.tokenizer.decode(ids) for ids in new_ids]
        return texts

    def describe(self) -> dict[str, Any]:
        counts = self.model.num_parameters()
        return {
            "model": self.model_id or "in-memory",
            "kind": "pharia",
            "sha256": self.weights_sha256 or state_dict_sha256(self.model),
            "parameters": counts.unique,
            "parameters_applied": counts.total,
            "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
            "device": str(self.device),
            "max_length": self.max_length,
            "batch_size": self.batch_size,
            "tokenizer": str(self.tokenizer_file) if self.tokenizer_file is not None else "in-memory",
            "tokenizer_sha256": self._tokenizer_sha256,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            **self.extra,
        }


class _EvalMode:
    """Eval mode and no autograd for one call; the module's previous mode is restored after."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.was_training = model.training
        self.no_grad = torch.no_grad()

    def __enter__(self) -> None:
        self.model.eval()
        self.no_grad.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.no_grad.__exit__(*exc)
        self.model.train(self.was_training)
