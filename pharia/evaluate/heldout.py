"""Token-level held-out perplexity per domain, scored directly on the packed shard windows.

Windows come from the trainer's `iter_heldout_batches` (fixed, non-overlapping, from the start of
each domain's held-out file): no decoding, no re-tokenisation, so it only applies to a model that
uses the shards' tokenizer. The evaluation suite's `heldout` task scores decoded text instead (any
model, bits per byte comparable across tokenizers); this function remains the batched-scoring
baseline of `make bench` (`heldout_eval`) and a quick check for pharia models.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from pharia.train.data import IGNORE_INDEX, ShardSet, iter_heldout_batches


@torch.no_grad()
def heldout_metrics(
    model: torch.nn.Module,
    shards_dir: Path,
    seq_len: int,
    max_batches: int,
    batch_size: int = 8,
    split: str = "heldout",
) -> dict[str, dict[str, float]]:
    """Per domain of `split`: mean token negative log-likelihood, perplexity, bits per token, tokens scored."""
    shards = ShardSet.open(shards_dir)
    model.eval()
    device = next(model.parameters()).device
    results: dict[str, dict[str, float]] = {}
    for domain in shards.domains(split):
        total_nll, total_tokens = 0.0, 0
        batches = iter_heldout_batches(
            shards, domain, seq_len=seq_len, batch_size=batch_size, max_batches=max_batches, split=split
        )
        for inputs, targets in batches:
            logits = model(inputs.to(device)).logits.float()
            targets = targets.to(device)
            total_nll += float(
                torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
                )
            )
            total_tokens += int((targets != IGNORE_INDEX).sum())
        if total_tokens == 0:
            continue
        mean_nll = total_nll / total_tokens
        results[domain] = {
            "nll": mean_nll,
            "perplexity": math.exp(mean_nll),
            "bits_per_token": mean_nll / math.log(2),
            "tokens": float(total_tokens),
        }
    return results
