"""Batched sampling from a PhariaLM: temperature, nucleus (top-p), stop at eos, seeded.

Prompts of different lengths are left-padded into one batch and the model gets an attention mask,
so each row is computed exactly as it would be alone (positions count real tokens only, padding is
never attended to). With the KV cache (default) the prompt is run once and each new token costs one
position per layer; when the context reaches `max_seq_len` the cache is rebuilt from the last
`max_seq_len` tokens, so the result is exactly what re-running the truncated context gives
(`use_cache=False`, kept as the reference the cache is tested against).
"""

from __future__ import annotations

import torch

from pharia.model.model import PhariaLM


def sample_next_token(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> torch.Tensor:
    """One token id per row of `logits` (B, V). temperature <= 0 means greedy (argmax).

    Top-p keeps the smallest set of most probable tokens whose mass reaches `top_p` (always at least
    the most probable one) and renormalises over it.
    """
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    if generator is not None:
        probs = probs.to(generator.device)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1).to(logits.device)


def _as_rows(prompt_ids: list[list[int]] | torch.Tensor, eos_token_id: int | None) -> list[list[int]]:
    rows = prompt_ids.tolist() if isinstance(prompt_ids, torch.Tensor) else [list(map(int, r)) for r in prompt_ids]
    if rows and not isinstance(rows[0], list):  # a single 1-D prompt
        rows = [rows]  # type: ignore[list-item]
    for index, row in enumerate(rows):
        if not row:
            if eos_token_id is None:
                raise ValueError(f"prompt {index} is empty and no eos_token_id was given to start it with")
            row.append(eos_token_id)  # documents are separated by eos, so eos is a document start
    return rows


@torch.no_grad()
def generate(
    model: PhariaLM,
    prompt_ids: list[list[int]] | torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> list[list[int]]:
    """Continuations (new tokens only) of each prompt, at most `max_new_tokens` each.

    A row stops when it samples `eos_token_id`; the eos itself is not part of the returned ids, so
    they decode to text directly. `pad_token_id` only fills the left padding (it is never attended
    to). Pass a seeded `generator` for reproducible samples. The model is put in eval mode for the
    call and restored afterwards.
    """
    rows = _as_rows(prompt_ids, eos_token_id)
    outputs: list[list[int]] = [[] for _ in rows]
    if not rows or max_new_tokens <= 0:
        return outputs
    device = next(model.parameters()).device
    pad = pad_token_id if pad_token_id is not None else (eos_token_id if eos_token_id is not None else 0)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long, device=device)
    real = torch.zeros((len(rows), width), dtype=torch.bool, device=device)
    for index, row in enumerate(rows):
        ids[index, width - len(row) :] = torch.tensor(row, dtype=torch.long, device=device)
        real[index, width - len(row) :] = True

    was_training = model.training
    model.eval()
    try:
        finished = torch.zeros(len(rows), dtype=torch.bool, device=device)
        window = model.cfg.max_seq_len
        cache = None
        use_cache = use_cache and hasattr(model, "new_cache")  # stand-in models may lack a cache
        for _ in range(max_new_tokens):
            if use_cache and cache is not None and cache.length < window:
                context_real = real[:, -cache.length - 1 :]
                mask = None if bool(context_real.all()) else context_real
                logits = model(ids[:, -1:], attention_mask=mask, cache=cache).logits[:, -1, :]
            else:  # first step, no cache, or the context just reached max_seq_len: (re)build
                cache = model.new_cache() if use_cache else None
                context, context_real = ids[:, -window:], real[:, -window:]
                mask = None if bool(context_real.all()) else context_real
                extra = {"cache": cache} if cache is not None else {}
                logits = model(context, attention_mask=mask, **extra).logits[:, -1, :]
            token = sample_next_token(logits, temperature, top_p, generator)
            stopped = token == eos_token_id if eos_token_id is not None else torch.zeros_like(finished)
            for index in torch.nonzero(~finished & ~stopped).flatten().tolist():
                outputs[index].append(int(token[index]))
            finished = finished | stopped
            ids = torch.cat([ids, torch.where(finished, pad, token)[:, None]], dim=1)
            real = torch.cat([real, ~finished[:, None]], dim=1)
            if bool(finished.all()):
                break
    finally:
        model.train(was_training)
    return outputs
