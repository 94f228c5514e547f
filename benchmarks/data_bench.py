"""Data benchmark of `make bench`: does the data stage scale to a corpus larger than memory, and how fast?

What it does, in one run (section `data_benchmarks` of benchmarks/run.py's report, or standalone):

  1. generates a deterministic synthetic JSONL corpus of --data-gb GB (10^9 bytes) across the five
     domains, streamed to disk (benchmarks/synthetic_corpus.py: real text from installed packages,
     recombined, with known fractions of exact and near duplicates, PII, short docs, malformed rows),
     and a second one --data-small-fraction of that size;
  2. runs `pharia.data.ingest.ingest` on each in a child process (benchmarks/data_child.py) and
     records its peak RSS (the kernel's high-water mark from wait4, and a polled sum over the process
     tree), wall time, documents/s and MB/s through reading, cleaning, PII scrubbing, filtering and
     exact + near dedup. Memory that stays flat from the small to the full corpus is what bounded
     memory means; `rss_growth` (full peak / small peak) next to `size_growth` shows it;
  3. next to each ingest, the bare baseline `json.loads` of every line in a child process of its own:
     the ratio ingest docs/s / parse docs/s is what cleaning and dedup cost on top of reading JSONL;
  4. a per-stage breakdown over --data-stage-docs documents in this process (normalise, PII scrub,
     exact hash, language id, quality, toxicity, near-dup MinHash, per-document stats), each stage's
     documents/s, so the slowest stage is named rather than guessed;
  5. tokenisation tokens/s: `pharia.data.shards.pack` (read documents.jsonl, encode, write shards,
     hash) vs the bare baseline `tokenizers` `encode_batch` alone on the same documents in memory, with
     the same tokenizer (trained by `pharia.data.tokenizer.train_tokenizer` on the ingest output) and
     the same thread pool (pack turns TOKENIZERS_PARALLELISM on for itself, so the baseline runs with it
     on too; a third candidate, `encode_batch_1_thread`, shows what the parallelism is worth here),
     interleaved over --data-rounds chunks of --data-tokenize-mb MB in total: ratio = median over rounds
     of candidate tokens/s / encode_batch tokens/s (all credited with the same text tokens; higher is
     better, 1.0 means packing costs nothing beyond encoding).

The row accounting of each ingest is checked against what the generator wrote (rows in, quarantined
= malformed injected, too_short = short injected, exact_duplicate >= duplicates injected, nothing
downsampled): `accounting.ok` in the report. Nothing is judged by speed.

Disk: the full corpus plus its ingest output (about twice --data-gb) must fit under --data-work-dir;
everything written there is removed at the end unless --data-keep.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

from synthetic_corpus import DOMAIN_SHARES, DOMAINS, generate  # noqa: E402

SCHEMA = "pharia.bench.data/v1"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "data.json"
CHILD = BENCH_DIR / "data_child.py"
UNCAPPED_CHARS = 10**15  # target_chars far above any corpus: the mixture keeps every document
POLL_S = 0.1
DISK_MARGIN = 1.0e9  # bytes kept free beyond the estimate
GB, MB = 1e9, 1e6
NEAR_DUPLICATE_THRESHOLD = 0.8  # DataConfig's default, which the benchmark's ingest uses


@dataclass(frozen=True)
class DataSettings:
    """Sizes of the data benchmark; the full and the quick profile differ only here."""

    data_gb: float  # the full corpus, GB
    small_fraction: float  # the second corpus, as a fraction of the full one
    tokenize_mb: float  # MB of ingested documents each tokenisation candidate encodes, over all rounds
    rounds: int  # tokenisation rounds (chunks), candidates interleaved
    stage_docs: int  # documents of the per-stage breakdown
    vocab_size: int  # of the BPE the tokenisation benchmark trains
    tokenizer_train_mb: float  # MB of ingested documents it is trained on
    seed: int = 0
    work_dir: str | None = None
    keep: bool = False
    workers: int = 2  # content-filter worker processes of the ingest (PHARIA_DATA_WORKERS)


PROFILES = {
    "full": DataSettings(
        data_gb=2.0,
        small_fraction=0.125,
        tokenize_mb=64.0,
        rounds=4,
        stage_docs=2000,
        vocab_size=8192,
        tokenizer_train_mb=8.0,
    ),
    "quick": DataSettings(
        data_gb=0.005,
        small_fraction=0.25,
        tokenize_mb=1.0,
        rounds=2,
        stage_docs=200,
        vocab_size=1024,
        tokenizer_train_mb=1.0,
    ),
}


# ------------------------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The data benchmark's options, shared by this script and benchmarks/run.py (unset = profile value)."""
    full, quick = PROFILES["full"], PROFILES["quick"]
    group = parser.add_argument_group("data benchmark (section data_benchmarks)")
    group.add_argument(
        "--data-gb",
        type=float,
        help=f"size of the synthetic corpus in GB (10^9 bytes; default {full.data_gb:g}, --quick {quick.data_gb:g}); "
        "tiny values such as 0.002 make a seconds-long smoke run",
    )
    group.add_argument(
        "--data-small-fraction",
        type=float,
        help=f"the second, smaller corpus as a fraction of --data-gb, for the memory comparison "
        f"(default {full.small_fraction:g}, --quick {quick.small_fraction:g})",
    )
    group.add_argument(
        "--data-tokenize-mb",
        type=float,
        help=f"MB of ingested documents each tokenisation candidate encodes (default {full.tokenize_mb:g}, "
        f"--quick {quick.tokenize_mb:g})",
    )
    group.add_argument(
        "--data-rounds",
        type=int,
        help=f"interleaved tokenisation rounds (default {full.rounds}, --quick {quick.rounds})",
    )
    group.add_argument(
        "--data-stage-docs",
        type=int,
        help=f"documents of the per-stage breakdown (default {full.stage_docs}, --quick {quick.stage_docs})",
    )
    group.add_argument(
        "--data-vocab-size",
        type=int,
        help=f"vocabulary of the BPE trained for tokenisation (default {full.vocab_size}, --quick {quick.vocab_size})",
    )
    group.add_argument(
        "--data-tokenizer-train-mb",
        type=float,
        help=f"MB of ingested documents the BPE is trained on (default {full.tokenizer_train_mb:g}, "
        f"--quick {quick.tokenizer_train_mb:g})",
    )
    group.add_argument(
        "--data-work-dir",
        help="folder for the corpora and stage outputs (needs ~2.2x --data-gb free; default: a new temporary "
        "folder under $TMPDIR)",
    )
    group.add_argument("--data-keep", action="store_true", help="keep the corpora and outputs (default: removed)")
    group.add_argument(
        "--data-workers",
        type=int,
        default=2,
        help="worker processes of the ingest's content filters (PHARIA_DATA_WORKERS; default 2 = this machine's cores)",
    )


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    positive = ("data_gb", "data_tokenize_mb", "data_rounds", "data_stage_docs", "data_tokenizer_train_mb")
    for name in positive:
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0, got {value}")
    if args.data_small_fraction is not None and not 0 < args.data_small_fraction < 1:
        parser.error(f"--data-small-fraction must be in (0, 1), got {args.data_small_fraction}")
    if args.data_vocab_size is not None and args.data_vocab_size < 300:
        parser.error(f"--data-vocab-size must be >= 300, got {args.data_vocab_size}")


def settings_from(args: argparse.Namespace, quick: bool, seed: int) -> DataSettings:
    base = PROFILES["quick" if quick else "full"]
    overrides = {
        "data_gb": args.data_gb,
        "small_fraction": args.data_small_fraction,
        "tokenize_mb": args.data_tokenize_mb,
        "rounds": args.data_rounds,
        "stage_docs": args.data_stage_docs,
        "vocab_size": args.data_vocab_size,
        "tokenizer_train_mb": args.data_tokenizer_train_mb,
    }
    return replace(
        base,
        **{k: v for k, v in overrides.items() if v is not None},
        seed=seed,
        work_dir=args.data_work_dir,
        keep=args.data_keep,
        workers=args.data_workers,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/data_bench.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="`make bench` runs this as a section of benchmarks/run.py, with the same --data-* options.",
    )
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes (a 5 MB corpus, under a minute)")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="JSON report (default: benchmarks/results/data.json)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic corpus (default: 0)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    return args


# ------------------------------------------------------------------------------ measuring
def _log(message: str) -> None:
    print(f"[data] {message}", file=sys.stderr, flush=True)


def machine_busy_s() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (Linux /proc/stat), None elsewhere."""
    try:
        fields = Path("/proc/stat").read_text(encoding="utf-8").splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if fields[0] != "cpu" or len(fields) < 9:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _tree_rss(process: Any) -> int:
    import psutil

    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:  # a child that ended between listing and reading
            pass
    return total


def run_child(mode: str, spec: dict[str, Any], work: Path) -> dict[str, Any]:
    """Run data_child.py MODE in a fresh interpreter; return its result plus peak RSS and CPU figures."""
    import psutil

    spec_path, result_path = work / f"{mode}-spec.json", work / f"{mode}-result.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    result_path.unlink(missing_ok=True)
    busy0, started = machine_busy_s(), time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(CHILD), mode, str(spec_path), str(result_path)], cwd=REPO)
    watched = psutil.Process(proc.pid)
    peak_tree = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        try:
            peak_tree = max(peak_tree, _tree_rss(watched))
        except psutil.Error:
            pass
        time.sleep(POLL_S)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; tell Popen so it never waits again
    wall = time.perf_counter() - started
    busy1 = machine_busy_s()
    if proc.returncode != 0:
        raise RuntimeError(f"data_child.py {mode} failed with exit code {proc.returncode} (see its output above)")
    result = json.loads(result_path.read_text(encoding="utf-8"))
    child_cpu = usage.ru_utime + usage.ru_stime
    others = (busy1 - busy0 - child_cpu) / wall if busy0 is not None and busy1 is not None else None
    result.update(
        {
            "process_wall_s": wall,  # including the interpreter start and the imports
            # the child's own VmHWM: wait4's ru_maxrss would be at least this process's size at fork
            "peak_rss_mb": result["self_maxrss_mb"],
            "peak_tree_rss_mb": peak_tree / 2**20,  # polled every POLL_S: child and any workers it started
            "cpu_per_wall": child_cpu / wall,
            # CPUs everything else on the machine kept busy meanwhile (this parent only polls)
            "others_cpu_per_wall": max(0.0, others) if others is not None else None,
        }
    )
    return result


# ------------------------------------------------------------------------------ phases
def ingest_config(corpus: Path, s: DataSettings) -> Any:
    """One jsonl source per domain, weighted by its share of the corpus, nothing downsampled."""
    from pharia.config import DataConfig, SourceConfig

    sources = [
        SourceConfig(
            name=f"synthetic-{domain}",
            path=str(corpus / domain),
            format="jsonl",
            domain=domain,
            weight=DOMAIN_SHARES[domain],
            license="synthetic, recombined from packaged corpora (benchmarks/synthetic_corpus.py)",
        )
        for domain in DOMAINS
    ]
    return DataConfig(sources=sources, target_chars=UNCAPPED_CHARS, vocab_size=s.vocab_size, seed=s.seed)


def _count(section: Any, key: str) -> int:
    value = section.get(key, 0) if isinstance(section, dict) else 0
    return int(value) if isinstance(value, int | float) else 0


def accounting(report: dict[str, Any], corpus: dict[str, Any]) -> dict[str, Any]:
    """The ingest's per-source counts next to what the generator wrote, and whether they agree."""
    sources: dict[str, Any] = {}
    ok = True
    for domain in DOMAINS:
        entry = report["sources"][f"synthetic-{domain}"]
        made = corpus["domains"][domain]
        filtered, quarantined = entry.get("filtered", {}), entry.get("quarantined", {})
        row = {
            "rows_generated": made["rows"],
            "rows_in": entry["rows_in"],
            "kept": entry["kept"],
            "filtered": sum(filtered.values()),
            "quarantined": sum(quarantined.values()),
            "malformed_injected": made["kinds"]["malformed"],
            "too_short": _count(filtered, "too_short"),
            "short_injected": made["kinds"]["short"],
            "exact_duplicate": _count(filtered, "exact_duplicate"),
            "exact_duplicates_injected": made["kinds"]["exact_duplicate"],
            "near_duplicate": _count(filtered, "near_duplicate"),
            "near_duplicates_injected": made["kinds"]["near_duplicate"],
            "mixture_downsample": _count(filtered, "mixture_downsample"),
            "pii_injected": made["pii_injected"],
            "pii_scrubbed": entry.get("pii_scrubbed", {}),
        }
        row["checks"] = {
            "rows_in == rows generated": row["rows_in"] == row["rows_generated"],
            "kept + filtered + quarantined == rows_in": row["kept"] + row["filtered"] + row["quarantined"]
            == row["rows_in"],
            "quarantined == malformed injected": row["quarantined"] == row["malformed_injected"],
            "too_short == short injected": row["too_short"] == row["short_injected"],
            "exact_duplicate >= injected": row["exact_duplicate"] >= row["exact_duplicates_injected"],
            "nothing downsampled": row["mixture_downsample"] == 0,
        }
        ok = ok and all(row["checks"].values())
        sources[domain] = row
    return {"ok": ok, "sources": sources}


def _files(corpus: Path) -> list[str]:
    return [str(p) for domain in DOMAINS for p in sorted((corpus / domain).glob("*.jsonl"))]


def bench_size(label: str, target_bytes: int, work: Path, s: DataSettings) -> tuple[dict[str, Any], Path]:
    """Generate a corpus of `target_bytes`, ingest it and parse it (children); return the results and
    the ingest output folder (the corpus itself is removed unless --data-keep)."""
    corpus, out = work / f"corpus-{label}", work / f"ingest-{label}"
    _log(f"{label}: generating a {target_bytes / MB:,.0f} MB corpus in {corpus}")
    summary = generate(corpus, target_bytes, seed=s.seed)
    _log(f"{label}: {summary['rows']:,} rows, {summary['bytes'] / MB:,.0f} MB in {summary['wall_s']:.1f} s")
    cfg = ingest_config(corpus, s)
    _log(f"{label}: ingest (child process) ...")
    spec = {"config": cfg.model_dump(mode="json"), "out_dir": str(out), "workers": s.workers}
    ingest_run = run_child("ingest", spec, work)
    report = ingest_run.pop("report")
    rows, wall = report["totals"]["rows_in"], ingest_run["wall_s"]
    ingest_run.update(
        {
            "rows": rows,
            "workers": s.workers,
            "bytes": summary["bytes"],
            "docs_per_s": rows / wall,
            "mb_per_s": summary["bytes"] / MB / wall,
            "kept": report["totals"]["kept"],
            "output_bytes": sum(p.stat().st_size for p in out.iterdir() if p.is_file()),
            "totals": report["totals"],
            "accounting": accounting(report, summary),
        }
    )
    _log(
        f"{label}: ingest {rows:,} rows in {wall:.1f} s = {rows / wall:,.0f} docs/s, "
        f"peak RSS {ingest_run['peak_rss_mb']:,.0f} MB"
    )
    _log(f"{label}: bare JSON parse baseline (child process) ...")
    parse_run = run_child("parse", {"files": _files(corpus)}, work)
    parse_run["docs_per_s"] = parse_run["rows"] / parse_run["wall_s"]
    parse_run["mb_per_s"] = parse_run["bytes"] / MB / parse_run["wall_s"]
    if not s.keep:
        shutil.rmtree(corpus)
    corpus_entry = {k: v for k, v in summary.items() if k != "domains"}
    corpus_entry["domains"] = {d: {k: v for k, v in e.items() if k != "files"} for d, e in summary["domains"].items()}
    corpus_entry["files_sha256"] = {f: h for e in summary["domains"].values() for f, h in e["files"].items()}
    result = {
        "corpus": corpus_entry,
        "ingest": ingest_run,
        "parse_baseline": parse_run,
        "ingest_vs_parse": ingest_run["docs_per_s"] / parse_run["docs_per_s"],
    }
    return result, out


def _sample_documents(out: Path, count: int) -> list[tuple[str, str]]:
    """(domain, text) of the first documents of each domain in an ingest output (already clean),
    `count` in total in the corpus's domain shares: the per-stage breakdown's input."""
    from pharia.data.tokenizer import iter_documents

    wanted = {d: max(1, round(count * DOMAIN_SHARES[d])) for d in DOMAINS}
    got: list[tuple[str, str]] = []
    for row in iter_documents(out):
        domain = row["domain"]
        if wanted.get(domain, 0) > 0:
            wanted[domain] -= 1
            got.append((domain, row["text"]))
            if not any(wanted.values()):
                break
    return got


def bench_stages(ingest_dir: Path, s: DataSettings) -> dict[str, Any]:
    """Each ingest stage's documents/s on the same documents, in this process, one after the other.

    The input is ingested documents, i.e. text that survived every filter: the same work per stage as
    the ingest does for the documents it keeps (text_stats and pii_residue are what the ingest computes
    for stats.parquet). Model loading (lingua, the profanity SVM) happens in an untimed warm-up call. A
    stage whose function has moved is reported as an error instead of failing the benchmark."""
    from pharia.classifiers.language import CODE, detect_languages
    from pharia.classifiers.toxicity import toxicity_by_language
    from pharia.data import neardup
    from pharia.data.manifest import sha256_text
    from pharia.data.normalize import normalize_text, text_stats
    from pharia.data.pii import residue, scrub
    from pharia.data.quality import quality

    docs = _sample_documents(ingest_dir, s.stage_docs)
    texts = [t for _, t in docs]
    prose = [t for d, t in docs if d != "code"]
    languages: list[str] = []
    batch = 512

    def language() -> int:
        languages.clear()
        for i in range(0, len(prose), batch):
            languages.extend(detect_languages(prose[i : i + batch]))
        return len(prose)

    def toxicity() -> int:
        langs = iter(languages)
        tags = [CODE if d == "code" else next(langs) for d, _ in docs]
        for i in range(0, len(texts), batch):
            toxicity_by_language(texts[i : i + batch], tags[i : i + batch])
        return len(texts)

    def near_duplicate() -> int:  # MinHash band keys per document, then the clustering over all of them
        import numpy as np

        keys = [neardup.band_keys(text, NEAR_DUPLICATE_THRESHOLD) for text in texts]
        neardup.cluster(np.stack(keys))
        return len(texts)

    def each(fn: Callable[[str], object]) -> Callable[[], int]:
        def run() -> int:
            for text in texts:
                fn(text)
            return len(texts)

        return run

    stages: dict[str, Callable[[], int]] = {
        "normalize": each(normalize_text),
        "pii_scrub": each(scrub),
        "exact_hash": each(sha256_text),
        "language": language,
        "quality": lambda: sum(1 for d, t in docs if quality(t, d) is not None),
        "toxicity": toxicity,
        "near_duplicate": near_duplicate,
        "text_stats": each(text_stats),
        "pii_residue": each(residue),
    }
    detect_languages(["Warm-up: load the language models before timing."])
    toxicity_by_language(["Warm-up: load the classifier before timing."], ["en"])
    results: dict[str, Any] = {}
    for name, run in stages.items():
        gc.collect()
        started = time.perf_counter()
        try:
            n = run()
        except Exception as exc:  # an ingest rewrite may move a function; say so instead of failing the run
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        seconds = time.perf_counter() - started
        results[name] = {"docs": n, "seconds": seconds, "docs_per_s": n / seconds if seconds else None}
    # time per document of each stage over the total: which stage the ingest mostly waits for
    per_doc = {k: v["seconds"] / v["docs"] for k, v in results.items() if v.get("docs")}
    total = sum(per_doc.values())
    for name, value in per_doc.items():
        results[name]["share_of_time"] = value / total if total else None
    return {
        "description": "each ingest stage alone over the same ingested documents, single process, sequential",
        "docs": len(texts),
        "chars": sum(len(t) for t in texts),
        "stages": results,
    }


def _head_lines(path: Path, limit_bytes: float) -> Iterator[bytes]:
    size = 0
    with path.open("rb") as fh:
        for line in fh:
            if size >= limit_bytes:
                return
            size += len(line)
            yield line


def _ingest_copy(ingest_dir: Path, dest: Path, lines: list[bytes]) -> Path:
    """A folder that looks like an ingest output holding only `lines` of documents.jsonl (the report
    copied whole: pack reads its accounting, which then describes the full ingest)."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "documents.jsonl").write_bytes(b"".join(lines))
    shutil.copyfile(ingest_dir / "ingest_report.json", dest / "ingest_report.json")
    return dest


def bench_tokenize(ingest_dir: Path, work: Path, s: DataSettings) -> dict[str, Any]:
    """pack vs bare encode_batch, interleaved over chunks of the ingest output (see the module doc)."""
    from pharia.data.shards import ENCODE_BATCH, HQ_SPLIT, pack, tokenizers_parallelism
    from pharia.data.tokenizer import load_tokenizer, train_tokenizer

    cfg = ingest_config(work / "unused", s)
    docs = ingest_dir / "documents.jsonl"
    _log(f"tokenize: training a {s.vocab_size}-token BPE on {s.tokenizer_train_mb:g} MB of ingested documents")
    train_input = _ingest_copy(ingest_dir, work / "tokenizer-input", list(_head_lines(docs, s.tokenizer_train_mb * MB)))
    started = time.perf_counter()
    meta = train_tokenizer(train_input, cfg, work / "tokenizer")
    train_s = time.perf_counter() - started
    shutil.rmtree(train_input)

    lines = list(_head_lines(docs, s.tokenize_mb * MB))
    head = max(1, min(64, len(lines) // (s.rounds + 1)))
    warmup, lines = lines[:head], lines[head:]  # untimed: imports, thread pool, allocators
    per_round = max(1, len(lines) // s.rounds)
    chunks = [lines[r * per_round : (r + 1) * per_round] for r in range(s.rounds)]
    chunks = [c for c in chunks if c]
    units = [warmup, *chunks]
    unit_dirs = [_ingest_copy(ingest_dir, work / f"pack-input-{i}", unit) for i, unit in enumerate(units)]
    unit_texts = [[json.loads(line)["text"] for line in unit] for unit in units]
    del lines, chunks, units
    tokenizer = load_tokenizer(work / "tokenizer")

    def encode_batch(parallel: bool) -> Callable[[int], int]:
        def run(i: int) -> int:
            texts, tokens = unit_texts[i], 0
            with tokenizers_parallelism(parallel):
                for start in range(0, len(texts), ENCODE_BATCH):
                    tokens += sum(len(e.ids) for e in tokenizer.encode_batch(texts[start : start + ENCODE_BATCH]))
            return tokens

        return run

    def packer(i: int) -> int:
        manifest = pack(unit_dirs[i], work / "tokenizer", cfg, work / f"pack-output-{i}")
        # the hq split repeats train documents (pack writes them twice): count each document once
        splits = [entries for name, entries in manifest["splits"].items() if name != HQ_SPLIT]
        return sum(entry["tokens"] for entries in splits for entry in entries.values())

    # The baseline runs on all cores, as pack does (it enables tokenizers' thread pool for itself); the
    # single-thread run shows what that parallelism is worth on this machine.
    candidates: dict[str, Callable[[int], int]] = {
        "encode_batch": encode_batch(True),
        "pack": packer,
        "encode_batch_1_thread": encode_batch(False),
    }
    seconds: dict[str, list[float]] = {name: [] for name in candidates}
    tokens: dict[str, list[int]] = {name: [] for name in candidates}
    for fn in candidates.values():
        fn(0)
    shutil.rmtree(work / "pack-output-0")
    for r in range(1, len(unit_dirs)):
        order = list(candidates) if r % 2 else list(candidates)[::-1]
        for name in order:
            gc.collect()
            started = time.perf_counter()
            tokens[name].append(candidates[name](r))
            seconds[name].append(time.perf_counter() - started)
        shutil.rmtree(work / f"pack-output-{r}")
        _log(f"tokenize: round {r}/{len(unit_dirs) - 1} done")
    # Both candidates are credited with the same work: the text tokens encode_batch produced. pack's own
    # count adds what the packer inserts (an eos per document, domain tags if configured).
    work_tokens = tokens["encode_batch"]
    rates = {name: [w / t for w, t in zip(work_tokens, seconds[name], strict=True)] for name in candidates}
    summary: dict[str, Any] = {}
    for name in candidates:
        ratios = [c / b for c, b in zip(rates[name], rates["encode_batch"], strict=True)]
        summary[name] = {
            "median": statistics.median(rates[name]),
            "ratio": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "samples": len(ratios),
            "round_medians": rates[name],
            "tokens": sum(tokens[name]),
            "seconds": sum(seconds[name]),
        }
    n_docs = sum(len(t) for t in unit_texts[1:])
    for path in unit_dirs:
        shutil.rmtree(path)
    return {
        "description": "pharia.data.shards.pack (read documents.jsonl, encode, write the split shards and the hq "
        "subset, hash them) vs tokenizers encode_batch alone on the same documents with the same tokenizer",
        "metric": "tokens_per_s",
        "better": "higher",
        "baseline": "encode_batch",
        "ratio_definition": "median over rounds of pack tokens/s / encode_batch tokens/s on the same chunk, both "
        "crediting the text tokens encode_batch produced",
        "docs": n_docs,
        "chars": sum(len(t) for texts in unit_texts[1:] for t in texts),
        "text_tokens": sum(work_tokens),
        "pack_tokens": sum(tokens["pack"]),
        "pack_extra_tokens_per_doc": (sum(tokens["pack"]) - sum(work_tokens)) / n_docs if n_docs else None,
        "encode_batch_size": ENCODE_BATCH,
        "tokenizers_parallelism": {"encode_batch": True, "encode_batch_1_thread": False, "pack": "pack's own"},
        "tokenizer": {"vocab_size": meta.get("vocab_size"), "train_s": train_s, "trained_on": meta.get("trained_on")},
        "candidates": summary,
    }


def _free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def machine_info() -> dict[str, Any]:
    import psutil

    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_total_mb": psutil.virtual_memory().total / 2**20,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_avg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        from importlib.metadata import version

        info["tokenizers"] = version("tokenizers")
        info["pharia"] = version("pharia")
    except Exception:  # versions are context, never a reason to fail
        pass
    return info


def run_data_benchmarks(s: DataSettings) -> dict[str, Any]:
    """The whole data benchmark (see the module doc); returns the report section."""
    started = time.perf_counter()
    full_bytes = round(s.data_gb * GB)
    small_bytes = max(1, round(full_bytes * s.small_fraction))
    parent = Path(s.work_dir) if s.work_dir else Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    needed = 2.2 * full_bytes + DISK_MARGIN
    if _free_bytes(parent) < needed:
        raise SystemExit(
            f"data benchmark: {parent} has {_free_bytes(parent) / GB:.1f} GB free, needs ~{needed / GB:.1f} GB "
            f"(the corpus and its ingest output); pass --data-work-dir or a smaller --data-gb"
        )
    work = Path(tempfile.mkdtemp(prefix="pharia-data-bench-", dir=parent))
    _log(f"work folder {work} ({'kept' if s.keep else 'removed at the end'})")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        sizes: dict[str, Any] = {}
        small, small_out = bench_size("small", small_bytes, work, s)
        sizes["small"] = small
        rate = small["ingest"]["mb_per_s"]
        _log(
            f"full: at the small run's {rate:.2f} MB/s the {full_bytes / GB:g} GB ingest takes about "
            f"{full_bytes / MB / rate / 60:,.0f} min"
        )
        if not s.keep:
            shutil.rmtree(small_out)
        full, full_out = bench_size("full", full_bytes, work, s)
        sizes["full"] = full
        _log("per-stage breakdown ...")
        stages = bench_stages(full_out, s)
        tokenize = bench_tokenize(full_out, work, s)
    finally:
        if not s.keep:
            shutil.rmtree(work, ignore_errors=True)
    peak = {label: sizes[label]["ingest"]["peak_rss_mb"] for label in sizes}
    return {
        "schema": SCHEMA,
        "settings": asdict(s),
        "machine": machine_info(),
        "wall_s": time.perf_counter() - started,
        "sizes": sizes,
        "memory": {
            "peak_rss_mb": peak,
            "size_growth": sizes["full"]["corpus"]["bytes"] / sizes["small"]["corpus"]["bytes"],
            "rss_growth": peak["full"] / peak["small"],
            "note": "bounded memory: rss_growth stays near 1 while size_growth is large",
        },
        "stages": stages,
        "tokenize": tokenize,
        "accounting_ok": all(sizes[label]["ingest"]["accounting"]["ok"] for label in sizes),
    }


# ------------------------------------------------------------------------------ report
def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    sizes = result["sizes"]
    memory = result["memory"]
    table = Table(
        title=f"pharia data benchmark - {result['wall_s'] / 60:.1f} min, {result['machine']['cpus_usable']} CPUs",
        caption=(
            f"ingest: pharia.data.ingest in a child process; parse: bare json.loads of every line, another child. "
            f"Peak RSS grew {memory['rss_growth']:.2f}x for {memory['size_growth']:.1f}x the data."
        ),
    )
    table.add_column("", no_wrap=True)
    for label in sizes:
        table.add_column(label, justify="right", no_wrap=True)

    def row(name: str, fmt: Callable[[dict[str, Any]], str]) -> None:
        table.add_row(name, *(fmt(size) for size in sizes.values()))

    row("corpus", lambda z: f"{z['corpus']['bytes'] / MB:,.0f} MB, {z['corpus']['rows']:,} rows")
    row("generated at (pools built)", lambda z: f"{z['corpus']['mb_per_s']:,.0f} MB/s ({z['corpus']['pool_s']:.1f} s)")
    row("written at (pools ready)", lambda z: f"{z['corpus']['write_mb_per_s']:,.0f} MB/s")
    row("ingest wall", lambda z: f"{z['ingest']['wall_s']:,.1f} s")
    row("ingest docs/s", lambda z: f"{z['ingest']['docs_per_s']:,.0f}")
    row("ingest MB/s", lambda z: f"{z['ingest']['mb_per_s']:.2f}")
    row("ingest CPUs busy", lambda z: f"{z['ingest']['cpu_per_wall']:.2f}")
    row("peak RSS (wait4)", lambda z: f"{z['ingest']['peak_rss_mb']:,.0f} MB")
    row("peak RSS (tree, polled)", lambda z: f"{z['ingest']['peak_tree_rss_mb']:,.0f} MB")
    row("RSS after imports", lambda z: f"{z['ingest']['rss_after_import_mb']:,.0f} MB")
    row("kept", lambda z: f"{z['ingest']['kept']:,}")
    row("parse docs/s (baseline)", lambda z: f"{z['parse_baseline']['docs_per_s']:,.0f}")
    row("ingest / parse", lambda z: f"{z['ingest_vs_parse']:.4f}x")
    row("row accounting", lambda z: "ok" if z["ingest"]["accounting"]["ok"] else "MISMATCH")
    console.print(table)

    stages = Table(title=f"ingest stages alone ({result['stages']['docs']:,} ingested documents, one process)")
    stages.add_column("stage", no_wrap=True)
    stages.add_column("docs/s", justify="right", no_wrap=True)
    stages.add_column("share of time", justify="right", no_wrap=True)
    for name, stage in result["stages"]["stages"].items():
        if "error" in stage:
            stages.add_row(name, "error", stage["error"][:60])
        else:
            stages.add_row(name, f"{stage['docs_per_s']:,.0f}", f"{stage['share_of_time']:.0%}")
    console.print(stages)

    tok = result["tokenize"]
    table = Table(
        title=f"tokenisation: {tok['docs']:,} documents, {tok['text_tokens'] / 1e6:,.1f}M tokens, "
        f"vocab {tok['tokenizer']['vocab_size']}",
        caption="* baseline. ratio: median over interleaved rounds of tokens/s over the baseline's in the "
        "same round; range: lowest-highest round",
    )
    for column in ("candidate", "tokens/s", "ratio", "range", "n"):
        table.add_column(column, justify="right" if column != "candidate" else "left", no_wrap=True)
    for name, c in tok["candidates"].items():
        table.add_row(
            f"{name}*" if name == tok["baseline"] else name,
            f"{c['median'] / 1000:,.0f}k",
            f"{c['ratio']:.2f}x",
            f"{c['ratio_min']:.2f}-{c['ratio_max']:.2f}",
            str(c["samples"]),
        )
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_from(args, args.quick, args.seed)
    result = run_data_benchmarks(settings)
    result["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    from pharia.data.manifest import atomic_write_json

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result)
    print_table(result)
    print(f"report: {args.out}", file=sys.stderr)
    if not result["accounting_ok"]:
        print("row accounting does not match what the generator wrote: see sizes.*.ingest.accounting", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
