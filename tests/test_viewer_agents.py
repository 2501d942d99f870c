"""Agents runs (failure attribution over multi-agent logs) in the viewer (JSON API and a real
browser), in notebooks and in the HTML report: the turns' labels shaded by score, the agents'
totals (highest first), the decision with its turn marked, the gold mistake when stored, and
every agent name and reason shown as text. Hand-written logs only; no turn text is shown."""

from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import pytest

import attribkit.store as store_mod
from attribkit.core.attribution import Attribution
from attribkit.core.cost import Cost
from attribkit.tasks.agents import AgentLog, AgentTask
from attribkit.viz.html import attribution_html
from attribkit.viz.notebook import notebook_html

HOSTILE_AGENT = '<img src=x onerror="window.__pwned=1">'
HOSTILE_REASON = "<script>window.__pwned=2</script> blamed <img src=x onerror=alert(1)>"
LOG = (
    ("User", "Find the cheapest of three train tickets: 12, 9 and 15 euros."),
    ("Planner", "Searcher, list the prices; Verifier, check the minimum."),
    (HOSTILE_AGENT, "The prices are 12, 19 and 15 euros."),
    ("Verifier", "The minimum of 12, 19 and 15 is 12."),
    ("Planner", "The cheapest ticket costs 12 euros."),
)
# the log's gold mistake, stored with the runs as a dataset run stores it
GOLD = {"mistake_agent": HOSTILE_AGENT, "mistake_step": 2}


@pytest.fixture(scope="module")
def results(tiny_lm):
    log = AgentLog([{"agent": a, "content": c} for a, c in LOG], **GOLD)
    task = AgentTask(log, lm=tiny_lm)  # its target carries the gold mistake (names and a step)
    scores = np.array([0.5, -0.25, 2.0, 1.0])
    hostile = task.result(
        scores,
        "hand_decided",
        {},
        Cost(),
        decision={"agent": HOSTILE_AGENT, "step": 2, "reason": HOSTILE_REASON},
    )
    return {
        "loo": task.attribute("turn_loo"),
        "back": task.attribute("backtrace"),
        "hostile": hostile,
    }


@pytest.fixture(scope="module")
def agents_store(tmp_path_factory, results):
    store = store_mod.open(tmp_path_factory.mktemp("agents-viewer") / "runs.db")
    inputs = {"id": "log1", "n_turns": len(LOG), **GOLD}
    ids = {
        name: store.put(a, inputs=inputs, dataset="logs.jsonl", key="log1")
        for name, a in results.items()
    }
    yield store, ids
    store.close()


# ------------------------------------------------------------------------------------ API


def _client(store):
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    from starlette.testclient import TestClient

    from attribkit.viewer import create_app

    return TestClient(create_app(store))


def test_api_agents_runs(agents_store, results):
    from attribkit.viewer.server import CSP

    store, ids = agents_store
    client = _client(store)
    listed = client.get("/api/runs", params={"task": "agents"}).json()
    assert {r["id"] for r in listed["runs"]} == set(ids.values())
    assert {r["view"] for r in listed["runs"]} == {"agents"}

    r = client.get(f"/api/runs/{ids['hostile']}")
    assert r.headers["content-security-policy"] == CSP
    body = r.json()
    assert body["view"] == "agents" and body["task"] == "agents"
    info = body["agents"]
    # totals highest first: the hostile agent 2.0, Verifier 1.0, User 0.5, Planner -0.25
    assert info["totals"] == [
        [HOSTILE_AGENT, 2.0],
        ["Verifier", 1.0],
        ["User", 0.5],
        ["Planner", -0.25],
    ]
    assert info["decision"] == {
        "agent": HOSTILE_AGENT,
        "step": 2,
        "reason": HOSTILE_REASON,
        "unit": 2,
    }
    assert info["gold"] == {"agent": HOSTILE_AGENT, "step": 2, "unit": 2}
    assert info["n_turns"] == 5 and info["outcome_step"] == 4 and info["path"] == []
    assert body["vector"] == [0.5, -0.25, 2.0, 1.0]
    # the other runs on this log can be compared with it
    assert {o["id"] for o in body["same_input"]} == {ids["loo"], ids["back"]}
    # no turn text anywhere: labels, agents and steps only
    for _, content in LOG:
        assert content not in r.text

    back = client.get(f"/api/runs/{ids['back']}").json()["agents"]
    path = results["back"].extras["path"]
    assert [p["step"] for p in back["path"]] == path
    decided = results["back"].extras["decision"]
    assert back["decision"]["step"] == decided["step"]
    assert back["decision"]["unit"] == decided["step"]  # units are steps 0..3

    compare = client.get("/api/compare", params={"a": ids["loo"], "b": ids["back"]}).json()
    assert compare["same_input"] and compare["a"]["view"] == "agents"
    assert compare["b"]["agents"]["decision"]["step"] == decided["step"]


def test_agents_payload_without_gold_and_with_odd_totals(results):
    from attribkit.viewer.server import agents_payload

    data = results["loo"].to_dict()
    for key in GOLD:
        data["target"].pop(key)
    info = agents_payload(data)  # neither the target nor inputs: no gold
    assert info["gold"] is None
    totals = results["loo"].extras["agent_scores"]
    assert [a for a, _ in info["totals"]] == sorted(totals, key=lambda a: -totals[a])
    data["extras"]["agent_scores"] = {"B": None, "A": 1.0, "C": float("nan")}
    data["extras"]["decision"] = {"agent": "Z", "step": 9, "reason": "not a unit"}
    info = agents_payload(data, {"mistake_step": "1"})
    assert info["totals"][0] == ["A", 1.0] and {a for a, _ in info["totals"][1:]} == {"B", "C"}
    assert all(v is None for _, v in info["totals"][1:])
    assert info["decision"]["unit"] is None  # a decided step outside the units
    assert info["gold"] == {"agent": None, "step": 1, "unit": 1}
    json.dumps(info, allow_nan=False)


# ------------------------------------------------------------------------------- notebook


def test_notebook_shows_decision_turns_and_totals_escaped(results):
    for a in results.values():
        out = notebook_html(a)
        assert a._repr_html_() == out
        assert "<script" not in out and "<img" not in out
        assert "&lt;img src=x onerror=&quot;window.__pwned=1&quot;&gt;" in out
        assert "Turns" in out and "Agents" in out and "decision" in out
        assert out.count("<tr ") == len(a.units)  # one shaded row per turn
        for _, content in LOG:
            assert content not in out
        assert out.count(">gold</span>") == 3  # the target's gold: its line, turn and agent
    hostile = notebook_html(results["hostile"])
    assert "&lt;script&gt;window.__pwned=2&lt;/script&gt;" in hostile
    assert "&lt;img src=x onerror=alert(1)&gt;" in hostile
    # agents' totals highest first
    names = ["&lt;img src=x", "Verifier", "User", "Planner"]
    section = hostile[hostile.index("<b>Agents</b>") :]
    positions = [section.index(n) for n in names]
    assert positions == sorted(positions)
    # without a gold mistake in the target, no gold line
    d = results["hostile"].to_dict()
    for key in GOLD:
        d["target"].pop(key)
    assert "gold" not in notebook_html(Attribution.from_dict(d))


def test_html_report_names_the_decision_and_the_agents(results):
    page = attribution_html(results["hostile"])
    assert "<script>" not in page.split("</style>", 1)[1] and "<img" not in page
    assert "&lt;script&gt;window.__pwned=2&lt;/script&gt;" in page
    assert "<dt>decision</dt>" in page and "<dt>agents</dt>" in page
    agents_row = page.split("<dt>agents</dt><dd>", 1)[1].split("</dd>", 1)[0]
    assert agents_row.startswith("&lt;img") and agents_row.index("Verifier") < agents_row.index(
        "Planner"
    )


# -------------------------------------------------------------------------------- browser

CHROMIUM = os.environ.get("ATTRIBKIT_CHROMIUM", "/usr/bin/chromium")


def test_browser_shows_an_agent_run_with_hostile_names_as_text(agents_store, results):
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    sync_api = pytest.importorskip("playwright.sync_api")
    if shutil.which(CHROMIUM) is None and not os.path.exists(CHROMIUM):
        pytest.skip(f"Chromium not found at {CHROMIUM}: apt-get install chromium")
    from attribkit.viewer import create_app
    from attribkit.viewer.server import BackgroundServer

    store, ids = agents_store
    n = len(results["hostile"].units)
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
            page.goto(f"{server.url}#/run/{ids['hostile']}")
            page.wait_for_selector("body[data-ready='1']")
            page.wait_for_selector(".view-agents .turn[data-unit]")
            view = page.locator(".view-agents")
            assert view.locator(".decision-agent").inner_text() == HOSTILE_AGENT
            assert view.locator(".decision-step").inner_text() == "2"
            assert view.locator(".decision-reason").inner_text() == HOSTILE_REASON
            assert view.locator(".gold-agent").inner_text() == HOSTILE_AGENT
            assert view.locator(".gold-line .match.yes").count() == 2
            turns = view.locator("ol.turns .turn[data-unit]")
            assert turns.count() == n
            labels = [turns.nth(i).locator(".turn-label").inner_text() for i in range(n)]
            assert labels == [u.label for u in results["hostile"].units]
            assert labels[2] == f"Step 2 - {HOSTILE_AGENT}"
            assert view.locator(".turn-outcome").inner_text().startswith("Step 4")
            shaded = page.evaluate(
                """() => [...document.querySelectorAll("ol.turns .turn[data-unit]")].map(
                    (u) => getComputedStyle(u).backgroundColor)"""
            )
            assert all(c != "rgba(0, 0, 0, 0)" for c in shaded)
            assert view.locator(".turn-decided").get_attribute("data-unit") == "2"
            assert view.locator(".turn-gold").get_attribute("data-unit") == "2"
            rows = view.locator("table.agent-totals tr.agent-row")
            names = [rows.nth(i).get_attribute("data-agent") for i in range(rows.count())]
            assert names == [HOSTILE_AGENT, "Verifier", "User", "Planner"]
            totals = [
                float(t.replace("+", ""))
                for t in view.locator("table.agent-totals .agent-total").all_inner_texts()
            ]
            assert totals == sorted(totals, reverse=True) and math.isclose(totals[0], 2.0)
            assert view.locator("tr.agent-decided").get_attribute("data-agent") == HOSTILE_AGENT
            for _, content in LOG:
                assert content not in page.locator("main").inner_text()

            # backtrace: its dependency path; then the compare page of two runs on the log
            page.goto(f"{server.url}#/run/{ids['back']}")
            page.wait_for_selector("h1:has-text('backtrace')")
            page.wait_for_selector(".view-agents .turn[data-unit]")
            if results["back"].extras["path"]:
                assert page.locator(".agent-path").inner_text().startswith("Dependency path: Step")
            page.goto(f"{server.url}#/compare/{ids['loo']}/{ids['back']}")
            page.wait_for_selector(".metrics")
            assert page.locator(".side ol.turns .turn[data-unit]").count() == 2 * n
            page.goto(f"{server.url}#/?task=agents")
            page.wait_for_selector("tr.run-row")
            assert page.locator("tr.run-row").count() == 3
            page.wait_for_timeout(200)  # an onerror would have fired by now
            assert page.evaluate("typeof window.__pwned") == "undefined"
            assert page.locator("main img, main script").count() == 0
            assert not dialogs and not errors
    finally:
        pw.stop()
