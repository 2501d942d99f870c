"""Rendering: self-contained, escaped HTML and the rich console table."""

from __future__ import annotations

import re

import numpy as np
from rich.console import Console

import attribkit
from attribkit.core.attribution import Attribution
from attribkit.core.cost import Cost
from attribkit.core.scorer import Scorer
from attribkit.core.units import FeatureUnits, TextUnits
from attribkit.viz.console import print_attribution
from attribkit.viz.html import attribution_html, save_html

HOSTILE = [
    "<script>alert(1)</script> The capital is Paris.",
    "Ignore this: <img src=x onerror=alert(1)>",
    'Quotes " onmouseover="alert(2)" and & ampersands.',
    "Plain passage about Lyon.",
]


def text_attribution() -> Attribution:
    units = TextUnits.passages(HOSTILE)
    scorer = Scorer(units, lambda xs: [float(x.count("Paris")) - 0.1 * x.count("&") for x in xs])
    scorer.target = "<script>alert('target')</script>"
    return attribkit.attribute(scorer, "loo")


def test_html_escapes_hostile_text():
    att = text_attribution()
    att.params = {"note": "<script>alert(3)</script>"}
    page = attribution_html(att, title="<img src=x onerror=alert(4)>")
    assert "<script" not in page.lower()
    assert "<img" not in page.lower()
    assert 'onmouseover="' not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "&lt;img src=x onerror=alert(4)&gt;" in page  # the title
    assert "&lt;script&gt;alert(&#x27;target&#x27;)&lt;/script&gt;" in page  # the target
    assert "onmouseover=&quot;alert(2)&quot;" in page
    assert "http://" not in page and "https://" not in page  # nothing fetched from the network
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")


def test_html_renders_every_text_unit_with_scores_and_ranks():
    att = text_attribution()
    page = attribution_html(att)
    spans = re.findall(r'<span class="u[^"]*" style="background:([^"]+)" title="([^"]+)"', page)
    assert len(spans) == len(att)
    tips = [t for _, t in spans]
    assert "unit 0 · score +1 · rank 1 of 4" in tips  # the Paris passage
    assert spans[0][0].startswith("rgba(230,85,13,")  # positive → orange-red
    assert spans[2][0].startswith("rgba(33,102,172,")  # negative (the "&" passage) → blue
    assert page.count("<tr title=") == len(att)
    assert "loo" in page and "forward" in page  # method and cost in the header


def test_html_feature_units_and_nan_scores(tmp_path):
    names = ["age", "<b>income</b>", "height"]
    scorer = Scorer(FeatureUnits([1.0, 2.0, 3.0], names=names), lambda xs: np.asarray(xs).sum(1))
    att = Attribution.from_scorer(scorer, np.array([0.5, np.nan, -2.0]), "m", {}, Cost())
    page = attribution_html(att)
    assert "Source" not in page  # no text view for features
    assert page.count("<tr title=") == 3
    assert "&lt;b&gt;income&lt;/b&gt;" in page and "<b>" not in page
    assert "not scored" in page and "n/a" in page
    all_nan = Attribution.from_scorer(scorer, np.full(3, np.nan), "m", {}, Cost())
    assert all_nan.to_html().count("<tr title=") == 3
    out = save_html(att, tmp_path / "sub" / "a.html")
    assert out.read_text(encoding="utf-8") == page


def test_html_text_with_nan_and_matrix_scores():
    units = TextUnits.words("alpha beta gamma")
    scorer = Scorer(units, lambda xs: [len(x) for x in xs])
    att = Attribution.from_scorer(
        scorer, np.array([[1.0, np.nan, 2.0], [0.5, np.nan, -1.0]]), "m", {}, Cost()
    )
    page = attribution_html(att)
    assert page.count('class="u nan"') == 1 and page.count('class="u"') == 2


def test_console_prints_table():
    att = text_attribution()
    console = Console(record=True, width=140)
    print_attribution(att, k=2, console=console)
    out = console.export_text()
    assert "loo" in out and "forward" in out
    assert "The capital is Paris." in out and "<script>alert(1)</script>" in out  # plain text
    assert "2 more" in out
    assert "█" in out


def test_console_features_markup_and_nan():
    names = ["[bold]x[/bold]", "y" * 200, "z"]
    scorer = Scorer(FeatureUnits([1.0, 2.0, 3.0], names=names), lambda xs: np.asarray(xs).sum(1))
    att = Attribution.from_scorer(scorer, np.array([1.0, -3.0, np.nan]), "m", {}, Cost())
    console = Console(record=True, width=120)
    print_attribution(att, console=console)
    out = console.export_text()
    assert "[bold]x[/bold]" in out  # labels are not parsed as rich markup
    assert "n/a" in out and "..." in out and "y" * 200 not in out


def test_html_shows_query_and_response_of_a_text_target_escaped():
    import attribkit as ak
    from attribkit.viz.html import attribution_html

    units = ak.TextUnits.sentences("One. Two.")
    target = {"description": "d", "query": "q <b>?</b>", "response": "r <script>x</script>"}
    page = attribution_html(ak.Attribution(list(units), [1.0, 0.0], "loo", target=target))
    assert "<dt>query</dt><dd>q &lt;b&gt;?&lt;/b&gt;</dd>" in page
    assert "r &lt;script&gt;x&lt;/script&gt;" in page and "<script>x" not in page


# --- notebook views (Attribution._repr_html_) ----------------------------------------------------

SAFE_TAGS = {"div", "span", "b", "table", "thead", "tbody", "tr", "th", "td", "figure", "img"}
SAFE_TAGS |= {"figcaption"}


class _Fragment:
    """Parses an HTML fragment: its tags with attributes, and its text."""

    def __init__(self, fragment: str) -> None:
        from html.parser import HTMLParser

        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        outer = self

        class Parser(HTMLParser):
            def handle_starttag(self, tag, attrs):
                outer.tags.append((tag, dict(attrs)))

            def handle_data(self, data):
                outer.text.append(data)

        Parser(convert_charrefs=True).feed(fragment)

    def check_inert(self) -> None:
        for tag, attrs in self.tags:
            assert tag in SAFE_TAGS, tag
            assert not any(name.startswith("on") for name in attrs), (tag, attrs)
            if tag == "img":
                assert attrs["src"].startswith("data:image/png;base64,")

    def count(self, tag: str) -> int:
        return sum(t == tag for t, _ in self.tags)

    def units(self) -> int:
        """Shaded units: spans with a unit's tooltip."""
        return sum(t == "span" and (a.get("title") or "").startswith("unit ") for t, a in self.tags)


def test_repr_html_of_a_context_result_escapes_its_text(tiny_lm):
    from attribkit.tasks.context import ContextTask

    task = ContextTask(tiny_lm, HOSTILE, "<b>query</b>?", "<i>answer</i>.")
    att = task.attribute("loo")
    assert att.task == "context"
    page = _Fragment(att._repr_html_())
    page.check_inert()
    text = "".join(page.text)
    assert "<b>query</b>?" in text and "<i>answer</i>." in text
    for passage in HOSTILE:
        assert passage in text
    assert page.units() == len(att)  # each unit shaded in the context


def test_repr_html_of_a_generation_result_is_a_token_map(tiny_lm):
    from attribkit.testing import toy_generation_task

    prompt = '<script>alert(1)</script> the cat <img src=x onerror="alert(2)">'
    task = toy_generation_task(prompt=prompt, response="the cat", lm=tiny_lm)
    att = attribkit.attribute(task, "occlusion")
    fragment = att._repr_html_()
    page = _Fragment(fragment)
    page.check_inert()
    text = "".join(page.text)
    assert prompt in text and "the cat" in text
    rows = [t for t, _ in page.tags if t == "tr"]
    assert len(rows) == 1 + task.n_rows  # the header, then one row per generated token
    cells = [a for t, a in page.tags if t == "td"]
    assert len(cells) == task.n_rows * task.n_units
    blank = [a for a in cells if "background" not in (a.get("style") or "")]
    assert len(blank) == int((~task.visible()).sum())  # tokens a row cannot see
    for label in task.row_labels():
        assert label in text


def test_repr_html_of_an_image_result_is_its_overlay():
    from attribkit.tasks.image import ImageTask
    from attribkit.testing import toy_image_task

    toy = toy_image_task()
    toy.model.labels = ["<script>alert(1)</script>", '<img src=x onerror="alert(2)">', "c"]
    att = attribkit.attribute(ImageTask(toy.model, toy.image, target=1), "grad_cam")
    page = _Fragment(att._repr_html_())
    page.check_inert()
    assert page.count("img") == 2  # the map over the image, the image
    assert '<img src=x onerror="alert(2)">' in "".join(page.text)


def test_repr_html_of_a_feature_result_is_signed_bars():
    names = ["<script>alert(1)</script>", "income", '<img src=x onerror="alert(2)">']
    units = FeatureUnits(np.array([1.0, -2.0, 0.5]), names=names)
    att = attribkit.attribute(Scorer(units, lambda xs: np.asarray(xs) @ [0.3, 1.0, 2.0]), "loo")
    assert att.task is None
    fragment = att._repr_html_()
    page = _Fragment(fragment)
    page.check_inert()
    text = "".join(page.text)
    for name in names:
        assert name in text
    bars = re.findall(r"left:([\d.]+)%;width:([\d.]+)%", fragment)
    assert len(bars) == 3
    lefts = [float(left) for left, _ in bars]
    assert lefts[1] < 50.0 and lefts[0] == lefts[2] == 50.0  # income lowers the score


def test_repr_html_of_a_bare_text_result_shades_its_units():
    att = text_attribution()
    page = _Fragment(att._repr_html_())
    page.check_inert()
    assert page.units() == len(att)
    assert "<script>alert('target')</script>" in "".join(page.text)
