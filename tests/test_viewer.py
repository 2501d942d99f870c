"""The viewer's JSON API (Starlette TestClient, tiny model): listing, runs, spans, compare, headers."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from starlette.testclient import TestClient

import attribkit.store as store_mod
from attribkit.core.registry import attribute
from attribkit.core.scorer import Scorer
from attribkit.core.units import FeatureUnits, ImageUnits
from attribkit.evaluation.agreement import agreement
from attribkit.tasks.context import ContextTask
from attribkit.viewer import create_app
from attribkit.viewer.server import CSP

CONTEXT = (
    "The cat sat on the mat. The dog slept by the door. It rained all day. "
    "<script>alert(1)</script> is not a sentence anyone should run."
)
QUERY = "Where is the cat?"
RESPONSE = "On the mat. It was raining."


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_lm):
    """A store with a context run (+ its sentence spans), a second method on the same input, a
    feature run and an image run."""
    path = tmp_path_factory.mktemp("viewer") / "runs.db"
    store = store_mod.open(path)
    task = ContextTask(tiny_lm, CONTEXT, QUERY, response=RESPONSE)
    loo = task.attribute("loo")
    ctx_id = store.put(loo, spans=task.attribute_spans("loo"))
    cc = task.attribute("contextcite", n_ablations=8)
    cc_id = store.put(cc)

    x = np.array([1.0, -2.0, 0.5])
    fu = FeatureUnits(x, names=["age", "income", "<b>debt</b>"])
    w = np.array([0.3, -1.0, 2.0])
    feat = attribute(Scorer(fu, lambda xs: np.asarray(xs) @ w, target="linear model"), "loo")
    feat_id = store.put(feat)

    image = np.zeros((32, 32, 3), dtype=np.uint8)
    image[:16, :16] = 255
    iu = ImageUnits.grid(image, patch=16, baseline="zero")
    img = attribute(
        Scorer(iu, lambda xs: np.array([float(np.mean(i)) for i in xs]), target="brightness"),
        "loo",
    )
    img_id = store.put(img, inputs={"image": image})
    ids = {"ctx": ctx_id, "cc": cc_id, "feat": feat_id, "img": img_id}
    yield store, task, ids
    store.close()


@pytest.fixture()
def client(runs):
    store, _, _ = runs
    return TestClient(create_app(store))


def test_list_runs_and_facets(client, runs):
    _, _, ids = runs
    r = client.get("/api/runs")
    assert r.status_code == 200
    body = r.json()
    assert {run["id"] for run in body["runs"]} == set(ids.values())
    assert set(body["facets"]["method"]) == {"loo", "contextcite"}
    assert "context" in body["facets"]["task"]
    only = client.get("/api/runs", params={"method": "contextcite"}).json()["runs"]
    assert [run["id"] for run in only] == [ids["cc"]]
    assert client.get("/api/runs", params={"task": "features"}).json()["runs"][0]["view"] == (
        "features"
    )


def test_get_context_run(client, runs):
    _, task, ids = runs
    body = client.get(f"/api/runs/{ids['ctx']}").json()
    assert body["view"] == "context"
    assert body["attribution"]["input"]["text"] == CONTEXT
    assert body["sentences"] == [list(s) for s in task.sentence_spans()]
    assert [s["span"] for s in body["spans"]] == [list(s) for s in task.sentence_spans()]
    assert [r["id"] for r in body["same_input"]] == [ids["cc"]]
    assert len(body["vector"]) == len(body["attribution"]["units"])


def test_get_generic_runs(client, runs):
    _, _, ids = runs
    feat = client.get(f"/api/runs/{ids['feat']}").json()
    assert feat["view"] == "features"
    assert feat["vector"] == pytest.approx([0.3 * 1.0, -1.0 * -2.0, 2.0 * 0.5])
    img = client.get(f"/api/runs/{ids['img']}").json()
    assert img["view"] == "image"
    assert img["inputs"]["image_png"].startswith("data:image/png;base64,")
    assert img["attribution"]["units"][0]["box"] == [0, 0, 16, 16]


def test_unknown_ids_are_404_json(client):
    for r in (
        client.get("/api/runs/doesnotexist"),
        client.post("/api/runs/doesnotexist/span", json={"start": 0, "end": 3}),
        client.get("/api/compare", params={"a": "nope", "b": "nada"}),
        client.get("/api/nothing/here"),
    ):
        assert r.status_code == 404
        assert "error" in r.json()


def test_security_headers_on_every_response(client, runs):
    _, _, ids = runs
    for r in (
        client.get("/"),
        client.get("/static/app.js"),
        client.get("/static/app.css"),
        client.get("/api/runs"),
        client.get(f"/api/runs/{ids['ctx']}"),
        client.get("/api/runs/nope"),
        client.get("/static/../server.py"),
    ):
        assert r.headers["content-security-policy"] == CSP
        assert r.headers["x-content-type-options"] == "nosniff"
    assert '<script src="static/app.js">' in client.get("/").text
    js = client.get("/static/app.js").text
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js


def test_host_check_refuses_other_hosts(runs):
    store, _, _ = runs
    app = create_app(store, allowed_hosts=["127.0.0.1", "localhost"])
    assert TestClient(app, base_url="http://evil.example").get("/api/runs").status_code == 400
    assert TestClient(app, base_url="http://127.0.0.1:8765").get("/api/runs").status_code == 200


def test_stored_span_costs_no_model_calls(runs, tiny_lm):
    store, task, ids = runs
    client = TestClient(create_app(store, lm=tiny_lm))
    s, e = task.sentence_spans()[1]
    before = tiny_lm.cost.copy()
    r = client.post(f"/api/runs/{ids['ctx']}/span", json={"start": s, "end": e})
    assert r.status_code == 200
    body = r.json()
    assert body["stored"] is True and body["live"] is False
    assert body["text"] == RESPONSE[s:e]
    assert tiny_lm.cost.forward_passes == before.forward_passes
    stored = store.find_span(ids["ctx"], s, e)
    assert body["id"] == stored.id
    assert body["vector"] == pytest.approx(list(stored.attribution.vector))


def test_span_without_model_is_409(client, runs):
    _, _, ids = runs
    r = client.post(f"/api/runs/{ids['ctx']}/span", json={"start": 3, "end": 10})
    assert r.status_code == 409
    assert "attribkit serve --model" in r.json()["error"]


def test_bad_span_requests(client, runs):
    _, _, ids = runs
    url = f"/api/runs/{ids['ctx']}/span"
    assert client.post(url, json={"start": 5, "end": 2}).status_code == 400
    assert client.post(url, json={"start": 0, "end": 10_000}).status_code == 400
    assert client.post(url, json={"begin": 0}).status_code == 400
    # a plain-text body (what a cross-site form could send) is refused
    r = client.post(url, content=b'{"start": 0, "end": 3}', headers={"content-type": "text/plain"})
    assert r.status_code == 415
    r = client.post(f"/api/runs/{ids['feat']}/span", json={"start": 0, "end": 1})
    assert r.status_code == 400


def test_live_span_is_computed_stored_and_reused(runs, tiny_lm, tmp_path):
    store, task, ids = runs
    app = create_app(store, lm=tiny_lm)
    client = TestClient(app)
    s, e = 3, 10  # "the mat", not a stored sentence
    assert store.find_span(ids["ctx"], s, e) is None
    r = client.post(f"/api/runs/{ids['ctx']}/span", json={"start": s, "end": e})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["live"] is True
    assert body["text"] == "the mat"
    stored = store.find_span(ids["ctx"], s, e)
    assert stored is not None and stored.id == body["id"]
    assert stored.method == "loo" and stored.model == "tiny"
    expected = task.with_span((s, e)).attribute("loo")
    assert body["vector"] == pytest.approx(list(expected.vector))
    # The server's task for this run is kept, so another span reuses its per-prompt cache.
    viewer = app.state.viewer
    assert ids["ctx"] in viewer._tasks
    r2 = client.post(f"/api/runs/{ids['ctx']}/span", json={"start": 12, "end": 18})
    assert r2.json()["live"] is True
    assert r2.json()["cost"]["forward_passes"] == 0  # same masks: answered from the cache
    # asked again, it is the stored result
    again = client.post(f"/api/runs/{ids['ctx']}/span", json={"start": s, "end": e}).json()
    assert again["stored"] is True and again["id"] == body["id"]


def test_live_span_refuses_another_model(runs, tiny_lm):
    store, _, ids = runs

    class Other:
        name = "other-model"

    client = TestClient(create_app(store, lm=Other()))
    r = client.post(f"/api/runs/{ids['ctx']}/span", json={"start": 0, "end": 2})
    assert r.status_code == 409
    assert "tiny" in r.json()["error"]


def test_compare_matches_agreement(client, runs):
    store, _, ids = runs
    r = client.get("/api/compare", params={"a": ids["ctx"], "b": ids["cc"], "k": 3})
    assert r.status_code == 200
    body = r.json()
    expected = agreement(store.get(ids["ctx"]).attribution, store.get(ids["cc"]).attribution, k=3)
    for key, value in expected.items():
        got = body["agreement"][key]
        if isinstance(value, float) and math.isnan(value):
            assert got is None
        else:
            assert got == pytest.approx(value)
    assert body["same_input"] is True
    assert body["a"]["view"] == body["b"]["view"] == "context"


def test_compare_of_different_inputs_is_400(client, runs):
    _, _, ids = runs
    r = client.get("/api/compare", params={"a": ids["ctx"], "b": ids["feat"]})
    assert r.status_code == 400
    assert "cannot compare" in r.json()["error"]


def test_create_app_from_path(runs, tmp_path):
    store, _, ids = runs
    client = TestClient(create_app(store.path))
    assert client.get(f"/api/runs/{ids['ctx'][:10]}").json()["id"] == ids["ctx"]


def test_serve_refuses_missing_store(tmp_path):
    from attribkit.core.errors import StoreError
    from attribkit.viewer import serve

    with pytest.raises(StoreError, match="no run store"):
        serve(tmp_path / "missing.db", port=0)


def test_loopback_detection():
    from attribkit.viewer.server import _host_name, _is_loopback

    assert _is_loopback("127.0.0.1") and _is_loopback("localhost") and _is_loopback("::1")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("192.168.1.4")
    assert _host_name("[::1]:8765") == "::1" and _host_name("localhost:80") == "localhost"


def test_token_attribution_gets_the_generation_view_and_no_span_queries(tmp_path, tiny_lm):
    from attribkit.tasks.generation import attribute_generation

    a = attribute_generation(tiny_lm, "the cat sat on the mat", "the cat", method="occlusion")
    with store_mod.open(tmp_path / "gen.db") as runs:
        run_id = runs.put(a)
        client = TestClient(create_app(runs, lm=tiny_lm))
        got = client.get(f"/api/runs/{run_id}").json()
        assert got["view"] == "generation" and len(got["vector"]) == len(a.units)
        span = client.post(f"/api/runs/{run_id}/span", json={"start": 0, "end": 3})
        assert span.status_code == 400 and "not a context attribution" in span.json()["error"]


def test_image_attribution_gets_the_image_view_without_explicit_inputs(tmp_path):
    """An attribute_image result stores its own picture: the viewer shows it over the image."""
    from attribkit.testing import toy_image_task

    a = attribute(toy_image_task(), "grad_cam", units="patches")
    store = store_mod.open(tmp_path / "img.db")
    run_id = store.put(a)
    body = TestClient(create_app(store)).get(f"/api/runs/{run_id}").json()
    assert body["view"] == "image"
    assert body["attribution"]["input"]["image_png"].startswith("data:image/png;base64,")


# --- generation and image runs (dataset records with hostile text) -------------------------------

HOSTILE_PROMPT = '<script>window.__pwned=1</script> the cat <img src=x onerror="window.__pwned=2">'
HOSTILE_RESPONSE = "<b>the</b> cat"
HOSTILE_ID = '<img src=x onerror="window.__pwned=3">'
HOSTILE_LABELS = [
    "<script>window.__pwned=4</script>",
    '<img src=x onerror="window.__pwned=5">',
    "c",
]


def hostile_image_task():
    """The toy image task on a model whose class labels are markup, explaining class 1."""
    from attribkit.tasks.image import ImageTask
    from attribkit.testing import toy_image_task

    toy = toy_image_task()
    toy.model.labels = list(HOSTILE_LABELS)
    return ImageTask(toy.model, toy.image, target=1)


@pytest.fixture(scope="module")
def kinds(tmp_path_factory, tiny_lm):
    """A store with two generation runs and two image runs on one input each, as a dataset run
    stores them (hostile prompt, response, id and class label)."""
    from attribkit.tasks.generation import GenerationTask

    store = store_mod.open(tmp_path_factory.mktemp("kinds") / "runs.db")
    gen = GenerationTask(tiny_lm, HOSTILE_PROMPT, HOSTILE_RESPONSE)
    inputs = {"prompt": HOSTILE_PROMPT, "response": HOSTILE_RESPONSE, "id": HOSTILE_ID}
    ids = {
        "gen": store.put(
            gen.attribute("occlusion"), inputs=inputs, dataset="g.jsonl", key=HOSTILE_ID
        ),
        "gen_sal": store.put(gen.attribute("saliency"), inputs=inputs),
    }
    img = hostile_image_task()
    inputs = {"image": "skimage:chelsea", "target": 1, "id": HOSTILE_ID}
    ids["img"] = store.put(
        attribute(img, "grad_cam"), inputs=inputs, dataset="i.jsonl", key=HOSTILE_ID
    )
    ids["img_sal"] = store.put(attribute(img, "saliency"), inputs=inputs)
    yield store, gen, img, ids
    store.close()


def test_generation_run_is_a_token_matrix(kinds):
    store, gen, _, ids = kinds
    client = TestClient(create_app(store))
    body = client.get(f"/api/runs/{ids['gen']}").json()
    assert (body["view"], body["task"], body["key"]) == ("generation", "generation", HOSTILE_ID)
    a = store.get(ids["gen"]).attribution
    tokens = body["tokens"]
    assert tokens["rows"] == gen.row_labels() == a.target["row_labels"]
    assert tokens["columns"] == [u.label for u in a.units]
    assert tokens["roles"] == [u.meta["role"] for u in a.units]
    assert len(tokens["scores"]) == gen.n_rows
    visible = gen.visible()
    for i, row in enumerate(tokens["scores"]):
        assert len(row) == gen.n_units
        for j, v in enumerate(row):
            if visible[i, j] and np.isfinite(a.scores[i, j]):
                assert v == pytest.approx(a.scores[i, j])
            else:
                assert v is None  # a token the row cannot see: a blank cell
    assert any(v is None for row in tokens["scores"] for v in row)
    assert body["attribution"]["target"]["prompt"] == HOSTILE_PROMPT
    assert body["attribution"]["target"]["response"] == HOSTILE_RESPONSE
    assert [r["id"] for r in body["same_input"]] == [ids["gen_sal"]]
    listed = client.get("/api/runs", params={"task": "generation"}).json()["runs"]
    assert {r["id"] for r in listed} == {ids["gen"], ids["gen_sal"]}
    assert {r["view"] for r in listed} == {"generation"}
    both = client.get("/api/compare", params={"a": ids["gen"], "b": ids["gen_sal"]}).json()
    assert both["same_input"] is True and both["a"]["tokens"]["rows"] == tokens["rows"]


def test_image_run_is_its_overlay(kinds):
    import base64
    import io

    from PIL import Image

    from attribkit.viz.image import overlay

    store, _, img, ids = kinds
    client = TestClient(create_app(store))
    body = client.get(f"/api/runs/{ids['img']}").json()
    assert (body["view"], body["task"], body["key"]) == ("image", "image", HOSTILE_ID)
    assert body["attribution"]["target"]["label"] == HOSTILE_LABELS[1]
    assert body["target"] == f"class 1 ({HOSTILE_LABELS[1]})"
    url = body["overlay"]
    assert url.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as im:
        shown = np.asarray(im.convert("RGB"))
    a = store.get(ids["img"]).attribution
    stored = np.asarray(
        Image.open(io.BytesIO(base64.b64decode(a.input["image_png"].split(",")[1])))
    )
    assert np.array_equal(shown, overlay(stored, a.heatmap))
    assert shown.shape == (*img.shape, 3)
    assert [r["id"] for r in body["same_input"]] == [ids["img_sal"]]
    both = client.get("/api/compare", params={"a": ids["img"], "b": ids["img_sal"]}).json()
    assert both["same_input"] is True and both["b"]["overlay"].startswith("data:image/png")


def test_image_run_of_another_class_is_not_the_same_input(kinds, tmp_path):
    from attribkit.tasks.image import ImageTask

    _, _, img, _ = kinds
    other = ImageTask(img.model, img.image, target=2)
    with store_mod.open(tmp_path / "c.db") as runs:
        a = runs.put(attribute(img, "grad_cam"))
        b = runs.put(attribute(other, "grad_cam"))
        body = TestClient(create_app(runs)).get(f"/api/runs/{a}").json()
        assert body["same_input"] == []
        both = TestClient(create_app(runs)).get("/api/compare", params={"a": a, "b": b}).json()
        assert both["same_input"] is False


def test_views_come_from_the_task_kind_also_for_format_1_rows(tmp_path, runs):
    """Format-1 results did not record their task: it is inferred, as Attribution.load does."""
    import json
    from pathlib import Path

    golden = Path(__file__).parent / "golden" / "format1"
    lines = []
    for n, name in enumerate(["context", "generation", "image", "features"]):
        data = json.loads((golden / f"{name}.json").read_text())
        lines.append(
            {
                "format": "attribkit.run",
                "version": store_mod.SCHEMA_VERSION,
                "id": f"{n:02d}{name}",
                "created": 1.0 + n,
                "task": name,
                "model": "m",
                "method": data["method"],
                "params": {},
                "inputs": {},
                "cost": {},
                "tags": {},
                "attribution": data,
            }
        )
    path = tmp_path / "old.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with store_mod.open(tmp_path / "old.db") as old:
        assert old.import_jsonl(path) == 4
        client = TestClient(create_app(old))
        views = {}
        for line in lines:
            body = client.get(f"/api/runs/{line['id']}").json()
            views[line["task"]] = body["view"]
            assert old.get(line["id"]).task_kind == (
                None if line["task"] == "features" else line["task"]
            )
        assert views == {
            "context": "context",
            "generation": "generation",
            "image": "image",
            "features": "features",
        }
        image = client.get("/api/runs/02image").json()
        assert image["overlay"].startswith("data:image/png;base64,")
        assert len(client.get("/api/runs/01generation").json()["tokens"]["rows"]) >= 1


def test_a_feature_run_has_no_task_and_gets_bars(client, runs):
    store, _, ids = runs
    run = store.get(ids["feat"])
    assert run.task_kind is None and run.task == "features"
    assert client.get(f"/api/runs/{ids['feat']}").json()["view"] == "features"
    # a Scorer over image units (no task, no map) is drawn as shaded units over its picture
    body = client.get(f"/api/runs/{ids['img']}").json()
    assert body["view"] == "image" and body["overlay"] is None
