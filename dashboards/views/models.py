"""Registered models and their versions: aliases, compliance verdict and lineage at a glance."""

from __future__ import annotations

import streamlit as st

from dashboards import ui

HASH_CHARS = 12  # enough to tell versions apart; the Compliance page shows the full values

st.title("Models")
uri = ui.tracking_uri()
models = ui.models(uri)
if not models:
    ui.empty("registered models")
    st.stop()

all_versions = {m.name: ui.versions(uri, m.name) for m in models}
n_versions = sum(len(v) for v in all_versions.values())
n_pass = sum(v.verdict == "pass" for rows in all_versions.values() for v in rows)
left, middle, right = st.columns(3)
left.metric("Registered models", len(models))
middle.metric("Model versions", n_versions)
right.metric("Versions passing compliance", f"{n_pass} / {n_versions}")

st.dataframe(
    ui.frame([m.record() for m in models]),
    hide_index=True,
    width="stretch",
    column_config={"updated": st.column_config.DatetimeColumn("updated", format="YYYY-MM-DD HH:mm")},
)

for model in models:
    st.subheader(model.name)
    records = [v.record() for v in all_versions[model.name]]
    for record in records:
        record["verdict"] = ui.status_label(record["verdict"])
        for tag in ("data_manifest_sha256", "git_commit", "config_hash"):
            record[tag] = str(record[tag])[:HASH_CHARS]
    st.dataframe(
        ui.colour_status(ui.frame(records).drop(columns=["model"]), "verdict"),
        hide_index=True,
        width="stretch",
        column_config={
            "created": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm"),
            "verdict": st.column_config.TextColumn("verdict", help="tag compliance_verdict of the version"),
        },
    )
st.caption("Open the Compliance page for a version's requirements, evidence and downloadable dossier.")
