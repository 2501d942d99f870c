"""`attribkit reasoning`: the --json contract and bad input, on the tiny model by path."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from attribkit.cli import app

runner = CliRunner()

HOSTILE = {
    "problem": "What is 2 + 3? <script>alert(1)</script>",
    "text": "First I add two and three. That gives five. <img src=x onerror=alert(1)> "
    "So the answer is five.",
    "answer": "5",
}


def write_trace(tmp_path, body=HOSTILE, name="trace.json"):
    path = tmp_path / name
    path.write_text(json.dumps(body), encoding="utf-8")
    return path


def test_reasoning_json_contract(tmp_path, tiny_model_dir):
    path = write_trace(tmp_path)
    html = tmp_path / "r.html"
    args = ["reasoning", str(path), "--model", str(tiny_model_dir), "--json", "--html", str(html)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)  # exactly one JSON object on stdout
    assert out["method"] == "forced_answer" and out["model"] == str(tiny_model_dir)
    assert out["answer"] == "5" and out["problem"] == HOSTILE["problem"]
    assert [u["index"] for u in out["units"]] == [0, 1, 2]
    for u in out["units"]:
        assert HOSTILE["text"][u["start"] : u["end"]] == u["text"]
    assert len(out["scores"]) == 3 and all(isinstance(s, float) for s in out["scores"])
    assert sorted(out["ranking"]) == [0, 1, 2]
    assert out["model_calls"] == 4 and out["seconds"] >= 0  # forced_answer: N + 1 passes
    assert "matrix" not in out
    assert html.is_file()


def test_reasoning_options_and_matrix(tmp_path, tiny_model_dir):
    path = write_trace(tmp_path)
    model = ["--model", str(tiny_model_dir)]
    options = ["--method", "suppression", "--max-sentences", "2", "--answer", "five", "--json"]
    result = runner.invoke(app, ["reasoning", str(path), *model, *options])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert len(out["units"]) == 2 and out["answer"] == "five"
    m = out["matrix"]
    assert len(m) == 2 and m[0] == [None, None] and m[1][1] is None
    assert isinstance(m[1][0], float)
    # a perturbation method, and the table output
    table = runner.invoke(app, ["reasoning", str(path), *model, "--method", "loo"])
    assert table.exit_code == 0, table.output
    assert "Problem:" in table.stdout and "<script>" in table.stdout


def test_reasoning_bad_input_exits_2(tmp_path, tiny_model_dir):
    model = ["--model", str(tiny_model_dir)]
    cases = [
        tmp_path / "missing.json",
        write_trace(tmp_path, name="bad.json").with_name("bad.json"),
    ]
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    cases.append(write_trace(tmp_path, {"problem": "p"}, "notext.json"))
    cases.append(write_trace(tmp_path, {**HOSTILE, "extra": 1}, "extra.json"))
    cases.append(write_trace(tmp_path, {"problem": "p", "text": "Some text here."}, "noans.json"))
    cases.append(tmp_path)  # a folder that is not a Thought Anchors problem folder
    for path in cases:
        result = runner.invoke(app, ["reasoning", str(path), *model])
        assert result.exit_code == 2, (path, result.output)
        assert "error:" in result.output and "Traceback" not in result.output
    good = write_trace(tmp_path)
    for extra in (["--max-sentences", "0"], ["--method", "nope"], ["--rollouts", "3"]):
        result = runner.invoke(app, ["reasoning", str(good), *model, *extra])
        assert result.exit_code == 2, (extra, result.output)
        assert "error:" in result.output


def test_rollouts_and_max_tokens_are_passed_only_when_given(tmp_path, tiny_model_dir, monkeypatch):
    """--rollouts/--max-tokens reach a method that takes them (as rollouts=/max_new_tokens=),
    and are left out when not given."""
    import numpy as np

    from attribkit.core import registry
    from attribkit.core.cost import measure

    seen: list[dict] = []

    def sampler(task, *, rollouts: int = 7, max_new_tokens: int = 9):
        seen.append({"rollouts": rollouts, "max_new_tokens": max_new_tokens})
        with measure(task.meter) as cost:
            pass
        params = {"rollouts": rollouts, "max_new_tokens": max_new_tokens}
        return task.result(np.arange(len(task.units), dtype=float), "toy_sampler", params, cost)

    spec = registry.MethodSpec("toy_sampler", sampler, "reasoning", "0", "a test", {}, False)
    monkeypatch.setitem(registry._REGISTRY, ("reasoning", "toy_sampler"), spec)
    base = ["reasoning", str(write_trace(tmp_path)), "--model", str(tiny_model_dir)]
    base += ["--method", "toy_sampler", "--json"]
    result = runner.invoke(app, [*base, "--rollouts", "3", "--max-tokens", "16"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["scores"] == [0.0, 1.0, 2.0]
    assert runner.invoke(app, base).exit_code == 0
    assert seen == [{"rollouts": 3, "max_new_tokens": 16}, {"rollouts": 7, "max_new_tokens": 9}]
