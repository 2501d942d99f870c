"""Reasoning traces: ``reasoning``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import typer

from attribkit.cli._app import app, attribution_json, console, err_console, exit_with, progress_bar
from attribkit.core.jsonio import to_json

if TYPE_CHECKING:
    from attribkit.core.attribution import Attribution


def read_reasoning_input(path: Path, answer: str | None = None) -> object:
    """A :class:`~attribkit.tasks.reasoning.ReasoningTrace` from a Thought Anchors problem
    folder or a JSON file ``{"problem", "text", "answer"?, "chunks"?}``; ``answer`` replaces the
    trace's answer. InputError saying what to fix otherwise. No model calls."""
    import json

    from attribkit.core.errors import InputError
    from attribkit.tasks.reasoning import ReasoningTrace

    if path.is_dir():
        return ReasoningTrace.from_folder(path, answer=answer)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"no such file or folder: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {path}: {e}") from None
    except json.JSONDecodeError as e:
        raise InputError(
            f'{path} is not valid JSON ({e.msg}); write {{"problem": ..., "text": ...}}'
        ) from None
    fields = ("problem", "text", "answer", "chunks")
    if not isinstance(data, dict) or set(data) - set(fields):
        extra = sorted(set(data) - set(fields)) if isinstance(data, dict) else []
        raise InputError(
            f'{path} must be one JSON object {{"problem", "text", "answer"?, "chunks"?}}'
            + (f"; unknown field(s) {', '.join(map(repr, extra))}" if extra else "")
        )
    for name in ("problem", "text"):
        if not isinstance(data.get(name), str):
            raise InputError(f'{path}: missing "{name}" (a string)')
    return ReasoningTrace(
        data["problem"],
        data["text"],
        answer if answer is not None else data.get("answer"),
        chunks=data.get("chunks"),
    )


def reasoning_json(attribution: Attribution, model: str) -> dict[str, object]:
    """The one JSON object ``attribkit reasoning --json`` prints for ``attribution``."""
    out: dict[str, object] = {
        "problem": attribution.target.get("problem"),
        "answer": attribution.target.get("answer"),
        "model": model,
        **attribution_json(attribution),
    }
    matrix = attribution.extras.get("matrix")
    if matrix is not None:
        out["matrix"] = to_json(np.asarray(matrix, dtype=float))
    return out


@app.command("reasoning")
def reasoning_command(
    path: Path = typer.Argument(
        ...,
        help='A Thought Anchors problem folder, or a JSON file {"problem", "text", "answer"?, '
        '"chunks"?}.',
    ),
    method: str | None = typer.Option(
        None, "--method", help="Reasoning or perturbation method (default forced_answer)."
    ),
    model: str = typer.Option("smollm2", "--model", help="Model name or local path."),
    max_sentences: int | None = typer.Option(
        None, "--max-sentences", help="Keep only the first N sentences of the trace."
    ),
    answer: str | None = typer.Option(
        None, "--answer", help="The answer to explain (default: the trace's answer)."
    ),
    rollouts: int | None = typer.Option(
        None, "--rollouts", help="Rollouts per sentence (sampling methods such as resampling)."
    ),
    max_tokens: int | None = typer.Option(
        None, "--max-tokens", help="Most new tokens per rollout (sampling methods)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object."),
    html: Path | None = typer.Option(None, "--html", help="Also write an HTML report here."),
) -> None:
    """Which sentences of a chain of thought steered its final answer (Thought Anchors)?"""
    import json

    from attribkit.core.errors import AttribkitError, InputError
    from attribkit.models import load
    from attribkit.tasks.reasoning import DEFAULT_METHOD, ReasoningTask
    from attribkit.viz.console import print_attribution
    from attribkit.viz.html import save_html

    method = method or DEFAULT_METHOD
    params: dict[str, object] = {}
    if rollouts is not None:
        params["rollouts"] = rollouts
    if max_tokens is not None:
        params["max_new_tokens"] = max_tokens
    try:
        trace = read_reasoning_input(path, answer)
        if max_sentences is not None:
            trace = trace.head(max_sentences)  # type: ignore[attr-defined]
        with progress_bar(err_console) as progress:
            step = progress.add_task(f"Loading model {model}", total=None)
            lm = load(model)
            progress.update(step, total=1, completed=1)
            task = ReasoningTask(lm, trace)  # type: ignore[arg-type]
            step = progress.add_task(
                f"Attributing {len(task.units)} sentences ({method})", total=None
            )
            try:
                attribution = task.attribute(method, **params)
            except TypeError as e:
                if not params:
                    raise
                given = ", ".join(
                    f"--{'max-tokens' if k == 'max_new_tokens' else k}" for k in params
                )
                raise InputError(f"method {method} does not take {given} ({e})") from None
            progress.update(step, total=1, completed=1)
    except AttribkitError as e:
        raise exit_with(e) from None
    if html is not None:
        save_html(attribution, html)
    if as_json:
        typer.echo(json.dumps(reasoning_json(attribution, model), ensure_ascii=False))
        return
    console.print(f"[bold]Problem:[/bold] {task.problem}", highlight=False)
    console.print(f"[bold]Answer:[/bold] {task.answer}", highlight=False)
    print_attribution(attribution, console=console)
    if "matrix" in attribution.extras:
        console.print("(a sentence×sentence matrix is in --json and the viewer)", highlight=False)
    if html is not None:
        console.print(f"HTML report written to [bold]{html}[/bold]")
