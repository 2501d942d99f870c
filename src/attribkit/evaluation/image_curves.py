"""Faithfulness and localisation of image attribution maps.

- :func:`insertion_deletion` — the RISE protocol (Petsiuk, Das & Saenko, 'RISE: Randomized Input
  Sampling for Explanation of Black-box Models', 2018): reveal pixels (or patches, or any units) in
  the order of the map onto a blurred image (insertion) or replace them by a baseline (deletion),
  and integrate the target's probability. Deletion alone mis-ranks methods (a random order or a
  scattered map kills confidence fast by making the image out of distribution; design notes §3.2),
  so it always reports the most-relevant-first (MoRF) and least-relevant-first (LeRF) deletion
  AUCs, their difference SRG = LeRF − MoRF (Blücher, Vielhaben & Strodthoff, 'Decoupling Pixel
  Flipping and Occlusion Strategy for Consistent XAI Benchmarks', 2024), every AUC divided by the
  clean score f(x) (Nourelahi, Kotthoff, Chen & Nguyen, 'How explainable are
  adversarially-robust CNNs?', 2022: insertion and deletion track the model's confidence), and the
  same numbers for a seeded random order.
- :func:`subset_curves` — the subset protocol of SMDL / LiMA (Chen et al., 'Less is More: Fewer
  Interpretable Region via Submodular Subset Selection', 2024): units revealed in a ranked order,
  x axis = fraction of the image area revealed (insertion) or removed (deletion).
- :func:`pointing_game` — hit when the map's maximum falls inside the object (with a tolerance;
  Zhang et al., 'Top-down Neural Attention by Excitation Backprop', 2016) and the energy-based
  pointing game (share of positive mass inside the box; Wang et al., 'Score-CAM', 2020).
- :func:`mask_fidelity` — sufficiency and comprehensiveness of a soft mask (Zou et al.,
  'Towards Comprehensive Attribution' / COMET, 2024): f(S⊙x + (1−S)⊙q) and f((1−S)⊙x + S⊙q).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import Cost, measure
from attribkit.core.errors import InputError
from attribkit.core.jsonio import to_json
from attribkit.core.units import ImageUnits
from attribkit.evaluation.curves import Curve
from attribkit.models.image import ImageClassifier
from attribkit.tasks.image import ImageTask

__all__ = [
    "ImageCurves",
    "MaskFidelity",
    "PointingGame",
    "SubsetCurves",
    "auc",
    "energy_pointing_game",
    "insertion_deletion",
    "mask_fidelity",
    "pointing_game",
    "subset_curves",
]

Granularity = str | int | np.ndarray | ImageUnits


def auc(values: Sequence[float] | np.ndarray, fractions: Sequence[float] | None = None) -> float:
    """Trapezoid area under ``values`` over ``fractions`` (default: evenly spaced on [0, 1]).
    A constant curve at c has area c on [0, 1]. No model call."""
    y = np.asarray(values, dtype=float)
    x = np.linspace(0.0, 1.0, len(y)) if fractions is None else np.asarray(fractions, dtype=float)
    if y.ndim != 1 or x.shape != y.shape or len(y) < 2:
        raise InputError(
            f"a curve needs >= 2 points and one fraction per value (got {y.shape} values, "
            f"{x.shape} fractions)"
        )
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0)


# -- shared helpers -------------------------------------------------------------------------------


def _as_map(heatmap: Any, task: ImageTask) -> np.ndarray:
    hm = heatmap.heatmap if isinstance(heatmap, Attribution) else heatmap
    if hm is None:
        raise InputError("give the attribution map (an (H, W) array or an image Attribution)")
    hm = np.asarray(hm, dtype=float)
    if hm.ndim != 2:
        raise InputError(f"the attribution map must be 2-D (H, W), got shape {hm.shape}")
    if not np.isfinite(hm).all():
        raise InputError("the attribution map has NaN or infinite values; replace them first")
    return hm if hm.shape == task.shape else task.upsample(hm)


def _resolve_task(
    task_or_model: Any, image_or_map: Any, attribution: Any, target: Any, output: str
) -> tuple[ImageTask, Any]:
    """``(task, map)`` from ``(task, map)`` or ``(model, image, map)``."""
    if isinstance(task_or_model, ImageTask):
        if attribution is not None:
            raise InputError(
                "with an ImageTask give only the map: insertion_deletion(task, heatmap); the "
                "task already holds the image"
            )
        return task_or_model, image_or_map
    if isinstance(task_or_model, ImageClassifier):
        if attribution is None:
            raise InputError(
                "give the model, the image and its map: insertion_deletion(model, image, heatmap)"
            )
        if target is None and isinstance(attribution, Attribution):
            target = (attribution.target or {}).get("class")
        return ImageTask(task_or_model, image_or_map, target, output=output), attribution
    raise InputError(
        f"insertion_deletion takes an ImageTask or an ImageClassifier, got "
        f"{type(task_or_model).__name__}"
    )


def _segments(shape: tuple[int, int], granularity: Granularity) -> tuple[np.ndarray, str]:
    """An (H, W) map of unit ids 0..n-1 and a description of the units."""
    h, w = shape
    if isinstance(granularity, ImageUnits):
        seg = granularity.segments
        if seg.shape != shape:
            raise InputError(f"units cover {seg.shape}, the image is {shape}")
        return seg, f"{len(granularity)} given units"
    if isinstance(granularity, np.ndarray):
        if granularity.shape != shape or not np.issubdtype(granularity.dtype, np.integer):
            raise InputError(
                f"a label map must be an integer (H, W) = {shape} array, got {granularity.dtype} "
                f"{granularity.shape}"
            )
        seg = np.unique(granularity, return_inverse=True)[1].reshape(shape)
        return seg, f"{int(seg.max()) + 1} labelled regions"
    if granularity == "pixel":
        patch = 1
    elif granularity == "patch":
        patch = 16
    elif isinstance(granularity, (int, np.integer)) and not isinstance(granularity, bool):
        patch = int(granularity)
        if patch < 1:
            raise InputError("a patch granularity must be >= 1 pixel")
    else:
        raise InputError(
            f"unknown granularity {granularity!r}: use 'pixel', 'patch' (16 px), an int patch "
            "size, an (H, W) integer label map or ImageUnits"
        )
    rows, cols = np.arange(h) // patch, np.arange(w) // patch
    seg = rows[:, None] * (int(cols.max()) + 1) + cols[None, :]
    return seg, ("pixels" if patch == 1 else f"{patch}-px patches")


def _baseline(task: ImageTask, kind: Any, sigma: float) -> np.ndarray:
    if isinstance(kind, str) and kind not in ("zero", "blur", "mean"):
        raise InputError(f"unknown baseline {kind!r}: use 'zero', 'blur', 'mean' or an image array")
    img = task.baseline_image(kind, blur_sigma=sigma)
    if img.shape != task.image.shape:
        raise InputError(f"a baseline image must have the image's shape {task.image.shape}")
    return img


def _name(kind: Any) -> str:
    return kind if isinstance(kind, str) else "given"


# -- RISE protocol --------------------------------------------------------------------------------


@dataclass
class ImageCurves:
    """Result of :func:`insertion_deletion` (all AUCs on the [0, 1] area axis, trapezoid rule).

    Attributes:
        insertion: insertion AUC, most relevant first (higher is better).
        deletion: MoRF deletion AUC (lower is better — but see ``random``: a random order often
            "wins" here, so never rank methods by it alone).
        lerf: LeRF deletion AUC (higher is better); None when ``"lerf"`` was not in ``orders``.
        srg: ``lerf − deletion`` (symmetric relevance gain; higher is better), or None.
        normalized: each of the above divided by the clean score f(x).
        random: the same keys for a seeded random order (None if ``random_reference=False``).
        curves: the :class:`~attribkit.evaluation.curves.Curve` of each ordering
            (``"insertion"``, ``"deletion"``, ``"lerf"`` and ``"random_*"``); their ``fractions``
            are area fractions.
        full_value, deletion_end, insertion_start: f(x), f(deletion baseline), f(insertion start).
        protocol: a sentence saying exactly what was measured (print it next to the numbers).
        params, cost: the settings and the model calls (forward passes) the curves took.
    """

    insertion: float
    deletion: float
    lerf: float | None
    srg: float | None
    normalized: dict[str, float | None]
    random: dict[str, float | None] | None
    curves: dict[str, Curve]
    full_value: float
    deletion_end: float
    insertion_start: float
    protocol: str
    params: dict[str, Any]
    cost: Cost = field(default_factory=Cost)

    def scores(self) -> dict[str, float | None]:
        """``{"insertion", "deletion", "lerf", "srg"}`` of the map."""
        return {"insertion": self.insertion, "deletion": self.deletion, "lerf": self.lerf,
                "srg": self.srg}  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return to_json(
            {
                **self.scores(),
                "normalized": self.normalized,
                "random": self.random,
                "curves": {k: c.to_dict() for k, c in self.curves.items()},
                "full_value": self.full_value,
                "deletion_end": self.deletion_end,
                "insertion_start": self.insertion_start,
                "protocol": self.protocol,
                "params": self.params,
                "cost": self.cost.to_dict(),
            }
        )

    def __repr__(self) -> str:
        def f(v: float | None) -> str:
            return "-" if v is None else f"{v:.3f}"

        r = self.random or {}
        return (
            f"ImageCurves(insertion={f(self.insertion)}, deletion={f(self.deletion)}, "
            f"lerf={f(self.lerf)}, srg={f(self.srg)}; random: insertion={f(r.get('insertion'))}, "
            f"deletion={f(r.get('deletion'))}; {self.cost})"
        )


def _norm(v: float | None, full: float) -> float | None:
    if v is None:
        return None
    return v / full if full != 0 else float("nan")


def insertion_deletion(
    task_or_model: ImageTask | ImageClassifier,
    image_or_map: Any,
    heatmap_or_attribution: Any = None,
    *,
    target: int | str | None = None,
    steps: int = 100,
    granularity: Granularity = "pixel",
    deletion_baseline: str | np.ndarray = "zero",
    insertion_start: str | np.ndarray = "blur",
    orders: Sequence[str] = ("morf", "lerf"),
    output: str | None = "prob",
    random_reference: bool = True,
    seed: int | None = 0,
    blur_sigma: float | None = None,
) -> ImageCurves:
    """Insertion and deletion curves of an image attribution map (RISE protocol).

    Call as ``insertion_deletion(task, heatmap)`` or ``insertion_deletion(model, image, heatmap)``
    (``heatmap`` an (H, W) array — a lower-resolution map is upsampled bilinearly — or an image
    :class:`Attribution`, whose target class is then used unless ``target`` is given).

    Units (``granularity``): ``"pixel"``, ``"patch"`` (16 px), an int patch size, an (H, W)
    integer label map or :class:`ImageUnits`; a unit's relevance is the mean of the map over it,
    ties are broken at random (``seed``). The units are split into ``steps`` near-equal groups
    (``steps + 1`` curve points). Deletion replaces units by ``deletion_baseline`` (``"zero"``,
    ``"blur"``, ``"mean"`` or an image) most relevant first (MoRF) and, with ``"lerf"`` in
    ``orders``, least relevant first; insertion pastes units of the image onto
    ``insertion_start`` (``"blur"``: Gaussian σ = ``blur_sigma``, default 5 px at 224 px,
    scaled) most relevant first. y = the target's ``output`` (``"prob"``, ``"logit"``,
    ``"logprob"``; None: the task's own), x = area fraction in [0, 1].

    Returns an :class:`ImageCurves`. Cost: 3 forward passes for the endpoints (f(x), f(deletion
    baseline), f(insertion start); 2 when both baselines are the same) plus ``steps − 1`` per
    curve — 3 curves (insertion, MoRF, LeRF), doubled by the random reference — all batched
    (``ImageTask.mask_values``), plus one pass to build a task from a model.
    """
    out = output or (task_or_model.output if isinstance(task_or_model, ImageTask) else "prob")
    task, heat = _resolve_task(task_or_model, image_or_map, heatmap_or_attribution, target, out)
    hm = _as_map(heat, task)
    orders = tuple(orders)
    bad = [o for o in orders if o not in ("morf", "lerf")]
    if bad or "morf" not in orders:
        raise InputError(f"orders must contain 'morf' and may add 'lerf', got {orders!r}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 2:
        raise InputError(f"steps must be an integer >= 2, got {steps!r}")
    h, w = task.shape
    sigma = 5.0 * min(h, w) / 224.0 if blur_sigma is None else float(blur_sigma)
    seg, unit_desc = _segments(task.shape, granularity)
    n = int(seg.max()) + 1
    area = np.bincount(seg.ravel(), minlength=n).astype(float)
    relevance = np.bincount(seg.ravel(), weights=hm.ravel(), minlength=n) / np.maximum(area, 1)
    rng = np.random.default_rng(seed)
    tie = rng.permutation(n)
    rankings = {
        "insertion": np.lexsort((tie, -relevance)),
        "deletion": np.lexsort((tie, -relevance)),
    }
    if "lerf" in orders:
        rankings["lerf"] = np.lexsort((tie, relevance))
    if random_reference:
        rnd = rng.permutation(n)
        rankings["random_insertion"] = rnd
        rankings["random_deletion"] = rnd
        if "lerf" in orders:
            rankings["random_lerf"] = rnd[::-1].copy()
    counts = np.unique(np.round(np.linspace(0, n, min(int(steps), n) + 1)).astype(int))
    inner = counts[1:-1]
    del_base = _baseline(task, deletion_baseline, sigma)
    ins_base = _baseline(task, insertion_start, sigma)
    same = (
        isinstance(deletion_baseline, str)
        and isinstance(insertion_start, str)
        and deletion_baseline == insertion_start
    )

    ins_masks, del_masks, fractions = [], [], {}
    for name, order in rankings.items():
        pos = np.empty(n, dtype=np.int64)
        pos[order] = np.arange(n)
        fractions[name] = np.concatenate([[0.0], np.cumsum(area[order])])[counts] / (h * w)
        touched = (pos[seg][None] < inner[:, None, None]).astype(np.float32)  # (k, H, W)
        (ins_masks if "insertion" in name else del_masks).append(
            touched if "insertion" in name else 1.0 - touched
        )
    with measure(task) as cost:
        ends = task.values(np.stack([task.image, del_base, ins_base][: 2 if same else 3]), out)
        full, dend = float(ends[0]), float(ends[1])
        istart = dend if same else float(ends[2])
        k = len(inner)
        dvals = task.mask_values(np.concatenate(del_masks), del_base, out) if k else np.zeros(0)
        ivals = task.mask_values(np.concatenate(ins_masks), ins_base, out) if k else np.zeros(0)

    curves: dict[str, Curve] = {}
    di = ii = 0
    for name in rankings:
        if "insertion" in name:
            y = np.concatenate([[istart], ivals[ii * k : (ii + 1) * k], [full]])
            ii += 1
            kind, lo, hi, order = "insertion", istart, full, "most"
        else:
            y = np.concatenate([[full], dvals[di * k : (di + 1) * k], [dend]])
            di += 1
            kind, lo, hi = "deletion", dend, full
            order = "least" if name.endswith("lerf") else "most"
        x = fractions[name]
        span = hi - lo
        curves[name] = Curve(
            fractions=x,
            counts=counts.copy(),
            values=y,
            auc=auc(y, x),
            normalized_auc=auc((y - lo) / span, x) if span != 0 else float("nan"),
            order=order,
            kind=kind,
            full_value=hi,
            empty_value=lo,
        )

    def four(prefix: str) -> dict[str, float | None]:
        ins, dele = curves[prefix + "insertion"].auc, curves[prefix + "deletion"].auc
        le = curves[prefix + "lerf"].auc if prefix + "lerf" in curves else None
        return {"insertion": ins, "deletion": dele, "lerf": le,
                "srg": None if le is None else le - dele}  # fmt: skip

    main = four("")
    rand = four("random_") if random_reference else None
    normalized = {key: _norm(v, full) for key, v in main.items()}
    if rand is not None:
        normalized.update({f"random_{key}": _norm(v, full) for key, v in rand.items()})
    protocol = (
        f"RISE insertion/deletion (Petsiuk et al. 2018) over {unit_desc} ({n} units ranked by the "
        f"mean of the map, ties broken at random with seed {seed}), {len(counts)} points per "
        f"curve; deletion replaces units by the {_name(deletion_baseline)} image (MoRF"
        + (" and LeRF" if "lerf" in orders else "")
        + f"), insertion pastes them onto the {_name(insertion_start)} image"
        + (
            f" (Gaussian sigma {sigma:.2g} px)"
            if "blur" in (_name(deletion_baseline), _name(insertion_start))
            else ""
        )
        + f"; y = target {out} of class {task.target}; AUC by the trapezoid rule over the area "
        "fraction in [0, 1]; normalised = AUC / f(x)"
        + ("; random = the same for a seeded random order" if random_reference else "")
        + "."
    )
    params = {
        "steps": int(steps),
        "granularity": granularity if isinstance(granularity, (str, int)) else "units",
        "deletion_baseline": _name(deletion_baseline),
        "insertion_start": _name(insertion_start),
        "orders": list(orders),
        "output": out,
        "blur_sigma": sigma,
        "seed": seed,
        "target": task.target,
    }
    return ImageCurves(
        insertion=main["insertion"],  # type: ignore[arg-type]
        deletion=main["deletion"],  # type: ignore[arg-type]
        lerf=main["lerf"],
        srg=main["srg"],
        normalized=normalized,
        random=rand,
        curves=curves,
        full_value=full,
        deletion_end=dend,
        insertion_start=istart,
        protocol=protocol,
        params=params,
        cost=cost,
    )


# -- subset protocol (SMDL / LiMA) ----------------------------------------------------------------


@dataclass
class SubsetCurves:
    """Result of :func:`subset_curves`.

    Attributes:
        insertion_area, insertion: x = area revealed after each unit (starting at 0), y = f of the
            image showing only the revealed units on the baseline.
        deletion_area, deletion: x = area removed (starting at 0), y = f of the image with those
            units replaced by the baseline.
        insertion_auc (higher is better), deletion_auc (lower is better): trapezoid areas over
            those x axes (they end below 1 when the order does not cover every unit).
        full_value: f(x); ``normalized`` holds both AUCs divided by it.
        protocol, cost: what was measured; the forward passes it took (0 when all values were
            given).
    """

    insertion_area: np.ndarray
    insertion: np.ndarray
    deletion_area: np.ndarray
    deletion: np.ndarray
    insertion_auc: float
    deletion_auc: float
    full_value: float
    normalized: dict[str, float]
    protocol: str
    cost: Cost = field(default_factory=Cost)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return to_json(
            {
                "insertion_area": self.insertion_area,
                "insertion": self.insertion,
                "deletion_area": self.deletion_area,
                "deletion": self.deletion,
                "insertion_auc": self.insertion_auc,
                "deletion_auc": self.deletion_auc,
                "full_value": self.full_value,
                "normalized": self.normalized,
                "protocol": self.protocol,
                "cost": self.cost.to_dict(),
            }
        )


def subset_curves(
    task: ImageTask,
    units: ImageUnits | np.ndarray | str,
    order: Sequence[int] | np.ndarray,
    *,
    insertion_values: Sequence[float] | np.ndarray | None = None,
    deletion_values: Sequence[float] | np.ndarray | None = None,
    baseline: str | np.ndarray = "zero",
    output: str | None = "prob",
) -> SubsetCurves:
    """Insertion and deletion over ranked units with the *area* x axis (SMDL / LiMA protocol,
    Chen et al., 'Less is More: Fewer Interpretable Region via Submodular Subset Selection', 2024;
    not the RISE protocol of :func:`insertion_deletion`).

    ``units``: :class:`ImageUnits`, an (H, W) integer label map or a unit spec of
    :meth:`ImageTask.units` (``"superpixels"``, ``"patches"``); ``order``: unit indices, most
    important first (it may rank only some units). After the j-th unit, insertion shows the
    units ``order[:j]`` on the ``baseline`` image (``"zero"`` as in SMDL, where a subset is the sum
    of its black-background regions) and deletion shows the image with them replaced by it.
    ``insertion_values`` / ``deletion_values`` — the scores a subset search already logged, one
    per ranked unit (length m, or m + 1 with the starting point) — are used as given.

    Cost: 2m + 2 forward passes when nothing is given (batched); m + 2 when one list is given;
    2 (f(x) and f(baseline)) when both are given with m entries, 0 with m + 1 entries each.
    """
    out = output or task.output
    u = task.make_units(units) if isinstance(units, str) else units
    seg = u.segments if isinstance(u, ImageUnits) else np.asarray(u)
    if seg.shape != task.shape or not np.issubdtype(seg.dtype, np.integer):
        raise InputError(f"units must cover the image: an integer (H, W) = {task.shape} label map")
    seg = np.unique(seg, return_inverse=True)[1].reshape(task.shape)
    n = int(seg.max()) + 1
    order = np.asarray(order, dtype=np.int64).ravel()
    m = len(order)
    if m == 0 or order.min() < 0 or order.max() >= n or len(np.unique(order)) != m:
        raise InputError(f"order must list distinct unit indices in 0..{n - 1} (got {m} entries)")
    h, w = task.shape
    area = np.bincount(seg.ravel(), minlength=n).astype(float) / (h * w)
    x = np.concatenate([[0.0], np.cumsum(area[order])])
    pos = np.full(n, m, dtype=np.int64)
    pos[order] = np.arange(m)
    base = _baseline(task, baseline, 5.0 * min(h, w) / 224.0)

    def given(v: Any, name: str) -> np.ndarray | None:
        if v is None:
            return None
        v = np.asarray(v, dtype=float).ravel()
        if len(v) not in (m, m + 1):
            raise InputError(f"{name} needs {m} (or {m + 1}) values for {m} ranked units")
        return v

    ins, dele = (
        given(insertion_values, "insertion_values"),
        given(deletion_values, "deletion_values"),
    )
    complete = ins is not None and dele is not None and len(ins) == len(dele) == m + 1
    with measure(task) as cost:
        if complete:  # the logged curves hold their own starting points: no model call
            empty, full = float(ins[0]), float(dele[0])  # type: ignore[index]
        else:
            ends = task.values(np.stack([task.image, base]), out)
            full, empty = float(ends[0]), float(ends[1])
        j = np.arange(1, m + 1)
        revealed = (pos[seg][None] < j[:, None, None]).astype(np.float32)
        if ins is None:
            ins = task.mask_values(revealed, base, out)
        if dele is None:
            dele = task.mask_values(1.0 - revealed, base, out)
    ins_y = ins if len(ins) == m + 1 else np.concatenate([[empty], ins])
    del_y = dele if len(dele) == m + 1 else np.concatenate([[full], dele])
    ia, da = auc(ins_y, x), auc(del_y, x)
    protocol = (
        f"subset insertion/deletion (SMDL/LiMA, Chen et al. 2024): {m} of {n} units in the given "
        f"order, removed units show the {_name(baseline)} image; x = fraction of the image area "
        f"revealed (insertion) or removed (deletion); y = target {out} of class {task.target}; "
        "AUC by the trapezoid rule"
    )
    return SubsetCurves(
        insertion_area=x,
        insertion=ins_y,
        deletion_area=x.copy(),
        deletion=del_y,
        insertion_auc=ia,
        deletion_auc=da,
        full_value=full,
        normalized={"insertion": _norm(ia, full), "deletion": _norm(da, full)},  # type: ignore[dict-item]
        protocol=protocol,
        cost=cost,
    )


# -- pointing game --------------------------------------------------------------------------------


@dataclass
class PointingGame:
    """Result of :func:`pointing_game` over one or more maps.

    ``hits[i]``: map i's maximum lies within ``tolerance`` px of its object; ``points[i]``: that
    maximum (row, col); ``energy[i]``: positive mass inside the object / total positive mass
    (0 when the map has no positive mass); ``accuracy`` = mean hit rate; ``energy_mean``.
    """

    hits: np.ndarray
    points: np.ndarray
    energy: np.ndarray
    accuracy: float
    energy_mean: float
    tolerance: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return to_json(self.__dict__)


def _object_mask(obj: Any, shape: tuple[int, int]) -> np.ndarray:
    arr = np.asarray(obj)
    if arr.shape == shape:
        mask = arr.astype(bool)
    elif arr.shape == (4,):
        top, left, bottom, right = (int(v) for v in arr)
        if not (0 <= top < bottom <= shape[0] and 0 <= left < right <= shape[1]):
            raise InputError(
                f"box {tuple(arr.tolist())} is not (top, left, bottom, right) inside {shape}"
            )
        mask = np.zeros(shape, dtype=bool)
        mask[top:bottom, left:right] = True
    else:
        raise InputError(
            f"an object is a (top, left, bottom, right) box or an (H, W) = {shape} mask, got "
            f"shape {arr.shape}"
        )
    if not mask.any():
        raise InputError("the object mask is empty")
    return mask


def pointing_game(heatmaps: Any, objects: Any, *, tolerance: float | None = None) -> PointingGame:
    """The pointing game: a hit when a map's maximum (the first one in row-major order when
    tied) lies inside its object or within ``tolerance`` pixels of it (default 15 px at 224 px,
    scaled to the image: the standard setting of Zhang et al., 'Top-down Neural Attention by
    Excitation Backprop', 2016), plus the energy-based pointing game (share of positive mass
    inside the object; Wang et al., 'Score-CAM', 2020).

    ``heatmaps``: one (H, W) map, an image Attribution, an (N, H, W) array or a list of them;
    ``objects``: one (top, left, bottom, right) box / (H, W) boolean mask, or one per map.
    Returns a :class:`PointingGame`. No model call.
    """
    from scipy.ndimage import distance_transform_edt

    single = isinstance(heatmaps, Attribution) or np.ndim(heatmaps) == 2
    maps = [heatmaps] if single else list(heatmaps)
    first = maps[0].heatmap if isinstance(maps[0], Attribution) else maps[0] if maps else None
    one_object = np.ndim(objects) == 1 or np.shape(objects) == np.shape(first)
    objs = [objects] * len(maps) if single or one_object else list(objects)
    if len(objs) != len(maps):
        raise InputError(f"{len(maps)} maps but {len(objs)} objects; give one object per map")
    hits, points, energy, tol = [], [], [], 0.0
    for hm, obj in zip(maps, objs, strict=True):
        m = np.asarray(hm.heatmap if isinstance(hm, Attribution) else hm, dtype=float)
        if m.ndim != 2 or not np.isfinite(m).all():
            raise InputError(f"each map must be a finite (H, W) array, got shape {m.shape}")
        mask = _object_mask(obj, m.shape)
        tol = 15.0 * min(m.shape) / 224.0 if tolerance is None else float(tolerance)
        r, c = np.unravel_index(int(np.argmax(m)), m.shape)
        dist = distance_transform_edt(~mask)[r, c]
        hits.append(bool(dist <= tol))
        points.append((int(r), int(c)))
        energy.append(energy_pointing_game(m, mask))
    hits_a = np.array(hits)
    return PointingGame(
        hits=hits_a,
        points=np.array(points, dtype=int),
        energy=np.array(energy),
        accuracy=float(hits_a.mean()),
        energy_mean=float(np.mean(energy)),
        tolerance=tol,
    )


def energy_pointing_game(heatmap: Any, obj: Any) -> float:
    """Σ of the map's positive part inside ``obj`` (a (top, left, bottom, right) box or an
    (H, W) mask) / Σ of its positive part; 0 when that total is ≤ 1e-7. No model call."""
    m = np.asarray(heatmap.heatmap if isinstance(heatmap, Attribution) else heatmap, dtype=float)
    pos = np.clip(m, 0.0, None)
    total = float(pos.sum())
    if total <= 1e-7:
        return 0.0
    return float(pos[_object_mask(obj, m.shape)].sum() / total)


# -- sufficiency / comprehensiveness of a mask (COMET) ----------------------------------------------


@dataclass
class MaskFidelity:
    """``sufficiency`` = f(S⊙x + (1−S)⊙q) (higher is better), ``comprehensiveness`` =
    f((1−S)⊙x + S⊙q) (lower is better), ``full_value`` = f(x), ``area`` = mean of S."""

    sufficiency: float
    comprehensiveness: float
    full_value: float
    area: float
    cost: Cost = field(default_factory=Cost)


def mask_fidelity(
    task: ImageTask,
    mask: Any,
    *,
    baseline: str | np.ndarray = "zero",
    output: str | None = "prob",
) -> MaskFidelity:
    """Sufficiency and comprehensiveness of a soft (H, W) mask in [0, 1] (COMET: Zou et al.,
    'Towards Comprehensive Attribution: Shaping the Features of a Classifier', ECCV 2024; q is
    the ``baseline`` image). Cost: 3 forward passes."""
    s = np.asarray(mask, dtype=np.float32)
    if s.shape != task.shape or s.min() < 0 or s.max() > 1:
        raise InputError(f"the mask must be an (H, W) = {task.shape} array with values in [0, 1]")
    out = output or task.output
    base = _baseline(task, baseline, 5.0 * min(task.shape) / 224.0)
    with measure(task) as cost:
        v = task.values(
            np.concatenate([task.image[None], task.blend(np.stack([s, 1 - s]), base)]), out
        )
    return MaskFidelity(float(v[1]), float(v[2]), float(v[0]), float(s.mean()), cost)
