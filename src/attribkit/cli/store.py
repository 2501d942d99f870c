"""The run store and dataset runs: ``serve``, ``run-dataset``, ``runs``, ``export``, ``import``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from attribkit.cli._app import app, console, exit_with

if TYPE_CHECKING:
    pass


@app.command("serve")
def serve_command(
    store: Path = typer.Option(Path("attribkit-runs.db"), "--store", help="The run store to show."),
    port: int = typer.Option(8765, "--port", help="Port (0 picks a free one)."),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Interface to bind; the default is reachable only from here."
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        help="Load this model so span queries not stored yet run live (e.g. smollm2).",
    ),
) -> None:
    """Browse stored runs in a local web viewer; select a span of a response to see its sources."""
    from attribkit.core.errors import AttribkitError

    try:
        from attribkit.viewer import serve
    except ImportError as e:
        raise exit_with(
            ImportError(f"the viewer needs its extra ({e}); pip install 'attribkit[serve]'")
        ) from None
    try:
        serve(store, host=host, port=port, model=model)
    except AttribkitError as e:
        raise exit_with(e) from None


@app.command("run-dataset")
def run_dataset_command(
    input: Path = typer.Option(
        ...,
        "--input",
        help='JSONL, one record per line: context {"context", "query", "response"?, "id"?}; '
        'generation {"prompt", "response"?, "id"?}; image {"image", "target"?, "id"?} (a file '
        "path relative to the JSONL file, or skimage:NAME); reasoning "
        '{"problem", "text", "answer"?, "id"?} or {"folder", "id"?} (a Thought Anchors problem '
        'folder relative to the JSONL file); agents {"log" (a log file relative to the JSONL '
        'file) | "turns", "outcome"?, "max_turn_chars"?, "max_tokens"?, "with_answer"?, "id"?}; '
        'machine_text {"text", "id"?}; provenance {"text", "source"? (the true author when '
        'known, kept for evaluation), "id"?}.',
    ),
    store: Path = typer.Option(..., "--store", help="Run store the results are written to."),
    task: str = typer.Option(
        "context",
        "--task",
        help="What to attribute: context, generation, image, reasoning, agents, machine_text "
        "(was this text machine-generated?) or provenance (who wrote it: a known author from "
        "--known, or unknown).",
    ),
    method: str | None = typer.Option(
        None,
        "--method",
        help="Attribution method (default: context auto, generation integrated_gradients, "
        "image grad_cam, reasoning forced_answer, agents turn_loo, machine_text fast_detectgpt, "
        "provenance loo).",
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        help="Model name or local path (default: smollm2; efficientnet-lite0 for --task image; "
        "not used by --task provenance, whose model is fitted on --known).",
    ),
    units: str | None = typer.Option(
        None,
        "--units",
        help="context: sentences (default) or passages; image: patches, superpixels or pixels; "
        "machine_text: tokens (default) or sentences; provenance: sentences (default; a "
        "one-sentence text by words), words or paragraphs.",
    ),
    spans: bool = typer.Option(
        True, "--spans/--no-spans", help="context: also store one result per response sentence."
    ),
    dataset: str | None = typer.Option(
        None, "--dataset", help="Name of the dataset in the store (default: the file's name)."
    ),
    known: Path | None = typer.Option(
        None,
        "--known",
        help="provenance: a folder holding one folder of .txt texts per author; the authorship "
        "model is fitted on it once, with a threshold cross-validated to accept 95 % of them.",
    ),
    authorship: str | None = typer.Option(
        None,
        "--authorship",
        help="provenance: delta (Burrows' Delta, default), mfw (word logistic) or ngram (char "
        "SVM).",
    ),
    backend: str = typer.Option(
        "local", "--backend", help="local, or ray (not for --task provenance)."
    ),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster address (default: start a local Ray instance)."
    ),
    workers: int | None = typer.Option(None, "--workers", help="Ray actors (one model each)."),
    batch_size: int = typer.Option(4, "--batch-size", help="Records per Ray task."),
) -> None:
    """Attribute every record of a JSONL file into a run store; a restart resumes where it stopped."""
    from attribkit.core.errors import AttribkitError
    from attribkit.dataset import run_dataset

    try:
        summary = run_dataset(
            input,
            store,
            task=task,
            method=method,
            model=model,
            units=units,
            spans=spans,
            dataset=dataset,
            known=known,
            authorship=authorship,
            backend=backend,
            address=address,
            workers=workers,
            batch_size=batch_size,
            progress=True,
        )
    except AttribkitError as e:
        raise exit_with(e) from None
    console.print(summary.describe(), highlight=False)
    if summary.failed:
        raise typer.Exit(1)


@app.command("runs")
def runs_command(
    store: Path = typer.Option(Path("attribkit-runs.db"), "--store", help="The run store."),
    method: str | None = typer.Option(None, "--method"),
    model: str | None = typer.Option(None, "--model"),
    task: str | None = typer.Option(None, "--task"),
    dataset: str | None = typer.Option(None, "--dataset"),
    limit: int = typer.Option(50, "--limit", help="Show at most this many (newest first)."),
) -> None:
    """List stored runs, newest first."""
    from rich.table import Table

    from attribkit import store as run_store
    from attribkit.core.errors import AttribkitError

    if not store.exists():
        raise exit_with(FileNotFoundError(f"no run store at {store}; pass --store PATH"))
    try:
        with run_store.open(store) as runs:
            found = runs.query(method=method, model=model, task=task, dataset=dataset, limit=limit)
    except AttribkitError as e:
        raise exit_with(e) from None
    table = Table("id", "created", "task", "model", "method", "units", "calls", "target")
    for run in found:
        s = run.summary()
        table.add_row(
            run.id[:10],
            s["created"],
            run.task,
            run.model,
            run.method,
            str(s["units"]),
            str(run.cost.model_calls),
            s["target"],
        )
    console.print(table)


@app.command("export")
def export_command(
    store: Path = typer.Option(..., "--store", help="The run store."),
    out: Path = typer.Option(..., "--out", help="JSONL file to write."),
    method: str | None = typer.Option(None, "--method"),
    model: str | None = typer.Option(None, "--model"),
    task: str | None = typer.Option(None, "--task"),
    dataset: str | None = typer.Option(None, "--dataset"),
) -> None:
    """Export stored runs (and their span results) to JSONL."""
    from attribkit import store as run_store
    from attribkit.core.errors import AttribkitError

    try:
        with run_store.open(store) as runs:
            n = runs.export_jsonl(out, method=method, model=model, task=task, dataset=dataset)
    except AttribkitError as e:
        raise exit_with(e) from None
    console.print(f"{n} runs written to {out}", highlight=False)


@app.command("import")
def import_command(
    store: Path = typer.Option(..., "--store", help="The run store (created if missing)."),
    path: Path = typer.Option(..., "--input", help="A JSONL export."),
) -> None:
    """Import runs from a JSONL export; runs already in the store are skipped."""
    from attribkit import store as run_store
    from attribkit.core.errors import AttribkitError

    try:
        with run_store.open(store) as runs:
            n = runs.import_jsonl(path)
    except (AttribkitError, OSError) as e:
        raise exit_with(e) from None
    console.print(f"{n} runs imported into {store}", highlight=False)
