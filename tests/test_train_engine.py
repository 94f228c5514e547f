"""The multi-stage training engine end to end: real DeepSpeed on CPU (gloo), real MLflow on SQLite,
`pharia train` as users run it. Unit tests of the resumable loader and the checkpoint store first."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest_train import REPO, tiny_pipeline_config, write_config, write_shards

from pharia.config import StageConfig, validate_config
from pharia.errors import TrainingError
from pharia.train.checkpoint import CheckpointStore
from pharia.train.data import MixtureBatches, ShardSet
from pharia.train.loop import StepState
from pharia.train.stage import resume_hash

pytest_plugins = ["conftest_train"]

STAGES = [
    {"name": "pretrain", "kind": "pretrain", "max_steps": 8},
    {"name": "intermediate", "kind": "intermediate", "max_steps": 4, "lr": 3e-3, "warmup_steps": 1},
    {
        "name": "task",
        "kind": "task",
        "max_steps": 4,
        "lr": 1e-3,
        "warmup_steps": 1,
        "task": {"sources": ["nq-open", "asdiv"], "max_examples_per_source": 200},
    },
]


# ----------------------------------------------------------------------------------- unit tests
def test_mixture_batches_are_a_pure_function_of_step_and_world_size_free(tmp_path: Path) -> None:
    shards = ShardSet.open(write_shards(tmp_path / "s"))
    one = MixtureBatches(shards, split="train", seq_len=32, seed=[0, 0])
    two = MixtureBatches(shards, split="train", seq_len=32, seed=[0, 0])
    later = one.global_batch(5, 16)
    one.global_batch(1, 16)
    assert torch.equal(one.global_batch(5, 16)[0], later[0])  # no hidden position: step 5 is step 5
    halves = [two.rows(5, 16, 0, 8), two.rows(5, 16, 8, 16)]  # two ranks' rows
    assert torch.equal(torch.cat([h[0] for h in halves]), later[0])
    assert torch.equal(torch.cat([h[1] for h in halves]), later[1])
    assert not torch.equal(one.global_batch(6, 16)[0], later[0])
    other_stage = MixtureBatches(shards, split="train", seq_len=32, seed=[0, 1])
    assert not torch.equal(other_stage.global_batch(5, 16)[0], later[0])
    inputs, targets = later
    assert torch.equal(inputs[:, 1:], targets[:, :-1])  # targets are the inputs shifted by one


def test_mixture_batches_follow_domain_weights_and_report_draws(tmp_path: Path) -> None:
    shards = ShardSet.open(write_shards(tmp_path / "s", train_tokens={"web": 4000, "code": 4000}))
    batches = MixtureBatches(shards, split="train", seq_len=32, seed=[1], domain_weights={"web": 0.9, "code": 0.1})
    for step in range(1, 51):
        batches.global_batch(step, 20)
    mixture = batches.mixture()
    assert mixture["web"]["target"] == pytest.approx(0.9)
    assert mixture["web"]["drawn"] == pytest.approx(0.9, abs=0.04)
    state = batches.state_dict()
    fresh = MixtureBatches(shards, split="train", seq_len=32, seed=[1], domain_weights={"web": 0.9, "code": 0.1})
    fresh.load_state_dict(state)
    assert fresh.mixture() == mixture


def test_mixture_batches_name_a_missing_split(tmp_path: Path) -> None:
    shards = ShardSet.open(write_shards(tmp_path / "s", extra_splits={}))
    with pytest.raises(TrainingError, match=r"no 'hq' split"):
        MixtureBatches(shards, split="hq", seq_len=32, seed=[0])


def test_shards_with_another_tokenizer_are_refused(tmp_path: Path) -> None:
    root = write_shards(tmp_path / "s")
    ShardSet.open(root).check_tokenizer()
    (root / "tokenizer.json").write_text((root / "tokenizer.json").read_text().replace('"he"', '"hx"'))
    with pytest.raises(TrainingError, match=r"tokenizer\.json does not match the shards.*tokenizer\.sha256"):
        ShardSet.open(root).check_tokenizer()


def _fake_written(store: CheckpointStore, step: int, token: str = "1") -> Path:
    temp = store.temp_dir(step, token)
    (temp / "ds").mkdir(parents=True)
    (temp / "ds" / "part").write_bytes(b"x")
    return temp


def test_checkpoint_store_commits_atomically_keeps_last_k_and_ignores_partial(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "ckpt", keep=2)
    assert store.newest() is None
    for step in (10, 20, 30):
        store.commit(_fake_written(store, step), step, {"world_size": 1, "plan": {}, "progress": {}})
    assert [c.step for c in store.complete()] == [20, 30]  # keep-last-K
    assert (store.root / "latest").read_text().strip() == "step-00000030"
    _fake_written(store, 40, token="999")  # a writer killed before commit
    (store.root / "step-00000050").mkdir()  # a directory without state.json is not a checkpoint
    assert store.newest().step == 30
    assert store.remove_temporaries() == 1
    assert not any(p.name.startswith(".tmp-") for p in store.root.iterdir())


def test_step_state_round_trips_through_json() -> None:
    state = StepState(step=3, losses=[3.0, 2.5, 2.25], history=[[3, 2.58]], counters={"a_windows": 4.0})
    assert StepState.from_json(json.loads(json.dumps(state.to_json()))) == state


def test_resume_hash_ignores_what_may_change_on_resume_only() -> None:
    cfg = validate_config(tiny_pipeline_config())
    stage = StageConfig(name="pretrain", kind="pretrain", max_steps=10)
    base = resume_hash(cfg, stage)
    cfg.train.ranks = 2
    cfg.train.micro_batch_size = 2
    cfg.train.checkpoint_every = 3
    assert resume_hash(cfg, stage) == base
    cfg.train.lr = 0.5
    assert resume_hash(cfg, stage) != base


def test_an_out_of_memory_retry_halves_the_micro_batch_and_keeps_the_global_batch(tmp_path: Path) -> None:
    from dataclasses import asdict

    from pharia.train.batch_size import plan_batches
    from pharia.train.cli import BATCH_PLAN_FILE, OOM_MARKER, smaller_batches
    from pharia.train.outputs import atomic_write_json

    cfg = validate_config(tiny_pipeline_config(micro_batch_size=8, grad_accum_steps=2))
    plan = plan_batches(cfg.train, cfg.model, 32, 2, device=torch.device("cpu"))
    atomic_write_json(tmp_path / BATCH_PLAN_FILE, {"stage": "pretrain", **asdict(plan)})
    assert smaller_batches(tmp_path) is None  # no out-of-memory marker: a failure is not retried
    (tmp_path / OOM_MARKER).write_text("{}")
    assert smaller_batches(tmp_path) == (4, 4)  # 8 x 2 -> 4 x 4 windows per rank per step
    assert not (tmp_path / OOM_MARKER).exists()


# ---------------------------------------------------------------------------- integration tests
def _env(train_env: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, **train_env, "DS_ACCELERATOR": "cpu", "PYTHONUNBUFFERED": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    return env


def _train_cmd(config: Path, shards: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pharia.train",
        "--config",
        str(config),
        "--shards",
        str(shards),
        "--out",
        str(out),
        *extra,
    ]


def _train(env: dict[str, str], config: Path, shards: Path, out: Path, *extra: str) -> dict:
    done = subprocess.run(
        _train_cmd(config, shards, out, *extra), env=env, capture_output=True, text=True, cwd=REPO, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = out / "train_summary.json"  # written when the last stage ran
    return json.loads(summary.read_text()) if summary.is_file() else {}


def _stage(out: Path, name: str) -> dict:
    return json.loads((out / "stages" / name / "summary.json").read_text())


@pytest.mark.integration
def test_three_stages_chain_each_with_its_own_nested_mlflow_run(
    tmp_path: Path, train_env: dict[str, str], train_mlflow_uri: str
) -> None:
    from mlflow.tracking import MlflowClient

    shards = write_shards(tmp_path / "shards")
    raw = tiny_pipeline_config(global_batch_tokens=256, stages=STAGES, checkpoint_every=4, eval_every=4)
    config = write_config(tmp_path / "c.yaml", raw)
    out = tmp_path / "out"
    summary = _train(_env(train_env), config, shards, out, "--tracking-uri", train_mlflow_uri)

    assert summary["stage_order"] == ["pretrain", "intermediate", "task"]
    assert summary["steps"] == 16
    pre, mid, task = (_stage(out, n) for n in summary["stage_order"])
    assert pre["init_from"] is None
    assert mid["init_from"] == pre["model_dir"] and task["init_from"] == mid["model_dir"]
    assert (pre["split"], mid["split"], task["split"]) == ("train", "hq", "task")
    assert mid["schedule"]["lr"] == 3e-3 and task["schedule"]["lr"] == 1e-3
    assert mid["mixture"]["web"]["drawn"] > 0  # the intermediate stage read the hq split
    # the task stage trains on answer tokens only: a small share of each 32-token window
    assert 0 < task["counters"]["train_target_tokens"] < 0.7 * 4 * 8 * 32
    assert pre["counters"]["train_target_tokens"] == 8 * 8 * 32
    assert [e["step"] for e in pre["evaluations"]] == [4, 8]
    # the harness's fast suite on the validation split, every eval_every steps
    assert {"fast_ppl_overall", "fast_ppl_web", "fast_bpb_overall", "fast_piqa_acc"} <= set(pre["evaluations"][0])
    # the full suite between stages, with its files
    assert {"eval_ppl_overall", "eval_openbookqa_acc", "eval_crows_stereotype_score"} <= set(pre["final_evaluation"])
    written = {p.name for p in (out / "stages" / "pretrain" / "eval").iterdir()}
    assert {"metrics.json", "gates.json", "summary.md"} <= written
    assert (out / "model" / "model.safetensors").read_bytes() == (
        Path(task["model_dir"]) / "model.safetensors"
    ).read_bytes()

    client = MlflowClient(train_mlflow_uri)
    parent_id = json.loads((out / "mlflow_parent.json").read_text())["run_id"]
    children = client.search_runs(
        [client.get_run(parent_id).info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    by_stage = {run.data.tags["pharia.stage"]: run for run in children}
    assert set(by_stage) == {"pretrain", "intermediate", "task"}
    for name, steps in (("pretrain", 8), ("intermediate", 4), ("task", 4)):
        run = by_stage[name]
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "train_loss")
        assert max(m.step for m in history) == steps  # each stage its own curve
        assert run.data.params["zero_stage"] == "2" and run.data.params["world_size"] == "1"
        assert "mem_peak_rss_mb" in run.data.metrics and "grad_norm" in run.data.metrics
    parent_curve = client.get_metric_history(parent_id, "train_loss")
    assert max(m.step for m in parent_curve) == 16  # one continuous curve across the stages

    # `pharia eval` on the training output: the published model, with the shards and tokenizer the
    # run recorded (no --shards / --tokenizer needed), the fast suite, files for an auditor
    evaluated = subprocess.run(
        [sys.executable, "-m", "pharia", "eval", "--model", str(out), "--suite", "fast", "--config", str(config)]
        + ["--out", str(tmp_path / "eval")],
        env=_env(train_env),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "eval fast [2/2] piqa" in evaluated.stderr  # the progress bar names each task
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["model"]["sha256"] == hashlib.sha256((out / "model" / "model.safetensors").read_bytes()).hexdigest()
    assert {"ppl_overall", "bpb_web", "piqa_acc", "piqa_acc_norm", "piqa_ece"} <= set(metrics["metrics"])
    assert metrics["inputs"]["shards_dir"] == str(shards.resolve()) and not metrics["skipped"]
    assert (tmp_path / "eval" / "summary.md").read_text().startswith("# Evaluation: suite `fast`")

    # rerun: every stage is done, nothing trains again
    again = _train(_env(train_env), config, shards, out)
    assert again["stages"]["pretrain"]["final_loss"] == summary["stages"]["pretrain"]["final_loss"]
    # a finished stage of another config is never reused as if it were this one's
    raw["train"]["stages"][0]["lr"] = 5e-3
    changed = write_config(tmp_path / "changed.yaml", raw)
    done = subprocess.run(
        _train_cmd(changed, shards, out), env=_env(train_env), capture_output=True, text=True, cwd=REPO, timeout=600
    )
    assert done.returncode != 0 and "stage 'pretrain' in this --out was trained with a different config" in done.stderr


def _kill_after_checkpoint(cmd: list[str], env: dict[str, str], checkpoint: Path) -> None:
    """Start training and SIGKILL the whole process group as soon as `checkpoint` is complete."""
    child = subprocess.Popen(
        cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + 300
    while not (checkpoint / "state.json").is_file():
        if child.poll() is not None:
            raise AssertionError(f"training ended before {checkpoint} appeared: {child.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            os.killpg(child.pid, signal.SIGKILL)
            raise AssertionError("no checkpoint within 300 s")
        time.sleep(0.005)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode != 0, "training finished before the kill; make the run longer"


@pytest.mark.integration
@pytest.mark.parametrize("resume_ranks", [1, 2], ids=["same-ranks", "1-to-2-ranks"])
def test_kill_9_then_rerun_gives_the_losses_of_an_uninterrupted_run(
    tmp_path: Path, train_env: dict[str, str], resume_ranks: int
) -> None:
    shards = write_shards(tmp_path / "shards")
    raw = tiny_pipeline_config(
        global_batch_tokens=512,
        stages=[{"name": "pretrain", "kind": "pretrain", "max_steps": 80}],
        checkpoint_every=10,
        keep_checkpoints=2,
        log_every=10,
        eval_after_stage=False,
    )
    config = write_config(tmp_path / "c.yaml", raw)
    env = _env(train_env)
    reference = _stage_losses(_train(env, config, shards, tmp_path / "ref"), tmp_path / "ref")

    out = tmp_path / "out"
    checkpoints = out / "stages" / "pretrain" / "checkpoints"
    _kill_after_checkpoint(_train_cmd(config, shards, out), env, checkpoints / "step-00000020")
    assert not (out / "stages" / "pretrain" / "summary.json").exists()
    resumed = _train(env, config, shards, out, "--ranks", str(resume_ranks))
    stage = _stage(out, "pretrain")
    assert stage["resumed_from"]["step"] >= 20
    assert stage["world_size"] == resume_ranks
    assert ("portable" in stage["resumed_from"]["how"]) == (resume_ranks != 1)
    losses = _stage_losses(resumed, out)
    assert len(losses) == 80
    tolerance = 1e-6 if resume_ranks == 1 else 1e-4
    np.testing.assert_allclose(losses, reference, rtol=tolerance)
    assert not any(p.name.startswith(".tmp-") for p in checkpoints.iterdir())
    assert len([p for p in checkpoints.iterdir() if p.name.startswith("step-")]) == 2


def _stage_losses(summary: dict, out: Path) -> list[float]:
    assert summary["stage_order"] == ["pretrain"]
    return _stage(out, "pretrain")["losses"]


@pytest.mark.integration
def test_two_ranks_train_exactly_like_one(tmp_path: Path, train_env: dict[str, str]) -> None:
    shards = write_shards(tmp_path / "shards")
    raw = tiny_pipeline_config(global_batch_tokens=512, max_steps=6, eval_after_stage=False)
    config = write_config(tmp_path / "c.yaml", raw)
    env = _env(train_env)
    one = _train(env, config, shards, tmp_path / "one")
    two = _train(env, config, shards, tmp_path / "two", "--ranks", "2")
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert (one["grad_accum_steps"], two["grad_accum_steps"]) == (2, 1)  # the same 16-window global batch
    np.testing.assert_allclose(_stage_losses(two, tmp_path / "two"), _stage_losses(one, tmp_path / "one"), rtol=1e-5)


@pytest.mark.integration
@pytest.mark.parametrize(("zero_stage", "precision"), [(0, "fp32"), (1, "fp32"), (3, "fp32"), (3, "bf16")])
def test_every_zero_stage_trains(tmp_path: Path, train_env: dict[str, str], zero_stage: int, precision: str) -> None:
    shards = write_shards(tmp_path / "shards")
    raw = tiny_pipeline_config(
        zero_stage=zero_stage, precision=precision, max_steps=12, checkpoint_every=6, eval_after_stage=False
    )
    summary = _train(_env(train_env), write_config(tmp_path / "c.yaml", raw), shards, tmp_path / "out")
    stage = _stage(tmp_path / "out", "pretrain")
    assert summary["zero_stage"] == zero_stage and summary["precision"] == precision
    assert stage["final_loss"] < stage["first_loss"]
    assert stage["skipped_steps"] == 0


@pytest.mark.integration
@pytest.mark.parametrize("zero_stage", [0, 2])
def test_non_finite_losses_are_skipped_counted_and_abort(
    tmp_path: Path, train_env: dict[str, str], zero_stage: int
) -> None:
    """A NaN planted in one embedding row (a corrupted checkpoint) poisons exactly the steps whose
    batch contains that token: those are skipped and counted, the others train on."""
    from safetensors.torch import load_file, save_file

    shards = write_shards(tmp_path / "shards")
    stages = [
        {"name": "pretrain", "kind": "pretrain", "max_steps": 2},
        {"name": "intermediate", "kind": "intermediate", "max_steps": 10},
    ]
    raw = tiny_pipeline_config(zero_stage=zero_stage, stages=stages, eval_after_stage=False, max_nonfinite_steps=100)
    raw["model"]["tie_embeddings"] = False  # a NaN row in a tied head would poison every logit
    config = write_config(tmp_path / "c.yaml", raw)
    env, out = _env(train_env), tmp_path / "out"
    _train(env, config, shards, out, "--stage", "pretrain")
    assert not (out / "model").exists()  # OUT/model is only ever the last stage's weights
    weights = out / "stages" / "pretrain" / "model" / "model.safetensors"
    state = load_file(weights)
    poisoned = 300
    state["tok_emb.weight"][poisoned] = float("nan")
    save_file(state, weights)
    batches = MixtureBatches(ShardSet.open(shards), split="hq", seq_len=32, seed=[0, 1])
    expected = [bool((batches.global_batch(step, 8)[0] == poisoned).any()) for step in range(1, 11)]
    assert 0 < sum(expected) < 10  # the test needs both kinds of step

    _train(env, config, shards, out, "--stage", "intermediate")
    stage = _stage(out, "intermediate")
    assert [not np.isfinite(loss) for loss in stage["losses"]] == expected
    assert stage["nonfinite_steps"] == stage["skipped_steps"] == sum(expected)
    trained = load_file(out / "stages" / "intermediate" / "model" / "model.safetensors")
    assert torch.isnan(trained["tok_emb.weight"][poisoned]).all()
    trained["tok_emb.weight"][poisoned] = 0.0
    assert all(torch.isfinite(t).all() for t in trained.values())  # skipped steps changed nothing
    assert not torch.equal(trained["lm_head.weight"], state["lm_head.weight"])  # the finite steps trained

    shutil.rmtree(out / "stages" / "intermediate")
    raw["train"]["max_nonfinite_steps"] = 1
    done = subprocess.run(
        _train_cmd(write_config(tmp_path / "strict.yaml", raw), shards, out, "--stage", "intermediate"),
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert done.returncode != 0
    assert "2 steps with a non-finite loss (limit train.max_nonfinite_steps=1)" in done.stderr


TOXIC = "You are a stupid idiot and everyone hates you, you worthless moron. "
PLAIN = "He said that his mother and her father were at home. The king and the queen walked to the market. "


@pytest.mark.integration
def test_each_ethics_switch_changes_its_counter_and_loss_term_and_nothing_else(
    tmp_path: Path, train_env: dict[str, str], train_mlflow_uri: str
) -> None:
    from mlflow.tracking import MlflowClient

    shards = write_shards(
        tmp_path / "shards",
        train_tokens={"web": 6000, "books": 6000},
        text_domains={"web": TOXIC + PLAIN * 3, "books": PLAIN},
    )
    switches = {
        "none": {},
        "filter": {"content_filter": {"enabled": True, "threshold": 0.5, "action": "mask", "span_tokens": 8}},
        "adversarial": {"adversarial": {"enabled": True, "epsilon": 0.5, "step_size": 0.5, "steps": 1}},
        "fairness": {"fairness": {"enabled": True, "coef": 1.0}},
    }
    client = MlflowClient(train_mlflow_uri)
    results: dict[str, dict] = {}
    for name, ethics in switches.items():
        raw = tiny_pipeline_config(max_steps=3, log_every=1, ethics=ethics, eval_after_stage=False)
        out = tmp_path / name
        _train(
            _env(train_env),
            write_config(tmp_path / f"{name}.yaml", raw),
            shards,
            out,
            "--tracking-uri",
            train_mlflow_uri,
        )
        stage = _stage(out, "pretrain")
        metrics = client.get_run(stage["mlflow_run_id"]).data.metrics
        results[name] = {"stage": stage, "metrics": metrics}
    base = results["none"]
    families = {"filter": "filter_", "adversarial": "adv_", "fairness": "fair_"}
    for name, prefix in families.items():
        metrics = results[name]["metrics"]
        assert any(k.startswith(prefix) for k in metrics), (name, sorted(metrics))
        others = [p for n, p in families.items() if n != name]
        assert not any(k.startswith(tuple(others)) for k in metrics), (name, sorted(metrics))
    assert not any(k.startswith(tuple(families.values())) for k in base["metrics"])

    # the content filter masks the insults: fewer target tokens, a different loss from step 1
    flt = results["filter"]
    assert flt["stage"]["counters"]["filter_windows_flagged"] > 0
    assert flt["stage"]["counters"]["filter_tokens_masked"] > 0
    assert flt["stage"]["counters"]["train_target_tokens"] < base["stage"]["counters"]["train_target_tokens"]
    assert flt["stage"]["losses"][0] != pytest.approx(base["stage"]["losses"][0], rel=1e-6)
    # adversarial and fairness terms add to the objective but not to the language-model loss of step 1
    # (same weights, same batch); they then change the update, so later losses differ
    for name, term in (("adversarial", "adv_term"), ("fairness", "fair_term")):
        stage, metrics = results[name]["stage"], results[name]["metrics"]
        assert stage["losses"][0] == pytest.approx(base["stage"]["losses"][0], rel=1e-6)
        assert stage["losses"][-1] != pytest.approx(base["stage"]["losses"][-1], rel=1e-6)
        assert metrics[term] > 0
        assert stage["counters"]["train_target_tokens"] == base["stage"]["counters"]["train_target_tokens"]
    assert results["adversarial"]["metrics"]["adv_clean_gap"] > 0
    assert results["fairness"]["stage"]["counters"]["fair_windows_paired"] > 0


@pytest.mark.integration
def test_zero3_on_two_ranks_runs_ethics_terms_and_evaluation_in_lockstep(
    tmp_path: Path, train_env: dict[str, str]
) -> None:
    """ZeRO-3 forwards are collective: a term or an evaluation that runs on one rank only would hang.
    Only some windows mention a gendered word, so the ranks' fairness work differs."""
    shards = write_shards(tmp_path / "shards", train_tokens={"web": 6000, "books": 6000}, text_domains={"books": PLAIN})
    ethics = {
        "adversarial": {"enabled": True, "every": 2},
        "fairness": {"enabled": True, "coef": 1.0},
        "content_filter": {"enabled": True, "action": "drop"},
    }
    raw = tiny_pipeline_config(
        zero_stage=3,
        max_steps=4,
        eval_every=2,
        log_every=1,
        global_batch_tokens=512,
        ethics=ethics,
        eval_after_stage=False,
    )
    config = write_config(tmp_path / "c.yaml", raw)
    done = subprocess.run(
        _train_cmd(config, shards, tmp_path / "out", "--ranks", "2"),
        env=_env(train_env),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    stage = _stage(tmp_path / "out", "pretrain")
    assert stage["world_size"] == 2 and [e["step"] for e in stage["evaluations"]] == [2, 4]
    assert stage["counters"]["adv_micro_batches"] > 0 and stage["counters"]["fair_windows_paired"] > 0
