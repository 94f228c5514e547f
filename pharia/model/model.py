"""PhariaLM: the decoder-only transformer of SPEC.md, at any size from the tiny preset to 7B.

Pre-norm blocks (RMSNorm → attention, RMSNorm → Swish MLP or mixture of Swish experts) with rotary
positions. Cross-layer sharing (`share_group`) stores n_layers / share_group blocks and applies each
to `share_group` consecutive layers; tied embeddings reuse the token embedding as the output
projection. Both are visible in `num_parameters()`: `total` counts what the forward pass applies,
`unique` what is stored. `forward(..., cache=model.new_cache())` decodes incrementally with a KV
cache (one cache entry per applied layer, so shared blocks keep separate caches); MoE blocks return
the load-balancing and router z-losses and keep per-expert load for `moe_stats()`. Parameter and
FLOP accounting for `pharia model info` and the trainer's MFU lives in `pharia.model.flops`.
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
from pharia.model.attention import AttentionSpec, CausalSelfAttention, KVCache, LayerCache
from pharia.model.layers import RMSNorm, RotaryEmbedding, SwiGLU, default_d_ff
from pharia.model.moe import ExpertLoad, MixtureOfExperts

IGNORE_INDEX = -100
INIT_STD = 0.02


class ModelOutput(NamedTuple):
    """`loss` is the mean cross-entropy over targets != -100 (0 when every target is -100, None
    without targets); `aux_loss` the mean MoE load-balancing loss over layers and `z_loss` the mean
    router z-loss (both None for a dense model), for the trainer to weight.

    A NamedTuple rather than a dataclass: DeepSpeed ZeRO-3 finds the output tensors of a module
    (to hook its backward) only inside tuples, lists and dicts.
    """

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None
    z_loss: torch.Tensor | None = None


@dataclass(frozen=True)
class ParamCounts:
    """`total`: parameters applied per forward, a shared block counted once per layer that uses it;
    `unique`: parameters stored; `active`: those one token goes through (top_k of n_experts)."""

    total: int
    unique: int
    active: int


class Block(nn.Module):
    """One pre-norm transformer layer; returns (hidden, MoE aux loss, router z-loss), None when dense."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d_ff = cfg.d_ff or default_d_ff(cfg.d_model)
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = CausalSelfAttention(cfg.d_model, cfg.n_heads, cfg.dropout)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp: nn.Module
        if cfg.n_experts > 1:
            self.mlp = MixtureOfExperts(
                cfg.d_model, d_ff, cfg.n_experts, cfg.top_k, cfg.dropout, capacity_factor=cfg.capacity_factor
            )
        else:
            self.mlp = SwiGLU(cfg.d_model, d_ff, cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        spec: AttentionSpec,
        cache: LayerCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        x = x + self.attn(self.attn_norm(x), cos, sin, spec, cache)
        hidden = self.mlp_norm(x)
        if isinstance(self.mlp, MixtureOfExperts):
            out, aux, z_loss = self.mlp(hidden)
            return x + out, aux, z_loss
        return x + self.mlp(hidden), None, None


class PhariaLM(nn.Module):
    """GPT-style decoder; `forward(input_ids, targets=None, attention_mask=None, cache=None, embedding_delta=None)
    -> ModelOutput`."""

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

    def moe_stats(self) -> dict[str, float]:
        """Expert load of the last forward, for logging (empty for a dense model).

        `expert_load_max`: the busiest expert's share of processed assignments times n_experts
        (1.0 = perfectly balanced, n_experts = one expert takes everything), max over blocks;
        `moe_drop_rate`: share of token-to-expert assignments dropped over capacity, all blocks.
        """
        loads = [b.mlp.last_stats for b in self.blocks if isinstance(b.mlp, MixtureOfExperts)]
        stats = [s for s in loads if isinstance(s, ExpertLoad)]
        if not stats:
            return {}
        imbalance = max(float(s.tokens.max()) * len(s.tokens) / max(1, int(s.tokens.sum())) for s in stats)
        dropped = sum(s.dropped for s in stats) / max(1, sum(s.assignments for s in stats))
        return {"expert_load_max": imbalance, "moe_drop_rate": dropped}

    def new_cache(self) -> KVCache:
        """An empty KV cache for incremental decoding with `forward(..., cache=)`."""
        return KVCache.empty(self.cfg.n_layers)

    # -------------------------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.Tensor,
        targets: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        embedding_delta: torch.Tensor | None = None,
    ) -> ModelOutput:
        """`input_ids` (B, T); `targets` (B, T) with -100 for ignored positions; `attention_mask`
        (B, T) True for real tokens (left padding in batched generation): positions then count real
        tokens only and padded keys are hidden. With a `cache` (see `new_cache`), `input_ids` are
        the next T tokens after the cached ones, `attention_mask` covers cached and new positions,
        and the cache is extended in place.

        `embedding_delta` (B, T, d_model) is added to the token embeddings before dropout: adversarial
        training (`pharia.train.ethics.adversarial`) perturbs the continuous embeddings, since tokens
        themselves are discrete, and must reach them through the model (or a DeepSpeed engine that
        only passes arguments through) rather than by patching its modules.

        The loss is sum / max(count, 1) over scored targets: a micro-batch whose targets are all -100
        (the content filter can mask a whole one) gives 0 with a graph and zero gradient, where
        `cross_entropy`'s mean reduction would give NaN and poison the accumulated gradients."""
        batch, seq = input_ids.shape
        past = cache.length if cache is not None else 0
        if past + seq > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {past + seq} tokens exceeds max_seq_len {self.cfg.max_seq_len}")
        device = input_ids.device
        if attention_mask is None:
            positions = torch.arange(past, past + seq, device=device)
            key_padding = None
        else:
            key_padding = attention_mask.to(device=device, dtype=torch.bool)
            positions = (key_padding.long().cumsum(dim=-1) - 1).clamp(min=0)[:, past:]
        cos, sin = self.rotary(positions)
        sparse = None
        if self.cfg.attention == "sparse":
            sparse = (self.cfg.sparse_window, self.cfg.sparse_block_size, self.cfg.sparse_top_k_blocks)
        spec = AttentionSpec(key_padding=key_padding, sparse=sparse)

        x = self.tok_emb(input_ids)
        if embedding_delta is not None:
            x = x + embedding_delta.to(x.dtype)
        x = self.drop(x)
        aux_terms: list[torch.Tensor] = []
        z_terms: list[torch.Tensor] = []
        recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for index, block in enumerate(self.layers()):
            layer_cache = cache.layers[index] if cache is not None else None
            if recompute and layer_cache is None:
                x, aux, z_loss = checkpoint(block, x, cos, sin, spec, use_reentrant=False)
            else:
                x, aux, z_loss = block(x, cos, sin, spec, layer_cache)
            if aux is not None and z_loss is not None:
                aux_terms.append(aux)
                z_terms.append(z_loss)
        logits = self.lm_head(self.norm(x))

        loss = None
        if targets is not None:
            flat_targets = targets.reshape(-1)
            total = F.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), flat_targets, ignore_index=IGNORE_INDEX, reduction="sum"
            )
            loss = total / (flat_targets != IGNORE_INDEX).sum().clamp(min=1)
        aux_loss = torch.stack(aux_terms).mean() if aux_terms else None
        z_loss = torch.stack(z_terms).mean() if z_terms else None
        return ModelOutput(logits=logits, loss=loss, aux_loss=aux_loss, z_loss=z_loss)


def build_model(cfg: ModelConfig, device: torch.device | str = "cpu") -> PhariaLM:
    """Instantiate on `device`; "meta" allocates nothing (the 7B preset's counts cost no memory)."""
    with torch.device(device):
        return PhariaLM(cfg)


def count_parameters(model: PhariaLM) -> ParamCounts:
    return model.num_parameters()
