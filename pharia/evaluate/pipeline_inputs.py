"""What the pipeline produced that evaluation tasks read: held-out text per domain, decoded from
the packed shards, and the canaries planted in the training data.

Held-out text is decoded (not scored on the packed token ids) so that any model, whatever its
tokenizer, is scored on the same characters; bits per byte then compare across tokenizers. Each
domain's token stream is split at end-of-document tokens and documents are cut into chunks of at
most `chunk_tokens` tokens, in file order: a fixed list, so a seeded subset of it names the same
chunks at every checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pharia.data.manifest import sha256_file
from pharia.data.tokenizer import load_tokenizer
from pharia.errors import PhariaError
from pharia.evaluate.datasets import sha256_files
from pharia.evaluate.tasks.base import PipelineInputs
from pharia.train.data import ShardSet

CANARIES_FILE = "canaries.json"
MAX_CHUNKS_PER_DOMAIN = 4096  # bounds decoding work on big corpora (evenly spaced); subsets are drawn from these


def heldout_texts(
    shards_dir: Path, split: str = "heldout", chunk_tokens: int = 256, max_chunks: int = MAX_CHUNKS_PER_DOMAIN
) -> tuple[dict[str, list[str]], str]:
    """domain -> decoded chunks of `split`, and one sha256 over the split's shard files."""
    shards = ShardSet.open(Path(shards_dir))
    if split not in shards.files:
        raise PhariaError(f"{shards_dir}: the shards have no {split!r} split (have {sorted(shards.files)})")
    tokenizer = load_tokenizer(shards.tokenizer_file)
    eos = shards.eos_token_id
    texts: dict[str, list[str]] = {}
    paths = []
    for domain in shards.domains(split):
        shard = shards.files[split][domain]
        paths.append(shard.path)
        tokens = np.asarray(shards.memmap(shard))
        spans = _chunk_spans(tokens, eos, chunk_tokens)
        if len(spans) > max_chunks:  # evenly spaced over the whole file, not its first documents
            spans = [spans[i] for i in np.linspace(0, len(spans) - 1, max_chunks).round().astype(int)]
        decoded = [t for t in tokenizer.decode_batch([tokens[a:b].tolist() for a, b in spans]) if t.strip()]
        if decoded:
            texts[domain] = decoded
    digest = sha256_files(paths) if paths else ""
    return texts, digest


def _chunk_spans(tokens: np.ndarray, eos: int, chunk_tokens: int) -> list[tuple[int, int]]:
    """(start, stop) of every chunk: documents split at eos, cut into pieces of `chunk_tokens`;
    pieces under 8 tokens carry no language-modelling signal and are left out."""
    spans = []
    start = 0
    for stop in [*np.flatnonzero(tokens == eos).tolist(), len(tokens)]:
        for first in range(start, stop, chunk_tokens):
            last = min(first + chunk_tokens, stop)
            if last - first >= 8:
                spans.append((first, last))
        start = stop + 1
    return spans


def load_canaries(shards_dir: Path) -> tuple[dict | None, str | None]:
    """The shards' canaries.json (None when the data stage planted none)."""
    path = Path(shards_dir) / CANARIES_FILE
    if not path.is_file():
        return None, None
    try:
        canaries = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PhariaError(f"{path}: not valid JSON ({exc})") from None
    if canaries.get("schema") != "pharia.canaries/v1" or not isinstance(canaries.get("canaries"), list):
        raise PhariaError(f"{path}: expected schema pharia.canaries/v1 with a `canaries` list")
    return canaries, sha256_file(path)


def pipeline_inputs(
    shards_dir: Path | None, *, split: str = "heldout", chunk_tokens: int = 256, toxicity_threshold: float = 0.5
) -> PipelineInputs:
    """Everything the tasks may read from the pipeline; without shards only packaged data is used."""
    if shards_dir is None:
        return PipelineInputs(toxicity_threshold=toxicity_threshold)
    texts, digest = heldout_texts(shards_dir, split=split, chunk_tokens=chunk_tokens)
    canaries, canaries_sha = load_canaries(shards_dir)
    return PipelineInputs(
        heldout_texts=texts,
        heldout_sha256=digest,
        canaries=canaries,
        canaries_sha256=canaries_sha,
        toxicity_threshold=toxicity_threshold,
    )
