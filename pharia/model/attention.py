"""Causal multi-head self-attention through `scaled_dot_product_attention`, dense or sliding-window.

`attention: sparse` is, for now, a *masked reference path*: a causal sliding window of
`sparse_window` tokens expressed as a boolean mask for SDPA. It computes exactly what a sparse
kernel would compute, but SDPA still materialises the full T×T score matrix, so the cost is still
quadratic in the sequence length. A later issue replaces it with a real block-sparse kernel; the
mask stays as the reference the kernel is tested against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pharia.model.layers import apply_rotary


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


class CausalSelfAttention(nn.Module):
    """Multi-head attention with rotary positions; the mask (if any) is computed once per forward."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        batch, seq, dim = x.shape
        q, k, v = self.qkv(x).view(batch, seq, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=mask is None,
        )
        return self.resid_dropout(self.proj(out.transpose(1, 2).reshape(batch, seq, dim)))
