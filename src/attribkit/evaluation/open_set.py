"""Open-set, open-world and few-shot evaluation of source attribution ("who produced this?").

- :func:`open_set_report`: closed-set accuracy and macro-F1 on the known sources, AUROC known vs
  unknown, TNR at 95 % TPR, OSCR and macro-F1 with rejection, overall and per unknown scenario
  (the protocol of "Progressive Open Space Expansion for Open-Set Model Attribution", POSE, 2023;
  OSCR of Dhamija et al., "Reducing Network Agnostophobia", 2018, as used by Vaze et al.,
  "Open-Set Recognition: a Good Closed-Set Classifier is All You Need?", 2022).
- :func:`open_world_report`: Hungarian-matched clustering accuracy on all, known and novel
  sources, NMI and ARI, in the two conventions of the literature ("Contrastive Pseudo Learning for
  Open-World DeepFake Attribution", CPL, 2023).
- :func:`few_shot_episodes`: seeded N-way K-shot episodes with cosine prototypes (OmniDFA: "A
  Unified Framework for Open Set Synthesis Image Detection and Few-Shot Attribution", 2025).

These are evaluators: they cost no model calls; they read scores, cluster ids or features already
computed. Only numpy, scipy and scikit-learn are used (imported where needed).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from typing import Any, Literal

import numpy as np

from attribkit.core.errors import InputError
from attribkit.models.open_set import threshold_at_tpr

__all__ = ["few_shot_episodes", "open_set_report", "open_world_report"]

#: rows whose entries lie in [0, 1] and sum to 1 within this tolerance are read as probabilities
#: when ``inputs="auto"``
PROBA_ATOL = 1e-6


# ---------------------------------------------------------------------------------------------
# open-set recognition
# ---------------------------------------------------------------------------------------------
def _is_proba(scores: np.ndarray) -> bool:
    return bool(
        np.all(scores >= 0)
        and np.all(scores <= 1)
        and np.all(np.abs(scores.sum(axis=1) - 1) <= PROBA_ATOL)
    )


def max_softmax(logits: np.ndarray) -> np.ndarray:
    """The maximum softmax probability of each row of ``logits`` (n × K), computed stably as
    ``1 / Σ_j exp(z_j − max z)``. Returns shape (n,); no model calls."""
    z = np.asarray(logits, dtype=float)
    return 1.0 / np.exp(z - z.max(axis=1, keepdims=True)).sum(axis=1)


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Area under the ROC curve of ``positive`` vs ``negative`` scores (higher = positive), by
    ranks: the share of (positive, negative) pairs ordered correctly, a tie counting one half
    (Mann–Whitney U / (n₁ n₀)); this equals ``sklearn.metrics.roc_auc_score`` including ties.
    Counts are exact integers, so the only rounding is the final division. No model calls."""
    pos = np.asarray(positive, dtype=float).ravel()
    neg = np.sort(np.asarray(negative, dtype=float).ravel())
    if pos.size == 0 or neg.size == 0:
        raise InputError("AUROC needs at least one positive and one negative score")
    lo = np.searchsorted(neg, pos, side="left")  # negatives strictly below each positive
    hi = np.searchsorted(neg, pos, side="right")  # ... plus the tied ones
    return float(int((lo + hi).sum()) / (2 * pos.size * neg.size))


def oscr(conf_known: np.ndarray, correct: np.ndarray, conf_unknown: np.ndarray) -> float:
    """Open-Set Classification Rate (Dhamija et al., "Reducing Network Agnostophobia", 2018; Vaze
    et al., 2022): the area under the curve of the correct-classification rate of the knowns
    (accepted *and* correctly classified, over all knowns) against the false-positive rate of the
    unknowns (accepted, over all unknowns), as the threshold ``t`` sweeps every distinct
    confidence from high to low (accept when ``confidence >= t``), starting at (0, 0).

    Ties are handled deterministically: all samples with the same confidence enter together, so a
    tie between knowns and unknowns gives a straight (trapezoid) segment, exactly as AUROC counts
    a tie as one half. The curve ends at (1, closed-set accuracy), hence OSCR ≤ accuracy; with
    every known correctly classified OSCR equals the AUROC. Counts are integers, so the only
    rounding is the final division. Returns a float in [0, 1]; no model calls.
    """
    ck = np.asarray(conf_known, dtype=float).ravel()
    ok = np.asarray(correct, dtype=bool).ravel()
    cu = np.sort(np.asarray(conf_unknown, dtype=float).ravel())
    if ck.size == 0 or cu.size == 0:
        raise InputError("OSCR needs at least one known and one unknown sample")
    if ok.shape != ck.shape:
        raise InputError("correct must have one entry per known confidence")
    cc_sorted = np.sort(ck[ok])
    t = np.unique(np.concatenate([ck, cu]))[::-1]  # thresholds, high to low
    cc = cc_sorted.size - np.searchsorted(cc_sorted, t, side="left")  # correct knowns >= t
    fp = cu.size - np.searchsorted(cu, t, side="left")  # unknowns >= t
    cc = np.concatenate([[0], cc]).astype(np.int64)
    fp = np.concatenate([[0], fp]).astype(np.int64)
    twice_area = int((np.diff(fp) * (cc[1:] + cc[:-1])).sum())
    return float(twice_area / (2 * ck.size * cu.size))


def _f1_macro(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


def _check_scores(
    scores: Any, y_true: Any, known_labels: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    s = np.asarray(scores)
    if s.ndim != 2:
        raise InputError(
            f"scores must be a 2-D array (n samples × K known sources), got shape {s.shape}"
        )
    try:
        s = s.astype(float)
    except (TypeError, ValueError) as exc:
        raise InputError(f"scores must be numbers: {exc}") from None
    n, k = s.shape
    if n == 0:
        raise InputError("scores has no rows; pass one row of scores per sample")
    if k < 2:
        raise InputError(
            f"scores has {k} column(s): open-set attribution needs at least two known sources "
            "(one column per known source); with a single class there is nothing to classify"
        )
    if not np.all(np.isfinite(s)):
        bad = int((~np.isfinite(s)).any(axis=1).sum())
        raise InputError(
            f"scores contain NaN or infinite values in {bad} row(s); fix or drop those samples"
        )
    y = np.asarray(y_true)
    if y.ndim != 1 or y.shape[0] != n:
        raise InputError(
            f"y_true must be 1-D with one label per row of scores: got shape {y.shape} for {n} rows"
        )
    if y.dtype.kind not in "iub":
        if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise InputError(
                f"y_true must hold integers (0..K-1 for a known source, -1 for an unknown), got "
                f"dtype {y.dtype}"
            )
    y = y.astype(np.int64)
    outside = (y < -1) | (y >= k)
    if outside.any():
        raise InputError(
            f"y_true has labels outside -1..{k - 1} (e.g. {int(y[outside][0])}): use 0..{k - 1} "
            "for the known sources (the columns of scores) and -1 for an unknown source"
        )
    if known_labels is None:
        names = [str(i) for i in range(k)]
    else:
        names = [str(v) for v in known_labels]
        if len(names) != k:
            raise InputError(
                f"known_labels has {len(names)} names but scores has {k} columns; name each "
                "column once"
            )
        if len(set(names)) != k:
            raise InputError("known_labels has repeated names; name each known source once")
    n_known = int((y >= 0).sum())
    if n_known == 0:
        raise InputError(
            "no known samples (every y_true is -1): closed-set accuracy, the TPR threshold and "
            "OSCR are undefined; add samples of the known sources"
        )
    if n_known == n:
        raise InputError(
            "no unknown samples (no y_true of -1): AUROC, TNR at 95 % TPR and OSCR are undefined "
            "without unknowns; add samples of unknown sources, or use closed-set metrics "
            "(e.g. sklearn.metrics.accuracy_score / f1_score)"
        )
    return s, y, names


def _confidence(
    s: np.ndarray, score: str, inputs: str
) -> tuple[np.ndarray, Literal["logits", "proba"]]:
    if inputs not in ("auto", "logits", "proba"):
        raise InputError(f"inputs must be 'auto', 'logits' or 'proba', got {inputs!r}")
    if score not in ("softmax", "logit"):
        raise InputError(f"score must be 'softmax' or 'logit', got {score!r}")
    is_p = _is_proba(s)
    if inputs == "proba" and not is_p:
        raise InputError(
            "inputs='proba' but the rows of scores are not probabilities (entries in [0, 1] "
            f"summing to 1 within {PROBA_ATOL}); pass inputs='logits' for raw scores"
        )
    kind: Literal["logits", "proba"] = (
        "proba" if inputs == "proba" or (inputs == "auto" and is_p) else "logits"
    )
    if score == "logit" or kind == "proba":
        return s.max(axis=1), kind
    return max_softmax(s), kind


def _tnr(conf_unknown: np.ndarray, threshold: float) -> float:
    return float(np.mean(conf_unknown < threshold))


def open_set_report(
    scores: Any,
    y_true: Any,
    *,
    known_labels: Sequence[str] | None = None,
    scenario: Sequence[str | None] | np.ndarray | None = None,
    score: Literal["softmax", "logit"] = "softmax",
    inputs: Literal["auto", "logits", "proba"] = "auto",
    tpr: float = 0.95,
    threshold: float | None = None,
) -> dict[str, Any]:
    """Open-set figures of a source classifier from its scores on knowns and unknowns.

    Follows the evaluation of POSE ("Progressive Open Space Expansion for Open-Set Model
    Attribution", 2023) and Vaze et al. ("Open-Set Recognition: a Good Closed-Set Classifier is
    All You Need?", 2022). Costs no model calls: it reads scores already computed.

    ``scores`` is n × K over the K known sources (higher = more likely); ``y_true`` is 0..K-1
    for a known source and -1 for an unknown one. The prediction is the argmax column (ties: the
    lowest index). The *confidence* (rejection score) of a row is:

    - ``score="softmax"``: the maximum softmax probability. The rows are read as logits and
      softmaxed, unless they are probabilities: with ``inputs="proba"``, or with
      ``inputs="auto"`` (default) when every entry lies in [0, 1] and every row sums to 1 within
      ``PROBA_ATOL`` = 1e-6 — then the confidence is the maximum entry itself. Pass
      ``inputs="logits"`` to always softmax.
    - ``score="logit"``: the maximum score as given (max logit; max probability for probabilities).

    Thresholds accept a sample when ``confidence >= threshold``. ``tnr_at_95_tpr`` uses the
    threshold at the ``ceil(0.95 · n_known)``-th largest known confidence (at least 95 % of the
    knowns accepted; :func:`attribkit.models.open_set.threshold_at_tpr`) and reports the share of
    unknowns below it. ``macro_f1_with_rejection`` scores K+1 classes (the knowns and -1 =
    unknown), a sample being rejected (predicted -1) below the *operating threshold*:
    ``threshold`` if given (on the confidence scale above), else the threshold at ``tpr`` of the
    knowns; ``threshold_rule`` says which.

    Returns a JSON-serialisable dict: ``closed_set_accuracy`` (argmax on the knowns), ``macro_f1``
    (closed set, knowns only: scikit-learn's macro F1 over the labels in truth or prediction),
    ``per_source_f1`` (name → closed-set F1, sources present among the knowns), ``auroc`` (known =
    positive; equal to ``sklearn.metrics.roc_auc_score`` including ties), ``tnr_at_95_tpr``,
    ``threshold_95_tpr``, ``oscr`` (see :func:`oscr`), ``macro_f1_with_rejection``, ``threshold``,
    ``threshold_rule``, ``tpr_at_threshold``, ``tnr_at_threshold``, ``n_known``, ``n_unknown``,
    ``score``, ``inputs`` (``"logits"`` or ``"proba"``, as read), ``sources`` and
    ``per_scenario`` (name → {``auroc``, ``tnr_at_95_tpr``, ``oscr``, ``n``}: that scenario's
    unknowns against all knowns; empty without ``scenario``).

    Raises :class:`~attribkit.core.errors.InputError` for fewer than two known sources, no knowns,
    no unknowns (AUROC, TNR and OSCR are then undefined), NaN scores, mismatched shapes, labels
    outside -1..K-1, and when every confidence is identical (no ranking to evaluate).
    """
    s, y, names = _check_scores(scores, y_true, known_labels)
    conf, kind = _confidence(s, score, inputs)
    if np.all(conf == conf[0]):
        raise InputError(
            f"every confidence is identical ({conf[0]:.6g}): all scores are tied, so AUROC, "
            "TNR and OSCR would only measure the tie-breaking; check that the model's scores "
            "vary (e.g. not a constant or all-uniform output)"
        )
    if not (isinstance(tpr, int | float) and 0.0 < float(tpr) <= 1.0):
        raise InputError(f"tpr must be in (0, 1], got {tpr!r}")
    if threshold is not None and not (
        isinstance(threshold, int | float) and math.isfinite(threshold)
    ):
        raise InputError(f"threshold must be a finite number or None, got {threshold!r}")

    pred = s.argmax(axis=1)
    known = y >= 0
    ck, cu = conf[known], conf[~known]
    yk, pk = y[known], pred[known]
    correct = pk == yk

    from sklearn.metrics import f1_score

    present = np.unique(yk)
    per_f1 = f1_score(yk, pk, labels=present, average=None, zero_division=0)
    thr95 = threshold_at_tpr(ck, 0.95)
    if threshold is None:
        thr = threshold_at_tpr(ck, tpr)
        rule = f"accepts >= {tpr:g} of the knowns (ceil(tpr * n_known)-th largest known confidence)"
    else:
        thr = float(threshold)
        rule = "given"
    rejected = np.where(conf >= thr, pred, -1)

    per_scenario: dict[str, dict[str, float | int]] = {}
    if scenario is not None:
        sc = np.asarray(scenario, dtype=object)
        if sc.ndim != 1 or sc.shape[0] != y.shape[0]:
            raise InputError(
                f"scenario must have one entry per sample ({y.shape[0]}), got shape {sc.shape}"
            )
        su = sc[~known]
        missing = [i for i, v in enumerate(su) if v is None or str(v) == ""]
        if missing:
            raise InputError(
                f"{len(missing)} unknown sample(s) have no scenario name; give every unknown "
                "sample (y_true = -1) a scenario such as 'unseen_seed' (knowns are ignored)"
            )
        su = su.astype(str)
        for name in sorted(set(su.tolist())):
            m = su == name
            per_scenario[name] = {
                "auroc": auroc(ck, cu[m]),
                "tnr_at_95_tpr": _tnr(cu[m], thr95),
                "oscr": oscr(ck, correct, cu[m]),
                "n": int(m.sum()),
            }

    return {
        "closed_set_accuracy": float(correct.mean()),
        "macro_f1": _f1_macro(yk, pk),
        "per_source_f1": {names[int(c)]: float(f) for c, f in zip(present, per_f1, strict=True)},
        "auroc": auroc(ck, cu),
        "tnr_at_95_tpr": _tnr(cu, thr95),
        "threshold_95_tpr": thr95,
        "oscr": oscr(ck, correct, cu),
        "macro_f1_with_rejection": _f1_macro(y, rejected),
        "threshold": thr,
        "threshold_rule": rule,
        "tpr_at_threshold": float(np.mean(ck >= thr)),
        "tnr_at_threshold": _tnr(cu, thr),
        "n_known": int(known.sum()),
        "n_unknown": int((~known).sum()),
        "score": score,
        "inputs": kind,
        "sources": names,
        "per_scenario": per_scenario,
    }


# ---------------------------------------------------------------------------------------------
# open-world (novel class discovery) evaluation
# ---------------------------------------------------------------------------------------------
def _int_labels(v: Any, name: str) -> np.ndarray:
    a = np.asarray(v)
    if a.ndim != 1:
        raise InputError(f"{name} must be 1-D (one label per sample), got shape {a.shape}")
    if a.dtype.kind not in "iu":
        if a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
            return a.astype(np.int64)
        raise InputError(f"{name} must hold integer labels, got dtype {a.dtype}")
    return a.astype(np.int64)


def hungarian_match(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[int, dict[int, int]]:
    """The one-to-one assignment of predicted clusters to true classes that maximises the number
    of samples whose cluster is assigned to their class (scipy's ``linear_sum_assignment`` on the
    cluster × class contingency table). Extra clusters (or classes) stay unassigned and count as
    wrong. Returns (number of matched samples, {cluster: class}); no model calls."""
    from scipy.optimize import linear_sum_assignment

    classes, ti = np.unique(y_true, return_inverse=True)
    clusters, pi = np.unique(y_pred, return_inverse=True)
    table = np.zeros((clusters.size, classes.size), dtype=np.int64)
    np.add.at(table, (pi, ti), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    mapping = {int(clusters[r]): int(classes[c]) for r, c in zip(rows, cols, strict=True)}
    return int(table[rows, cols].sum()), mapping


def _nmi_ari(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    return {
        "nmi": float(normalized_mutual_info_score(y, p)),
        "ari": float(adjusted_rand_score(y, p)),
    }


def open_world_report(
    y_true: Any, y_pred: Any, *, known: Iterable[int] | None = None
) -> dict[str, Any]:
    """Clustering figures of an open-world attributor (CPL: "Contrastive Pseudo Learning for
    Open-World DeepFake Attribution", 2023): cluster ids ``y_pred`` (any integers) against the true
    source labels ``y_true``; ``known`` is the set of labels seen with supervision, every other
    label is *novel*. Costs no model calls.

    Accuracy is Hungarian-matched (:func:`hungarian_match`: one cluster per class, extra clusters
    count as wrong), in both conventions of the literature:

    - ``global_matching`` (GCD convention, Vaze et al., "Generalized Category Discovery", 2022):
      ONE matching over all samples, then the accuracy of that same assignment restricted to the
      known and to the novel samples. A cluster can serve only one class, so known and novel
      compete for clusters.
    - ``separate_matching`` (as in ORCA, Cao et al., "Open-World Semi-Supervised Learning", 2022,
      and OW-DFA/CPL-style reports): separate matchings within the known subset and within the
      novel subset (each subset gets its own best assignment; this is ≥ the global figures).
      ``known_plain`` is ORCA's seen-class accuracy without matching (``y_pred == y_true``: right
      when the model's known heads carry the known labels).

    Returns a JSON-serialisable dict: ``accuracy`` (global matching on all samples), ``nmi``,
    ``ari`` (scikit-learn, all samples), ``global_matching`` {all, known, novel},
    ``separate_matching`` {all, known, novel, known_plain} (``all`` is the global-matching
    accuracy in both), ``known`` and ``novel`` {nmi, ari} on each subset, ``mapping`` (cluster →
    class of the global matching, keys as strings), ``n``, ``n_known``, ``n_novel``, ``n_classes``,
    ``n_clusters``. Without ``known`` the subset entries are None.
    """
    y = _int_labels(y_true, "y_true")
    p = _int_labels(y_pred, "y_pred")
    if y.size != p.size:
        raise InputError(
            f"y_true has {y.size} labels but y_pred has {p.size}; pass one cluster id per sample"
        )
    if y.size == 0:
        raise InputError("no samples: pass y_true and y_pred with at least one entry")
    n = int(y.size)
    matched, mapping = hungarian_match(y, p)
    clusters, inverse = np.unique(p, return_inverse=True)
    none = int(y.min()) - 1  # the class of an unmatched cluster: never right
    hit = np.array([mapping.get(int(c), none) for c in clusters])[inverse] == y
    out: dict[str, Any] = {
        "accuracy": matched / n,
        **_nmi_ari(y, p),
        "global_matching": {"all": matched / n, "known": None, "novel": None},
        "separate_matching": {
            "all": matched / n,
            "known": None,
            "novel": None,
            "known_plain": None,
        },
        "known": None,
        "novel": None,
        "mapping": {str(k): v for k, v in sorted(mapping.items())},
        "n": n,
        "n_known": None,
        "n_novel": None,
        "n_classes": int(np.unique(y).size),
        "n_clusters": int(np.unique(p).size),
    }
    if known is None:
        return out
    try:
        known_set = {int(v) for v in known}
    except (TypeError, ValueError):
        raise InputError("known must be an iterable of integer labels") from None
    is_known = np.isin(y, list(known_set))
    if not is_known.any():
        raise InputError(
            f"no sample has a known label {sorted(known_set)}; known accuracy is undefined: "
            "pass the labels of the known sources as they appear in y_true"
        )
    if is_known.all():
        raise InputError(
            "every sample has a known label: there are no novel sources, so novel accuracy is "
            "undefined; add samples of novel sources or pass known=None"
        )
    nk, nn = int(is_known.sum()), int((~is_known).sum())
    mk, _ = hungarian_match(y[is_known], p[is_known])
    mn, _ = hungarian_match(y[~is_known], p[~is_known])
    out["global_matching"]["known"] = float(hit[is_known].mean())
    out["global_matching"]["novel"] = float(hit[~is_known].mean())
    out["separate_matching"]["known"] = mk / nk
    out["separate_matching"]["novel"] = mn / nn
    out["separate_matching"]["known_plain"] = float(np.mean(p[is_known] == y[is_known]))
    out["known"] = _nmi_ari(y[is_known], p[is_known])
    out["novel"] = _nmi_ari(y[~is_known], p[~is_known])
    out["n_known"], out["n_novel"] = nk, nn
    return out


# ---------------------------------------------------------------------------------------------
# few-shot episodes
# ---------------------------------------------------------------------------------------------
def few_shot_episodes(
    features: Any,
    labels: Any,
    *,
    n_way: int = 5,
    k_shot: int = 10,
    n_query: int = 15,
    n_episodes: int = 600,
    seed: int = 0,
    classes: Sequence[Hashable] | None = None,
    return_episodes: bool = False,
) -> dict[str, Any]:
    """N-way K-shot episodes with cosine prototypes (OmniDFA: "A Unified Framework for Open Set
    Synthesis Image Detection and Few-Shot Attribution", 2025; prototypes as in Snell et al.,
    "Prototypical Networks for Few-shot Learning", 2017). Costs no model calls: ``features`` are
    already-computed embeddings (n × d).

    Each episode, drawn with ``np.random.default_rng(seed)``: ``n_way`` distinct classes from
    ``classes`` (default: every label; pass the held-out sources to evaluate on them), then for
    each class ``k_shot + n_query`` distinct samples (the first ``k_shot`` are the support). A
    class prototype is the mean of its L2-normalised support features; each query goes to the
    prototype of highest cosine similarity (ties: the first drawn class). The same inputs and
    seed give the same result.

    Returns a JSON-serialisable dict: ``accuracy`` (mean over episodes), ``ci95`` (1.96 · std /
    √n_episodes, numpy's population std, the usual few-shot convention), ``std``,
    ``n_episodes``, ``n_way``, ``k_shot``, ``n_query``, ``chance`` (1 / n_way), ``seed``,
    ``classes`` (those sampled from, as strings) and, if ``return_episodes``,
    ``episode_accuracies``.
    """
    x = np.asarray(features)
    if x.ndim != 2:
        raise InputError(f"features must be 2-D (n samples × d), got shape {x.shape}")
    try:
        x = x.astype(float)
    except (TypeError, ValueError) as exc:
        raise InputError(f"features must be numbers: {exc}") from None
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.shape[0] != x.shape[0]:
        raise InputError(
            f"labels must be 1-D with one label per row of features ({x.shape[0]}), got shape "
            f"{lab.shape}"
        )
    for name, v, low in (("n_way", n_way, 2), ("k_shot", k_shot, 1), ("n_query", n_query, 1)):
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise InputError(f"{name} must be an integer >= {low}, got {v!r}")
    if not isinstance(n_episodes, int) or n_episodes < 1:
        raise InputError(f"n_episodes must be a positive integer, got {n_episodes!r}")
    if not np.all(np.isfinite(x)):
        raise InputError("features contain NaN or infinite values; fix or drop those rows")
    all_classes = np.unique(lab)
    if classes is None:
        pool = list(all_classes)
    else:
        pool = list(dict.fromkeys(classes))
        absent = [c for c in pool if not np.any(lab == c)]
        if absent:
            raise InputError(
                f"classes {absent[:5]} have no sample in labels; pass classes that occur in labels"
            )
    if len(pool) < n_way:
        raise InputError(
            f"only {len(pool)} class(es) to sample from but n_way={n_way}; lower n_way or pass "
            "more classes"
        )
    need = k_shot + n_query
    rows = [np.flatnonzero(lab == c) for c in pool]
    short = [(str(c), r.size) for c, r in zip(pool, rows, strict=True) if r.size < need]
    if short:
        detail = ", ".join(f"{c!r}: {m}" for c, m in short[:5])
        raise InputError(
            f"each class needs k_shot + n_query = {need} samples, but {detail}; lower k_shot or "
            "n_query, or leave those classes out with classes="
        )
    used = np.concatenate(rows)
    norms = np.linalg.norm(x, axis=1)
    if np.any(norms[used] == 0):
        raise InputError(
            "some feature vectors are all zeros: cosine similarity is undefined; drop them"
        )
    xn = x / np.where(norms == 0, 1.0, norms)[:, None]

    rng = np.random.default_rng(seed)
    accs = np.empty(n_episodes)
    for e in range(n_episodes):
        chosen = rng.choice(len(pool), size=n_way, replace=False)
        picks = np.stack([rng.choice(rows[c], size=need, replace=False) for c in chosen])
        protos = xn[picks[:, :k_shot]].mean(axis=1)  # n_way × d
        protos /= np.maximum(np.linalg.norm(protos, axis=1, keepdims=True), 1e-300)
        queries = xn[picks[:, k_shot:]].reshape(n_way * n_query, -1)
        truth = np.repeat(np.arange(n_way), n_query)
        accs[e] = np.mean((queries @ protos.T).argmax(axis=1) == truth)
    std = float(accs.std())
    out: dict[str, Any] = {
        "accuracy": float(accs.mean()),
        "ci95": 1.96 * std / math.sqrt(n_episodes),
        "std": std,
        "n_episodes": n_episodes,
        "n_way": n_way,
        "k_shot": k_shot,
        "n_query": n_query,
        "chance": 1.0 / n_way,
        "seed": seed,
        "classes": [str(c) for c in pool],
    }
    if return_episodes:
        out["episode_accuracies"] = [float(a) for a in accs]
    return out
