"""Ingest: every row accounted for, filters named, mixture shares, splits, determinism, atomicity."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_data_fixtures import BAD_JSONL_ROWS, data_config, write_corpus

from pharia.config import ConfigError, DataConfig
from pharia.data.ingest import FILTERS, IGNORED_FIELDS, INGEST_FIELDS, STATS_COLUMNS, data_workers, ingest
from pharia.data.mixture import assign_splits, sample
from pharia.data.normalize import normalize_text, pii_count
from pharia.errors import DataError


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def run(corpus: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[DataConfig, Path, dict]:
    cfg = data_config(corpus)
    out = tmp_path_factory.mktemp("ingest") / "out"
    return cfg, out, ingest(cfg, out)


def test_outputs_and_every_row_accounted_for(run: tuple[DataConfig, Path, dict]) -> None:
    cfg, out, report = run
    assert sorted(p.name for p in out.iterdir()) == [
        "documents.jsonl",
        "filtered.jsonl",
        "ingest_report.json",
        "quarantine.jsonl",
        "stats.parquet",
    ]
    assert json.loads((out / "ingest_report.json").read_text()) == report
    for name, entry in report["sources"].items():
        assert set(entry["filtered"]) == set(FILTERS)
        accounted = entry["kept"] + sum(entry["filtered"].values()) + sum(entry["quarantined"].values())
        assert entry["rows_in"] == accounted, name
    totals = report["totals"]
    assert totals["rows_in"] == sum(e["rows_in"] for e in report["sources"].values())
    assert totals["kept"] + sum(totals["filtered"].values()) + sum(totals["quarantined"].values()) == totals["rows_in"]
    docs = [json.loads(line) for line in (out / "documents.jsonl").read_text().splitlines()]
    assert len(docs) == totals["kept"] and totals["chars"] == sum(len(d["text"]) for d in docs)


def test_filters_and_quarantine_file(run: tuple[DataConfig, Path, dict]) -> None:
    _, out, report = run
    web = report["sources"]["web"]
    assert web["filtered"]["too_short"] == 1 and web["filtered"]["exact_duplicate"] == 1
    assert web["filtered"]["toxicity"] == 1
    assert web["quarantined"] == {reason: 1 for _, reason in sorted(BAD_JSONL_ROWS, key=lambda r: r[1])}
    assert report["sources"]["books"]["quarantined"] == {"invalid_utf8": 1}
    rows = [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]
    assert len(rows) == sum(sum(e["quarantined"].values()) for e in report["sources"].values())
    assert all(set(r) == {"source", "file", "line", "reason", "detail", "raw"} and len(r["raw"]) <= 2000 for r in rows)
    texts = (out / "documents.jsonl").read_text()
    assert "stupid fucking idiot" not in texts and '"tiny"' not in texts


def test_one_filtered_record_per_filtered_row(run: tuple[DataConfig, Path, dict]) -> None:
    """filtered.jsonl lets an auditor trace every filtered row to its file and line and see why."""
    _, out, report = run
    rows = [json.loads(line) for line in (out / "filtered.jsonl").read_text().splitlines()]
    for name, entry in report["sources"].items():
        mine = [r for r in rows if r["source"] == name]
        assert {f: sum(r["filter"] == f for r in mine) for f in FILTERS} == entry["filtered"], name
    assert all(set(r) == {"source", "file", "line", "filter", "detail", "doc_id", "preview"} for r in rows)
    assert all(r["file"] and r["line"] >= 0 and r["detail"] for r in rows)
    toxic = next(r for r in rows if r["filter"] == "toxicity")
    assert toxic["detail"].startswith("toxicity ") and "idiot" in toxic["preview"]
    assert all(len(r["preview"]) <= 200 for r in rows)


def test_mixture_shares_near_targets_and_downsampling_counted(run: tuple[DataConfig, Path, dict]) -> None:
    cfg, _, report = run
    shares = report["domain_shares"]
    assert set(shares) == set(cfg.domain_targets())
    for domain, share in shares.items():
        assert abs(share["achieved"] - share["target"]) < 0.03, domain
    assert all(e["filtered"]["mixture_downsample"] > 0 for e in report["sources"].values())
    assert "no upsampling" in report["sampling"]


def test_small_source_contributes_everything_without_upsampling(corpus: dict[str, Path], tmp_path: Path) -> None:
    raw = data_config(corpus).model_dump()
    raw["sources"] = [s for s in raw["sources"] if s["name"] in ("web", "code")]
    raw["sources"][1]["weight"] = 1000  # code's budget far exceeds what it has
    report = ingest(DataConfig.model_validate(raw), tmp_path / "out")
    code = report["sources"]["code"]
    assert code["filtered"]["mixture_downsample"] == 0 and code["kept"] == 30
    assert report["domain_shares"]["code"]["achieved"] < report["domain_shares"]["code"]["target"]


def test_stats_table_columns_and_splits(run: tuple[DataConfig, Path, dict]) -> None:
    _, out, report = run
    table = pq.read_table(out / "stats.parquet").to_pydict()
    assert tuple(table) == STATS_COLUMNS
    assert len(set(table["doc_id"])) == len(table["doc_id"]) == report["totals"]["kept"]
    assert not any(table["is_duplicate"])
    assert all(20 <= n <= 600 for n in table["n_chars"])
    assert all(0 <= t <= 0.5 for t in table["toxicity"])
    by_domain: dict[str, set[str]] = {}
    for domain, split in zip(table["domain"], table["split"], strict=True):
        by_domain.setdefault(domain, set()).add(split)
    # >= 1 held-out and >= 1 validation document per domain (every domain has at least three)
    assert all(splits == {"train", "validation", "heldout"} for splits in by_domain.values())


def test_deterministic_for_a_seed_and_sensitive_to_it(run: tuple[DataConfig, Path, dict], tmp_path: Path) -> None:
    cfg, out, _ = run
    ingest(cfg, tmp_path / "again")
    for name in ("documents.jsonl", "filtered.jsonl", "ingest_report.json", "quarantine.jsonl", "stats.parquet"):
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes(), name
    ingest(cfg.model_copy(update={"seed": 1}), tmp_path / "other")
    assert (tmp_path / "other" / "documents.jsonl").read_bytes() != (out / "documents.jsonl").read_bytes()


def test_worker_processes_give_byte_identical_outputs(run: tuple[DataConfig, Path, dict], tmp_path: Path) -> None:
    """PHARIA_DATA_WORKERS only changes speed: two worker processes write exactly the same files."""
    cfg, out, _ = run
    ingest(cfg, tmp_path / "parallel", workers=2)
    for name in ("documents.jsonl", "filtered.jsonl", "ingest_report.json", "quarantine.jsonl", "stats.parquet"):
        assert (tmp_path / "parallel" / name).read_bytes() == (out / name).read_bytes(), name


def test_bad_worker_count_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHARIA_DATA_WORKERS", "many")
    with pytest.raises(ConfigError, match="PHARIA_DATA_WORKERS='many': expected a whole number"):
        data_workers()
    monkeypatch.setenv("PHARIA_DATA_WORKERS", "3")
    assert data_workers() == 3


def test_failure_leaves_previous_output_untouched(run: tuple[DataConfig, Path, dict], tmp_path: Path) -> None:
    cfg, out, _ = run
    target = tmp_path / "out"
    ingest(cfg, target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    raw = cfg.model_dump()
    raw["sources"][0]["path"] = str(tmp_path / "vanished.jsonl")
    with pytest.raises(DataError, match="vanished.jsonl"):
        ingest(DataConfig.model_validate(raw), target)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary directory left behind


def test_ingest_fields_cover_the_data_config() -> None:
    """A new DataConfig field must be declared as read by ingest (a DVC param) or ignored by it."""
    assert set(INGEST_FIELDS) | set(IGNORED_FIELDS) == set(DataConfig.model_fields)
    assert not set(INGEST_FIELDS) & set(IGNORED_FIELDS)


def test_normalize_and_pii_count() -> None:
    assert normalize_text("Cafe\u0301\r\n\x00line  \n\n\n\n\tcode\x1b ") == "Caf\u00e9\nline\n\n\tcode"
    assert pii_count("write to ann@example.org from 10.0.0.1 or call +49 30 1234567; in 2008 2014") == 3


def test_sampling_and_split_rules() -> None:
    items = [f"doc{i}" * (i + 1) for i in range(50)]
    taken, dropped = sample(items, budget=300, size=len, seed=3, key="s")
    assert sorted(taken + dropped) == sorted(items) and sum(map(len, taken[:-1])) < 300 <= sum(map(len, taken))
    assert sample(items, 300, len, 3, "s") == (taken, dropped)
    splits = assign_splits({"a": "web", "b": "web", "c": "code"}, heldout_fraction=0.01, seed=0)
    assert sorted(splits[d] for d in "ab") == ["heldout", "train"] and splits["c"] == "train"
    # With a validation fraction, a domain of three or more documents gets one of each split.
    three = assign_splits({"a": "web", "b": "web", "c": "web"}, 0.01, 0, validation_fraction=0.01)
    assert sorted(three.values()) == ["heldout", "train", "validation"]
    many = {f"d{i}": "web" for i in range(4000)}
    counts = Counter(assign_splits(many, 0.1, 0, validation_fraction=0.2).values())
    assert abs(counts["heldout"] / 4000 - 0.1) < 0.02 and abs(counts["validation"] / 4000 - 0.2) < 0.02
