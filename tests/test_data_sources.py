"""Sources: user formats with bad rows quarantined by reason, path errors, built-in corpora."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
from test_data_fixtures import BAD_JSONL_ROWS, write_corpus

from pharia.config import SourceConfig
from pharia.data.builtins import BUILTINS, chunk_paragraphs
from pharia.data.records import Quarantined, Record
from pharia.data.sources import describe_builtins, read_source
from pharia.errors import DataError


def _split(items: list) -> tuple[list[Record], list[Quarantined]]:
    return [i for i in items if isinstance(i, Record)], [i for i in items if isinstance(i, Quarantined)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def test_jsonl_bad_rows_are_quarantined_with_reasons_and_line_numbers(corpus: dict[str, Path]) -> None:
    src = SourceConfig(name="web", path=str(corpus["web"]), format="jsonl", domain="web", weight=1)
    records, quarantined = _split(list(read_source(src)))
    assert Counter(q.reason for q in quarantined) == Counter(reason for _, reason in BAD_JSONL_ROWS)
    lines = corpus["web"].read_bytes().split(b"\n")
    for q in quarantined:
        assert q.file == str(corpus["web"]) and q.line >= 1
        assert lines[q.line - 1].decode("utf-8", "backslashreplace") == q.raw  # line numbers point at the row
        assert q.detail
    nonblank = sum(1 for line in lines if line.strip())
    assert len(records) + len(quarantined) == nonblank


def test_parquet_text_and_lines_formats(corpus: dict[str, Path]) -> None:
    academic = SourceConfig(
        name="a", path=str(corpus["academic"]), format="parquet", text_field="abstract", domain="academic", weight=1
    )
    records, quarantined = _split(list(read_source(academic)))
    assert len(records) == 30 and not quarantined and [r.line for r in records[:3]] == [1, 2, 3]

    books = SourceConfig(name="b", path=str(corpus["books"]), format="text", domain="books", weight=1)
    records, quarantined = _split(list(read_source(books)))
    assert len(records) == 30  # the hidden file is skipped
    assert [(q.reason, Path(q.file).name) for q in quarantined] == [("invalid_utf8", "broken.txt")]

    code = SourceConfig(name="c", path=str(corpus["code"]), format="lines", domain="code", weight=1)
    records, _ = _split(list(read_source(code)))
    assert len(records) == 30 and records[4].line == 5 and records[4].text.startswith("def f_4(")


def test_parquet_wrong_column_type_and_missing_column(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": ["a good long document text", None], "n": [1, 2]}), path)
    src = SourceConfig(name="p", path=str(path), format="parquet", domain="web", weight=1)
    records, quarantined = _split(list(read_source(src)))
    assert len(records) == 1 and [(q.reason, q.line) for q in quarantined] == [("non_string_field", 2)]

    wrong = SourceConfig(name="p", path=str(path), format="parquet", text_field="body", domain="web", weight=1)
    with pytest.raises(DataError, match=r"source 'p' \(path .*t\.parquet\) contains no documents.*missing_field"):
        list(read_source(wrong))


def test_glob_and_max_docs(corpus: dict[str, Path]) -> None:
    pattern = str(corpus["german"] / "text_00*.txt")
    src = SourceConfig(name="g", path=pattern, format="text", domain="multilingual", weight=1)
    assert len(_split(list(read_source(src)))[0]) == 10
    capped = SourceConfig(name="g", path=pattern, format="text", domain="multilingual", weight=1, max_docs=3)
    assert len(_split(list(read_source(capped)))[0]) == 3


def test_missing_path_names_the_source_and_path(tmp_path: Path) -> None:
    src = SourceConfig(name="gone", path=str(tmp_path / "nope.jsonl"), format="jsonl", domain="web", weight=1)
    with pytest.raises(DataError, match=r"source 'gone' .*path not found: .*nope\.jsonl"):
        list(read_source(src))
    nothing = SourceConfig(name="g", path=str(tmp_path / "*.jsonl"), format="jsonl", domain="web", weight=1)
    with pytest.raises(DataError, match="no files match"):
        list(read_source(nothing))


def test_empty_corpus_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    src = SourceConfig(name="x", path=str(tmp_path / "empty.jsonl"), format="jsonl", domain="web", weight=1)
    with pytest.raises(DataError, match=r"^source 'x' \(path .*empty\.jsonl\) contains no documents$"):
        list(read_source(src))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("not jsonl", encoding="utf-8")
    src = SourceConfig(name="x", path=str(tmp_path / "d"), format="jsonl", domain="web", weight=1)
    with pytest.raises(DataError, match=r"source 'x' \(path .*\) contains no documents: no \.jsonl"):
        list(read_source(src))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every directory")
def test_unreadable_directory_is_an_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        src = SourceConfig(name="x", path=str(locked), format="text", domain="web", weight=1)
        with pytest.raises(DataError, match="not readable"):
            list(read_source(src))
    finally:
        locked.chmod(0o755)


def test_shakespeare_chunks_respect_paragraphs_and_size() -> None:
    paragraphs = [f"Para {i}.\n" + "word " * (40 + 37 * i % 200) for i in range(40)]
    text = "\n\n".join(p.strip() for p in paragraphs)
    chunks = list(chunk_paragraphs(text, max_chars=1000))
    assert "\n\n".join(c for _, c in chunks) == text  # nothing lost or reordered
    assert all(len(c) <= 1000 or "\n\n" not in c for _, c in chunks)
    lines = text.splitlines()
    assert all(lines[start - 1].startswith("Para") for start, _ in chunks)


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_builtin_corpora_read_a_few_documents(name: str) -> None:
    corpus = BUILTINS[name]
    src = SourceConfig(name=name, builtin=name, domain=corpus.domain, weight=1, max_docs=5)  # type: ignore[arg-type]
    records, _ = _split(list(read_source(src)))
    assert len(records) == 5 and all(len(r.text) > 40 for r in records)


def test_multilingual_builtin_has_german_and_no_english() -> None:
    files = BUILTINS["chatterbot-multilingual"].files()
    languages = {f.parent.name for f in files}
    assert "german" in languages and "english" not in languages and len(languages) > 20
    german = [f for f in files if f.parent.name == "german"]
    texts = [item.text for f in german for item in BUILTINS["chatterbot-multilingual"].read(f, "m")]
    assert any("Guten Morgen" in t for t in texts)


def test_stdlib_excludes_tests_and_site_packages() -> None:
    files = BUILTINS["cpython-stdlib"].files()
    assert all({"test", "tests", "site-packages"}.isdisjoint(f.parts) for f in files)
    assert any(f.name == "json" or f.parent.name == "json" for f in files)


def test_describe_builtins_lists_domain_licence_installed() -> None:
    rows = {r["name"]: r for r in describe_builtins()}
    assert set(rows) == set(BUILTINS)
    assert rows["cpython-stdlib"]["installed"] is True and rows["cpython-stdlib"]["license"] == "PSF-2.0"
    assert rows["chatterbot-multilingual"]["domain"] == "multilingual"


def test_oversized_rows_and_files_are_quarantined_without_losing_the_rows_after_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row above MAX_ROW_BYTES is skipped in chunks (bounded memory) and quarantined by reason."""
    from pharia.data import readers

    monkeypatch.setattr(readers, "MAX_ROW_BYTES", 1000)
    monkeypatch.setattr(readers, "READ_CHUNK", 64)
    huge = "word " * 2000
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text(f'{{"text": "first"}}\n{{"text": "{huge}"}}\n{{"text": "third"}}\n', encoding="utf-8")
    lines = tmp_path / "rows.txt"
    lines.write_text(f"first\n{huge}\nthird", encoding="utf-8")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "big.txt").write_text(huge, encoding="utf-8")
    (tmp_path / "docs" / "small.txt").write_text("a small document", encoding="utf-8")
    for path, fmt, expect_line in ((jsonl, "jsonl", 2), (lines, "lines", 2), (tmp_path / "docs", "text", 0)):
        src = SourceConfig(name="s", path=str(path), format=fmt, domain="web", weight=1)
        records, quarantined = _split(list(read_source(src)))
        assert [q.reason for q in quarantined] == ["oversized_row"], fmt
        assert quarantined[0].line == expect_line and "exceeds the 1000 byte limit" in quarantined[0].detail
        assert quarantined[0].raw.startswith("word") or quarantined[0].raw.startswith('{"text": "word')
        assert len(quarantined[0].raw) <= 200
    jsonl_records, _ = _split(
        list(read_source(SourceConfig(name="s", path=str(jsonl), format="jsonl", domain="web", weight=1)))
    )
    assert [(r.line, r.text) for r in jsonl_records] == [(1, "first"), (3, "third")]
