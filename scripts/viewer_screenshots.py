"""Screenshots of the browser viewer for the docs: builds a demo run store with the real model,
serves it, and writes docs/img/viewer-list.png, viewer-context.png and viewer-compare.png.

    .venv/bin/python scripts/viewer_screenshots.py [--out docs/img] [--chromium /usr/bin/chromium]

Needs the ``serve`` extra, the ``playwright`` package and a Chromium binary (nothing is
downloaded). Costs about 100 SmolLM2 forward passes (under a minute on a CPU).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import attribkit.store as store_mod
from attribkit.core.registry import attribute
from attribkit.core.scorer import Scorer
from attribkit.core.units import FeatureUnits
from attribkit.models import load
from attribkit.tasks.context import ContextTask
from attribkit.viewer import create_app
from attribkit.viewer.server import BackgroundServer

CONTEXT = (
    "Maren Tolvik was born in the mountain village of Eskerdal. Her brother Jorund repairs "
    "fishing boats. Maren's favourite colour is green. The harbour was rebuilt after a storm in "
    "1987."
)
QUERY = "Where was Maren born and what is her favourite colour?"
RESPONSE = "Maren was born in Eskerdal. Her favourite colour is green."

CONTEXT_2 = (
    "The Lindqvist bridge opened in 1931. It spans the river Aulen at its narrowest point. "
    "Trams crossed it until 1968. Today it carries only pedestrians and cyclists."
)
QUERY_2 = "What crosses the Lindqvist bridge today?"
RESPONSE_2 = "Today only pedestrians and cyclists cross it."

CHROME_ARGS = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def build_store(path: Path, lm: object) -> dict[str, str]:
    """A demo store: two context runs (one with span results and a second method), a feature run.
    Returns the ids of the runs the screenshots show."""
    store = store_mod.open(path)
    task = ContextTask(lm, CONTEXT, QUERY, RESPONSE)
    ids = {"loo": store.put(task.attribute("loo"), spans=task.attribute_spans("loo"))}
    ids["contextcite"] = store.put(task.attribute("contextcite", n_ablations=32))
    bridge = ContextTask(lm, CONTEXT_2, QUERY_2, RESPONSE_2)
    store.put(bridge.attribute("loo"))

    names = ["age", "income", "debt", "years employed", "open accounts", "late payments"]
    x = np.array([41.0, 52.0, 18.0, 7.0, 4.0, 2.0])
    w = np.array([0.01, 0.04, -0.06, 0.05, -0.02, -0.4])
    scorer = Scorer(
        FeatureUnits(x, names=names, baseline=np.array([40.0, 45.0, 10.0, 5.0, 3.0, 0.0])),
        lambda xs: np.asarray(xs) @ w,
        target={"description": "credit score of a linear demo model", "task": "features"},
    )
    store.put(attribute(scorer, "loo"), model="demo-linear")
    store.close()
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--model", default="smollm2")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    lm = load(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "demo-runs.db"
        ids = build_store(db, lm)
        runs = store_mod.open(db)
        pw = sync_playwright().start()
        browser = pw.chromium.launch(executable_path=args.chromium, headless=True, args=CHROME_ARGS)
        try:
            with BackgroundServer(create_app(runs, lm=lm)) as server:
                page = browser.new_page(viewport={"width": 1280, "height": 820})

                def shot(route: str, name: str, before: object = None) -> None:
                    page.goto(server.url + route)
                    page.wait_for_selector("body[data-ready='1']")
                    if callable(before):
                        before()
                    page.wait_for_timeout(150)
                    path = args.out / name
                    page.screenshot(path=str(path), full_page=True)
                    print(f"wrote {path}")

                shot("#/", "viewer-list.png")

                def pick_sentence() -> None:
                    page.locator("#response .sent").nth(1).click()
                    page.wait_for_selector("#span-status[data-state='stored']")

                shot(f"#/run/{ids['loo']}", "viewer-context.png", pick_sentence)
                shot(f"#/compare/{ids['loo']}/{ids['contextcite']}", "viewer-compare.png")
        finally:
            browser.close()
            pw.stop()
            runs.close()


if __name__ == "__main__":
    main()
