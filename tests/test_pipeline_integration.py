"""The whole flow against real components: Prefect test server, MLflow on SQLite in tmp, a DVC
project in tmp, Great Expectations, DeepSpeed on CPU. Checks that the registered version, its tags,
the data DVC tracks and the compliance dossier exist and agree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration


def micro_config():
    """The tiny preset shrunk further so the whole chain runs in about a minute."""
    from pharia.config import load_config, validate_config

    raw = load_config("tiny").model_dump(mode="json")
    raw["name"] = "micro"
    raw["data"].update(target_chars=250_000, vocab_size=512, seq_len=64)
    raw["data"]["validation"]["min_rows"] = 20
    raw["model"].update(vocab_size=512, d_model=64, n_layers=2, n_heads=2, max_seq_len=64)
    raw["train"].update(max_steps=12, warmup_steps=2, log_every=3, micro_batch_size=4, global_batch_tokens=256)
    raw["train"].update(eval_every=6, checkpoint_every=6)
    raw["train"]["stages"] = [  # the three stages of the preset, a few steps each
        {**stage, "max_steps": steps} for stage, steps in zip(raw["train"]["stages"], (12, 4, 4), strict=True)
    ]
    raw["eval"]["suites"] = {
        "fast": {"heldout": {"samples": 2}, "piqa": {"samples": 4}},
        "full": {
            "heldout": {"samples": 4},
            "piqa": {"samples": 8},
            "crows_pairs": {"samples": 8},
            "realtoxicityprompts": {"samples": 4, "k": 2, "max_new_tokens": 8},
            "canaries": {"samples": 20},
        },
    }
    raw["registry"]["model_name"] = "pharia-micro"
    raw["gates"]["metrics"]["ppl_worst_domain"]["max"] = 1e6
    return validate_config(raw, "micro")


def test_pipeline_registers_a_version_whose_tags_data_and_report_agree(workspace, prefect_server) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    from flows.pipeline import pharia_pipeline
    from pharia.data.manifest import sha256_file
    from pharia.registry.lineage import git_commit

    cfg = micro_config()
    result = pharia_pipeline(config=cfg)

    client = MlflowClient(workspace.mlflow_uri)
    name = cfg.registry.model_name
    version = client.get_model_version_by_alias(name, "candidate")
    assert str(version.version) == result["model"]["version"] == "1"
    assert version.run_id == result["run_id"]

    # The data hash on the model is the one DVC tracks, and the file on disk still has it.
    project = Path(result["data"]["project_dir"])
    assert project.parent == workspace.data_dir
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    shards_md5 = next(o["md5"] for o in lock["stages"]["pack"]["outs"] if o["path"] == "data/shards")
    tags = version.tags
    assert tags["dvc_md5"] == shards_md5
    assert tags["data_manifest_sha256"] == sha256_file(project / "data" / "shards" / "manifest.json")
    assert tags["config_hash"] == cfg.config_hash()
    assert tags["git_commit"] == git_commit()
    assert sorted(result["data"]["stages_run"]) == ["ingest", "pack", "publish", "tokenize", "validate"]

    # The run carries the lineage, the loss curve and the evaluation.
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["pharia.data_manifest_sha256"] == tags["data_manifest_sha256"]
    losses = client.get_metric_history(run.info.run_id, "train_loss")
    assert len(losses) >= 3 and [m.step for m in losses] == sorted(m.step for m in losses)
    assert {"lr", "tokens_per_s", "eval_ppl_overall", "eval_rtp_toxicity_probability"} <= set(run.data.metrics)
    assert {"fast_ppl_overall", "fast_piqa_acc"} <= set(run.data.metrics)  # continuous evaluation at steps 6, 12
    assert max(m.step for m in losses) == 20  # one curve across the three stages (12 + 4 + 4 steps)
    stage_runs = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert sorted(r.data.tags["pharia.stage"] for r in stage_runs) == ["intermediate", "pretrain", "task"]
    assert all(r.info.status == "FINISHED" and "train_loss" in r.data.metrics for r in stage_runs)
    # each stage was evaluated by its own Prefect task, logged to its own run
    assert all("eval_piqa_acc" in r.data.metrics for r in stage_runs)
    assert set(result["stage_evaluations"]) == {"pretrain", "intermediate", "task"}

    # The dossier on disk, the one logged to the run and the version's tags agree.
    report_path = Path(tags["compliance_report"])
    assert report_path == workspace.reports_dir / name / "v1" / "compliance.json"
    report = json.loads(report_path.read_text())
    assert report["model"]["version"] == "1" and report["model"]["run_id"] == run.info.run_id
    assert report["verdict"] == tags["compliance_verdict"]
    assert report["lineage"]["data_manifest_sha256"] == tags["data_manifest_sha256"]
    assert report["lineage"]["dvc_md5"] == shards_md5
    assert report["evaluation"]["metrics"]["ppl_overall"] == pytest.approx(run.data.metrics["eval_ppl_overall"])
    assert list(report["evaluation"]["stages"]) == ["pretrain", "intermediate", "task"]
    gated = {r["id"]: r["status"] for r in report["requirements"]}
    assert gated["CAP-1"] == "pass" and gated["TRN-2"] == "pass"
    assert gated["ROB-1"] == "not_evaluated"  # robustness_typos is not in this suite
    bias = next(r for r in report["requirements"] if r["id"] == "BIAS-1")
    assert any(line.startswith("crows_stereotype_score = ") for line in bias["evidence"])
    assert tags["gate.CAP-1"] == "pass" and tags["gate.ROB-1"] == "not_evaluated"
    logged = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="compliance/compliance.json", tracking_uri=workspace.mlflow_uri
    )
    assert json.loads(Path(logged).read_text()) == report
    assert (report_path.parent / "compliance.md").read_text().startswith("# Compliance dossier: pharia-micro version 1")

    # The registered model loads through MLflow (code + safetensors, no pickle) and generates.
    mlflow.set_tracking_uri(workspace.mlflow_uri)
    model = mlflow.pyfunc.load_model(f"models:/{name}@candidate")
    outputs = model.predict(["The court heard"], params={"max_new_tokens": 5})
    assert len(outputs) == 1 and isinstance(outputs[0], str)

    # Same config again: DVC skips every data stage; the alias moves to the new version.
    second = pharia_pipeline(config=cfg)
    assert second["data"]["stages_run"] == []
    assert sorted(second["data"]["stages_skipped"]) == ["ingest", "pack", "publish", "tokenize", "validate"]
    assert str(client.get_model_version_by_alias(name, "candidate").version) == "2"
    assert client.get_model_version(name, "2").tags["data_manifest_sha256"] == tags["data_manifest_sha256"]
