"""A study recipe: several image methods × several metrics over a set of images, as one table.

This is how the robust-CNN study (Nourelahi et al., 'How explainable are adversarially-robust
CNNs?', 2022) and the DiFull paper (Rao, Böhle & Schiele, 'Towards Better Understanding
Attribution Methods', 2022) compare methods: every method on the same images, insertion and
deletion next to a random-order row, grid localisation with AggAtt figures, and the cost of each.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attribkit.core.errors import InputError
from attribkit.models.image import ImageClassifier

__all__ = ["METRICS", "StudyResult", "image_study"]

#: metric name -> what it reports (higher is better unless said).
METRICS = {
    "insertion": "insertion AUC (RISE protocol, blurred start)",
    "deletion": "MoRF deletion AUC to a zero image (lower is better; see the random row)",
    "srg": "LeRF − MoRF deletion AUC (symmetric relevance gain)",
    "difull": "DiFull localisation on 2×2 grids (1 = all positive mass in the target cell)",
}
CURVE_METRICS = ("insertion", "deletion", "srg")


@dataclass
class StudyResult:
    """Per-method means over the images (``rows``), per-image values (``per_image``), the
    protocol of each metric, AggAtt figures written, and the total cost."""

    rows: list[dict[str, Any]]
    per_image: list[dict[str, Any]]
    protocol: dict[str, str]
    figures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def table(self) -> str:
        """The rows as a GitHub-markdown table."""
        if not self.rows:
            return ""
        keys = list(self.rows[0])
        lines = ["| " + " | ".join(keys) + " |", "|" + "|".join("---:" for _ in keys) + "|"]
        for r in self.rows:
            cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def save(self, out: str | Path) -> Path:
        """Write ``table.md`` (table + protocol) and ``results.json`` into the folder ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        notes = "\n".join(f"- {k}: {v}" for k, v in self.protocol.items())
        (out / "table.md").write_text(self.table() + "\n\n" + notes + "\n", encoding="utf-8")
        data = {
            "rows": self.rows,
            "per_image": self.per_image,
            "protocol": self.protocol,
            "figures": self.figures,
            "seconds": self.seconds,
        }
        (out / "results.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
        return out


def _mean(values: list[float | None]) -> float | None:
    v = [x for x in values if x is not None and np.isfinite(x)]
    return float(np.mean(v)) if v else None


def image_study(
    model: ImageClassifier,
    images: Sequence[Any],
    methods: Sequence[str] | dict[str, dict[str, Any]],
    metrics: Sequence[str] = ("insertion", "deletion", "srg"),
    *,
    steps: int = 20,
    granularity: Any = "patch",
    grids: int = 8,
    grid_conf: float = 0.5,
    out: str | Path | None = None,
    progress: bool = True,
    seed: int = 0,
) -> StudyResult:
    """Run every method on every image and score it with every metric; returns a
    :class:`StudyResult` (one row per method plus a ``random order`` row) and, with ``out``,
    writes ``table.md``, ``results.json`` and (for ``difull``) one AggAtt PNG per method.

    ``methods``: image method names or ``{label: params}`` (``params["method"]`` names the
    method when the label is not its name). ``metrics``: any of :data:`METRICS`. Insertion and
    deletion use :func:`~attribkit.evaluation.image_curves.insertion_deletion` with ``steps``
    steps over ``granularity`` units; ``difull`` builds ``grids`` 2×2 grids of the images
    (distinct predicted classes, probability ≥ ``grid_conf``, images reused across grids) and
    runs :func:`~attribkit.evaluation.grid.evaluate_grid` at the corners. Cost: each method's
    own cost per image, plus about 6·``steps`` forward passes per map for the curves and each
    method's cost per grid head; a progress bar shows the (image, method) pairs.
    """
    from attribkit.evaluation.image_curves import insertion_deletion
    from attribkit.tasks.image import attribute_image

    unknown = sorted(set(metrics) - set(METRICS))
    if unknown or not metrics:
        raise InputError(f"unknown metrics {unknown}; choose from {', '.join(METRICS)}")
    if not images:
        raise InputError("give at least one image to study")
    specs = {m: {} for m in methods} if not isinstance(methods, dict) else dict(methods)
    if not specs:
        raise InputError("give at least one method")
    start = time.perf_counter()
    prepared = [model.prepare(img) for img in images]
    per_image: list[dict[str, Any]] = []
    curves_wanted = [m for m in metrics if m in CURVE_METRICS]
    protocol: dict[str, str] = {}
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        disable=not progress,
        transient=True,
    ) as bar:
        job = bar.add_task("image study", total=len(prepared) * len(specs))
        for i, img in enumerate(prepared):
            for label, params in specs.items():
                p = dict(params)
                name = p.pop("method", label)
                bar.update(job, description=f"{label} on image {i + 1}/{len(prepared)}")
                a = attribute_image(model, img, method=name, **p)
                row: dict[str, Any] = {
                    "image": i,
                    "method": label,
                    "forward": a.cost.forward_passes,
                    "backward": a.cost.backward_passes,
                    "seconds": a.cost.seconds,
                }
                if curves_wanted:
                    c = insertion_deletion(
                        model, img, a, steps=steps, granularity=granularity, seed=seed
                    )
                    protocol["insertion/deletion"] = re.sub(r" of class \d+", "", c.protocol)
                    row.update(insertion=c.insertion, deletion=c.deletion, srg=c.srg)
                    if c.random is not None:
                        row.update({f"random_{k}": v for k, v in c.random.items()})
                per_image.append(row)
                bar.advance(job)

    rows: list[dict[str, Any]] = []
    for label in specs:
        mine = [r for r in per_image if r["method"] == label]
        row = {"method": label}
        for m in curves_wanted:
            row[m] = _mean([r[m] for r in mine])
        rows.append(row)
    if curves_wanted:
        random_row: dict[str, Any] = {"method": "random order"}
        for m in curves_wanted:
            random_row[m] = _mean([r.get(f"random_{m}") for r in per_image])
        rows.append(random_row)
    figures: list[str] = []
    if "difull" in metrics:
        loc, figures = _difull(model, prepared, specs, grids, grid_conf, out, seed)
        for row in rows:
            row["difull"] = loc.get(row["method"])
        protocol["difull"] = (
            f"DiFull on {grids} 2×2 grids of the images (each cell {prepared[0].shape[0] // 2} px, "
            "the backbone run on each cell alone), corner heads, mean share of positive "
            "attribution inside the target cell; the random row is chance (0.25)"
        )
        for row in rows:
            if row["method"] == "random order":
                row["difull"] = 0.25
    for row in rows:
        mine = [r for r in per_image if r["method"] == row["method"]]
        if mine:
            row["forward/img"] = float(np.mean([r["forward"] for r in mine]))
            row["backward/img"] = float(np.mean([r["backward"] for r in mine]))
            row["s/img"] = float(np.mean([r["seconds"] for r in mine]))
        else:
            row.update({"forward/img": 0.0, "backward/img": 0.0, "s/img": 0.0})
    result = StudyResult(rows, per_image, protocol, figures, seconds=time.perf_counter() - start)
    if out is not None:
        result.save(out)
    return result


def _default_layer(method: str) -> str | None:
    """The ``layer`` default of an image method (None when it takes no layer)."""
    from attribkit.core.registry import get_method

    try:
        return get_method(method, kind="image").default("layer")  # type: ignore[no-any-return]
    except InputError:
        return None


def _difull(
    model: ImageClassifier,
    prepared: list[np.ndarray],
    specs: dict[str, dict[str, Any]],
    count: int,
    conf: float,
    out: str | Path | None,
    seed: int,
) -> tuple[dict[str, float], list[str]]:
    """Mean DiFull localisation per method label, and the AggAtt figures written."""
    import torch
    import torch.nn.functional as F

    from attribkit.evaluation.aggatt import aggatt, aggatt_figure
    from attribkit.evaluation.grid import GridModel, evaluate_grid, make_grids

    size = prepared[0].shape[0]
    half = size // 2
    cells = [
        F.interpolate(
            torch.from_numpy(img).permute(2, 0, 1)[None],
            size=(half, half),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )[0]
        .permute(1, 2, 0)
        .numpy()
        for img in prepared
    ]
    grid_model = GridModel.from_classifier(model, n=2, setting="difull")
    cell_model = ImageClassifier(
        model.module,
        input_size=None,
        normalize=model.normalize,
        labels=model.labels,
        batch_size=model.batch_size,
    )
    made = make_grids(cell_model, cells, n=2, conf=conf, count=count, seed=seed, reuse=True)
    methods = {}
    for label, params in specs.items():
        name = params.get("method", label)
        methods[label] = dict(params, method=name)
        default = _default_layer(name)
        if default is not None and "layer" not in params:  # each method at its own layer
            methods[label]["layer"] = default
    evaluation = evaluate_grid(grid_model, made, methods, heads="corners")
    loc = {s["method"]: s["mean"] for s in evaluation.summary()}
    figures: list[str] = []
    if out is not None:
        for (label, layer, head), maps in evaluation.maps.items():
            if head != 0:
                continue
            scores = evaluation.scores[(label, layer, head)]
            bins = (
                (0, 0.02, 0.05, 0.5, 0.95, 0.98, 1.0)
                if len(maps) >= 50
                else (0, 0.25, 0.5, 0.75, 1.0)
            )
            if len(maps) < len(bins) - 1:
                bins = (0.0, 1.0)
            agg = aggatt(maps, scores, bins=bins, head=head, n=2)
            safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in label)
            figures.append(str(aggatt_figure(agg, Path(out) / f"aggatt_{safe}.png")))
    return loc, figures
