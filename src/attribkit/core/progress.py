"""A progress bar over a scorer's model calls (rich), for long attributions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from attribkit.core.scorer import Scorer


@contextmanager
def scorer_progress(scorer: Scorer, description: str, total: int | None = None) -> Iterator[None]:
    """Show a bar that advances with every forward pass ``scorer`` makes inside the block.

    ``total`` is the expected number of passes when known (the bar is indeterminate otherwise).
    The scorer's own progress callback, if any, still runs.
    """
    previous = scorer.progress
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)

        def advance(k: int) -> None:
            bar.advance(task, k)
            if previous is not None:
                previous(k)

        scorer.progress = advance
        try:
            yield
        finally:
            scorer.progress = previous
