"""Parameter make-up and training FLOPs per token of a Pharia config, for `model info` and MFU.

The model is built on the meta device (shapes only, no memory), so the 7B preset is counted exactly
as the trainer would build it. FLOPs follow the convention of Kaplan et al. / Chinchilla and
nanoGPT's `estimate_mfu`: a forward+backward pass costs 6 FLOPs per matmul parameter a token goes
through, plus the attention-score term 12 · L · H · Q · T_eff (QKᵀ and AV, forward and backward;
H heads of size Q). Following that convention, dense causal attention counts the full context
T = max_seq_len, not T/2. The dynamic sparse mode attends to its local keys (the window and its own
block, counted as max(window, block)) plus `sparse_top_k_blocks` selected blocks of
`sparse_block_size` keys, so its T_eff is that number capped at T: this is where the sub-quadratic
cost shows up. Only the MoE experts a token is routed
to (top_k of n_experts) count, and the input-embedding lookup is not a matmul (with tied
embeddings the same matrix does count once, as the output head).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pharia.config import ModelConfig


@dataclass(frozen=True)
class ModelStats:
    """What `pharia model info` reports; every number comes from the meta-device model."""

    total_params: int
    unique_params: int
    active_params_per_token: int
    flops_per_token: int
    attention_context: int
    embedding_params: int
    attention_params: int
    mlp_params: int
    expert_params: int
    router_params: int
    norm_params: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def attention_context(cfg: ModelConfig) -> int:
    """Keys one query attends to in the FLOPs convention: T for dense, window + selected blocks (≤ T)
    for the dynamic sparse mode."""
    if cfg.attention == "dense":
        return cfg.max_seq_len
    local = max(cfg.sparse_window, cfg.sparse_block_size)  # window ∪ own block: ≤ window + block - 1
    return min(cfg.max_seq_len, local + cfg.sparse_top_k_blocks * cfg.sparse_block_size)


def model_stats(cfg: ModelConfig) -> ModelStats:
    """Counts of a meta-device model of `cfg`, broken down by component (per applied layer)."""
    from pharia.model.model import build_model
    from pharia.model.moe import MixtureOfExperts

    model = build_model(cfg, device="meta")
    counts = model.num_parameters()
    block = model.blocks[0]
    attn = sum(p.numel() for p in block.attn.parameters())
    norms = sum(p.numel() for p in (block.attn_norm.weight, block.mlp_norm.weight))
    if isinstance(block.mlp, MixtureOfExperts):
        router = sum(p.numel() for p in block.mlp.router.parameters())
        expert = sum(p.numel() for p in block.mlp.experts[0].parameters())
    else:
        router, expert = 0, sum(p.numel() for p in block.mlp.parameters())
    embedding = model.tok_emb.weight.numel()
    head = 0 if cfg.tie_embeddings else model.lm_head.weight.numel()
    layers = cfg.n_layers
    # active matmul parameters: the lm head (tied or not) but not the embedding lookup, top_k experts
    matmul_active = layers * (attn + router + cfg.top_k * expert) + cfg.vocab_size * cfg.d_model
    head_dim = cfg.d_model // cfg.n_heads
    context = attention_context(cfg)
    flops = 6 * matmul_active + 12 * layers * cfg.n_heads * head_dim * context
    return ModelStats(
        total_params=counts.total,
        unique_params=counts.unique,
        active_params_per_token=counts.active,
        flops_per_token=flops,
        attention_context=context,
        embedding_params=embedding + head,
        attention_params=layers * attn,
        mlp_params=layers * cfg.n_experts * expert,
        expert_params=expert,
        router_params=layers * router,
        norm_params=layers * norms + model.norm.weight.numel(),
    )


def flops_per_token(cfg: ModelConfig) -> int:
    """Training FLOPs (forward + backward) per token; the trainer's MFU is
    tokens_per_s · flops_per_token / (devices · peak FLOP/s)."""
    return model_stats(cfg).flops_per_token
