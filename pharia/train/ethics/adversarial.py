"""Adversarial training in embedding space: PGD (Madry et al. 2018) with FreeLB's random start.

Tokens are discrete, so the perturbation acts on their embeddings (Miyato et al. 2017): per micro-batch
a delta of shape (B, T, d_model) starts at a random point of the per-token L2 ball of radius epsilon,
takes `steps` normalised gradient-ascent steps on the language-modelling loss, each projected back onto
the ball, and the loss at the final delta (weighted) is returned for the loop to add to the clean loss.
Training on it flattens the loss around the data, which makes the model less sensitive to small
input changes (robustness; Zhu et al. 2020 report better generalisation for transformers too).

Three constraints shape the implementation:

- The ascent takes `torch.autograd.grad(loss, delta)`: gradients with respect to delta only. Calling
  `.backward()` would also accumulate parameter gradients, and DeepSpeed ZeRO-2/3 reduce those once
  per micro-batch in hooks, so a second backward per micro-batch is an error there. The final loss keeps
  its graph and is trained on by the loop's single backward of clean loss + this term.
- The ascent forwards bypass a DeepSpeed engine and call the model it wraps (`engine.module`). DeepSpeed
  0.19 hooks every engine output so that a plain `loss.backward()` works: any autograd pass through an
  engine output, `autograd.grad` included, runs the engine's backward epilogue (gradient reduction and
  micro-step bookkeeping) at its end. Under ZeRO-2 that fails (IndexError in `reduce_ipg_grads`: nothing
  was bucketed); ZeRO-3 happens to tolerate it. The wrapped module still runs ZeRO-3's parameter
  gathering, which lives in hooks on the submodules. The final forward goes through the engine like the
  clean one, so the loop's single `engine.backward` reduces its gradients
  (`tests/test_train_ethics.py::test_terms_train_through_a_deepspeed_engine` checks ZeRO-2 and 3).
- The random start comes from a generator seeded by (seed, micro_step), so a run resumed from a
  checkpoint draws the same perturbations as the uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from pharia.config import AdversarialConfig
from pharia.model.model import ModelOutput

NORM_FLOOR = 1e-12  # a token whose gradient is exactly zero gets no step rather than a NaN


def micro_step_seed(seed: int, micro_step: int) -> int:
    """A 63-bit generator seed that differs for every (seed, micro_step): SeedSequence mixes both,
    where `seed + micro_step` would give runs with neighbouring seeds the same draws, shifted."""
    state = np.random.SeedSequence([seed, micro_step]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def embedding_width(forward: Callable[..., Any]) -> int:
    """d_model of the PhariaLM behind `forward`: the model itself, a DeepSpeed engine (`.module`) or a
    bound method of either. Read from the config, not from `tok_emb.weight`, whose shape ZeRO-3
    partitions away. (The model casts the delta to its embedding dtype, so fp32 is fine under bf16.)"""
    seen: set[int] = set()
    obj: Any = forward
    while id(obj) not in seen:
        seen.add(id(obj))
        cfg = getattr(obj, "cfg", None)
        if cfg is not None and hasattr(cfg, "d_model") and hasattr(obj, "tok_emb"):
            return int(cfg.d_model)
        obj = getattr(obj, "module", None) or getattr(obj, "__self__", None)
        if obj is None:
            break
    raise TypeError(
        "AdversarialTerm: cannot find d_model behind the forward callable (expected a PhariaLM, "
        "a DeepSpeed engine wrapping one, or pass d_model= to AdversarialTerm)"
    )


def unwrap_engine(forward: Callable[..., Any]) -> Callable[..., Any]:
    """The model inside a DeepSpeed engine (its `.module`), else `forward` itself: see the module
    docstring for why the ascent must not run through the engine's output hooks."""
    module = getattr(forward, "module", None)
    return module if isinstance(module, torch.nn.Module) else forward


def project(delta: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Each token's perturbation (last dimension) scaled back onto the L2 ball of radius epsilon."""
    norms = delta.norm(dim=-1, keepdim=True)
    return delta * (epsilon / norms.clamp(min=NORM_FLOOR)).clamp(max=1.0)


class AdversarialTerm:
    """`term(forward, inputs, targets, micro_step=)` -> (weight * adversarial loss with graph, counters),
    or (None, counters) on micro-steps that `every` skips.

    Counters: `adv_loss` (unweighted loss at the final delta), `adv_clean_gap` (adv_loss minus the clean
    loss: the `clean_loss` argument when the loop passes it, otherwise the loss at the random start, which
    equals the clean loss to first order because a random direction has no expected first-order effect),
    `adv_ascent_gain` (adv_loss minus the loss at the random start: what the ascent found),
    `adv_delta_norm` (mean per-token L2 norm of the final delta), `adv_micro_batches` (1 or 0) and
    `adv_skipped` (0 or 1).
    """

    def __init__(self, cfg: AdversarialConfig, seed: int, d_model: int | None = None) -> None:
        self.cfg = cfg
        self.seed = seed
        self.d_model = d_model

    def random_start(self, shape: tuple[int, ...], micro_step: int, device: torch.device) -> torch.Tensor:
        """A point uniform in each token's epsilon ball (direction uniform on the sphere, radius
        epsilon * u^(1/d)), fp32, reproducible from (seed, micro_step) on a given device type. Drawn on
        `device` itself: B·T·d_model normal draws on the host would cost more than the forward on a GPU."""
        generator = torch.Generator(device=device).manual_seed(micro_step_seed(self.seed, micro_step))
        direction = torch.randn(shape, generator=generator, dtype=torch.float32, device=device)
        direction = direction / direction.norm(dim=-1, keepdim=True).clamp(min=NORM_FLOOR)
        radius = torch.rand((*shape[:-1], 1), generator=generator, dtype=torch.float32, device=device)
        return direction * radius ** (1.0 / shape[-1]) * self.cfg.epsilon

    def __call__(
        self,
        forward: Callable[..., ModelOutput],
        inputs: torch.Tensor,
        targets: torch.Tensor,
        *,
        micro_step: int,
        clean_loss: torch.Tensor | float | None = None,
    ) -> tuple[torch.Tensor | None, dict[str, float]]:
        if micro_step % self.cfg.every != 0:
            return None, {"adv_micro_batches": 0.0, "adv_skipped": 1.0}
        d_model = self.d_model if self.d_model is not None else embedding_width(forward)
        ascent_forward = unwrap_engine(forward)
        batch, seq = inputs.shape
        delta = self.random_start((batch, seq, d_model), micro_step, inputs.device)
        start_loss: float | None = None
        for _ in range(self.cfg.steps):
            delta.requires_grad_(True)
            loss = _loss(ascent_forward(inputs, targets, embedding_delta=delta))
            (grad,) = torch.autograd.grad(loss, delta)
            if start_loss is None:
                start_loss = float(loss.detach())
            grad = torch.nan_to_num(grad.float(), nan=0.0, posinf=0.0, neginf=0.0)  # fp16 overflow: no step
            step = grad / grad.norm(dim=-1, keepdim=True).clamp(min=NORM_FLOOR)
            delta = project(delta.detach() + self.cfg.step_size * step, self.cfg.epsilon)
        delta = delta.detach()
        adv_loss = _loss(forward(inputs, targets, embedding_delta=delta))
        assert start_loss is not None  # steps >= 1
        value = float(adv_loss.detach())
        if clean_loss is None:
            reference = start_loss
        else:
            reference = float(clean_loss.detach()) if isinstance(clean_loss, torch.Tensor) else float(clean_loss)
        counters = {
            "adv_loss": value,
            "adv_clean_gap": value - reference,
            "adv_ascent_gain": value - start_loss,
            "adv_delta_norm": float(delta.norm(dim=-1).mean()),
            "adv_micro_batches": 1.0,
            "adv_skipped": 0.0,
        }
        return self.cfg.weight * adv_loss, counters


def _loss(out: ModelOutput) -> torch.Tensor:
    if out.loss is None:
        raise ValueError("the forward returned no loss: AdversarialTerm must be called with targets")
    return out.loss
