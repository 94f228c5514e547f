"""Validation stage: a Great Expectations suite over the per-document statistics of an ingest.

Three small tables are validated, each with its own suite, in one FILE data context persisted at
`out_dir/gx/` so the suites, results and Data Docs stay inspectable next to `validation.json`:

- `document_stats` (stats.parquet): row count, non-null keys, length bounds, toxicity bound,
  domain and split values, language in the allowed set (or `code` for the code domain), quality
  score at or above the filter's threshold, zero PII residue after scrubbing, duplicate rate, unique doc ids;
- `domain_shares` (derived, one row per configured domain): |achieved - target| share within the
  tolerance, achieved counted in characters of kept documents;
- `row_accounting` (derived from ingest_report.json, one row per source): rows_in equals
  kept + filtered + quarantined.

A failed suite still publishes the complete report and Data Docs, then raises DataValidationError
whose one-line message names the failed expectations and the Data Docs page.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pharia.classifiers.language import CODE
from pharia.config import DataConfig
from pharia.data.manifest import atomic_dir, atomic_write_json, sha256_file
from pharia.errors import DataError, DataValidationError

# The DataConfig fields this stage reads (its DVC params): thresholds, domains and targets, length bounds.
VALIDATE_FIELDS = (
    "validation",
    "sources",
    "min_doc_chars",
    "max_doc_chars",
    "allowed_languages",
    "quality_threshold",
)
KEY_COLUMNS = ("doc_id", "source", "domain", "split", "n_chars", "language", "quality", "toxicity", "sha256")
SPLITS = ("train", "validation", "heldout")
DOCS_SITE = Path("gx/uncommitted/data_docs/local_site")
SHOWN_VALUES = 5


def _load_inputs(ingest_dir: Path) -> tuple[Any, dict[str, Any]]:
    import pandas as pd

    stats_path, report_path = ingest_dir / "stats.parquet", ingest_dir / "ingest_report.json"
    for path in (stats_path, report_path):
        if not path.is_file():
            raise DataError(f"{path} not found: expected the output of `pharia data ingest`")
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
        sources = report["sources"]
    except (ValueError, KeyError) as exc:
        raise DataError(f"{report_path}: not an ingest report ({exc})") from None
    return pd.read_parquet(stats_path), sources


def share_table(stats: Any, cfg: DataConfig) -> Any:
    """One row per configured domain: target share, achieved share (characters) and deviation."""
    import pandas as pd

    chars = stats.groupby("domain")["n_chars"].sum()
    total = float(chars.sum())
    rows = []
    for domain, target in cfg.domain_targets().items():
        achieved = float(chars.get(domain, 0)) / total if total else 0.0
        rows.append({"domain": domain, "target": target, "achieved": achieved, "deviation": abs(achieved - target)})
    return pd.DataFrame(rows, columns=["domain", "target", "achieved", "deviation"])


def accounting_table(sources: dict[str, Any]) -> Any:
    """One row per source: rows_in and the sum of what the ingest says happened to them."""
    import pandas as pd

    rows = [
        {
            "source": name,
            "rows_in": int(entry["rows_in"]),
            "accounted": int(entry["kept"]) + sum(entry["filtered"].values()) + sum(entry["quarantined"].values()),
        }
        for name, entry in sources.items()
    ]
    return pd.DataFrame(rows, columns=["source", "rows_in", "accounted"])


def _suites(cfg: DataConfig) -> dict[str, list[Any]]:
    import great_expectations.expectations as gxe

    v = cfg.validation
    low, high = max(cfg.min_doc_chars, v.min_chars), min(cfg.max_doc_chars, v.max_chars)
    return {
        "document_stats": [
            gxe.ExpectTableRowCountToBeBetween(min_value=v.min_rows),
            *(gxe.ExpectColumnValuesToNotBeNull(column=c) for c in KEY_COLUMNS),
            gxe.ExpectColumnValuesToBeBetween(column="n_chars", min_value=low, max_value=high),
            gxe.ExpectColumnValuesToBeBetween(column="toxicity", min_value=0.0, max_value=v.max_toxicity),
            gxe.ExpectColumnValuesToBeInSet(column="domain", value_set=sorted(cfg.domain_targets())),
            gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
            gxe.ExpectColumnValuesToBeInSet(column="language", value_set=sorted({*cfg.allowed_languages, CODE})),
            gxe.ExpectColumnValuesToBeBetween(column="quality", min_value=cfg.quality_threshold, max_value=1.0),
            gxe.ExpectColumnValuesToBeBetween(column="pii_residue", min_value=0, max_value=0),
            gxe.ExpectColumnMeanToBeBetween(column="is_duplicate", min_value=0.0, max_value=v.max_duplicate_rate),
            gxe.ExpectColumnValuesToBeUnique(column="doc_id"),
        ],
        "domain_shares": [
            gxe.ExpectColumnValuesToBeBetween(column="deviation", min_value=0.0, max_value=v.domain_share_tolerance),
        ],
        "row_accounting": [
            gxe.ExpectColumnPairValuesToBeEqual(column_A="rows_in", column_B="accounted"),
        ],
    }


INDEX_COLUMN = {"document_stats": "doc_id", "domain_shares": "domain", "row_accounting": "source"}


def _observed(result: dict[str, Any]) -> Any:
    """The evidence of a failed expectation, short enough for a JSON report and a one-line error."""
    if "observed_value" in result:
        return result["observed_value"]
    observed: dict[str, Any] = {"unexpected_count": result.get("unexpected_count")}
    index = result.get("partial_unexpected_index_list") or []
    if index and isinstance(index[0], dict):
        observed["unexpected"] = index[:SHOWN_VALUES]
    else:
        observed["unexpected"] = (result.get("partial_unexpected_list") or [])[:SHOWN_VALUES]
    return observed


def _expectation_name(config: Any) -> str:
    kwargs = config.kwargs
    column = kwargs.get("column") or (f"{kwargs['column_A']},{kwargs['column_B']}" if "column_A" in kwargs else None)
    return f"{config.type}({column})" if column else config.type


def _run_gx(root: Path, cfg: DataConfig, frames: dict[str, Any]) -> list[dict[str, Any]]:
    """Build the file context under `root/gx`, run every suite, build Data Docs; one row per expectation."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=str(root))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    context.variables.save()
    datasource = context.data_sources.add_pandas("pharia")
    outcomes: list[dict[str, Any]] = []
    for name, expectations in _suites(cfg).items():
        batch = datasource.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
        suite = context.suites.add(gx.ExpectationSuite(name=name))
        for expectation in expectations:
            suite.add_expectation(expectation)
        definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
        result_format = {"result_format": "SUMMARY", "unexpected_index_column_names": [INDEX_COLUMN[name]]}
        run = definition.run(batch_parameters={"dataframe": frames[name]}, result_format=result_format)
        for item in run.results:
            outcomes.append(
                {
                    "suite": name,
                    "expectation": _expectation_name(item.expectation_config),
                    "success": bool(item.success),
                    "observed": _observed(item.result),
                }
            )
    context.build_data_docs()
    return outcomes


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def validate(ingest_dir: Path, cfg: DataConfig, out_dir: Path) -> dict[str, Any]:
    """Run the suites over `ingest_dir`, publish `out_dir` (gx/ + validation.json) atomically and
    return the summary; raise DataValidationError after publishing when an expectation failed."""
    ingest_dir, out_dir = Path(ingest_dir), Path(out_dir).absolute()
    stats, sources = _load_inputs(ingest_dir)
    frames = {
        "document_stats": stats,
        "domain_shares": share_table(stats, cfg),
        "row_accounting": accounting_table(sources),
    }
    with atomic_dir(out_dir) as tmp:
        outcomes = _jsonable(_run_gx(tmp, cfg, frames))
        results = tmp / DOCS_SITE / "validations"  # validations/<suite>/<run>/<time>/<batch>.html
        pages = {
            page.relative_to(results).parts[0]: str(out_dir / page.relative_to(tmp))
            for page in sorted(results.rglob("*.html"))
        }
        failed = [o for o in outcomes if not o["success"]]
        summary = {
            "success": not failed,
            "evaluated": len(outcomes),
            "successful": len(outcomes) - len(failed),
            "failed": [{k: o[k] for k in ("suite", "expectation", "observed")} for o in failed],
            "data_docs": str(out_dir / DOCS_SITE / "index.html"),
            "pages": pages,
            "stats_sha256": sha256_file(ingest_dir / "stats.parquet"),
            "domain_shares": _jsonable(frames["domain_shares"].round(6).to_dict(orient="records")),
            "expectations": outcomes,
        }
        atomic_write_json(tmp / "validation.json", summary)
    if failed:
        raise DataValidationError(failure_message(summary))
    return summary


def failure_message(summary: dict[str, Any]) -> str:
    """One line: how many failed, which (with observed values) and where the Data Docs are."""
    parts = [f"{f['expectation']} observed {json.dumps(f['observed'], ensure_ascii=False)}" for f in summary["failed"]]
    return (
        f"data validation failed: {len(summary['failed'])} of {summary['evaluated']} expectations failed: "
        f"{'; '.join(parts)}. Data Docs: {summary['data_docs']}"
    )
