"""One progress bar for every long command: rich on stderr, with count, elapsed time and ETA.

Usage::

    with progress_bar("importing", unit="files") as tick:
        run(progress=tick)          # tick(done, total) or tick(done, total, info="ok 3 failed 1")

The bar is made when the block starts (its clock starts then, so the first tick does not show an
absurd rate), is drawn on stderr (stdout stays clean for tables and JSON) and disappears when the block
ends unless ``keep=True``. ``total`` may be unknown at first (None) and change between ticks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

Tick = Callable[..., None]


@contextmanager
def progress_bar(what: str, unit: str = "", keep: bool = False) -> Iterator[Tick]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=Console(stderr=True), transient=not keep) as bar:
        task = bar.add_task(what, total=None, info="")

        def tick(done: int, total: int | None = None, info: str = "") -> None:
            bar.update(task, completed=done, total=total, info=info)

        yield tick


@contextmanager
def stages(what: str, names: list[str]) -> Iterator[Callable[[str], None]]:
    """A bar over the named stages of a command (e.g. features, statistics, report): call
    ``step(name)`` as each stage starts; the bar shows which one runs and the time so far."""
    with progress_bar(what, unit="steps") as tick:
        done = 0

        def step(name: str) -> None:
            nonlocal done
            tick(done, len(names), info=name)
            done += 1

        yield step
        tick(len(names), len(names), info="done")
