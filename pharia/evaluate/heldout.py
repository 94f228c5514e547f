"""Held-out language-modelling metrics per domain, read straight from the packed shards.

Windows are fixed (non-overlapping, from the start of each domain's held-out file), so scores are
comparable across checkpoints and runs of the same data: no sampling enters the number.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from pharia.errors import PhariaError


def load_shard_manifest(shards_dir: Path) -> dict:
    path = shards_dir / "manifest.json"
    if not path.is_file():
        raise PhariaError(f"shard manifest not found: {path} (run the data stages first)")
    return json.loads(path.read_text(encoding="utf-8"))


def heldout_windows(shards_dir: Path, manifest: dict, domain: str, seq_len: int, max_windows: int) -> torch.Tensor:
    """Up to `max_windows` consecutive windows of `seq_len + 1` tokens of one domain's held-out split."""
    entry = manifest["splits"]["heldout"][domain]
    tokens = np.memmap(shards_dir / entry["file"], dtype=manifest["dtype"], mode="r")
    n = min(max_windows, (len(tokens) - 1) // seq_len)
    if n <= 0:
        return torch.empty(0, seq_len + 1, dtype=torch.long)
    rows = [np.asarray(tokens[i * seq_len : i * seq_len + seq_len + 1], dtype=np.int64) for i in range(n)]
    return torch.from_numpy(np.stack(rows))


@torch.no_grad()
def heldout_metrics(
    model: torch.nn.Module, shards_dir: Path, seq_len: int, max_batches: int, batch_size: int = 8
) -> dict[str, dict[str, float]]:
    """Per domain: mean token negative log-likelihood, perplexity and the number of tokens scored."""
    manifest = load_shard_manifest(shards_dir)
    model.eval()
    results: dict[str, dict[str, float]] = {}
    for domain in sorted(manifest["splits"]["heldout"]):
        windows = heldout_windows(shards_dir, manifest, domain, seq_len, max_batches * batch_size)
        if len(windows) == 0:
            continue
        total_nll, total_tokens = 0.0, 0
        for start in range(0, len(windows), batch_size):
            batch = windows[start : start + batch_size]
            logits = model(batch[:, :-1]).logits.float()
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1), reduction="sum"
            )
            total_nll += float(nll)
            total_tokens += batch[:, 1:].numel()
        mean_nll = total_nll / total_tokens
        results[domain] = {"nll": mean_nll, "perplexity": math.exp(mean_nll), "tokens": float(total_tokens)}
    return results
