"""Presets load, and bad configs are rejected with messages naming the key and the expectation."""

from pathlib import Path

import pytest
import yaml

from pharia.config import (
    CONFIGS_DIR,
    ConfigError,
    available_presets,
    load_config,
    load_data_config,
    validate_config,
)
from pharia.workspace import Workspace


@pytest.mark.parametrize("preset", available_presets())
def test_every_preset_loads(preset: str) -> None:
    cfg = load_config(preset)
    assert cfg.name == preset
    assert abs(sum(cfg.data.domain_targets().values()) - 1.0) < 1e-9


def test_presets_present_and_7b_matches_the_spec() -> None:
    assert {"tiny", "pharia-1-7b"} <= set(available_presets())
    m = load_config("pharia-1-7b").model
    assert (m.d_model, m.n_layers, m.n_heads, m.vocab_size, m.max_seq_len) == (4096, 32, 32, 50257, 2048)
    assert m.n_experts > 1 and m.attention == "sparse"


def test_default_mixture_is_45_25_15_10_5() -> None:
    shares = load_config("tiny").data.domain_targets()
    assert shares == pytest.approx({"web": 0.45, "academic": 0.25, "books": 0.15, "code": 0.10, "multilingual": 0.05})


def _raw() -> dict:
    return yaml.safe_load((CONFIGS_DIR / "tiny.yaml").read_text())


def test_unknown_key_is_named() -> None:
    raw = _raw()
    raw["train"]["learning_rate"] = 1e-3
    with pytest.raises(ConfigError, match=r"train\.learning_rate: unknown key"):
        validate_config(raw, "my.yaml")


def test_bad_value_names_key_expectation_and_value() -> None:
    raw = _raw()
    raw["train"]["zero_stage"] = 5
    with pytest.raises(ConfigError) as exc:
        validate_config(raw, "my.yaml")
    message = str(exc.value)
    assert "my.yaml" in message and "train.zero_stage" in message and "5" in message


def test_nested_source_error_names_index() -> None:
    raw = _raw()
    raw["data"]["sources"][1]["domain"] = "poetry"
    with pytest.raises(ConfigError, match=r"data\.sources\.1\.domain"):
        validate_config(raw)


def test_vocab_mismatch_between_sections_rejected() -> None:
    raw = _raw()
    raw["model"]["vocab_size"] = 999
    with pytest.raises(ConfigError, match="vocab_size"):
        validate_config(raw)


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown preset 'huge'.*tiny"):
        load_config("huge")


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_yaml_tags_are_not_executed(tmp_path: Path) -> None:
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(evil)


def test_data_only_file_is_accepted_and_validated(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": _raw()["data"]}))
    assert load_data_config(params).vocab_size == 2048
    raw = {"data": {**_raw()["data"], "vocab": 3}}
    params.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"data\.vocab: unknown key"):
        load_data_config(params)


def test_config_hash_is_stable_and_sensitive() -> None:
    a, b = load_config("tiny"), load_config("tiny")
    assert a.config_hash() == b.config_hash()
    b.train.max_steps += 1
    assert a.config_hash() != b.config_hash()


def test_workspace_follows_pharia_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PHARIA_HOME", str(tmp_path / "ws"))
    ws = Workspace.from_env()
    assert ws.mlflow_db == tmp_path / "ws" / "mlflow.db"
    assert ws.mlflow_uri == f"sqlite:///{tmp_path}/ws/mlflow.db"
    monkeypatch.delenv("PHARIA_HOME")
    assert Workspace.from_env().home == (Path.cwd() / ".pharia").resolve()


def test_filter_threshold_cannot_exceed_what_validation_accepts() -> None:
    raw = _raw()
    raw["data"]["toxicity_threshold"] = 0.9
    raw["data"]["validation"]["max_toxicity"] = 0.5
    with pytest.raises(ConfigError, match=r"toxicity_threshold \(0.9\).*validation.max_toxicity \(0.5\)"):
        validate_config(raw)
