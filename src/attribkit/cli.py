"""The ``attribkit`` command line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from attribkit.core.jsonio import to_json

if TYPE_CHECKING:
    from attribkit.core.attribution import Attribution

app = typer.Typer(add_completion=False, no_args_is_help=True, help="git blame for model outputs.")
console = Console()
err_console = Console(stderr=True)

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


def _progress(on: Console = console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=on,
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
        with _progress(err_console) as progress:
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
        raise _fail(
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
        with _progress(err_console) as progress:
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
        raise _fail(e) from None
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
        raise _fail(e) from None
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
        raise _fail(e) from None
    spec["selection"]["command"] = (
        f"attribkit train-heads --data {data} --out {out} --model {model} --cache {cache}"
        + (f" --max-examples {max_examples}" if max_examples else "")
        + f" --objectives {','.join(objs)} --n-heads {','.join(map(str, grid))} --steps {steps}"
    )
    out.write_text(dumps_heads(spec), encoding="utf-8")
    if say is not None:
        say(f"wrote {out}")


def _fail(e: Exception) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {e}", highlight=False)
    return typer.Exit(2)


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
        raise _fail(
            ImportError(f"the viewer needs its extra ({e}); pip install 'attribkit[serve]'")
        ) from None
    try:
        serve(store, host=host, port=port, model=model)
    except AttribkitError as e:
        raise _fail(e) from None


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
        'file) | "turns", "outcome"?, "max_turn_chars"?, "with_answer"?, "id"?}; machine_text '
        '{"text", "id"?}; provenance {"text", "source"? (the true author when known, kept for '
        'evaluation), "id"?}.',
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
        raise _fail(e) from None
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
        raise _fail(FileNotFoundError(f"no run store at {store}; pass --store PATH"))
    try:
        with run_store.open(store) as runs:
            found = runs.query(method=method, model=model, task=task, dataset=dataset, limit=limit)
    except AttribkitError as e:
        raise _fail(e) from None
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
        raise _fail(e) from None
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
        raise _fail(e) from None
    console.print(f"{n} runs imported into {store}", highlight=False)


if __name__ == "__main__":  # pragma: no cover
    app()


def read_image(source: str) -> object:
    """An image from a file path or ``skimage:NAME`` (a photo bundled with scikit-image, e.g.
    ``skimage:chelsea``) or ``sklearn:NAME`` (``china.jpg``, ``flower.jpg``)."""
    from attribkit.core.errors import InputError

    if source.startswith("skimage:"):
        from skimage import data

        name = source.split(":", 1)[1]
        loader = getattr(data, name, None)
        if loader is None or name.startswith("_") or not callable(loader):
            raise InputError(f"scikit-image has no sample image {name!r} (try chelsea, coffee)")
        return loader()
    if source.startswith("sklearn:"):
        from sklearn.datasets import load_sample_image

        name = source.split(":", 1)[1]
        try:
            return load_sample_image(name)
        except AttributeError:
            raise InputError(f"scikit-learn has no sample image {name!r}") from None
    return Path(source)


@app.command("image")
def image_command(
    source: str = typer.Argument(
        ..., help="Image file, or skimage:NAME / sklearn:NAME for a bundled photo."
    ),
    method: str = typer.Option("grad_cam", "--method", help="Image method (`attribkit methods`)."),
    target: str | None = typer.Option(
        None, "--target", help="Class index or name (default: the predicted class)."
    ),
    layer: str | None = typer.Option(
        None, "--layer", help="input, middle, final or a module name (methods with layers)."
    ),
    units: str = typer.Option("patches", "--units", help="patches, superpixels or pixels."),
    model: str = typer.Option("efficientnet-lite0", "--model", help="Image model name."),
    out: Path | None = typer.Option(None, "--out", help="Write the overlay PNG here."),
    save: Path | None = typer.Option(None, "--save", help="Write the Attribution JSON here."),
) -> None:
    """Which regions of an image made the model predict its class? Prints the top classes and
    the method's cost; writes the heat map over the image as a PNG."""
    from attribkit.core.errors import AttribkitError
    from attribkit.models import load
    from attribkit.tasks.image import attribute_image
    from attribkit.viz.image import save_overlay

    params: dict[str, object] = {}
    if layer is not None:
        params["layer"] = layer
    cls: int | str | None = int(target) if target is not None and target.isdigit() else target
    try:
        img = read_image(source)
        with _progress(err_console) as progress:
            step = progress.add_task(f"Loading model {model}", total=None)
            classifier = load(model)
            progress.update(step, total=1, completed=1)
            step = progress.add_task(f"Attributing ({method})", total=None)
            a = attribute_image(classifier, img, cls, method=method, units=units, **params)
            progress.update(step, total=1, completed=1)
        prepared = classifier.prepare(img)
        probs = classifier.predict(prepared[None])[0]
    except AttribkitError as e:
        raise _fail(e) from None
    top = probs.argsort()[::-1][:3]
    console.print(
        "model says: " + ", ".join(f"{classifier.label(int(i))} {probs[i]:.2f}" for i in top),
        highlight=False,
    )
    t = a.target
    console.print(
        f"explained: class {t['class']} ({t.get('label', '')}), {t['output']}, "
        f"method {a.method}, cost {a.cost}",
        highlight=False,
    )
    if out is not None:
        console.print(f"overlay written to {save_overlay(a, out)}", highlight=False)
    if save is not None:
        console.print(f"attribution written to {a.save(save)}", highlight=False)


study_app = typer.Typer(no_args_is_help=True, help="Compare methods over many inputs.")
app.add_typer(study_app, name="study")

DEFAULT_STUDY_IMAGES = (
    "skimage:chelsea,skimage:coffee,skimage:rocket,skimage:astronaut,"
    "sklearn:china.jpg,sklearn:flower.jpg"
)


@study_app.command("images")
def study_images_command(
    methods: str = typer.Option(
        "grad_cam,integrated_gradients,occlusion", "--methods", help="Comma-separated methods."
    ),
    metrics: str = typer.Option(
        "insertion,deletion,srg,difull", "--metrics", help="insertion, deletion, srg, difull."
    ),
    images: str = typer.Option(
        DEFAULT_STUDY_IMAGES, "--images", help="Comma-separated files or skimage:/sklearn: names."
    ),
    out: Path = typer.Option(Path("attribkit-study"), "--out", help="Folder for the results."),
    steps: int = typer.Option(20, "--steps", help="Points per insertion/deletion curve."),
    grids: int = typer.Option(8, "--grids", help="2x2 grids for the DiFull metric."),
    model: str = typer.Option("efficientnet-lite0", "--model", help="Image model name."),
) -> None:
    """Run several image methods and metrics over a set of images: a table (table.md,
    results.json) with a random-order row, and AggAtt figures for DiFull."""
    from attribkit.core.errors import AttribkitError
    from attribkit.evaluation.study import image_study
    from attribkit.models import load

    try:
        pictures = [read_image(s.strip()) for s in images.split(",") if s.strip()]
        result = image_study(
            load(model),
            pictures,
            [m.strip() for m in methods.split(",") if m.strip()],
            [m.strip() for m in metrics.split(",") if m.strip()],
            steps=steps,
            grids=grids,
            out=out,
        )
    except AttribkitError as e:
        raise _fail(e) from None
    console.print(result.table(), highlight=False)
    for name, text in result.protocol.items():
        console.print(f"{name}: {text}", highlight=False)
    console.print(f"written to {out}/ ({len(result.figures)} AggAtt figures)", highlight=False)


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
        with _progress(err_console) as progress:
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
        raise _fail(e) from None
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


def agents_json(attribution: Attribution, log: object) -> dict[str, object]:
    """The one JSON object ``attribkit agents LOG --json`` prints: the shared fields, the
    ``decision`` ({agent, step, reason}), ``agent_scores``, the log's ``id`` and its gold
    ``mistake_agent``/``mistake_step`` when known. No log text beyond the turn labels."""
    return {
        "id": getattr(log, "id", None),
        **attribution_json(attribution),
        "decision": to_json(attribution.extras.get("decision")),
        "agent_scores": to_json(attribution.extras.get("agent_scores")),
        "gold": {
            "agent": getattr(log, "mistake_agent", None),
            "step": getattr(log, "mistake_step", None),
        },
    }


@app.command("agents")
def agents_command(
    path: Path = typer.Argument(
        ...,
        help="A Who&When log (JSON), a JSON list of turns, or with --evaluate a folder of logs.",
    ),
    method: str | None = typer.Option(
        None, "--method", help="Agents or perturbation method (default turn_loo)."
    ),
    model: str = typer.Option(
        "smollm2", "--model", help="Model name or local path (the reader, and the local judge)."
    ),
    judge_url: str | None = typer.Option(
        None, "--judge-url", help="OpenAI-compatible chat endpoint for judge methods."
    ),
    judge_model: str | None = typer.Option(None, "--judge-model", help="Model name at the URL."),
    judge_key_env: str | None = typer.Option(
        None, "--judge-key-env", help="NAME of the environment variable holding the API key."
    ),
    with_answer: bool = typer.Option(
        False, "--with-answer", help="Give judges the correct answer (Who&When's with-GT setting)."
    ),
    outcome: str = typer.Option(
        "final", "--outcome", help="What judge-free methods score: final (last turn) or gold."
    ),
    max_turn_chars: int | None = typer.Option(
        None, "--max-turn-chars", help="Cut every turn to N characters (logs over the window)."
    ),
    evaluate: bool = typer.Option(
        False, "--evaluate", help="PATH is a folder: score every log against its gold labels."
    ),
    predictions: Path | None = typer.Option(
        None, "--predictions", help="With --evaluate: write Who&When's prediction file here."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object."),
) -> None:
    """Which agent, at which step, caused a multi-agent failure (Who&When, A2P, ablations)?

    Prints ids, steps, agents and scores only, never the logs' text."""
    import json

    from attribkit.core.errors import AttribkitError, InputError
    from attribkit.evaluation.who_when import (
        baseline_predictions,
        cross_fitted_majority,
        who_when_score,
        write_predictions,
    )
    from attribkit.models import ChatJudge, LocalJudge, load
    from attribkit.tasks.agents import DEFAULT_METHOD, AgentLog, AgentTask
    from attribkit.viz.console import print_attribution

    method = method or DEFAULT_METHOD
    if (judge_url is None) != (judge_model is None):
        raise _fail(InputError("--judge-url and --judge-model go together"))
    try:
        if evaluate:
            if not path.is_dir():
                raise InputError(f"--evaluate needs a folder of logs, got {path}")
            logs = AgentLog.from_dir(path)
            if not logs:
                raise InputError(f"no .json log in {path}")
        else:
            if path.is_dir():
                raise InputError(f"{path} is a folder: pass one log, or add --evaluate")
            logs = [AgentLog.from_file(path)]
        with _progress(err_console) as progress:
            step = progress.add_task(f"Loading model {model}", total=None)
            lm = load(model)
            progress.update(step, total=1, completed=1)
            judge = (
                ChatJudge(judge_url, judge_model, api_key_env=judge_key_env)
                if judge_url is not None and judge_model is not None
                else LocalJudge(lm)
            )
            results: list[Attribution | None] = []
            failures: list[str] = []
            step = progress.add_task(f"Attributing ({method})", total=len(logs))
            for log in logs:
                try:
                    task = AgentTask(
                        log,
                        lm=lm,
                        judge=judge,
                        outcome=outcome,
                        with_answer=with_answer,
                        max_turn_chars=max_turn_chars,
                    )
                    results.append(task.attribute(method))
                except InputError as e:
                    if not evaluate:
                        raise
                    results.append(None)  # counted unparsed, as the official scorer would
                    failures.append(f"{log.id}: {e}")
                progress.advance(step)
    except AttribkitError as e:
        raise _fail(e) from None

    if not evaluate:
        attribution, log = results[0], logs[0]
        assert attribution is not None
        if as_json:
            typer.echo(json.dumps(agents_json(attribution, log), ensure_ascii=False))
            return
        decision = attribution.extras.get("decision") or {}
        console.print(
            f"[bold]Decision:[/bold] agent {decision.get('agent')!s}, step "
            f"{decision.get('step')!s} ({attribution.method})",
            highlight=False,
        )
        if log.mistake_agent is not None:
            console.print(
                f"[bold]Gold:[/bold] agent {log.mistake_agent}, step {log.mistake_step}",
                highlight=False,
            )
        print_attribution(attribution, console=console)
        totals = attribution.extras.get("agent_scores") or {}
        for agent, value in sorted(totals.items(), key=lambda kv: -kv[1]):
            console.print(f"  {agent}: {value:+.4f}", highlight=False)
        return

    if predictions is not None:
        write_predictions(results, logs, predictions)
    rows = {
        method: results,
        "random": baseline_predictions(logs, "random"),
        "most_turns": baseline_predictions(logs, "most_turns"),
        "majority (5-fold)": cross_fitted_majority(logs) if len(logs) >= 5 else None,
    }
    report: dict[str, object] = {"logs": len(logs), "method": method, "failed": failures}
    for name, preds in rows.items():
        if preds is None:
            continue
        exact = who_when_score(preds, logs)
        official = who_when_score(preds, logs, scoring="official")
        report[name] = {"exact": exact.to_dict(), "official": official.to_dict()}
    if as_json:
        for name in rows:  # per-log rows carry ids only; keep the summary short
            for scoring in ("exact", "official"):
                entry = report.get(name)
                if isinstance(entry, dict):
                    entry[scoring].pop("rows", None)
        typer.echo(json.dumps(to_json(report), ensure_ascii=False))
        return
    console.print(f"{len(logs)} logs, method {method}; {len(failures)} failed (counted wrong)")
    for name in rows:
        entry = report.get(name)
        if not isinstance(entry, dict):
            continue
        e, o = entry["exact"]["metrics"], entry["official"]["metrics"]
        console.print(
            f"  {name:>20}: agent {100 * e['agent']['mean']:5.1f} % step "
            f"{100 * e['step']['mean']:5.1f} % (exact); agent {100 * o['agent']['mean']:5.1f} % "
            f"step {100 * o['step']['mean']:5.1f} % (official)",
            highlight=False,
        )
    for failure in failures:
        console.print(f"  failed {failure}", highlight=False)
    if predictions is not None:
        console.print(f"predictions written to [bold]{predictions}[/bold]")


def provenance_json(attribution: Attribution) -> dict[str, object]:
    """The one JSON object ``attribkit authorship --json`` prints: ``prediction`` (a known
    source or ``"unknown"``), ``scores`` (source → probability, higher = more likely),
    ``confidence``, ``threshold``, ``unknown``, ``source`` (the explained source) and
    ``explanation`` (the shared fields of the units that drove the decision)."""
    target = attribution.target
    return {
        "prediction": target["prediction"],
        "scores": target["scores"],
        "confidence": target["confidence"],
        "threshold": target["threshold"],
        "unknown": target["unknown"],
        "source": target["source"],
        "model": target.get("model"),
        "explanation": attribution_json(attribution),
    }


@app.command("authorship")
def authorship_command(
    known: Path = typer.Option(
        ..., "--known", help="A folder holding one folder of .txt texts per author."
    ),
    unknown: Path = typer.Option(..., "--unknown", help="The text file whose author is asked."),
    method: str = typer.Option(
        "delta", "--method", help="delta (Burrows' Delta), mfw (word logistic) or ngram (char SVM)."
    ),
    threshold: float | None = typer.Option(
        None,
        "--threshold",
        help="Answer 'unknown' below this max probability (default: cross-validated on the "
        "known texts to accept 95 % of them).",
    ),
    closed_set: bool = typer.Option(
        False, "--closed-set", help="Always answer a known author (no 'unknown')."
    ),
    units: str = typer.Option(
        "sentences", "--units", help="What the explanation scores: sentences, words, paragraphs."
    ),
    explain: str = typer.Option(
        "loo", "--explain", help="Perturbation method that explains the decision."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object."),
    html: Path | None = typer.Option(None, "--html", help="Also write an HTML report here."),
) -> None:
    """Who wrote this text: one of the known authors, or none of them (open-set authorship)?"""
    import json

    from attribkit.core.errors import AttribkitError, InputError
    from attribkit.core.units import TextUnits
    from attribkit.models.authorship import open_set_authorship, read_author_folders
    from attribkit.tasks.provenance import ProvenanceTask
    from attribkit.viz.console import print_attribution
    from attribkit.viz.html import save_html

    try:
        if closed_set and threshold is not None:
            raise InputError("--closed-set and --threshold contradict each other; give one")
        texts, authors = read_author_folders(known)
        if not unknown.is_file():
            raise InputError(f"{unknown} is not a file: pass the text whose author is asked")
        try:
            text = unknown.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"{unknown} is not UTF-8 text ({e.reason}); convert it") from None
        # Delta rejects on its max logit (−Delta to the nearest author), the others on max p
        rejector, rule = open_set_authorship(
            (texts, authors), method, threshold=threshold, closed_set=closed_set
        )
        threshold = rejector.tau
        if units == "sentences" and len(TextUnits.sentences(text)) < 2:
            units = "words"  # one sentence: explain it word by word
        task = ProvenanceTask(text, rejector, units=units)
        attribution = task.attribute(explain)
    except AttribkitError as e:
        raise _fail(e) from None
    attribution.extras["threshold_rule"] = rule
    if html is not None:
        save_html(attribution, html)
    if as_json:
        out = provenance_json(attribution)
        out["threshold_rule"] = rule
        typer.echo(json.dumps(out, ensure_ascii=False))
        return
    decision = task.decision
    shown = ", ".join(
        f"{a} {p:.3f}" for a, p in sorted(decision["scores"].items(), key=lambda kv: -kv[1])
    )
    console.print(f"[bold]Prediction:[/bold] {decision['prediction']}", highlight=False)
    console.print(f"[bold]Scores:[/bold] {shown}", highlight=False)
    if threshold is not None:
        console.print(
            f"[bold]Threshold:[/bold] {decision['confidence_score']} {threshold:.3f} ({rule}); "
            f"this text {decision['confidence']:.3f}",
            highlight=False,
        )
    print_attribution(attribution, console=console)
    if html is not None:
        console.print(f"HTML report written to [bold]{html}[/bold]")


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _is_image_source(path: Path) -> bool:
    """A photo (by its suffix, or ``skimage:NAME`` / ``sklearn:NAME``) rather than a text."""
    text = str(path)
    return text.startswith(("skimage:", "sklearn:")) or path.suffix.lower() in IMAGE_SUFFIXES


@app.command("detect")
def detect_command(
    path: Path = typer.Argument(
        ...,
        help="A text file (was it written by a language model?) or a photo (png, jpg, "
        "skimage:NAME: which regions made the detector find this object?).",
    ),
    method: str | None = typer.Option(
        None,
        "--method",
        help="Text: fast_detectgpt (default), log_perplexity, binoculars, detectgpt. "
        "Photo: vps (default), drise, or a perturbation method over regions.",
    ),
    model: str | None = typer.Option(
        None, "--model", help="Text: scoring LM (default smollm2). Photo: detector (blazeface)."
    ),
    reference: str | None = typer.Option(
        None,
        "--reference",
        help="Text: a second model sharing the tokenizer (Fast-DetectGPT's sampler, Binoculars' "
        "performer; default: the scoring model).",
    ),
    units: str = typer.Option(
        "tokens",
        "--units",
        help="Text: tokens, or sentences (co-authored text: a score per sentence).",
    ),
    target: int | None = typer.Option(
        None, "--target", help="Photo: the index of the detection to explain (default: the top)."
    ),
    box: str | None = typer.Option(
        None, "--box", help="Photo: explain this box X1,Y1,X2,Y2 instead (a missed object)."
    ),
    label: str | None = typer.Option(None, "--label", help="Photo: the class of --box."),
    out: Path | None = typer.Option(None, "--out", help="Photo: write the overlay PNG here."),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object."),
    html: Path | None = typer.Option(None, "--html", help="Also write an HTML report here."),
) -> None:
    """Was this text written by a language model (a zero-shot detector's statistic, higher =
    more machine-like, and the tokens or sentences that drove it)? Or, for a photo: which
    regions made the object detector find (or miss) this object (VPS, D-RISE)?"""
    import json

    from attribkit.core.errors import AttribkitError, InputError
    from attribkit.models import load
    from attribkit.viz.console import print_attribution
    from attribkit.viz.html import save_html

    image = _is_image_source(path)
    try:
        if not image and (target is not None or box or label or out):
            raise InputError("--target, --box, --label and --out apply to a photo, not a text")
        if image and (reference is not None or units != "tokens"):
            raise InputError("--reference and --units apply to a text, not a photo")
        with _progress(err_console) as progress:
            name = model or ("blazeface" if image else "smollm2")
            step = progress.add_task(f"Loading model {name}", total=None)
            if image:
                attribution = _detect_object(
                    path, load(name), method or "vps", target, box, label, progress, step
                )
            else:
                attribution = _detect_machine_text(
                    path, load(name), method or "fast_detectgpt", reference, units, progress, step
                )
    except AttribkitError as e:
        raise _fail(e) from None
    if html is not None:
        save_html(attribution, html)
    if image:
        if out is not None:
            from attribkit.viz.image import save_overlay

            save_overlay(attribution, out)
        if as_json:
            typer.echo(json.dumps({**attribution_json(attribution),
                                   "target": to_json(attribution.target),
                                   "model": model or "blazeface"}, ensure_ascii=False))  # fmt: skip
            return
        t = attribution.target
        console.print(
            f"[bold]{attribution.method}[/bold] on {t.get('label')} box {t.get('box')}",
            highlight=False,
        )
        print_attribution(attribution, console=console)
        if out is not None:
            console.print(f"Overlay written to [bold]{out}[/bold]")
        return
    statistic = float(attribution.extras["statistic"])
    if as_json:
        ref = reference or model or "smollm2"
        out_json = {"statistic": statistic, "model": model or "smollm2", "reference": ref}
        out_json.update(attribution_json(attribution))
        typer.echo(json.dumps(out_json, ensure_ascii=False))
        return
    console.print(
        f"[bold]{attribution.method}[/bold] statistic {statistic:+.3f} (higher = more "
        "machine-like; compare with texts you know the source of: the scale depends on the "
        "model and length)",
        highlight=False,
    )
    print_attribution(attribution, console=console)
    if html is not None:
        console.print(f"HTML report written to [bold]{html}[/bold]")


def _detect_machine_text(
    path: Path, lm: object, method: str, reference: str | None, units: str, progress, step
) -> Attribution:
    """``attribkit detect`` on a text file: the machine-text detector's Attribution."""
    from attribkit.core.errors import InputError
    from attribkit.models import load
    from attribkit.tasks.machine_text import attribute_machine_text

    if not path.is_file():
        raise InputError(f"{path} is not a file: pass the text to test")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path} is not UTF-8 text ({e.reason}); convert it") from None
    ref = load(reference) if reference is not None else None
    progress.update(step, total=1, completed=1)
    step = progress.add_task(f"Detecting ({method})", total=None)
    attribution = attribute_machine_text(text, lm, method, reference=ref, units=units)
    progress.update(step, total=1, completed=1)
    return attribution


def _detect_object(
    path: Path, detector: object, method: str, target: int | None, box: str | None,
    label: str | None, progress, step,
) -> Attribution:  # fmt: skip
    """``attribkit detect`` on a photo: the object detection's Attribution."""
    from attribkit.core.errors import InputError
    from attribkit.tasks.detection import attribute_detection

    source = read_image(str(path))
    if isinstance(source, Path) and not source.is_file():
        raise InputError(f"{path} is not a file: pass a photo (png, jpg) or skimage:NAME")
    kw: dict[str, object] = {}
    if box is not None:
        try:
            kw["box"] = tuple(float(v) for v in box.split(","))
        except ValueError:
            raise InputError(f"--box {box!r}: give four numbers X1,Y1,X2,Y2") from None
        if len(kw["box"]) != 4:  # type: ignore[arg-type]
            raise InputError(f"--box {box!r}: give four numbers X1,Y1,X2,Y2")
        kw["label"] = label if label is not None else 0
    elif label is not None:
        raise InputError("--label goes with --box (the class of a given box)")
    progress.update(step, total=1, completed=1)
    step = progress.add_task(f"Explaining the detection ({method})", total=None)
    attribution = attribute_detection(detector, source, target, method, **kw)
    progress.update(step, total=1, completed=1)
    return attribution


# --- recourse: reasons a denied person can act on ------------------------------------------------
_MISSING = {"", "na", "n/a", "nan"}


def _label(value: str) -> str:
    """A class label as text, numbers normalised (``"1.0"`` and ``"1"`` are the same class)."""
    v = value.strip()
    try:
        x = float(v)
    except ValueError:
        return v
    return str(int(x)) if np.isfinite(x) and x == int(x) else v


def read_recourse_csv(
    path: Path, target: str
) -> tuple[np.ndarray, list[str], list[str], dict[str, list[str]]]:
    """Read a CSV (a header row, one row per person) for ``attribkit recourse``: returns ``(X,
    names, y, categorical)``. Numeric columns are kept as numbers; a column holding any
    non-numeric value is categorical and one-hot encoded as columns ``"<column>=<value>"``
    (values in sorted order); ``categorical`` maps each such column to its encoded columns. The
    ``target`` column gives ``y``, labels as text (``"1.0"`` read as ``"1"``). InputError for a
    missing file, an empty CSV, duplicate or empty column names, ragged rows, an unknown target
    column, a target with a single class and missing values (empty, NA, NaN, inf; naming the row,
    0-based among the data rows, and the column). No model calls."""
    import csv

    from attribkit.core.errors import InputError

    if not path.is_file():
        raise InputError(f"no such CSV file: {path}")
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            lines = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    except (UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"{path} is not a readable UTF-8 CSV file: {e}") from None
    if not lines:
        raise InputError(f"{path} is empty: give a header row and one row per person")
    header = [h.strip() for h in lines[0]]
    rows = lines[1:]
    if not rows:
        raise InputError(f"{path} has a header but no data rows")
    if any(not h for h in header):
        raise InputError(f"{path}: column {header.index('') + 1} of the header has no name")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise InputError(f"{path}: the header names column(s) {dupes} more than once")
    if target not in header:
        raise InputError(
            f"{path} has no column {target!r} to predict; its columns: {', '.join(header)}"
        )
    for r, row in enumerate(rows):
        if len(row) != len(header):
            raise InputError(f"{path}: row {r} has {len(row)} fields, the header has {len(header)}")
    cells = {h: [row[j].strip() for row in rows] for j, h in enumerate(header)}
    for h, values in cells.items():
        for r, v in enumerate(values):
            if v.lower() in _MISSING or v.lower().lstrip("+-") in ("inf", "infinity"):
                raise InputError(
                    f"{path}: row {r}, column {h!r} is missing or not finite ({v!r}); impute or "
                    "drop it first"
                )
    y = [_label(v) for v in cells[target]]
    if len(set(y)) < 2:
        raise InputError(
            f"the target column {target!r} holds a single class ({y[0]!r}): a classifier needs "
            "rows of at least two classes"
        )
    columns: list[np.ndarray] = []
    names: list[str] = []
    categorical: dict[str, list[str]] = {}
    for h in header:
        if h == target:
            continue
        values = cells[h]
        try:
            columns.append(np.array([float(v) for v in values]))
            names.append(h)
            continue
        except ValueError:
            pass
        levels = sorted(set(values))
        encoded = [f"{h}={level}" for level in levels]
        clash = sorted(set(encoded) & set(header))
        if clash:
            raise InputError(
                f"{path}: the one-hot columns of {h!r} would be named like existing column(s) "
                f"{clash}; rename them"
            )
        for level in levels:
            columns.append(np.array([float(v == level) for v in values]))
        names += encoded
        categorical[h] = encoded
    if not names:
        raise InputError(f"{path} has no feature column besides the target {target!r}")
    return np.column_stack(columns), names, y, categorical


_CATEGORY_KEYS = {"actionable", "direction", "max_change", "why"}


def recourse_actions(
    source: Path,
    names: list[str],
    categorical: dict[str, list[str]],
    target: str,
) -> object:
    """The :class:`~attribkit.models.actions.ActionSet` of ``attribkit recourse`` from an
    ACTIONS.json file (the format of :mod:`attribkit.models.actions`) over the encoded columns
    ``names``. A rule keyed by a categorical CSV column (``"housing": {"actionable": true,
    "direction": "both"}``) becomes the rule of its one-hot group (keys ``actionable``,
    ``direction``, ``max_change`` (levels), ``why``; levels in sorted order of the values);
    every other categorical column is an immutable one-hot group, unless ``__groups__`` puts
    its encoded columns (``"housing=own"``...) in a group of its own. Rules may also name encoded
    columns (bounds only, as for any grouped column). InputError for a missing or invalid file, a
    rule naming a column the CSV does not have (or the target), and every error of the action
    set itself. No model calls."""
    import json

    from attribkit.core.errors import InputError
    from attribkit.models.actions import ActionSet

    if not source.is_file():
        raise InputError(f"no such action set file: {source}")
    try:
        spec = json.loads(source.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{source} is not valid JSON: {e}") from None
    if not isinstance(spec, dict):
        raise InputError(f"{source} must hold a JSON object mapping columns to rules")
    out: dict[str, object] = {}
    groups = dict(spec.get("__groups__") or {})
    known = set(names)
    shown = [c for c in names if not any(c in cols for cols in categorical.values())]
    shown += list(categorical)
    for key, rule in spec.items():
        if key.startswith("__"):
            out[key] = rule
        elif key == target:
            raise InputError(
                f"{source} has a rule for {target!r}, the target column: the model predicts it, "
                "a person does not act on it"
            )
        elif key in categorical:
            if not isinstance(rule, dict) or set(rule) - _CATEGORY_KEYS:
                raise InputError(
                    f"{source}: {key!r} is a categorical column (one-hot encoded): its rule takes "
                    f"only {sorted(_CATEGORY_KEYS)}, got {rule!r}"
                )
            if len(categorical[key]) < 2:
                raise InputError(
                    f"{source}: the categorical column {key!r} has a single value in the CSV; "
                    "there is nothing to change it to"
                )
            if key in groups:
                raise InputError(f"{source}: {key!r} has a rule and a group; give one")
            groups[key] = {"kind": "onehot", "columns": categorical[key], **rule}
        elif key in known:
            out[key] = rule
        else:
            raise InputError(
                f"{source} names the column {key!r}, which the CSV does not have; its feature "
                f"columns: {', '.join(shown)}"
            )
    taken = {str(c) for g in groups.values() if isinstance(g, dict) for c in g.get("columns") or []}
    for column, encoded in categorical.items():
        if len(encoded) > 1 and column not in groups and not taken & set(encoded):
            groups[column] = {"kind": "onehot", "columns": encoded, "actionable": False}
    if groups:
        out["__groups__"] = groups
    return ActionSet.from_dict(out, names)


@app.command("recourse")
def recourse_command(
    path: Path = typer.Argument(..., help="A CSV file: a header row, one row per person."),
    target: str = typer.Option(..., "--target", help="The column the model predicts."),
    actions: Path = typer.Option(
        ...,
        "--actions",
        help="ACTIONS.json: what each column allows (columns left out are immutable).",
    ),
    model: str = typer.Option(
        "logreg", "--model", help="logreg (standardised logistic regression) or hgb."
    ),
    favourable: str | None = typer.Option(
        None, "--favourable", help="The favourable class of the target (default: 1)."
    ),
    method: str = typer.Option(
        "kernel_shap", "--method", help="Attribution method giving the reasons."
    ),
    k: int = typer.Option(4, "--k", help="Reasons per denied row."),
    by: str = typer.Option(
        "abs", "--by", help="Rank reasons by abs, negative or positive attribution."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON list: one object per denied row."
    ),
) -> None:
    """Why was each denied row denied, and can the person change it? Fits a model on the CSV,
    explains every row it denies with an attribution method (the reasons: top-k features) and
    scores each feature's responsiveness (the share of its feasible actions that flip the
    decision; Cheon et al., ICLR 2025). String columns are one-hot encoded (a rule on the
    column name in ACTIONS.json moves the group as one)."""
    import json
    import warnings

    from attribkit.core.errors import AttribkitError, InputError
    from attribkit.core.registry import attribute
    from attribkit.evaluation.recourse import RANKINGS, reasons_without_recourse, top_reasons
    from attribkit.methods.tabular.responsiveness import responsiveness
    from attribkit.models.tabular import TabularModel
    from attribkit.tasks.tabular import TabularTask

    try:
        if model not in ("logreg", "hgb"):
            raise InputError(f"--model must be logreg or hgb, got {model!r}")
        if k < 1:
            raise InputError("--k must be at least 1")
        if by not in RANKINGS:
            raise InputError(f"--by must be one of {', '.join(RANKINGS)}, got {by!r}")
        X, names, y, categorical = read_recourse_csv(path, target)
        aset = recourse_actions(actions, names, categorical, target)
        aset.check(X)  # bounds and groups, naming the CSV row
        classes = sorted(set(y))
        good = _label(favourable) if favourable is not None else "1"
        if good not in classes:
            hint = "" if favourable is not None else " (the default is 1): pass --favourable"
            raise InputError(
                f"the favourable class {good!r} is not a class of {target!r}{hint}; its classes: "
                f"{', '.join(classes)}"
            )
        estimator = _recourse_model(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence notes of a small CSV
            estimator.fit(X, np.asarray(y, dtype=object))
        adapter = TabularModel(estimator)
        denied = [int(i) for i in np.nonzero(adapter.predict(X) != good)[0]]
        results: list[dict[str, object]] = []
        atts, resps = [], []
        if denied:
            with _progress(err_console) as progress:
                step = progress.add_task(f"Responsiveness of {len(denied)} denied rows", total=1)
                resps = responsiveness(adapter, X[denied], aset, target=good, feature_names=names)
                progress.update(step, completed=1)
                step = progress.add_task(f"Reasons ({method})", total=len(denied))
                for i in denied:
                    task = TabularTask(
                        adapter, X[i], feature_names=names, background=X, target=good, actions=aset
                    )
                    atts.append(attribute(task, method))
                    progress.advance(step)
    except AttribkitError as e:
        raise _fail(e) from None
    for i, a, r in zip(denied, atts, resps, strict=True):
        resp = {n: float(s) for n, s in zip(names, r.vector, strict=True)}
        a.extras["responsiveness"] = resp  # the viewer's convention (attribkit.viz.html)
        a.extras["fixed"] = bool(r.extras["fixed"])
        reasons = [
            {"feature": x.name, "score": x.score, "responsive": resp[x.name] > 0}
            for x in top_reasons(a, k, by)
        ]
        results.append(
            {"row": i, "reasons": reasons, "responsiveness": resp, "fixed": a.extras["fixed"]}
        )
    if as_json:
        typer.echo(json.dumps(to_json(results), ensure_ascii=False))
        return
    typer.echo(
        f"{len(denied)} of {len(y)} rows denied by the {model} model (favourable {target} = "
        f"{good}); reasons: top {k} by {by} {method} attribution of P({good})"
    )
    for row in results:
        fixed = "  FIXED: no single-feature action flips the decision" if row["fixed"] else ""
        typer.echo(f"row {row['row']}{fixed}")
        reasons = row["reasons"]
        assert isinstance(reasons, list)
        if not reasons:
            typer.echo("    (no feature has a non-zero attribution)")
        width = max((len(str(reason["feature"])) for reason in reasons), default=0)
        for n, reason in enumerate(reasons, start=1):
            score = row["responsiveness"][reason["feature"]]  # type: ignore[index]
            mark = f"responsive ({score:.2f})" if reason["responsive"] else "not responsive"
            name = str(reason["feature"]).ljust(width)
            typer.echo(f"  {n}. {name}  {reason['score']:+.4f}  {mark}")
    if denied:
        rep = reasons_without_recourse(atts, resps, k=k, by=by)

        def pct(x: float) -> str:
            return "n/a" if x != x else f"{100 * x:.0f}%"

        typer.echo(
            f"reasons without recourse over {rep.n} denied rows: all {k} unresponsive "
            f"{pct(rep.all_unresponsive)}, at least one unresponsive "
            f"{pct(rep.some_unresponsive)}, at least one responsive {pct(rep.some_responsive)}, "
            f"fixed {pct(rep.fixed)}"
        )


def _recourse_model(name: str) -> object:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name == "hgb":
        return HistGradientBoostingClassifier(random_state=0)
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


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
        with _progress(err_console) as progress:
            step = progress.add_task(f"Attributing {x.shape[0]} steps ({method})", total=None)
            attribution = attribute_timeseries(
                net, x, method, units=split, width=width, stride=stride, target=target
            )
            progress.update(step, total=1, completed=1)
    except AttribkitError as e:
        raise _fail(e) from None
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
