"""Who produced this: ``authorship`` and ``detect`` (machine text, or objects in a photo)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from attribkit.cli._app import app, attribution_json, console, err_console, exit_with, progress_bar
from attribkit.cli.image import read_image
from attribkit.core.jsonio import to_json

if TYPE_CHECKING:
    from attribkit.core.attribution import Attribution


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
        raise exit_with(e) from None
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
        with progress_bar(err_console) as progress:
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
        raise exit_with(e) from None
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
