"""Pipeline runs: the runs table, then one run's training curves, its training stages (if it was
trained in stages) and evaluation metrics."""

from __future__ import annotations

import altair as alt
import streamlit as st

from dashboards import ui
from pharia.config import RegistryConfig
from pharia.registry import queries

CURVES = ("train_loss", "lr", "tokens_per_s")
ETHICS_HELP = (
    "As last logged in each stage: `*_total` counters add up over the stage, gaps and penalties are the last value."
)

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

fast_keys = tuple(sorted(k for k in run.metrics if k.startswith("fast_")))
if fast_keys:
    st.subheader("Continuous evaluation")
    st.caption("The evaluation harness's fast suite every `train.eval_every` steps: same rows, same seeds each time.")
    picked = st.multiselect(
        "metrics", fast_keys, default=[k for k in ("fast_ppl_overall", "fast_piqa_acc") if k in fast_keys], key="fast"
    )
    fast = ui.frame(
        [{"metric": p.key, "step": p.step, "value": p.value} for p in ui.history(uri, run_id, tuple(picked))]
    )
    if not fast.empty:
        chart = (
            alt.Chart(fast)
            .mark_line(point=True)
            .encode(
                x=alt.X("step:Q", title="global step"),
                y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False)),
                color="metric:N",
                tooltip=["metric", "step", "value"],
            )
        )
        st.altair_chart(chart, width="stretch")

stages = ui.stages(uri, run_id)
if stages:  # runs trained before stages existed have no nested runs and get no section at all
    st.subheader("Training stages")
    st.dataframe(
        ui.frame([s.stage_record() for s in stages]),
        hide_index=True,
        width="stretch",
        column_config={
            "lr": st.column_config.NumberColumn(format="%.2e"),
            "final train_loss": st.column_config.NumberColumn(format="%.4f"),
        },
    )
    loss_column, ethics_column = st.columns(2)
    with loss_column:
        # Stage-local steps, each stage's line starting at 0: the chart above already shows the run at
        # global steps, so this one is for comparing stages, and a short task stage stays visible
        # instead of being a sliver at the right end of the pretraining curve.
        st.markdown("**Training loss by stage** (`train_loss`, stage-local steps)")
        losses = ui.frame(
            [
                {"stage": s.run_name, "step": p.step, "value": p.value}
                for s in stages
                for p in ui.history(uri, s.run_id, ("train_loss",))
            ]
        )
        if losses.empty:
            st.caption("`train_loss` not logged by any stage")
        else:
            chart = (
                alt.Chart(losses)
                .mark_line(point=int(losses.groupby("stage").size().max()) < 30)
                .encode(
                    x=alt.X("step:Q", title="step within the stage"),
                    y=alt.Y("value:Q", title="train_loss", scale=alt.Scale(zero=False)),
                    color=alt.Color("stage:N", sort=[s.run_name for s in stages], title="stage"),
                    tooltip=["stage", "step", "value"],
                )
            )
            st.altair_chart(chart, width="stretch")
    with ethics_column:
        ethics = queries.ethics_rows(stages)
        if ethics:
            st.markdown("**Ethics and stability counters**")
            st.dataframe(
                ui.frame(ethics),
                hide_index=True,
                width="stretch",
                column_config={"counter": st.column_config.TextColumn(help=ETHICS_HELP)},
            )

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
