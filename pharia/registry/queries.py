"""Read side of the registry for the dashboard and the CLI: models, runs, metric histories and
compliance dossiers, returned as plain rows that any table or chart can show.

Nothing here writes to MLflow. That includes not creating a store: opening a missing SQLite file
with `MlflowClient` would create and migrate a fresh database (seconds, and a file the user did not
ask for), so a missing workspace database reads as "nothing registered yet" instead.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pharia.config import RegistryConfig
from pharia.errors import PhariaError
from pharia.registry.tracking import resolve_tracking_uri
from pharia.workspace import Workspace

REPORT_DIR = "compliance"
REPORT_JSON = "compliance.json"
REPORT_MD = "compliance.md"
REPORT_SCHEMA_PREFIX = "pharia.compliance/"
VERDICT_TAG = "compliance_verdict"
REPORT_TAG = "compliance_report"
LINEAGE_TAGS = ("data_manifest_sha256", "git_commit", "config_hash")
# Columns the runs table shows; the full params/metrics stay on each row for detail views.
KEY_PARAMS = ("train.max_steps", "train.zero_stage", "train.precision", "model.d_model", "model.n_layers")
KEY_METRICS = ("train_loss", "eval_ppl_overall", "eval_mc_mean_acc", "eval_rtp_toxicity_probability", "tokens_per_s")
DOMAIN_PPL_PREFIX = "eval_ppl_"
_NOT_DOMAINS = ("overall", "worst_domain")
# The trainer's nested run per stage (pharia.train.runs): MLflow's parent link plus pharia's own tags.
PARENT_TAG = "mlflow.parentRunId"
STAGE_TAG = "pharia.stage"
STAGE_KIND_TAG = "pharia.stage_kind"
# `<index>-<stage>`: the trainer names stage runs by their 1-based position in the pipeline.
_STAGE_INDEX = re.compile(r"^(\d+)-")
# Ethics and stability counters a stage run may log, with the column each gets. Counters ending in
# `_total` are cumulative over the stage; the others are the value at the stage's last log step.
ETHICS_COUNTERS = {
    "filter_windows_flagged_total": "filter: windows flagged",
    "filter_tokens_masked_total": "filter: tokens masked",
    "adv_clean_gap": "adversarial: clean gap",
    "fair_gap": "fairness: gap",
    "fair_penalty": "fairness: penalty",
    "nonfinite_steps_total": "non-finite steps",
    "skipped_steps_total": "skipped steps",
}


class ReportUnavailable(PhariaError):
    """A model version has no readable compliance dossier; the message says where we looked."""


# ------------------------------------------------------------------------------------ rows
@dataclass(frozen=True)
class ModelSummary:
    name: str
    description: str
    aliases: dict[str, str]
    latest_version: str | None
    n_versions: int
    created_at: dt.datetime | None
    updated_at: dt.datetime | None

    def record(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "latest version": self.latest_version,
            "versions": self.n_versions,
            "aliases": _aliases_text(self.aliases),
            "updated": self.updated_at,
            "description": self.description,
        }


@dataclass(frozen=True)
class VersionRow:
    name: str
    version: str
    aliases: tuple[str, ...]
    run_id: str | None
    status: str
    created_at: dt.datetime | None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def verdict(self) -> str | None:
        return self.tags.get(VERDICT_TAG)

    def record(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "version": self.version,
            "aliases": ", ".join(self.aliases),
            "verdict": self.verdict or "-",
            "status": self.status,
            "created": self.created_at,
            "run id": self.run_id or "-",
            **{tag: self.tags.get(tag, "-") for tag in LINEAGE_TAGS},
        }


@dataclass(frozen=True)
class RunRow:
    run_id: str
    run_name: str
    status: str
    start_time: dt.datetime | None
    end_time: dt.datetime | None
    pipeline: str | None
    params: dict[str, str]
    metrics: dict[str, float]
    # Set on a training stage's nested run only; a pipeline (parent) run leaves them None.
    stage: str | None = None
    stage_kind: str | None = None
    parent_run_id: str | None = None

    @property
    def duration_s(self) -> float | None:
        if self.start_time is None or self.end_time is None:
            return None
        return (self.end_time - self.start_time).total_seconds()

    @property
    def evaluation(self) -> dict[str, float]:
        """Metrics logged once by the evaluation stage (`eval_*`)."""
        return {k: v for k, v in sorted(self.metrics.items()) if k.startswith("eval_")}

    def label(self) -> str:
        started = self.start_time.strftime("%Y-%m-%d %H:%M") if self.start_time else "not started"
        return f"{self.run_name} · {self.run_id[:8]} · {started} · {self.status}"

    def record(self, params: tuple[str, ...] = KEY_PARAMS, metrics: tuple[str, ...] = KEY_METRICS) -> dict[str, Any]:
        return {
            "run": self.run_name,
            "run id": self.run_id,
            "status": self.status,
            "started": self.start_time,
            "duration s": None if self.duration_s is None else round(self.duration_s, 1),
            "pipeline": self.pipeline or "-",
            **{p: self.params.get(p) for p in params},
            **{m: self.metrics.get(m) for m in metrics},
        }

    def stage_record(self) -> dict[str, Any]:
        """One row of a pipeline's stages table, from the params the trainer logs on each stage run."""
        p = self.params
        micro, accum = p.get("batch.micro_batch_size"), p.get("batch.grad_accum_steps")
        return {
            "stage": self.stage or self.run_name,
            "kind": self.stage_kind or p.get("kind") or "-",
            "split": p.get("split", "-"),
            "steps": _as_int(p.get("schedule.max_steps")),
            "lr": _as_float(p.get("schedule.lr")),
            "micro-batch × accumulation": f"{micro} × {accum}" if micro and accum else "-",
            "final train_loss": self.metrics.get("train_loss"),
            "world size": _as_int(p.get("world_size")),
            "ZeRO stage": _as_int(p.get("zero_stage")),
            "precision": p.get("precision", "-"),
            "status": self.status,
        }


@dataclass(frozen=True)
class MetricPoint:
    key: str
    step: int
    value: float
    timestamp: dt.datetime


@dataclass(frozen=True)
class ComplianceReport:
    """A dossier as stored: the parsed JSON, the Markdown next to it, and where both came from."""

    data: dict[str, Any]
    markdown: str | None
    source: str

    @property
    def verdict(self) -> str:
        return str(self.data.get("verdict", "unknown"))

    def json_text(self) -> str:
        return json.dumps(self.data, indent=2, ensure_ascii=False)


# ------------------------------------------------------------------------------ resolution
def default_tracking_uri() -> str:
    """Same rule as the pipeline: $MLFLOW_TRACKING_URI, else the workspace's SQLite database."""
    return resolve_tracking_uri(RegistryConfig(), Workspace.from_env())


def display_uri(tracking_uri: str) -> str:
    """The URI without user info or query string, safe to show on screen or in logs."""
    parts = urllib.parse.urlsplit(tracking_uri)
    if parts.scheme in ("http", "https"):
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return tracking_uri.split("?", 1)[0]


def store_exists(tracking_uri: str) -> bool:
    """False for a SQLite URI whose file is missing (reading must not create it); True otherwise."""
    if tracking_uri.startswith("sqlite:///"):
        path = tracking_uri.removeprefix("sqlite:///").split("?", 1)[0]
        return Path(path).is_file()
    return True


def _client(tracking_uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _when(ms: int | None) -> dt.datetime | None:
    return None if not ms else dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def _aliases_text(aliases: dict[str, str]) -> str:
    return ", ".join(f"{alias} → v{version}" for alias, version in sorted(aliases.items()))


# --------------------------------------------------------------------------------- models
def list_models(tracking_uri: str) -> list[ModelSummary]:
    """Registered models with their aliases and newest version, most recently updated first."""
    if not store_exists(tracking_uri):
        return []
    client = _client(tracking_uri)
    summaries = []
    for model in client.search_registered_models(max_results=1000):
        versions = [int(v.version) for v in client.search_model_versions(f"name = '{_quote(model.name)}'")]
        aliases = {a: str(v) for a, v in _model_aliases(model).items()}
        summaries.append(
            ModelSummary(
                name=model.name,
                description=model.description or "",
                aliases=aliases,
                latest_version=str(max(versions)) if versions else None,
                n_versions=len(versions),
                created_at=_when(model.creation_timestamp),
                updated_at=_when(model.last_updated_timestamp),
            )
        )
    return sorted(summaries, key=lambda s: s.updated_at or dt.datetime.min.replace(tzinfo=dt.UTC), reverse=True)


def list_versions(tracking_uri: str, name: str) -> list[VersionRow]:
    """Every version of one model, newest first, with aliases, run id and its tags.

    Version search results do not carry aliases (MLflow fills them only on `get_model_version`), so
    they come from the registered model's alias map: one call instead of one per version.
    """
    if not store_exists(tracking_uri):
        return []
    client = _client(tracking_uri)
    by_version: dict[str, list[str]] = {}
    for alias, version in _model_aliases(client.get_registered_model(name)).items():
        by_version.setdefault(str(version), []).append(alias)
    rows = [
        VersionRow(
            name=v.name,
            version=str(v.version),
            aliases=tuple(sorted(by_version.get(str(v.version), []))),
            run_id=v.run_id or None,
            status=str(v.status),
            created_at=_when(v.creation_timestamp),
            tags=dict(v.tags or {}),
        )
        for v in client.search_model_versions(f"name = '{_quote(name)}'", max_results=10_000)
    ]
    return sorted(rows, key=lambda r: int(r.version), reverse=True)


def _model_aliases(model: Any) -> dict[str, str]:
    aliases = model.aliases or {}
    if isinstance(aliases, dict):
        return aliases
    return {a.alias: a.version for a in aliases}  # protobuf-shaped entries from older servers


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


# ----------------------------------------------------------------------------------- runs
def list_experiments(tracking_uri: str) -> list[str]:
    """Names of active experiments, for choosing which one's runs to show."""
    if not store_exists(tracking_uri):
        return []
    return sorted(e.name for e in _client(tracking_uri).search_experiments())


def list_runs(tracking_uri: str, experiment: str, max_results: int = 200, include_stages: bool = False) -> list[RunRow]:
    """Runs of one experiment, newest first; empty when the experiment does not exist yet.

    A staged training job writes one nested run per stage next to its pipeline run; listed side by
    side they would read as separate pipelines, so nested runs are left out unless asked for (see
    `stage_runs`). The filter runs in the store, so stage runs do not use up `max_results`.
    """
    if not store_exists(tracking_uri):
        return []
    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string="" if include_stages else f"tags.`{PARENT_TAG}` IS NULL",
        order_by=["attributes.start_time DESC"],
        max_results=max_results,
    )
    return [_run_row(run) for run in runs]


def stage_runs(tracking_uri: str, parent_run_id: str) -> list[RunRow]:
    """The training stages nested under one run, in pipeline order; empty for a run without stages.

    Order comes from the `<index>-` prefix the trainer gives each stage run's name, not from start
    times alone: a stage re-run after a failure starts later than the stages after it may have.
    Runs without the prefix follow, by start time.
    """
    if not store_exists(tracking_uri):
        return []
    client = _client(tracking_uri)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{_quote(parent_run_id)}'",
        max_results=1000,
    )
    return sorted((_run_row(run) for run in runs), key=_stage_order)


def _stage_order(row: RunRow) -> tuple[int, int, float, str]:
    match = _STAGE_INDEX.match(row.run_name)
    started = row.start_time.timestamp() if row.start_time else float("inf")
    return (0, int(match.group(1)), started, row.run_id) if match else (1, 0, started, row.run_id)


def get_run(tracking_uri: str, run_id: str) -> RunRow:
    return _run_row(_client(tracking_uri).get_run(run_id))


def _run_row(run: Any) -> RunRow:
    info, data = run.info, run.data
    return RunRow(
        run_id=info.run_id,
        run_name=info.run_name or data.tags.get("mlflow.runName", info.run_id[:8]),
        status=str(info.status),
        start_time=_when(info.start_time),
        end_time=_when(info.end_time),
        pipeline=data.tags.get("pharia.pipeline"),
        params=dict(data.params),
        metrics={k: float(v) for k, v in data.metrics.items()},
        stage=data.tags.get(STAGE_TAG),
        stage_kind=data.tags.get(STAGE_KIND_TAG),
        parent_run_id=data.tags.get(PARENT_TAG),
    )


def ethics_rows(stages: list[RunRow]) -> list[dict[str, Any]]:
    """The ethics and stability counters (`ETHICS_COUNTERS`) of a pipeline's stages: one row per
    counter, one column per stage, so the table stays narrow however many counters are on.
    Only counters some stage logged get a row: a pipeline without, say, the fairness objective
    shows no empty fairness rows. Empty when no stage logged any of them."""
    columns = _stage_columns(stages)
    return [
        {"counter": label, **{column: s.metrics.get(key) for column, s in zip(columns, stages, strict=True)}}
        for key, label in ETHICS_COUNTERS.items()
        if any(key in s.metrics for s in stages)
    ]


def _stage_columns(stages: list[RunRow]) -> list[str]:
    """Column names for stages: the stage name, plus the run id where a stage was run twice under
    one parent (a stage directory wiped and trained again), so no column silently replaces another."""
    names = [s.stage or s.run_name for s in stages]
    return [
        name if names.count(name) == 1 else f"{name} ({s.run_id[:8]})" for name, s in zip(names, stages, strict=True)
    ]


def _as_int(value: str | None) -> int | None:
    try:
        return None if value is None else int(float(value))
    except ValueError:
        return None


def _as_float(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


def metric_history(tracking_uri: str, run_id: str, keys: tuple[str, ...] = ("train_loss", "lr")) -> list[MetricPoint]:
    """Every logged point of the given metrics, ordered by key then step (one chart series each)."""
    client = _client(tracking_uri)
    points = [
        MetricPoint(key=m.key, step=int(m.step), value=float(m.value), timestamp=_when(m.timestamp) or _epoch())
        for key in keys
        for m in client.get_metric_history(run_id, key)
    ]
    return sorted(points, key=lambda p: (p.key, p.step, p.timestamp))


def _epoch() -> dt.datetime:
    return dt.datetime.fromtimestamp(0, tz=dt.UTC)


def domain_perplexities(metrics: dict[str, float]) -> dict[str, float]:
    """`eval_ppl_<domain>` → {domain: perplexity}, without the aggregate entries."""
    out = {}
    for key, value in metrics.items():
        if key.startswith(DOMAIN_PPL_PREFIX):
            domain = key.removeprefix(DOMAIN_PPL_PREFIX)
            if domain not in _NOT_DOMAINS:
                out[domain] = value
    return dict(sorted(out.items()))


# ----------------------------------------------------------------------------- compliance
def load_compliance_report(tracking_uri: str, name: str, version: str) -> ComplianceReport:
    """The dossier of one model version: the run's `compliance/` artifacts, else the local file the
    version's `compliance_report` tag names (reports written before the artifacts were logged, or
    a store whose artifacts are not reachable from here)."""
    client = _client(tracking_uri)
    mv = client.get_model_version(name, version)
    tried: list[str] = []
    if mv.run_id:
        report = _report_from_run(client, mv.run_id, tried)
        if report is not None:
            return report
    tag_path = (mv.tags or {}).get(REPORT_TAG)
    if tag_path:
        report = _report_from_file(Path(tag_path), tried)
        if report is not None:
            return report
    else:
        tried.append(f"no '{REPORT_TAG}' tag on the version")
    raise ReportUnavailable(f"no compliance report for {name} version {version}: " + "; ".join(tried))


def _report_from_run(client: Any, run_id: str, tried: list[str]) -> ComplianceReport | None:
    from mlflow.exceptions import MlflowException

    artifact = f"{REPORT_DIR}/{REPORT_JSON}"
    with tempfile.TemporaryDirectory(prefix="pharia-report-") as tmp:
        try:
            json_file = Path(client.download_artifacts(run_id, artifact, tmp))
        except (MlflowException, OSError) as exc:
            tried.append(f"run {run_id} artifact {artifact}: {_first_line(exc)}")
            return None
        try:
            md_text: str | None = Path(client.download_artifacts(run_id, f"{REPORT_DIR}/{REPORT_MD}", tmp)).read_text(
                encoding="utf-8"
            )
        except (MlflowException, OSError):
            md_text = None
        data = _parse(json_file.read_text(encoding="utf-8"), f"runs:/{run_id}/{artifact}")
    return ComplianceReport(data=data, markdown=md_text, source=f"runs:/{run_id}/{artifact}")


def _report_from_file(path: Path, tried: list[str]) -> ComplianceReport | None:
    # A tag is free text anyone with write access can set: read only a file that is a dossier by name.
    if path.name != REPORT_JSON or not path.is_absolute():
        tried.append(f"tag '{REPORT_TAG}' is not an absolute path to {REPORT_JSON}: {path}")
        return None
    if not path.is_file():
        tried.append(f"{path} does not exist on this machine")
        return None
    md_path = path.with_name(REPORT_MD)
    markdown = md_path.read_text(encoding="utf-8") if md_path.is_file() else None
    return ComplianceReport(
        data=_parse(path.read_text(encoding="utf-8"), str(path)), markdown=markdown, source=str(path)
    )


def _parse(text: str, origin: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportUnavailable(f"{origin} is not valid JSON: {exc}") from None
    schema = data.get("schema", "") if isinstance(data, dict) else ""
    if not str(schema).startswith(REPORT_SCHEMA_PREFIX):
        raise ReportUnavailable(f"{origin} is not a pharia compliance report (schema {schema!r})")
    return data


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# Report → table rows. The dossier's shape is `pharia.compliance/v1`; missing parts read as empty
# so an older or partial report still renders what it has.
def requirement_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "id": r.get("id", "?"),
            "requirement": r.get("title", ""),
            "category": r.get("category", ""),
            "EU AI Act": ", ".join(r.get("articles", [])),
            "status": r.get("status", "not_evaluated"),
            "evidence": " · ".join(r.get("evidence", [])),
        }
        for r in report.get("requirements", [])
    ]


def status_counts(report: dict[str, Any]) -> dict[str, int]:
    counts = {"pass": 0, "fail": 0, "not_evaluated": 0}
    for r in report.get("requirements", []):
        status = r.get("status", "not_evaluated")
        counts[status] = counts.get(status, 0) + 1
    return counts


def domain_share_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Long format (domain, share kind, value): one bar per target and per achieved share."""
    shares = report.get("data", {}).get("domain_shares", {})
    return [
        {"domain": domain, "share": kind, "value": float(entry.get(kind, 0.0))}
        for domain, entry in sorted(shares.items())
        for kind in ("target", "achieved")
    ]


def source_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for s in report.get("data", {}).get("sources", []):
        filtered, quarantined = s.get("filtered", {}) or {}, s.get("quarantined", {}) or {}
        rows.append(
            {
                "source": s.get("name"),
                "domain": s.get("domain"),
                "licence": s.get("license"),
                "rows in": s.get("rows_in"),
                "kept": s.get("kept"),
                "filtered": sum(filtered.values()),
                "quarantined": sum(quarantined.values()),
                "why": _reasons(filtered, quarantined),
            }
        )
    return rows


def _reasons(filtered: dict[str, int], quarantined: dict[str, int]) -> str:
    parts = [f"{k} {v}" for k, v in sorted(filtered.items()) if v]
    parts += [f"quarantined: {k} {v}" for k, v in sorted(quarantined.items()) if v]
    return ", ".join(parts) or "-"


def summary_rows(section: dict[str, Any]) -> list[dict[str, str]]:
    """A flat mapping (lineage, training summary) as two-column rows; values as text for one column type.
    Nested values (the mixture, the stages) are left to tables of their own."""
    return [
        {"field": k, "value": "-" if v is None else str(v)}
        for k, v in section.items()
        if not isinstance(v, dict | list)
    ]


def dossier_stage_rows(training: dict[str, Any]) -> list[dict[str, Any]]:
    """The dossier's training stages as table rows: what each trained on, how long, and what the
    in-training filter and ethics terms counted."""
    rows = []
    for stage in training.get("stages") or []:
        counters = stage.get("counters") or {}
        rows.append(
            {
                "stage": stage["stage"],
                "kind": stage.get("kind"),
                "data": stage.get("split"),
                "steps": stage.get("steps"),
                "lr": (stage.get("schedule") or {}).get("lr"),
                "first loss": stage.get("first_loss"),
                "final loss": stage.get("final_loss"),
                "non-finite steps": stage.get("nonfinite_steps"),
                **{k: v for k, v in sorted(counters.items())},
            }
        )
    return rows


def evaluation_rows(evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    """The dossier's evaluation as rows (category, metric, value, n), by category then name; dossiers
    written before entries were recorded fall back to bare metric values."""
    entries = evaluation.get("entries") or [
        {"name": k, "category": "", "value": v, "n": None} for k, v in (evaluation.get("metrics") or {}).items()
    ]
    rows = [{"category": e["category"], "metric": e["name"], "value": e["value"], "n": e["n"]} for e in entries]
    rows += [
        {"category": "not evaluated", "metric": task, "value": None, "n": None, "why": why}
        for task, why in sorted((evaluation.get("not_evaluated") or {}).items())
    ]
    return sorted(rows, key=lambda r: (r["category"] == "not evaluated", r["category"], r["metric"]))


def evaluation_stage_rows(evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    """Long-form (stage, metric, value) rows of every stage's full evaluation, in training order:
    the input of the dashboard's "how did the metrics move through training" chart."""
    return [
        {"stage": stage, "order": i, "metric": name, "value": value}
        for i, (stage, metrics) in enumerate((evaluation.get("stages") or {}).items())
        for name, value in sorted(metrics.items())
        if value is not None
    ]
