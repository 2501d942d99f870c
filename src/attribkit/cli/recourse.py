"""Tabular recourse: ``recourse``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import typer

from attribkit.cli._app import app, err_console, exit_with, progress_bar
from attribkit.core.jsonio import to_json

if TYPE_CHECKING:
    pass


# --- recourse: reasons a denied person can act on ------------------------------------------------
_MISSING = {"", "na", "n/a", "nan"}


def _label(value: str) -> str:
    """A class label as text, numbers normalised (``"1.0"`` and ``"1"`` are the same class)."""
    v = value.strip()
    try:
        x = float(v)
    except ValueError:
        return v
    return str(int(x)) if np.isfinite(x) and x == int(x) else v


def read_recourse_csv(
    path: Path, target: str
) -> tuple[np.ndarray, list[str], list[str], dict[str, list[str]]]:
    """Read a CSV (a header row, one row per person) for ``attribkit recourse``: returns ``(X,
    names, y, categorical)``. Numeric columns are kept as numbers; a column holding any
    non-numeric value is categorical and one-hot encoded as columns ``"<column>=<value>"``
    (values in sorted order); ``categorical`` maps each such column to its encoded columns. The
    ``target`` column gives ``y``, labels as text (``"1.0"`` read as ``"1"``). InputError for a
    missing file, an empty CSV, duplicate or empty column names, ragged rows, an unknown target
    column, a target with a single class and missing values (empty, NA, NaN, inf; naming the row,
    0-based among the data rows, and the column). No model calls."""
    import csv

    from attribkit.core.errors import InputError

    if not path.is_file():
        raise InputError(f"no such CSV file: {path}")
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            lines = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    except (UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"{path} is not a readable UTF-8 CSV file: {e}") from None
    if not lines:
        raise InputError(f"{path} is empty: give a header row and one row per person")
    header = [h.strip() for h in lines[0]]
    rows = lines[1:]
    if not rows:
        raise InputError(f"{path} has a header but no data rows")
    if any(not h for h in header):
        raise InputError(f"{path}: column {header.index('') + 1} of the header has no name")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise InputError(f"{path}: the header names column(s) {dupes} more than once")
    if target not in header:
        raise InputError(
            f"{path} has no column {target!r} to predict; its columns: {', '.join(header)}"
        )
    for r, row in enumerate(rows):
        if len(row) != len(header):
            raise InputError(f"{path}: row {r} has {len(row)} fields, the header has {len(header)}")
    cells = {h: [row[j].strip() for row in rows] for j, h in enumerate(header)}
    for h, values in cells.items():
        for r, v in enumerate(values):
            if v.lower() in _MISSING or v.lower().lstrip("+-") in ("inf", "infinity"):
                raise InputError(
                    f"{path}: row {r}, column {h!r} is missing or not finite ({v!r}); impute or "
                    "drop it first"
                )
    y = [_label(v) for v in cells[target]]
    if len(set(y)) < 2:
        raise InputError(
            f"the target column {target!r} holds a single class ({y[0]!r}): a classifier needs "
            "rows of at least two classes"
        )
    columns: list[np.ndarray] = []
    names: list[str] = []
    categorical: dict[str, list[str]] = {}
    for h in header:
        if h == target:
            continue
        values = cells[h]
        try:
            columns.append(np.array([float(v) for v in values]))
            names.append(h)
            continue
        except ValueError:
            pass
        levels = sorted(set(values))
        encoded = [f"{h}={level}" for level in levels]
        clash = sorted(set(encoded) & set(header))
        if clash:
            raise InputError(
                f"{path}: the one-hot columns of {h!r} would be named like existing column(s) "
                f"{clash}; rename them"
            )
        for level in levels:
            columns.append(np.array([float(v == level) for v in values]))
        names += encoded
        categorical[h] = encoded
    if not names:
        raise InputError(f"{path} has no feature column besides the target {target!r}")
    return np.column_stack(columns), names, y, categorical


_CATEGORY_KEYS = {"actionable", "direction", "max_change", "why"}


def recourse_actions(
    source: Path,
    names: list[str],
    categorical: dict[str, list[str]],
    target: str,
) -> object:
    """The :class:`~attribkit.models.actions.ActionSet` of ``attribkit recourse`` from an
    ACTIONS.json file (the format of :mod:`attribkit.models.actions`) over the encoded columns
    ``names``. A rule keyed by a categorical CSV column (``"housing": {"actionable": true,
    "direction": "both"}``) becomes the rule of its one-hot group (keys ``actionable``,
    ``direction``, ``max_change`` (levels), ``why``; levels in sorted order of the values);
    every other categorical column is an immutable one-hot group, unless ``__groups__`` puts
    its encoded columns (``"housing=own"``...) in a group of its own. Rules may also name encoded
    columns (bounds only, as for any grouped column). InputError for a missing or invalid file, a
    rule naming a column the CSV does not have (or the target), and every error of the action
    set itself. No model calls."""
    import json

    from attribkit.core.errors import InputError
    from attribkit.models.actions import ActionSet

    if not source.is_file():
        raise InputError(f"no such action set file: {source}")
    try:
        spec = json.loads(source.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{source} is not valid JSON: {e}") from None
    if not isinstance(spec, dict):
        raise InputError(f"{source} must hold a JSON object mapping columns to rules")
    out: dict[str, object] = {}
    groups = dict(spec.get("__groups__") or {})
    known = set(names)
    shown = [c for c in names if not any(c in cols for cols in categorical.values())]
    shown += list(categorical)
    for key, rule in spec.items():
        if key.startswith("__"):
            out[key] = rule
        elif key == target:
            raise InputError(
                f"{source} has a rule for {target!r}, the target column: the model predicts it, "
                "a person does not act on it"
            )
        elif key in categorical:
            if not isinstance(rule, dict) or set(rule) - _CATEGORY_KEYS:
                raise InputError(
                    f"{source}: {key!r} is a categorical column (one-hot encoded): its rule takes "
                    f"only {sorted(_CATEGORY_KEYS)}, got {rule!r}"
                )
            if len(categorical[key]) < 2:
                raise InputError(
                    f"{source}: the categorical column {key!r} has a single value in the CSV; "
                    "there is nothing to change it to"
                )
            if key in groups:
                raise InputError(f"{source}: {key!r} has a rule and a group; give one")
            groups[key] = {"kind": "onehot", "columns": categorical[key], **rule}
        elif key in known:
            out[key] = rule
        else:
            raise InputError(
                f"{source} names the column {key!r}, which the CSV does not have; its feature "
                f"columns: {', '.join(shown)}"
            )
    taken = {str(c) for g in groups.values() if isinstance(g, dict) for c in g.get("columns") or []}
    for column, encoded in categorical.items():
        if len(encoded) > 1 and column not in groups and not taken & set(encoded):
            groups[column] = {"kind": "onehot", "columns": encoded, "actionable": False}
    if groups:
        out["__groups__"] = groups
    return ActionSet.from_dict(out, names)


@app.command("recourse")
def recourse_command(
    path: Path = typer.Argument(..., help="A CSV file: a header row, one row per person."),
    target: str = typer.Option(..., "--target", help="The column the model predicts."),
    actions: Path = typer.Option(
        ...,
        "--actions",
        help="ACTIONS.json: what each column allows (columns left out are immutable).",
    ),
    model: str = typer.Option(
        "logreg", "--model", help="logreg (standardised logistic regression) or hgb."
    ),
    favourable: str | None = typer.Option(
        None, "--favourable", help="The favourable class of the target (default: 1)."
    ),
    method: str = typer.Option(
        "kernel_shap", "--method", help="Attribution method giving the reasons."
    ),
    k: int = typer.Option(4, "--k", help="Reasons per denied row."),
    by: str = typer.Option(
        "abs", "--by", help="Rank reasons by abs, negative or positive attribution."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON list: one object per denied row."
    ),
) -> None:
    """Why was each denied row denied, and can the person change it? Fits a model on the CSV,
    explains every row it denies with an attribution method (the reasons: top-k features) and
    scores each feature's responsiveness (the share of its feasible actions that flip the
    decision; Cheon et al., ICLR 2025). String columns are one-hot encoded (a rule on the
    column name in ACTIONS.json moves the group as one)."""
    import json
    import warnings

    from attribkit.core.errors import AttribkitError, InputError
    from attribkit.core.registry import attribute
    from attribkit.evaluation.recourse import RANKINGS, reasons_without_recourse, top_reasons
    from attribkit.methods.tabular.responsiveness import responsiveness
    from attribkit.models.tabular import TabularModel
    from attribkit.tasks.tabular import TabularTask

    try:
        if model not in ("logreg", "hgb"):
            raise InputError(f"--model must be logreg or hgb, got {model!r}")
        if k < 1:
            raise InputError("--k must be at least 1")
        if by not in RANKINGS:
            raise InputError(f"--by must be one of {', '.join(RANKINGS)}, got {by!r}")
        X, names, y, categorical = read_recourse_csv(path, target)
        aset = recourse_actions(actions, names, categorical, target)
        aset.check(X)  # bounds and groups, naming the CSV row
        classes = sorted(set(y))
        good = _label(favourable) if favourable is not None else "1"
        if good not in classes:
            hint = "" if favourable is not None else " (the default is 1): pass --favourable"
            raise InputError(
                f"the favourable class {good!r} is not a class of {target!r}{hint}; its classes: "
                f"{', '.join(classes)}"
            )
        estimator = _recourse_model(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence notes of a small CSV
            estimator.fit(X, np.asarray(y, dtype=object))
        adapter = TabularModel(estimator)
        denied = [int(i) for i in np.nonzero(adapter.predict(X) != good)[0]]
        results: list[dict[str, object]] = []
        atts, resps = [], []
        if denied:
            with progress_bar(err_console) as progress:
                step = progress.add_task(f"Responsiveness of {len(denied)} denied rows", total=1)
                resps = responsiveness(adapter, X[denied], aset, target=good, feature_names=names)
                progress.update(step, completed=1)
                step = progress.add_task(f"Reasons ({method})", total=len(denied))
                for i in denied:
                    task = TabularTask(
                        adapter, X[i], feature_names=names, background=X, target=good, actions=aset
                    )
                    atts.append(attribute(task, method))
                    progress.advance(step)
    except AttribkitError as e:
        raise exit_with(e) from None
    for i, a, r in zip(denied, atts, resps, strict=True):
        resp = {n: float(s) for n, s in zip(names, r.vector, strict=True)}
        a.extras["responsiveness"] = resp  # the viewer's convention (attribkit.viz.html)
        a.extras["fixed"] = bool(r.extras["fixed"])
        reasons = [
            {"feature": x.name, "score": x.score, "responsive": resp[x.name] > 0}
            for x in top_reasons(a, k, by)
        ]
        results.append(
            {"row": i, "reasons": reasons, "responsiveness": resp, "fixed": a.extras["fixed"]}
        )
    if as_json:
        typer.echo(json.dumps(to_json(results), ensure_ascii=False))
        return
    typer.echo(
        f"{len(denied)} of {len(y)} rows denied by the {model} model (favourable {target} = "
        f"{good}); reasons: top {k} by {by} {method} attribution of P({good})"
    )
    for row in results:
        fixed = "  FIXED: no single-feature action flips the decision" if row["fixed"] else ""
        typer.echo(f"row {row['row']}{fixed}")
        reasons = row["reasons"]
        assert isinstance(reasons, list)
        if not reasons:
            typer.echo("    (no feature has a non-zero attribution)")
        width = max((len(str(reason["feature"])) for reason in reasons), default=0)
        for n, reason in enumerate(reasons, start=1):
            score = row["responsiveness"][reason["feature"]]  # type: ignore[index]
            mark = f"responsive ({score:.2f})" if reason["responsive"] else "not responsive"
            name = str(reason["feature"]).ljust(width)
            typer.echo(f"  {n}. {name}  {reason['score']:+.4f}  {mark}")
    if denied:
        rep = reasons_without_recourse(atts, resps, k=k, by=by)

        def pct(x: float) -> str:
            return "n/a" if x != x else f"{100 * x:.0f}%"

        typer.echo(
            f"reasons without recourse over {rep.n} denied rows: all {k} unresponsive "
            f"{pct(rep.all_unresponsive)}, at least one unresponsive "
            f"{pct(rep.some_unresponsive)}, at least one responsive {pct(rep.some_responsive)}, "
            f"fixed {pct(rep.fixed)}"
        )


def _recourse_model(name: str) -> object:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name == "hgb":
        return HistGradientBoostingClassifier(random_state=0)
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
