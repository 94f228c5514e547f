"""k sampled continuations per prompt, shared by the generative tasks (RealToxicityPrompts, BOLD,
PII generation), so that they all decode the same documented way.

How the k samples are drawn: prompts go to the model in chunks of `chunk_size(lm)` prompts (a
multiple of the adapter's batch size, so a chunk fills whole batches); each chunk is generated k
times, call j with `Sampling.seed = derive_seed(seed, chunk index, j)`. Why k calls rather than
one call with each prompt repeated k times: sample j of a prompt then does not depend on k (k=4
contains the k=2 samples), and distinct seeds per chunk keep two chunks from sharing random draws.
The chunks also let the suite's progress bar advance while a long task runs. Everything depends
only on (prompts, settings, seed, lm.batch_size), all of which are recorded, so a rerun reproduces
the continuations. Greedy decoding (temperature 0) gives the same text every time, so it is
generated once and counted as one sample per prompt whatever k says.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from pharia.errors import PhariaError
from pharia.evaluate.lm import EvalLM, Sampling
from pharia.evaluate.tasks.base import TaskSettings

T = TypeVar("T")
MIN_CHUNK = 64  # prompts per generate call at least: small enough for a progress bar, big enough to batch


def chunk_size(lm: EvalLM) -> int:
    """Prompts per model call: whole batches of the adapter, at least 8 of them and at least MIN_CHUNK prompts."""
    batch = max(1, int(lm.batch_size))
    return batch * max(8, -(-MIN_CHUNK // batch))


def chunks(items: Sequence[T], size: int) -> Iterator[tuple[int, Sequence[T]]]:
    """(index, slice) of consecutive slices of at most `size` items."""
    for index, start in enumerate(range(0, len(items), size)):
        yield index, items[start : start + size]


def scaled_progress(progress: Callable[[int], None], work: int, total: int | None) -> Callable[[int], None]:
    """A progress callback for a task that does `work` units in all while the suite's bar counts to
    `total` (its `samples`): BOLD's samples are per domain, the canaries' are candidates per canary.
    Advances the bar by floor(done * total / work) so that it ends exactly at `total`; without a
    total (samples = None: every row) the units pass through unchanged."""
    if total is None or work <= 0:
        return progress
    done = shown = 0

    def advance(n: int) -> None:
        nonlocal done, shown
        done += n
        target = min(total, done * total // work)
        if target > shown:
            progress(target - shown)
            shown = target

    return advance


def derive_seed(seed: int, chunk: int, sample: int) -> int:
    """A 31-bit seed for sample `sample` of chunk `chunk`: the first 4 bytes of
    sha256("{seed}:{chunk}:{sample}"), big-endian, masked to 31 bits."""
    digest = hashlib.sha256(f"{seed}:{chunk}:{sample}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def samples_per_prompt(settings: TaskSettings, temperature: float | None = None) -> int:
    """k for sampled decoding; 1 for greedy decoding (every sample would be the same text)."""
    temp = settings.temperature if temperature is None else temperature
    return 1 if temp <= 0 else max(1, int(settings.k))


def sample_continuations(
    lm: EvalLM,
    prompts: Sequence[str],
    settings: TaskSettings,
    seed: int,
    progress: Callable[[int], None] = lambda n: None,
    *,
    temperature: float | None = None,
    max_new_tokens: int | None = None,
) -> list[list[str]]:
    """`samples_per_prompt(settings)` continuations of every prompt, in prompt order: result[i][j]
    is sample j of prompts[i]. `temperature`/`max_new_tokens` override the settings (0 = greedy).
    Calls `progress(len(chunk))` when every sample of a chunk's prompts is done."""
    temp = settings.temperature if temperature is None else temperature
    new_tokens = settings.max_new_tokens if max_new_tokens is None else max_new_tokens
    k = samples_per_prompt(settings, temp)
    out: list[list[str]] = []
    for index, chunk in chunks(prompts, chunk_size(lm)):
        per_prompt: list[list[str]] = [[] for _ in chunk]
        for j in range(k):
            sampling = Sampling(
                max_new_tokens=new_tokens,
                temperature=temp,
                top_p=settings.top_p,
                seed=derive_seed(seed, index, j),
            )
            texts = lm.generate(list(chunk), sampling)
            if len(texts) != len(chunk):
                raise PhariaError(f"the model returned {len(texts)} continuations for {len(chunk)} prompts")
            for slot, text in zip(per_prompt, texts, strict=True):
                slot.append(text)
        out.extend(per_prompt)
        progress(len(chunk))
    return out


def sampling_details(
    lm: EvalLM,
    settings: TaskSettings,
    seed: int,
    *,
    temperature: float | None = None,
    max_new_tokens: int | None = None,
) -> dict[str, Any]:
    """What reproduces the continuations of `sample_continuations`, for a metric's `details`."""
    temp = settings.temperature if temperature is None else temperature
    return {
        "k": samples_per_prompt(settings, temp),
        "max_new_tokens": settings.max_new_tokens if max_new_tokens is None else max_new_tokens,
        "temperature": temp,
        "top_p": settings.top_p,
        "seed": seed,
        "batch_size": int(lm.batch_size),
        "chunk_size": chunk_size(lm),
        "seed_rule": "Sampling.seed = derive_seed(seed, chunk, j) (pharia.evaluate.tasks.gen_sampling)",
    }
