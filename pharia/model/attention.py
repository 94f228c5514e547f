"""Causal multi-head self-attention: dense through SDPA, or the dynamic block-sparse pattern of
`pharia.model.sparse`, with an optional KV cache for generation.

Dense attention without padding uses SDPA's `is_causal` (flash kernels on GPU). The sparse mode
runs the block-gathered reference on CPU and flex_attention on CUDA; with a KV cache (decoding) the
few new queries use an explicit mask of the same pattern over the cached keys, which is O(T) per
token anyway. Masks follow tensor indices, so with left padding the pads count towards the window
and the block boundaries of the sparse pattern (pads are never attended to).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from pharia.model.layers import apply_rotary
from pharia.model.sparse import (
    block_selection,
    sparse_allowed,
    sparse_attention_flex,
    sparse_attention_reference,
)


def sliding_window_mask(seq_len: int, window: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(T, T) bool mask, True where query i may attend key j: j <= i and i - j < window."""
    i = torch.arange(seq_len, device=device)[:, None]
    j = torch.arange(seq_len, device=device)[None, :]
    return (j <= i) & (i - j < window)


def build_attention_mask(
    seq_len: int,
    *,
    window: int | None,
    key_padding: torch.Tensor | None,
    device: torch.device | str | None = None,
) -> torch.Tensor | None:
    """The boolean mask SDPA gets, or None when plain `is_causal` suffices (dense, no padding).

    `window` None means dense causal. `key_padding` (B, T) is True for real tokens; padded keys are
    hidden from every query, and each position may always attend to itself, so a padded query row is
    never fully masked (a fully masked row makes SDPA return NaN, which would leak into later layers
    through 0 · NaN in the value product).
    """
    if window is None and key_padding is None:
        return None
    mask = sliding_window_mask(seq_len, window or seq_len, device)
    if key_padding is None:
        return mask
    eye = torch.eye(seq_len, dtype=torch.bool, device=device)
    return (mask[None, None] & key_padding[:, None, None, :].bool()) | eye


@dataclass(frozen=True)
class AttentionSpec:
    """What every layer needs to know about one forward: the pattern and the padding of all keys
    (cached ones included); `sparse` None means dense causal."""

    key_padding: torch.Tensor | None = None
    sparse: tuple[int, int, int] | None = None  # (window, block, top_k)


@dataclass
class LayerCache:
    """Keys, values (and, for the sparse pattern's block scores, queries) of the positions seen so far."""

    k: torch.Tensor | None = None
    v: torch.Tensor | None = None
    q: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.k is None else int(self.k.shape[2])


@dataclass
class KVCache:
    """One LayerCache per applied layer (a block shared by several layers gets one per layer)."""

    layers: list[LayerCache] = field(default_factory=list)

    @classmethod
    def empty(cls, n_layers: int) -> KVCache:
        return cls([LayerCache() for _ in range(n_layers)])

    @property
    def length(self) -> int:
        return self.layers[0].length if self.layers else 0


def _append(old: torch.Tensor | None, new: torch.Tensor) -> torch.Tensor:
    return new if old is None else torch.cat([old, new], dim=2)


class CausalSelfAttention(nn.Module):
    """Multi-head attention with rotary positions."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        spec: AttentionSpec,
        cache: LayerCache | None = None,
    ) -> torch.Tensor:
        batch, seq, dim = x.shape
        q, k, v = self.qkv(x).view(batch, seq, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        dropout_p = self.dropout if self.training else 0.0
        offset = 0
        q_all = q
        if cache is not None:
            offset = cache.length
            cache.k, cache.v = _append(cache.k, k), _append(cache.v, v)
            if spec.sparse is not None:
                cache.q = _append(cache.q, q)
                q_all = cache.q
            k, v = cache.k, cache.v
        out = self._attend(q, k, v, q_all, offset, spec, dropout_p)
        return self.resid_dropout(self.proj(out.transpose(1, 2).reshape(batch, seq, dim)))

    @staticmethod
    def _attend(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        q_all: torch.Tensor,
        offset: int,
        spec: AttentionSpec,
        dropout_p: float,
    ) -> torch.Tensor:
        seq = k.shape[2]
        if spec.sparse is not None:
            window, block, top_k = spec.sparse
            if offset == 0:
                if q.is_cuda and spec.key_padding is None and dropout_p == 0.0:
                    return sparse_attention_flex(q, k, v, window=window, block=block, top_k=top_k)
                return sparse_attention_reference(
                    q, k, v, window=window, block=block, top_k=top_k, key_padding=spec.key_padding, dropout_p=dropout_p
                )
            selected = block_selection(q_all, k, block, top_k)
            positions = torch.arange(offset, seq, device=q.device)
            mask = sparse_allowed(positions, seq, selected, window, block, spec.key_padding)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        if spec.key_padding is None and offset == 0:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        i = torch.arange(offset, seq, device=q.device)[:, None]
        j = torch.arange(seq, device=q.device)[None, :]
        mask = j <= i
        if spec.key_padding is not None:
            mask = (mask[None, None] & spec.key_padding[:, None, None, :].bool()) | (i == j)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
