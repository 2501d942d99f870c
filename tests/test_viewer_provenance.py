"""Provenance runs (which source produced a text, or "unknown") in the viewer's JSON API, the HTML
report and notebooks: the source distribution highest first, the prediction with the rejection
rule and whether it fired, the explained source, the text's units shaded by score; hostile text
and source names shown as text. A machine-text result's detector statistic in every header.
Generated authors and a scikit-learn pipeline: each test runs in well under a second."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

import attribkit as ak
import attribkit.store as store_mod
from attribkit.core.attribution import Attribution
from attribkit.core.cost import Cost
from attribkit.core.units import TextUnits
from attribkit.tasks.provenance import ProvenanceTask
from attribkit.viz.html import attribution_html, source_decision
from attribkit.viz.notebook import notebook_html

HOSTILE_SOURCE = '<img src=x onerror="window.__pwned=1">'
HOSTILE_TEXT = "<script>window.__pwned=2</script>"
TEXT = (
    "Whilst the people upon the union hence moreover. "
    f"Upon the law {HOSTILE_TEXT} thereby whilst hence the state. "
    "While on the power so thus also the law."
)
_A = ["whilst", "upon", "thereby", "hence", "moreover"]
_B = ["while", "on", "so", "thus", "also"]
_COMMON = ["the", "people", "state", "power", "union", "law", "government", "of", "and"]


def _texts(words: list[str], n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [
        " ".join(
            " ".join(rng.choice(_COMMON + words + words, size=8)).capitalize() + "."
            for _ in range(4)
        )
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def results():
    texts = _texts(_A, 30, 0) + _texts(_B, 30, 1)
    sources = ["austen"] * 30 + [HOSTILE_SOURCE] * 30
    model = make_pipeline(CountVectorizer(), LogisticRegression(max_iter=1000))
    model.fit(texts, sources)
    closed = ProvenanceTask(TEXT, model)  # no threshold: austen
    rejected = ProvenanceTask(TEXT, model, threshold=1.0)  # max p < 1: unknown
    hostile = ProvenanceTask(TEXT, model, source=HOSTILE_SOURCE, threshold=0.5)
    assert closed.prediction == "austen" and rejected.prediction == "unknown"
    assert hostile.prediction == "austen" and len(closed.units) == 3
    return {
        "closed": ak.attribute(closed, "loo"),
        "closed_shap": ak.attribute(closed, "shapley"),
        "rejected": ak.attribute(rejected, "loo"),
        "hostile": ak.attribute(hostile, "loo"),
    }


def _machine_text(statistic: float) -> Attribution:
    units = TextUnits.words(f"The model wrote this {HOSTILE_TEXT} sentence.")
    return Attribution(
        units=list(units),
        scores=np.linspace(-1.0, 1.0, len(units)),
        method="fast_detectgpt",
        target={"kind": "machine_text", "description": "Fast-DetectGPT curvature"},
        cost=Cost(),
        input=units.to_dict(),
        extras={"statistic": statistic},
        task="machine_text",
    )


@pytest.fixture(scope="module")
def prov_store(tmp_path_factory, results):
    store = store_mod.open(tmp_path_factory.mktemp("provenance-viewer") / "runs.db")
    ids = {name: store.put(a, inputs={"text": TEXT}) for name, a in results.items()}
    ids["machine"] = store.put(_machine_text(2.5))
    yield store, ids
    store.close()


def _client(store):
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    from starlette.testclient import TestClient

    from attribkit.viewer import create_app

    return TestClient(create_app(store))


# ------------------------------------------------------------------------------- decision


def test_source_decision_orders_sources_and_words_the_rule(results):
    d = source_decision(results["rejected"].target)
    scores = results["rejected"].target["scores"]
    assert [n for n, _ in d["sources"]] == sorted(scores, key=lambda s: -scores[s])
    assert d["sources"][0] == ["austen", pytest.approx(scores["austen"])]
    assert d["prediction"] == "unknown" and d["unknown"] and d["threshold"] == 1.0
    assert d["rule"] == f"max p {scores['austen']:.2f} < threshold 1.00 → unknown"
    assert source_decision(results["hostile"].target)["rule"].endswith(
        "≥ threshold 0.50 → accepted"
    )
    closed = source_decision(results["closed"].target)
    assert not closed["unknown"] and closed["threshold"] is None
    assert "no threshold" in closed["rule"] and "never unknown" in closed["rule"]
    # more digits where two would print the confidence and the threshold equal
    near = {"scores": {"a": 0.599, "b": 0.401}, "threshold": 0.6, "prediction": "unknown"}
    assert source_decision(near)["rule"] == "max p 0.599 < threshold 0.600 → unknown"
    # odd values: a missing probability goes last as None, confidence from the scores
    odd = source_decision({"scores": {"x": None, "y": 0.7, "z": float("nan"), "w": 0.3}})
    assert odd["sources"] == [["y", 0.7], ["w", 0.3], ["x", None], ["z", None]]
    assert odd["confidence"] == 0.7 and odd["prediction"] is None and not odd["unknown"]
    json.dumps(odd, allow_nan=False)
    assert source_decision({"kind": "source"}) is None and source_decision("text") is None


# ------------------------------------------------------------------------------------ API


def test_api_provenance_runs(prov_store, results):
    from attribkit.viewer.server import CSP

    store, ids = prov_store
    client = _client(store)
    listed = client.get("/api/runs", params={"task": "provenance"}).json()
    assert {r["id"] for r in listed["runs"]} == {ids[k] for k in results}
    assert {r["view"] for r in listed["runs"]} == {"provenance"}

    r = client.get(f"/api/runs/{ids['rejected']}")
    assert r.headers["content-security-policy"] == CSP
    body = r.json()
    assert body["view"] == "provenance" and body["task"] == "provenance"
    info = body["provenance"]
    a = results["rejected"]
    assert info["prediction"] == "unknown" and info["unknown"] is True
    assert info["source"] == "austen" and info["threshold"] == 1.0
    assert info["confidence"] == pytest.approx(a.target["confidence"])
    assert [n for n, _ in info["sources"]] == ["austen", HOSTILE_SOURCE]
    assert sum(p for _, p in info["sources"]) == pytest.approx(1.0)
    assert "→ unknown" in info["rule"]
    assert body["vector"] == pytest.approx(list(a.scores))
    assert body["attribution"]["input"]["text"] == TEXT
    assert body["statistic"] is None

    hostile = client.get(f"/api/runs/{ids['hostile']}").json()["provenance"]
    assert hostile["source"] == HOSTILE_SOURCE and hostile["prediction"] == "austen"
    assert not hostile["unknown"] and "accepted" in hostile["rule"]
    # runs explaining the same source on the same text compare; another source does not
    same = {o["id"] for o in client.get(f"/api/runs/{ids['closed']}").json()["same_input"]}
    assert same == {ids["closed_shap"], ids["rejected"]}
    compare = client.get("/api/compare", params={"a": ids["closed"], "b": ids["closed_shap"]})
    compare = compare.json()
    assert compare["same_input"] and compare["a"]["view"] == "provenance"
    assert compare["b"]["provenance"]["prediction"] == "austen"


def test_api_machine_text_statistic_and_a_provenance_run_without_scores(prov_store, results):
    from attribkit.viewer.server import provenance_payload, statistic_of

    store, ids = prov_store
    body = _client(store).get(f"/api/runs/{ids['machine']}").json()
    assert body["statistic"] == 2.5 and body["view"] == "text"
    assert "provenance" not in body
    assert statistic_of({"extras": {"statistic": float("nan")}}) is None
    assert statistic_of({"extras": {"statistic": True}}) is None
    data = results["closed"].to_dict()
    data["target"].pop("scores")
    assert provenance_payload(data) is None
    run_id = store.put(Attribution.from_dict(data))
    assert _client(store).get(f"/api/runs/{run_id}").json()["view"] == "generic"


# ------------------------------------------------------------------ HTML report, notebook


def _escaped(page: str) -> None:
    body = page.split("</style>", 1)[-1]
    assert "<script" not in body and "<img" not in body
    assert "&lt;script&gt;window.__pwned=2&lt;/script&gt;" in body
    assert "&lt;img src=x onerror=&quot;window.__pwned=1&quot;&gt;" in body


def test_html_report_shows_the_decision_and_the_distribution(results):
    page = attribution_html(results["hostile"])
    _escaped(page)
    row = page.split("<dt>prediction</dt><dd>", 1)[1].split("</dd>", 1)[0]
    assert row.startswith("austen (max p ") and "≥ threshold 0.50 → accepted" in row
    explained = page.split("<dt>explained source</dt><dd>", 1)[1].split("</dd>", 1)[0]
    assert explained == "&lt;img src=x onerror=&quot;window.__pwned=1&quot;&gt;"
    dist = page.split("<dt>sources</dt><dd>", 1)[1].split("</dd>", 1)[0]
    assert dist.startswith("austen ") and dist.endswith("; unknown: no")
    table = page.split('<table class="sources">', 1)[1].split("</table>", 1)[0]
    assert table.count("<tr") == 3 and table.index("austen") < table.index("&lt;img")
    assert '<tr class="predicted"><td class="name">austen' in table
    assert "not fired" in table
    # the text, its three sentences shaded
    assert page.count('<span class="u"') == 3

    rejected = attribution_html(results["rejected"])
    row = rejected.split("<dt>prediction</dt><dd>", 1)[1].split("</dd>", 1)[0]
    assert row.startswith("unknown (max p ") and "&lt; threshold 1.00 → unknown)" in row
    assert "fired: the prediction is unknown" in rejected
    assert '<tr class="predicted">' not in rejected  # no known source is the prediction


def test_notebook_shows_bars_and_the_unknown_row(results):
    for name in ("closed", "rejected", "hostile"):
        a = results[name]
        out = notebook_html(a)
        assert a._repr_html_() == out
        _escaped(out)
        assert "<b>Sources</b>" in out and out.count("left:0;width:") == 2  # a bar per source
        assert out.count('title="unit ') == 3  # the text's sentences, shaded
        unknown_row = out.split(">unknown</td>", 1)[1].split("</tr>", 1)[0]
        assert (">fired</span>" in unknown_row) == (name == "rejected")
        assert ("not fired" in unknown_row) == (name != "rejected")
    hostile = notebook_html(results["hostile"])
    assert "explained source: <b>&lt;img src=x" in hostile
    sources = hostile.split("<b>Sources</b>", 1)[1]
    assert sources.index("austen") < sources.index("&lt;img src=x")


def test_machine_text_statistic_in_every_header():
    a = _machine_text(1.2345678)
    page = attribution_html(a)
    assert "<dt>detector statistic</dt><dd>1.235, higher = more machine-like</dd>" in page
    assert "<script" not in page.split("</style>", 1)[1]
    out = notebook_html(a)
    assert "detector statistic: <b>1.235</b>" in out and "more machine-like" in out
    assert "<script" not in out
    for bad in (math.nan, math.inf):
        assert "detector statistic" not in attribution_html(_machine_text(bad))
        assert "detector statistic" not in notebook_html(_machine_text(bad))
