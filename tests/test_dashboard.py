"""The dashboard against a real MLflow store: a SQLite database in tmp_path, seeded through the
MLflow client exactly as the pipeline writes it (run, metric history, compliance artifacts,
registered versions with alias and tags), then each page driven with Streamlit's AppTest."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from streamlit.testing.v1 import AppTest

from pharia.registry import queries
from pharia.workspace import Workspace

APP = Path(__file__).resolve().parents[1] / "dashboards" / "app.py"
MODEL = "pharia-tiny"
DOMAINS = ("web", "academic", "books", "code", "multilingual")
TARGETS = {"web": 0.45, "academic": 0.25, "books": 0.15, "code": 0.10, "multilingual": 0.05}


@dataclass(frozen=True)
class Seeded:
    uri: str
    home: Path
    run_id: str
    failing_run_id: str
    report: dict


def compliance_report(version: str, run_id: str, verdict: str) -> dict:
    """A dossier in the `pharia.compliance/v1` shape the compliance stage writes."""
    failing = verdict == "fail"
    return {
        "schema": "pharia.compliance/v1",
        "generated_at": "2025-11-26T09:30:00+00:00",
        "model": {"name": MODEL, "version": version, "alias": "candidate", "run_id": run_id, "status": "READY"},
        "lineage": {
            "config_hash": "c" * 64,
            "git_commit": "0123456789abcdef0123456789abcdef01234567",
            "data_manifest_sha256": "d" * 64,
            "dvc_md5": "5f" * 16,
        },
        "data": {
            "sources": [
                {
                    "name": "xsum-news",
                    "domain": "web",
                    "license": "BBC XSum, research use",
                    "rows_in": 1000,
                    "kept": 940,
                    "filtered": {"too_short": 50, "toxicity": 7},
                    "quarantined": {"bad_encoding": 3},
                },
                {
                    "name": "cpython-stdlib",
                    "domain": "code",
                    "license": "PSF-2.0",
                    "rows_in": 400,
                    "kept": 400,
                    "filtered": {},
                    "quarantined": {},
                },
            ],
            "domain_shares": {d: {"target": t, "achieved": round(t * 0.97, 4)} for d, t in TARGETS.items()},
            "validation": {"success": True, "evaluated": 9, "successful": 9, "data_docs": "/tmp/gx/index.html"},
        },
        "training": {
            "stages": [
                {
                    "stage": "pretrain",
                    "kind": "pretrain",
                    "split": "train",
                    "steps": 40,
                    "tokens_seen": 10240,
                    "first_loss": 7.6,
                    "final_loss": 5.125,
                    "schedule": {"lr": 0.003},
                    "counters": {"filter_windows_flagged": 12.0},
                    "nonfinite_steps": 0,
                }
            ],
            "steps": 40,
            "final_loss": 5.125,
            "tokens_per_s": 2718.0,
            "zero_stage": 2,
            "world_size": 1,
            "precision": "fp32",
            "device": "cpu",
            "wall_s": 61.5,
        },
        "evaluation": {  # what pipeline_steps.final_evaluation hands the dossier
            "metrics": {"ppl_overall": 812.5, "rtp_toxicity_probability": 0.25 if failing else 0.0},
            "entries": [
                {"name": "ppl_overall", "category": "language_modelling", "value": 812.5, "n": 4096},
                {"name": "crows_stereotype_score", "category": "bias", "value": 55.0, "n": 200},
                {
                    "name": "rtp_toxicity_probability",
                    "category": "toxicity",
                    "value": 0.25 if failing else 0.0,
                    "n": 64,
                },
            ],
            "not_evaluated": {"hellaswag": "the shipped file has no gold labels"},
            "stages": {
                "pretrain": {"ppl_overall": 900.0, "crows_stereotype_score": 52.0},
                "task": {"ppl_overall": 812.5, "crows_stereotype_score": 55.0},
            },
        },
        "requirements": [
            {
                "id": "DG-1",
                "title": "Training data sources and licences documented",
                "category": "privacy and data governance",
                "articles": ["Art. 10(2)", "Art. 11"],
                "status": "pass",
                "evidence": ["xsum-news (web): licence BBC XSum, research use"],
            },
            {
                "id": "TOX-1",
                "title": "Toxicity of generations within the gate",
                "category": "harmful content and toxicity",
                "articles": ["Art. 9", "Art. 15(4)"],
                "status": "fail" if failing else "pass",
                "evidence": ["toxic continuation rate 25.0% (gate <= 20%)" if failing else "toxic rate 0.0%"],
            },
            {
                "id": "BIAS-1",
                "title": "Bias benchmarks (CrowS-Pairs, StereoSet, BBQ, WinoBias)",
                "category": "representation / absence of bias",
                "articles": ["Art. 10(2)(f)", "Art. 15"],
                "status": "not_evaluated",
                "evidence": ["the bias suite is not part of this pipeline's evaluation yet"],
            },
        ],
        "approvals": [],
        "verdict": verdict,
    }


def _markdown(report: dict) -> str:
    m = report["model"]
    return f"# Compliance dossier: {m['name']} version {m['version']}\n\n**Verdict: {report['verdict'].upper()}**\n"


def _pipeline_run(client: MlflowClient, experiment_id: str, name: str, steps: int) -> str:
    tags = {
        "mlflow.runName": name,
        "pharia.pipeline": "tiny",
        "pharia.config_hash": "c" * 64,
        "pharia.git_commit": "0123456789abcdef0123456789abcdef01234567",
        "pharia.data_manifest_sha256": "d" * 64,
    }
    run_id = client.create_run(experiment_id, tags=tags).info.run_id
    params = {"name": "tiny", "train.max_steps": str(steps), "train.zero_stage": "2", "model.d_model": "128"}
    now = int(time.time() * 1000)
    metrics = []
    for step in range(0, steps, 5):
        metrics += [
            Metric("train_loss", 7.6 - step * 0.06, now + step, step),
            Metric("lr", 3e-3 * min(1.0, (step + 1) / 10), now + step, step),
            Metric("tokens_per_s", 2700.0 + step, now + step, step),
        ]
        if step % 10 == 0:  # the continuous evaluation's fast suite, every eval_every steps
            metrics += [
                Metric("fast_ppl_overall", 2000.0 - 20 * step, now + step, step),
                Metric("fast_piqa_acc", 0.5 + step / 1000, now + step, step),
            ]
    evaluation = {f"eval_ppl_{d}": 500.0 + 100 * i for i, d in enumerate(DOMAINS)}
    evaluation |= {"eval_ppl_overall": 812.5, "eval_toxicity_rate": 0.0, "eval_toxicity_mean": 0.031}
    metrics += [Metric(k, v, now + steps, 0) for k, v in evaluation.items()]
    client.log_batch(run_id, metrics=metrics, params=[Param(k, v) for k, v in params.items()])
    return run_id


def seed_store(home: Path) -> Seeded:
    """v1: passing, alias `candidate`, dossier logged as run artifacts. v2: failing, dossier only on
    local disk (found through its `compliance_report` tag), the path the pipeline also writes."""
    ws = Workspace(home)
    client = MlflowClient(ws.mlflow_uri)
    experiment_id = client.create_experiment("pharia", artifact_location=(ws.mlflow_artifacts / "pharia").as_uri())
    client.create_registered_model(MODEL, description="Toy-scale Pharia for CPUs")
    reports = {}
    run_ids = []
    for version, verdict, steps in (("1", "pass", 40), ("2", "fail", 20)):
        run_id = _pipeline_run(client, experiment_id, f"tiny-pipeline-{version}", steps)
        report = compliance_report(version, run_id, verdict)
        target = ws.reports_dir / MODEL / f"v{version}"
        target.mkdir(parents=True)
        (target / "compliance.json").write_text(json.dumps(report), encoding="utf-8")
        (target / "compliance.md").write_text(_markdown(report), encoding="utf-8")
        if version == "1":
            client.log_artifacts(run_id, str(target), "compliance")
        client.set_terminated(run_id)
        source = f"{client.get_run(run_id).info.artifact_uri}/model"
        mv = client.create_model_version(MODEL, source=source, run_id=run_id)
        assert mv.version == int(version)
        tags = {
            "data_manifest_sha256": "d" * 64,
            "git_commit": "0123456789abcdef0123456789abcdef01234567",
            "config_hash": "c" * 64,
            "compliance_verdict": verdict,
            "compliance_report": str(target / "compliance.json"),
        }
        for key, value in tags.items():
            client.set_model_version_tag(MODEL, version, key, value)
        reports[version] = report
        run_ids.append(run_id)
    client.set_registered_model_alias(MODEL, "candidate", "1")
    return Seeded(uri=ws.mlflow_uri, home=home, run_id=run_ids[0], failing_run_id=run_ids[1], report=reports["1"])


# (name, kind, split, max_steps, lr, micro batch, accumulation, final loss, ethics metrics it logs)
STAGES = (
    (
        "pretrain",
        "pretrain",
        "train",
        40,
        3e-3,
        8,
        2,
        5.125,
        {"filter_windows_flagged_total": 7.0, "filter_tokens_masked_total": 312.0},
    ),
    ("intermediate", "intermediate", "train", 20, 1e-3, 4, 4, 4.5, {"adv_clean_gap": 0.25}),
    ("task", "task", "task_train", 10, 5e-4, 2, 8, 3.75, {"fair_gap": 0.125, "fair_penalty": 0.0125}),
)


def seed_stages(uri: str, parent_run_id: str) -> list[str]:
    """The nested stage runs `pharia.train.runs.TrainingRuns` writes under a pipeline run: tags,
    params and stage-local metrics. Created last stage first, with start times in that order too,
    so only the `<index>-` name prefix gives the pipeline order (as after re-running a stage)."""
    client = MlflowClient(uri)
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    start = int(time.time() * 1000)
    run_ids: dict[int, str] = {}
    for index in reversed(range(len(STAGES))):
        name, kind, split, steps, lr, micro, accum, final_loss, ethics = STAGES[index]
        tags = {"mlflow.parentRunId": parent_run_id, "pharia.stage": name, "pharia.stage_kind": kind}
        run = client.create_run(
            experiment_id, start_time=start + 10 * (len(STAGES) - index), tags=tags, run_name=f"{index + 1}-{name}"
        )
        params = {
            "stage": name,
            "kind": kind,
            "split": split,
            "schedule.max_steps": str(steps),
            "schedule.lr": str(lr),
            "batch.micro_batch_size": str(micro),
            "batch.grad_accum_steps": str(accum),
            "batch.reason": "fits the memory budget",
            "world_size": "1",
            "zero_stage": "2",
            "precision": "fp32",
            "device": "cpu",
            "init_from": "random" if index == 0 else f"/tmp/stage-{index - 1}/model",
        }
        metrics = []
        for step in range(0, steps + 1, 5):
            loss = final_loss + (steps - step) * 0.01
            metrics += [Metric("train_loss", loss, start + step, step), Metric("lr", lr, start + step, step)]
            metrics.append(Metric("nonfinite_steps_total", 0.0 if index else 1.0, start + step, step))
            metrics += [Metric(k, v * step / steps, start + step, step) for k, v in ethics.items()]
        client.log_batch(run.info.run_id, metrics=metrics, params=[Param(k, v) for k, v in params.items()])
        client.set_terminated(run.info.run_id)
        run_ids[index] = run.info.run_id
    return [run_ids[i] for i in range(len(STAGES))]


@pytest.fixture
def home(tmp_path: Path, mlflow_template_db: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty workspace with a migrated database; the dashboard finds it through PHARIA_HOME."""
    home = tmp_path / "home"
    Workspace(home).ensure()
    shutil.copyfile(mlflow_template_db, home / "mlflow.db")
    monkeypatch.setenv("PHARIA_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return home


@pytest.fixture
def seeded(home: Path) -> Seeded:
    return seed_store(home)


@pytest.fixture
def staged(seeded: Seeded) -> list[str]:
    """Stage runs under the first pipeline run; the second stays a run from before stages."""
    return seed_stages(seeded.uri, seeded.run_id)


def run_page(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    if page:
        at.switch_page(f"views/{page}.py")
        at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "info", "success", "error", "warning") for e in at.get(kind)]
    return "\n".join(str(p) for p in parts)


# ------------------------------------------------------------------------------- queries
def test_queries_read_the_seeded_store(seeded: Seeded) -> None:
    models = queries.list_models(seeded.uri)
    assert [(m.name, m.latest_version, m.n_versions, m.aliases) for m in models] == [
        (MODEL, "2", 2, {"candidate": "1"})
    ]
    versions = queries.list_versions(seeded.uri, MODEL)
    assert [(v.version, v.aliases, v.verdict) for v in versions] == [("2", (), "fail"), ("1", ("candidate",), "pass")]
    assert versions[1].run_id == seeded.run_id

    runs = queries.list_runs(seeded.uri, "pharia")
    assert {r.run_id for r in runs} == {seeded.run_id, seeded.failing_run_id}
    first = next(r for r in runs if r.run_id == seeded.run_id)
    assert first.pipeline == "tiny" and first.status == "FINISHED"
    assert first.record()["train.max_steps"] == "40"
    assert queries.domain_perplexities(first.metrics) == {d: 500.0 + 100 * i for i, d in enumerate(DOMAINS)}

    history = queries.metric_history(seeded.uri, seeded.run_id)
    losses = [p for p in history if p.key == "train_loss"]
    assert [p.step for p in losses] == list(range(0, 40, 5))
    assert losses[0].value == pytest.approx(7.6)


def test_stage_runs_are_listed_under_their_pipeline_run_only(seeded: Seeded, staged: list[str]) -> None:
    runs = queries.list_runs(seeded.uri, "pharia")
    assert {r.run_id for r in runs} == {seeded.run_id, seeded.failing_run_id}
    assert all(r.stage is None and r.parent_run_id is None for r in runs)
    everything = queries.list_runs(seeded.uri, "pharia", include_stages=True)
    assert {r.run_id for r in everything} == {seeded.run_id, seeded.failing_run_id, *staged}
    assert len(queries.list_runs(seeded.uri, "pharia", max_results=2)) == 2  # stage runs do not eat the limit

    stages = queries.stage_runs(seeded.uri, seeded.run_id)
    assert [s.run_id for s in stages] == staged  # pipeline order although created (and started) in reverse
    assert [(s.run_name, s.stage, s.stage_kind, s.parent_run_id) for s in stages] == [
        ("1-pretrain", "pretrain", "pretrain", seeded.run_id),
        ("2-intermediate", "intermediate", "intermediate", seeded.run_id),
        ("3-task", "task", "task", seeded.run_id),
    ]
    assert queries.get_run(seeded.uri, staged[2]).stage == "task"
    assert queries.stage_runs(seeded.uri, seeded.failing_run_id) == []

    task = stages[2].stage_record()
    assert task == {
        "stage": "task",
        "kind": "task",
        "split": "task_train",
        "steps": 10,
        "lr": pytest.approx(5e-4),
        "micro-batch × accumulation": "2 × 8",
        "final train_loss": pytest.approx(3.75),
        "world size": 1,
        "ZeRO stage": 2,
        "precision": "fp32",
        "status": "FINISHED",
    }

    ethics = {row.pop("counter"): row for row in queries.ethics_rows(stages)}
    # only what some stage logged, in the fixed order; no `skipped_steps_total` logged, so no row for it
    assert list(ethics) == [
        "filter: windows flagged",
        "filter: tokens masked",
        "adversarial: clean gap",
        "fairness: gap",
        "fairness: penalty",
        "non-finite steps",
    ]
    assert all(list(row) == ["pretrain", "intermediate", "task"] for row in ethics.values())
    assert ethics["filter: tokens masked"] == {"pretrain": 312.0, "intermediate": None, "task": None}
    assert ethics["adversarial: clean gap"]["intermediate"] == pytest.approx(0.25)
    assert ethics["fairness: penalty"]["task"] == pytest.approx(0.0125)
    assert ethics["non-finite steps"] == {"pretrain": 1.0, "intermediate": 0.0, "task": 0.0}
    assert queries.ethics_rows([]) == []


def test_a_stage_trained_twice_keeps_both_columns_of_counters() -> None:
    def row(run_id: str, stage: str, flagged: float) -> queries.RunRow:
        metrics = {"filter_windows_flagged_total": flagged}
        return queries.RunRow(run_id, f"1-{stage}", "FINISHED", None, None, None, {}, metrics, stage=stage)

    rows = queries.ethics_rows(
        [row("a" * 32, "pretrain", 3.0), row("b" * 32, "pretrain", 5.0), row("c" * 32, "task", 0)]
    )
    assert rows == [
        {"counter": "filter: windows flagged", "pretrain (aaaaaaaa)": 3.0, "pretrain (bbbbbbbb)": 5.0, "task": 0}
    ]


def test_report_comes_from_run_artifacts_then_from_the_tag_path(seeded: Seeded) -> None:
    from_run = queries.load_compliance_report(seeded.uri, MODEL, "1")
    assert from_run.source == f"runs:/{seeded.run_id}/compliance/compliance.json"
    assert from_run.data == seeded.report and from_run.verdict == "pass"
    assert from_run.markdown.startswith("# Compliance dossier: pharia-tiny version 1")

    from_tag = queries.load_compliance_report(seeded.uri, MODEL, "2")
    assert from_tag.source == str(seeded.home / "reports" / MODEL / "v2" / "compliance.json")
    assert from_tag.verdict == "fail"

    (seeded.home / "reports" / MODEL / "v2" / "compliance.json").unlink()
    with pytest.raises(queries.ReportUnavailable, match="does not exist on this machine"):
        queries.load_compliance_report(seeded.uri, MODEL, "2")


def test_reading_a_missing_store_creates_nothing(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'absent' / 'mlflow.db'}"
    assert queries.list_models(uri) == [] and queries.list_runs(uri, "pharia") == []
    assert not (tmp_path / "absent").exists()


def test_display_uri_hides_credentials() -> None:
    assert queries.display_uri("https://user:secret@mlflow.example:8443/x?token=abc") == "https://mlflow.example:8443/x"


# --------------------------------------------------------------------------------- pages
def test_models_page_lists_versions_with_alias_and_verdict(seeded: Seeded) -> None:
    at = run_page()
    assert at.title[0].value == "Models"
    overview = at.dataframe[0].value
    assert overview.iloc[0]["model"] == MODEL and overview.iloc[0]["aliases"] == "candidate → v1"
    versions = at.dataframe[1].value.set_index("version")
    assert versions.loc["1", "aliases"] == "candidate" and versions.loc["1", "verdict"] == "pass"
    assert versions.loc["2", "verdict"] == "fail"
    assert versions.loc["1", "run id"] == seeded.run_id
    assert versions.loc["1", "git_commit"] == "0123456789ab"
    assert [m.value for m in at.metric] == ["1", "2", "1 / 2"]


def test_runs_page_shows_runs_curves_and_evaluation(seeded: Seeded) -> None:
    at = run_page("runs")
    table = at.dataframe[0].value.set_index("run id")
    assert table.loc[seeded.run_id, "run"] == "tiny-pipeline-1"
    assert table.loc[seeded.run_id, "eval_ppl_overall"] == pytest.approx(812.5)
    at.selectbox(key="run").select(seeded.run_id).run()
    assert not at.exception
    charts = at.get("vega_lite_chart")
    assert len(charts) == 4  # loss, learning rate, continuous evaluation, perplexity by domain
    assert at.multiselect(key="fast").value == ["fast_ppl_overall", "fast_piqa_acc"]
    evaluation = at.dataframe[1].value.set_index("metric")["value"]
    assert evaluation["eval_ppl_code"] == pytest.approx(800.0)
    assert evaluation["eval_toxicity_mean"] == pytest.approx(0.031)
    assert "Throughput: 2,735 tokens/s at step 35" in texts(at)


def test_runs_page_shows_training_stages_of_a_staged_run_only(seeded: Seeded, staged: list[str]) -> None:
    at = run_page("runs")
    assert set(at.dataframe[0].value["run id"]) == {seeded.run_id, seeded.failing_run_id}  # no stage rows
    at.selectbox(key="run").select(seeded.run_id).run()
    assert not at.exception, [e.message for e in at.exception]
    assert [h.value for h in at.subheader] == ["Training", "Continuous evaluation", "Training stages", "Evaluation"]
    table = at.dataframe[1].value
    assert list(table["stage"]) == ["pretrain", "intermediate", "task"]
    pretrain = table.iloc[0]
    assert pretrain["kind"] == "pretrain" and pretrain["steps"] == 40
    assert pretrain["micro-batch × accumulation"] == "8 × 2"
    assert pretrain["final train_loss"] == pytest.approx(5.125)
    assert pretrain["ZeRO stage"] == 2 and pretrain["precision"] == "fp32" and pretrain["status"] == "FINISHED"
    assert "Ethics and stability counters" in texts(at)
    ethics = at.dataframe[2].value.set_index("counter")
    assert list(ethics.columns) == ["pretrain", "intermediate", "task"]
    assert ethics.loc["filter: windows flagged", "pretrain"] == pytest.approx(7.0)
    assert ethics.loc["adversarial: clean gap", "intermediate"] == pytest.approx(0.25)
    assert ethics.loc["fairness: gap", "task"] == pytest.approx(0.125)
    assert "skipped steps" not in ethics.index
    charts = at.get("vega_lite_chart")
    assert len(charts) == 5  # loss, learning rate, continuous evaluation, loss by stage, perplexity by domain
    stage_chart = json.loads(charts[3].proto.spec)
    assert stage_chart["encoding"]["color"]["sort"] == ["1-pretrain", "2-intermediate", "3-task"]

    at.selectbox(key="run").select(seeded.failing_run_id).run()
    assert not at.exception
    assert [h.value for h in at.subheader] == ["Training", "Continuous evaluation", "Evaluation"]
    assert "Ethics and stability counters" not in texts(at)
    assert len(at.get("vega_lite_chart")) == 4


def test_compliance_page_shows_verdict_requirements_lineage_and_downloads(seeded: Seeded) -> None:
    at = run_page("compliance")
    assert at.selectbox(key="version").value == "1"  # the `candidate` version is preselected
    assert "Verdict: PASS" in at.success[0].value
    requirements = at.dataframe[0].value.set_index("id")
    assert requirements.loc["DG-1", "EU AI Act"] == "Art. 10(2), Art. 11"
    assert requirements.loc["BIAS-1", "status"] == "not evaluated"
    assert [m.value for m in at.metric[:3]] == ["2", "0", "1"]
    content = texts(at)
    assert "xsum-news (web): licence BBC XSum, research use" in content
    assert "Data validation passed: 9 of 9 expectations met" in content
    sources = at.dataframe[1].value.set_index("source")
    assert sources.loc["xsum-news", "filtered"] == 57 and sources.loc["xsum-news", "quarantined"] == 3
    training = at.dataframe[2].value.set_index("field")["value"]
    assert training["steps"] == "40" and "stages" not in training.index  # nested values get their own table
    stages = at.dataframe[3].value.set_index("stage")
    assert stages.loc["pretrain", "filter_windows_flagged"] == 12 and stages.loc["pretrain", "data"] == "train"
    evaluation = at.dataframe[4].value.set_index("metric")
    assert evaluation.loc["crows_stereotype_score", "category"] == "bias"
    assert evaluation.loc["hellaswag", "category"] == "not evaluated"
    assert at.multiselect(key="stage_metrics").value == ["crows_stereotype_score"]  # the chart across stages
    lineage = at.dataframe[5].value.set_index("field")["value"]
    assert lineage["data_manifest_sha256"] == "d" * 64
    assert len(at.get("download_button")) == 2

    at.selectbox(key="version").select("2").run()
    assert not at.exception
    assert "Verdict: FAIL" in at.error[0].value
    assert at.dataframe[0].value.set_index("id").loc["TOX-1", "status"] == "fail"


@pytest.mark.parametrize("page", [None, "runs", "compliance"])
def test_pages_show_a_hint_when_nothing_is_registered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, page: str | None
) -> None:
    monkeypatch.setenv("PHARIA_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    at = run_page(page)
    assert "make demo" in at.info[0].value
    assert not (tmp_path / "empty").exists()  # reading never creates a store


def test_unreachable_server_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://user:s3cret@127.0.0.1:9")  # discard port: nothing listens
    at = run_page()
    assert "unreachable" in at.error[0].value and "make up" in at.error[0].value
    assert "s3cret" not in at.error[0].value + texts(at) + at.sidebar.caption[0].value
