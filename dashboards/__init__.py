"""Streamlit dashboard (multipage): reads MLflow and the compliance dossiers, writes nothing."""
