"""The command line: `attribkit context` JSON contract and errors, `attribkit methods`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import attribkit.models
from attribkit.cli import app, read_context_file

runner = CliRunner()

CONTEXT = (
    "Tarvo Lindqvist keeps bees on a hill outside the city. He sells honey at the market.\n\n"
    "Tarvo Lindqvist's favourite colour is teal. The market opens at seven in the morning.\n"
)


@pytest.fixture
def use_session_model(smollm2, monkeypatch):
    monkeypatch.setattr(attribkit.models, "load", lambda name="smollm2", **kw: smollm2)


@pytest.mark.model
def test_context_json_contract(tmp_path, use_session_model):
    path = tmp_path / "ctx.txt"
    path.write_text(CONTEXT)
    result = runner.invoke(
        app,
        [
            "context",
            "--context",
            str(path),
            "--query",
            "What is Tarvo Lindqvist's favourite colour?",
            "--response",
            "His favourite colour is teal.",
            "--method",
            "loo",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)  # exactly one JSON object on stdout
    assert {"response", "method", "units", "scores", "ranking", "model_calls", "seconds"} <= set(
        out
    )
    assert out["method"] == "loo" and out["response"] == "His favourite colour is teal."
    assert len(out["units"]) == len(out["scores"]) == len(out["ranking"]) == 4
    for unit in out["units"]:
        assert CONTEXT[unit["start"] : unit["end"]] == unit["text"]
    assert out["ranking"][0] == 2 and out["model_calls"] == 5 and out["seconds"] > 0


@pytest.mark.model
def test_context_jsonl_passages_and_table(tmp_path, use_session_model):
    path = tmp_path / "ctx.jsonl"
    path.write_text('{"text": "Tarvo keeps bees."}\n\n{"text": "Tarvo likes teal."}\n')
    result = runner.invoke(
        app,
        [
            "context",
            "--context",
            str(path),
            "--query",
            "Which colour does Tarvo like?",
            "--response",
            "Teal.",
            "--units",
            "passages",
            "--span",
            "Teal",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Tarvo likes teal." in result.stdout and "Span:" in result.stdout


def test_context_file_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"txt": "no text key"}\n')
    with pytest.raises(Exception, match=r'bad.jsonl:2 has no "text"'):
        read_context_file(bad)
    bad.write_text('{"text": "ok"}\n{broken\n')
    with pytest.raises(Exception, match=r"bad.jsonl:2 is not valid JSON"):
        read_context_file(bad)
    plain = tmp_path / "plain.txt"
    plain.write_text("One. Two.\n\nThree.")
    assert read_context_file(plain) == "One. Two.\n\nThree."


def test_context_command_reports_bad_input_without_a_traceback(tmp_path, monkeypatch):
    monkeypatch.setattr(attribkit.models, "load", lambda name="smollm2", **kw: object())
    empty = tmp_path / "empty.txt"
    empty.write_text("   \n")
    result = runner.invoke(
        app, ["context", "--context", str(empty), "--query", "Why?", "--response", "x"]
    )
    assert result.exit_code == 2
    assert "context is empty" in result.output and "Traceback" not in result.output


def test_methods_lists_every_method_with_its_cost():
    result = runner.invoke(app, ["methods"])
    assert result.exit_code == 0
    for name in ("loo", "shapley", "kernel_shap", "integrated_gradients", "contextcite"):
        assert name in result.stdout


def test_runs_export_import_commands(tmp_path):
    import numpy as np

    from attribkit import store
    from attribkit.core.registry import attribute
    from attribkit.core.scorer import Scorer
    from attribkit.core.units import FeatureUnits

    scorer = Scorer(FeatureUnits([1.0, 2.0]), lambda xs: np.asarray(xs).sum(1), target="sum")
    with store.open(tmp_path / "a.db") as runs:
        run_id = runs.put(attribute(scorer, "loo"), model="adder")
    listed = runner.invoke(app, ["runs", "--store", str(tmp_path / "a.db")], terminal_width=200)
    assert listed.exit_code == 0 and run_id[:10] in listed.stdout and "adder" in listed.stdout
    out = tmp_path / "runs.jsonl"
    exported = runner.invoke(app, ["export", "--store", str(tmp_path / "a.db"), "--out", str(out)])
    assert exported.exit_code == 0 and "1 runs written" in exported.stdout
    imported = runner.invoke(
        app, ["import", "--store", str(tmp_path / "b.db"), "--input", str(out)]
    )
    assert imported.exit_code == 0 and "1 runs imported" in imported.stdout
    assert store.open(tmp_path / "b.db").get(run_id).model == "adder"
    missing = runner.invoke(app, ["runs", "--store", str(tmp_path / "none.db")])
    assert missing.exit_code == 2 and "no run store" in missing.stderr


def test_tokens_command_json_and_heat_map(tiny_lm, monkeypatch):
    monkeypatch.setattr(attribkit.models, "load", lambda name="smollm2", **kw: tiny_lm)
    args = ["tokens", "--prompt", "the cat sat on the mat", "--response", "the cat"]
    out = runner.invoke(app, [*args, "--method", "occlusion", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["method"] == "occlusion" and len(data["matrix"]) == len(data["row_labels"])
    table = runner.invoke(app, [*args, "--method", "input_x_gradient"], terminal_width=200)
    assert table.exit_code == 0 and "input_x_gradient" in table.stdout
    bad = runner.invoke(app, ["tokens", "--prompt", " ", "--response", "x"])
    assert bad.exit_code == 2 and "prompt is empty" in bad.stderr
