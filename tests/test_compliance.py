"""Requirement checks decide pass / fail / not evaluated from the evidence, and the dossier renders."""

import copy
import json
from pathlib import Path

import pytest

from pharia.compliance.report import build_report, render_markdown, write_report
from pharia.config import GatesConfig, load_config
from pharia.evaluate.gates import evaluate_gates
from pharia.evaluate.metrics import MetricSpec

MANIFEST = {
    "ingest": {
        "sources": {
            "xsum-news": {
                "domain": "web",
                "rows_in": 10,
                "kept": 7,
                "filtered": {"too_short": 2},
                "quarantined": {"bad_json": 1},
            },
            "cpython-stdlib": {"domain": "code", "rows_in": 5, "kept": 5, "filtered": {}, "quarantined": {}},
        }
    },
    "domain_shares": {"web": {"target": 0.45, "achieved": 0.47}, "code": {"target": 0.10, "achieved": 0.09}},
    "validation": {"success": True, "evaluated": 9, "successful": 9, "data_docs": "/x/index.html"},
    "splits": {"train": {"web": {"tokens": 100}}, "heldout": {"web": {"tokens": 10}}},
}
TRAINING = {"steps": 10, "final_loss": 3.2, "zero_stage": 2, "world_size": 1, "precision": "fp32", "device": "cpu"}
SPECS = {
    "ppl_worst_domain": MetricSpec("ppl_worst_domain", "language_modelling", "heldout", "worst domain", "lower"),
    "rtp_toxicity_probability": MetricSpec("rtp_toxicity_probability", "toxicity", "rtp", "tox prob", "lower"),
}
REPRO = {"seed": 0, "batch_size": 8, "harness": "pharia-eval/x", "hardware": "cpu", "model_sha256": "a" * 64}


def evaluation_of(metrics: dict[str, float], **entry_changes) -> dict:
    """What the pipeline hands the dossier: metrics plus the gates judged on their entries."""
    entries = [
        {"name": k, "value": v, "n": 10, **REPRO, "datasets": {"x": "b" * 64}, **entry_changes}
        for k, v in metrics.items()
    ]
    return {"metrics": metrics, "gates": evaluate_gates(entries, GatesConfig(), SPECS)}


EVALUATION = evaluation_of({"ppl_worst_domain": 120.0, "rtp_toxicity_probability": 0.0})
MODEL = {"name": "pharia-tiny", "version": "3", "alias": "candidate", "run_id": "abc", "status": "candidate"}
LINEAGE = {"config_hash": "c" * 64, "git_commit": "f" * 40, "data_manifest_sha256": "d" * 64, "dvc_md5": "e" * 32}


def _report(**changes) -> dict:
    args = {
        "model": MODEL,
        "lineage": LINEAGE,
        "shards_manifest": MANIFEST,
        "training": TRAINING,
        "evaluation": EVALUATION,
    }
    args.update(changes)
    return build_report(load_config("tiny"), **copy.deepcopy(args))


def _status(report: dict, rid: str) -> str:
    return next(r["status"] for r in report["requirements"] if r["id"] == rid)


def test_good_evidence_passes_and_ungated_requirements_are_not_evaluated() -> None:
    report = _report()
    assert report["verdict"] == "pass"
    passed = ("DG-1", "DG-2", "DG-3", "REP-1", "CAP-1", "TOX-1", "TRN-1", "TRN-2")
    assert {_status(report, r) for r in passed} == {"pass"}
    assert _status(report, "BIAS-1") == "not_evaluated"  # no gate configured for it
    assert report["coverage"].startswith("8 of ")
    for req in report["requirements"]:
        assert req["articles"] and req["category"] and req["evidence"]


def test_failed_validation_fails_the_version() -> None:
    manifest = copy.deepcopy(MANIFEST)
    manifest["validation"]["success"] = False
    report = _report(shards_manifest=manifest)
    assert _status(report, "DG-3") == "fail" and report["verdict"] == "fail"


def test_rows_that_do_not_add_up_fail() -> None:
    manifest = copy.deepcopy(MANIFEST)
    manifest["ingest"]["sources"]["xsum-news"]["rows_in"] = 11
    report = _report(shards_manifest=manifest)
    assert _status(report, "DG-2") == "fail"
    assert any("does not add up" in line for line in report["requirements"][1]["evidence"])


@pytest.mark.parametrize(
    ("metric", "value", "rid"),
    [("ppl_worst_domain", 1e6, "CAP-1"), ("rtp_toxicity_probability", 0.9, "TOX-1")],
)
def test_metric_gates(metric: str, value: float, rid: str) -> None:
    metrics = {"ppl_worst_domain": 120.0, "rtp_toxicity_probability": 0.0, metric: value}
    report = _report(evaluation=evaluation_of(metrics))
    assert _status(report, rid) == "fail" and report["verdict"] == "fail"
    evidence = next(r["evidence"] for r in report["requirements"] if r["id"] == rid)
    assert any(metric in line and "fail" in line for line in evidence)


def test_a_gated_metric_that_was_not_computed_leaves_the_dossier_incomplete() -> None:
    report = _report(evaluation=evaluation_of({"ppl_worst_domain": 120.0}))
    assert _status(report, "TOX-1") == "not_evaluated" and _status(report, "CAP-1") == "pass"
    assert report["verdict"] == "incomplete"  # a gate was configured for TOX-1 but never judged


def test_no_evaluation_at_all_is_not_a_reproducible_one() -> None:
    report = _report(evaluation=evaluation_of({}))
    assert _status(report, "TRN-2") == "not_evaluated" and report["verdict"] == "incomplete"


def test_scores_without_reproducibility_fields_fail_transparency() -> None:
    report = _report(evaluation=evaluation_of({"ppl_worst_domain": 1.0, "rtp_toxicity_probability": 0.0}, seed=None))
    assert _status(report, "TRN-2") == "fail"


def test_mixture_outside_tolerance_fails() -> None:
    manifest = copy.deepcopy(MANIFEST)
    manifest["domain_shares"]["web"]["achieved"] = 0.80
    assert _status(_report(shards_manifest=manifest), "REP-1") == "fail"


def test_unknown_commit_fails_lineage() -> None:
    assert _status(_report(lineage={**LINEAGE, "git_commit": "unknown"}), "TRN-1") == "fail"


def test_written_dossier_round_trips(tmp_path: Path) -> None:
    report = _report()
    json_path, md_path = write_report(report, tmp_path)
    assert json_path == tmp_path / "pharia-tiny" / "v3" / "compliance.json"
    assert json.loads(json_path.read_text()) == report
    md = md_path.read_text()
    assert "Verdict: PASS" in md and "Art. 10(3)" in md and "| xsum-news | web |" in md
    assert render_markdown(report) == md


def test_mixture_is_judged_on_training_draws_when_recorded() -> None:
    manifest = copy.deepcopy(MANIFEST)
    manifest["domain_shares"]["web"]["achieved"] = 0.80  # packed tokens drifted
    mixture = {
        "web": {"target": 0.45, "drawn": 0.46, "epochs": 0.1},
        "code": {"target": 0.1, "drawn": 0.1, "epochs": 2},
    }
    report = _report(shards_manifest=manifest, training={**TRAINING, "mixture": mixture})
    assert _status(report, "REP-1") == "pass"
    evidence = next(r["evidence"] for r in report["requirements"] if r["id"] == "REP-1")
    assert any("packed tokens 80.0%" in line and "training windows 46.0%" in line for line in evidence)
    mixture["web"]["drawn"] = 0.9
    assert _status(_report(shards_manifest=manifest, training={**TRAINING, "mixture": mixture}), "REP-1") == "fail"


def test_the_dossier_lists_each_training_stage_with_its_counters() -> None:
    stage = {
        "kind": "pretrain",
        "split": "train",
        "steps": 8,
        "tokens_seen": 2048,
        "first_loss": 6.2,
        "final_loss": 4.1,
        "schedule": {"lr": 0.003, "warmup_steps": 2, "min_lr_ratio": 0.1, "max_steps": 8},
        "counters": {"filter_windows_flagged": 3.0, "train_target_tokens": 2000.0},
        "nonfinite_steps": 0,
        "losses": [6.2, 5.0, 4.1],  # per-step curve: stays in the run, not in the dossier
    }
    task = {**stage, "kind": "task", "split": "task", "final_loss": 3.5, "counters": {}}
    training = {**TRAINING, "stage_order": ["pretrain", "task"], "stages": {"pretrain": stage, "task": task}}
    report = _report(training=training)
    stages = report["training"]["stages"]
    assert [s["stage"] for s in stages] == ["pretrain", "task"]
    assert stages[0]["counters"]["filter_windows_flagged"] == 3.0 and "losses" not in stages[0]
    md = render_markdown(report)
    assert "| pretrain | pretrain | train | 8 | 0.003 | 6.200 → 4.100 | filter_windows_flagged 3, " in md
    assert "| task | task | task | 8 | 0.003 | 6.200 → 3.500 | - |" in md
    assert _report()["training"]["stages"] == []  # older training summaries carry no stages
