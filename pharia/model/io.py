"""Weights on disk: `model.safetensors` + `config.json` in one directory, written atomically.

safetensors refuses tensors that share storage, and PhariaLM shares on purpose (tied embeddings,
cross-layer blocks). `named_parameters()` already yields each shared tensor once, under its first
name, so the file holds exactly the unique parameters; loading rebuilds the model from its config
(which recreates the sharing) and re-ties the output projection. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pharia.config import ModelConfig
from pharia.errors import PhariaError
from pharia.model.model import PhariaLM, build_model

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def unique_state_dict(model: PhariaLM) -> dict[str, torch.Tensor]:
    """Each stored parameter once (shared ones under their first name), detached, contiguous, on CPU."""
    return {name: p.detach().contiguous().cpu() for name, p in model.named_parameters()}


def save_pretrained(model: PhariaLM, cfg: ModelConfig, out_dir: Path) -> Path:
    """Write `out_dir/{model.safetensors,config.json}`; readers never see a half-written directory.

    Files go to a temporary sibling directory that is renamed into place; an existing `out_dir` is
    moved aside first and removed only after the new one is in place.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        config_json = cfg.model_dump_json(indent=2)
        save_file(unique_state_dict(model), staging / WEIGHTS_FILE, metadata={"format": "pt", "config": config_json})
        (staging / CONFIG_FILE).write_text(config_json + "\n", encoding="utf-8")
        previous = None
        if out_dir.exists():
            previous = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
            os.rename(out_dir, previous)
        os.rename(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
    return out_dir


def load_config_json(model_dir: Path) -> ModelConfig:
    path = Path(model_dir) / CONFIG_FILE
    if not path.is_file():
        raise PhariaError(f"model config not found: {path}")
    try:
        return ModelConfig.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except ValueError as exc:
        raise PhariaError(f"{path}: not a valid model config: {exc}".splitlines()[0]) from None


def model_from_state(cfg: ModelConfig, state: dict[str, torch.Tensor], origin: str = "state dict") -> PhariaLM:
    """A PhariaLM of `cfg` holding exactly the tensors of `state` (no copy, no random init).

    `state` must name every unique parameter once (what `unique_state_dict` produces); the model is
    built on the meta device, the tensors are assigned, and the tied output projection re-tied.
    """
    model = build_model(cfg, device="meta")
    expected = {name for name, _ in model.named_parameters()}
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unexpected:
        raise PhariaError(f"{origin} does not match its config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    # strict=False: state_dict() also lists the tied alias `lm_head.weight`, checked above instead.
    model.load_state_dict(state, strict=False, assign=True)
    if cfg.tie_embeddings:
        model.lm_head.weight = model.tok_emb.weight
    if any(p.is_meta for p in model.parameters()):
        raise PhariaError(f"{origin}: some parameters were not loaded")
    return model


def load_pretrained(
    model_dir: Path, map_location: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> tuple[PhariaLM, ModelConfig]:
    """The model saved by `save_pretrained`, in eval mode, and its config.

    The model is built on the meta device and the file's tensors are assigned to it, so loading
    costs one copy of the weights, not a random initialisation first. `dtype` converts after loading
    (default: keep the file's dtype).
    """
    model_dir = Path(model_dir)
    cfg = load_config_json(model_dir)
    weights = model_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise PhariaError(f"model weights not found: {weights}")
    state = load_file(weights, device=str(map_location))
    model = model_from_state(cfg, state, origin=str(weights))
    if dtype is not None:
        model.to(dtype)
    return model.eval(), cfg
