"""Memorisation canaries (pharia.data.canaries): deterministic distinct secrets, planted by the pack
stage into the train split exactly `repeats` times and nowhere else, described in canaries.json,
recorded in the shard manifest, the contract and the funnel; count 0 plants nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from test_data_fixtures import data_config, write_corpus

from pharia.config import CanaryConfig, DataConfig, load_config
from pharia.data import canaries as canary_mod
from pharia.data.contract import write_contract
from pharia.data.dvc_project import STAGES
from pharia.data.funnel import render_funnel
from pharia.data.ingest import INGEST_FIELDS, ingest
from pharia.data.manifest import sha256_file
from pharia.data.prepare import prepare
from pharia.data.shards import pack, verify
from pharia.data.tokenizer import TOKENIZER_FIELDS, load_tokenizer
from pharia.data.validate import VALIDATE_FIELDS
from pharia.errors import DataError

CANARIES = {"count": 4, "repeats": [1, 5], "length": 6, "seed": 7}
EXPECTED_KEYS = ["schema", "alphabet", "length", "seed", "canaries"]
ENTRY_KEYS = ["id", "prefix", "secret", "repeats", "text"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One `prepare` with canaries, then the same stage outputs packed and published with count 0."""
    root = tmp_path_factory.mktemp("canaries")
    cfg = data_config(write_corpus(root / "corpus"), canaries=CANARIES)
    summary = prepare(cfg, root / "on")
    off_cfg = cfg.model_copy(update={"canaries": CanaryConfig(count=0)})
    off = root / "off"
    for name in ("ingest", "validation", "tokenizer"):
        shutil.copytree(root / "on" / name, off / name)
    pack(off / "ingest", off / "tokenizer", off_cfg, off / "shards", off / "validation")
    dirs = {name: off / name for name in ("ingest", "validation", "tokenizer", "shards")}
    validation = json.loads((off / "validation" / "validation.json").read_text(encoding="utf-8"))
    write_contract(off, dirs, validation)
    return {"cfg": cfg, "on": root / "on", "off": root / "off", "summary": summary}


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _documents(shards: Path, split: str, domain: str) -> list[str]:
    """The documents of one shard file, decoded with the shards' tokenizer (eos id 0 ends each)."""
    manifest = _json(shards / "manifest.json")
    tokens = np.fromfile(shards / split / f"{domain}.bin", dtype=manifest["dtype"])
    tokenizer = load_tokenizer(shards)
    pieces = np.split(tokens, np.flatnonzero(tokens == manifest["eos_token_id"]) + 1)[:-1]
    return [tokenizer.decode(p[:-1].tolist()) for p in pieces]


# ------------------------------------------------------------------------------------- secrets


def test_secrets_are_deterministic_per_seed_distinct_and_repeats_cycle() -> None:
    cfg = CanaryConfig(**CANARIES)
    first, again = canary_mod.make_canaries(cfg), canary_mod.make_canaries(cfg)
    assert first == again and len(first) == 4
    other = canary_mod.make_canaries(cfg.model_copy(update={"seed": 8}))
    assert [c.secret for c in other] != [c.secret for c in first]
    assert [c.repeats for c in first] == [1, 5, 1, 5]
    assert [c.id for c in first] == ["c0", "c1", "c2", "c3"]
    assert len({c.prefix for c in first}) == 4
    for c in first:
        assert len(c.secret) == 6 and set(c.secret) <= set(canary_mod.ALPHABET)
        assert c.prefix.endswith(" ") and c.text == f"{c.prefix}{c.secret}."
    # 1,000 secrets from 10^4: collisions are certain (birthday bound), and every one is redrawn
    many = canary_mod.make_canaries(CanaryConfig(count=1000, repeats=[1], length=4, seed=0))
    assert len({c.secret for c in many}) == 1000
    assert canary_mod.make_canaries(CanaryConfig(count=0)) == []


def test_the_secret_is_drawn_with_a_seeded_numpy_generator() -> None:
    cfg = CanaryConfig(count=2, repeats=[3], length=5, seed=11)
    rng = np.random.default_rng([11, 0])
    expected = ["".join(str(d) for d in rng.integers(0, 10, size=5)) for _ in range(2)]
    assert [c.secret for c in canary_mod.make_canaries(cfg)] == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"count": 3, "repeats": [1, 4]}, r"count \(3\) must be a multiple of len\(repeats\) \(2\)"),
        ({"count": 2, "repeats": [0, 4]}, r"repeats must all be >= 1"),
        ({"count": 2, "repeats": []}, r"at least one repeat count"),
        ({"count": 2, "repeats": [1, 4], "length": 3}, r"length"),
        ({"count": -1}, r"count"),
    ],
)
def test_bad_canary_config_is_rejected(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CanaryConfig(**raw)


def test_presets_plant_canaries_and_the_default_plants_none() -> None:
    tiny, big = load_config("tiny").data.canaries, load_config("pharia-1-7b").data.canaries
    assert (tiny.count, tiny.repeats, tiny.length) == (4, [1, 4, 16, 64], 6)
    assert big.count == 8 and big.repeats[:3] == [1, 10, 100]
    assert DataConfig(sources=[{"name": "a", "path": "x", "domain": "web", "weight": 1}]).canaries.count == 0


# ------------------------------------------------------------------------------------ planting


def test_placements_are_seeded_and_plant_spreads_every_copy_over_train_documents() -> None:
    canaries = canary_mod.make_canaries(CanaryConfig(count=2, repeats=[1, 3], length=4, seed=0))
    plan = canary_mod.placements(canaries, 10, seed=0)
    assert plan == canary_mod.placements(canaries, 10, seed=0)
    assert sum(len(v) for v in plan.values()) == 4 and all(0 <= p < 10 for p in plan)
    rows = [{"split": s, "domain": d, "text": t} for s, d, t in [("heldout", "web", "h"), ("train", "books", "b")]]
    # copies planned past the last train document (a report counting more than the file) follow it
    planted = list(canary_mod.plant(iter(rows), {0: [canaries[0]], 5: [canaries[1]]}))
    assert [r["text"] for r in planted] == ["h", "b", canaries[0].text, canaries[1].text]
    assert [r.get(canary_mod.CANARY_KEY) for r in planted] == [None, None, "c0", "c1"]
    assert all(r["split"] == "train" and r["domain"] == "books" for r in planted[2:])
    with pytest.raises(DataError, match="no train-split documents"):
        canary_mod.placements(canaries, 0, seed=0)
    assert canary_mod.placements([], 0, seed=0) == {}


def test_each_canary_is_in_the_train_shards_exactly_repeats_times_and_nowhere_else(prepared: dict) -> None:
    shards = prepared["on"] / "shards"
    manifest = _json(shards / "manifest.json")
    canaries = _json(shards / "canaries.json")["canaries"]
    texts = {c["text"]: c["repeats"] for c in canaries}
    train = [doc for domain in manifest["splits"]["train"] for doc in _documents(shards, "train", domain)]
    assert {text: train.count(text) for text in texts} == texts
    planted_domains = {
        d for d in manifest["splits"]["train"] if any(t in texts for t in _documents(shards, "train", d))
    }
    assert len(planted_domains) > 1  # copies follow training documents of several domains, not one block
    for split in ("validation", "heldout", "hq"):
        for domain in manifest["splits"][split]:
            docs = _documents(shards, split, domain)
            assert not any("canary c" in d or any(c["secret"] in d for c in canaries) for d in docs)
    # without the canaries the training documents are exactly the ingest's, in order
    ingest_docs = [json.loads(line) for line in (prepared["on"] / "ingest" / "documents.jsonl").open()]
    for domain in manifest["splits"]["train"]:
        kept = [d for d in _documents(shards, "train", domain) if d not in texts]
        assert kept == [d["text"] for d in ingest_docs if d["split"] == "train" and d["domain"] == domain]


def test_other_splits_are_byte_identical_with_and_without_canaries(prepared: dict) -> None:
    on, off = _json(prepared["on"] / "shards" / "manifest.json"), _json(prepared["off"] / "shards" / "manifest.json")
    for split in ("validation", "heldout", "hq"):
        assert on["splits"][split] == off["splits"][split]
    assert on["ingest"] == off["ingest"] and on["tokenizer"] == off["tokenizer"]
    planted = on["canaries"]["tokens"]
    assert planted > 0
    on_train = sum(e["tokens"] for e in on["splits"]["train"].values())
    assert on_train == sum(e["tokens"] for e in off["splits"]["train"].values()) + planted


# ----------------------------------------------------------------------- file, manifest, funnel


def test_canaries_json_has_the_agreed_format_and_its_hash_is_in_the_manifest(prepared: dict) -> None:
    shards = prepared["on"] / "shards"
    doc = _json(shards / "canaries.json")
    assert list(doc) == EXPECTED_KEYS
    assert doc["schema"] == "pharia.canaries/v1" and doc["alphabet"] == "0123456789"
    assert (doc["length"], doc["seed"]) == (6, 7)
    assert [c["id"] for c in doc["canaries"]] == ["c0", "c1", "c2", "c3"]
    for entry in doc["canaries"]:
        assert list(entry) == ENTRY_KEYS
        prefix, secret = entry["prefix"], entry["secret"]
        assert prefix.endswith(" ") and entry["text"].startswith(prefix)
        assert entry["text"][len(prefix) : len(prefix) + 6] == secret and secret.isdigit()
    manifest = _json(shards / "manifest.json")
    sha = sha256_file(shards / "canaries.json")
    assert manifest["files"]["canaries.json"] == sha
    section = manifest["canaries"]
    assert (section["file"], section["sha256"], section["schema"]) == ("canaries.json", sha, "pharia.canaries/v1")
    assert (section["count"], section["repeats"], section["split"]) == (4, [1, 5], "train")
    assert section["planted_documents"] == 12 == sum(section["documents_per_domain"].values())
    split_tokens = sum(
        e["tokens"] for name in ("train", "validation", "heldout") for e in manifest["splits"][name].values()
    )
    assert split_tokens == manifest["ingest"]["totals"]["tokens"] + section["tokens"]  # every token accounted for
    verify(shards)


def test_contract_and_funnel_account_for_every_planted_document(prepared: dict) -> None:
    contract = _json(prepared["on"] / "manifest.json")
    section = contract["canaries"]
    assert section["file"] == "shards/canaries.json" and section["planted_documents"] == 12
    assert contract["files"]["shards/canaries.json"] == section["sha256"]
    assert contract["totals"]["tokens"] == sum(s["tokens"] for s in contract["sources"].values())
    assert prepared["summary"]["canaries_planted"] == 12
    shards_tokens = _json(prepared["on"] / "shards" / "manifest.json")["canaries"]["tokens"]
    funnel = render_funnel(contract)
    line = next(line for line in funnel.splitlines() if line.startswith("Canaries:"))
    assert line.startswith(f"Canaries: 12 planted documents (4 canaries, repeats 1, 5), {shards_tokens:,} tokens")
    assert "shards/canaries.json" in line


def test_count_zero_plants_nothing_and_writes_no_file(prepared: dict) -> None:
    shards = prepared["off"] / "shards"
    assert not (shards / "canaries.json").exists()
    manifest = _json(shards / "manifest.json")
    assert "canaries.json" not in manifest["files"]
    section = manifest["canaries"]
    assert (section["file"], section["sha256"], section["count"]) == (None, None, 0)
    assert (section["planted_documents"], section["tokens"], section["documents_per_domain"]) == (0, 0, {})
    train = [doc for domain in manifest["splits"]["train"] for doc in _documents(shards, "train", domain)]
    assert not any(doc.startswith("canary c") for doc in train)
    split_tokens = sum(
        e["tokens"] for name in ("train", "validation", "heldout") for e in manifest["splits"][name].values()
    )
    assert split_tokens == manifest["ingest"]["totals"]["tokens"]
    contract = _json(prepared["off"] / "manifest.json")
    assert contract["canaries"]["file"] is None and contract["canaries"]["planted_documents"] == 0
    assert "Canaries: none planted" in render_funnel(contract)
    verify(shards)


def test_only_the_pack_stage_reads_the_canaries(tmp_path: Path) -> None:
    """DVC reruns exactly pack and publish when data.canaries changes: no earlier stage declares it,
    and the ingest's config hash ignores it."""
    assert "canaries" not in (*INGEST_FIELDS, *VALIDATE_FIELDS, *TOKENIZER_FIELDS)
    for name in ("ingest", "validate", "tokenize", "publish"):
        assert not any(p in ("data", "data.canaries") for p in STAGES[name].get("params", []))
    assert "data" in STAGES["pack"]["params"]
    paths = write_corpus(tmp_path / "corpus", docs_per_source=4)
    on = data_config(paths, canaries=CANARIES, target_chars=2000)
    off = on.model_copy(update={"canaries": CanaryConfig(count=0)})
    first, second = ingest(on, tmp_path / "a", workers=1), ingest(off, tmp_path / "b", workers=1)
    assert first["ingest_config_sha256"] == second["ingest_config_sha256"]
    assert (tmp_path / "a" / "documents.jsonl").read_bytes() == (tmp_path / "b" / "documents.jsonl").read_bytes()
