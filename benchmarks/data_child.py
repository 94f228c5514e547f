"""One measured job of the data benchmark, run in its own process so its peak RSS is its own.

Usage (by benchmarks/data_bench.py, not by hand): `data_child.py MODE SPEC.json RESULT.json`

  ingest  `pharia.data.ingest.ingest(DataConfig(**spec["config"]), spec["out_dir"])`: the stage
          exactly as `pharia data ingest` runs it. The timer covers the call only, not the
          interpreter start or the imports (recorded apart), so documents/s is the stage's own rate.
  parse   the bare baseline: every line of spec["files"] read in binary and `json.loads`-ed, the
          least any JSONL ingest must do, so ingest/parse shows what cleaning and dedup cost on top.

Why a child process: the parent's own memory (the generator's pools, earlier phases) would otherwise
hide the stage's, and the kernel's high-water mark of a fresh address space (VmHWM) is exact, where
polling can miss a short peak. The parent also polls the process tree.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from pharia.memory import peak_rss_bytes


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def run_ingest(spec: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    from pharia.config import DataConfig
    from pharia.data.ingest import ingest

    import_s = time.perf_counter() - started
    rss_import = _rss_mb()
    cfg = DataConfig.model_validate(spec["config"])
    started = time.perf_counter()
    report = ingest(cfg, Path(spec["out_dir"]), workers=int(spec.get("workers", 1)))
    wall = time.perf_counter() - started
    return {"wall_s": wall, "import_s": import_s, "rss_after_import_mb": rss_import, "report": report}


def run_parse(spec: dict[str, Any]) -> dict[str, Any]:
    rows = bad = size = 0
    rss_import = _rss_mb()
    started = time.perf_counter()
    for name in spec["files"]:
        with open(name, "rb") as fh:
            for line in fh:
                size += len(line)
                if not line.strip():
                    continue
                rows += 1
                try:
                    obj = json.loads(line)
                except ValueError:  # malformed JSON and invalid UTF-8 alike
                    bad += 1
                    continue
                if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                    bad += 1
    wall = time.perf_counter() - started
    return {
        "wall_s": wall,
        "import_s": 0.0,
        "rss_after_import_mb": rss_import,
        "rows": rows,
        "bad_rows": bad,
        "bytes": size,
    }


def main(argv: list[str]) -> int:
    mode, spec_path, result_path = argv
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    result = {"ingest": run_ingest, "parse": run_parse}[mode](spec)
    result["self_maxrss_mb"] = peak_rss_bytes() / 2**20  # VmHWM: this program's own peak (pharia.memory)
    Path(result_path).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
