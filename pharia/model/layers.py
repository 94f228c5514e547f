"""Building blocks shared by every Pharia block: RMSNorm, rotary embeddings and the SwiGLU MLP.

They are separate from the attention and MoE modules so a later issue can swap a kernel (fused
RMSNorm, a different rotary scaling) without touching the model's wiring.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

FF_MULTIPLE = 8


def default_d_ff(d_model: int) -> int:
    """SwiGLU hidden size when the config leaves `d_ff` unset: 8/3·d_model rounded up to a multiple of 8.

    A SwiGLU MLP has three matrices instead of two, so 8/3·d keeps its parameter count equal to the
    classic 4·d two-matrix MLP (LLaMA's choice); the multiple of 8 keeps matmuls aligned for tensor
    cores and vector units without changing the size by more than 7.
    """
    return int(math.ceil(8 * d_model / 3 / FF_MULTIPLE) * FF_MULTIPLE)


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in fp32 and cast back, so bf16/fp16 activations keep their range.

    The mean of squares over thousands of channels loses most of its precision in bf16 (8 bits of
    mantissa); doing the reduction, the rsqrt and the gain in fp32 is the "FP32 for critical operations"
    of the spec at negligible cost.
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (normed * self.weight.float()).to(x.dtype)


class RotaryEmbedding:
    """cos/sin tables of rotary position embeddings (RoPE, rotate-half layout) up to `max_seq_len`.

    Deliberately not an nn.Module buffer: DeepSpeed's bf16/fp16 modes cast every buffer of the model,
    and angles of late positions need fp32 to stay distinct. The tables are built lazily, in fp32,
    once per device, and are never part of a checkpoint (they follow from the config).
    """

    def __init__(self, head_dim: int, max_seq_len: int, theta: float) -> None:
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head dimension, got {head_dim}")
        self.head_dim = head_dim
        self.max_seq_len = max_seq_len
        self.theta = theta
        self._tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _build(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.float32, device=device) / self.head_dim
        inv_freq = 1.0 / (self.theta**exponents)
        positions = torch.arange(self.max_seq_len, dtype=torch.float32, device=device)
        angles = torch.outer(positions, inv_freq)
        angles = torch.cat([angles, angles], dim=-1)  # (max_seq_len, head_dim)
        return angles.cos(), angles.sin()

    def __call__(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tables for `positions` (T,) or (B, T), shaped to broadcast over (B, heads, T, head_dim)."""
        if positions.device not in self._tables:
            self._tables[positions.device] = self._build(positions.device)
        cos_table, sin_table = self._tables[positions.device]
        cos, sin = cos_table[positions], sin_table[positions]
        if positions.dim() == 1:
            return cos[None, None], sin[None, None]
        return cos[:, None], sin[:, None]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (i, i + d/2) of `x` (B, heads, T, d) by the position angles, in fp32."""
    x32 = x.float()
    half = x32.shape[-1] // 2
    rotated = torch.cat([-x32[..., half:], x32[..., :half]], dim=-1)
    return (x32 * cos + rotated * sin).to(x.dtype)


class SwiGLU(nn.Module):
    """Swish-gated MLP: down(silu(gate(x)) * up(x)), the Swish activation of the spec."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.gate = nn.Linear(d_model, d_ff, bias=False)
        self.up = nn.Linear(d_model, d_ff, bias=False)
        self.down = nn.Linear(d_ff, d_model, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(F.silu(self.gate(x)) * self.up(x)))
