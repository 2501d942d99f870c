"""``attribkit prune-prompt`` and ``attribkit programs`` on the tiny random Llama saved to disk
(behaviour of the commands, not of the model): JSON that matches the library, the pruned
template written out, clear errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from attribkit.cli import app

runner = CliRunner()
TEMPLATE = "Decide.\nReview: {input}\nSentiment:"
ROWS = [
    {"input": "The soup was cold, but the bread was warm.", "label": "pos"},
    {"input": "The room was clean, but the bed was awful.", "label": "neg"},
    {"text": "The staff was rude, but the view was lovely.", "label": "pos"},
]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("prompts")
    (root / "tpl.txt").write_text(TEMPLATE)
    (root / "data.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    (root / "bad.jsonl").write_text('{"input": "x", "label": "pos"}\n{"label": "neg"}\n')
    (root / "ctx.txt").write_text(
        "Ada lives in Oslo.\n\nAda works as a baker.\n\nThe sea is cold in March."
    )
    return {"root": root}


def _prune(files: dict[str, Path], model: Path, *args: str) -> object:
    root = files["root"]
    return runner.invoke(
        app,
        ["prune-prompt", "--template", str(root / "tpl.txt"), "--data", str(root / "data.jsonl"),
         "--model", str(model), *args],
    )  # fmt: skip


def test_random_pruning_json_and_the_written_template(files, tiny_model_dir) -> None:
    out_file = files["root"] / "pruned.txt"
    res = _prune(files, tiny_model_dir, "--method", "random", "--remove", "3", "--json",
                 "--out", str(out_file))  # fmt: skip
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["method"] == "random_prune" and d["n_units"] - d["n_kept"] == 3
    assert "{input}" in d["prompt"] and out_file.read_text() == d["prompt"]
    # two fitness calls (full and pruned prompt) of 3 examples each
    assert d["fitness_calls"] == 2 and d["cost"]["forward_passes"] == 6
    assert d["params"]["seed"] == 0 and d["kept"].count("0") == 3


def test_tapruning_respects_the_budget(files, tiny_model_dir) -> None:
    res = _prune(files, tiny_model_dir, "--budget", "4", "--fitness", "margin", "--json")
    if res.exit_code != 0:  # a random model can give a non-positive margin: a clear error
        assert "fitness" in res.output and "Traceback" not in res.output
        return
    d = json.loads(res.stdout)
    assert d["method"] == "tapruning" and d["fitness_calls"] <= 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "loo"], "--remove"),
        (["--method", "bogus"], "unknown --method"),
        (["--verbalizers", "{not json"], "JSON object"),
    ],
)
def test_bad_options_are_clear_errors(files, tiny_model_dir, args, message) -> None:
    res = _prune(files, tiny_model_dir, *args)
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output


def test_a_bad_data_line_is_named(files, tiny_model_dir) -> None:
    root = files["root"]
    res = runner.invoke(app, ["prune-prompt", "--template", str(root / "tpl.txt"),
                              "--data", str(root / "bad.jsonl"), "--model", str(tiny_model_dir)])  # fmt: skip
    assert res.exit_code == 2 and "bad.jsonl:2" in res.output


def test_programs_json_cites_context_sentences(files, tiny_model_dir) -> None:
    root = files["root"]
    res = runner.invoke(
        app,
        ["programs", "--context", str(root / "ctx.txt"), "--query", "Where does Ada live?",
         "--response", "Ada lives in Oslo. She bakes.", "--model", str(tiny_model_dir),
         "--execute", "extractive", "--json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert len(d["attributions"]) == 2  # one per response sentence
    for a in d["attributions"]:
        assert a["task"] == "program" and 1 <= sum(s > 0 for s in a["scores"]) <= 3
    assert d["run"]["backend"] == "extractive" and d["cited_response"].count("[") >= 2
    assert d["cost"]["forward_passes"] > 0
