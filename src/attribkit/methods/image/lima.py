"""LiMA: rank image regions by a bidirectional greedy search of a submodular score (Ruoyu Chen et
al., 'Less is More: Efficient Black-box Attribution via Minimal Interpretable Subset Selection',
2025). The score and the regions: :mod:`attribkit.methods.image.subset_selection`."""

from __future__ import annotations

from attribkit.core.attribution import Attribution
from attribkit.methods.image.subset_selection import Baseline, rank_regions
from attribkit.tasks.image import ImageTask, UnitSpec

__all__ = ["LIMA_WEIGHTS", "lima"]

#: LiMA's single-modal defaults: λ = (cons 20, colla 5, conf 0.01), no diversity term.
LIMA_WEIGHTS = {"conf": 0.01, "eff": 0.0, "cons": 20.0, "colla": 5.0}


def lima(
    task: ImageTask,
    *,
    units: UnitSpec = None,
    n_segments: int = 40,
    compactness: float = 10.0,
    baseline: Baseline = "zero",
    weights: dict[str, float] | None = None,
    pending: int = 8,
    embedding_layer: str | None = None,
) -> Attribution:
    """LiMA: rank image regions by the bidirectional greedy search of F (each iteration adds
    the best region to the important list and, among the ``pending`` lowest-scoring ones, the
    worst to the unimportant list); weights default to :data:`LIMA_WEIGHTS` (cons 20, colla 5,
    conf 0.01). Units, baseline and the returned Attribution as for
    :func:`~attribkit.methods.image.smdl.smdl`.

    Cost: 2·:func:`~attribkit.methods.image.submodular.bidirectional_evaluations` (m, pending)
    forward passes, less cache hits: 1,666 at m = 50 against SMDL's 2,550; 610 at m = 28 (chelsea,
    default 40 segments: measured 595 against SMDL's 807).
    """
    return rank_regions(
        task,
        "lima",
        units,
        n_segments,
        compactness,
        baseline,
        weights,
        LIMA_WEIGHTS,
        embedding_layer,
        pending=pending,
    )
