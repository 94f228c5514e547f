"""Mixture of Swish experts at the MLP level (SPEC.md: "parts of the network specialise").

A linear router scores every token against every expert; softmax turns the scores into
probabilities, each token goes to its `top_k` most probable experts and their outputs are mixed
with those probabilities as gates (renormalised over the chosen experts when top_k > 1; with top_k
= 1 the raw probability is kept as the gate, as in the Switch Transformer, so the router still
receives gradient from the language-model loss).

Capacity (training only): each expert takes at most C = ceil(capacity_factor · N · top_k / E) of
the N·top_k token-to-expert assignments of a forward pass, so a skewed router cannot make one
expert's batch (and memory) grow without bound. Assignments are admitted first choices first, then
second choices (GShard/Switch priority), in token order; an assignment over capacity is dropped,
its expert output is simply missing, and the token still passes through the block's residual
connection. In eval mode nothing is dropped: inference outputs then never depend on what else is in
the batch, which keeps KV-cached and uncached generation identical.

Two auxiliary losses go back to the trainer: the Switch load-balancing loss and the router z-loss
(ST-MoE: the mean squared log-sum-exp of the router logits, which keeps logits small so the fp32
softmax stays well conditioned). Per-expert load and the dropped count of the last forward are kept
in `last_stats` for logging.

Two dispatch paths with the same result (a test holds them equal):
- `dispatch_loop`, the readable reference: per expert, `torch.where` finds its tokens, gather, run,
  scatter-add. The shapes depend on the routing, so every expert costs a device-to-host sync; it is
  used at inference (nothing is dropped, no capacity bounds the shapes) and on CPU, where a sync
  costs nothing and the padded slots would be wasted work.
- `dispatch_padded` (training with a capacity, on GPU): every assignment gets a slot `expert * C + rank`
  computed with a cumulative sum, tokens are gathered into fixed (E, C) slot tables padded with a
  zero row, each expert runs on exactly C rows, and outputs are scatter-added back with their gates.
  Shapes depend only on N, so there is no host sync (GPU kernels queue back to back, and the graph
  is static for torch.compile); the price is computing the empty slots, at most
  capacity_factor - 1 of the work.
Every expert is called even when no token chose it, so every parameter takes part in every backward
pass (ZeRO and DDP gradient hooks then see the same parameters on every rank). Expert parallelism
is out of scope.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pharia.model.layers import SwiGLU


@dataclass(frozen=True)
class Routing:
    """Where each of N tokens goes: `experts` (N, k) indices, `gates` (N, k) and router `probs` (N, E);
    `logits` (N, E) are the raw router scores (for the z-loss), None when built by hand."""

    experts: torch.Tensor
    gates: torch.Tensor
    probs: torch.Tensor
    logits: torch.Tensor | None = None


@dataclass(frozen=True)
class ExpertLoad:
    """Detached statistics of one forward: `tokens` (E,) assignments each expert processed (a device
    tensor: reading it is the only sync), `assignments` = N · top_k, `dropped` the assignments over
    capacity. Always tokens.sum() + dropped == assignments (routing conservation)."""

    tokens: torch.Tensor
    assignments: int
    capacity: int | None

    @property
    def dropped(self) -> int:
        return self.assignments - int(self.tokens.sum())


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


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """ST-MoE router z-loss: mean over tokens of logsumexp(router logits)², in fp32."""
    return torch.logsumexp(logits.float(), dim=-1).pow(2).mean()


def expert_capacity(n_tokens: int, top_k: int, n_experts: int, capacity_factor: float | None) -> int | None:
    """Assignments one expert may take, or None for no limit."""
    if capacity_factor is None:
        return None
    return max(1, math.ceil(capacity_factor * n_tokens * top_k / n_experts))


def _ranks(experts: torch.Tensor, n_experts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Slot-major order (all first choices, then all second choices, ...): the expert of each
    assignment and its rank among that expert's assignments, both (k·N,)."""
    slot_major = experts.t().reshape(-1)
    one_hot = F.one_hot(slot_major, n_experts)
    return slot_major, (one_hot.cumsum(dim=0) * one_hot).sum(dim=-1) - 1


def admitted(experts: torch.Tensor, n_experts: int, capacity: int | None) -> torch.Tensor:
    """(N, k) bool: which assignments fit in their expert's capacity, first choices admitted first."""
    if capacity is None:
        return torch.ones_like(experts, dtype=torch.bool)
    _, position = _ranks(experts, n_experts)
    return (position < capacity).view(experts.shape[1], experts.shape[0]).t()


class MixtureOfExperts(nn.Module):
    """Top-k routed SwiGLU experts; `forward` returns (output, load-balancing loss, z-loss)."""

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        n_experts: int,
        top_k: int,
        dropout: float = 0.0,
        capacity_factor: float | None = None,
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"top_k must be in 1..n_experts ({n_experts}), got {top_k}")
        self.n_experts = n_experts
        self.top_k = top_k
        self.capacity_factor = capacity_factor
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.experts = nn.ModuleList(SwiGLU(d_model, d_ff, dropout) for _ in range(n_experts))
        self.last_stats: ExpertLoad | None = None
        # None = by device: padded on GPU (1.31x tokens/s for the 1b preset on an H100), the loop on CPU,
        # where syncs are free and the padded slots' extra work makes it slower (make bench: 1.42 vs 1.34x
        # a dense MLP). True / False force one path (benchmarks compare both).
        self.padded_dispatch: bool | None = None

    def route(self, tokens: torch.Tensor) -> Routing:
        """Routing of `tokens` (N, d_model); probabilities and gates in fp32."""
        logits = self.router(tokens).float()
        probs = F.softmax(logits, dim=-1)
        gates, experts = probs.topk(self.top_k, dim=-1)
        if self.top_k > 1:
            gates = gates / gates.sum(dim=-1, keepdim=True)
        return Routing(experts=experts, gates=gates, probs=probs, logits=logits)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tokens = x.reshape(-1, x.shape[-1])
        routing = self.route(tokens)
        capacity = expert_capacity(tokens.shape[0], self.top_k, self.n_experts, self.capacity_factor)
        padded = tokens.is_cuda if self.padded_dispatch is None else self.padded_dispatch
        if self.training and capacity is not None and padded:
            out, processed = self.dispatch_padded(tokens, routing, capacity)
        else:
            keep = admitted(routing.experts, self.n_experts, capacity if self.training else None)
            out, processed = self.dispatch_loop(tokens, routing, keep)
        self.last_stats = ExpertLoad(
            tokens=processed.detach(),
            assignments=routing.experts.numel(),
            capacity=capacity if self.training else None,
        )
        assert routing.logits is not None
        return out.view_as(x), load_balancing_loss(routing, self.n_experts), router_z_loss(routing.logits)

    def dispatch_loop(
        self, tokens: torch.Tensor, routing: Routing, keep: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference dispatch of the assignments `keep` (N, k) admits: (output (N, d), tokens per expert)."""
        out = torch.zeros_like(tokens)
        processed = torch.zeros(self.n_experts, dtype=torch.long, device=tokens.device)
        for index, expert in enumerate(self.experts):
            token_idx, slot = torch.where((routing.experts == index) & keep)
            processed[index] = token_idx.numel()
            gate = routing.gates[token_idx, slot].unsqueeze(-1).to(tokens.dtype)
            out = out.index_add(0, token_idx, expert(tokens[token_idx]) * gate)
        return out, processed

    def dispatch_padded(
        self, tokens: torch.Tensor, routing: Routing, capacity: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fixed-shape dispatch under `capacity` (see the module docstring); same result as
        `dispatch_loop(tokens, routing, admitted(...))` without a host sync."""
        n, d = tokens.shape
        n_slots = self.n_experts * capacity
        expert_of, rank = _ranks(routing.experts, self.n_experts)
        keep = rank < capacity
        # Slot of each admitted assignment; dropped ones all go to one overflow slot that is cut off.
        slot = torch.where(keep, expert_of * capacity + rank, torch.full_like(rank, n_slots))
        token_of = torch.arange(n, device=tokens.device).repeat(self.top_k)
        gate_of = routing.gates.t().reshape(-1)
        table = torch.full((n_slots + 1,), n, dtype=torch.long, device=tokens.device)  # row n: zeros
        table = table.scatter(0, slot, token_of)[:n_slots].view(self.n_experts, capacity)
        gates = gate_of.new_zeros(n_slots + 1).scatter(0, slot, gate_of)[:n_slots].view(self.n_experts, capacity)
        padded = torch.cat([tokens, tokens.new_zeros(1, d)])
        out = torch.zeros_like(padded)
        for index, expert in enumerate(self.experts):
            rows = table[index]
            out = out.index_add(0, rows, expert(padded[rows]) * gates[index].unsqueeze(-1).to(tokens.dtype))
        processed = (F.one_hot(expert_of, self.n_experts) * keep.unsqueeze(-1)).sum(dim=0)  # no boolean index: no sync
        return out[:n], processed
