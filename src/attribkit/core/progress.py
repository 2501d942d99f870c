"""A progress bar over a scorer's model calls (rich), for long attributions."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from attribkit.core.scorer import Scorer


@contextmanager
def progress_bar(
    description: str, total: int | None = None, show: bool = True
) -> Iterator[Callable[[int], None]]:
    """A transient bar; yields ``advance(k)``. With ``show=False`` nothing is drawn and
    ``advance`` does nothing."""
    if not show:
        yield lambda k: None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda k: bar.advance(task, k)


@contextmanager
def scorer_progress(scorer: Scorer, description: str, total: int | None = None) -> Iterator[None]:
    """Show a bar that advances with every forward pass ``scorer`` makes inside the block.

    ``total`` is the expected number of passes when known (the bar is indeterminate otherwise).
    The scorer's own progress callback, if any, still runs.
    """
    previous = scorer.progress
    with progress_bar(description, total) as bar:

        def advance(k: int) -> None:
            bar(k)
            if previous is not None:
                previous(k)

        scorer.progress = advance
        try:
            yield
        finally:
            scorer.progress = previous
