"""The compliance dossier of one model version: verdict, requirements with their EU AI Act
articles and evidence, data lineage and mixture, training summary, and the files to download."""

from __future__ import annotations

import altair as alt
import streamlit as st

from dashboards import ui
from pharia.registry import queries

PREFERRED_ALIASES = ("champion", "candidate")

st.title("Compliance")
uri = ui.tracking_uri()
models = ui.models(uri)
if not models:
    ui.empty("registered models")
    st.stop()

pick_model, pick_version = st.columns(2)
name = pick_model.selectbox("Model", [m.name for m in models], key="model")
versions = ui.versions(uri, name)
if not versions:
    ui.empty(f"versions of {name}")
    st.stop()
by_version = {v.version: v for v in versions}
default = next((v.version for a in PREFERRED_ALIASES for v in versions if a in v.aliases), versions[0].version)


def _version_label(version: str) -> str:
    row = by_version[version]
    aliases = f" @{', @'.join(row.aliases)}" if row.aliases else ""
    return f"v{version}{aliases} · {ui.status_label(row.verdict)}"


version = pick_version.selectbox(
    "Version", list(by_version), index=list(by_version).index(default), format_func=_version_label, key="version"
)
try:
    report = ui.report(uri, name, version)
except queries.ReportUnavailable as exc:
    st.warning(str(exc))
    st.stop()
data = report.data
counts = queries.status_counts(data)
summary = f"{counts['pass']} pass, {counts['fail']} fail, {counts['not_evaluated']} not evaluated"
if report.verdict == "pass":
    st.success(
        f"**Verdict: PASS** · {name} v{version} meets every evaluated requirement ({summary}).",
        icon=":material/verified:",
    )
elif report.verdict == "incomplete":
    st.warning(
        f"**Verdict: INCOMPLETE** · {name} v{version}: a requirement with gates was not evaluated ({summary}).",
        icon=":material/pending:",
    )
else:
    st.error(f"**Verdict: {report.verdict.upper()}** · {name} v{version} ({summary}).", icon=":material/gpp_bad:")

model = data.get("model", {})
tiles = st.columns(4)
tiles[0].metric("Requirements passed", counts["pass"])
tiles[1].metric("Requirements failed", counts["fail"])
tiles[2].metric("Not evaluated", counts["not_evaluated"])
tiles[3].metric("Alias", model.get("alias") or "-")
st.caption(
    f"Generated {data.get('generated_at', '?')} · run `{model.get('run_id', '-')}` · read from `{report.source}`"
)

stem = f"{name}-v{version}-compliance"
download_json, download_md = st.columns(2)
download_json.download_button(
    "Download JSON", report.json_text(), file_name=f"{stem}.json", mime="application/json", width="stretch"
)
download_md.download_button(
    "Download Markdown",
    report.markdown or "",
    file_name=f"{stem}.md",
    mime="text/markdown",
    disabled=report.markdown is None,
    help=None if report.markdown else "no compliance.md stored next to the JSON",
    width="stretch",
)

requirements_tab, data_tab, training_tab, lineage_tab = st.tabs(
    ["Requirements", "Data", "Training & evaluation", "Lineage & approvals"]
)

with requirements_tab:
    rows = queries.requirement_rows(data)
    for row in rows:
        row["status"] = ui.status_label(row["status"])
    st.dataframe(
        ui.colour_status(ui.frame(rows).drop(columns=["evidence"]), "status") if rows else ui.frame([]),
        hide_index=True,
        width="stretch",
        column_config={"requirement": st.column_config.TextColumn(width="large")},
    )
    st.markdown("**Evidence**")
    for requirement in data.get("requirements", []):
        label = (
            f"{requirement.get('id')} · {requirement.get('title')} · {ui.status_markdown(requirement.get('status'))}"
        )
        with st.expander(label, expanded=requirement.get("status") == "fail"):
            st.caption(", ".join(requirement.get("articles", [])))
            st.markdown("\n".join(f"- {line}" for line in requirement.get("evidence", [])) or "_no evidence recorded_")

with data_tab:
    shares = queries.domain_share_rows(data)
    if shares:
        st.markdown("**Domain mixture: target vs achieved share**")
        order = [r["domain"] for r in sorted(shares, key=lambda r: -r["value"]) if r["share"] == "target"]
        chart = (
            alt.Chart(ui.frame(shares))
            .mark_bar()
            .encode(
                x=alt.X("domain:N", title=None, sort=order, axis=alt.Axis(labelAngle=0)),
                xOffset=alt.XOffset("share:N", sort=["target", "achieved"]),
                y=alt.Y("value:Q", title="share of training characters", axis=alt.Axis(format="%")),
                color=alt.Color("share:N", sort=["target", "achieved"], title=None),
                tooltip=["domain", "share", alt.Tooltip("value:Q", format=".1%")],
            )
        )
        st.altair_chart(chart, width="stretch")
    st.markdown("**Sources**")
    st.dataframe(ui.frame(queries.source_rows(data)), hide_index=True, width="stretch")
    validation = data.get("data", {}).get("validation", {})
    if validation:
        outcome = "passed" if validation.get("success") else "FAILED"
        st.markdown(
            f"Data validation {outcome}: {validation.get('successful')} of {validation.get('evaluated')} expectations "
            f"met · Data Docs `{validation.get('data_docs', '-')}`"
        )

with training_tab:
    training, evaluation = st.columns(2)
    training.markdown("**Training**")
    training.dataframe(ui.frame(queries.summary_rows(data.get("training", {}))), hide_index=True, width="stretch")
    stage_rows = queries.dossier_stage_rows(data.get("training", {}))
    if stage_rows:
        training.markdown("**Training stages**")
        training.dataframe(ui.frame(stage_rows), hide_index=True, width="stretch")
    evaluation.markdown("**Evaluation** (full suite on the final weights)")
    rows = queries.evaluation_rows(data.get("evaluation", {}))
    categories = sorted({r["category"] for r in rows})
    chosen = evaluation.multiselect("categories", categories, default=categories, key="eval_categories")
    evaluation.dataframe(
        ui.frame([r for r in rows if r["category"] in chosen]),
        hide_index=True,
        width="stretch",
        column_config={"value": st.column_config.NumberColumn(format="%.4g")},
    )
    stage_rows = queries.evaluation_stage_rows(data.get("evaluation", {}))
    if stage_rows:
        st.markdown("**Evaluation after each training stage**")
        names = sorted({r["metric"] for r in stage_rows})
        defaults = [m for m in ("mc_mean_acc", "rtp_toxicity_probability", "crows_stereotype_score") if m in names]
        picked = st.multiselect("metrics", names, default=defaults or names[:3], key="stage_metrics")
        picked_rows = [r for r in stage_rows if r["metric"] in picked]
        if picked_rows:
            chart = (
                alt.Chart(ui.frame(picked_rows))
                .mark_line(point=True)
                .encode(
                    x=alt.X("stage:N", sort=alt.SortField("order"), title="after stage"),
                    y=alt.Y("value:Q", title=None),
                    color="metric:N",
                    facet=alt.Facet("metric:N", columns=3),
                )
                .properties(height=160)
                .resolve_scale(y="independent")
            )
            st.altair_chart(chart)

with lineage_tab:
    st.markdown("**Lineage**")
    st.dataframe(ui.frame(queries.summary_rows(data.get("lineage", {}))), hide_index=True, width="stretch")
    st.markdown("**Approvals**")
    approvals = data.get("approvals", [])
    if approvals:
        st.dataframe(ui.frame(approvals), hide_index=True, width="stretch")
    else:
        st.caption(f"None recorded: the version keeps alias `{model.get('alias', '-')}` until a reviewer approves it.")
