"""The `pharia-data` Prefect flow against a real Prefect test server and real DVC in tmp: one task per
stage, DVC skipping every stage on a rerun, the funnel artifact agreeing with the manifest, a failed
validation stopping the flow at once with the Data Docs named, and an I/O failure (a remote that
cannot be written) retried. Plus unit tests of the pure parts: the funnel Markdown, the retry rule
and the command line's one-line errors."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_data_fixtures import data_config, write_corpus

from pharia.config import DataConfig
from pharia.data.funnel import data_docs_uri, funnel_rows, render_funnel

STAGE_NAMES = ["ingest", "validate", "tokenize", "pack", "publish"]


@pytest.fixture
def cfg(tmp_path: Path) -> DataConfig:
    return data_config(write_corpus(tmp_path / "corpus", docs_per_source=20))


def _task_runs(flow_run_id: Any, expected: int, timeout_s: float = 30.0) -> dict[str, Any]:
    """{task name: task run} of one flow run. Task run states reach the server as events, a moment
    after the flow returns: poll until `expected` runs are there and none is still pending."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout_s
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        settled = [r for r in runs if r.state is not None and r.state.is_final()]
        if (len(runs) >= expected and len(settled) == len(runs)) or time.monotonic() > deadline:
            return {r.name: r for r in runs}  # the flow names each task run after its stage
        time.sleep(0.25)


def _funnel_artifact(flow_run_id: Any) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId

    from flows.data import FUNNEL_ARTIFACT_KEY

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[FUNNEL_ARTIFACT_KEY])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
        )
    assert len(artifacts) == 1, artifacts
    return artifacts[0]


# ------------------------------------------------------------------------------- integration


@pytest.mark.integration  # 5 DVC stages in child processes, twice: ~40 s of CPU
def test_flow_runs_one_task_per_stage_skips_them_on_rerun_and_publishes_the_funnel(
    workspace, prefect_server, cfg: DataConfig
) -> None:
    from flows.data import pharia_data
    from pharia.data.dvc_project import project_dir_for

    state = pharia_data(config=cfg, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert result["stages_run"] == STAGE_NAMES and result["stages_skipped"] == []
    project = Path(result["project_dir"])
    assert project == project_dir_for(cfg, workspace.data_dir) and result["pushed"] > 0

    flow_run_id = state.state_details.flow_run_id
    runs = _task_runs(flow_run_id, expected=6)
    assert sorted(runs) == sorted([*STAGE_NAMES, "push"])  # one task per stage, never per document
    assert all(r.state.is_completed() and r.run_count == 1 for r in runs.values())

    # The artifact is the funnel of the contract manifest DVC published, numbers and Data Docs link.
    manifest = json.loads((project / "data" / "manifest.json").read_text(encoding="utf-8"))
    artifact = _funnel_artifact(flow_run_id)
    assert artifact.type == "markdown"
    assert artifact.data == render_funnel(manifest, title=f"Data funnel: {project.name}")
    for name, account in manifest["sources"].items():
        filtered, quarantined = sum(account["filtered"].values()), sum(account["quarantined"].values())
        row = (
            f"| {name} | {account['domain']} | {account['rows_in']:,} | {filtered:,} | {quarantined:,} "
            f"| {account['kept']:,} | {account['tokens']:,} |"
        )
        assert row in artifact.data
    assert f"| **total** |  | {manifest['totals']['rows_in']:,} |" in artifact.data
    docs = Path(manifest["validation"]["data_docs"])
    assert docs.is_file() and f"]({docs.as_uri()})" in artifact.data
    assert result["data_docs"] == str(docs)

    # What the flow returns is what DVC recorded.
    lock = yaml.safe_load((project / "dvc.lock").read_text(encoding="utf-8"))
    shards = next(o for o in lock["stages"]["pack"]["outs"] if o["path"] == "data/shards")
    assert result["dvc_md5"] == shards["md5"] == manifest["dvc"]["outs"]["shards"]["md5"]

    second = pharia_data(config=cfg)
    assert second["stages_run"] == [] and second["stages_skipped"] == STAGE_NAMES
    assert second["dvc_hashes"] == result["dvc_hashes"] and second["manifest_sha256"] == result["manifest_sha256"]


@pytest.mark.integration  # ingest + validate only: ~10 s
def test_failed_validation_stops_the_flow_at_once_naming_the_data_docs(workspace, prefect_server, cfg) -> None:
    from flows.data import pharia_data
    from pharia.errors import DataValidationError

    strict = cfg.model_copy(update={"validation": cfg.validation.model_copy(update={"min_rows": 100_000})})
    state = pharia_data(config=strict, return_state=True)
    assert state.is_failed()
    with pytest.raises(DataValidationError, match=r"expect_table_row_count_to_be_between.*Data Docs: .*index\.html"):
        state.result()
    runs = _task_runs(state.state_details.flow_run_id, expected=2)
    assert sorted(runs) == ["ingest", "validate"]  # nothing after the failed validation ran
    assert runs["validate"].state.is_failed() and runs["validate"].run_count == 1  # not retried


@pytest.mark.integration  # one full run with 2 retries of push, then a rerun: ~40 s
def test_an_unwritable_remote_is_retried_then_recovers(workspace, prefect_server, cfg) -> None:
    from flows.data import IO_RETRIES, pharia_data
    from pharia.data.dvc_project import DataIOError

    # A real I/O fault: the remote's object directory is a regular file, so every write fails ENOTDIR.
    workspace.dvc_remote.mkdir(parents=True)
    blocker = workspace.dvc_remote / "files"
    blocker.write_text("not a directory", encoding="utf-8")

    state = pharia_data(config=cfg, return_state=True)
    assert state.is_failed()
    with pytest.raises(DataIOError, match=r"`dvc push` failed.*Not a directory"):
        state.result()
    runs = _task_runs(state.state_details.flow_run_id, expected=6)
    assert runs["push"].state.is_failed() and runs["push"].run_count == IO_RETRIES + 1
    assert all(runs[name].run_count == 1 and runs[name].state.is_completed() for name in STAGE_NAMES)

    blocker.unlink()  # the fault goes away: the next run pushes what the failed one could not
    again = pharia_data(config=cfg)
    assert again["stages_run"] == [] and again["pushed"] > 0
    assert any(p.is_file() for p in (workspace.dvc_remote / "files").rglob("*"))


@pytest.mark.integration  # loads both flow files from source: ~10 s
def test_deploy_registers_the_data_flow_next_to_the_pipeline(prefect_server) -> None:
    """`make up` runs flows/deploy.py: both deployments exist, each with its typed config form."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    from flows.deploy import DEPLOYMENT, WORK_POOL, deploy_all

    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=WORK_POOL, type="process"), overwrite=True)
    ids = deploy_all()
    assert sorted(ids) == [f"pharia-data/{DEPLOYMENT}", f"pharia-pipeline/{DEPLOYMENT}"]
    with get_client(sync_client=True) as client:
        data = client.read_deployment_by_name(f"pharia-data/{DEPLOYMENT}")
        pipeline = client.read_deployment_by_name(f"pharia-pipeline/{DEPLOYMENT}")
    assert str(data.id) == ids[f"pharia-data/{DEPLOYMENT}"] and data.work_pool_name == WORK_POOL
    assert data.entrypoint == "flows/data.py:pharia_data" and str(pipeline.id) == ids[f"pharia-pipeline/{DEPLOYMENT}"]
    schema = data.parameter_openapi_schema
    assert list(schema["properties"]) == ["config"]
    form = schema["definitions"]["DataConfig"]["properties"]  # the UI form: DataConfig's fields
    assert {"sources", "vocab_size", "validation"} <= set(form)


# ---------------------------------------------------------------------------------- unit


MANIFEST: dict[str, Any] = {
    "sources": {
        "web": {
            "domain": "web",
            "rows_in": 1200,
            "kept": 1000,
            "filtered": {"too_short": 50, "toxicity": 40, "near_duplicate": 0},
            "quarantined": {"malformed_json": 100, "invalid_utf8": 10},
            "tokens": 123456,
        },
        "books": {"domain": "books", "rows_in": 5, "kept": 5, "filtered": {}, "quarantined": {}, "tokens": 99},
    },
    "totals": {
        "rows_in": 1205,
        "kept": 1005,
        "filtered": {"too_short": 50, "toxicity": 40, "near_duplicate": 0},
        "quarantined": {"malformed_json": 100, "invalid_utf8": 10},
        "tokens": 123555,
    },
    "validation": {
        "success": True,
        "evaluated": 21,
        "successful": 21,
        "data_docs": "/srv/data/validation/gx/uncommitted/data_docs/local_site/index.html",
    },
}


def test_funnel_rows_walk_from_rows_in_through_filters_and_quarantine_to_kept() -> None:
    assert funnel_rows(MANIFEST["sources"]["web"]) == [
        ("in", None, 1200),
        ("filtered: too_short", 50, 1150),
        ("filtered: toxicity", 40, 1110),
        ("filtered: near_duplicate", 0, 1110),
        ("quarantined: malformed_json", 100, 1010),
        ("quarantined: invalid_utf8", 10, 1000),
        ("kept", None, 1000),
    ]


def test_funnel_rows_show_a_gap_instead_of_hiding_it() -> None:
    broken = {**MANIFEST["sources"]["books"], "rows_in": 8}
    assert funnel_rows(broken) == [("in", None, 8), ("unaccounted (counts do not add up)", 3, 5), ("kept", None, 5)]


def test_render_funnel_has_a_table_per_source_totals_and_the_data_docs_link() -> None:
    md = render_funnel(MANIFEST)
    assert md.startswith("# Data funnel\n")
    assert (
        "Validation passed (21/21 expectations): [Great Expectations Data Docs]"
        "(file:///srv/data/validation/gx/uncommitted/data_docs/local_site/index.html)" in md
    )
    assert "| web | web | 1,200 | 90 | 110 | 1,000 | 123,456 |" in md
    assert "| **total** |  | 1,205 | 90 | 110 | 1,005 | 123,555 |" in md
    sections = re.split(r"^## ", md, flags=re.MULTILINE)[1:]
    assert [s.splitlines()[0] for s in sections] == ["web (web)", "books (books)", "total"]
    web = sections[0]
    assert "| filtered: toxicity | 40 | 1,110 |" in web and "| quarantined: malformed_json | 100 | 1,010 |" in web
    assert "| **kept** |  | 1,000 |" in web and "| tokens | | 123,456 |" in web
    assert "| **in** |  | 5 |" in sections[1] and "| **kept** |  | 5 |" in sections[1]


def test_render_funnel_says_when_validation_failed_or_has_no_docs() -> None:
    failed = {**MANIFEST, "validation": {**MANIFEST["validation"], "success": False, "successful": 19}}
    assert "Validation FAILED (19/21 expectations)" in render_funnel(failed)
    assert "no Data Docs recorded" in render_funnel({**MANIFEST, "validation": {}})
    assert data_docs_uri(None) is None and data_docs_uri("/a b/index.html") == "file:///a%20b/index.html"


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        ("DataIOError", True),
        ("OSError", True),
        ("PermissionError", True),
        ("DataValidationError", False),
        ("DataError", False),
        ("ConfigError", False),
    ],
)
def test_only_io_errors_are_retried(error: str, retried: bool) -> None:
    from prefect.states import Failed

    from flows.data import STAGE_TASKS, push, retry_on_io
    from pharia.config import ConfigError
    from pharia.data.dvc_project import DataIOError
    from pharia.errors import DataError, DataValidationError

    classes: dict[str, type[Exception]] = {
        "DataIOError": DataIOError,
        "OSError": OSError,
        "PermissionError": PermissionError,
        "DataValidationError": DataValidationError,
        "DataError": DataError,
        "ConfigError": ConfigError,
    }
    exc = classes[error]("boom")
    assert retry_on_io(push, None, Failed(data=exc)) is retried  # type: ignore[arg-type]
    for task in [*STAGE_TASKS.values(), push]:
        assert task.retries > 0 and task.retry_condition_fn is retry_on_io


def test_main_reports_a_missing_corpus_in_one_line_before_prefect_runs(
    tmp_path: Path, workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.data import main

    raw = {"data": data_config(write_corpus(tmp_path / "corpus", docs_per_source=2)).model_dump(mode="json")}
    raw["data"]["sources"][0]["path"] = str(tmp_path / "missing.jsonl")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw), encoding="utf-8")
    assert main(["--config", str(params)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "missing.jsonl" in err[0]
    assert not workspace.data_dir.exists() or not any(workspace.data_dir.iterdir())
