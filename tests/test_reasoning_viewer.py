"""Reasoning runs in the viewer (JSON API and a real browser) and in notebooks: the problem, the
trace shaded by sentence, the answer and the sentence×sentence matrix, all text shown as text."""

from __future__ import annotations

import os
import shutil

import pytest

import attribkit.store as store_mod
from attribkit.tasks.reasoning import ReasoningTask, ReasoningTrace
from attribkit.viz.notebook import notebook_html

PROBLEM = "What is 2 + 3? <script>window.__pwned=1</script>"
TEXT = (
    "First I add two and three. That gives five. "
    '<img src=x onerror="window.__pwned=2"> So the answer is five.'
)
ANSWER = "5 <b>five</b>"


@pytest.fixture(scope="module")
def results(tiny_lm):
    task = ReasoningTask(tiny_lm, ReasoningTrace(PROBLEM, TEXT, ANSWER))
    return {"forced": task.attribute("forced_answer"), "supp": task.attribute("suppression")}


@pytest.fixture(scope="module")
def reasoning_store(tmp_path_factory, results):
    store = store_mod.open(tmp_path_factory.mktemp("reasoning-viewer") / "runs.db")
    inputs = {"problem": PROBLEM, "text": TEXT, "answer": ANSWER, "id": "r1"}
    ids = {
        "forced": store.put(results["forced"], inputs=inputs, dataset="r.jsonl", key="r1"),
        "supp": store.put(results["supp"], inputs=inputs, dataset="r.jsonl", key="r1"),
    }
    yield store, ids
    store.close()


# ------------------------------------------------------------------------------------ API


def test_api_reasoning_runs(reasoning_store, results):
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    from starlette.testclient import TestClient

    from attribkit.viewer import create_app
    from attribkit.viewer.server import CSP

    store, ids = reasoning_store
    client = TestClient(create_app(store))
    listed = client.get("/api/runs", params={"task": "reasoning"}).json()
    assert {r["id"] for r in listed["runs"]} == set(ids.values())
    assert {r["view"] for r in listed["runs"]} == {"reasoning"}

    r = client.get(f"/api/runs/{ids['supp']}")
    assert r.headers["content-security-policy"] == CSP
    body = r.json()
    assert body["view"] == "reasoning" and body["task"] == "reasoning"
    assert body["reasoning"]["problem"] == PROBLEM and body["reasoning"]["answer"] == ANSWER
    assert body["attribution"]["input"]["text"] == TEXT
    n = len(results["supp"].units)
    m = body["reasoning"]["matrix"]
    assert len(m) == n and all(len(row) == n for row in m)
    expected = results["supp"].extras["matrix"]
    for j in range(n):
        for i in range(n):
            if j <= i:
                assert m[j][i] is None
            else:
                assert m[j][i] == pytest.approx(expected[j][i])
    assert [o["id"] for o in body["same_input"]] == [ids["forced"]]

    forced = client.get(f"/api/runs/{ids['forced']}").json()
    assert forced["view"] == "reasoning" and forced["reasoning"]["matrix"] is None
    assert len(forced["vector"]) == n and all(v is not None for v in forced["vector"])
    span = client.post(f"/api/runs/{ids['forced']}/span", json={"start": 0, "end": 3})
    assert span.status_code == 400  # span queries are for context runs
    compare = client.get("/api/compare", params={"a": ids["forced"], "b": ids["supp"]}).json()
    assert compare["same_input"] and compare["a"]["reasoning"]["problem"] == PROBLEM


# ------------------------------------------------------------------------------- notebook


def test_notebook_escapes_a_hostile_trace(results):
    for a in results.values():
        out = notebook_html(a)
        assert "<script" not in out and "<img" not in out and "<b>five" not in out
        assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in out
        assert "&lt;img src=x onerror=&quot;window.__pwned=2&quot;&gt;" in out
        assert "5 &lt;b&gt;five&lt;/b&gt;" in out
        assert "Problem" in out and "Answer" in out
        assert a._repr_html_() == out
    n = len(results["supp"].units)
    grid = notebook_html(results["supp"])
    assert "Sentence × sentence" in grid and "Sentence × sentence" not in notebook_html(
        results["forced"]
    )
    # n × n cells: the upper triangle and diagonal blank, the rest shaded
    assert grid.count("<td ") == n * n
    assert grid.count("rgba(") >= 1


# -------------------------------------------------------------------------------- browser

CHROMIUM = os.environ.get("ATTRIBKIT_CHROMIUM", "/usr/bin/chromium")


def test_browser_shows_a_hostile_trace_as_text(reasoning_store, results):
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    sync_api = pytest.importorskip("playwright.sync_api")
    if shutil.which(CHROMIUM) is None and not os.path.exists(CHROMIUM):
        pytest.skip(f"Chromium not found at {CHROMIUM}: apt-get install chromium")
    from attribkit.viewer import create_app
    from attribkit.viewer.server import BackgroundServer

    store, ids = reasoning_store
    n = len(results["supp"].units)
    pw = sync_api.sync_playwright().start()
    try:
        try:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=["--disable-dev-shm-usage"]
            )
        except Exception as e:  # a broken Chromium install
            pytest.skip(f"Chromium at {CHROMIUM} did not start: {e}")
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        dialogs: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        with BackgroundServer(create_app(store)) as server:
            page.goto(f"{server.url}#/run/{ids['supp']}")
            page.wait_for_selector("body[data-ready='1']")
            page.wait_for_selector(".view-reasoning .unit[data-unit]")
            assert page.locator(".view-reasoning .problem").inner_text() == PROBLEM
            assert page.locator(".view-reasoning .answer").inner_text() == ANSWER
            assert page.locator(".view-reasoning .source").inner_text() == TEXT
            units = page.locator(".view-reasoning .source .unit")
            assert units.count() == n
            shaded = page.evaluate(
                """() => [...document.querySelectorAll(".source .unit")].map(
                    (u) => getComputedStyle(u).backgroundColor)"""
            )
            assert any(c != "rgba(0, 0, 0, 0)" for c in shaded)
            cells = page.locator("table.reasoning-matrix td.cell")
            assert cells.count() == n * n
            assert page.locator("table.reasoning-matrix td.cell.nan").count() == n * (n + 1) // 2
            assert page.locator("table.reasoning-matrix td.cell:not(.nan)").count() == (
                n * (n - 1) // 2
            )
            # the forced-answer run: no matrix
            page.goto(f"{server.url}#/run/{ids['forced']}")  # a hash change: wait for the page
            page.wait_for_selector("h1:has-text('forced_answer')")
            page.wait_for_selector(".view-reasoning .unit[data-unit]")
            assert page.locator("table.reasoning-matrix").count() == 0
            assert page.locator(".view-reasoning .problem").inner_text() == PROBLEM
            # the list shows them too
            page.goto(f"{server.url}#/?task=reasoning")
            page.wait_for_selector("tr.run-row")
            assert page.locator("tr.run-row").count() == 2
            page.wait_for_timeout(200)  # an onerror would have fired by now
            assert page.evaluate("typeof window.__pwned") == "undefined"
            assert page.locator("main img, main script, main b").count() == 0
            assert not dialogs and not errors
    finally:
        pw.stop()
