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
