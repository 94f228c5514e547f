"""Pipeline runs: the runs table, then one run's training curves and evaluation metrics."""

from __future__ import annotations

import altair as alt
import streamlit as st

from dashboards import ui
from pharia.config import RegistryConfig
from pharia.registry import queries

CURVES = ("train_loss", "lr", "tokens_per_s")

st.title("Runs")
uri = ui.tracking_uri()
experiments = ui.experiments(uri)
if not experiments:
    ui.empty("experiments")
    st.stop()
default = RegistryConfig().experiment
experiment = st.selectbox(
    "Experiment", experiments, index=experiments.index(default) if default in experiments else 0, key="experiment"
)
runs = ui.runs(uri, experiment)
if not runs:
    ui.empty(f"runs in experiment '{experiment}'")
    st.stop()

st.dataframe(
    ui.frame([r.record() for r in runs]),
    hide_index=True,
    width="stretch",
    column_config={"started": st.column_config.DatetimeColumn("started", format="YYYY-MM-DD HH:mm")},
)

by_id = {r.run_id: r for r in runs}
run_id = st.selectbox("Run", list(by_id), format_func=lambda rid: by_id[rid].label(), key="run")
run = by_id[run_id]

st.subheader("Training")
points = ui.frame([{"metric": p.key, "step": p.step, "value": p.value} for p in ui.history(uri, run_id, CURVES)])
if points.empty:
    st.info("This run has no training metrics logged yet.")
else:
    columns = st.columns(2)
    for column, key, title in zip(columns, ("train_loss", "lr"), ("Training loss", "Learning rate"), strict=True):
        series = points[points["metric"] == key]
        with column:
            st.markdown(f"**{title}** (`{key}`)")
            if series.empty:
                st.caption(f"`{key}` not logged")
                continue
            chart = (
                alt.Chart(series)
                .mark_line(point=len(series) < 30)
                .encode(
                    x=alt.X("step:Q", title="step"),
                    y=alt.Y("value:Q", title=key, scale=alt.Scale(zero=False)),
                    tooltip=["step", "value"],
                )
            )
            st.altair_chart(chart, width="stretch")
    speed = points[points["metric"] == "tokens_per_s"]
    if not speed.empty:
        st.caption(f"Throughput: {speed['value'].iloc[-1]:,.0f} tokens/s at step {int(speed['step'].iloc[-1])}")

st.subheader("Evaluation")
evaluation = run.evaluation
if not evaluation:
    st.info("This run has no evaluation metrics (`eval_*`) yet.")
else:
    table, bars = st.columns([2, 3])
    table.dataframe(
        ui.frame([{"metric": k, "value": v} for k, v in evaluation.items()]),
        hide_index=True,
        width="stretch",
        column_config={"value": st.column_config.NumberColumn(format="%.4g")},
    )
    per_domain = queries.domain_perplexities(evaluation)
    with bars:
        if per_domain:
            st.markdown("**Held-out perplexity by domain**")
            chart = (
                alt.Chart(ui.frame([{"domain": d, "perplexity": v} for d, v in per_domain.items()]))
                .mark_bar()
                .encode(
                    x=alt.X("domain:N", sort=None, title=None, axis=alt.Axis(labelAngle=0)),
                    y=alt.Y("perplexity:Q"),
                    tooltip=["domain", alt.Tooltip("perplexity:Q", format=".1f")],
                )
            )
            st.altair_chart(chart, width="stretch")

with st.expander(f"All {len(run.params)} parameters"):
    st.dataframe(
        ui.frame([{"param": k, "value": v} for k, v in sorted(run.params.items())]), hide_index=True, width="stretch"
    )
