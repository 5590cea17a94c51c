"""Progress bars for long loops (rich), silenced by ``--quiet``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class ProgressTask:
    """Handle of one bar: ``advance(n, loss=...)`` moves it and shows the latest values."""

    def __init__(self, progress: Progress | None, task_id: int | None) -> None:
        self._progress = progress
        self._task_id = task_id

    def advance(self, steps: int = 1, **fields: float) -> None:
        if self._progress is None:
            return
        status = "  ".join(f"{name}={value:.4g}" for name, value in fields.items())
        self._progress.update(self._task_id, advance=steps, status=status)


class ProgressReporter:
    """Creates progress bars on stderr; with ``quiet=True`` every bar is a no-op."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[ProgressTask]:
        if self.quiet:
            yield ProgressTask(None, None)
            return
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=Console(stderr=True),
            transient=False,
        )
        with progress:
            task_id = progress.add_task(description, total=total, status="")
            yield ProgressTask(progress, task_id)
