"""``attribkit neurons`` on the tiny random Llama saved to disk: the JSON matches the library,
text output lists the top units, clear errors for a multi-token target or a bad score."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from attribkit.cli import app
from attribkit.internals.neurons import neuron_attribution
from attribkit.models import load

runner = CliRunner()
PROMPT = "the cat sat on the"


def test_json_matches_the_library(tiny_model_dir) -> None:
    res = runner.invoke(app, ["neurons", "--prompt", PROMPT, "--target", " mat", "--model",
                              str(tiny_model_dir), "--top", "5", "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    a = neuron_attribution(load(str(tiny_model_dir)), PROMPT, " mat", score="dla")
    assert d["shape"] == [2, 64] and d["method"] == a.method and len(d["top"]) == 5
    for row, want in zip(d["top"], a.extras["top"][:5], strict=True):
        assert [row["layer"], row["unit"]] == want[:2]
        assert row["score"] == pytest.approx(want[2], abs=1e-6)
    assert d["model_calls"] == 1


def test_text_lists_heads(tiny_model_dir) -> None:
    res = runner.invoke(app, ["neurons", "--prompt", PROMPT, "--target", " mat", "--kind",
                              "heads", "--model", str(tiny_model_dir), "--top", "3"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert res.stdout.count(" head ") == 3 and "layers ×" in res.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--target", " mat sat dog"], "token"), (["--target", " mat", "--score", "x"], "score")],
)
def test_bad_input_is_a_clear_error(tiny_model_dir, args, message) -> None:
    res = runner.invoke(app, ["neurons", "--prompt", PROMPT, "--model", str(tiny_model_dir), *args])
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output
