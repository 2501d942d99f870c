"""Attribution that acts on prompts and contexts: ``prune-prompt`` (TAPruning, PromptQuine,
attribution-guided and random pruning) and ``programs`` (GenerationPrograms citations)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from attribkit.cli._app import app, console, err_console, exit_with, progress_bar
from attribkit.cli.context import read_context_file

PRUNE_METHODS = ("tapruning", "promptquine", "loo", "random")


def read_labeled_jsonl(path: Path) -> list[object]:
    """The labelled examples of a JSONL file: one ``{"input": ..., "label": ...}`` object per
    line (``"text"`` is accepted for ``"input"``). InputError naming the line otherwise."""
    from attribkit.core.errors import InputError
    from attribkit.tasks.prompt_cases import LabeledExample

    if not path.is_file():
        raise InputError(f"{path} is not a file: pass a JSONL file of labelled examples")
    out: list[object] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{n} is not JSON ({e.msg})") from None
        text = row.get("input", row.get("text")) if isinstance(row, dict) else None
        label = row.get("label") if isinstance(row, dict) else None
        if not isinstance(text, str) or not text.strip() or not isinstance(label, str):
            raise InputError(
                f'{path}:{n} needs {{"input": "<text>", "label": "<label>"}} with a non-empty '
                "input and a string label"
            )
        out.append(LabeledExample(text, label))
    if not out:
        raise InputError(f"{path} holds no examples: one JSON object per line")
    return out


def _verbalizers(spec: str | None, labels: list[str]) -> dict[str, str]:
    """``--verbalizers`` as a label → text mapping (JSON), or each label with a leading space."""
    from attribkit.core.errors import InputError

    if spec is None:
        return {label: " " + label for label in sorted(set(labels))}
    try:
        mapping = json.loads(spec)
    except json.JSONDecodeError as e:
        example = '{"pos": " great"}'
        raise InputError(f"--verbalizers must be a JSON object, e.g. {example} ({e.msg})") from None
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise InputError('--verbalizers must map each label to its text, e.g. {"pos": " great"}')
    return {str(k): v for k, v in mapping.items()}


@app.command("prune-prompt")
def prune_prompt_command(
    template: Path = typer.Option(
        ..., "--template", help="The prompt template: a text file with the slot {input}."
    ),
    data: Path = typer.Option(
        ..., "--data", help='Fitness examples: JSONL, {"input": ..., "label": ...} per line.'
    ),
    method: str = typer.Option(
        "tapruning", "--method", help="tapruning, promptquine, loo (attribution) or random."
    ),
    budget: int | None = typer.Option(
        None, "--budget", help="Most fitness calls (tapruning, promptquine; default 200)."
    ),
    remove: int | None = typer.Option(
        None, "--remove", help="Units to remove (loo and random; required there)."
    ),
    verbalizers: str | None = typer.Option(
        None, "--verbalizers", help='Label → text JSON (default: " <label>" per label).'
    ),
    fitness: str = typer.Option("accuracy", "--fitness", help="accuracy or margin."),
    units: str = typer.Option("tokens", "--units", help="tokens (the template's)."),
    model: str = typer.Option("smollm2", "--model", help="Model name or local path."),
    seed: int = typer.Option(0, "--seed", help="Seed of the search (promptquine, random)."),
    out: Path | None = typer.Option(None, "--out", help="Also write the pruned template here."),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object."),
) -> None:
    """Prune an in-context prompt: which of its tokens can go without losing fitness on the
    examples? Prints the pruned template, the fitness before and after, and the cost."""
    from attribkit.applied.pruning import attribution_prune, promptquine, random_prune, tapruning
    from attribkit.core.errors import AttribkitError, InputError
    from attribkit.tasks.prompt import PromptTask

    try:
        if method not in PRUNE_METHODS:
            raise InputError(f"unknown --method {method!r}; choose {', '.join(PRUNE_METHODS)}")
        if method in ("loo", "random") and remove is None:
            raise InputError(f"--method {method} needs --remove N (how many units to drop)")
        if not template.is_file():
            raise InputError(f"{template} is not a file: pass the prompt template as a text file")
        text = template.read_text(encoding="utf-8")
        examples = read_labeled_jsonl(data)
        labels = [e.label for e in examples]  # type: ignore[attr-defined]
        with progress_bar(err_console) as progress:
            step = progress.add_task(f"Loading model {model}", total=None)
            lm = load_model(model)
            progress.update(step, total=1, completed=1)
            task = PromptTask(lm, text, examples, _verbalizers(verbalizers, labels), units, fitness)
            step = progress.add_task(f"Pruning {task.n_units} {units} ({method})", total=None)
            calls = budget if budget is not None else 200
            if method == "tapruning":
                result = tapruning(task, budget=calls)
            elif method == "promptquine":
                result = promptquine(task, budget=calls, seed=seed)
            elif method == "loo":
                result = attribution_prune(task, "loo", n_remove=int(remove or 0))
            else:
                result = random_prune(task, int(remove or 0), seed=seed)
            progress.update(step, total=1, completed=1)
    except AttribkitError as e:
        raise exit_with(e) from None
    if out is not None:
        out.write_text(result.prompt, encoding="utf-8")
    if as_json:
        typer.echo(json.dumps({"model": model, **result.to_dict()}, ensure_ascii=False))
        return
    console.print(
        f"[bold]{method}[/bold]: kept {result.n_kept}/{result.n_units} {units}; {fitness} "
        f"{result.fitness_before:.3f} → {result.fitness_after:.3f}; {result.fitness_calls} "
        f"fitness calls; {result.cost}",
        highlight=False,
    )
    console.print("[bold]Pruned template:[/bold]", highlight=False)
    console.print(result.prompt, highlight=False, markup=False)
    if out is not None:
        console.print(f"Pruned template written to [bold]{out}[/bold]")


@app.command("programs")
def programs_command(
    context: Path = typer.Option(
        ...,
        "--context",
        help='Plain text (passages separated by blank lines) or JSONL with {"text": ...} per line.',
    ),
    query: str = typer.Option(..., "--query", help="The question the response answers."),
    response: str = typer.Option(..., "--response", help="The response to cite."),
    method: str = typer.Option(
        "loo", "--method", help="Context method that plans the program (loo, attention_heads...)."
    ),
    execute: str | None = typer.Option(
        None, "--execute", help="Also run the program: lm (the model) or extractive."
    ),
    model: str = typer.Option("smollm2", "--model", help="Model name or local path."),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object."),
) -> None:
    """Cite a response through a program (GenerationPrograms, post hoc): each response sentence
    becomes paraphrase(S_i) or fusion(S_i, S_j, ...) over the context sentences that the
    attribution method ranks highest; prints the program and the cited response."""
    from attribkit.applied.programs import cite_with_program
    from attribkit.core.errors import AttribkitError

    try:
        passages = read_context_file(context)
        with progress_bar(err_console) as progress:
            step = progress.add_task(f"Loading model {model}", total=None)
            lm = load_model(model)
            progress.update(step, total=1, completed=1)
            step = progress.add_task(f"Planning the program ({method})", total=None)
            cited = cite_with_program(lm, passages, query, response, method, ops=execute)
            progress.update(step, total=1, completed=1)
    except AttribkitError as e:
        raise exit_with(e) from None
    if as_json:
        typer.echo(json.dumps({"model": model, **cited.to_dict()}, ensure_ascii=False))
        return
    units = cited.units
    console.print("[bold]Program:[/bold]", highlight=False)
    for i, line in enumerate(str(cited.program).splitlines()):
        console.print(f"  {line}", highlight=False, markup=False)
        for u in cited.program.citations(i):
            console.print(f"      S{u + 1}: {units[u].label}", highlight=False, markup=False)
    console.print("[bold]Cited response:[/bold]", highlight=False)
    console.print(cited.cited_response(), highlight=False, markup=False)
    console.print(f"[bold]Cost:[/bold] {cited.cost}", highlight=False)


def load_model(name: str) -> object:
    """:func:`attribkit.models.load`, imported when a command runs."""
    from attribkit.models import load

    return load(name)
