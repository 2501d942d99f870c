"""Images: ``image`` and ``study images``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from attribkit.cli._app import app, console, err_console, exit_with, progress_bar

if TYPE_CHECKING:
    pass


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
        with progress_bar(err_console) as progress:
            step = progress.add_task(f"Loading model {model}", total=None)
            classifier = load(model)
            progress.update(step, total=1, completed=1)
            step = progress.add_task(f"Attributing ({method})", total=None)
            a = attribute_image(classifier, img, cls, method=method, units=units, **params)
            progress.update(step, total=1, completed=1)
        prepared = classifier.prepare(img)
        probs = classifier.predict(prepared[None])[0]
    except AttribkitError as e:
        raise exit_with(e) from None
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
        raise exit_with(e) from None
    console.print(result.table(), highlight=False)
    for name, text in result.protocol.items():
        console.print(f"{name}: {text}", highlight=False)
    console.print(f"written to {out}/ ({len(result.figures)} AggAtt figures)", highlight=False)
