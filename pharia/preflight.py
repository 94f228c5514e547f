"""Checks that cost seconds and save minutes: run before any stage, so that a missing corpus, an
empty corpus or an unreachable MLflow server is reported in one line before anything is written."""

from __future__ import annotations

from pharia.config import PipelineConfig
from pharia.errors import DataError
from pharia.registry.tracking import check_reachable, resolve_tracking_uri
from pharia.workspace import Workspace


def check_corpora(cfg: PipelineConfig) -> None:
    """Every source can be located; every user-path source yields at least one non-blank document.

    Built-in corpora ship inside packages and are only located here (reading them is the ingest
    stage's job); user paths are read up to their first document, which is cheap.
    """
    from pharia.data.records import Record
    from pharia.data.sources import check_sources, describe_source, read_source

    check_sources(cfg.data)
    for src in cfg.data.sources:
        if src.builtin is not None:
            continue
        if not any(isinstance(item, Record) and item.text.strip() for item in read_source(src)):
            raise DataError(f"{describe_source(src)} contains no documents (only blank text)")


def run_preflight(cfg: PipelineConfig, workspace: Workspace) -> str:
    """Returns the MLflow tracking URI the run will use."""
    check_corpora(cfg)
    tracking_uri = resolve_tracking_uri(cfg.registry, workspace)
    check_reachable(tracking_uri)
    return tracking_uri
