"""How far a reasoning-step attribution agrees with reference importances (e.g. Thought Anchors'
shipped ``counterfactual_importance_kl``; Bogdan et al., 'Thought Anchors: Which LLM Reasoning
Steps Matter?', 2025), always beside trivial baselines computed on the same sentences.

Reference importances in reasoning traces are strongly tied to position (on the shipped traces
"earlier is more important" alone reaches a mean Spearman of about 0.46), so a raw correlation
says little. Every row is therefore shown beside ``position``, ``length``, ``random`` and (with
function tags) a leave-one-trace-out ``tag_prior``, and the main measure is the partial Spearman
given position. No model calls: everything is computed from the given scores and labels.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from attribkit.core.attribution import Attribution
from attribkit.core.errors import InputError
from attribkit.core.jsonio import to_json
from attribkit.evaluation.agreement import top_indices

METRICS = ("spearman", "partial_spearman", "top_k_overlap")
BASELINES = ("position", "length", "random", "tag_prior")
#: random baseline: number of seeded random scorings averaged per trace
RANDOM_DRAWS = 20


# --- per-trace measures -------------------------------------------------------------------------
def _ranks(v: np.ndarray) -> np.ndarray:
    return stats.rankdata(v).astype(float)


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan  # undefined for fewer than two points or a constant ranking
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.spearmanr(x, y).statistic)


def _residual(r: np.ndarray, rp: np.ndarray) -> np.ndarray:
    """Residual of the least-squares fit r ≈ α + β·rp."""
    design = np.column_stack([np.ones_like(rp), rp])
    coef, *_ = np.linalg.lstsq(design, r, rcond=None)
    return r - design @ coef


def partial_spearman(x: np.ndarray, y: np.ndarray, position: np.ndarray) -> float:
    """Spearman of ``x`` and ``y`` given ``position``: with R(·) the ranks (ties averaged),
    e_x = R(x) − (α + β R(position)) and e_y likewise (ordinary least squares with intercept),
    the result is Pearson(e_x, e_y) — equal to (ρ_xy − ρ_xp ρ_yp) / √((1 − ρ_xp²)(1 − ρ_yp²)).

    NaN when fewer than three points remain or ``x`` or ``y`` is constant. When ``x`` or ``y``
    is a monotone function of position (its residual vanishes) it carries nothing beyond
    position and the result is 0 by convention. No model calls."""
    x, y, p = (np.asarray(a, dtype=float) for a in (x, y, position))
    if len(x) < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    rp = _ranks(p)
    ex, ey = _residual(_ranks(x), rp), _residual(_ranks(y), rp)
    scale = len(x)  # ranks are O(n): a residual this small is numerical noise
    if np.linalg.norm(ex) < 1e-9 * scale or np.linalg.norm(ey) < 1e-9 * scale:
        return 0.0
    return float(np.dot(ex, ey) / (np.linalg.norm(ex) * np.linalg.norm(ey)))


def top_k_overlap(x: np.ndarray, y: np.ndarray, k: int) -> float:
    """|top_k(x) ∩ top_k(y)| / k, k capped at the number of points (ties: earlier first)."""
    k = min(int(k), len(x))
    return len(top_indices(np.asarray(x), k) & top_indices(np.asarray(y), k)) / k if k else math.nan


def _measures(score: np.ndarray, lab: np.ndarray, pos: np.ndarray, k: int) -> np.ndarray:
    if not np.all(np.isfinite(score)):
        return np.full(3, math.nan)  # a baseline that cannot score these sentences (tag prior)
    return np.array(
        [_spearman(score, lab), partial_spearman(score, lab, pos), top_k_overlap(score, lab, k)]
    )


# --- the result ---------------------------------------------------------------------------------
@dataclass
class AnchorAgreement:
    """Agreement of a reasoning-step attribution with reference importances, beside baselines.

    ``rows``: one per (trace, method or baseline) with ``trace``, ``method``, ``n`` (sentences
    compared) and the three measures. ``aggregate``: one per method or baseline with, per
    measure, ``mean`` over traces (where defined), ``lo``/``hi`` (bootstrap 95 % percentile
    interval) and ``n`` (traces where defined). ``resampled`` says what the bootstrap resampled
    (``"traces"``, or ``"sentences"`` with one trace). ``informative``: the method's partial
    Spearman interval lies above 0 and its top-k overlap reaches the position baseline's;
    ``reason`` says why or why not.
    """

    method: str
    k: int
    n_traces: int
    n_boot: int
    seed: int
    resampled: str
    baselines: list[str]
    rows: list[dict[str, Any]]
    aggregate: list[dict[str, Any]]
    informative: bool
    reason: str
    notes: list[str] = field(default_factory=list)

    def row(self, method: str) -> dict[str, Any]:
        """The aggregate row of ``method`` (the method's name or a baseline)."""
        for r in self.aggregate:
            if r["method"] == method:
                return r
        raise InputError(
            f"no aggregate row {method!r}: use one of {[r['method'] for r in self.aggregate]}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (non-finite numbers become None)."""
        return to_json(
            {
                "method": self.method,
                "k": self.k,
                "n_traces": self.n_traces,
                "n_boot": self.n_boot,
                "seed": self.seed,
                "resampled": self.resampled,
                "baselines": self.baselines,
                "aggregate": self.aggregate,
                "rows": self.rows,
                "informative": self.informative,
                "reason": self.reason,
                "notes": self.notes,
            }
        )

    def to_markdown(self) -> str:
        """A markdown table: one line per method or baseline, mean [95 % interval] per measure."""

        def cell(m: dict[str, Any]) -> str:
            if not math.isfinite(m["mean"]):
                return "n/a"
            return f"{m['mean']:+.3f} [{m['lo']:+.3f}, {m['hi']:+.3f}]"

        heads = [
            "method",
            "Spearman ρ",
            "partial ρ given position",
            f"top-{self.k} overlap",
            "traces",
        ]
        lines = [
            "| " + " | ".join(heads) + " |",
            "|" + "|".join(["---"] + ["---:"] * (len(heads) - 1)) + "|",
        ]
        for r in self.aggregate:
            cells = [r["method"], *(cell(r[m]) for m in METRICS), str(r["spearman"]["n"])]
            lines.append("| " + " | ".join(cells) + " |")
        tail = (
            f"\n{self.n_traces} trace(s); 95 % bootstrap intervals over {self.resampled} "
            f"({self.n_boot} resamples, seed {self.seed}). "
            f"{self.method}: {self.reason}"
        )
        return "\n".join(lines) + tail + "".join(f"\n- {n}" for n in self.notes)

    def __str__(self) -> str:
        return self.to_markdown()


# --- input handling -----------------------------------------------------------------------------
def _as_float(values: Sequence[Any], what: str) -> np.ndarray:
    try:
        return np.array([math.nan if v is None else float(v) for v in values], dtype=float)
    except (TypeError, ValueError) as e:
        raise InputError(f"{what}: every value must be a number or None ({e})") from None


def _tag_keys(tag: Any) -> list[str]:
    """A sentence's tags: a string, a list of strings (shipped ``function_tags``), or None."""
    if tag is None:
        return []
    if isinstance(tag, str):
        return [tag]
    return [str(t) for t in tag]


def _tag_priors(
    tags: list[list[Any]], labels: list[np.ndarray]
) -> tuple[list[np.ndarray], list[str]]:
    """Per trace, each sentence's prior = the mean over its tags of that tag's mean label over
    the OTHER traces (leave-one-trace-out); a sentence without a known tag gets the mean label
    of the other traces. NaN everywhere for a trace when no other trace has labels."""
    per_trace: list[dict[str, list[float]]] = []
    for tg, lab in zip(tags, labels, strict=True):
        d: dict[str, list[float]] = {}
        for t, v in zip(tg, lab, strict=True):
            if math.isfinite(v):
                for key in _tag_keys(t):
                    d.setdefault(key, []).append(float(v))
        per_trace.append(d)
    out, notes = [], []
    for i, tg in enumerate(tags):
        sums: dict[str, list[float]] = {}
        for j, d in enumerate(per_trace):
            if j != i:
                for key, vs in d.items():
                    sums.setdefault(key, []).extend(vs)
        others = [v for j, lab in enumerate(labels) if j != i for v in lab if math.isfinite(v)]
        if not others:
            out.append(np.full(len(tg), math.nan))
            continue
        fallback = float(np.mean(others))
        means = {key: float(np.mean(vs)) for key, vs in sums.items()}
        prior = []
        for t in tg:
            known = [means[key] for key in _tag_keys(t) if key in means]
            prior.append(float(np.mean(known)) if known else fallback)
        out.append(np.array(prior))
    if len(tags) < 2:
        notes.append("tag_prior needs at least two traces (leave-one-trace-out): n/a")
    return out, notes


# --- aggregation --------------------------------------------------------------------------------
def _summary(values: np.ndarray, boot: np.ndarray) -> dict[str, Any]:
    """values: per trace; boot: bootstrap means."""
    ok = np.isfinite(values)
    mean = float(np.mean(values[ok])) if ok.any() else math.nan
    b = boot[np.isfinite(boot)]
    lo, hi = (
        (float(np.percentile(b, 2.5)), float(np.percentile(b, 97.5)))
        if len(b)
        else (
            math.nan,
            math.nan,
        )
    )
    return {"mean": mean, "lo": lo, "hi": hi, "n": int(ok.sum())}


def _nanmean_rows(m: np.ndarray) -> np.ndarray:
    """Mean over axis 1 of finite entries; NaN where none."""
    ok = np.isfinite(m)
    s = np.where(ok, m, 0.0).sum(axis=1)
    c = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c > 0, s / np.maximum(c, 1), np.nan)


def anchor_agreement(
    results: Attribution | Sequence[Attribution],
    labels: Sequence[Any],
    *,
    tags: Sequence[Any] | None = None,
    k: int = 5,
    n_boot: int = 1000,
    seed: int = 0,
) -> AnchorAgreement:
    """Agreement of reasoning-step attributions with reference importances, beside baselines.

    ``results`` is one Attribution or a list (one per trace); ``labels`` the matching reference
    vectors (one value per sentence, e.g. ``trace.labels["counterfactual_importance_kl"]``; for
    one Attribution, one vector). ``tags`` optionally gives each trace's per-sentence function
    tags (a string or a list of strings per sentence, e.g. the shipped ``function_tags``).
    Sentences whose score or label is NaN/None are dropped, for the method and every baseline.

    Per trace: Spearman ρ, partial Spearman given sentence position (:func:`partial_spearman`)
    and top-k overlap |top_k(score) ∩ top_k(labels)| / k. Beside it, on the same sentences:
    ``position`` (score = −index: earlier is more important, the sign under which position is
    positively correlated with the shipped ``counterfactual_importance_kl``), ``length``
    (characters of the sentence), ``random`` (mean over :data:`RANDOM_DRAWS` seeded draws) and,
    with ``tags``, ``tag_prior`` (mean label of the sentence's tag over the OTHER traces, so the
    prior never sees the trace it scores). Aggregate: mean over traces with a bootstrap 95 %
    percentile interval over ``n_boot`` resamples of the traces (one trace: of its sentences).
    The random baseline's draws are fixed by ``seed``, so its interval covers only the trace
    (or sentence) resampling. Ties (e.g. the many zero KL labels) are broken by earlier sentence
    first in top-k, which favours the position baseline there.

    ``informative`` is True only if the method's partial-Spearman interval lies above 0 and its
    mean top-k overlap is at least the position baseline's. Raises InputError on mismatched
    counts or lengths. Cost: no model calls.
    """
    single = isinstance(results, Attribution)
    res = [results] if single else list(results)
    labs_in = [labels] if single else list(labels)
    tags_in = None if tags is None else ([tags] if single else list(tags))
    if not res:
        raise InputError("no attributions given: pass one Attribution or a list, one per trace")
    if not all(isinstance(r, Attribution) for r in res):
        raise InputError("results must be Attribution objects (one per trace)")
    if len(labs_in) != len(res):
        raise InputError(
            f"{len(res)} attributions but {len(labs_in)} label vectors: give one per trace"
        )
    if tags_in is not None and len(tags_in) != len(res):
        raise InputError(f"{len(res)} attributions but {len(tags_in)} tag lists: one per trace")
    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    if n_boot < 1:
        raise InputError(f"n_boot must be >= 1, got {n_boot}")

    labs = []
    for i, (r, lab) in enumerate(zip(res, labs_in, strict=True)):
        lab = _as_float(lab, f"labels of trace {i}")
        if len(lab) != len(r):
            raise InputError(
                f"trace {i}: {len(lab)} labels for {len(r)} units of {r.method!r}; give one "
                "label per sentence, in the attribution's unit order"
            )
        if tags_in is not None and len(tags_in[i]) != len(r):
            raise InputError(
                f"trace {i}: {len(tags_in[i])} tags for {len(r)} units; one tag per sentence"
            )
        labs.append(lab)
    notes: list[str] = []
    priors = None
    if tags_in is not None:
        priors, tnotes = _tag_priors([list(t) for t in tags_in], labs)
        notes += tnotes
    names = [res[0].method] if len({r.method for r in res}) == 1 else ["method"]
    method = names[0]
    if method in BASELINES:
        method = f"method:{method}"
    kinds = [method, "position", "length", "random"] + (["tag_prior"] if priors else [])

    rng = np.random.default_rng(seed)
    # per trace: dict name -> score array on kept sentences (random: (draws, n))
    traces: list[dict[str, Any]] = []
    for i, (r, lab) in enumerate(zip(res, labs, strict=True)):
        score = r.vector
        keep = np.isfinite(score) & np.isfinite(lab)
        idx = np.flatnonzero(keep)
        t = {
            "lab": lab[idx],
            "pos": idx.astype(float),
            method: score[idx],
            "position": -idx.astype(float),
            "length": np.array([len(r.units[j].label) for j in idx], dtype=float),
            "random": rng.random((RANDOM_DRAWS, len(r)))[:, idx],
        }
        if priors:
            t["tag_prior"] = priors[i][idx]
        traces.append(t)
        if len(idx) < 3:
            notes.append(f"trace {i}: only {len(idx)} sentences with a score and a label")

    def measure(t: dict[str, Any], name: str, sel: np.ndarray | None = None) -> np.ndarray:
        sl = slice(None) if sel is None else sel
        lab, pos = t["lab"][sl], t["pos"][sl]
        if name == "random":
            draws = np.array([_measures(d[sl], lab, pos, k) for d in t["random"]])
            return _nanmean_rows(draws.T)
        return _measures(t[name][sl], lab, pos, k)

    per = {name: np.array([measure(t, name) for t in traces]) for name in kinds}  # (T, 3)
    rows = []
    for i, t in enumerate(traces):
        for name in kinds:
            rows.append(
                {
                    "trace": i,
                    "method": name,
                    "n": len(t["lab"]),
                    **{m: float(per[name][i, j]) for j, m in enumerate(METRICS)},
                }
            )

    brng = np.random.default_rng([seed, 1])
    n_t = len(traces)
    boots = {name: np.full((n_boot, 3), math.nan) for name in kinds}
    if n_t > 1:
        resampled = "traces"
        for b in range(n_boot):
            pick = brng.integers(0, n_t, n_t)
            for name in kinds:
                boots[name][b] = _nanmean_rows(per[name][pick].T)
    else:
        resampled = "sentences"
        t = traces[0]
        n_s = len(t["lab"])
        if n_s > 0:
            for b in range(n_boot):
                pick = brng.integers(0, n_s, n_s)
                for name in kinds:
                    boots[name][b] = measure(t, name, pick)

    aggregate = []
    for name in kinds:
        row: dict[str, Any] = {"method": name}
        for j, m in enumerate(METRICS):
            row[m] = _summary(per[name][:, j], boots[name][:, j])
        aggregate.append(row)

    me = aggregate[0]
    pos_top = aggregate[1]["top_k_overlap"]["mean"]
    lo, top = me["partial_spearman"]["lo"], me["top_k_overlap"]["mean"]
    part_ok = math.isfinite(lo) and lo > 0
    top_ok = math.isfinite(top) and math.isfinite(pos_top) and top >= pos_top
    informative = bool(part_ok and top_ok)
    why = [
        (
            "partial Spearman given position interval lower bound "
            + (f"{lo:+.3f} " if math.isfinite(lo) else "n/a ")
            + ("> 0" if part_ok else "does not exclude 0 from above")
        ),
        (
            f"top-{k} overlap {top:.3f} "
            + (">=" if top_ok else "< (or n/a against)")
            + f" position baseline {pos_top:.3f}"
        ),
    ]
    reason = (
        ("informative: " if informative else "not informative: ")
        + "; ".join(why)
        + f" (interval over {resampled})."
    )
    return AnchorAgreement(
        method=method,
        k=int(k),
        n_traces=n_t,
        n_boot=int(n_boot),
        seed=int(seed),
        resampled=resampled,
        baselines=kinds[1:],
        rows=rows,
        aggregate=aggregate,
        informative=informative,
        reason=reason,
        notes=notes,
    )
