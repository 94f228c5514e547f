"""Pack: manifest shape (the contract with training/eval), hashes match files, eos per document."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_data_fixtures import data_config, write_corpus

from pharia.config import DataConfig
from pharia.data.ingest import ingest
from pharia.data.manifest import atomic_dir, manifest_sha256, sha256_file
from pharia.data.shards import is_high_quality, pack, token_dtype, verify
from pharia.data.tokenizer import load_tokenizer, train_tokenizer
from pharia.data.validate import validate
from pharia.errors import DataError, DataValidationError

MANIFEST_KEYS = [
    "schema",
    "dtype",
    "vocab_size",
    "seq_len",
    "eos_token_id",
    "pad_token_id",
    "tokenizer",
    "splits",
    "files",
    "domain_shares",
    "high_quality",
    "canaries",  # memorisation canaries planted into train (test_data_canaries.py); count 0 here
    "ingest",
    "validation",
    "data_config_sha256",
]


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> tuple[DataConfig, Path, dict]:
    root = tmp_path_factory.mktemp("pack")
    cfg = data_config(write_corpus(root / "corpus"))
    ingest(cfg, root / "ingest")
    validate(root / "ingest", cfg, root / "validation")
    train_tokenizer(root / "ingest", cfg, root / "tokenizer")
    manifest = pack(root / "ingest", root / "tokenizer", cfg, root / "shards", root / "validation")
    return cfg, root, manifest


def test_manifest_shape(packed: tuple[DataConfig, Path, dict]) -> None:
    cfg, root, manifest = packed
    assert list(manifest) == MANIFEST_KEYS
    assert json.loads((root / "shards" / "manifest.json").read_text()) == manifest
    assert manifest["schema"] == "pharia.shards/v1" and manifest["dtype"] == "uint16"
    assert (manifest["vocab_size"], manifest["seq_len"]) == (cfg.vocab_size, cfg.seq_len)
    assert (manifest["eos_token_id"], manifest["pad_token_id"]) == (0, 1)
    assert set(manifest["splits"]) == {"train", "validation", "heldout", "hq"}
    domains = set(cfg.domain_targets())
    assert set(manifest["splits"]["train"]) == set(manifest["splits"]["heldout"]) == domains
    assert set(manifest["splits"]["validation"]) == domains
    assert set(manifest["domain_shares"]) == domains
    assert abs(sum(s["achieved"] for s in manifest["domain_shares"].values()) - 1) < 1e-5
    assert manifest["validation"] == {
        k: json.loads((root / "validation" / "validation.json").read_text())[k]
        for k in ("success", "evaluated", "successful", "data_docs")
    }
    report = json.loads((root / "ingest" / "ingest_report.json").read_text())
    assert manifest["ingest"]["totals"]["kept"] == report["totals"]["kept"]
    assert set(manifest["ingest"]["sources"]) == set(report["sources"])


def test_hashes_match_files(packed: tuple[DataConfig, Path, dict]) -> None:
    _, root, manifest = packed
    shards = root / "shards"
    on_disk = {str(p.relative_to(shards)) for p in shards.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk
    for rel, digest in manifest["files"].items():
        assert sha256_file(shards / rel) == digest
    for split in manifest["splits"].values():
        for entry in split.values():
            assert manifest["files"][entry["file"]] == entry["sha256"]
    assert manifest["tokenizer"]["sha256"] == sha256_file(root / "tokenizer" / "tokenizer.json")
    assert manifest_sha256(shards) == manifest_sha256(shards / "manifest.json") == sha256_file(shards / "manifest.json")
    verify(shards)


def test_verify_detects_a_changed_file(packed: tuple[DataConfig, Path, dict], tmp_path: Path) -> None:
    copy = tmp_path / "shards"
    shutil.copytree(packed[1] / "shards", copy)
    (copy / "train" / "web.bin").write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="web.bin: sha256 differs"):
        verify(copy)


def test_tokens_decode_back_to_documents(packed: tuple[DataConfig, Path, dict]) -> None:
    _, root, manifest = packed
    docs = [json.loads(line) for line in (root / "ingest" / "documents.jsonl").read_text().splitlines()]
    tokenizer = load_tokenizer(root / "tokenizer")
    entry = manifest["splits"]["heldout"]["academic"]
    tokens = np.memmap(root / "shards" / entry["file"], dtype=manifest["dtype"], mode="r")
    assert tokens.size == entry["tokens"] and tokens[-1] == 0
    texts = [d["text"] for d in docs if d["split"] == "heldout" and d["domain"] == "academic"]
    assert int((tokens == 0).sum()) == len(texts)  # one eos after each document
    pieces = np.split(np.asarray(tokens), np.flatnonzero(tokens == 0) + 1)[:-1]
    assert [tokenizer.decode(p[:-1].tolist()) for p in pieces] == texts


def test_pack_refuses_a_failed_validation(packed: tuple[DataConfig, Path, dict], tmp_path: Path) -> None:
    cfg, root, _ = packed
    failed = tmp_path / "validation"
    failed.mkdir()
    summary = json.loads((root / "validation" / "validation.json").read_text())
    summary.update(success=False, failed=[{"suite": "s", "expectation": "expect_x", "observed": 1}])
    (failed / "validation.json").write_text(json.dumps(summary))
    with pytest.raises(DataValidationError, match="refusing to pack: data validation failed: 1 of"):
        pack(root / "ingest", root / "tokenizer", cfg, tmp_path / "shards", failed)
    assert not (tmp_path / "shards").exists()


def test_dtype_rule_and_atomic_dir(tmp_path: Path) -> None:
    assert token_dtype(65535) == np.uint16 and token_dtype(65536) == np.uint32
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []


def _pieces(path: Path, dtype: str) -> list[list[int]]:
    tokens = np.fromfile(path, dtype=dtype)
    return [p[:-1].tolist() for p in np.split(tokens, np.flatnonzero(tokens == 0) + 1)[:-1]]


def test_high_quality_subset_holds_exactly_the_qualifying_training_documents(
    packed: tuple[DataConfig, Path, dict],
) -> None:
    """The intermediate stage trains on `hq`: train-split documents passing the stricter bounds."""
    cfg, root, manifest = packed
    docs = [json.loads(line) for line in (root / "ingest" / "documents.jsonl").read_text().splitlines()]
    tokenizer = load_tokenizer(root / "tokenizer")
    hq = manifest["splits"]["hq"]
    assert hq and manifest["high_quality"]["tokens"] == sum(e["tokens"] for e in hq.values())
    for domain, entry in hq.items():
        expected = [d["text"] for d in docs if d["domain"] == domain and is_high_quality(d, cfg)]
        assert all(d["split"] == "train" for d in docs if is_high_quality(d, cfg))
        assert [tokenizer.decode(p) for p in _pieces(root / "shards" / entry["file"], manifest["dtype"])] == expected
        assert manifest["high_quality"]["documents"][domain] == len(expected)
        assert entry["tokens"] <= manifest["splits"]["train"][domain]["tokens"]
    assert any(not is_high_quality(d, cfg) for d in docs if d["split"] == "train")  # a real subset
    # hq repeats train: per-source token counts (the mixture accounting) do not count it twice
    split_tokens = sum(
        e["tokens"] for name in ("train", "validation", "heldout") for e in manifest["splits"][name].values()
    )
    assert manifest["ingest"]["totals"]["tokens"] == split_tokens


def test_pack_killed_midway_leaves_nothing_that_looks_finished_and_reruns_cleanly(
    packed: tuple[DataConfig, Path, dict], tmp_path: Path
) -> None:
    cfg, root, _ = packed
    ingest_dir = tmp_path / "ingest"
    shutil.copytree(root / "ingest", ingest_dir)
    lines = (ingest_dir / "documents.jsonl").read_text(encoding="utf-8")
    (ingest_dir / "documents.jsonl").write_text(lines * 400, encoding="utf-8")  # several seconds of encoding
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    script = (
        "import sys; from pathlib import Path; from pharia.config import DataConfig; "
        "from pharia.data.shards import pack; a = [Path(x) for x in sys.argv[1:]]; "
        "pack(a[0], a[1], DataConfig.model_validate_json(a[2].read_text()), a[3])"
    )
    args = [str(ingest_dir), str(root / "tokenizer"), str(tmp_path / "cfg.json"), str(tmp_path / "shards")]
    proc = subprocess.Popen([sys.executable, "-c", script, *args], env={**os.environ, "PHARIA_PROGRESS": "0"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill -9 once shard files are being written
        partial = [p for p in tmp_path.glob(".shards.tmp-*/train/*.bin") if p.stat().st_size > 0]
        if partial:
            break
        assert proc.poll() is None, "pack finished before it could be killed: make the corpus larger"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert partial and not (tmp_path / "shards").exists()  # only a hidden temporary directory is left
    manifest = pack(ingest_dir, root / "tokenizer", cfg, tmp_path / "shards")
    verify(tmp_path / "shards")
    assert not list(tmp_path.glob(".shards.*"))  # the rerun removed the dead writer's leftovers
    assert manifest["ingest"]["totals"]["tokens"] > 0
