"""The ``attribkit`` Typer app, its consoles and what every command shares."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from attribkit.core.jsonio import to_json

if TYPE_CHECKING:
    from attribkit.core.attribution import Attribution

app = typer.Typer(add_completion=False, no_args_is_help=True, help="git blame for model outputs.")


console = Console()


err_console = Console(stderr=True)


def progress_bar(on: Console = console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=on,
        transient=False,
    )


def exit_with(e: Exception) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {e}", highlight=False)
    return typer.Exit(2)


def attribution_json(attribution: Attribution) -> dict[str, object]:
    """The fields every ``--json`` output shares: ``method``, ``units`` ({index, text, start,
    end}), ``scores`` (one per unit, null = unscored), ``ranking``, ``model_calls``, ``seconds``."""
    return {
        "method": attribution.method,
        "units": [
            {"index": u.index, "text": u.label, "start": u.start, "end": u.end}
            for u in attribution.units
        ],
        "scores": to_json(attribution.vector),
        "ranking": [int(i) for i in attribution.ranking],
        "model_calls": attribution.cost.model_calls,
        "seconds": round(attribution.cost.seconds, 4),
    }
