"""Feature responsiveness scores (Cheon, Wernerfelt, Friedler & Ustun, 'Feature Responsiveness
Scores: Model-Agnostic Explanations for Recourse', ICLR 2025).

The responsiveness of feature j for a person x is the share of the feasible actions on j (each
with the co-moves its linkages and its group force) after which the model predicts the target
outcome. A feature the person cannot change scores 0; a denied person none of whose
single-feature actions reaches the target is *fixed*: the model gives them no recourse through
any one feature. Discrete features (integer grids, steps, groups) are enumerated; continuous ones
are sampled uniformly within their reachable interval (``n_samples`` draws). Only the model's
``predict`` is used, on every candidate point of every row in one batched pass.

(The paper's *fixed* is "no action at all reaches the target", joint actions included; with
single-feature actions, ``fixed`` here says no single feature, with its forced co-moves, flips
the decision — the set that every single-feature reason misleads.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import Cost, measure
from attribkit.core.errors import InputError
from attribkit.core.registry import check_units
from attribkit.core.units import Unit
from attribkit.models.actions import ActionSet
from attribkit.models.tabular import DEFAULT_BATCH, TabularModel, as_rows

__all__ = ["responsiveness", "responsiveness_of_task", "responsiveness_scores"]


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def responsiveness_scores(
    model: TabularModel,
    X: np.ndarray,
    action_set: ActionSet,
    target: Any,
    *,
    n_samples: int = 100,
    max_grid: int = 1000,
    seed: int | None = 0,
) -> dict[str, Any]:
    """The computation behind :func:`responsiveness`, on checked inputs: a dict with
    ``scores`` and ``n_actions`` ((rows, features)), ``prediction`` (rows,), ``points``
    (model rows per input row, its own prediction included) and ``model_rows``. Costs one model
    row per input row plus one per distinct candidate point of each row, in batches."""
    if n_samples < 1 or max_grid < 1:
        raise InputError("n_samples and max_grid must be >= 1")
    if model.classes is not None and _plain(target) not in model.classes:
        raise InputError(
            f"target {target!r} is not one of the model's classes {model.classes}: give the "
            "favourable outcome (e.g. target=1 for 'approved')"
        )
    rng = np.random.default_rng(seed)
    n, d = X.shape
    blocks: list[np.ndarray] = []
    where: list[list[tuple[int, np.ndarray]]] = []  # per row: (feature, indices into its block)
    offset = n  # the rows themselves come first
    for i in range(n):
        cands = [action_set.candidates(X[i], j, rng, n_samples, max_grid) for j in range(d)]
        sizes = [len(c) for c in cands]
        stacked = np.concatenate(cands) if sum(sizes) else np.zeros((0, d))
        if len(stacked):
            unique, inverse = np.unique(stacked, axis=0, return_inverse=True)
        else:
            unique, inverse = stacked, np.zeros(0, dtype=int)
        row, start = [], 0
        for j, size in enumerate(sizes):
            row.append((j, offset + inverse.reshape(-1)[start : start + size]))
            start += size
        where.append(row)
        blocks.append(unique)
        offset += len(unique)
    points = np.concatenate([X, *blocks])
    labels = model.predict(points)
    hit = np.asarray(labels == _plain(target), dtype=bool).reshape(-1)
    scores = np.zeros((n, d))
    counts = np.zeros((n, d), dtype=int)
    for i, row in enumerate(where):
        for j, idx in row:
            counts[i, j] = len(idx)
            if len(idx):
                scores[i, j] = hit[idx].mean()
    return {
        "scores": scores,
        "n_actions": counts,
        "prediction": [_plain(v) for v in labels[:n]],
        "denied": ~hit[:n],
        "points": np.array([1 + len(b) for b in blocks]),
        "model_rows": len(points),
    }


def responsiveness(
    model: Any,
    X: Any,
    action_set: ActionSet | str | dict[str, Any],
    target: Any = 1,
    *,
    feature_names: list[str] | None = None,
    n_samples: int = 100,
    max_grid: int = 1000,
    seed: int | None = 0,
    batch_size: int = DEFAULT_BATCH,
) -> list[Attribution]:
    """Feature responsiveness scores of every row of ``X`` (Cheon et al., ICLR 2025).

    Args:
        model: a fitted classifier (scikit-learn, torch, anything with ``predict``) or a
            :class:`TabularModel`; only its predictions are used.
        X: rows to score (an array, a DataFrame, or one row).
        action_set: an :class:`ActionSet` over the columns of ``X``, or an ACTIONS.json path,
            string or dict.
        target: the favourable outcome, a label the model predicts (e.g. 1 for "approved").
        feature_names: column names (default: the DataFrame's, else the action set's).
        n_samples: uniform draws per continuous feature (and per grid larger than ``max_grid``).
        max_grid: the largest grid enumerated in full.
        seed: seeds the draws.
        batch_size: most model rows per call (when ``model`` is not a TabularModel already).

    Returns one Attribution per row (kind ``"tabular"``, method ``"responsiveness"``): its
    scores are the responsiveness of each feature (0 for immutable features and for features
    with no feasible action); ``extras`` hold ``fixed`` (denied and no single-feature action
    reaches the target), ``denied``, ``n_actions`` (feasible actions per feature) and
    ``actionable``. Costs one model row per input row plus one per distinct candidate point,
    all in batches of ``batch_size``; each result's cost is its rows' share.
    """
    m = model if isinstance(model, TabularModel) else TabularModel(model, batch_size=batch_size)
    names_hint = feature_names
    if names_hint is None and isinstance(action_set, ActionSet):
        names_hint = action_set.names
    rows, names = as_rows(X, names_hint, "X")
    names = names if names is not None else [f"x{i}" for i in range(rows.shape[1])]
    m.check_rows(rows, "X")
    aset = (
        action_set if isinstance(action_set, ActionSet) else ActionSet.from_json(action_set, names)
    )
    if aset.names != list(names):
        raise InputError(
            "the action set was built for other columns than X's; build it with the same names "
            f"in the same order (action set: {aset.names[:4]}..., X: {list(names)[:4]}...)"
        )
    aset.check(rows)
    with measure(m) as total:
        out = responsiveness_scores(
            m, rows, aset, target, n_samples=n_samples, max_grid=max_grid, seed=seed
        )
    params = {"target": _plain(target), "n_samples": n_samples, "max_grid": max_grid, "seed": seed}
    results = []
    actionable = aset.actionable.tolist()
    for i in range(len(rows)):
        share = out["points"][i] / out["model_rows"]
        cost = Cost(
            forward_passes=int(out["points"][i]),
            batches=max(1, round(total.batches * share)),
            seconds=total.seconds * share,
        )
        units = [
            Unit(j, n, meta={"value": float(v)})
            for j, (n, v) in enumerate(zip(names, rows[i], strict=True))
        ]
        denied = bool(out["denied"][i])
        results.append(
            Attribution(
                units=units,
                scores=out["scores"][i],
                method="responsiveness",
                target=_target(m, target, out["prediction"][i], denied),
                params=params,
                cost=cost,
                input={"kind": "features", "x": rows[i].tolist(), "names": list(names)},
                extras={
                    "fixed": bool(denied and not (out["scores"][i] > 0).any()),
                    "denied": denied,
                    "n_actions": out["n_actions"][i].tolist(),
                    "actionable": actionable,
                },
                task="tabular",
            )
        )
    return results


def _target(model: TabularModel, target: Any, prediction: Any, denied: bool) -> dict[str, Any]:
    return {
        "kind": "recourse",
        "description": (
            f"share of feasible single-feature actions after which the model predicts {target!r}"
        ),
        "target": _plain(target),
        "prediction": prediction,
        "denied": denied,
        "model": model.name,
    }


def responsiveness_of_task(
    task: Any,
    *,
    actions: ActionSet | str | dict[str, Any] | None = None,
    target: Any = None,
    n_samples: int = 100,
    max_grid: int = 1000,
    seed: int | None = 0,
) -> Attribution:
    """Feature responsiveness scores of a :class:`~attribkit.tasks.tabular.TabularTask`'s row
    (Cheon, Wernerfelt, Friedler & Ustun, ICLR 2025): per feature, the share of its feasible
    actions (forced co-moves included) after which the model predicts ``target``.

    ``actions`` defaults to the task's action set; ``target`` to the task's target class
    (build the task with ``target=<favourable class>``). Returns an Attribution with
    ``extras`` ``fixed``, ``denied``, ``n_actions`` and ``actionable``. Costs one model row for
    the row's prediction plus one per distinct candidate point (enumerated grids and groups,
    ``n_samples`` per continuous feature), in batches.
    """
    check_units(task)
    aset = actions if actions is not None else task.actions
    if aset is None:
        raise InputError(
            "responsiveness needs an action set: build the task with actions=ActionSet(...) or "
            "pass actions=... (an ActionSet, or an ACTIONS.json path or dict)"
        )
    if not isinstance(aset, ActionSet):
        aset = ActionSet.from_json(aset, task.names)
    aset.check(task.x[None, :])
    if target is None:
        target = task.target_class
    if target is None:
        raise InputError(
            "responsiveness needs a classifier and a target class (the favourable one)"
        )
    with measure(task.meter) as cost:
        out = responsiveness_scores(
            task.model,
            task.x[None, :],
            aset,
            target,
            n_samples=n_samples,
            max_grid=max_grid,
            seed=seed,
        )
    denied = bool(out["denied"][0])
    params = {"target": _plain(target), "n_samples": n_samples, "max_grid": max_grid, "seed": seed}
    return task.result(
        out["scores"][0],
        "responsiveness",
        params,
        cost,
        fixed=bool(denied and not (out["scores"][0] > 0).any()),
        denied=denied,
        n_actions=out["n_actions"][0].tolist(),
        actionable=aset.actionable.tolist(),
    )
