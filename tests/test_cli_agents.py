"""`attribkit agents`: one log (decision, JSON contract), a folder with --evaluate (official
prediction file, baselines), errors, and no log text in anything printed."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import attribkit.models
from attribkit.cli import app

runner = CliRunner()
SECRET = "ZQX-SECRET-7731"  # planted in the log text: must never be printed


def _write_log(path, mistake_step: int = 2, n: int = 5) -> None:
    agents = ["User", "Planner", "Searcher", "Verifier", "Planner", "Searcher"]
    history = [
        {"name": agents[i % len(agents)], "role": "assistant", "content": f"Turn {i}: {SECRET}."}
        for i in range(n)
    ]
    path.write_text(
        json.dumps(
            {
                "question": f"A question {SECRET}?",
                "ground_truth": SECRET,
                "history": history,
                "mistake_agent": agents[mistake_step % len(agents)],
                "mistake_step": str(mistake_step),
            }
        )
    )


@pytest.fixture
def use_tiny(tiny_lm, monkeypatch):
    monkeypatch.setattr(attribkit.models, "load", lambda name="smollm2", **kw: tiny_lm)


def test_one_log_json_contract(tmp_path, use_tiny):
    path = tmp_path / "3.json"
    _write_log(path)
    result = runner.invoke(app, ["agents", str(path), "--method", "loo", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["id"] == "3.json" and out["method"] == "loo"
    assert len(out["units"]) == len(out["scores"]) == 4  # the last turn is the outcome
    assert out["units"][2]["text"] == "Step 2 - Searcher"
    assert out["decision"]["step"] in range(4) and out["gold"] == {"agent": "Searcher", "step": 2}
    assert set(out["agent_scores"]) == {"User", "Planner", "Searcher", "Verifier"}
    assert out["model_calls"] == 5 and out["truncation"] is None
    assert SECRET not in result.output


def test_max_tokens_cuts_the_turns_to_fit(tmp_path, use_tiny):
    path = tmp_path / "3.json"
    _write_log(path)
    args = ["agents", str(path), "--method", "loo", "--json", "--max-tokens"]
    out = json.loads(runner.invoke(app, [*args, "window"]).stdout)
    assert out["truncation"] is None  # fits the window: untouched
    result = runner.invoke(app, [*args, "200"])
    assert result.exit_code == 0, result.output
    cut = json.loads(result.stdout)["truncation"]
    assert cut["max_tokens"] == 200 and cut["tokens"] <= 200 and cut["turns_cut"] == 5
    r = runner.invoke(app, [*args, "lots"])
    assert r.exit_code == 2 and "--max-tokens takes a number of tokens or 'window'" in r.output


def test_evaluate_a_folder_writes_official_predictions(tmp_path, use_tiny):
    logs = tmp_path / "logs"
    logs.mkdir()
    for i in range(6):
        _write_log(logs / f"{i}.json", mistake_step=1 + i % 3)
    pred = tmp_path / "pred.txt"
    args = ["agents", str(logs), "--method", "loo", "--evaluate", "--predictions", str(pred)]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["logs"] == 6 and report["failed"] == []
    for row in ("loo", "random", "most_turns", "majority (5-fold)", "majority step (5-fold)"):
        for scoring in ("exact", "official"):
            assert 0 <= report[row][scoring]["metrics"]["agent"]["mean"] <= 1
    text = pred.read_text()
    assert text.count("Prediction for") == 6 and "Agent Name:" in text
    assert SECRET not in result.output
    plain = runner.invoke(app, args)
    assert plain.exit_code == 0 and "official" in plain.stdout and SECRET not in plain.output


def test_dtype_reaches_the_loader(tmp_path, tiny_lm, monkeypatch):
    seen: dict = {}
    monkeypatch.setattr(
        attribkit.models, "load", lambda name="smollm2", **kw: seen.update(kw) or tiny_lm
    )
    path = tmp_path / "3.json"
    _write_log(path)
    result = runner.invoke(app, ["agents", str(path), "--method", "loo", "--dtype", "bfloat16"])
    assert result.exit_code == 0, result.output
    assert seen["dtype"] == "bfloat16"


def test_unknown_dtype_is_a_clear_error(tmp_path):
    path = tmp_path / "3.json"
    _write_log(path)
    result = runner.invoke(app, ["agents", str(path), "--dtype", "float8"])
    assert result.exit_code != 0
    assert "unknown dtype 'float8'" in result.output


def test_errors(tmp_path, use_tiny):
    path = tmp_path / "1.json"
    _write_log(path)
    r = runner.invoke(app, ["agents", str(tmp_path), "--method", "loo"])
    assert r.exit_code == 2 and "--evaluate" in r.output
    r = runner.invoke(app, ["agents", str(path), "--evaluate"])
    assert r.exit_code == 2 and "folder" in r.output
    r = runner.invoke(app, ["agents", str(path), "--judge-url", "http://127.0.0.1:9"])
    assert r.exit_code == 2 and "--judge-model" in r.output
    (tmp_path / "bad.json").write_text('{"nothing": 1}')
    r = runner.invoke(app, ["agents", str(tmp_path / "bad.json"), "--method", "loo"])
    assert r.exit_code == 2 and "unknown log format" in r.output
