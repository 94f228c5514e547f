"""Validation: the Great Expectations suite passes on a good ingest and, when it fails, still
publishes validation.json + Data Docs and raises an error naming the failures and the docs."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_data_fixtures import data_config, write_corpus

from pharia.config import DataConfig
from pharia.data.ingest import ingest
from pharia.data.validate import validate
from pharia.errors import DataError, DataValidationError


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> tuple[DataConfig, Path]:
    root = tmp_path_factory.mktemp("validate")
    cfg = data_config(write_corpus(root / "corpus"))
    ingest(cfg, root / "ingest")
    return cfg, root / "ingest"


def test_suite_passes_and_builds_data_docs(ingested: tuple[DataConfig, Path], tmp_path: Path) -> None:
    cfg, ingest_dir = ingested
    summary = validate(ingest_dir, cfg, tmp_path / "val")
    assert summary["success"] and summary["evaluated"] == summary["successful"] >= 10 and summary["failed"] == []
    assert json.loads((tmp_path / "val" / "validation.json").read_text()) == summary
    docs = Path(summary["data_docs"])
    assert docs.is_absolute() and docs.is_file() and docs.name == "index.html"
    assert set(summary["pages"]) == {"document_stats", "domain_shares", "row_accounting"}
    assert all(Path(p).is_file() for p in summary["pages"].values())
    assert (tmp_path / "val" / "gx" / "great_expectations.yml").is_file()  # a persisted FILE context
    names = {e["expectation"] for e in summary["expectations"]}
    assert {
        "expect_table_row_count_to_be_between",
        "expect_column_values_to_be_unique(doc_id)",
        "expect_column_mean_to_be_between(is_duplicate)",
        "expect_column_values_to_be_between(deviation)",
        "expect_column_pair_values_to_be_equal(rows_in,accounted)",
    } <= names


def test_failure_writes_report_then_raises_naming_failures_and_docs(
    ingested: tuple[DataConfig, Path], tmp_path: Path
) -> None:
    cfg, ingest_dir = ingested
    strict = cfg.model_copy(
        update={"validation": cfg.validation.model_copy(update={"min_rows": 10_000, "domain_share_tolerance": 0.001})}
    )
    with pytest.raises(DataValidationError) as info:
        validate(ingest_dir, strict, tmp_path / "val")
    message = str(info.value)
    summary = json.loads((tmp_path / "val" / "validation.json").read_text())
    assert "\n" not in message and message.startswith(f"data validation failed: 2 of {summary['evaluated']}")
    assert "expect_table_row_count_to_be_between" in message and "deviation" in message
    assert summary["data_docs"] in message and Path(summary["data_docs"]).is_file()
    assert summary["success"] is False and len(summary["failed"]) == 2
    rows = next(f for f in summary["failed"] if f["expectation"] == "expect_table_row_count_to_be_between")
    assert rows["observed"] == pq.read_metadata(ingest_dir / "stats.parquet").num_rows
    shares = next(f for f in summary["failed"] if "deviation" in f["expectation"])
    assert {"domain", "deviation"} <= set(shares["observed"]["unexpected"][0])


def test_bad_values_in_stats_are_caught(ingested: tuple[DataConfig, Path], tmp_path: Path) -> None:
    cfg, ingest_dir = ingested
    broken = tmp_path / "ingest"
    broken.mkdir()
    (broken / "ingest_report.json").write_bytes((ingest_dir / "ingest_report.json").read_bytes())
    table = pq.read_table(ingest_dir / "stats.parquet").to_pydict()
    table["toxicity"][0] = 0.99
    table["doc_id"][1] = table["doc_id"][2]
    table["domain"][3] = "poetry"
    table["language"][4] = "tlh"  # Klingon: not in the allowed set
    table["pii_residue"][5] = 2  # an e-mail address the scrubber missed
    table["quality"][6] = 0.1  # below the quality filter's threshold
    pq.write_table(pa.table(table), broken / "stats.parquet")
    with pytest.raises(DataValidationError) as info:
        validate(broken, cfg, tmp_path / "val")
    failed = {f["expectation"] for f in json.loads((tmp_path / "val" / "validation.json").read_text())["failed"]}
    assert {
        "expect_column_values_to_be_between(toxicity)",
        "expect_column_values_to_be_unique(doc_id)",
        "expect_column_values_to_be_in_set(domain)",
        "expect_column_values_to_be_in_set(language)",
        "expect_column_values_to_be_between(pii_residue)",
        "expect_column_values_to_be_between(quality)",
    } <= failed
    assert "poetry" in str(info.value)


def test_missing_ingest_is_a_clear_error(tmp_path: Path, ingested: tuple[DataConfig, Path]) -> None:
    with pytest.raises(DataError, match=r"stats\.parquet not found: expected the output of `pharia data ingest`"):
        validate(tmp_path, ingested[0], tmp_path / "val")
    assert not (tmp_path / "val").exists()
