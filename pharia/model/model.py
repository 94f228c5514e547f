"""PhariaLM: the decoder-only transformer of SPEC.md, at any size from the tiny preset to 7B.

Pre-norm blocks (RMSNorm → attention, RMSNorm → Swish MLP or mixture of Swish experts) with rotary
positions. Cross-layer sharing (`share_group`) stores n_layers / share_group blocks and applies each
to `share_group` consecutive layers; tied embeddings reuse the token embedding as the output
projection. Both are visible in `num_parameters()`: `total` counts what the forward pass applies,
`unique` what is stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from pharia.config import ModelConfig
from pharia.model.attention import CausalSelfAttention, build_attention_mask
from pharia.model.layers import RMSNorm, RotaryEmbedding, SwiGLU, default_d_ff
from pharia.model.moe import MixtureOfExperts

IGNORE_INDEX = -100
INIT_STD = 0.02


class ModelOutput(NamedTuple):
    """`loss` is the mean cross-entropy over targets != -100 (None without targets); `aux_loss` the
    mean MoE load-balancing loss over layers (None for a dense model), for the trainer to weight.

    A NamedTuple rather than a dataclass: DeepSpeed ZeRO-3 finds the output tensors of a module
    (to hook its backward) only inside tuples, lists and dicts.
    """

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None


@dataclass(frozen=True)
class ParamCounts:
    """`total`: parameters applied per forward, a shared block counted once per layer that uses it;
    `unique`: parameters stored; `active`: those one token goes through (top_k of n_experts)."""

    total: int
    unique: int
    active: int


class Block(nn.Module):
    """One pre-norm transformer layer; returns (hidden, MoE aux loss or None)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d_ff = cfg.d_ff or default_d_ff(cfg.d_model)
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = CausalSelfAttention(cfg.d_model, cfg.n_heads, cfg.dropout)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp: nn.Module
        if cfg.n_experts > 1:
            self.mlp = MixtureOfExperts(cfg.d_model, d_ff, cfg.n_experts, cfg.top_k, cfg.dropout)
        else:
            self.mlp = SwiGLU(cfg.d_model, d_ff, cfg.dropout)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = x + self.attn(self.attn_norm(x), cos, sin, mask)
        hidden = self.mlp_norm(x)
        if isinstance(self.mlp, MixtureOfExperts):
            out, aux = self.mlp(hidden)
            return x + out, aux
        return x + self.mlp(hidden), None


class PhariaLM(nn.Module):
    """GPT-style decoder; `forward(input_ids, targets=None, attention_mask=None) -> ModelOutput`."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers // cfg.share_group))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        self.rotary = RotaryEmbedding(cfg.d_model // cfg.n_heads, cfg.max_seq_len, cfg.rope_theta)
        self.activation_checkpointing = False
        self.reset_parameters()

    # ------------------------------------------------------------------------------ structure
    def reset_parameters(self) -> None:
        """GPT-2 initialisation: N(0, 0.02), residual output projections scaled by 1/sqrt(2·n_layers)
        so the residual stream's variance does not grow with depth; RMSNorm gains at 1."""
        residual_std = INIT_STD / math.sqrt(2 * self.cfg.n_layers)
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                is_residual = name.endswith(("attn.proj", ".down"))
                nn.init.normal_(module.weight, mean=0.0, std=residual_std if is_residual else INIT_STD)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)

    def layers(self) -> list[Block]:
        """The block applied at each of the n_layers positions (shared blocks repeat)."""
        return [self.blocks[i // self.cfg.share_group] for i in range(self.cfg.n_layers)]

    def set_activation_checkpointing(self, enabled: bool = True) -> PhariaLM:
        """Recompute each block's activations in backward instead of storing them (training only)."""
        self.activation_checkpointing = enabled
        return self

    def num_parameters(self) -> ParamCounts:
        """Counts without touching values, so they work on the meta device and before ZeRO partitions."""
        unique = sum(p.numel() for p in self.parameters())
        per_block = [sum(p.numel() for p in block.parameters()) for block in self.blocks]
        outside = unique - sum(per_block)
        total = outside + self.cfg.share_group * sum(per_block)
        active = total
        if self.cfg.n_experts > 1:
            first = self.blocks[0].mlp
            assert isinstance(first, MixtureOfExperts)
            expert = sum(p.numel() for p in first.experts[0].parameters())
            active -= self.cfg.n_layers * (self.cfg.n_experts - self.cfg.top_k) * expert
        return ParamCounts(total=total, unique=unique, active=active)

    # -------------------------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.Tensor,
        targets: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> ModelOutput:
        """`input_ids` (B, T); `targets` (B, T) with -100 for ignored positions; `attention_mask`
        (B, T) True for real tokens (left padding in batched generation): positions then count real
        tokens only and padded keys are hidden."""
        batch, seq = input_ids.shape
        if seq > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {seq} tokens exceeds max_seq_len {self.cfg.max_seq_len}")
        device = input_ids.device
        if attention_mask is None:
            positions = torch.arange(seq, device=device)
            key_padding = None
        else:
            key_padding = attention_mask.to(device=device, dtype=torch.bool)
            positions = (key_padding.long().cumsum(dim=-1) - 1).clamp(min=0)
        cos, sin = self.rotary(positions)
        window = self.cfg.sparse_window if self.cfg.attention == "sparse" else None
        mask = build_attention_mask(seq, window=window, key_padding=key_padding, device=device)

        x = self.drop(self.tok_emb(input_ids))
        aux_terms: list[torch.Tensor] = []
        recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.layers():
            if recompute:
                x, aux = checkpoint(block, x, cos, sin, mask, use_reentrant=False)
            else:
                x, aux = block(x, cos, sin, mask)
            if aux is not None:
                aux_terms.append(aux)
        logits = self.lm_head(self.norm(x))

        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX
            )
        aux_loss = torch.stack(aux_terms).mean() if aux_terms else None
        return ModelOutput(logits=logits, loss=loss, aux_loss=aux_loss)


def build_model(cfg: ModelConfig, device: torch.device | str = "cpu") -> PhariaLM:
    """Instantiate on `device`; "meta" allocates nothing (the 7B preset's counts cost no memory)."""
    with torch.device(device):
        return PhariaLM(cfg)


def count_parameters(model: PhariaLM) -> ParamCounts:
    return model.num_parameters()
