"""Training stage: DeepSpeed config, shard reading, the launcher, and DeepSpeed on CPU end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from conftest_train import EOS, PAD, tiny_pipeline_config, write_config, write_shards
from typer.testing import CliRunner

from pharia.config import ModelConfig, TrainConfig, validate_config
from pharia.errors import TrainingError
from pharia.train.batch_size import plan_batches
from pharia.train.cli import app as train_app
from pharia.train.cli import single_process_env
from pharia.train.data import MixtureBatches, ShardSet, iter_heldout_batches
from pharia.train.deepspeed_config import SCHEDULE_FIRST_ITERATION, build_deepspeed_config, warmup_schedule
from pharia.train.launch import child_environment, failure_line, run_training

# fixtures synthetic_shards, train_env, train_mlflow_uri (tests/conftest.py belongs to another part of the suite)
pytest_plugins = ["conftest_train"]


# -------------------------------------------------------------------------- DeepSpeed config
def _ds_config(train: TrainConfig, world_size: int) -> dict:
    """The config of the train section's own schedule, for a plan on `world_size` CPU ranks."""
    plan = plan_batches(train, ModelConfig(), 128, world_size, device=torch.device("cpu"))
    schedule = {"lr": train.lr, "warmup_steps": train.warmup_steps, "min_lr_ratio": train.min_lr_ratio}
    return build_deepspeed_config(train, plan, **schedule, total_steps=train.max_steps)


def test_deepspeed_config_carries_the_train_config() -> None:
    train = TrainConfig(
        zero_stage=3, precision="bf16", micro_batch_size=4, grad_accum_steps=8, lr=3e-4, betas=(0.9, 0.95)
    )
    ds = _ds_config(train, world_size=64)
    assert ds["train_batch_size"] == 4 * 8 * 64
    assert ds["train_micro_batch_size_per_gpu"] == 4 and ds["gradient_accumulation_steps"] == 8
    assert ds["gradient_clipping"] == 1.0
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["bf16"] == {"enabled": True} and ds["fp16"]["enabled"] is False
    assert ds["optimizer"]["type"] == "AdamW"
    assert ds["optimizer"]["params"]["torch_adam"] is True  # never compile FusedAdam / CPUAdam
    assert ds["optimizer"]["params"]["lr"] == 3e-4 and ds["optimizer"]["params"]["betas"] == [0.9, 0.95]
    assert ds["scheduler"]["type"] == "WarmupCosineLR"
    json.dumps(ds)  # the same dict is written as JSON for cluster jobs


def test_fp16_uses_dynamic_loss_scaling() -> None:
    ds = _ds_config(TrainConfig(precision="fp16"), world_size=1)
    assert ds["fp16"]["enabled"] is True and ds["fp16"]["loss_scale"] == 0
    assert ds["bf16"]["enabled"] is False
    fp32 = _ds_config(TrainConfig(precision="fp32"), world_size=1)
    assert not fp32["fp16"]["enabled"] and not fp32["bf16"]["enabled"]


def test_schedule_runs_warmup_then_cosine_to_the_floor_in_deepspeed() -> None:
    """Drive DeepSpeed's own WarmupCosineLR with our params exactly as the trainer does."""
    from deepspeed.runtime.lr_schedules import WarmupCosineLR

    train = TrainConfig(max_steps=40, warmup_steps=8, lr=1e-3, min_lr_ratio=0.1)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=train.lr)
    scheduler = WarmupCosineLR(optimizer, **warmup_schedule(train.max_steps, train.warmup_steps, train.min_lr_ratio))
    scheduler.step(SCHEDULE_FIRST_ITERATION)
    lrs = []
    for _ in range(train.max_steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        scheduler.step()
    assert lrs[0] == pytest.approx(train.lr / 8)  # the first step already learns
    assert all(a < b for a, b in zip(lrs[:7], lrs[1:8], strict=True))  # linear warmup
    assert max(lrs) == pytest.approx(train.lr, rel=0.02)
    assert all(a >= b for a, b in zip(lrs[8:], lrs[9:], strict=False))  # cosine decay
    assert lrs[-1] == pytest.approx(train.lr * 0.1)


# ------------------------------------------------------------------------------------ shards
def test_shard_set_reads_the_manifest(synthetic_shards: Path) -> None:
    shards = ShardSet.open(synthetic_shards, vocab_size=512)
    assert shards.domains("train") == ["code", "web"] and shards.domains("heldout") == ["code", "web"]
    assert shards.tokens("train") == 9000 and (shards.eos_token_id, shards.pad_token_id) == (EOS, PAD)
    assert shards.dtype == np.uint16


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("vocab", r"vocab_size mismatch.*vocab_size=512.*model.vocab_size=1024"),
        ("missing_file", r"shard file missing: .*train/web\.bin \(listed in .*splits\.train\.web\)"),
        ("truncated", r"train/code\.bin has 5998 bytes, expected 3000 tokens.*splits\.train\.code\.tokens"),
        ("schema", r"schema is 'pharia.shards/v0', expected 'pharia.shards/v1'"),
        ("no_manifest", r"shard manifest not found"),
        ("missing_field", r"missing field\(s\) dtype"),
    ],
)
def test_shard_set_rejects_broken_shards_with_a_clear_message(
    synthetic_shards: Path, breakage: str, message: str
) -> None:
    manifest_path = synthetic_shards / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    vocab = 512
    if breakage == "vocab":
        vocab = 1024
    elif breakage == "missing_file":
        (synthetic_shards / "train" / "web.bin").unlink()
    elif breakage == "truncated":
        data = (synthetic_shards / "train" / "code.bin").read_bytes()
        (synthetic_shards / "train" / "code.bin").write_bytes(data[:-2])
    elif breakage == "schema":
        manifest["schema"] = "pharia.shards/v0"
    elif breakage == "no_manifest":
        manifest_path.unlink()
    elif breakage == "missing_field":
        del manifest["dtype"]
    if manifest_path.exists():
        manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(TrainingError, match=message):
        ShardSet.open(synthetic_shards, vocab_size=vocab)


def test_train_batches_are_shifted_windows_of_the_files(synthetic_shards: Path) -> None:
    shards = ShardSet.open(synthetic_shards)
    files = [np.fromfile(f.path, dtype=np.uint16).astype(np.int64) for f in shards.files["train"].values()]
    x, y = MixtureBatches(shards, split="train", seq_len=32, seed=[0, 0]).global_batch(1, 4)
    assert x.shape == y.shape == (4, 32) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one
    for row in torch.cat([x, y[:, -1:]], dim=1).numpy():  # each window is a real slice of one file
        assert any(
            any(np.array_equal(f[o : o + 33], row) for o in np.flatnonzero(f[: len(f) - 32] == row[0])) for f in files
        )


def test_heldout_windows_score_every_token_once_and_pad_the_last(tmp_path: Path) -> None:
    shards = ShardSet.open(write_shards(tmp_path / "s", heldout_tokens={"web": 70}))
    batches = list(iter_heldout_batches(shards, "web", seq_len=16, batch_size=2))
    targets = torch.cat([y for _, y in batches]).flatten()
    tokens = np.fromfile(shards.files["heldout"]["web"].path, dtype=np.uint16)
    assert targets[targets != -100].tolist() == tokens[1:].tolist()  # 69 targets, in order, once each
    x_last, y_last = batches[-1][0][-1], batches[-1][1][-1]  # tokens 64..69: 6 inputs, 5 targets
    assert torch.equal(x_last[:6], torch.from_numpy(tokens[64:70].astype(np.int64))) and (x_last[6:] == PAD).all()
    assert (y_last[5:] == -100).all() and (y_last[:5] != -100).all()
    assert len(list(iter_heldout_batches(shards, "web", seq_len=16, batch_size=2, max_batches=1))) == 1
    with pytest.raises(TrainingError, match="no heldout file for domain 'books'"):
        next(iter_heldout_batches(shards, "books", seq_len=16, batch_size=2))


def test_out_of_vocabulary_tokens_are_reported(tmp_path: Path) -> None:
    root = write_shards(tmp_path / "s", vocab_size=512)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["vocab_size"] = 300  # ids up to 511 are in the files
    (root / "manifest.json").write_text(json.dumps(manifest))
    batches = MixtureBatches(ShardSet.open(root), split="train", seq_len=32, seed=[0])
    with pytest.raises(TrainingError, match="outside the vocabulary of 300"):
        batches.global_batch(1, 64)


# ---------------------------------------------------------------------------- launcher pieces
def test_failure_line_prefers_pharia_errors_then_the_root_exception() -> None:
    assert failure_line(["noise", "error: vocab_size mismatch: x", "torch...ChildFailedError: boom"]) == (
        "vocab_size mismatch: x"
    )
    torchrun = [
        "Traceback (most recent call last):",
        "RuntimeError: CUDA out of memory",
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ",
        "=====",
    ]
    assert failure_line(torchrun) == "RuntimeError: CUDA out of memory"
    assert failure_line(["", "Killed", ""]) == "Killed"


def test_child_environment_defaults(tmp_path: Path) -> None:
    base = {"PHARIA_HOME": str(tmp_path / "home"), "RANK": "3", "MASTER_PORT": "1", "PATH": "/bin"}
    env = child_environment("cpu", ranks=2, env={"EXTRA": "1"}, base=base)
    assert env["DS_ACCELERATOR"] == "cpu" and env["EXTRA"] == "1" and env["PATH"] == "/bin"
    assert env["TORCH_EXTENSIONS_DIR"] == str((tmp_path / "home" / "torch_extensions").resolve())
    assert "RANK" not in env and "MASTER_PORT" not in env  # the child sets up its own job
    assert int(env["OMP_NUM_THREADS"]) >= 1
    kept = child_environment("cpu", 1, {"TORCH_EXTENSIONS_DIR": "/cache"}, base=base)
    assert kept["TORCH_EXTENSIONS_DIR"] == "/cache"
    assert child_environment("cuda", 1, None, base={"DS_ACCELERATOR": "cpu"})["DS_ACCELERATOR"] == "cuda"


def test_single_process_env_is_what_deepspeed_needs() -> None:
    env = single_process_env()
    assert env["RANK"] == env["LOCAL_RANK"] == "0" and env["WORLD_SIZE"] == "1"
    assert env["MASTER_ADDR"] == "127.0.0.1" and 1024 <= int(env["MASTER_PORT"]) < 65536


def test_train_outside_a_distributed_environment_explains_itself(synthetic_shards: Path, monkeypatch) -> None:
    from pharia.train.trainer import train

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    cfg = validate_config(tiny_pipeline_config())
    with pytest.raises(TrainingError, match="distributed environment incomplete"):
        train(cfg, synthetic_shards, synthetic_shards.parent / "out", None, None)


def test_pharia_train_is_a_direct_command(tmp_path: Path) -> None:
    root = typer.Typer()
    root.add_typer(train_app, name="train")
    result = CliRunner().invoke(root, ["train", "--help"])
    assert result.exit_code == 0
    for option in ("--config", "--stage", "--shards", "--out", "--tracking-uri", "--run-id", "--ranks"):
        assert option in result.output
    missing = CliRunner().invoke(root, ["train", "--config", "tiny", "--shards", str(tmp_path / "none")])
    assert isinstance(missing.exception, TrainingError)  # checked before any worker starts
    assert "shard manifest not found" in str(missing.exception)


# ------------------------------------------------------------------- DeepSpeed on CPU, for real
def _metric_steps(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    return sorted((m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, key))


def _mean_heldout_loss(model: torch.nn.Module, synthetic_shards: Path) -> float:
    shards = ShardSet.open(synthetic_shards)
    losses = [model(x, targets=y).loss.item() for x, y in iter_heldout_batches(shards, "web", seq_len=32, batch_size=8)]
    return sum(losses) / len(losses)


@pytest.mark.integration
def test_run_training_zero2_logs_to_mlflow_and_saves_a_loadable_model(
    tmp_path: Path, synthetic_shards: Path, train_env: dict, train_mlflow_uri: str
) -> None:
    from mlflow.tracking import MlflowClient

    from pharia.model.io import load_pretrained
    from pharia.model.model import PhariaLM

    client = MlflowClient(train_mlflow_uri)
    run_id = client.create_run(client.create_experiment("train-test")).info.run_id
    config = write_config(tmp_path / "tiny.yaml", tiny_pipeline_config(max_steps=30, log_every=5))
    lines: list[str] = []
    summary = run_training(
        config,
        synthetic_shards,
        tmp_path / "out",
        tracking_uri=train_mlflow_uri,
        run_id=run_id,
        env=train_env,
        echo=lines.append,
    )

    assert summary["steps"] == 30 and summary["world_size"] == 1 and summary["zero_stage"] == 2
    assert summary["first_loss"] == pytest.approx(math.log(512), abs=0.3)
    assert summary["final_loss"] < summary["first_loss"] - 1.0, summary["loss_history"]
    assert [step for step, _ in summary["loss_history"]] == [5, 10, 15, 20, 25, 30]
    assert summary["tokens_seen"] == 30 * 8 * 32 and summary["tokens_per_s"] > 0
    assert summary["params_total"] == summary["params_unique"] > 0
    for key in ("deepspeed_version", "torch_version", "precision", "device", "micro_batch_size", "grad_accum_steps"):
        assert key in summary
    assert any(line.startswith("step 30/30") for line in lines)  # progress lines reach the caller

    for key in ("train_loss", "lr", "tokens_per_s", "grad_norm"):
        history = _metric_steps(train_mlflow_uri, run_id, key)
        assert [step for step, _ in history] == [5, 10, 15, 20, 25, 30], key
    losses = [value for _, value in _metric_steps(train_mlflow_uri, run_id, "train_loss")]
    assert losses[-1] == pytest.approx(summary["final_loss"]) and losses[-1] < losses[0]
    assert _metric_steps(train_mlflow_uri, run_id, "aux_loss") == []  # dense model: no MoE metric
    lrs = [value for _, value in _metric_steps(train_mlflow_uri, run_id, "lr")]
    assert max(lrs) <= 1e-2 and lrs[-1] == pytest.approx(1e-2 * 0.1)  # cosine ends at lr · min_lr_ratio

    model, cfg = load_pretrained(Path(summary["model_dir"]))
    assert cfg == validate_config(tiny_pipeline_config()).model
    torch.manual_seed(0)
    untrained = PhariaLM(cfg).eval()
    with torch.no_grad():
        assert _mean_heldout_loss(model, synthetic_shards) < _mean_heldout_loss(untrained, synthetic_shards) - 1.0


@pytest.mark.integration
def test_run_training_two_ranks_zero3_bf16_moe_shared(
    tmp_path: Path, synthetic_shards: Path, train_env: dict, train_mlflow_uri: str
) -> None:
    """torchrun with 2 gloo ranks, ZeRO-3 partitions, bf16, MoE + sparse attention + cross-layer
    sharing + activation checkpointing: the saved model is the gathered fp32 master weights."""
    from mlflow.tracking import MlflowClient

    from pharia.model.io import load_pretrained

    raw = tiny_pipeline_config(
        zero_stage=3, precision="bf16", grad_accum_steps=2, max_steps=6, log_every=3, activation_checkpointing=True
    )
    raw["model"].update(n_layers=4, share_group=2, n_experts=4, top_k=2, attention="sparse", sparse_window=8)
    config = write_config(tmp_path / "moe.yaml", raw)
    client = MlflowClient(train_mlflow_uri)
    run_id = client.create_run(client.create_experiment("moe")).info.run_id
    summary = run_training(
        config, synthetic_shards, tmp_path / "out", tracking_uri=train_mlflow_uri, run_id=run_id, ranks=2, env=train_env
    )

    assert summary["world_size"] == 2 and summary["zero_stage"] == 3 and summary["precision"] == "bf16"
    assert summary["tokens_seen"] == 6 * 8 * 2 * 2 * 32
    assert summary["params_unique"] < summary["params_total"]
    assert summary["final_loss"] < summary["first_loss"]
    stage_run = json.loads((tmp_path / "out" / "stages" / "pretrain" / "mlflow_run.json").read_text())["run_id"]
    assert client.get_run(stage_run).data.tags["mlflow.parentRunId"] == run_id
    aux = _metric_steps(train_mlflow_uri, stage_run, "aux_loss")
    assert [step for step, _ in aux] == [3, 6] and all(value >= 0.99 for _, value in aux)

    model, cfg = load_pretrained(Path(summary["model_dir"]))
    assert cfg.n_experts == 4 and cfg.share_group == 2
    assert all(p.dtype == torch.float32 for p in model.parameters())  # fp32 masters, not bf16 copies
    with torch.no_grad():
        assert math.isfinite(_mean_heldout_loss(model, synthetic_shards))


@pytest.mark.integration
def test_run_training_failure_carries_the_childs_message(
    tmp_path: Path, synthetic_shards: Path, train_env: dict
) -> None:
    raw = tiny_pipeline_config()
    raw["data"]["vocab_size"] = raw["model"]["vocab_size"] = 1024  # the shards were built with 512
    config = write_config(tmp_path / "bad.yaml", raw)
    with pytest.raises(TrainingError, match=r"exit code 2\): vocab_size mismatch.*model.vocab_size=1024"):
        run_training(
            config, synthetic_shards, tmp_path / "out", tracking_uri=None, run_id=None, env=train_env, echo=print
        )
    assert not (tmp_path / "out" / "train_summary.json").exists()


def test_batches_draw_domains_by_mixture_weight_not_by_token_count(tmp_path: Path) -> None:
    root = write_shards(tmp_path / "s", train_tokens={"web": 20_000, "code": 2_000})
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["domain_shares"] = {"web": {"target": 0.5, "achieved": 0.9}, "code": {"target": 0.5, "achieved": 0.1}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    shards = ShardSet.open(root)
    assert shards.domain_targets == {"web": 0.5, "code": 0.5}

    def draw(weights):
        batches = MixtureBatches(shards, split="train", seq_len=32, seed=[3], domain_weights=weights)
        drawn = [batches.global_batch(step, 50)[0] for step in range(1, 41)]
        return batches.mixture(), drawn

    weighted, first = draw(shards.domain_targets)
    assert weighted["code"]["drawn"] == pytest.approx(0.5, abs=0.05)
    assert weighted["code"]["epochs"] > weighted["web"]["epochs"] * 5  # the small domain is revisited
    uniform, _ = draw(None)
    assert uniform["code"]["drawn"] == pytest.approx(2_000 / 22_000, abs=0.04)
    _, again = draw(shards.domain_targets)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))  # deterministic for a seed
