"""Tabular and time-series runs in the viewer's JSON API, the HTML report and notebooks: signed
feature bars with responsiveness marked (a responsiveness run, or an attribution carrying
``extras["responsiveness"]``), a series drawn per channel with its attribution map shaded under
it; hostile feature and channel names shown as text. A logistic regression on 4 features and a
numpy series classifier: each test runs in well under a second."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import attribkit as ak
import attribkit.store as store_mod
from attribkit.core.attribution import Attribution
from attribkit.methods.tabular.responsiveness import responsiveness
from attribkit.models.actions import ActionSet
from attribkit.tasks.tabular import TabularTask
from attribkit.tasks.timeseries import TimeSeriesTask, series_map
from attribkit.viz.html import attribution_html, feature_recourse, series_view
from attribkit.viz.notebook import notebook_html

HOSTILE_FEATURE = '<img src=x onerror="window.__pwned=1">'
HOSTILE_OTHER = "<script>window.__pwned=2</script>"
HOSTILE_CHANNEL = "<script>window.__pwned=3</script>"
NAMES = ["income", HOSTILE_FEATURE, "age", HOSTILE_OTHER]
ACTIONS = {
    "income": {"actionable": True, "direction": "increase", "lb": -6, "ub": 6},
    HOSTILE_FEATURE: {"actionable": True, "direction": "both", "lb": -6, "ub": 6, "step": 0.5},
}


def _series_model(batch: np.ndarray) -> np.ndarray:
    s = np.asarray(batch)[:, 4:8, 0].sum(axis=1)
    return np.stack([s, -s, 0 * s], axis=1)


@pytest.fixture(scope="module")
def results():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 4))
    y = (X[:, 0] + X[:, 1] - X[:, 3] > 0).astype(int)
    model = LogisticRegression().fit(X, y)
    denied = X[model.predict(X) == 0][:3]
    actions = ActionSet.from_dict(ACTIONS, NAMES)
    resp = responsiveness(model, denied, actions, target=1, feature_names=NAMES)
    task = TabularTask(model, denied[0], feature_names=NAMES, background=X, target=1)
    shap = ak.attribute(task, "kernel_shap")
    shap.extras["responsiveness"] = {
        n: float(s) for n, s in zip(NAMES, resp[0].vector, strict=True)
    }
    shap.extras["fixed"] = resp[0].extras["fixed"]
    fixed = responsiveness(model, denied[:1], ActionSet(NAMES), target=1, feature_names=NAMES)[0]
    x = rng.normal(size=(16, 2))
    names = [HOSTILE_CHANNEL, "b"]
    series_task = TimeSeriesTask(_series_model, x, channel_names=names, target=0)
    windows = TimeSeriesTask(
        _series_model, x, channel_names=names, target=0, units="windows", width=4, stride=2
    )
    return {
        "X": X,
        "row": denied[0],
        "shap": shap,
        "resp": resp[0],
        "plain": ak.attribute(task, "loo"),
        "fixed": fixed,
        "series": ak.attribute(series_task, "occlusion"),
        "windows": ak.attribute(windows, "occlusion"),
    }


@pytest.fixture(scope="module")
def site(tmp_path_factory, results):
    store = store_mod.open(tmp_path_factory.mktemp("tabular-series-viewer") / "runs.db")
    ids = {k: store.put(a) for k, a in results.items() if isinstance(a, Attribution)}
    data = results["series"].to_dict()
    data["extras"].pop("map")
    ids["no_map"] = store.put(Attribution.from_dict(data))
    yield store, ids
    store.close()


def _client(store):
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    from starlette.testclient import TestClient

    from attribkit.viewer import create_app

    return TestClient(create_app(store))


# ---------------------------------------------------------------------------- conventions


def test_feature_recourse_reads_both_conventions(results):
    resp, shap = results["resp"], results["shap"]
    info = feature_recourse(NAMES, list(results["row"]), resp.vector, "responsiveness", resp.extras)
    assert info["kind"] == "responsiveness" and info["denied"] is True
    assert [f["name"] for f in info["features"]] == NAMES
    assert [f["responsiveness"] for f in info["features"]] == pytest.approx(list(resp.vector))
    assert [f["actionable"] for f in info["features"]] == [True, True, False, False]
    assert [f["n_actions"] for f in info["features"]] == resp.extras["n_actions"]
    assert [f["value"] for f in info["features"]] == pytest.approx(list(results["row"]))
    info = feature_recourse(NAMES, [None] * 4, shap.vector, "kernel_shap", shap.extras)
    assert info["kind"] == "attribution" and info["fixed"] is shap.extras["fixed"]
    assert [f["score"] for f in info["features"]] == pytest.approx(list(shap.vector))
    assert [f["responsive"] for f in info["features"]] == [v > 0 for v in resp.vector]
    assert all(f["n_actions"] is None for f in info["features"])
    plain = feature_recourse(NAMES, [1, 2, 3, 4], [0.1, float("nan"), 0.3, 0.0], "loo", {})
    assert plain["kind"] is None and plain["fixed"] is None
    assert plain["features"][1]["score"] is None  # NaN: unscored
    assert all(f["responsive"] is None for f in plain["features"])
    json.dumps(plain, allow_nan=False)


def test_series_view_checks_shapes(results):
    a = results["series"]
    view = series_view(a.input, a.extras)
    m = series_map(a)
    assert view["steps"] == 16 and [c["name"] for c in view["channels"]] == [HOSTILE_CHANNEL, "b"]
    assert view["channels"][0]["map"] == pytest.approx(list(m[:, 0]))
    assert view["scale"] == pytest.approx(np.abs(m).max())
    assert series_view(a.input, {"map": m[:5]}) is None
    assert series_view({"series": [[1.0]] * 3}, {}) is None
    assert series_view(a.input, a.extras, n_max=10) is None


# ------------------------------------------------------------------------------------ API


def test_api_tabular_runs(site, results):
    store, ids = site
    client = _client(store)
    listed = client.get("/api/runs", params={"task": "tabular"}).json()
    assert {r["view"] for r in listed["runs"]} == {"tabular"} and len(listed["runs"]) == 4

    body = client.get(f"/api/runs/{ids['shap']}").json()
    assert body["view"] == "tabular"
    info = body["tabular"]
    shap = results["shap"]
    assert info["kind"] == "attribution" and info["fixed"] is shap.extras["fixed"]
    assert [f["name"] for f in info["features"]] == NAMES
    assert [f["score"] for f in info["features"]] == pytest.approx(list(shap.vector))
    assert [f["value"] for f in info["features"]] == pytest.approx(list(results["row"]))
    expected = [shap.extras["responsiveness"][n] for n in NAMES]
    assert [f["responsiveness"] for f in info["features"]] == pytest.approx(expected)
    assert [f["responsive"] for f in info["features"]] == [v > 0 for v in expected]

    info = client.get(f"/api/runs/{ids['resp']}").json()["tabular"]
    assert info["kind"] == "responsiveness" and info["denied"] is True
    assert [f["actionable"] for f in info["features"]] == [True, True, False, False]
    assert info["features"][2]["responsiveness"] == 0.0  # immutable
    info = client.get(f"/api/runs/{ids['fixed']}").json()["tabular"]
    assert info["fixed"] is True and not any(f["responsive"] for f in info["features"])
    info = client.get(f"/api/runs/{ids['plain']}").json()["tabular"]
    assert info["kind"] is None and all(f["responsiveness"] is None for f in info["features"])


def test_api_series_runs(site, results):
    store, ids = site
    client = _client(store)
    body = client.get(f"/api/runs/{ids['series']}").json()
    assert body["view"] == "timeseries"
    info = body["series"]
    a = results["series"]
    m = series_map(a)
    x = np.asarray(a.input["series"])
    assert info["steps"] == 16 and info["class_name"] == "0" and info["prediction_name"] == "0"
    assert [c["name"] for c in info["channels"]] == [HOSTILE_CHANNEL, "b"]
    for j, ch in enumerate(info["channels"]):
        assert ch["values"] == pytest.approx(list(x[:, j]))
        assert ch["map"] == pytest.approx(list(m[:, j]))
    assert np.count_nonzero(m) == 4  # only steps 4..7 of channel 0 matter
    windows = client.get(f"/api/runs/{ids['windows']}").json()["series"]
    assert windows["channels"][0]["map"] == pytest.approx(
        list(series_map(results["windows"])[:, 0])
    )
    same = {o["id"] for o in body["same_input"]}
    assert ids["windows"] not in same  # other units: not comparable unit by unit
    no_map = client.get(f"/api/runs/{ids['no_map']}").json()
    assert no_map["view"] == "generic" and "series" not in no_map


# ------------------------------------------------------------------ HTML report, notebook


def _escaped(page: str) -> None:
    body = page.split("</style>", 1)[-1]
    assert "<script" not in body and "<img" not in body
    assert "&lt;img src=x onerror=&quot;window.__pwned=1&quot;&gt;" in body or (
        "&lt;script&gt;window.__pwned=3&lt;/script&gt;" in body
    )


def test_html_report_tabular_and_series(results):
    page = attribution_html(results["shap"])
    _escaped(page)
    table = page.split('<table class="tab">', 1)[1].split("</table>", 1)[0]
    assert table.count("<tr>") == 4
    resp = results["shap"].extras["responsiveness"]
    assert table.count('class="resp yes"') == sum(v > 0 for v in resp.values())
    assert table.count('class="resp no"') == sum(v <= 0 for v in resp.values())
    assert "&lt;script&gt;window.__pwned=2&lt;/script&gt;" in table
    page = attribution_html(results["resp"])
    assert page.count('class="resp immutable"') == 2
    assert "share of the feature&#x27;s feasible actions" in page
    assert "badge fired" in attribution_html(results["fixed"])
    assert 'class="resp' not in attribution_html(results["plain"]).split("<h2>Ranked", 1)[0]

    page = attribution_html(results["series"])
    _escaped(page)
    assert page.count("<svg") == 2 and page.count("<path") == 2
    assert page.count("<rect") == 4  # a shaded step per non-zero map cell
    assert "<figcaption>&lt;script&gt;window.__pwned=3&lt;/script&gt;</figcaption>" in page


def test_notebook_tabular_and_series(results):
    out = notebook_html(results["shap"])
    assert results["shap"]._repr_html_() == out
    _escaped(out)
    resp = results["shap"].extras["responsiveness"]
    assert out.count(">responsive ") == sum(v > 0 for v in resp.values())
    assert out.count(">not responsive<") == sum(v <= 0 for v in resp.values())
    assert notebook_html(results["resp"]).count(">immutable<") == 2
    assert ">fixed</span>" in notebook_html(results["fixed"])
    out = notebook_html(results["series"])
    _escaped(out)
    assert out.count("<svg") == 2 and out.count("<rect") == 4
    assert "<script" not in out
