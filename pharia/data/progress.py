"""Progress bars on stderr (stdout stays clean for machine-readable output such as JSON reports)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def progress(description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)`; shows a rich progress bar on stderr, or nothing when PHARIA_PROGRESS=0."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    disable = os.environ.get("PHARIA_PROGRESS", "1") == "0"
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), disable=disable) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
