"""The ``attribkit`` command line."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

app = typer.Typer(add_completion=False, no_args_is_help=True, help="git blame for model outputs.")
console = Console()

DEMO_CONTEXT = (
    "Maren Tolvik is a glassblower who lives in a small harbour town. "
    "She opened her first workshop in 2009 after years of apprenticeship. "
    "Her brother Jorund repairs fishing boats on the same street. "
    "The town holds a lantern festival every October. "
    "Maren Tolvik was born in the mountain village of Eskerdal. "
    "Her glass birds are sold in shops across the coast. "
    "On weekends she teaches children how to shape hot glass. "
    "The harbour was rebuilt after a storm in 1987."
)
DEMO_QUERY = "In which village was Maren Tolvik born?"


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


@app.command()
def demo(
    out: Path = typer.Option(Path("attribkit-demo.html"), help="Where to write the HTML report."),
    model: str = typer.Option("smollm2", help="Model name or local path."),
    method: str = typer.Option("loo", help="Attribution method (see `attribkit methods`)."),
) -> None:
    """Attribute a generated answer to the sentences of a small context on a real local model."""
    from attribkit.core.registry import attribute
    from attribkit.models import load
    from attribkit.tasks.context import context_scorer
    from attribkit.viz.console import print_attribution
    from attribkit.viz.html import save_html

    with _progress() as progress:
        task = progress.add_task(f"Loading model {model}", total=None)
        lm = load(model)
        progress.update(task, total=1, completed=1)
        task = progress.add_task("Generating the answer", total=None)
        scorer = context_scorer(lm, DEMO_CONTEXT, DEMO_QUERY)
        progress.update(task, total=1, completed=1)
        n = scorer.n_units
        expected = {"loo": n + 1, "shapley": 2**n}.get(method)
        task = progress.add_task(f"Scoring {n} sentences ({method})", total=expected)
        scorer.progress = lambda k: progress.advance(task, k)
        attribution = attribute(scorer, method)
        progress.update(
            task, total=attribution.cost.forward_passes, completed=attribution.cost.forward_passes
        )

    console.print(f"[bold]Question:[/bold] {DEMO_QUERY}", markup=True, highlight=False)
    console.print(f"[bold]Answer:[/bold] {scorer.target['response']}", highlight=False)
    print_attribution(attribution, console=console)
    save_html(attribution, out)
    console.print(f"HTML report written to [bold]{out}[/bold]")


@app.command("methods")
def methods_command() -> None:
    """List the registered attribution methods with their cost and source."""
    from rich.table import Table

    from attribkit.core.registry import list_methods

    table = Table("name", "kind", "cost", "source")
    for spec in list_methods():
        table.add_row(spec.name, spec.kind, spec.cost, spec.cite)
    console.print(table)


if __name__ == "__main__":  # pragma: no cover
    app()
