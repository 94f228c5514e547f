"""Streamlit glue the pages share: which MLflow store to read, cached queries and empty states.

The read logic itself lives in `pharia.registry.queries` (testable without Streamlit); this module
only adds what is Streamlit's business: caching between reruns, the sidebar and user messages.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from pharia.registry import queries
from pharia.registry.tracking import TrackingUnavailable, check_reachable

# Reruns happen on every click; a short TTL keeps the pages snappy and still shows a new run soon.
CACHE_TTL_S = 10
DEMO_HINT = (
    "Run `make demo` to train and register the tiny model, or trigger the `pharia-pipeline` "
    "deployment from the Prefect UI (`make up`)."
)
# Plain words plus colour, not emoji: headless browsers and many Linux desktops lack an emoji font.
STATUS_LABEL = {"pass": "pass", "fail": "fail", "not_evaluated": "not evaluated", "incomplete": "incomplete"}
STATUS_MARKDOWN = {
    "pass": ":green[pass]",
    "fail": ":red[**fail**]",
    "not_evaluated": ":gray[not evaluated]",
    "incomplete": ":orange[**incomplete**]",
}
STATUS_STYLE = {
    "pass": "color: #1a7f37",
    "fail": "color: #cf222e; font-weight: 600",
    "not evaluated": "color: #6e7781",
    "incomplete": "color: #9a6700; font-weight: 600",
}


def tracking_uri() -> str:
    """The store every page reads; stops the page with an error when a server does not answer."""
    uri = queries.default_tracking_uri()
    with st.sidebar:
        st.caption(f"MLflow: `{queries.display_uri(uri)}`")
        if st.button("Refresh", help="re-read MLflow now instead of waiting for the cache to expire"):
            st.cache_data.clear()
    if uri.startswith(("http://", "https://")):
        try:
            check_reachable(uri, timeout_s=3)
        except TrackingUnavailable as exc:
            reason = str(exc).replace(uri, queries.display_uri(uri))  # never show credentials in the URI
            st.error(f"{reason}. Start it with `make up`, or unset MLFLOW_TRACKING_URI to read the local workspace.")
            st.stop()
    return uri


def empty(what: str) -> None:
    st.info(f"No {what} yet. {DEMO_HINT}")


def status_label(status: str | None) -> str:
    return STATUS_LABEL.get(status or "", status or "-")


def status_markdown(status: str | None) -> str:
    return STATUS_MARKDOWN.get(status or "", status or "-")


def frame(records: list[dict]) -> pd.DataFrame:
    return pd.DataFrame.from_records(records)


def colour_status(df: pd.DataFrame, *columns: str) -> Any:
    """A Styler that colours pass/fail cells; st.dataframe renders it, the data stays plain text."""
    present = [c for c in columns if c in df.columns]
    return df.style.map(lambda v: STATUS_STYLE.get(v, ""), subset=present) if present else df


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def models(uri: str) -> list[queries.ModelSummary]:
    return queries.list_models(uri)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def versions(uri: str, name: str) -> list[queries.VersionRow]:
    return queries.list_versions(uri, name)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def experiments(uri: str) -> list[str]:
    return queries.list_experiments(uri)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def runs(uri: str, experiment: str) -> list[queries.RunRow]:
    return queries.list_runs(uri, experiment)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def stages(uri: str, run_id: str) -> list[queries.RunRow]:
    return queries.stage_runs(uri, run_id)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def history(uri: str, run_id: str, keys: tuple[str, ...]) -> list[queries.MetricPoint]:
    return queries.metric_history(uri, run_id, keys)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner="Loading the compliance report…")
def report(uri: str, name: str, version: str) -> queries.ComplianceReport:
    return queries.load_compliance_report(uri, name, version)
