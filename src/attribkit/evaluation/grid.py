"""Grid localisation: DiFull, DiPart and GridPG (Rao, Böhle & Schiele, 'Towards Better
Understanding Attribution Methods', CVPR 2022).

A grid image puts n×n confidently classified images of *distinct* classes side by side. A grid
model answers, for each cell k (row-major), "which class is in cell k?":

- **DiFull** — the backbone runs on every cell separately and head k pools only cell k's
  features, so nothing outside cell k can influence head k: attribution placed outside the cell
  is provably wrong (ground truth, exact). Intermediate activations are the per-cell outputs
  stitched back into a grid, so methods can be applied at any backbone stage (ML-Att).
- **DiPart** — the backbone runs on the whole grid (receptive fields cross cell borders) and head
  k pools only cell k's region of the feature map (approximate ground truth).
- **GridPG** — the plain model on the whole grid, one head pooled over everything: the output is
  just the C class logits (explain class c of cell k with target c). The model may legitimately
  use other cells, so a low score does not prove an attribution unfaithful.

For DiFull and DiPart the model outputs (B, n²·C) logits: head k's logits for cell k, so the
target for class c in cell k is ``k * C + c`` (:meth:`GridModel.target`).

The localisation score of a map A for cell k is Σ_{p∈cell k} A⁺_p / Σ_p A⁺_p (0 when the
denominator is ≤ 1e-7); chance is 1/n².

This module holds the evaluation (grids, localisation, :func:`evaluate_grid`); the grid models
themselves (:class:`GridModel`, :class:`GridClassifier`) are built in :mod:`attribkit.models.grid`
and re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from attribkit.core.attribution import Attribution
from attribkit.core.cost import Cost
from attribkit.core.errors import InputError
from attribkit.core.registry import attribute, get_method
from attribkit.models.grid import GridClassifier, GridModel
from attribkit.models.image import ImageClassifier
from attribkit.tasks.image import ImageTask

__all__ = [
    "GridClassifier",
    "GridEvaluation",
    "GridModel",
    "Grids",
    "cell_slices",
    "evaluate_grid",
    "grid_localization",
    "make_grids",
]


# -- grids ---------------------------------------------------------------------------------------


@dataclass
class Grids:
    """Grid images and what each cell holds (from :func:`make_grids`).

    Attributes:
        images: (G, n·h, n·w, 3) float32 display images in [0, 1].
        labels: (G, n²) class of each cell (row-major); distinct within a grid.
        targets: (G, n²) DiFull/DiPart output index of each cell's head: ``k·C + labels[:, k]``
            (for GridPG use ``labels``).
        sources: (G, n²) index of each cell's image in the images given to make_grids.
        confidence: (G, n²) the model's probability of each cell's class on its own.
        n, n_classes, cell: cells per side, classes C, and the cell size (h, w).
        kept: how many given images passed the confidence (and correctness) filter.
        cost: the forward passes the filter took.
    """

    images: np.ndarray
    labels: np.ndarray
    targets: np.ndarray
    sources: np.ndarray
    confidence: np.ndarray
    n: int
    n_classes: int
    cell: tuple[int, int]
    kept: int
    cost: Cost = field(default_factory=Cost)

    def __len__(self) -> int:
        return len(self.images)

    def target(self, grid: int, head: int, setting: str = "difull") -> int:
        """The output index for cell ``head`` of grid ``grid`` in ``setting``."""
        return int(self.labels[grid, head] if setting == "gridpg" else self.targets[grid, head])


def make_grids(
    model: ImageClassifier,
    images: Any,
    labels: Sequence[int] | np.ndarray | None = None,
    *,
    n: int = 2,
    conf: float = 0.9,
    count: int = 50,
    seed: int | None = 0,
    reuse: bool = False,
) -> Grids:
    """``count`` n×n grids of images of distinct classes, each image confidently (probability ≥
    ``conf``) and — when ``labels`` are given — correctly classified by ``model`` on its own
    (Rao et al. use every evaluated model, 0.99 and 500 grids).

    ``images``: a sequence or array of same-size images (anything ``model.prepare`` takes);
    classes are the model's predictions. Without ``reuse`` each image goes into at most one grid
    (as in the paper) and too few images is an InputError; with it, images may repeat across
    grids (never within one). Cells are filled in random order (``seed``). Cost: one forward
    pass per image (batched). Returns :class:`Grids`.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"n must be a positive integer, got {n!r}")
    if count < 1:
        raise InputError("count must be >= 1")
    if len(images) == 0:
        raise InputError("no images given")
    prepared = np.stack([model.prepare(im) for im in images])
    before = model.cost.copy()
    probs = model.predict(prepared)
    cost = model.cost - before
    pred, top = probs.argmax(1), probs.max(1)
    ok = top >= conf
    if labels is not None:
        labels = np.asarray(labels).ravel()
        if len(labels) != len(prepared):
            raise InputError(f"{len(labels)} labels for {len(prepared)} images")
        ok &= pred == labels
    idx = np.flatnonzero(ok)
    classes = np.unique(pred[idx])
    k = n * n
    if len(classes) < k:
        raise InputError(
            f"only {len(classes)} classes among the {len(idx)} images classified with probability "
            f">= {conf}; a {n}x{n} grid needs {k} distinct classes: give more images or lower conf"
        )
    rng = np.random.default_rng(seed)
    pools = {int(c): list(rng.permutation(idx[pred[idx] == c])) for c in classes}
    chosen: list[list[int]] = []
    for _ in range(count):
        avail = [c for c in pools if pools[c]]
        if len(avail) < k:
            raise InputError(
                f"only {len(chosen)} grids can be built without reusing images ({len(idx)} "
                f"confident images); pass reuse=True or a lower count"
            )
        sizes = np.array([len(pools[c]) for c in avail], dtype=float)
        pick = rng.choice(len(avail), size=k, replace=False, p=sizes / sizes.sum())
        cells = []
        for j in rng.permutation(pick):
            c = avail[j]
            if reuse:
                cells.append(int(pools[c][rng.integers(len(pools[c]))]))
            else:
                cells.append(int(pools[c].pop()))
        chosen.append(cells)
    src = np.array(chosen, dtype=np.int64)
    h, w = prepared.shape[1:3]
    tiles = prepared[src]  # (G, k, h, w, 3)
    grid_imgs = (
        tiles.reshape(len(src), n, n, h, w, 3)
        .transpose(0, 1, 3, 2, 4, 5)
        .reshape(len(src), n * h, n * w, 3)
    )
    lab = pred[src]
    n_classes = probs.shape[1]
    return Grids(
        images=np.ascontiguousarray(grid_imgs, dtype=np.float32),
        labels=lab,
        targets=np.arange(k)[None, :] * n_classes + lab,
        sources=src,
        confidence=top[src],
        n=n,
        n_classes=n_classes,
        cell=(int(h), int(w)),
        kept=len(idx),
        cost=cost,
    )


# -- localisation --------------------------------------------------------------------------------


def cell_slices(shape: tuple[int, int], head: int, n: int) -> tuple[slice, slice]:
    """Row and column slices of cell ``head`` (row-major) of an n×n grid over ``shape``
    (boundaries at ⌊i·H/n⌋)."""
    if not 0 <= head < n * n:
        raise InputError(f"head must be a cell index in 0..{n * n - 1}, got {head}")
    h, w = shape
    r, c = divmod(head, n)
    return slice(r * h // n, (r + 1) * h // n), slice(c * w // n, (c + 1) * w // n)


def _positive_masses(heatmap: np.ndarray, head: int, n: int) -> tuple[float, float]:
    pos = np.clip(heatmap, 0.0, None)
    rs, cs = cell_slices(heatmap.shape, head, n)
    return float(pos[rs, cs].sum()), float(pos.sum())


def grid_localization(heatmap: Any, head: int, n: int = 2) -> float:
    """Rao et al.'s localisation score: positive mass of the map inside cell ``head`` / its total
    positive mass (0 when the total is ≤ 1e-7); chance is 1/n². ``heatmap``: an (H, W) array or
    an image Attribution (its upsampled map). No model call."""
    m = np.asarray(heatmap.heatmap if isinstance(heatmap, Attribution) else heatmap, dtype=float)
    if m.ndim != 2:
        raise InputError(f"the map must be 2-D (H, W), got shape {m.shape}")
    if not np.isfinite(m).all():
        raise InputError("the map has NaN or infinite values")
    inside, total = _positive_masses(m, head, n)
    return 0.0 if total <= 1e-7 else inside / total


class _GridTask(ImageTask):
    """An ImageTask on a grid classifier: probabilities are per head (softmax over that head's
    C logits only, so DiFull's guarantee holds for perturbation methods too), and layer maps
    can be upsampled with nearest neighbours (exact cell boundaries)."""

    def __init__(
        self, model: GridClassifier, image: Any, target: int, output: str, upsample: str
    ) -> None:
        self._mode = upsample
        super().__init__(model, image, target, output)

    def transform(self, logits: torch.Tensor, output: str | None = None) -> torch.Tensor:
        out = output or self.output
        grid = self.model.grid  # type: ignore[attr-defined]
        if grid.setting == "gridpg" or out == "logit":
            return super().transform(logits, out)
        c = grid.n_classes
        head = logits.reshape(logits.shape[0], -1, c)
        z = torch.softmax(head, -1) if out == "prob" else torch.log_softmax(head, -1)
        return z.reshape(logits.shape[0], -1)[:, self.target]

    def upsample(self, cell_map: Any) -> np.ndarray:
        if self._mode == "bilinear":
            return super().upsample(cell_map)
        m = torch.as_tensor(np.asarray(cell_map, dtype=np.float64))
        if tuple(m.shape) == self.shape:
            return m.numpy()
        return F.interpolate(m[None, None], size=self.shape, mode="nearest-exact")[0, 0].numpy()


def _attribute(
    model: GridClassifier,
    image: np.ndarray,
    target: int,
    method: str,
    params: dict[str, Any],
    upsample: str,
) -> Attribution:
    from attribkit.tasks.image import default_output, method_for_images

    if "units" not in params:  # score the n² cells (the default 16-px patches may be too big)
        h, w = image.shape[:2]
        n = model.grid.n
        params["units"] = (np.arange(h)[:, None] * n // h) * n + np.arange(w)[None, :] * n // w
    spec = method_for_images(method)
    output = params.pop("output", None) or default_output(spec)
    return attribute(_GridTask(model, image, target, output, upsample), method, **params)  # type: ignore[no-any-return]


def _accepts(method: str, name: str) -> bool:
    try:
        return get_method(method, kind="image").accepts(name)
    except InputError:
        return False


@dataclass
class GridEvaluation:
    """Result of :func:`evaluate_grid`.

    ``rows``: one dict per (grid, head, method, layer) with ``localization``, ``in_cell`` and
    ``total`` positive mass, ``target``; ``maps[(method, layer, head)]``: the (G, H, W) heatmaps
    (when kept) and ``scores[(method, layer, head)]`` the (G,) localisation scores — the inputs of
    :func:`~attribkit.evaluation.aggatt.aggatt`; ``cost``: all model calls.
    """

    rows: list[dict[str, Any]]
    maps: dict[tuple[str, str, int], np.ndarray]
    scores: dict[tuple[str, str, int], np.ndarray]
    setting: str
    n: int
    cost: Cost = field(default_factory=Cost)

    def summary(self) -> list[dict[str, Any]]:
        """Per (method, layer): mean and median localisation, the fraction of samples above
        0.99, and the number of (grid, head) samples."""
        groups: dict[tuple[str, str], list[float]] = {}
        for r in self.rows:
            groups.setdefault((r["method"], r["layer"]), []).append(r["localization"])
        return [
            {
                "method": m,
                "layer": layer,
                "mean": float(np.mean(v)),
                "median": float(np.median(v)),
                "above_0.99": float(np.mean(np.asarray(v) > 0.99)),
                "n": len(v),
            }
            for (m, layer), v in groups.items()
        ]


def evaluate_grid(
    model: GridClassifier | GridModel,
    grids: Grids,
    methods: str | Sequence[str] | dict[str, dict[str, Any]],
    *,
    heads: str | Iterable[int] = "corners",
    layer: str | Sequence[str] | None = "input",
    upsample: str = "bilinear",
    keep_maps: bool = True,
) -> GridEvaluation:
    """Localisation of each method on each grid at each evaluated head (Rao et al. 2022).

    ``methods``: image method names, or ``{label: params}`` (``params["method"]`` names the
    method when the label is not its name; other params go to the method). ``heads``:
    ``"corners"`` (top-left and bottom-right, the paper's choice for DiFull/DiPart), ``"all"``
    or cell indices. ``layer``: one or several layers (``"input"``, ``"middle"``, ``"final"`` or
    grid layer names) passed to methods that take ``layer=`` (ML-Att; a method's own
    ``layer`` param wins). ``upsample``: how layer maps reach the grid's resolution —
    ``"bilinear"`` (the paper; bleeds across cell borders by a pixel or so) or ``"nearest"``
    (exact cell boundaries) — for the gradient methods, which use the task's upsampling.
    Probabilities are per head (softmax over that head's classes).

    Returns a :class:`GridEvaluation`. Cost: what the methods cost, plus one forward pass per
    attribution (the target check).
    """
    clf = model.as_classifier() if isinstance(model, GridModel) else model
    if not isinstance(clf, GridClassifier):
        raise InputError("evaluate_grid needs a GridModel or GridModel.as_classifier()")
    if upsample not in ("bilinear", "nearest"):
        raise InputError(f"upsample must be 'bilinear' or 'nearest', got {upsample!r}")
    grid = clf.grid
    n = grid.n
    if grids.n != n:
        raise InputError(f"the grids are {grids.n}x{grids.n} but the model is {n}x{n}")
    if heads == "corners":
        head_list = [0, n * n - 1] if n > 1 else [0]
    elif heads == "all":
        head_list = list(range(n * n))
    elif isinstance(heads, str):
        raise InputError(f"heads must be 'corners', 'all' or cell indices, got {heads!r}")
    else:
        head_list = [int(h) for h in heads]
        for h in head_list:
            if not 0 <= h < n * n:
                raise InputError(f"head {h} is not a cell index (0..{n * n - 1})")
    if isinstance(methods, str):
        methods = [methods]
    specs = dict(methods) if isinstance(methods, dict) else {m: {} for m in methods}
    layers = [layer] if layer is None or isinstance(layer, str) else list(layer)
    rows: list[dict[str, Any]] = []
    maps: dict[tuple[str, str, int], list[np.ndarray]] = {}
    scores: dict[tuple[str, str, int], list[float]] = {}
    total = Cost()
    for label, params in specs.items():
        params = dict(params or {})
        method = params.pop("method", label)
        own_layer = "layer" in params
        use_layers = [params["layer"]] if own_layer else layers
        takes_layer = _accepts(method, "layer")
        for lay in use_layers if takes_layer or own_layer else [None]:
            kw = dict(params)
            if takes_layer or own_layer:
                kw["layer"] = lay
            lay_name = str(lay) if lay is not None else "-"
            for g in range(len(grids)):
                for h in head_list:
                    t = grids.target(g, h, grid.setting)
                    a = _attribute(clf, grids.images[g], t, method, dict(kw), upsample)
                    total = total + a.cost + Cost(forward_passes=1)
                    hm = a.heatmap
                    inside, tot = _positive_masses(hm, h, n)
                    loc = 0.0 if tot <= 1e-7 else inside / tot
                    key = (label, lay_name, h)
                    scores.setdefault(key, []).append(loc)
                    if keep_maps:
                        maps.setdefault(key, []).append(hm.astype(np.float32))
                    rows.append(
                        {"grid": g, "head": h, "method": label, "layer": lay_name, "target": t,
                         "localization": loc, "in_cell": inside, "total": tot}
                    )  # fmt: skip
    return GridEvaluation(
        rows=rows,
        maps={k: np.stack(v) for k, v in maps.items()},
        scores={k: np.asarray(v) for k, v in scores.items()},
        setting=grid.setting,
        n=n,
        cost=total,
    )
