"""Token attribution heat map (console) and JSON for `attribkit tokens`."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from rich.console import Console

from attribkit.core.errors import InputError
from attribkit.tasks.generation import attribute_generation
from attribkit.viz.token_table import print_token_attribution, token_attribution_json


@pytest.fixture(scope="module")
def att(tiny_lm):
    return attribute_generation(
        tiny_lm, "the cat sat on the mat", "the cat", method="input_x_gradient"
    )


def _render(att, **kw) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=400, color_system="truecolor", force_terminal=True)
    print_token_attribution(att, console, **kw)
    return buf.getvalue()


def _plain(att, **kw) -> str:
    buf = io.StringIO()
    print_token_attribution(att, Console(file=buf, width=400, color_system=None), **kw)
    return buf.getvalue()


def test_heat_map(att):
    n_rows, n_cols = att.scores.shape
    text = _plain(att)
    assert "input_x_gradient" in text
    assert f"{n_rows} generated × {n_cols} input tokens" in text
    labels = att.target["row_labels"]
    assert all(label.strip() in text for label in labels)
    # every row's largest |score| shows as 100 or -100
    assert text.count("100") >= n_rows
    colored = _render(att)
    assert "\x1b[" in colored and "48;2;" in colored  # truecolor backgrounds


def test_heat_map_limits_and_nan(att):
    n_rows, n_cols = att.scores.shape
    text = _plain(att, max_rows=1, max_cols=2)
    assert f"{n_rows - 1} more generated tokens" in text
    assert f"{n_cols - 2} input tokens" in text
    # a row that cannot see a column leaves it blank
    full = _plain(att).splitlines()
    first = next(line for line in full if line.startswith("│"))
    cells = [c.strip() for c in first.strip("│").split("│")[1:]]
    assert cells == ["" if np.isnan(x) else cells[j] for j, x in enumerate(att.scores[0])]
    assert "" in cells and all(c.lstrip("-").isdigit() for c in cells if c)
    with pytest.raises(InputError):
        print_token_attribution(att, Console(file=io.StringIO()), max_rows=0)


def test_json(att):
    d = token_attribution_json(att)
    json.dumps(d, allow_nan=False)
    assert d["prompt"] == "the cat sat on the mat" and d["response"] == "the cat"
    assert d["method"] == "input_x_gradient"
    assert len(d["matrix"]) == len(d["row_labels"]) == att.scores.shape[0]
    assert len(d["columns"]) == len(d["matrix"][0]) == att.scores.shape[1]
    assert d["matrix"][0][-1] is None  # causal: the first row cannot see later tokens
    assert set(d["column_roles"]) == {"prompt", "response"}
    assert d["model_calls"] == att.cost.model_calls > 0
    assert d["seconds"] >= 0
    assert d["target"]["kind"] == "generation"
    ok = np.isfinite(att.scores)
    assert np.allclose(np.array(d["matrix"], dtype=float)[ok], att.scores[ok])
