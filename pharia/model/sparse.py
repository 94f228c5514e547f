"""Dynamic block-sparse causal attention: a local window plus top-k key blocks chosen per query block.

Pattern (MoBA/NSA-style, made strictly causal). The sequence is cut into blocks of `block` tokens.
Query i in block b attends to key j ≤ i when
  * j is in the same block b, or inside the local window (i - j < window), or
  * j lies in one of the `top_k` earlier key blocks c < b that block b selected.
Block b scores each earlier block c by ⟨q̄_{b-1}, k̄_c⟩, the mean (rotated) query of the previous
block against the mean key of block c, per batch row and head. Using block b-1's queries rather
than block b's own is what keeps the pattern causal: the choice for block b depends only on tokens
before block b's first position, so no token can influence an earlier position's output through
the selection, and a KV cache reproduces the same choice one token at a time.

Cost. The reference path below never forms the T×T score matrix: each query block gathers its
local span (block + window - 1 keys) and its top_k selected blocks and runs SDPA on those, so
attention costs O(T · (block + window + top_k · block) · d), linear in T at a fixed pattern; the
block scoring is (T/block)² · d, a block² smaller than dense scores. On CUDA the same pattern goes
through torch's flex_attention with a BlockMask, which skips the unselected tiles in the kernel.
With window ≥ T, or top_k ≥ the number of blocks, every causal key is visible and the result equals
dense causal attention (tested).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def block_selection(q: torch.Tensor, k: torch.Tensor, block: int, top_k: int) -> torch.Tensor:
    """(B, H, nb, nb) bool: selected[b, c] is True when query block b attends to all of key block c.

    `q`, `k` (B, H, T, d) hold at least the positions up to the query blocks asked about; only
    complete blocks before each query block enter its choice.
    """
    batch, heads, seq, dim = k.shape
    n_blocks = math.ceil(seq / block)
    selected = torch.zeros(batch, heads, n_blocks, n_blocks, dtype=torch.bool, device=k.device)
    if top_k == 0 or n_blocks < 2:
        return selected
    pad = n_blocks * block - seq
    q_bar = F.pad(q.float(), (0, 0, 0, pad)).view(batch, heads, n_blocks, block, dim).mean(dim=3)
    k_bar = F.pad(k.float(), (0, 0, 0, pad)).view(batch, heads, n_blocks, block, dim).mean(dim=3)
    scores = q_bar[:, :, :-1] @ k_bar.transpose(-1, -2)  # row r = query block r + 1 scoring key blocks
    rows = torch.arange(1, n_blocks, device=k.device)[:, None]
    cols = torch.arange(n_blocks, device=k.device)[None, :]
    scores = scores.masked_fill(cols >= rows, float("-inf"))  # only blocks c < b
    values, index = scores.topk(min(top_k, n_blocks), dim=-1)
    chosen = torch.zeros_like(scores, dtype=torch.bool).scatter(-1, index, torch.isfinite(values))
    selected[:, :, 1:] = chosen
    return selected


def sparse_allowed(
    query_pos: torch.Tensor,
    seq: int,
    selected: torch.Tensor,
    window: int,
    block: int,
    key_padding: torch.Tensor | None,
) -> torch.Tensor:
    """(B, H, t, seq) bool mask for queries at `query_pos` (t,) against keys 0..seq-1: the same
    pattern the gather path computes, as an explicit mask (used for KV-cached decoding and tests)."""
    i = query_pos[:, None]
    j = torch.arange(seq, device=query_pos.device)[None, :]
    in_selected = selected[:, :, (i // block), (j // block)]  # (B, H, t, seq)
    allowed = (j <= i) & ((i - j < window) | (i // block == j // block) | in_selected)
    if key_padding is not None:
        allowed = (allowed & key_padding[:, None, None, :].bool()) | (i == j)
    return allowed


def sparse_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    window: int,
    block: int,
    top_k: int,
    key_padding: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Block-gathered computation of the pattern for (B, H, T, d) inputs; never builds T×T scores.

    Query block b attends to its local span (the `block + window - 1` keys ending at its last
    position, shared by every row and head) and to the keys of its selected blocks (per row and
    head). The local part of the mask is built once for (nb, block, span); only the selected part
    depends on the row and head, and a selected block (c < b) is never the own block, so there a key
    counts when it is outside the window (inside it, the local span already holds it).
    """
    batch, heads, seq, dim = q.shape
    n_blocks = math.ceil(seq / block)
    device = q.device
    span = block + window - 1
    n_sel = min(top_k, n_blocks)
    selected = block_selection(q, k, block, n_sel)

    starts = torch.arange(n_blocks, device=device) * block
    query_pos = starts[:, None] + torch.arange(block, device=device)[None, :]  # (nb, block)
    local_idx = starts[:, None] - (window - 1) + torch.arange(span, device=device)[None, :]  # (nb, span)
    i_l, j_l = query_pos[:, :, None], local_idx[:, None, :]
    local_ok = (j_l >= 0) & (j_l <= i_l) & ((i_l - j_l < window) | (i_l // block == j_l // block))
    local_ok = local_ok | ((i_l >= seq) & (j_l >= 0) & (j_l < seq))  # rows past T (padding) stay finite
    local_ok = local_ok[None, None]  # (1, 1, nb, block, span)
    local_safe = local_idx.clamp(0, seq - 1)

    # which blocks each query block selected, as block ids (padding entries point at block 0, masked off)
    chosen = selected.to(torch.uint8).topk(n_sel, dim=-1) if n_sel else None
    if chosen is not None:
        sel_idx = (chosen.indices[..., None] * block + torch.arange(block, device=device)).flatten(-2)
        sel_idx = sel_idx.clamp(max=seq - 1)  # unselected padding entries may point past T: masked anyway
        sel_valid = chosen.values.bool()[..., None].expand(*chosen.values.shape, block).flatten(-2)
        sel_ok = sel_valid[:, :, :, None, :] & (query_pos[None, None, :, :, None] - sel_idx[:, :, :, None, :] >= window)
    else:
        sel_idx = torch.zeros(batch, heads, n_blocks, 0, dtype=torch.long, device=device)
        sel_ok = torch.zeros(batch, heads, n_blocks, block, 0, dtype=torch.bool, device=device)

    if key_padding is not None:
        real = key_padding.bool()
        local_real = real[:, local_safe][:, None, :, None, :]  # (B, 1, nb, 1, span)
        local_ok = (local_ok & local_real) | (i_l == j_l)[None, None]
        sel_real = real[:, None, :].expand(batch, heads, seq).gather(-1, sel_idx.flatten(-2)).view(sel_idx.shape)
        sel_ok = sel_ok & sel_real[:, :, :, None, :]
    allowed = torch.cat([local_ok.expand(batch, heads, -1, -1, -1), sel_ok], dim=-1)  # (B, H, nb, block, L)

    key_idx = torch.cat([local_safe.expand(batch, heads, -1, -1), sel_idx], dim=-1)  # (B, H, nb, L)
    length = key_idx.shape[-1]
    gather = key_idx.flatten(-2)[..., None].expand(-1, -1, -1, dim)
    k_blocks = k.gather(2, gather).view(batch, heads, n_blocks, length, dim)
    v_blocks = v.gather(2, gather).view(batch, heads, n_blocks, length, dim)
    q_blocks = F.pad(q, (0, 0, 0, n_blocks * block - seq)).view(batch, heads, n_blocks, block, dim)
    # SDPA on 4-D (B, H·nb, ...) tensors: its fused CPU kernel handles 4-D masks, 5-D falls back to math
    out = F.scaled_dot_product_attention(
        q_blocks.flatten(1, 2),
        k_blocks.flatten(1, 2),
        v_blocks.flatten(1, 2),
        attn_mask=allowed.flatten(1, 2),
        dropout_p=dropout_p,
    )
    return out.reshape(batch, heads, n_blocks * block, dim)[:, :, :seq]


_compiled_flex = None


def sparse_block_mask(q: torch.Tensor, k: torch.Tensor, *, window: int, block: int, top_k: int):  # type: ignore[no-untyped-def]
    """flex_attention BlockMask of the pattern for (B, H, T, d) inputs; tiles nothing selects are skipped."""
    from torch.nn.attention.flex_attention import create_block_mask

    batch, heads, seq, _ = q.shape
    selected = block_selection(q, k, block, top_k)

    def mask_mod(b, h, q_idx, kv_idx):  # type: ignore[no-untyped-def]
        local = (q_idx - kv_idx < window) | (q_idx // block == kv_idx // block)
        return (kv_idx <= q_idx) & (local | selected[b, h, q_idx // block, kv_idx // block])

    # compiled mask construction on CUDA: eager create_block_mask evaluates mask_mod on all T×T pairs
    return create_block_mask(mask_mod, batch, heads, seq, seq, device=q.device, _compile=q.is_cuda)


def sparse_attention_flex(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, window: int, block: int, top_k: int, compile: bool = True
) -> torch.Tensor:
    """The same pattern through flex_attention (CUDA: compiled once per process; `compile=False` runs
    the eager reference of flex itself, which is how the CPU tests check the mask_mod)."""
    global _compiled_flex
    from torch.nn.attention.flex_attention import flex_attention

    block_mask = sparse_block_mask(q, k, window=window, block=block, top_k=top_k)
    if not compile:
        return flex_attention(q, k, v, block_mask=block_mask)
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    return _compiled_flex(q, k, v, block_mask=block_mask)
