"""How much do several attribution methods agree over a set of inputs? Mean ± std of pairwise
rank agreement, as in Neely et al., 'A Song of (Dis)agreement: Evaluating the Evaluation of
Explainable Artificial Intelligence in Natural Language Processing', 2022.

Caveat from the paper: methods broadly disagree, similar-looking explanations can have near-zero
rank correlation, and there is no "ideal" ranking to agree with, so agreement between methods
must NOT be used to validate explanations (agreement is not faithfulness). Use it to describe
how interchangeable methods are, and use faithfulness tests to judge them.

No model calls: everything is computed from the scores already in the Attributions.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats

from attribkit.core.attribution import Attribution
from attribkit.core.errors import InputError
from attribkit.evaluation.agreement import rank_correlation, top_indices

METRICS = ("kendall", "spearman", "top_k_overlap")
Rows = Literal["each", "sum"]

CAVEAT = (
    "Agreement between methods is not evidence that either is faithful; do not use it to "
    "validate explanations (Neely et al., 2022)."
)


def _pair(x: np.ndarray, y: np.ndarray, k: int) -> tuple[float, float, float]:
    """(Kendall τ-b, Spearman ρ, top-k overlap) over the entries finite in both vectors."""
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    m = len(x)
    k_eff = min(k, m)
    overlap = len(top_indices(x, k_eff) & top_indices(y, k_eff)) / k_eff if k_eff else math.nan
    return (
        rank_correlation(stats.kendalltau, x, y),
        rank_correlation(stats.spearmanr, x, y),
        overlap,
    )


def _vectors(att: Attribution, rows: Rows, absolute: bool) -> np.ndarray:
    """(rows, units) score vectors to compare: one row for 1-D scores or ``rows="sum"``."""
    s = np.asarray(att.scores, dtype=float)
    if s.ndim == 2 and rows == "each":
        return np.abs(s) if absolute else s
    v = att.vector
    return (np.abs(v) if absolute else v)[None, :]


def _check_units(a: Attribution, b: Attribution, name_a: str, name_b: str, i: int) -> None:
    if len(a) != len(b) or any(
        ua.label != ub.label for ua, ub in zip(a.units, b.units, strict=False)
    ):
        raise InputError(
            f"input {i}: {name_a!r} and {name_b!r} describe different units ({len(a)} vs "
            f"{len(b)} units, or different labels); give every method the same inputs, in the "
            "same order, split the same way"
        )


@dataclass
class AgreementReport:
    """Pairwise agreement between methods over inputs.

    ``values[metric]`` is an (m, m, n_inputs) array: the agreement of methods i and j on each
    input (for ``rows="each"``, the mean over that input's rows); NaN where undefined (fewer
    than two compared units or a constant ranking). Read it with :meth:`matrix`, :meth:`table`
    and :meth:`to_dict`. :data:`CAVEAT` applies: agreement does not validate explanations.
    """

    methods: list[str]
    k: int
    absolute: bool
    rows: str
    n_inputs: int
    values: dict[str, np.ndarray]

    def matrix(self, metric: str = "kendall", stat: Literal["mean", "std", "n"] = "mean") -> Any:
        """(m, m) array of the mean (or std, or number of inputs where defined) of ``metric``
        over inputs; ``metric`` is one of ``kendall``, ``spearman``, ``top_k_overlap``."""
        if metric not in self.values:
            raise InputError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")
        v = self.values[metric]
        n = np.isfinite(v).sum(axis=-1)
        if stat == "n":
            return n
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            if stat == "mean":
                return np.where(n > 0, np.nanmean(v, axis=-1), np.nan)
            if stat == "std":
                return np.where(n > 0, np.nanstd(v, axis=-1), np.nan)
        raise InputError(f"unknown stat {stat!r}: use 'mean', 'std' or 'n'")

    def pairs(self) -> list[dict[str, Any]]:
        """One dict per unordered pair of methods: mean, std and n of every metric."""
        out = []
        stats_ = {m: (self.matrix(m), self.matrix(m, "std"), self.matrix(m, "n")) for m in METRICS}
        for i, a in enumerate(self.methods):
            for j in range(i + 1, len(self.methods)):
                row: dict[str, Any] = {"a": a, "b": self.methods[j]}
                for m, (mean, std, n) in stats_.items():
                    row[m] = {
                        "mean": _num(mean[i, j]),
                        "std": _num(std[i, j]),
                        "n": int(n[i, j]),
                    }
                out.append(row)
        return out

    def table(self) -> str:
        """A plain-text table: one line per pair of methods, mean ± std over inputs."""
        heads = ["method A", "method B", "Kendall τ", "Spearman ρ", f"top-{self.k} overlap", "n"]
        body = []
        for p in self.pairs():
            cells = [p["a"], p["b"]]
            for m in METRICS:
                mean, std = p[m]["mean"], p[m]["std"]
                cells.append("n/a" if mean is None else f"{mean:+.3f} ± {std:.3f}")
            cells.append(str(p["kendall"]["n"]))
            body.append(cells)
        widths = [max(len(r[c]) for r in [heads, *body]) for c in range(len(heads))]

        def fmt(cells: list[str]) -> str:
            return "  ".join(
                c.ljust(w) if n < 2 else c.rjust(w)
                for n, (c, w) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()

        scores = "|scores|" if self.absolute else "signed scores"
        lines = [
            f"agreement of {len(self.methods)} methods over {self.n_inputs} inputs "
            f"({scores}, rows: {self.rows})",
            fmt(heads),
            "  ".join("-" * w for w in widths),
            *(fmt(r) for r in body),
            CAVEAT,
        ]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary: settings, per-pair mean/std/n, mean matrices, the caveat."""
        return {
            "methods": list(self.methods),
            "k": self.k,
            "absolute": self.absolute,
            "rows": self.rows,
            "n_inputs": self.n_inputs,
            "pairs": self.pairs(),
            "matrices": {m: [[_num(x) for x in r] for r in self.matrix(m)] for m in METRICS},
            "caveat": CAVEAT,
        }

    def __str__(self) -> str:
        return self.table()


def _num(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def agreement_report(
    attributions_by_method: dict[str, list[Attribution]],
    k: int = 5,
    absolute: bool = True,
    rows: Rows = "each",
) -> AgreementReport:
    """Pairwise Kendall τ-b, Spearman ρ and top-k overlap of several methods over the same inputs.

    ``attributions_by_method`` maps a method name to its Attributions of the inputs, the same
    inputs in the same order for every method (same units per input index; checked by count and
    label). ``absolute=True`` (default, as in Neely et al. 2022) ranks units by |score|; False
    ranks signed scores. Units unscored (NaN) by either method are left out of a comparison.
    top-k overlap = |top_k(a) ∩ top_k(b)| / k (k capped at the number of compared units).

    Rows × units scores (token attribution of generated text): ``rows="each"`` (default)
    compares row by row over the columns the row can see (finite in both) and averages the rows
    of an input, so every input weighs the same; both methods must then have the same rows.
    ``rows="sum"`` compares the column sums (:attr:`~attribkit.core.attribution.Attribution.vector`,
    summed signed, then |·| when ``absolute``). 1-D scores are compared as they are.

    Returns an :class:`AgreementReport` (mean ± std over inputs). The paper's conclusion: methods
    broadly disagree and agreement must not be used to validate explanations.
    Cost: no model calls.
    """
    if not isinstance(attributions_by_method, dict) or len(attributions_by_method) < 2:
        raise InputError("give at least two methods: {method name: [Attribution per input]}")
    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    if rows not in ("each", "sum"):
        raise InputError(f"unknown rows {rows!r}: use 'each' or 'sum'")
    names = [str(n) for n in attributions_by_method]
    lists = [list(v) for v in attributions_by_method.values()]
    n_inputs = len(lists[0])
    if n_inputs == 0:
        raise InputError("no inputs: give each method a non-empty list of Attributions")
    for name, lst in zip(names, lists, strict=True):
        if len(lst) != n_inputs:
            raise InputError(
                f"{name!r} has {len(lst)} attributions but {names[0]!r} has {n_inputs}; give "
                "every method one Attribution per input, in the same order"
            )
        for a in lst:
            if not isinstance(a, Attribution):
                raise InputError(f"{name!r}: expected Attributions, got {type(a).__name__}")
    m = len(names)
    values = {metric: np.full((m, m, n_inputs), np.nan) for metric in METRICS}
    for t in range(n_inputs):
        vecs = [_vectors(lst[t], rows, absolute) for lst in lists]
        for i in range(m):
            for j in range(i, m):
                _check_units(lists[i][t], lists[j][t], names[i], names[j], t)
                if vecs[i].shape != vecs[j].shape:
                    raise InputError(
                        f"input {t}: {names[i]!r} has {vecs[i].shape[0]} rows, {names[j]!r} "
                        f"{vecs[j].shape[0]}; compare row by row only attributions of the same "
                        "rows, or pass rows='sum' to compare summed rows"
                    )
                per_row = np.array([_pair(x, y, k) for x, y in zip(vecs[i], vecs[j], strict=True)])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    mean = np.nanmean(per_row, axis=0)
                for c, metric in enumerate(METRICS):
                    values[metric][i, j, t] = values[metric][j, i, t] = mean[c]
    return AgreementReport(
        methods=names,
        k=int(k),
        absolute=bool(absolute),
        rows=rows,
        n_inputs=n_inputs,
        values=values,
    )


__all__ = ["CAVEAT", "AgreementReport", "agreement_report"]
