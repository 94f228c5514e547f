"""Errors meant for the user: the CLI and the flow print their message on one line and exit non-zero."""

from __future__ import annotations


class PhariaError(Exception):
    """Base of every error whose message is a complete explanation for the user."""


class DataError(PhariaError):
    """A corpus cannot be read: missing path, empty corpus, unreadable directory."""


class DataValidationError(PhariaError):
    """The Great Expectations suite failed; the message names the Data Docs page."""


class TrainingError(PhariaError):
    """Training could not run or aborted."""
