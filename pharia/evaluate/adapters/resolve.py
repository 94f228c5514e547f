"""`load_eval_lm(PATH)`: whatever a user points the evaluation at, as an `EvalLM`.

PATH may be (checked in this order):

- a `.gguf` file -> `HFEvalLM` (weights and tokenizer are both inside the file);
- a training checkpoint `.../stages/<stage>/checkpoints/step-NNNNNNNN/` (portable.safetensors +
  state.json marked complete) -> its fp32 weights (the `param/*` tensors of the portable state);
- a Hugging Face model directory (config.json with `model_type` or `architectures`) -> `HFEvalLM`;
- a pharia model directory (model.safetensors + a config.json that is a pharia `ModelConfig`) ->
  `PhariaEvalLM`; `OUT/model` and `OUT/stages/<stage>/model` are such directories;
- a training output directory (`pharia train --out OUT`: `stages/`, and `model/` +
  `train_summary.json` once the run finished) -> the newest weights it holds: the published final
  model `OUT/model` when the run finished; otherwise the newest complete checkpoint of the stage in
  progress (stages run in order and every earlier stage is finished, so it is the newest weights),
  or, between stages, the final `model/` of the last finished stage;
- a stage directory `OUT/stages/<stage>` -> its final `model/` when finished, else its newest checkpoint.

A checkpoint holds weights but no model config. The config is taken from, in order: a finished
stage's `model/config.json` in the same training output (every stage trains the same architecture),
`OUT/model/config.json`, then the pipeline config YAML the run was started with (`config.yaml` in
OUT or in its parent: the pipeline writes `runs/<id>/config.yaml` and trains into `runs/<id>/train`).

Pharia models need the data stage's tokenizer. Unless `tokenizer` is given (tokenizer.json, the
shards directory or the tokenizer directory), it is found as `tokenizer.json` inside the model
directory or beside it, else through the pipeline config: its `data` section names the workspace's
data project (`<home>/data/<hash of data config>/data/shards`, see `pharia.data.dvc_project`), whose
tokenizer.json and manifest (eos/pad ids) the model was trained with; `<home>` is the workspace the
run directory lies in (`<home>/runs/<id>/train`) or $PHARIA_HOME. When that hash no longer names a
project (the DataConfig schema changed since the run), the project whose `params.yaml` data section
agrees with the run's on every key both have is taken, if exactly one does. Nothing else records
the shards a standalone `pharia train --out DIR` used, so there `tokenizer` must be given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pharia.errors import PhariaError
from pharia.evaluate.lm import EvalLM
from pharia.train.outputs import INPUTS_FILE

CHECKPOINTS_DIR = "checkpoints"
PIPELINE_CONFIG = "config.yaml"
EXPECTED = (
    "a training output directory (pharia train --out), a stage directory, a checkpoint directory "
    "(portable.safetensors + state.json), a pharia model directory (model.safetensors + config.json), "
    "a Hugging Face model directory (config.json with model_type) or a .gguf file"
)


@dataclass(frozen=True)
class Source:
    """What PATH turned out to be and which files will be loaded from it."""

    path: Path  # as given, resolved
    kind: str  # "training-output" | "stage" | "checkpoint" | "pharia-model" | "hf-model" | "gguf"
    weights: Path  # pharia/HF model directory, checkpoint directory or .gguf file
    detail: str  # one sentence for the user and the reproducibility record
    model_format: str  # "pharia" | "pharia-checkpoint" | "hf" | "gguf"
    model_config: Path | None = None  # pharia checkpoints: where their ModelConfig comes from
    tokenizer: Path | None = None  # pharia: tokenizer.json
    tokenizer_origin: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "kind": self.kind,
            "weights": str(self.weights),
            "format": self.model_format,
            "detail": self.detail,
            "model_config": str(self.model_config) if self.model_config else None,
            "tokenizer": str(self.tokenizer) if self.tokenizer else None,
            "tokenizer_origin": self.tokenizer_origin,
            **self.extra,
        }


# ------------------------------------------------------------------------------------ detection
def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_checkpoint(path: Path) -> bool:
    from pharia.train.checkpoint import PORTABLE_FILE, STATE_FILE

    state = _read_json(path / STATE_FILE)
    return (path / PORTABLE_FILE).is_file() and state is not None and state.get("complete") is True


def is_hf_model(path: Path) -> bool:
    config = _read_json(path / "config.json")
    return config is not None and ("model_type" in config or "architectures" in config)


def is_pharia_model(path: Path) -> bool:
    from pharia.model.io import CONFIG_FILE, WEIGHTS_FILE

    return (path / WEIGHTS_FILE).is_file() and (path / CONFIG_FILE).is_file() and not is_hf_model(path)


def _newest_checkpoint(stage_dir: Path) -> Any | None:
    from pharia.train.checkpoint import CheckpointStore

    newest = CheckpointStore(stage_dir / CHECKPOINTS_DIR, keep=1).newest()
    return newest if newest is not None and (newest.portable_file).is_file() else None


def _stage_choice(stage_dir: Path) -> tuple[str, Path, str] | None:
    """(kind, weights, detail) of a stage directory: final model when finished, else newest checkpoint."""
    from pharia.train.stage import MODEL_DIR, STAGE_SUMMARY

    if (stage_dir / STAGE_SUMMARY).is_file() and is_pharia_model(stage_dir / MODEL_DIR):
        return "pharia-model", stage_dir / MODEL_DIR, f"final weights of finished stage '{stage_dir.name}'"
    checkpoint = _newest_checkpoint(stage_dir)
    if checkpoint is None:
        return None
    return (
        "checkpoint",
        checkpoint.path,
        f"newest complete checkpoint of stage '{stage_dir.name}' (step {checkpoint.step}, stage not finished)",
    )


def _training_choice(out: Path) -> tuple[str, Path, str]:
    """The newest weights of a training output directory (see the module docstring)."""
    from pharia.train.outputs import MODEL_DIR, SUMMARY_FILE
    from pharia.train.stage import STAGE_SUMMARY, STAGES_DIR

    if (out / SUMMARY_FILE).is_file() and is_pharia_model(out / MODEL_DIR):
        return "pharia-model", out / MODEL_DIR, "published final model of the finished training run (OUT/model)"
    stages = sorted(p for p in (out / STAGES_DIR).glob("*") if p.is_dir()) if (out / STAGES_DIR).is_dir() else []
    running = [(s, c) for s in stages if not (s / STAGE_SUMMARY).is_file() for c in [_newest_checkpoint(s)] if c]
    if running:  # the stage in progress; several only after manual surgery: take the newest write
        stage, checkpoint = max(running, key=lambda sc: (sc[1].path / "state.json").stat().st_mtime)
        return (
            "checkpoint",
            checkpoint.path,
            f"newest complete checkpoint of stage '{stage.name}' (step {checkpoint.step}; training not finished)",
        )
    finished = []
    for stage in stages:
        summary = _read_json(stage / STAGE_SUMMARY)
        if summary is not None and is_pharia_model(stage / "model"):
            finished.append((int(summary.get("index", -1)), stage))
    if finished:
        _, stage = max(finished)
        return "pharia-model", stage / "model", f"final weights of stage '{stage.name}', the last finished stage"
    raise PhariaError(
        f"{out}: training output directory without weights yet: no finished stage, no complete checkpoint "
        f"under {STAGES_DIR}/<stage>/{CHECKPOINTS_DIR}/ and no published model/"
    )


def _training_root_of(checkpoint: Path) -> Path:
    """OUT of `OUT/stages/<stage>/checkpoints/step-N`."""
    return checkpoint.parent.parent.parent.parent


# ------------------------------------------------------------------------------- configuration
def _pipeline_config_files(out: Path) -> list[Path]:
    return [p for p in (out / PIPELINE_CONFIG, out.parent / PIPELINE_CONFIG) if p.is_file()]


def _pipeline_section(path: Path, section: str) -> Any:
    """The `data` (DataConfig) or `model` (ModelConfig) section of a pipeline config YAML, or None.

    Only the section needed is validated: a run's config.yaml stays readable after other sections
    of the schema (eval, gates) have changed, and these two are what the weights depend on."""
    import yaml
    from pydantic import ValidationError

    from pharia.config import DataConfig, ModelConfig

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        model_type = {"data": DataConfig, "model": ModelConfig}[section]
        return model_type.model_validate(raw[section])
    except (OSError, yaml.YAMLError, ValidationError, KeyError, TypeError):
        return None


def _checkpoint_config(out: Path) -> tuple[Path, Any]:
    """(where, ModelConfig) for the checkpoints of training output `out`."""
    from pharia.model.io import load_config_json
    from pharia.train.stage import STAGES_DIR

    stages = (out / STAGES_DIR).glob("*/model/config.json") if (out / STAGES_DIR).is_dir() else []
    for candidate in [*sorted(stages), out / "model" / "config.json"]:
        if candidate.is_file():
            return candidate, load_config_json(candidate.parent)
    for candidate in _pipeline_config_files(out):
        model = _pipeline_section(candidate, "model")
        if model is not None:
            return candidate, model
    raise PhariaError(
        f"{out}: cannot tell the model config of its checkpoints: no finished stage's model/config.json, "
        f"no model/config.json and no pipeline {PIPELINE_CONFIG} in {out} or {out.parent}; evaluate a finished "
        "stage's model/ directory instead, or wait for the first stage to finish"
    )


# ---------------------------------------------------------------------------------- tokenizer
def _tokenizer_file(path: Path) -> Path:
    from pharia.data.tokenizer import TOKENIZER_FILE

    path = Path(path).expanduser().resolve()
    candidate = path / TOKENIZER_FILE if path.is_dir() else path
    if not candidate.is_file():
        raise PhariaError(f"tokenizer {path}: expected a tokenizer.json file or a directory holding one")
    return candidate


def _data_section(path: Path) -> dict[str, Any] | None:
    """The raw `data:` mapping of a YAML file (a run's config.yaml, a data project's params.yaml)."""
    import yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    data = raw.get("data") if isinstance(raw, dict) else None
    return data if isinstance(data, dict) else None


def _matching_project(config_file: Path, data_root: Path) -> Path | None:
    """The shards of the data project under `data_root` that the run of `config_file` trained on.

    Projects are named by a hash of the validated data config (`project_dir_for`), so that name is
    tried first. The hash changes whenever the DataConfig schema gains a field, which orphans the
    projects of older runs; then each project's `params.yaml` (the data section it was built with)
    is compared with the run's on the keys both have, and a single match is accepted."""
    from pharia.data.dvc_project import SHARDS_DIR, project_dir_for
    from pharia.data.tokenizer import TOKENIZER_FILE

    data = _pipeline_section(config_file, "data")
    if data is not None:
        shards = project_dir_for(data, data_root) / SHARDS_DIR
        if (shards / TOKENIZER_FILE).is_file():
            return shards
    wanted = _data_section(config_file)
    if wanted is None or not data_root.is_dir():
        return None
    matches = []
    for params in sorted(data_root.glob("*/params.yaml")):
        built = _data_section(params)
        shards = params.parent / SHARDS_DIR
        common = set(built or {}) & set(wanted)
        if built and common and all(built[k] == wanted[k] for k in common) and (shards / TOKENIZER_FILE).is_file():
            matches.append(shards)
    return matches[0] if len(matches) == 1 else None


def run_inputs(out: Path | None) -> dict[str, Any]:
    """The shards and tokenizer a training run recorded in OUT/inputs.json ({} when absent)."""
    if out is None:
        return {}
    return _read_json(out / INPUTS_FILE) or {}


def _find_tokenizer(weights: Path, out: Path | None) -> tuple[Path, str] | None:
    """(tokenizer.json, how it was found) for a pharia model, or None (see the module docstring)."""
    from pharia.data.tokenizer import TOKENIZER_FILE
    from pharia.workspace import Workspace

    directory = weights if weights.is_dir() else weights.parent
    for near in (directory / TOKENIZER_FILE, directory.parent / TOKENIZER_FILE):
        if near.is_file():
            return near, f"found beside the weights ({near})"
    recorded = run_inputs(out)
    if recorded.get("tokenizer_file") and Path(recorded["tokenizer_file"]).is_file():
        return Path(recorded["tokenizer_file"]), f"recorded by the training run ({out / INPUTS_FILE})"
    root = out if out is not None else directory.parent  # a model directory OUT/model
    for config_file in _pipeline_config_files(root):
        homes = dict.fromkeys([config_file.parent.parent.parent, Workspace.from_env().home])  # <home>/runs/<id>/
        for home in homes:
            shards = _matching_project(config_file, home / "data")
            if shards is not None:
                return shards / TOKENIZER_FILE, f"shards of the data config in {config_file} ({shards})"
    return None


# ------------------------------------------------------------------------------------- resolve
def resolve_source(path: Path, tokenizer: Path | None = None) -> Source:
    """Classify `path` and find the weights, model config and (pharia) tokenizer to load."""
    given = Path(path).expanduser()
    if not given.exists():
        raise PhariaError(f"{given}: no such file or directory; expected {EXPECTED}")
    path = given.resolve()
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return _foreign(path, "gguf", "GGUF file (weights and tokenizer inside)", tokenizer)
        raise PhariaError(f"{path}: a file, but not a .gguf file; expected {EXPECTED}")

    out: Path | None = None
    if is_checkpoint(path):
        kind, weights, detail = "checkpoint", path, "training checkpoint directory"
        out = _training_root_of(path)
    elif is_hf_model(path):
        return _foreign(path, "hf", "Hugging Face model directory", tokenizer)
    elif is_pharia_model(path):
        kind, weights, detail = "pharia-model", path, "pharia model directory"
    elif (path / CHECKPOINTS_DIR).is_dir() or ((path / "summary.json").is_file() and (path / "model").is_dir()):
        choice = _stage_choice(path)
        if choice is None:
            raise PhariaError(f"{path}: stage directory without a finished model/ or a complete checkpoint yet")
        kind, weights, detail = choice
        out = path.parent.parent
        detail = f"stage directory: {detail}"
    elif (path / "stages").is_dir() or (path / "train_summary.json").is_file():
        kind, weights, detail = _training_choice(path)
        out = path
        detail = f"training output directory: {detail}"
    else:
        raise PhariaError(f"{path}: not a model this evaluation can load; expected {EXPECTED}")
    if out is None and kind == "pharia-model" and path.parent.parent.name == "stages":
        out = path.parent.parent.parent  # OUT/stages/<stage>/model
    elif out is None and kind == "pharia-model" and (path.parent / INPUTS_FILE).is_file():
        out = path.parent  # OUT/model, the published final weights

    model_config = None
    extra: dict[str, Any] = {}
    if kind == "checkpoint":
        from pharia.train.checkpoint import STATE_FILE

        assert out is not None
        model_config, _ = _checkpoint_config(out)
        state = _read_json(weights / STATE_FILE) or {}
        extra = {"stage": state.get("stage"), "step": state.get("step")}
    elif out is not None:
        extra = {"stage": weights.parent.name if weights.parent.parent.name == "stages" else None}
    if tokenizer is not None:
        tokenizer_file, origin = _tokenizer_file(tokenizer), "given"
    else:
        found = _find_tokenizer(weights, out)
        if found is None:
            raise PhariaError(
                f"{path}: {detail}, but its tokenizer cannot be found (no tokenizer.json beside the weights, no "
                f"pipeline {PIPELINE_CONFIG} naming the data project); pass the tokenizer: the shards directory "
                "or the tokenizer.json the model was trained with"
            )
        tokenizer_file, origin = found
    return Source(
        path=path,
        kind=kind,
        weights=weights,
        detail=detail,
        model_format="pharia-checkpoint" if kind == "checkpoint" else "pharia",
        model_config=model_config,
        tokenizer=tokenizer_file,
        tokenizer_origin=origin,
        extra={**{k: v for k, v in extra.items() if v is not None}, **_recorded_shards(out)},
    )


def _recorded_shards(out: Path | None) -> dict[str, str]:
    shards = run_inputs(out).get("shards_dir")
    return {"shards_dir": shards} if shards and (Path(shards) / "manifest.json").is_file() else {}


def _foreign(path: Path, fmt: str, detail: str, tokenizer: Path | None) -> Source:
    if tokenizer is not None:
        raise PhariaError(f"{path}: a {detail} brings its own tokenizer; do not pass one ({tokenizer})")
    return Source(
        path=path, kind="gguf" if fmt == "gguf" else "hf-model", weights=path, detail=detail, model_format=fmt
    )


def describe_source(path: Path, tokenizer: Path | None = None) -> dict[str, Any]:
    """What PATH is and what would be loaded from it (JSON-able), without loading any weights."""
    return resolve_source(path, tokenizer).as_dict()


# ---------------------------------------------------------------------------------------- load
def load_eval_lm(
    path: Path,
    *,
    batch_size: int,
    tokenizer: Path | None = None,
    device: str = "auto",
    max_length: int | None = None,
) -> EvalLM:
    """The model at `path` as an `EvalLM` (see the module docstring for what PATH may be);
    `describe()` carries `source` = `describe_source(path)`."""
    source = resolve_source(path, tokenizer)
    extra = {"source": source.as_dict()}
    if source.model_format in ("hf", "gguf"):
        from pharia.evaluate.adapters.hf_lm import HFEvalLM

        return HFEvalLM.from_pretrained(
            source.weights, batch_size=batch_size, device=device, max_length=max_length, extra=extra
        )
    from pharia.evaluate.adapters.pharia_lm import PhariaEvalLM

    assert source.tokenizer is not None
    if source.model_format == "pharia":
        lm = PhariaEvalLM.from_dir(
            source.weights, source.tokenizer, batch_size=batch_size, device=device, max_length=max_length, extra=extra
        )
    else:
        lm = _checkpoint_lm(source, batch_size=batch_size, device=device, max_length=max_length, extra=extra)
    _check_vocabulary(lm, source)
    return lm


def _checkpoint_lm(
    source: Source, *, batch_size: int, device: str, max_length: int | None, extra: dict[str, Any]
) -> Any:
    """A PhariaEvalLM over the fp32 weights of a checkpoint's portable state."""
    from pharia.data.manifest import sha256_file
    from pharia.data.tokenizer import load_tokenizer
    from pharia.evaluate.adapters.pharia_lm import PhariaEvalLM, pick_device, special_ids_for
    from pharia.model.io import load_config_json, model_from_state
    from pharia.train.checkpoint import PORTABLE_FILE
    from pharia.train.portable import PARAM_PREFIX, load_portable_state

    assert source.model_config is not None and source.tokenizer is not None
    if source.model_config.suffix == ".json":
        cfg = load_config_json(source.model_config.parent)
    else:
        cfg = _pipeline_section(source.model_config, "model")
        if cfg is None:
            raise PhariaError(f"{source.model_config}: no valid `model` section")
    portable = source.weights / PORTABLE_FILE
    try:
        state = load_portable_state(portable)
    except PhariaError as exc:
        raise PhariaError(f"{source.path}: {exc}") from None
    params = {k[len(PARAM_PREFIX) :]: v for k, v in state.items() if k.startswith(PARAM_PREFIX)}
    del state  # the Adam moments are twice the weights; keep only the weights
    model = model_from_state(cfg, params, origin=f"{portable} (model config from {source.model_config})")
    model = model.to(pick_device(device)).eval()
    tokenizer = load_tokenizer(source.tokenizer)
    eos, pad = special_ids_for(tokenizer, source.tokenizer)
    return PhariaEvalLM(
        model,
        tokenizer,
        eos_token_id=eos,
        pad_token_id=pad,
        batch_size=batch_size,
        max_length=max_length,
        model_id=str(source.weights),
        weights_sha256=sha256_file(portable),
        tokenizer_file=source.tokenizer,
        extra=extra,
    )


def _check_vocabulary(lm: Any, source: Source) -> None:
    """Ids of a tokenizer larger than the embedding would index past it: refuse the pairing."""
    size = lm.tokenizer.get_vocab_size(with_added_tokens=True)
    if size > lm.model.cfg.vocab_size:
        raise PhariaError(
            f"{source.path}: tokenizer {source.tokenizer} has {size} tokens but the model's vocab_size is "
            f"{lm.model.cfg.vocab_size}: not the tokenizer this model was trained with"
        )
