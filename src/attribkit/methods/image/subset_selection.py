"""What the submodular subset-selection methods ``smdl`` and ``lima`` share: the regions, the
score F of a subset of them, and the run of a search with its curves.

The image is split into regions (SLIC superpixels by default). A subset S of regions is scored by

    F(S) = λ_conf·s_conf(S) + λ_eff·s_eff(S) + λ_cons·s_cons(S) + λ_colla·s_colla(S)

- s_cons(S) = p(target | only S kept; the other regions show the baseline),
- s_colla(S) = 1 − p(target | S removed, i.e. only the complement kept),
- s_conf(S) = 1 − H(softmax(f(only S kept))) / log C (the entropy confidence of the authors'
  later code; the ICLR paper used a separate evidential model),
- s_eff(S) = Σ_{i∈S} min_{j∈S, j≠i} arccos(cos(φ_i, φ_j))/π (diversity; 0 for one region), φ_i
  the penultimate features (input of the last linear layer) of region i shown alone,

and regions are ranked by a search that grows S (:mod:`attribkit.methods.image.submodular`):
naive greedy for ``smdl`` (:mod:`attribkit.methods.image.smdl`; Ruoyu Chen et al., 'Less is
More: Fewer Interpretable Region via Submodular Subset Selection', ICLR 2024) and the
bidirectional search for ``lima`` (:mod:`attribkit.methods.image.lima`; Ruoyu Chen et al., 'Less
is More: Efficient Black-box Attribution via Minimal Interpretable Subset Selection', 2025). Every F evaluation costs two images (S kept, S removed); a cache keyed by the
kept-region mask makes sure no image is evaluated twice (the removed image of S *is* the kept
image of its complement, and the full image is known from the task).

Unit scores are rank scores, (m − position)/m (1 for the first region chosen, 1/m for the
last), so the Attribution's ranking is exactly the selection order; the F values, marginal gains
and the subset-protocol insertion/deletion curves along that order are in ``extras``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from attribkit.core.attribution import Attribution
from attribkit.core.cost import measure
from attribkit.core.errors import InputError
from attribkit.core.units import ImageUnits
from attribkit.methods.image.submodular import SubsetSearch, bidirectional_order, greedy_order
from attribkit.tasks.image import ImageTask, UnitSpec

__all__ = ["SubsetScore", "rank_regions", "subset_units"]

Baseline = str | np.ndarray


def subset_units(
    task: ImageTask,
    units: UnitSpec = None,
    *,
    n_segments: int = 40,
    compactness: float = 10.0,
    baseline: Baseline = "zero",
) -> ImageUnits:
    """The regions a subset search ranks: ``units`` (None: SLIC superpixels with about
    ``n_segments`` regions; ``"patches"``, a label map or ImageUnits) whose removed pixels show
    ``baseline`` (``"zero"``: black, as SMDL, whose subsets are sums of region images;
    ``"blur"``, ``"mean"``, an (H, W, 3) array, or ``"units"`` to keep the baseline of given
    ImageUnits). No model call."""
    if isinstance(baseline, str) and baseline not in ("zero", "blur", "mean", "units"):
        raise InputError(
            f"unknown baseline {baseline!r}: use 'zero' (black, SMDL's), 'blur', 'mean', an "
            "(H, W, 3) image array, or 'units' to keep the given ImageUnits' own baseline"
        )
    keep_own = isinstance(baseline, str) and baseline == "units"
    if isinstance(units, ImageUnits):
        if units.image.shape != task.image.shape:
            raise InputError(
                f"the units were built on an image of shape {units.image.shape}, but the task's "
                f"image is {task.image.shape}; build them with task.make_units(...)"
            )
        return units if keep_own else ImageUnits(task.image, units.segments, baseline=baseline)
    if keep_own:
        raise InputError("baseline='units' keeps the baseline of given ImageUnits; pass units=")
    spec = "superpixels" if units is None else units
    return task.make_units(spec, n_segments=n_segments, compactness=compactness, baseline=baseline)


def _check_weights(weights: dict[str, float] | None, default: dict[str, float]) -> dict:
    if weights is None:
        return dict(default)
    unknown = set(weights) - set(default)
    if unknown:
        raise InputError(
            f"unknown score weights {sorted(unknown)}: use 'conf', 'eff', 'cons' and 'colla'"
        )
    w = {k: float(weights.get(k, 0.0)) for k in default}
    if not all(math.isfinite(v) for v in w.values()) or not any(w.values()):
        raise InputError(f"score weights must be finite and not all zero, got {weights}")
    return w


@contextmanager
def _capture_features(module: torch.nn.Module, layer_input: bool) -> Iterator[dict]:
    store: dict[str, torch.Tensor] = {}

    def pre(_m: torch.nn.Module, args: Any) -> None:
        store["feat"] = args[0]

    def post(_m: torch.nn.Module, _i: Any, out: Any) -> None:
        store["feat"] = out[0] if isinstance(out, (tuple, list)) else out

    handle = (
        module.register_forward_pre_hook(pre) if layer_input else module.register_forward_hook(post)
    )
    try:
        yield store
    finally:
        handle.remove()


class SubsetScore:
    """The submodular score F of subsets of ``units`` for ``task``'s target class.

    ``score(masks)`` (a (B, m) boolean array of kept units) returns F for each row, evaluating
    the kept and the removed image of every row in one batched model call; every image is
    cached by its kept-unit mask, so asking again (or asking for the complement of a subset
    seen before) is free. :meth:`probs` gives p(target) and the entropy confidence of kept
    masks; :meth:`terms` the four terms. The embeddings for s_eff (only when its weight is not
    zero) cost one pass per unit, which the greedy search's first step then reuses.
    ``task.cost`` counts every image evaluated.
    """

    def __init__(
        self,
        task: ImageTask,
        units: ImageUnits,
        weights: dict[str, float],
        embedding_layer: str | None = None,
    ) -> None:
        if len(units) < 2:
            raise InputError(
                f"only {len(units)} region to rank: subset selection needs at least 2; use more "
                "superpixels (n_segments=) or smaller patches"
            )
        self.task, self.units, self.weights = task, units, weights
        self.m = len(units)
        self.embedding_layer = embedding_layer
        self._cache: dict[bytes, tuple[float, float]] = {}
        probs = task.full_probs
        self._cache[self._key(np.ones(self.m, dtype=bool))] = (
            float(probs[task.target]),
            self._confidence(torch.as_tensor(probs)[None])[0].item(),
        )
        self._dist: np.ndarray | None = None

    @staticmethod
    def _key(row: np.ndarray) -> bytes:
        return np.packbits(row).tobytes()

    @staticmethod
    def _confidence(p: torch.Tensor) -> torch.Tensor:
        entropy = -torch.special.xlogy(p, p).sum(-1)
        return 1.0 - entropy / math.log(p.shape[-1])

    def _embedding_module(self) -> tuple[torch.nn.Module, bool]:
        model = self.task.model
        if self.embedding_layer is not None:
            return model.get_layer(self.embedding_layer), False
        linears = [m for m in model.module.modules() if isinstance(m, torch.nn.Linear)]
        if not linears:
            raise InputError(
                f"{model.name} has no linear layer whose input could serve as region embedding; "
                "name one with embedding_layer=... or set the 'eff' weight to 0"
            )
        return linears[-1], True

    def _evaluate(self, masks: np.ndarray, embed: bool = False) -> np.ndarray | None:
        """Evaluate ``masks`` (all uncached) and cache p and confidence; features if ``embed``."""
        task, bs = self.task, max(self.task.model.batch_size, 1)
        feats = []
        module, layer_input = self._embedding_module() if embed else (None, False)
        with task.timed(), torch.inference_mode():
            for s in range(0, len(masks), bs):
                rows = masks[s : s + bs]
                x = task.tensor(self.units.compose_batch(rows).astype(np.float32))
                if module is not None:
                    with _capture_features(module, layer_input) as store:
                        logits = task.logits(x, grad=False)
                    f = store["feat"].detach().double().cpu()
                    f = f.mean(dim=(-2, -1)) if f.ndim == 4 else f.flatten(1)
                    if f.shape[0] != len(rows) and f.shape[0] % len(rows) == 0:
                        # a model that runs its layers per part (DiFull grid cells, image-major):
                        # one embedding per image = its parts' features side by side
                        f = f.reshape(len(rows), -1)
                    feats.append(f)
                else:
                    logits = task.logits(x, grad=False)
                p = torch.softmax(logits, -1)
                conf = self._confidence(p)
                for row, pt, c in zip(rows, p[:, task.target].tolist(), conf.tolist(), strict=True):
                    self._cache[self._key(row)] = (pt, c)
        return torch.cat(feats).numpy() if feats else None

    def probs(self, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(p(target), confidence) of the images keeping each row's units: uncached rows are
        evaluated in one batched call (one forward pass each)."""
        masks = np.asarray(masks, dtype=bool).reshape(-1, self.m)
        todo: dict[bytes, int] = {}
        for i, row in enumerate(masks):
            k = self._key(row)
            if k not in self._cache and k not in todo:
                todo[k] = i
        self.task.cost.cache_hits += len(masks) - len(todo)
        if todo:
            self._evaluate(masks[list(todo.values())])
        got = [self._cache[self._key(row)] for row in masks]
        return np.array([g[0] for g in got]), np.array([g[1] for g in got])

    def distances(self) -> np.ndarray:
        """(m, m) angular distances arccos(cos φ_i·φ_j)/π between the region embeddings (each
        region shown alone; m forward passes the first time, shared with the probability cache)."""
        if self._dist is None:
            singles = np.eye(self.m, dtype=bool)
            feats = self._evaluate(singles, embed=True)
            assert feats is not None
            unit = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
            self._dist = np.arccos(np.clip(unit @ unit.T, -1.0, 1.0)) / math.pi
        return self._dist

    def diversity(self, masks: np.ndarray) -> np.ndarray:
        """s_eff of each row: the sum over its units of the distance to the nearest other unit
        of the row (0 for rows with fewer than two units)."""
        masks = np.asarray(masks, dtype=bool).reshape(-1, self.m)
        d = self.distances().copy()
        np.fill_diagonal(d, np.inf)
        near = np.where(masks[:, None, :], d[None], np.inf).min(axis=-1)
        return np.where(masks & np.isfinite(near), near, 0.0).sum(axis=1)

    def terms(self, masks: np.ndarray) -> dict[str, np.ndarray]:
        """The four terms for each row: ``cons``, ``colla``, ``conf`` and ``eff`` (zeros when
        its weight is 0, without computing it). Kept and removed images in one call."""
        masks = np.asarray(masks, dtype=bool).reshape(-1, self.m)
        if self.weights["eff"] and self._dist is None:
            self.distances()
        p, conf = self.probs(np.concatenate([masks, ~masks]))
        b = len(masks)
        eff = self.diversity(masks) if self.weights["eff"] else np.zeros(b)
        return {"cons": p[:b], "colla": 1.0 - p[b:], "conf": conf[:b], "eff": eff}

    def __call__(self, masks: np.ndarray) -> np.ndarray:
        t = self.terms(masks)
        return sum(self.weights[k] * t[k] for k in ("conf", "eff", "cons", "colla"))


def _auc(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def rank_regions(
    task: ImageTask,
    name: str,
    units: UnitSpec,
    n_segments: int,
    compactness: float,
    baseline: Baseline,
    weights: dict[str, float] | None,
    default_weights: dict[str, float],
    embedding_layer: str | None,
    pending: int | None = None,
) -> Attribution:
    """Rank the regions of ``task`` (``units``, :func:`subset_units`) by the submodular score F
    with ``weights`` (None: ``default_weights``): the greedy search of SMDL, or with ``pending``
    LiMA's bidirectional search (:mod:`attribkit.methods.image.submodular`), and return the
    Attribution ``name`` with rank scores, the heatmap of those and the search's extras (see
    :func:`~attribkit.methods.image.smdl.smdl`). Costs two forward passes per F evaluation,
    less cache hits, plus the curves' few uncached images."""
    if task.output != "prob":
        raise InputError(
            f"{name} scores subsets with class probabilities and their entropy; it explains "
            f"output='prob' (got output={task.output!r}): drop the output argument"
        )
    if pending is not None and (not isinstance(pending, (int, np.integer)) or pending < 1):
        raise InputError(f"pending must be an integer >= 1 (LiMA uses 8), got {pending!r}")
    w = _check_weights(weights, default_weights)
    u = subset_units(task, units, n_segments=n_segments, compactness=compactness, baseline=baseline)
    m = len(u)
    with measure(task) as cost:
        with measure(task) as search_cost:  # the score reads f(full image): a pass if new
            score = SubsetScore(task, u, w, embedding_layer)
            if pending is None:
                found: SubsetSearch = greedy_order(m, score)
            else:
                found = bidirectional_order(m, score, pending=pending)
        order = found.order
        prefixes = np.zeros((m + 1, m), dtype=bool)
        for j in range(1, m + 1):
            prefixes[j, order[:j]] = True
        p_ins, _ = score.probs(prefixes)  # mostly cached: the search saw these images
        p_del, _ = score.probs(~prefixes)
        along = score(prefixes)  # F(first j units), j = 0..m: all cached now
    area = np.concatenate([[0.0], np.cumsum(np.bincount(u.segments.ravel(), minlength=m)[order])])
    area = area / area[-1]
    scores = np.empty(m)
    scores[order] = (m - np.arange(m)) / m
    params: dict[str, Any] = {
        "weights": w,
        "baseline": baseline if isinstance(baseline, str) else "array",
        "output": "prob",
    }
    if units is None or (isinstance(units, str) and units == "superpixels"):
        params.update(n_segments=n_segments, compactness=compactness)
    if pending is not None:
        params["pending"] = pending
    if w["eff"]:
        params["embedding_layer"] = embedding_layer or "input of the last linear layer"
    extras: dict[str, Any] = {
        "order": order.tolist(),
        "search_values": found.values.tolist(),
        "values_along_order": along.tolist(),
        "marginal_gains": np.diff(along).tolist(),
        "insertion_curve": {"area": area.tolist(), "prob": p_ins.tolist()},
        "deletion_curve": {"area": area.tolist(), "prob": p_del.tolist()},
        "insertion_auc": _auc(p_ins, area),
        "deletion_auc": _auc(p_del, area),
        "highest_confidence": float(p_ins[1:].max()),
        "curve_protocol": "subset (SMDL/LiMA): regions added/removed in order, x = area "
        "fraction, y = p(target), removed regions show the baseline",
        "evaluations": found.evaluations,
        "search_forward_passes": search_cost.forward_passes,
        "curve_forward_passes": cost.forward_passes - search_cost.forward_passes,
        "n_units": m,
    }
    if pending is not None:
        extras["decrease_values"] = found.decrease_values.tolist()
        extras["n_selected"] = found.n_selected
    hm = u.heatmap(scores)
    return task.result(hm, name, params, cost, units=u, unit_scores=scores, **extras)
