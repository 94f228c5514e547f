"""Rank-0 progress on stderr: a rich bar on a terminal, one plain line per log window otherwise.

Training usually runs as a child process whose output a Prefect flow or CI log captures; there a
redrawn bar would be either invisible (rich stops redrawing without a terminal) or thousands of
carriage-return fragments, so pipes get the same information as readable lines.
"""

from __future__ import annotations

import sys
from types import TracebackType


class ProgressReporter:
    """`advance()` once per optimizer step, `report(step, text)` once per log window."""

    def __init__(self, total_steps: int, *, enabled: bool, description: str = "train") -> None:
        self.total = total_steps
        self.enabled = enabled
        self._progress = None
        self._task = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
                console=Console(stderr=True),
            )
            self._task = self._progress.add_task(description, total=total_steps, status="")

    def __enter__(self) -> ProgressReporter:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def skip(self, steps: int) -> None:
        """Mark `steps` as already done (a resumed run starts its bar where the checkpoint stood)."""
        if steps and self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=steps)

    def advance(self) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task)

    def report(self, step: int, text: str) -> None:
        if not self.enabled:
            return
        if self._progress is not None and self._task is not None:
            self._progress.console.print(f"step {step}/{self.total} {text}", highlight=False)  # kept above the bar
            self._progress.update(self._task, status=text.split("  ")[0])
        else:
            print(f"step {step}/{self.total} {text}", file=sys.stderr, flush=True)
