"""The compliance dossier of one model version: what data went in and how it was filtered and
validated, how the model was trained, how it scored, which requirements it meets, and who approved
it. Written as JSON (for machines: registration, the dashboard) and Markdown (for auditors)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from pharia.compliance.requirements import FAIL, NOT_EVALUATED, PASS, assess
from pharia.config import PipelineConfig
from pharia.data.manifest import atomic_write_json, atomic_write_text

SCHEMA = "pharia.compliance/v1"
TRAINING_KEYS = (
    "steps",
    "final_loss",
    "first_loss",
    "tokens_seen",
    "tokens_per_s",
    "zero_stage",
    "world_size",
    "precision",
    "device",
    "wall_s",
    "params_total",
    "params_unique",
    "deepspeed_version",
    "torch_version",
    "mixture",
)
STAGE_KEYS = (
    "kind",
    "split",
    "steps",
    "tokens_seen",
    "first_loss",
    "final_loss",
    "schedule",
    "counters",
    "nonfinite_steps",
)


def training_evidence(training: dict) -> dict:
    """The run-level training facts plus, per stage in order, what it trained on, how long, with
    which schedule, and what the in-training filters and ethics terms counted."""
    evidence = {k: training.get(k) for k in TRAINING_KEYS}
    stages = training.get("stages") or {}
    evidence["stages"] = [
        {"stage": name, **{k: stages[name].get(k) for k in STAGE_KEYS}} for name in training.get("stage_order", [])
    ]
    return evidence


def data_evidence(cfg: PipelineConfig, shards_manifest: dict) -> dict:
    """Per-source accounting, mixture shares and validation summary from the shard manifest."""
    licences = {s.name: s.license for s in cfg.data.sources}
    per_source = shards_manifest["ingest"]["sources"]
    sources = [
        {
            "name": name,
            "domain": row["domain"],
            "license": licences.get(name, "unknown"),
            "rows_in": row["rows_in"],
            "kept": row["kept"],
            "filtered": row["filtered"],
            "quarantined": row["quarantined"],
        }
        for name, row in sorted(per_source.items())
    ]
    return {
        "sources": sources,
        "domain_shares": shards_manifest["domain_shares"],
        "validation": shards_manifest["validation"],
        "tokens": {
            split: {d: e["tokens"] for d, e in domains.items()} for split, domains in shards_manifest["splits"].items()
        },
    }


INCOMPLETE = "incomplete"


def verdict_of(requirements: list[dict], gates: dict | None) -> str:
    """fail when any requirement fails; incomplete when a requirement that has gates configured was
    not evaluated (a metric missing from the suite never counts as met); pass otherwise.
    Requirements no gate names stay "not evaluated" in the table without blocking the verdict."""
    if any(r["status"] == FAIL for r in requirements):
        return FAIL
    gated = {r["id"] for r in (gates or {}).get("requirements", []) if r.get("gates")}
    if any(r["id"] in gated and r["status"] == NOT_EVALUATED for r in requirements):
        return INCOMPLETE
    return PASS


def build_report(
    cfg: PipelineConfig,
    *,
    model: dict,
    lineage: dict,
    shards_manifest: dict,
    training: dict,
    evaluation: dict,
) -> dict:
    evidence = {
        "data": data_evidence(cfg, shards_manifest),
        "training": training_evidence(training),
        "evaluation": {
            "metrics": evaluation["metrics"],
            "reproducibility": evaluation.get("reproducibility", {}),
            "gates": evaluation.get("gates"),
            "entries": evaluation.get("entries", []),
            "not_evaluated": evaluation.get("skipped", {}),
            "stages": evaluation.get("stages", {}),
        },
        "lineage": lineage,
    }
    requirements = assess(evidence, cfg.gates, cfg.data.validation)
    counts = {s: sum(r["status"] == s for r in requirements) for s in (PASS, FAIL, NOT_EVALUATED)}
    return {
        "schema": SCHEMA,
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "model": model,
        **evidence,
        "gates": cfg.gates.model_dump(mode="json"),
        "requirements": requirements,
        "summary": counts,
        "coverage": f"{counts[PASS] + counts[FAIL]} of {len(requirements)} requirements evaluated",
        "approvals": [],
        "verdict": verdict_of(requirements, evidence["evaluation"].get("gates")),
    }


def render_markdown(report: dict) -> str:
    m, lin = report["model"], report["lineage"]
    icon = {PASS: "PASS", FAIL: "FAIL", NOT_EVALUATED: "not evaluated"}
    out = [
        f"# Compliance dossier: {m['name']} version {m['version']}",
        "",
        f"**Verdict: {report['verdict'].upper()}** ({report['coverage']}; "
        f"{report['summary'][PASS]} pass, {report['summary'][FAIL]} fail, "
        f"{report['summary'][NOT_EVALUATED]} not evaluated). Generated {report['generated_at']}.",
        "",
        f"Alias `{m['alias']}`, status {m['status']}, MLflow run `{m['run_id']}`.",
        "",
        "## Requirements",
        "",
        "| id | requirement | category | EU AI Act | status |",
        "|---|---|---|---|---|",
    ]
    for r in report["requirements"]:
        out.append(f"| {r['id']} | {r['title']} | {r['category']} | {', '.join(r['articles'])} | {icon[r['status']]} |")
    out += ["", "### Evidence", ""]
    for r in report["requirements"]:
        out.append(f"- **{r['id']}** ({icon[r['status']]})")
        out += [f"  - {line}" for line in r["evidence"]]
    out += ["", "## Lineage", ""] + [f"- {k}: `{v}`" for k, v in lin.items()]
    out += [
        "",
        "## Data",
        "",
        "| source | domain | licence | rows in | kept | filtered | quarantined |",
        "|---|---|---|---:|---:|---|---|",
    ]
    for s in report["data"]["sources"]:
        out.append(
            f"| {s['name']} | {s['domain']} | {s['license']} | {s['rows_in']} | {s['kept']} | "
            f"{_counts(s['filtered'])} | {_counts(s['quarantined'])} |"
        )
    out += ["", "| domain | target share | achieved share |", "|---|---:|---:|"]
    for d, s in sorted(report["data"]["domain_shares"].items()):
        out.append(f"| {d} | {s['target']:.1%} | {s['achieved']:.1%} |")
    v = report["data"]["validation"]
    out += [
        "",
        f"Validation: {'passed' if v['success'] else 'FAILED'} ({v['successful']}/{v['evaluated']}); "
        f"Data Docs: `{v['data_docs']}`",
        "",
        "## Training",
        "",
    ]
    skip = ("mixture", "stages")
    out += [f"- {k}: {val}" for k, val in report["training"].items() if val is not None and k not in skip]
    stages = report["training"].get("stages") or []
    if stages:
        out += [
            "",
            "| stage | kind | data | steps | lr | loss first → final | in-training counters |",
            "|---|---|---|---:|---:|---|---|",
        ]
        for st in stages:
            counters = ", ".join(f"{k} {v:,.0f}" for k, v in sorted((st.get("counters") or {}).items()))
            loss = f"{st['first_loss']:.3f} → {st['final_loss']:.3f}" if st.get("final_loss") is not None else "-"
            out.append(
                f"| {st['stage']} | {st['kind']} | {st['split']} | {st['steps']} | {st['schedule']['lr']:.2g} | "
                f"{loss} | {counters or '-'} |"
            )
    out += evaluation_markdown(report["evaluation"])
    out += [
        "",
        "## Approvals",
        "",
        f"None yet: the version carries the alias `{m['alias']}` until a reviewer approves it.",
    ]
    return "\n".join(out) + "\n"


STAGE_HEADLINES = ("ppl_overall", "bpb_overall", "mc_mean_acc", "rtp_toxicity_probability", "crows_stereotype_score")


def evaluation_markdown(evaluation: dict) -> list[str]:
    """Metrics grouped by category (when the entries are present), then the headline metrics of
    every stage's full evaluation, so an auditor sees how the numbers moved through training."""
    out = ["", "## Evaluation", ""]
    entries = evaluation.get("entries") or [
        {"name": k, "category": "", "value": v, "n": ""} for k, v in sorted(evaluation["metrics"].items())
    ]
    out += ["| category | metric | value | n |", "|---|---|---:|---:|"]
    for e in sorted(entries, key=lambda e: (e["category"], e["name"])):
        value = "n/a" if e["value"] is None else f"{e['value']:.4g}"
        out.append(f"| {e['category']} | {e['name']} | {value} | {e['n']} |")
    for task, why in sorted((evaluation.get("not_evaluated") or {}).items()):
        out.append(f"| not evaluated | {task} | {why} | |")
    stages = evaluation.get("stages") or {}
    if stages:
        out += ["", "Full suite after each training stage:", ""]
        out += ["| stage | " + " | ".join(STAGE_HEADLINES) + " |", "|---|" + "---:|" * len(STAGE_HEADLINES)]
        for stage, metrics in stages.items():
            cells = ["n/a" if metrics.get(k) is None else f"{metrics[k]:.4g}" for k in STAGE_HEADLINES]
            out.append(f"| {stage} | " + " | ".join(cells) + " |")
    return out


def _counts(mapping: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(mapping.items()) if v) or "-"


def write_report(report: dict, reports_dir: Path) -> tuple[Path, Path]:
    """`reports_dir/<model>/v<version>/compliance.{json,md}`, each written atomically."""
    target = reports_dir / report["model"]["name"] / f"v{report['model']['version']}"
    target.mkdir(parents=True, exist_ok=True)
    json_path, md_path = target / "compliance.json", target / "compliance.md"
    atomic_write_json(json_path, report)
    atomic_write_text(md_path, render_markdown(report))
    return json_path, md_path
