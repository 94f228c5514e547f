"""Progress bars on stderr (stdout stays clean for machine-readable output such as JSON reports)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def progress(description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)`; shows a rich progress bar on stderr, or nothing when PHARIA_PROGRESS=0.

    `total` may be an estimate (an evaluation task's `samples` when it counts rows per domain, or
    finds fewer rows than asked): the bar drops the total once the count passes it, and closes at
    the count reached, so it never reads 115/48."""
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
        done = 0

        def advance(n: int = 1) -> None:
            nonlocal done
            done += n
            if total is not None and done > total:
                bar.update(task, total=None)
            bar.advance(task, n)

        yield advance
        bar.update(task, total=done, completed=done)
