"""The viewer in a real browser (Playwright + system Chromium): listing, span selection, escaping.

Skipped, with the reason, when the ``playwright`` package or Chromium is missing. One browser per
module; each server runs uvicorn in a background thread on a free loopback port.
"""

from __future__ import annotations

import math
import os
import shutil

import pytest

pytest.importorskip(
    "starlette", reason="the viewer needs starlette: pip install 'attribkit[serve]'"
)
pytest.importorskip("uvicorn", reason="the viewer needs uvicorn: pip install 'attribkit[serve]'")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed: pip install playwright"
)

import attribkit.store as store_mod  # noqa: E402
from attribkit.tasks.context import ContextTask  # noqa: E402
from attribkit.viewer import create_app  # noqa: E402
from attribkit.viewer.server import BackgroundServer  # noqa: E402

CHROMIUM = os.environ.get("ATTRIBKIT_CHROMIUM", "/usr/bin/chromium")
CHROME_ARGS = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]

MAREN = (
    "Maren Tolvik was born in the mountain village of Eskerdal. Her brother Jorund repairs fishing "
    "boats. Maren's favourite colour is green. The harbour was rebuilt after a storm in 1987."
)
MAREN_QUERY = "Where was Maren born and what is her favourite colour?"
MAREN_RESPONSE = "Maren was born in Eskerdal. Her favourite colour is green."

HOSTILE = (
    "Plain first sentence.\n<script>window.__pwned=1</script>\nThen an image: "
    '<img src=x onerror="window.__pwned=2"> and the end.'
)


@pytest.fixture(scope="module")
def browser():
    if shutil.which(CHROMIUM) is None and not os.path.exists(CHROMIUM):
        pytest.skip(f"Chromium not found at {CHROMIUM}: apt-get install chromium")
    pw = sync_api.sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROME_ARGS)
    except Exception as e:  # a broken Chromium install
        pw.stop()
        pytest.skip(f"Chromium at {CHROMIUM} did not start: {e}")
    yield b
    b.close()
    pw.stop()


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    p = context.new_page()
    p.errors = []  # type: ignore[attr-defined]
    p.dialogs = []  # type: ignore[attr-defined]
    p.on("pageerror", lambda e: p.errors.append(str(e)))

    def on_dialog(d):
        p.dialogs.append(d.message)
        d.dismiss()

    p.on("dialog", on_dialog)
    yield p
    context.close()


@pytest.fixture(scope="module")
def tiny_site(tmp_path_factory, tiny_lm):
    """A server (no model) over a store with a tiny-model run and a hostile context."""
    store = store_mod.open(tmp_path_factory.mktemp("viewer-tiny") / "runs.db")
    task = ContextTask(tiny_lm, "The cat sat on the mat. The dog slept.", "Where?", "On the mat.")
    ids = {"cat": store.put(task.attribute("loo"))}
    ids["cat_cc"] = store.put(task.attribute("contextcite", n_ablations=8))
    hostile = ContextTask(tiny_lm, HOSTILE, "What <b>is</b> here?", "An <i>image</i>.")
    ids["hostile"] = store.put(hostile.attribute("loo"))
    with BackgroundServer(create_app(store)) as server:
        yield server.url, store, ids
    store.close()


@pytest.fixture(scope="module")
def maren_site(tmp_path_factory, smollm2):
    """A live-model server (SmolLM2) over a store holding the Maren run and its sentence spans."""
    store = store_mod.open(tmp_path_factory.mktemp("viewer-maren") / "runs.db")
    task = ContextTask(smollm2, MAREN, MAREN_QUERY, MAREN_RESPONSE)
    run_id = store.put(task.attribute("loo"), spans=task.attribute_spans("loo"))
    with BackgroundServer(create_app(store, lm=smollm2)) as server:
        yield server.url, store, run_id
    store.close()


def _open(page, url):
    """Open ``url`` and wait until the page is drawn; a run page waits until it shows that run
    (a hash change from another run keeps ``data-ready`` set, so waiting for it alone could
    read the previous run)."""
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']")
    if "#/run/" in url:
        run_id = url.split("#/run/", 1)[1].split("?")[0].split("/")[0]
        page.wait_for_function(
            "(id) => (document.querySelector('dd.meta-id') || {}).textContent === id", arg=run_id
        )


def test_page_lists_stored_runs(page, tiny_site):
    url, _, ids = tiny_site
    _open(page, url)
    rows = page.locator("tr.run-row")
    assert rows.count() == 3
    row = page.locator(f"tr.run-row[data-id='{ids['cat']}']")
    assert "On the mat." in row.inner_text()
    assert "loo" in row.inner_text()
    row.locator("a.run-link").click()
    page.wait_for_selector("#response")
    assert page.locator("#response").inner_text() == "On the mat."
    assert page.locator(".unit[data-unit]").count() == 2
    assert page.locator(".legend").count() == 1
    assert not page.errors


def test_hostile_context_is_inert_text(page, tiny_site):
    url, _, ids = tiny_site
    _open(page, f"{url}#/run/{ids['hostile']}")
    page.wait_for_selector(".unit[data-unit]")
    context_text = page.locator(".source").inner_text()
    assert "<script>window.__pwned=1</script>" in context_text
    assert '<img src=x onerror="window.__pwned=2">' in context_text
    assert page.locator(".query").inner_text() == "What <b>is</b> here?"
    assert page.locator("#response").inner_text() == "An <i>image</i>."
    page.wait_for_timeout(200)  # an onerror would have fired by now
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("main img, main script, main b, main i").count() == 0
    assert not page.dialogs
    assert not page.errors
    # the list view shows the hostile target as text too
    _open(page, url)
    assert "An <i>image</i>." in page.locator(f"tr[data-id='{ids['hostile']}']").inner_text()
    assert page.evaluate("typeof window.__pwned") == "undefined"


def test_span_without_model_shows_the_409_message(page, tiny_site):
    url, _, ids = tiny_site
    _open(page, f"{url}#/run/{ids['cat']}")
    page.locator("#response .sent").first.click()
    page.wait_for_selector("#span-status[data-state='error']")
    assert "attribkit serve --model" in page.locator("#span-status").inner_text()


def test_compare_two_runs_picked_in_the_list(page, tiny_site):
    from attribkit.evaluation.agreement import agreement

    url, store, ids = tiny_site
    _open(page, url)
    button = page.locator("#compare-btn")
    assert button.is_disabled()
    page.locator(f"tr[data-id='{ids['cat']}'] input[type=checkbox]").check()
    page.locator(f"tr[data-id='{ids['cat_cc']}'] input[type=checkbox]").check()
    assert button.is_enabled()
    button.click()
    page.wait_for_selector(".metric[data-metric='spearman']")
    assert f"#/compare/{ids['cat']}/{ids['cat_cc']}" in page.url
    expected = agreement(store.get(ids["cat"]).attribution, store.get(ids["cat_cc"]).attribution)
    shown = page.locator(".metric[data-metric='spearman'] .metric-value").inner_text()
    rho = expected["spearman"]
    assert shown == ("n/a" if math.isnan(rho) else f"{rho:.3f}")
    overlap = page.locator(".metric[data-metric='top_k_overlap'] .metric-value").inner_text()
    expected_k3 = agreement(
        store.get(ids["cat"]).attribution, store.get(ids["cat_cc"]).attribution, k=3
    )
    assert overlap == f"{expected_k3['top_k_overlap']:.2f}"
    assert page.locator(".side").count() == 2
    assert page.locator(".side .unit[data-unit]").count() == 4
    assert not page.errors


def _top_unit(page) -> int:
    return int(page.locator(".source .unit.source-top").get_attribute("data-unit"))


@pytest.mark.model
def test_clicking_response_sentences_lights_their_sources(page, maren_site):
    url, _, run_id = maren_site
    _open(page, f"{url}#/run/{run_id}")
    sentences = page.locator("#response .sent")
    assert sentences.count() == 2

    sentences.nth(1).click()  # "Her favourite colour is green."
    page.wait_for_selector("#span-status[data-state='stored']")
    assert _top_unit(page) == 2
    assert "Her favourite colour is green." in page.locator("#rank-title").inner_text()
    assert page.locator("ol.ranking li.first").get_attribute("data-unit") == "2"

    sentences.nth(0).click()  # "Maren was born in Eskerdal."
    page.wait_for_selector("#span-status[data-state='stored'] >> text=Maren was born")
    assert _top_unit(page) == 0
    assert page.locator("ol.ranking li.first").get_attribute("data-unit") == "0"
    assert not page.errors


@pytest.mark.model
def test_mouse_selection_computes_a_new_span_live(page, maren_site):
    url, store, run_id = maren_site
    _open(page, f"{url}#/run/{run_id}")
    start = MAREN_RESPONSE.index("favourite colour")
    end = start + len("favourite colour")
    assert store.find_span(run_id, start, end) is None
    page.evaluate(
        """([start, end]) => {
          const resp = document.getElementById("response");
          const walker = document.createTreeWalker(resp, NodeFilter.SHOW_TEXT);
          const range = document.createRange();
          let pos = 0, node;
          while ((node = walker.nextNode())) {
            const len = node.textContent.length;
            if (start >= pos && start <= pos + len) range.setStart(node, start - pos);
            if (end >= pos && end <= pos + len) { range.setEnd(node, end - pos); break; }
            pos += len;
          }
          const sel = window.getSelection();
          sel.removeAllRanges();
          sel.addRange(range);
          resp.dispatchEvent(new MouseEvent("mouseup", {bubbles: true}));
        }""",
        [start, end],
    )
    page.wait_for_selector("#span-status[data-state='live']", timeout=60_000)
    assert "favourite colour" in page.locator("#span-status").inner_text()
    stored = store.find_span(run_id, start, end)
    assert stored is not None
    assert _top_unit(page) == int(stored.attribution.ranking[0])
    assert page.locator(f"#stored-spans .chip[data-start='{start}'][data-end='{end}']").count() == 1
    assert not page.errors


# --- generation and image runs -------------------------------------------------------------------

GEN_PROMPT = '<script>window.__pwned=1</script> the cat <img src=x onerror="window.__pwned=2">'
GEN_RESPONSE = "<b>the</b> cat"
RECORD_ID = '<img src=x onerror="window.__pwned=3">'
LABELS = ["<script>window.__pwned=4</script>", '<img src=x onerror="window.__pwned=5">', "c"]


@pytest.fixture(scope="module")
def kinds_site(tmp_path_factory, tiny_lm):
    """A server over a generation run and an image run stored as dataset records, with markup
    in the prompt, the response, the record id and the class label."""
    from attribkit import attribute
    from attribkit.tasks.generation import GenerationTask
    from attribkit.tasks.image import ImageTask
    from attribkit.testing import toy_image_task

    store = store_mod.open(tmp_path_factory.mktemp("viewer-kinds") / "runs.db")
    gen = GenerationTask(tiny_lm, GEN_PROMPT, GEN_RESPONSE)
    inputs = {"prompt": GEN_PROMPT, "response": GEN_RESPONSE, "id": RECORD_ID}
    ids = {"gen": store.put(gen.attribute("occlusion"), inputs=inputs, dataset="g", key=RECORD_ID)}
    toy = toy_image_task()
    toy.model.labels = list(LABELS)
    img = ImageTask(toy.model, toy.image, target=1)
    inputs = {"image": "skimage:chelsea", "target": 1, "id": RECORD_ID}
    ids["img"] = store.put(attribute(img, "grad_cam"), inputs=inputs, dataset="i", key=RECORD_ID)
    ids["img_sal"] = store.put(attribute(img, "saliency"), inputs=inputs)
    with BackgroundServer(create_app(store)) as server:
        yield server.url, store, gen, ids
    store.close()


def _inert(page) -> None:
    page.wait_for_timeout(200)  # an onerror would have fired by now
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("main script, main b, main i").count() == 0
    assert not page.dialogs
    assert not page.errors


def test_generation_run_is_a_token_heat_map(page, kinds_site):
    url, store, gen, ids = kinds_site
    _open(page, f"{url}#/run/{ids['gen']}")
    page.wait_for_selector("table.token-map")
    a = store.get(ids["gen"]).attribution
    assert page.locator(".gen-prompt").inner_text() == GEN_PROMPT
    assert page.locator(".gen-response").inner_text() == GEN_RESPONSE
    cols = page.locator("table.token-map thead th.tok.col")
    assert cols.count() == len(a.units)
    assert [cols.nth(j).text_content() for j in range(cols.count())] == [u.label for u in a.units]
    rows = page.locator("table.token-map tbody th.tok.row")
    assert [rows.nth(i).text_content() for i in range(rows.count())] == gen.row_labels()
    cells = page.locator("table.token-map td.cell")
    assert cells.count() == gen.n_rows * gen.n_units
    blank = page.locator("table.token-map td.cell.nan")
    assert blank.count() == int((~gen.visible()).sum())  # tokens a row cannot see
    assert page.evaluate(
        """() => [...document.querySelectorAll("td.cell.nan")].every(
            (c) => c.textContent === "" && getComputedStyle(c).backgroundColor === "rgba(0, 0, 0, 0)")"""
    )
    shaded = page.locator("table.token-map td.cell:not(.nan)").first
    assert shaded.evaluate("(c) => getComputedStyle(c).backgroundColor") != "rgba(0, 0, 0, 0)"
    assert RECORD_ID in page.locator("dd.meta-dataset").inner_text()
    assert page.locator("main img").count() == 0
    assert page.locator("ol.ranking li.rank-item").count() == min(20, len(a.units))
    _inert(page)


def test_image_run_is_its_overlay_and_label_as_text(page, kinds_site):
    url, _, _, ids = kinds_site
    _open(page, f"{url}#/run/{ids['img']}")
    page.wait_for_selector(".image-pair img.overlay")
    assert page.locator(".class-label").inner_text() == LABELS[1]
    assert RECORD_ID in page.locator("dd.meta-dataset").inner_text()
    imgs = page.locator("main img")
    assert imgs.count() == 2
    for i in range(2):
        assert imgs.nth(i).get_attribute("src").startswith("data:image/png;base64,")
        assert imgs.nth(i).evaluate("(im) => im.complete && im.naturalWidth") == 32
    _inert(page)
    # the list shows the label as text too
    _open(page, url)
    assert LABELS[1] in page.locator(f"tr[data-id='{ids['img']}']").inner_text()
    _inert(page)


@pytest.fixture(scope="module")
def detection_site(tmp_path_factory):
    """A server over one detection run (the toy square detector) whose class name is markup."""
    from attribkit import attribute
    from attribkit.testing import toy_detection_task

    store = store_mod.open(tmp_path_factory.mktemp("viewer-detection") / "runs.db")
    task = toy_detection_task()
    run = attribute(task, "drise", n_masks=16, seed=0)
    run.target["class"] = "<b>square</b>"
    run_id = store.put(run)
    with BackgroundServer(create_app(store)) as server:
        yield server.url, run_id
    store.close()


def test_detection_run_draws_its_box_over_the_map_and_the_image(page, detection_site):
    url, run_id = detection_site
    _open(page, f"{url}#/run/{run_id}")
    page.wait_for_selector(".image-pair .det-box")
    assert page.locator(".class-label").inner_text() == "<b>square</b>"  # text, not markup
    caption = page.locator(".image-class").inner_text()
    assert caption.startswith("Explained detection:") and "box [8, 8, 24, 24]" in caption
    boxes = page.locator(".det-box")
    assert boxes.count() == 2  # on the map and on the image
    for i in range(2):  # the square sits at 8..24 of a 32-px image: a quarter to three quarters
        frac = boxes.nth(i).evaluate(
            """(b) => { const r = b.getBoundingClientRect();
                        const im = b.parentNode.querySelector("img").getBoundingClientRect();
                        return [(r.left - im.left) / im.width, (r.top - im.top) / im.height,
                                r.width / im.width, r.height / im.height]; }"""
        )
        assert all(abs(f - w) < 0.03 for f, w in zip(frac, (0.25, 0.25, 0.5, 0.5), strict=True))
    _inert(page)


HOSTILE_SOURCE = '<img src=x onerror="window.__pwned=1">Ada lives in Oslo.'


@pytest.fixture(scope="module")
def program_site(tmp_path_factory):
    """A server over one GenerationPrograms sentence (an extractive run of a nested program)
    whose cited source is markup."""
    from attribkit.applied.programs import execute, parse_program, program_attribution
    from attribkit.core.units import TextUnits

    store = store_mod.open(tmp_path_factory.mktemp("viewer-program") / "runs.db")
    units = TextUnits.passages(
        [HOSTILE_SOURCE, "Ada works as a baker, mostly at night.", "Oslo is in Norway.", "Noise."],
        sep=" ",
    )
    program = parse_program("- fusion(compression(S2), S3)\n- S1", n_units=len(units))
    run = execute(program, units)
    ids = [store.put(a) for a in program_attribution(program, units, run)]
    with BackgroundServer(create_app(store)) as server:
        yield server.url, ids
    store.close()


def test_program_run_is_its_node_tree_with_cited_sentences(page, program_site):
    url, ids = program_site
    _open(page, f"{url}#/run/{ids[0]}")
    page.wait_for_selector(".program-tree")
    assert page.locator(".program-sentence").inner_text() == (
        "Ada works as a baker; Oslo is in Norway."
    )
    calls = page.locator(".program-call")
    assert [calls.nth(i).inner_text() for i in range(calls.count())] == [
        "fusion(compression(S2), S3)",
        "compression(S2)",
    ]
    # the root cites S2 and S3; the inner call S2 only; the context shades exactly those two
    root = page.locator(".program-tree > .program-node > .program-cites .program-cite")
    assert [root.nth(i).get_attribute("data-unit") for i in range(root.count())] == ["1", "2"]
    assert page.locator(".unit[data-unit]").count() == 4
    _open(page, f"{url}#/run/{ids[1]}")  # a bare copy of the hostile sentence: shown as text
    page.wait_for_selector(".program-tree")
    assert page.locator(".program-call").inner_text() == "S1"
    assert page.locator(".program-cite").inner_text() == "S1 " + HOSTILE_SOURCE
    _inert(page)


@pytest.fixture(scope="module")
def neurons_site(tmp_path_factory, tiny_lm):
    """A server over one FFN-neuron attribution (DLA) on the tiny Llama (2 layers × 64)."""
    from attribkit.internals.neurons import neuron_attribution

    store = store_mod.open(tmp_path_factory.mktemp("viewer-neurons") / "runs.db")
    run = neuron_attribution(tiny_lm, "the cat sat on the", " mat", score="dla")
    run_id = store.put(run)
    with BackgroundServer(create_app(store)) as server:
        yield server.url, run_id, run
    store.close()


def test_neuron_run_is_a_layer_by_neuron_map_with_its_top_units(page, neurons_site):
    url, run_id, run = neurons_site
    _open(page, f"{url}#/run/{run_id}")
    page.wait_for_selector("img.neuron-map")
    img = page.locator("img.neuron-map")
    assert img.evaluate("(im) => [im.naturalHeight, im.naturalWidth]") == [2, 64]
    rows = page.locator("tr.neuron-row")
    assert rows.count() == 20
    best = [int(x) for x in rows.first.locator("td").all_inner_texts()[1:3]]
    assert best == run.extras["top"][0][:2]
    assert page.locator(".neuron-target").inner_text().startswith("Explained: log p(' mat')")
    _inert(page)


def test_compare_two_image_runs(page, kinds_site):
    url, _, _, ids = kinds_site
    _open(page, f"{url}#/compare/{ids['img']}/{ids['img_sal']}")
    page.wait_for_selector(".metric[data-metric='spearman']")
    assert page.locator(".side img.overlay").count() == 2
    assert page.locator(".class-label").first.inner_text() == LABELS[1]
    assert page.locator("p.warn").count() == 0  # same image, same class
    _inert(page)


# --- provenance runs -----------------------------------------------------------------------------

PROV_SOURCE = '<img src=x onerror="window.__pwned=6">'
PROV_TEXT = (
    "Whilst the people upon the union hence moreover. "
    "Upon the law <script>window.__pwned=7</script> thereby whilst hence the state. "
    "While on the power so thus also the law."
)


@pytest.fixture(scope="module")
def provenance_site(tmp_path_factory):
    """A server over two provenance runs on one text: one rejected as "unknown" (threshold 1),
    one accepted that explains the source with a hostile name."""
    import numpy as np
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    from attribkit import attribute
    from attribkit.tasks.provenance import ProvenanceTask

    common = ["the", "people", "state", "power", "union", "law", "of", "and"]
    rng = np.random.default_rng(0)
    texts, sources = [], []
    for name, words in (("austen", ["whilst", "upon", "hence"]), (PROV_SOURCE, ["while", "so"])):
        for _ in range(20):
            texts.append(" ".join(rng.choice(common + words + words, size=24)))
            sources.append(name)
    model = make_pipeline(CountVectorizer(), LogisticRegression(max_iter=1000)).fit(texts, sources)
    store = store_mod.open(tmp_path_factory.mktemp("viewer-provenance") / "runs.db")
    rejected = ProvenanceTask(PROV_TEXT, model, threshold=1.0)
    accepted = ProvenanceTask(PROV_TEXT, model, source=PROV_SOURCE, threshold=0.5)
    ids = {
        "unknown": store.put(attribute(rejected, "loo")),
        "hostile": store.put(accepted.attribute()),
    }
    from attribkit.core.attribution import Attribution
    from attribkit.core.units import TextUnits

    words = TextUnits.words(PROV_TEXT)  # a machine-text detector's result: its statistic
    machine = Attribution(
        units=list(words),
        scores=np.linspace(-1.0, 1.0, len(words)),
        method="log_perplexity",
        target={"kind": "machine_text", "description": "mean token log-probability"},
        input=words.to_dict(),
        extras={"statistic": -2.345678},
        task="machine_text",
    )
    ids["machine"] = store.put(machine)
    image = np.zeros((32, 32, 3), np.float32)
    image[:, 16:] = 1.0  # an image's source: a mean-brightness "model" decides, patches explain
    brightness = make_pipeline(
        FunctionTransformer(lambda xs: np.asarray(xs).reshape(len(xs), -1).mean(1, keepdims=True)),
        LogisticRegression(),
    ).fit(np.stack([image * 0.2, image * 0.2 + 0.6]), ["dark", "bright"])
    ids["image"] = store.put(attribute(ProvenanceTask(image, brightness, patch=16), "loo"))
    with BackgroundServer(create_app(store)) as server:
        yield server.url, store, ids
    store.close()


def test_provenance_run_shows_source_bars_and_the_unknown_row(page, provenance_site):
    url, store, ids = provenance_site
    _open(page, f"{url}#/run/{ids['unknown']}")
    page.wait_for_selector(".view-provenance table.source-dist")
    view = page.locator(".view-provenance")
    target = store.get(ids["unknown"]).attribution.target
    rows = view.locator("table.source-dist tr.source-row")
    names = [rows.nth(i).get_attribute("data-source") for i in range(rows.count())]
    assert names == sorted(target["scores"], key=lambda s: -target["scores"][s])
    assert PROV_SOURCE in names  # the hostile name, as an attribute value and as text
    shown = [float(t) for t in view.locator("td.source-p").all_inner_texts()]
    assert shown == [round(target["scores"][n], 3) for n in names]
    widths = page.evaluate(
        """() => [...document.querySelectorAll("table.source-dist .fill")].map(
            (f) => f.getBoundingClientRect().width / f.parentElement.getBoundingClientRect().width)"""
    )
    assert widths == pytest.approx([target["scores"][n] for n in names], abs=0.02)
    assert view.locator("tr.source-predicted").count() == 0  # the rule fired: no known source
    unknown = view.locator("tr.unknown-row")
    assert unknown.get_attribute("data-fired") == "1"
    assert "fired" in unknown.inner_text() and "→ unknown" in unknown.inner_text()
    assert view.locator(".prov-prediction").inner_text() == "unknown"
    assert view.locator(".prov-source").inner_text() == "austen"
    units = view.locator(".source .unit[data-unit]")
    assert units.count() == 3
    assert "<script>window.__pwned=7</script>" in view.locator(".source").inner_text()
    shaded = page.evaluate(
        """() => [...document.querySelectorAll(".view-provenance .source .unit")].map(
            (u) => getComputedStyle(u).backgroundColor)"""
    )
    assert all(c != "rgba(0, 0, 0, 0)" for c in shaded)
    _inert(page)

    _open(page, f"{url}#/run/{ids['hostile']}")
    page.wait_for_selector(".view-provenance table.source-dist")
    assert page.locator(".prov-source").inner_text() == PROV_SOURCE
    predicted = page.locator("tr.source-predicted")
    assert predicted.get_attribute("data-source") == "austen"
    assert page.locator("tr.source-explained").get_attribute("data-source") == PROV_SOURCE
    unknown = page.locator("tr.unknown-row")
    assert unknown.get_attribute("data-fired") == "0" and "not fired" in unknown.inner_text()
    assert page.locator("main img").count() == 0
    _inert(page)

    _open(page, f"{url}#/run/{ids['machine']}")
    page.wait_for_selector(".source .unit[data-unit]")
    assert page.locator("dd.meta-statistic").inner_text() == (
        "detector statistic: -2.346, higher = more machine-like"
    )
    _inert(page)


def test_image_provenance_run_draws_its_patches_over_the_image(page, provenance_site):
    url, _, ids = provenance_site
    _open(page, f"{url}#/run/{ids['image']}")
    page.wait_for_selector(".view-provenance table.source-dist")
    assert page.locator(".view-provenance .image-wrap img").count() == 1
    assert page.locator(".view-provenance .image-wrap .patch").count() == 4
    _inert(page)


# --- tabular and time-series runs ----------------------------------------------------------------

TAB_NAMES = [
    "income",
    '<img src=x onerror="window.__pwned=8">',
    "age",
    "<script>window.__pwned=9</script>",
]
SERIES_CHANNEL = '<img src=x onerror="window.__pwned=10">'


@pytest.fixture(scope="module")
def tabular_series_site(tmp_path_factory):
    """A server over a KernelSHAP run carrying responsiveness (extras["responsiveness"]), a
    responsiveness run and a time-series occlusion run, with markup in feature and channel
    names."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from attribkit import attribute
    from attribkit.methods.tabular.responsiveness import responsiveness
    from attribkit.models.actions import ActionSet
    from attribkit.tasks.tabular import TabularTask
    from attribkit.tasks.timeseries import TimeSeriesTask

    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 4))
    model = LogisticRegression().fit(X, (X[:, 0] + X[:, 1] - X[:, 3] > 0).astype(int))
    row = X[model.predict(X) == 0][0]
    rules = {"actionable": True, "direction": "both", "lb": -6, "ub": 6}
    actions = ActionSet.from_dict({"income": rules, TAB_NAMES[1]: rules}, TAB_NAMES)
    resp = responsiveness(model, row, actions, target=1, feature_names=TAB_NAMES)[0]
    shap = attribute(TabularTask(model, row, feature_names=TAB_NAMES, background=X, target=1),
                     "kernel_shap")  # fmt: skip
    shap.extras["responsiveness"] = {
        n: float(s) for n, s in zip(TAB_NAMES, resp.vector, strict=True)
    }
    shap.extras["fixed"] = resp.extras["fixed"]

    def series_model(batch):
        s = np.asarray(batch)[:, 4:8, 0].sum(axis=1)
        return np.stack([s, -s], axis=1)

    x = rng.normal(size=(16, 2))
    task = TimeSeriesTask(series_model, x, channel_names=[SERIES_CHANNEL, "b"], target=0)
    store = store_mod.open(tmp_path_factory.mktemp("viewer-tabular-series") / "runs.db")
    ids = {"shap": store.put(shap), "resp": store.put(resp)}
    ids["series"] = store.put(attribute(task, "occlusion"))
    with BackgroundServer(create_app(store)) as server:
        yield server.url, store, ids
    store.close()


def test_tabular_run_is_signed_bars_with_responsiveness_marks(page, tabular_series_site):
    url, store, ids = tabular_series_site
    _open(page, f"{url}#/run/{ids['shap']}")
    page.wait_for_selector(".view-tabular .tab-feature")
    a = store.get(ids["shap"]).attribution
    rows = page.locator(".tab-feature")
    assert rows.count() == 4
    names = [rows.nth(i).locator(".feature-name").text_content() for i in range(4)]
    order = sorted(range(4), key=lambda i: (-abs(a.vector[i]), i))  # by |score|
    assert names == [TAB_NAMES[i] for i in order]
    resp = a.extras["responsiveness"]
    for i in range(4):
        name = names[i]
        assert rows.nth(i).get_attribute("data-responsive") == ("1" if resp[name] > 0 else "0")
    assert page.locator(".resp-mark.resp-yes").count() == sum(v > 0 for v in resp.values())
    assert page.locator(".resp-mark.resp-no").count() == sum(v <= 0 for v in resp.values())
    # signed bars: a negative score's fill ends at the axis from the left
    signs = page.evaluate(
        """() => [...document.querySelectorAll(".tab-feature .fill")].map(
            (f) => f.classList.contains("neg"))"""
    )
    assert signs == [bool(a.vector[i] < 0) for i in order]
    assert page.locator(".recourse-note").get_attribute("data-fixed") == (
        "1" if a.extras["fixed"] else "0"
    )
    _inert(page)

    _open(page, f"{url}#/run/{ids['resp']}")
    page.wait_for_selector(".view-tabular .tab-feature")
    assert page.locator(".resp-mark.resp-immutable").count() == 2  # age and the script name
    _inert(page)


def test_series_run_is_lines_over_the_shaded_map(page, tabular_series_site):
    import numpy as np

    from attribkit.tasks.timeseries import series_map

    url, store, ids = tabular_series_site
    _open(page, f"{url}#/run/{ids['series']}")
    page.wait_for_selector(".view-timeseries svg.series-svg")
    m = series_map(store.get(ids["series"]).attribution)
    charts = page.locator(".series-chart")
    assert charts.count() == 2
    assert charts.nth(0).locator(".series-name").inner_text() == SERIES_CHANNEL
    for j in range(2):
        shades = charts.nth(j).locator("rect.shade")
        assert shades.count() == int(np.count_nonzero(m[:, j]))
        assert charts.nth(j).locator("path.series-line").count() == 1
    first = charts.nth(0).locator("rect.shade")
    steps = [int(first.nth(k).get_attribute("data-step")) for k in range(first.count())]
    assert steps == [int(t) for t in np.nonzero(m[:, 0])[0]]
    box = page.locator("svg.series-svg").first.bounding_box()
    assert box["width"] > 300 and box["height"] > 60
    assert page.locator("ol.ranking li.rank-item").count() == 20
    _inert(page)
