"""Time series: ``series``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from attribkit.cli._app import app, attribution_json, console, err_console, exit_with, progress_bar
from attribkit.core.jsonio import to_json

if TYPE_CHECKING:
    from attribkit.core.attribution import Attribution


# --- series: which steps of a time series drove a classifier --------------------------------------
def series_json(attribution: Attribution) -> dict[str, object]:
    """The one JSON object ``attribkit series --json`` prints: ``method``, ``target`` (the class
    index explained), ``prediction``, ``shape`` ([T, C]), ``map`` (T × C, each element's score),
    ``units`` ({index, text, t: [start, end), channel}), ``scores``, ``ranking``,
    ``model_calls`` and ``seconds``."""
    from attribkit.tasks.timeseries import series_map

    a = attribution
    out = attribution_json(a)
    m = series_map(a)
    out["units"] = [
        {"index": u.index, "text": u.label, "t": u.meta.get("t"), "channel": u.meta.get("channel")}
        for u in a.units
    ]
    return {
        "method": a.method,
        "target": a.target.get("class"),
        "prediction": a.target.get("prediction"),
        "shape": list(m.shape),
        "map": to_json(m),
        **{k: v for k, v in out.items() if k != "method"},
    }


@app.command("series")
def series_command(
    path: Path = typer.Argument(
        ..., help="One series: .npy, .csv/.txt (a row per step, a column per channel) or .ts."
    ),
    model: Path = typer.Option(
        ..., "--model", help="A SeriesCNN saved with save_series_cnn (safetensors + .json)."
    ),
    method: str = typer.Option(
        ..., "--method", help="Time-series, perturbation or gradient method (occlusion...)."
    ),
    target: int | None = typer.Option(
        None, "--target", help="The class index explained (default: the predicted class)."
    ),
    units: str | None = typer.Option(
        None,
        "--units",
        help="cells, timesteps or windows (default: windows with --width, else cells).",
    ),
    width: int | None = typer.Option(None, "--width", help="Steps per window."),
    stride: int | None = typer.Option(
        None, "--stride", help="Steps between window starts (default: the width)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object."),
    html: Path | None = typer.Option(None, "--html", help="Also write an HTML report here."),
) -> None:
    """Which steps (and channels) of a time series made a classifier predict its class?"""
    import json

    from attribkit.core.errors import AttribkitError, InputError
    from attribkit.models.timeseries import load_series_cnn
    from attribkit.tasks.timeseries import attribute_timeseries
    from attribkit.tasks.timeseries_data import read_series
    from attribkit.viz.console import print_attribution
    from attribkit.viz.html import save_html

    try:
        x = read_series(path)
        try:
            net = load_series_cnn(model)
        except InputError:
            raise
        except Exception as e:  # a damaged or foreign file: safetensors, JSON, shapes
            raise InputError(f"cannot load the model {model}: {e}") from None
        channels = int(net.config["n_channels"])
        if x.shape[1] != channels:
            raise InputError(
                f"the series has {x.shape[1]} channel(s) but the model takes {channels}; a "
                ".csv/.txt file has one column per channel"
            )
        split = units or ("windows" if width is not None else "cells")
        with progress_bar(err_console) as progress:
            step = progress.add_task(f"Attributing {x.shape[0]} steps ({method})", total=None)
            attribution = attribute_timeseries(
                net, x, method, units=split, width=width, stride=stride, target=target
            )
            progress.update(step, total=1, completed=1)
    except AttribkitError as e:
        raise exit_with(e) from None
    if html is not None:
        save_html(attribution, html)
    if as_json:
        typer.echo(json.dumps(series_json(attribution), ensure_ascii=False))
        return
    t = attribution.target
    console.print(
        f"[bold]Class:[/bold] {t['class_name']} (predicted {t['prediction_name']}; "
        f"{x.shape[0]} steps × {x.shape[1]} channels)",
        highlight=False,
    )
    print_attribution(attribution, console=console)
    if html is not None:
        console.print(f"HTML report written to [bold]{html}[/bold]")
