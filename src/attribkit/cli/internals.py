"""Attribution inside the model: ``neurons`` (which FFN neurons or attention heads carry a
next-token prediction)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from attribkit.cli._app import app, console, err_console, exit_with, progress_bar


@app.command("neurons")
def neurons_command(
    prompt: str = typer.Option(..., "--prompt", help="The prompt (raw text, no chat template)."),
    target: str = typer.Option(
        ..., "--target", help='The next token explained, e.g. " Paris" (one token).'
    ),
    score: str = typer.Option(
        "dla", "--score", help="dla (cheap), logprob_increase (exact, costly) or magnitude."
    ),
    kind: str = typer.Option("ffn", "--kind", help="ffn (value neurons) or heads."),
    top: int = typer.Option(20, "--top", help="How many units to print (at most 20)."),
    model: str = typer.Option("smollm2", "--model", help="Model name or local path."),
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON object: the target, the map's shape, the top units."
    ),
    html: Path | None = typer.Option(None, "--html", help="Also write an HTML report here."),
) -> None:
    """Which FFN neurons (or attention heads) of which layers push the model toward the target
    token at the last position of the prompt? (ACE / Yu & Ananiadou's neuron attribution.)"""
    from attribkit.core.errors import AttribkitError
    from attribkit.internals.neurons import neuron_attribution
    from attribkit.models import load
    from attribkit.viz.html import save_html

    try:
        with progress_bar(err_console) as progress:
            step = progress.add_task(f"Loading model {model}", total=None)
            lm = load(model)
            progress.update(step, total=1, completed=1)
            step = progress.add_task(f"Scoring {kind} units ({score})", total=None)
            attribution = neuron_attribution(lm, prompt, target, score=score, kind=kind)  # type: ignore[arg-type]
            progress.update(step, total=1, completed=1)
    except AttribkitError as e:
        raise exit_with(e) from None
    if html is not None:
        save_html(attribution, html)
    extras = attribution.extras
    grid = extras["layer_map"]
    if as_json:
        out = {
            "model": model,
            "token": extras["token"],
            "logprob": extras["logprob"],
            "shape": [len(grid), len(grid[0])],
            "top": [{"layer": r[0], "unit": r[1], "score": r[2]} for r in extras["top"][:top]],
            "method": attribution.method,
            "model_calls": attribution.cost.model_calls,
            "seconds": round(attribution.cost.seconds, 4),
        }
        typer.echo(json.dumps(out, ensure_ascii=False))
        return
    word = "neuron" if kind == "ffn" else "head"
    console.print(
        f"[bold]Target:[/bold] {extras['token']!r} (log p = {extras['logprob']:.3f}); "
        f"{len(grid)} layers × {len(grid[0])} {word}s; {attribution.cost}",
        highlight=False,
    )
    for rank, (layer, unit, value) in enumerate(extras["top"][:top], 1):
        console.print(
            f"{rank:>3}. layer {layer:>3}  {word} {unit:>5}  {value:+.4f}", highlight=False
        )
    if html is not None:
        console.print(f"HTML report written to [bold]{html}[/bold]")
