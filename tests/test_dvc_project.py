"""DVC: the root pipeline files agree with the code and the tiny preset; a materialised project
reproduces, skips when nothing changed, reruns only what a param change touches, and re-raises the
pharia error of a failed stage."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_data_fixtures import data_config, write_corpus

from pharia.config import CONFIGS_DIR, DataConfig
from pharia.data.dvc_project import STAGES, lock_hashes, materialize, render_dvc_yaml, render_params, repro
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
    assert list(STAGES) == ["ingest", "validate", "tokenize", "pack"]
    assert all(stage["cmd"].startswith("pharia data ") for stage in STAGES.values())


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
    assert first["stages_run"] == ["ingest", "validate", "tokenize", "pack"] and first["stages_skipped"] == []
    hashes = lock_hashes(project)
    assert set(hashes) == {"data/ingest", "data/validation", "data/tokenizer", "data/shards"}
    assert hashes == first["outs_md5"] and all(h.endswith(".dir") for h in hashes.values())
    assert any(remote.rglob("*")), "dvc push sent nothing to the remote"
    assert (project / "data" / "shards" / "manifest.json").is_file()

    materialize(project, cfg, remote)  # idempotent: same files, same remote
    second = repro(project)
    assert second["stages_run"] == [] and sorted(second["stages_skipped"]) == sorted(STAGES)
    assert lock_hashes(project) == hashes

    materialize(project, cfg.model_copy(update={"vocab_size": 320}), remote)
    third = repro(project)
    assert third["stages_run"] == ["tokenize", "pack"]
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
