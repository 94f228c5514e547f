"""Entry point of the dashboard: `streamlit run dashboards/app.py`. Only wires the pages together."""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

# `streamlit run` puts this folder on sys.path, not the repository root; the pages import
# `dashboards.ui`, so make the root importable however the app is started (CLI, AppTest).
ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# The pages live in views/, not pages/: with a `pages/` folder next to the main script Streamlit
# starts every new server in its legacy multipage mode, and a deep link such as /compliance opened
# before anyone visits / runs the page without this file (default sidebar, no page config).
st.set_page_config(page_title="pharia", page_icon=":material/policy:", layout="wide")

pages = [
    st.Page("views/models.py", title="Models", icon=":material/inventory_2:", default=True),
    st.Page("views/runs.py", title="Runs", icon=":material/monitoring:"),
    st.Page("views/compliance.py", title="Compliance", icon=":material/gavel:"),
]
st.navigation(pages).run()
