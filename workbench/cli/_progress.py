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
    bar = Progress(*columns, console=Console(stderr=True), transient=not keep)
    task = bar.add_task(what, total=None, info="")  # the clock starts now, with the work
    shown = False

    def tick(done: int, total: int | None = None, info: str = "") -> None:
        nonlocal shown
        if not shown:  # drawn from the first tick: an error before it is the only line on screen
            bar.start()
            shown = True
        bar.update(task, completed=done, total=total, info=info)

    tick.task = bar.tasks[0]  # for tests: the rich task (start time, completed, total)
    try:
        yield tick
    finally:
        if shown:
            bar.stop()


@contextmanager
def steps(what: str, expected: int | None = None) -> Iterator[Callable[[str], None]]:
    """A bar over the steps of a command that reports them by name (analyze, report): call
    ``step("features")`` as each starts; the bar shows which one runs, how many are done and the time
    so far (with ``expected`` steps, also an estimate of the time left)."""
    with progress_bar(what, unit="steps") as tick:
        done = 0

        def step(name: str) -> None:
            nonlocal done
            tick(done, max(expected or 0, done + 1), info=name)
            done += 1

        yield step
