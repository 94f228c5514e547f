"""DVC: the root pipeline files agree with the code and the tiny preset; a materialised project
reproduces, publishes the prepare contract whose DVC hashes equal dvc.lock, restores byte-identical
outputs with `dvc pull` in a fresh copy, skips when nothing changed, reruns only what a param change
touches, and re-raises the pharia error of a failed stage (I/O failures as DataIOError)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from test_data_fixtures import data_config, write_corpus

from pharia.config import CONFIGS_DIR, DataConfig
from pharia.data.dvc_project import (
    STAGES,
    DataIOError,
    _stage_error,
    lock_hashes,
    materialize,
    project_dir_for,
    pull,
    render_dvc_yaml,
    render_params,
    repro,
    repro_stage,
)
from pharia.errors import DataError, DataValidationError

REPO = Path(__file__).resolve().parents[1]


def test_params_yaml_equals_the_tiny_preset_data_section() -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    tiny = yaml.safe_load((CONFIGS_DIR / "tiny.yaml").read_text(encoding="utf-8"))
    assert params == {"data": tiny["data"]}


def test_root_dvc_yaml_is_the_rendered_pipeline() -> None:
    assert (REPO / "dvc.yaml").read_text(encoding="utf-8") == render_dvc_yaml(), (
        "regenerate with: python -m pharia.data.dvc_project > dvc.yaml"
    )
    assert list(STAGES) == ["ingest", "validate", "tokenize", "pack", "publish"]
    assert all(stage["cmd"].startswith("pharia data ") for stage in STAGES.values())
    upstream = [out for name in ("ingest", "validate", "tokenize", "pack") for out in STAGES[name]["outs"]]
    assert sorted(STAGES["publish"]["deps"]) == sorted(upstream)


def test_root_dvc_config_has_the_local_remote() -> None:
    config = (REPO / ".dvc" / "config").read_text(encoding="utf-8")
    assert "remote = local" in config and "url = ../.pharia/dvc-remote" in config


def test_params_make_relative_source_paths_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = DataConfig.model_validate({"sources": [{"name": "a", "path": "corpus/*.txt", "domain": "web", "weight": 1}]})
    rendered = yaml.safe_load(render_params(cfg))
    assert rendered["data"]["sources"][0]["path"] == str(tmp_path / "corpus" / "*.txt")
    assert DataConfig.model_validate(rendered["data"]).sources[0].name == "a"


@pytest.mark.integration  # 7 `pharia data` processes under `dvc repro`: ~60 s of CPU
def test_materialize_repro_skip_rerun_and_failure(tmp_path: Path) -> None:
    cfg = data_config(write_corpus(tmp_path / "corpus"))
    project, remote = tmp_path / "project", tmp_path / "remote"

    assert materialize(project, cfg, remote) == project
    first = repro(project)
    assert first["stages_run"] == list(STAGES) and first["stages_skipped"] == []
    hashes = lock_hashes(project)
    upstream = {"data/ingest", "data/validation", "data/tokenizer", "data/shards"}
    assert set(hashes) == upstream | {"data/manifest.json", "data/clean", "data/quarantine"}
    assert hashes == first["outs_md5"] and all(hashes[out].endswith(".dir") for out in upstream)
    assert any(remote.rglob("*")), "dvc push sent nothing to the remote"

    # data/ has the layout of `pharia data prepare --out`, and the manifest's DVC hashes are dvc.lock's.
    data = project / "data"
    assert sorted(p.name for p in data.iterdir() if not p.name.startswith(".")) == [
        "clean",
        "ingest",
        "manifest.json",
        "quarantine",
        "shards",
        "tokenizer",
        "validation",
    ]
    manifest = json.loads((data / "manifest.json").read_text(encoding="utf-8"))
    lock = yaml.safe_load((project / "dvc.lock").read_text(encoding="utf-8"))
    locked = {o["path"]: o for stage in lock["stages"].values() for o in stage.get("outs", [])}
    assert manifest["dvc"]["hash"] == "md5"
    assert {f"data/{key}" for key in manifest["dvc"]["outs"]} == upstream
    for key, entry in manifest["dvc"]["outs"].items():
        recorded = locked[f"data/{key}"]
        assert recorded["hash"] == "md5"
        assert entry == {"md5": recorded["md5"], "size": recorded["size"], "nfiles": recorded["nfiles"]}
    assert manifest["totals"]["kept"] > 0 and (data / "clean" / "documents.jsonl").is_file()

    # `dvc pull` in a fresh directory holding only the pipeline files restores byte-identical outputs.
    fresh = tmp_path / "fresh"
    (fresh / ".dvc").mkdir(parents=True)
    for name in ("dvc.yaml", "dvc.lock", "params.yaml", ".dvc/config"):
        shutil.copyfile(project / name, fresh / name)
    pulled = pull(fresh)
    assert pulled["outs_md5"] == hashes and pulled["fetched"] > 0
    originals = sorted(p.relative_to(project) for p in data.rglob("*") if p.is_file())
    restored = sorted(p.relative_to(fresh) for p in (fresh / "data").rglob("*") if p.is_file())
    assert restored == originals
    assert all((fresh / rel).read_bytes() == (project / rel).read_bytes() for rel in originals)
    assert repro_stage(fresh, "publish")["status"] == "skipped"  # DVC sees the pulled outputs as current

    materialize(project, cfg, remote)  # idempotent: same files, same remote
    second = repro(project)
    assert second["stages_run"] == [] and sorted(second["stages_skipped"]) == sorted(STAGES)
    assert lock_hashes(project) == hashes

    materialize(project, cfg.model_copy(update={"vocab_size": 320}), remote)
    third = repro(project)
    assert third["stages_run"] == ["tokenize", "pack", "publish"]
    assert set(third["stages_skipped"]) == {"ingest", "validate"}
    new = lock_hashes(project)
    assert new["data/ingest"] == hashes["data/ingest"] and new["data/tokenizer"] != hashes["data/tokenizer"]

    strict = cfg.model_copy(
        update={"vocab_size": 320, "validation": cfg.validation.model_copy(update={"min_rows": 100_000})}
    )
    materialize(project, strict, remote)
    with pytest.raises(DataValidationError, match=r"expect_table_row_count_to_be_between.*Data Docs: .*index\.html"):
        repro(project)


def test_repro_without_project_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no dvc.yaml"):
        repro(tmp_path)


def test_repro_stage_refuses_an_unknown_stage(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown data stage 'train'.*ingest, validate"):
        repro_stage(tmp_path, "train")


def test_pull_without_project_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no dvc.yaml"):
        pull(tmp_path)


def test_project_dir_is_keyed_by_the_data_config(tmp_path: Path) -> None:
    """Same key as the pipeline's data_project_dir, so the data flow and the pipeline share projects."""
    from pharia.config import load_config
    from pharia.pipeline_steps import data_project_dir
    from pharia.workspace import Workspace

    cfg = load_config("tiny")
    ws = Workspace(tmp_path)
    assert project_dir_for(cfg.data, ws.data_dir) == data_project_dir(cfg, ws)
    other = cfg.data.model_copy(update={"vocab_size": cfg.data.vocab_size + 1})
    assert project_dir_for(other, ws.data_dir) != project_dir_for(cfg.data, ws.data_dir)


@pytest.mark.parametrize(
    ("reported", "output", "expected"),
    [
        ({"type": "OSError", "message": "[Errno 28] No space left on device"}, "", DataIOError),
        ({"type": "DataValidationError", "message": "suite failed; Data Docs: x"}, "", DataValidationError),
        ({"type": "DataError", "message": "source 'web' is empty"}, "", DataError),
        (None, "ERROR: Unable to acquire lock. Most likely another DVC process is running", DataIOError),
        (None, "ERROR: failed to reproduce 'pack': missing dependency", DataError),
    ],
)
def test_stage_errors_keep_their_class_and_io_failures_become_data_io_errors(
    tmp_path: Path, reported: dict | None, output: str, expected: type[Exception]
) -> None:
    """What a retry may cure (I/O) must be an OSError; what describes the data must not be."""
    error_file = tmp_path / "error.json"
    if reported is not None:
        error_file.write_text(json.dumps(reported), encoding="utf-8")
    error = _stage_error(error_file, output, tmp_path)
    assert type(error) is expected
    assert isinstance(error, OSError) == (expected is DataIOError)
