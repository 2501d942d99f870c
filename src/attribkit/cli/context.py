"""Context traceback and the language-model tools: ``demo``, ``context``, ``methods``, ``tokens``,
``select-heads``, ``train-heads``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from attribkit.cli._app import app, attribution_json, console, err_console, exit_with, progress_bar

if TYPE_CHECKING:
    pass


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

    with progress_bar() as progress:
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


def read_context_file(path: Path) -> str | list[str]:
    """Plain text (returned as is; passages are separated by blank lines) or JSONL with one
    ``{"text": ...}`` passage per line (returned as a list)."""
    from attribkit.core.errors import InputError
    from attribkit.core.jsonio import jsonl_lines

    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot read the context file {path}: {e.strerror}") from e
    lines = [line for line in raw.splitlines() if line.strip()]
    if not (path.suffix == ".jsonl" or (lines and lines[0].lstrip().startswith("{"))):
        return raw
    passages = []
    for number, record in jsonl_lines(raw, path):
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise InputError(
                f'{path}:{number} has no "text" string; write one {{"text": ...}} per line'
            )
        passages.append(record["text"])
    return passages


@app.command("context")
def context_command(
    context: Path = typer.Option(
        ...,
        "--context",
        help='Plain text (passages separated by blank lines) or JSONL with {"text": ...} per line.',
    ),
    query: str = typer.Option(..., "--query", help="The question the response answers."),
    response: str | None = typer.Option(
        None, "--response", help="Attribute this response instead of generating one."
    ),
    span: str | None = typer.Option(
        None, "--span", help="Attribute only this part (a substring) of the response."
    ),
    method: str | None = typer.Option(
        None,
        "--method",
        help="Attribution method (default: the context default; see `attribkit methods`).",
    ),
    units: str = typer.Option("sentences", "--units", help="sentences or passages."),
    model: str = typer.Option("smollm2", "--model", help="Model name or local path."),
    budget: int | None = typer.Option(
        None, "--budget", help="Most forward passes the method may spend."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object."),
    html: Path | None = typer.Option(None, "--html", help="Also write an HTML report here."),
) -> None:
    """Which sentences or passages of a context made the model give its response?"""
    import json

    from attribkit.core.cost import Budget
    from attribkit.core.errors import AttribkitError
    from attribkit.models import load
    from attribkit.tasks.context import DEFAULT_METHOD, ContextTask
    from attribkit.viz.console import print_attribution
    from attribkit.viz.html import save_html

    method = method or DEFAULT_METHOD
    try:
        passages = read_context_file(context)
        with progress_bar(err_console) as progress:
            task_id = progress.add_task(f"Loading model {model}", total=None)
            lm = load(model)
            progress.update(task_id, total=1, completed=1)
            task_id = progress.add_task(
                "Preparing" if response else "Generating the response", total=None
            )
            task = ContextTask(lm, passages, query, response, units=units, span=span)
            progress.update(task_id, total=1, completed=1)
            task_id = progress.add_task(
                f"Attributing {task.n_units} {units} ({method})", total=None
            )
            attribution = task.attribute(
                method, budget=Budget(forward_passes=budget) if budget else None
            )
            progress.update(task_id, total=1, completed=1)
    except AttribkitError as e:
        err_console.print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(2) from None
    if html is not None:
        save_html(attribution, html)
    if as_json:
        out = {
            "response": task.response,
            "query": query,
            "span": None if task.span is None else task.response[task.span[0] : task.span[1]],
            "model": model,
            **attribution_json(attribution),
        }
        typer.echo(json.dumps(out, ensure_ascii=False))
        return
    console.print(f"[bold]Query:[/bold] {query}", highlight=False)
    console.print(f"[bold]Response:[/bold] {task.response}", highlight=False)
    if task.span is not None:
        console.print(
            f"[bold]Span:[/bold] {task.response[task.span[0] : task.span[1]]}", highlight=False
        )
    print_attribution(attribution, console=console)
    if html is not None:
        console.print(f"HTML report written to [bold]{html}[/bold]")


@app.command("methods")
def methods_command(
    kind: str | None = typer.Option(
        None, "--kind", help="Only this kind (perturbation, gradient, context, generation, ...)."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="One JSON list: name, kind, takes, cost, cite, defaults, source."
    ),
) -> None:
    """List the registered methods: name, kind, cost, paper and the file that implements it."""
    import json
    from pathlib import Path

    from rich.table import Table

    from attribkit.core.errors import InputError
    from attribkit.core.registry import list_methods, method_kinds

    if kind is not None and kind not in method_kinds():
        raise exit_with(
            InputError(f"unknown kind {kind!r}; choose one of: {', '.join(method_kinds())}")
        )
    specs = list_methods(kind)
    if as_json:
        typer.echo(json.dumps([s.to_dict() for s in specs], ensure_ascii=False, indent=1))
        return
    root = Path(__file__).resolve().parent.parent
    rows = []
    for spec in specs:
        source = Path(spec.source_file)
        shown = source.relative_to(root) if source.is_relative_to(root) else source
        rows.append((spec.name, spec.kind, spec.cost, spec.cite, str(shown)))
    if not console.is_terminal:  # piped: whole fields, one method per block, nothing cut
        for name, kind_, cost, cite, source in rows:
            typer.echo(f"{name}  [{kind_}]  {source}\n  cost: {cost}\n  paper: {cite}")
        return
    table = Table("name", "kind", "cost", "paper", "source")
    for column in (table.columns[0], table.columns[4]):
        column.no_wrap = True
    for row in rows:
        table.add_row(*row)
    console.print(table)


@app.command("tokens")
def tokens_command(
    prompt: str = typer.Option(..., "--prompt", help="The prompt whose tokens to attribute."),
    response: str | None = typer.Option(
        None, "--response", help="Explain this response instead of generating one."
    ),
    method: str = typer.Option(
        "integrated_gradients", "--method", help="Generation method (see `attribkit methods`)."
    ),
    target: str = typer.Option("logprob", "--target", help="logprob, prob or logit."),
    foil: str | None = typer.Option(
        None, "--foil", help="Contrast each generated token with this aligned alternative."
    ),
    aggregate: str | None = typer.Option(None, "--aggregate", help="words or sentences."),
    model: str = typer.Option("smollm2", "--model", help="Model name or local path."),
    max_new_tokens: int = typer.Option(16, "--max-new-tokens"),
    no_chat: bool = typer.Option(False, "--no-chat", help="Do not apply the chat template."),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object."),
) -> None:
    """Which input tokens drove each generated token? A console heat map (rows: generated)."""
    import json

    from attribkit.core.errors import AttribkitError
    from attribkit.models import load
    from attribkit.tasks.generation import attribute_generation
    from attribkit.viz.token_table import print_token_attribution, token_attribution_json

    try:
        with progress_bar(err_console) as progress:
            step = progress.add_task(f"Loading model {model}", total=None)
            lm = load(model)
            progress.update(step, total=1, completed=1)
            step = progress.add_task(f"Attributing tokens ({method})", total=None)
            attribution = attribute_generation(
                lm,
                prompt,
                response,
                method=method,
                target=target,  # type: ignore[arg-type]
                foil=foil,
                aggregate=aggregate,
                chat=not no_chat,
                max_new_tokens=max_new_tokens,
            )
            progress.update(step, total=1, completed=1)
    except AttribkitError as e:
        raise exit_with(e) from None
    if as_json:
        typer.echo(json.dumps(token_attribution_json(attribution), ensure_ascii=False))
        return
    print_token_attribution(attribution, console=console)


@app.command("select-heads")
def select_heads_command(
    out: Path = typer.Option(..., "--out", help="Where to write the heads file (JSON)."),
    model: str = typer.Option("smollm2", "--model", help="Model name or local path."),
    families: str = typer.Option(
        "needle,birthplace", "--families", help="Training case families, comma-separated."
    ),
    n_sentences: int = typer.Option(10, "--n-sentences", help="Sentences per training case."),
    n_cases: int = typer.Option(20, "--n-cases", help="Training cases per family."),
    seed: int = typer.Option(0, "--seed", help="Seed of the training cases."),
    n_heads: int = typer.Option(8, "--n-heads", help="How many heads to keep."),
    eval_sets: str = typer.Option(
        "needle:10,birthplace:10,injection:10,two_hop:10,redundant_injection:10,"
        "needle:50,needle:200",
        "--eval",
        help="Held-out sets, family:n_sentences, comma-separated.",
    ),
    eval_cases: int = typer.Option(20, "--eval-cases", help="Cases per held-out set."),
    eval_seed: int = typer.Option(1, "--eval-seed", help="Seed of the held-out cases."),
    threads: int = typer.Option(0, "--threads", help="Torch threads (0: leave as is)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress lines on stderr."),
) -> None:
    """Select the attention heads of `attention_heads` (AT2-lite) for a model on synthetic
    cases, evaluate them on held-out cases and write the heads file (the format of
    attribkit/data/heads/<model>.json)."""
    from attribkit.core.errors import AttribkitError
    from attribkit.methods.context.head_selection import dumps_heads, select_and_evaluate_heads
    from attribkit.models import load

    if threads:
        import torch

        torch.set_num_threads(threads)
    say = None if quiet else (lambda message: typer.echo(message, err=True))
    try:
        spec = select_and_evaluate_heads(
            load(model),
            model_name=model,
            families=families,
            n_sentences=n_sentences,
            n_cases=n_cases,
            seed=seed,
            n_heads=n_heads,
            eval_sets=eval_sets,
            eval_cases=eval_cases,
            eval_seed=eval_seed,
            log=say,
        )
    except AttribkitError as e:
        raise exit_with(e) from None
    out.write_text(dumps_heads(spec), encoding="utf-8")
    if say is not None:
        say(f"wrote {out}")


@app.command("train-heads")
def train_heads_command(
    data: Path = typer.Option(
        ...,
        "--data",
        help="Cases, JSONL in the schema of context_qa/dev.jsonl (meta.split=val: validation).",
    ),
    out: Path = typer.Option(..., "--out", help="Where to write the heads file (JSON)."),
    model: str = typer.Option("smollm2", "--model", help="Model name or local path."),
    max_examples: int = typer.Option(0, "--max-examples", help="Use the first N cases (0: all)."),
    cache: Path = typer.Option(
        Path("~/.cache/attribkit/head_training"),
        "--cache",
        help="Folder of the per-case features and LOO targets (refits cost no model calls).",
    ),
    objectives: str = typer.Option(
        "pearson,listwise", "--objectives", help="Fitting objectives to try, comma-separated."
    ),
    n_heads: str = typer.Option(
        "8,16,24,32", "--n-heads", help="How many heads to keep: candidates, comma-separated."
    ),
    steps: int = typer.Option(1000, "--steps", help="Adam steps per fit."),
    threads: int = typer.Option(0, "--threads", help="Torch threads (0: leave as is)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress lines on stderr."),
) -> None:
    """Learn the attention-head weights of `attention_heads` on real QA cases (AT2: leave-one-out
    targets, non-negative L1-normalised weights) and write the heads file (the format of
    attribkit/data/heads/<model>.json). Costs 1 + (n + 1) passes per uncached case."""
    from attribkit.core.errors import AttribkitError, InputError
    from attribkit.methods.context.head_selection import dumps_heads
    from attribkit.methods.context.head_training import read_cases, train_heads
    from attribkit.methods.context.heads import load_heads
    from attribkit.models import load

    if threads:
        import torch

        torch.set_num_threads(threads)
    say = None if quiet else (lambda message: typer.echo(message, err=True))
    try:
        grid = [int(k) for k in n_heads.split(",") if k.strip()]
        objs = [o.strip() for o in objectives.split(",") if o.strip()]
        cases = read_cases(data, max_examples or None)
        lm = load(model)
        baselines = {}
        try:
            synthetic = load_heads(lm, variant="synthetic")
            baselines["synthetic_heads"] = (synthetic["heads"], synthetic["weights"])
        except InputError:
            pass
        spec = train_heads(
            lm,
            cases,
            model_name=model,
            data_name=str(data),
            cache_dir=cache.expanduser() / model.replace("/", "_"),
            objectives=objs,
            n_heads_grid=grid,
            steps=steps,
            baselines=baselines,
            log=say,
        )
    except (AttribkitError, ValueError) as e:
        raise exit_with(e) from None
    spec["selection"]["command"] = (
        f"attribkit train-heads --data {data} --out {out} --model {model} --cache {cache}"
        + (f" --max-examples {max_examples}" if max_examples else "")
        + f" --objectives {','.join(objs)} --n-heads {','.join(map(str, grid))} --steps {steps}"
    )
    out.write_text(dumps_heads(spec), encoding="utf-8")
    if say is not None:
        say(f"wrote {out}")
