"""Mixture of Swish experts at the MLP level (SPEC.md: "parts of the network specialise").

A linear router scores every token against every expert; softmax turns the scores into
probabilities, each token goes to its `top_k` most probable experts and their outputs are mixed
with those probabilities as gates (renormalised over the chosen experts when top_k > 1; with top_k
= 1 the raw probability is kept as the gate, as in the Switch Transformer, so the router still
receives gradient from the language-model loss). The Switch load-balancing loss is returned for
the trainer to add with its own coefficient.

This is the readable reference: one loop over experts, gather and scatter-add. Every expert is
called even when no token chose it, so every parameter takes part in every backward pass (ZeRO and
DDP gradient hooks then see the same parameters on every rank). Capacity limits, token dropping and
expert parallelism come with a later issue.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pharia.model.layers import SwiGLU


@dataclass(frozen=True)
class Routing:
    """Where each of N tokens goes: `experts` (N, k) indices, `gates` (N, k) and router `probs` (N, E)."""

    experts: torch.Tensor
    gates: torch.Tensor
    probs: torch.Tensor


def load_balancing_loss(routing: Routing, n_experts: int) -> torch.Tensor:
    """Switch Transformer auxiliary loss E · Σ_e f_e · P_e; exactly 1.0 for a perfectly balanced router.

    f_e is the share of the N·k token-to-expert assignments that went to expert e (not
    differentiable), P_e the mean router probability of e (differentiable): minimising the product
    pushes probability away from overloaded experts.
    """
    counts = F.one_hot(routing.experts, n_experts).sum(dim=(0, 1)).float()
    share = counts / routing.experts.numel()
    mean_prob = routing.probs.mean(dim=0)
    return n_experts * torch.sum(share * mean_prob)


class MixtureOfExperts(nn.Module):
    """Top-k routed SwiGLU experts; `forward` returns (output, load-balancing loss)."""

    def __init__(self, d_model: int, d_ff: int, n_experts: int, top_k: int, dropout: float = 0.0) -> None:
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"top_k must be in 1..n_experts ({n_experts}), got {top_k}")
        self.n_experts = n_experts
        self.top_k = top_k
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.experts = nn.ModuleList(SwiGLU(d_model, d_ff, dropout) for _ in range(n_experts))

    def route(self, tokens: torch.Tensor) -> Routing:
        """Routing of `tokens` (N, d_model); probabilities and gates in fp32."""
        probs = F.softmax(self.router(tokens).float(), dim=-1)
        gates, experts = probs.topk(self.top_k, dim=-1)
        if self.top_k > 1:
            gates = gates / gates.sum(dim=-1, keepdim=True)
        return Routing(experts=experts, gates=gates, probs=probs)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = x.reshape(-1, x.shape[-1])
        routing = self.route(tokens)
        out = torch.zeros_like(tokens)
        for index, expert in enumerate(self.experts):
            token_idx, slot = torch.where(routing.experts == index)
            gate = routing.gates[token_idx, slot].unsqueeze(-1).to(tokens.dtype)
            out = out.index_add(0, token_idx, expert(tokens[token_idx]) * gate)
        return out.view_as(x), load_balancing_loss(routing, self.n_experts)
