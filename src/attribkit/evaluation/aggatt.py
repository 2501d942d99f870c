"""AggAtt: many attribution maps summarised as a few average maps (Rao, Böhle & Schiele,
'Towards Better Understanding Attribution Methods', CVPR 2022).

Sort the maps of one head position by their localisation score (best first), cut the sorted list
at fixed fractions — by default [0, .02, .05, .5, .95, .98, 1]: the best 2 %, the next 3 %, the
upper and lower halves of the middle, then the worst 3 % and 2 % — and average the positive part
of the maps in each bin. Drawn on one shared colour scale with the target cell outlined, the
strip shows at a glance how a method typically distributes its attribution and how it fails.
Pure post-processing: no model calls.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attribkit.core.errors import InputError
from attribkit.core.png import png_bytes
from attribkit.evaluation.grid import cell_slices
from attribkit.viz.image import colorize

__all__ = ["AggAtt", "aggatt", "aggatt_figure"]

DEFAULT_BINS = (0.0, 0.02, 0.05, 0.5, 0.95, 0.98, 1.0)


@dataclass
class AggAtt:
    """Result of :func:`aggatt`.

    Attributes:
        maps: (n_bins, H, W) mean positive map of each bin.
        bins: the fraction edges; ``sizes``: maps per bin; ``members``: the indices (into the
            given maps) of each bin, best first.
        mean_scores: mean localisation score per bin.
        vmax: the shared colour-scale top, the 99.5th percentile of all bin maps' values.
        head, n: the target cell and the grid size (when given), for drawing the cell's box.
    """

    maps: np.ndarray
    bins: tuple[float, ...]
    sizes: list[int]
    members: list[np.ndarray]
    mean_scores: np.ndarray
    vmax: float
    head: int | None = None
    n: int | None = None


def aggatt(
    heatmaps: Any,
    scores: Sequence[float] | np.ndarray,
    bins: Sequence[float] = DEFAULT_BINS,
    *,
    head: int | None = None,
    n: int = 2,
) -> AggAtt:
    """Mean positive map per bin of the maps sorted by ``scores`` (localisation, descending;
    ties broken by the positive mass inside cell ``head`` of the n×n grid when ``head`` is
    given, else by input order). ``heatmaps``: (N, H, W) maps of one head position (e.g.
    ``GridEvaluation.maps[(method, layer, head)]`` with its ``scores``); ``bins``: increasing
    fractions from 0 to 1; every bin must receive at least one map (bin edges at round(f·N)).
    Returns :class:`AggAtt`. No model call."""
    maps = np.asarray(heatmaps, dtype=float)
    sc = np.asarray(scores, dtype=float).ravel()
    if maps.ndim != 3:
        raise InputError(f"heatmaps must be an (N, H, W) stack of maps, got shape {maps.shape}")
    if len(sc) != len(maps):
        raise InputError(f"{len(sc)} scores for {len(maps)} maps; give one score per map")
    edges = tuple(float(b) for b in bins)
    if len(edges) < 2 or edges[0] != 0.0 or edges[-1] != 1.0 or np.any(np.diff(edges) <= 0):
        raise InputError(f"bins must increase from 0 to 1, got {edges}")
    if not (np.isfinite(maps).all() and np.isfinite(sc).all()):
        raise InputError("the maps and scores must be finite")
    pos = np.clip(maps, 0.0, None)
    if head is not None:
        rs, cs = cell_slices(maps.shape[1:], head, n)
        mass = pos[:, rs, cs].sum(axis=(1, 2))
    else:
        mass = np.zeros(len(sc))
    order = np.lexsort((np.arange(len(sc)), -mass, -sc))
    cuts = np.rint(np.asarray(edges) * len(sc)).astype(int)
    sizes = np.diff(cuts)
    if np.any(sizes < 1):
        raise InputError(
            f"{len(sc)} maps leave some of the {len(edges) - 1} bins {edges} empty (sizes "
            f"{sizes.tolist()}); give more maps (the default bins need >= 50) or coarser bins"
        )
    members = [order[a:b] for a, b in itertools.pairwise(cuts)]
    means = np.stack([pos[m].mean(axis=0) for m in members])
    vmax = float(np.percentile(means, 99.5))
    return AggAtt(
        maps=means,
        bins=edges,
        sizes=sizes.tolist(),
        members=members,
        mean_scores=np.array([sc[m].mean() for m in members]),
        vmax=vmax if vmax > 0 else 1.0,
        head=head,
        n=n if head is not None else None,
    )


def aggatt_figure(
    result: AggAtt,
    path: str | os.PathLike[str],
    *,
    cell: int = 96,
    n: int | None = None,
    head: int | None = None,
    gap: int = 4,
) -> Path:
    """Write the AggAtt bins as one PNG strip: each bin's mean map scaled (nearest neighbour, an
    integer factor) to about ``cell`` pixels high, all on the shared scale 0..``result.vmax``,
    with the target cell ``head`` of the n×n grid outlined in white (defaults: the result's),
    ``gap`` white pixels between bins. Each tile is H·max(1, cell // H) pixels high. Returns the
    path. No model call."""
    n = n if n is not None else (result.n or 2)
    head = head if head is not None else result.head
    k, h, w = result.maps.shape
    f = max(1, cell // h)
    th, tw = h * f, w * f
    strip = np.full((th, k * tw + (k - 1) * gap, 3), 255, dtype=np.uint8)
    for i, m in enumerate(result.maps):
        tile = colorize(np.kron(m, np.ones((f, f))), 0.0, result.vmax)
        if head is not None:
            rs, cs = cell_slices((th, tw), head, n)
            t = max(1, th // 64)
            box = np.zeros((th, tw), dtype=bool)
            box[rs, cs] = True
            inner = np.zeros_like(box)
            inner[rs.start + t : rs.stop - t, cs.start + t : cs.stop - t] = True
            tile[box & ~inner] = 255
        x0 = i * (tw + gap)
        strip[:, x0 : x0 + tw] = tile
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(strip))
    return path
