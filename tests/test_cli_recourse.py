"""``attribkit recourse``: reasons for every denied row of a CSV, each marked responsive or not,
with the reasons-without-recourse summary; string columns one-hot encoded as groups; clear errors
for bad input. A generated CSV of 80 rows: each test runs in about a second."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from typer.testing import CliRunner

from attribkit.cli import app, read_recourse_csv, recourse_actions
from attribkit.core.errors import InputError

runner = CliRunner()
HEADER = ["income", "age", "debt", "housing", "approved"]
ACTIONS = {
    "income": {"actionable": True, "direction": "increase", "lb": 0, "ub": 200},
    "debt": {"actionable": True, "direction": "decrease", "lb": 0, "ub": 100},
    "housing": {"actionable": True, "direction": "both", "why": "one can move"},
}


def _rows(n: int = 80, seed: int = 0) -> list[list[object]]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        income, age, debt = rng.uniform(10, 100), int(rng.integers(20, 70)), rng.uniform(0, 50)
        housing = str(rng.choice(["rent", "own", "free"]))
        z = 0.05 * income - 0.06 * debt + (0.8 if housing == "own" else 0.0) - 1.5
        rows.append([f"{income:.1f}", age, f"{debt:.1f}", housing, int(z + rng.normal(0, 0.5) > 0)])
    return rows


def _write(path: Path, rows: list[list[object]], header: list[str] = HEADER) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("recourse")
    actions = root / "actions.json"
    actions.write_text(json.dumps(ACTIONS))
    return {"csv": _write(root / "people.csv", _rows()), "actions": actions, "root": root}


def _run(*args: str) -> object:
    return runner.invoke(app, ["recourse", *args])


def test_json_lists_every_denied_row_with_marked_reasons(files: dict[str, Path]) -> None:
    out = _run(str(files["csv"]), "--target", "approved", "--actions", str(files["actions"]),
               "--json")  # fmt: skip
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    # the denied rows are exactly those the same model, fitted on the same encoding, denies
    X, names, y, _ = read_recourse_csv(files["csv"], "approved")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)
    denied = [i for i, p in enumerate(model.predict(X)) if p != "1"]
    assert [r["row"] for r in rows] == denied and len(denied) > 5
    names_set = set(names)
    assert names == ["income", "age", "debt", "housing=free", "housing=own", "housing=rent"]
    for r in rows:
        assert set(r) == {"row", "reasons", "responsiveness", "fixed"}
        assert set(r["responsiveness"]) == names_set and 1 <= len(r["reasons"]) <= 4
        assert r["responsiveness"]["age"] == 0.0  # left out of ACTIONS.json: immutable
        for reason in r["reasons"]:
            assert set(reason) == {"feature", "score", "responsive"}
            assert reason["responsive"] == (r["responsiveness"][reason["feature"]] > 0)
        scores = [abs(x["score"]) for x in r["reasons"]]
        assert scores == sorted(scores, reverse=True)  # top-k by |attribution|
        assert r["fixed"] == (not any(v > 0 for v in r["responsiveness"].values()))
    assert any(x["responsive"] for r in rows for x in r["reasons"])
    assert any(not x["responsive"] for r in rows for x in r["reasons"])


def test_text_output_and_options(files: dict[str, Path]) -> None:
    base = [str(files["csv"]), "--target", "approved", "--actions", str(files["actions"])]
    out = _run(*base)
    assert out.exit_code == 0, out.output
    assert "rows denied by the logreg model" in out.stdout
    assert "responsive (" in out.stdout and "not responsive" in out.stdout
    assert out.stdout.strip().splitlines()[-1].startswith("reasons without recourse over ")
    out = _run(*base, "--model", "hgb", "--k", "2", "--method", "lime", "--json")
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    assert rows and all(len(r["reasons"]) <= 2 for r in rows)


def test_string_labels_need_the_favourable_class(files: dict[str, Path]) -> None:
    rows = [[*r[:4], "good" if r[4] else "bad"] for r in _rows(60, seed=1)]
    path = _write(files["root"] / "labels.csv", rows)
    base = [str(path), "--target", "approved", "--actions", str(files["actions"])]
    out = _run(*base)
    assert out.exit_code == 2 and "--favourable" in out.output
    out = _run(*base, "--favourable", "good", "--json")
    assert out.exit_code == 0, out.output
    assert all(isinstance(r["row"], int) for r in json.loads(out.stdout))


def test_a_categorical_rule_moves_its_one_hot_group(files: dict[str, Path]) -> None:
    X, names, _, categorical = read_recourse_csv(files["csv"], "approved")
    aset = recourse_actions(files["actions"], names, categorical, "approved")
    group = aset.group_by_name["housing"]
    assert group.kind == "onehot" and group.actionable and group.why == "one can move"
    assert list(group.columns) == categorical["housing"]
    # every action on a housing column moves the whole group to another valid category
    cols = [names.index(c) for c in categorical["housing"]]
    moves = aset.candidates(X[0], cols[0], np.random.default_rng(0))
    assert len(moves) and np.all(moves[:, cols].sum(axis=1) == 1)
    # left out of ACTIONS.json: the category is an immutable one-hot group
    only = files["root"] / "only_income.json"
    only.write_text(json.dumps({"income": ACTIONS["income"]}))
    aset = recourse_actions(only, names, categorical, "approved")
    assert not aset.group_by_name["housing"].actionable


@pytest.mark.parametrize(
    ("edit", "args", "message"),
    [
        (None, ["--target", "nope"], "no column 'nope'"),
        (None, ["--model", "forest"], "logreg or hgb"),
        ({"salary": {"actionable": True}}, [], "'salary'"),
        ({"income": {"actionable": True, "lb": 0, "ub": 50}}, [], "outside its bounds"),
        ({"approved": {"actionable": True}}, [], "target column"),
        ({"housing": {"actionable": True, "lb": 0}}, [], "categorical"),
        ("not json", [], "not valid JSON"),
    ],
)
def test_bad_actions_and_options(
    files: dict[str, Path], tmp_path: Path, edit: object, args: list[str], message: str
) -> None:
    actions = tmp_path / "actions.json"
    if isinstance(edit, str):
        actions.write_text(edit)
    else:
        actions.write_text(json.dumps({**ACTIONS, **(edit or {})}))
    out = _run(str(files["csv"]), "--target", "approved", "--actions", str(actions), *args)
    assert out.exit_code == 2, out.output
    assert message in " ".join(out.output.split()), out.output


def _error(path: Path, target: str = "approved") -> str:
    with pytest.raises(InputError) as info:
        read_recourse_csv(path, target)
    return str(info.value)


def test_bad_csv_files(files: dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "is empty" in _error(empty)
    header_only = _write(tmp_path / "header.csv", [])
    assert "no data rows" in _error(header_only)
    one_class = _write(tmp_path / "one.csv", [[*r[:4], 1] for r in _rows(10)])
    assert "single class" in _error(one_class)
    rows = _rows(10)
    rows[3][0] = "nan"
    assert "row 3, column 'income'" in _error(_write(tmp_path / "nan.csv", rows))
    rows[3][0] = ""
    assert "missing" in _error(_write(tmp_path / "blank.csv", rows))
    ragged = _rows(10)
    ragged[2] = ragged[2][:3]
    assert "row 2 has 3 fields" in _error(_write(tmp_path / "ragged.csv", ragged))
    assert "no such CSV file" in _error(tmp_path / "absent.csv")
    # the command reports the same errors, with exit code 2
    out = _run(str(one_class), "--target", "approved", "--actions", str(files["actions"]))
    assert out.exit_code == 2 and "single class" in out.output
    out = _run(str(empty), "--target", "approved", "--actions", str(files["actions"]))
    assert out.exit_code == 2 and "empty" in out.output
