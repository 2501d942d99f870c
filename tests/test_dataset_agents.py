"""run-dataset --task agents: record schema (a log file or inline turns), every record checked
before any model work, each record stored once with ids, agents and steps only (never a turn's
text), a rerun skips them, a killed run resumes. Hand-written logs only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from attribkit import store as run_store
from attribkit.core.errors import InputError
from attribkit.dataset import read_records, run_dataset
from attribkit.testing import tiny_language_model

TURNS = [
    {"agent": "User", "content": "Find the cheapest of three tickets: 12, 9 and 15 euros."},
    {"agent": "Planner", "content": "Searcher, list the prices."},
    {"agent": "Searcher", "content": "The prices are 12, 19 and 15 euros."},
    {"agent": "Verifier", "content": "The minimum of 12, 19 and 15 is 12."},
    {"agent": "Planner", "content": "The cheapest ticket costs 12 euros."},
]
TEXTS = [t["content"] for t in TURNS] + ["Which ticket is cheapest?", "9 euros"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_log(path: Path) -> Path:
    """A Who&When-style (Algorithm-Generated) log written by hand."""
    path.parent.mkdir(parents=True, exist_ok=True)
    history = [{"role": "assistant", "name": t["agent"], "content": t["content"]} for t in TURNS]
    log = {
        "question": "Which ticket is cheapest?",
        "ground_truth": "9 euros",
        "mistake_agent": "Searcher",
        "mistake_step": "2",
        "history": history,
    }
    path.write_text(json.dumps(log), encoding="utf-8")
    return path


def rows(tmp_path: Path) -> list[dict]:
    write_log(tmp_path / "logs" / "7.json")
    return [
        {"log": "logs/7.json", "id": "seven"},
        {"turns": TURNS[:4], "mistake_agent": "Searcher", "mistake_step": 2},
        {"log": "logs/7.json", "outcome": "gold", "max_turn_chars": 20},
    ]


def test_agents_records(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", rows(tmp_path))
    records = read_records(path, "agents")
    assert [r.task for r in records] == ["agents"] * 3
    assert records[0].key == "seven" and len({r.key for r in records}) == 3
    assert records[0].log_path == str((tmp_path / "logs" / "7.json").resolve())
    assert records[1].turns == tuple(TURNS[:4]) and records[1].log is None
    assert (records[2].outcome, records[2].max_turn_chars) == ("gold", 20)
    # the inputs stored with a run: ids, agents and steps, never text
    inputs = records[1].inputs()
    assert inputs["mistake_agent"] == "Searcher" and inputs["mistake_step"] == 2
    assert not any(t in json.dumps(inputs) for t in TEXTS)
    # a content key does not change when lines move
    moved = write_jsonl(tmp_path / "b.jsonl", rows(tmp_path)[::-1])
    assert {r.key for r in read_records(moved, "agents")} == {r.key for r in records}


BAD = {
    '{"id": "x"}': 'missing "log"',
    '{"log": "logs/7.json", "turns": []}': "not both",
    '{"log": "logs/7.json", "mistake_agent": "A"}': "carries its own",
    '{"log": "nowhere.json"}': "no log file at",
    '{"log": "notes.txt"}': "not valid JSON",
    '{"log": "odd.json"}': "unknown log format",
    '{"turns": "A: hi"}': '"turns" must be a list',
    '{"turns": []}': '"turns" is empty',
    '{"turns": [{"content": "hi"}, {"agent": "B", "content": "x"}]}': "turn 0 names no agent",
    '{"turns": [{"agent": "A", "content": "hi"}, {"agent": "B", "content": "x"}], '
    '"mistake_step": 5}': "out of range",
    '{"turns": [{"agent": "A", "content": "hi"}], "outcome": "final"}': "step 0",
    '{"turns": [{"agent": "A", "content": "a"}, {"agent": "B", "content": "b"}], '
    '"outcome": "gold"}': "ground truth",
    '{"log": "logs/7.json", "outcome": "the answer"}': '"outcome" must be',
    '{"log": "logs/7.json", "max_turn_chars": 0}': "max_turn_chars",
    '{"log": "logs/7.json", "max_tokens": "lots"}': '"max_tokens" must be a positive number',
    '{"log": "logs/7.json", "with_answer": "yes"}': "with_answer",
    '{"log": "logs/7.json", "query": "q"}': "unknown field",
}


@pytest.mark.parametrize("line,message", list(BAD.items()))
def test_bad_agents_lines_name_file_line_and_fix(tmp_path: Path, line: str, message: str):
    write_log(tmp_path / "logs" / "7.json")
    (tmp_path / "notes.txt").write_text("not json", encoding="utf-8")
    (tmp_path / "odd.json").write_text('{"messages": []}', encoding="utf-8")
    path = tmp_path / "bad.jsonl"
    path.write_text('{"log": "logs/7.json"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=message) as err:
        read_records(path, "agents")
    assert "bad.jsonl:2" in str(err.value)


def test_an_agents_record_under_another_task_is_named(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"turns": TURNS, "id": 1}])
    with pytest.raises(InputError, match="looks like an agents record: run with --task agents"):
        read_records(path, "context")


def test_every_record_is_checked_before_any_model_work(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "a.jsonl", [*rows(tmp_path), {"turns": [], "id": "bad"}])
    db = tmp_path / "runs.db"
    with pytest.raises(InputError, match=r"a\.jsonl:4"):
        run_dataset(data, db, task="agents", model=str(tmp_path / "no-model"), progress=False)
    assert not db.exists()  # nothing loaded, nothing opened
    with pytest.raises(InputError, match="unknown method 'grad_cam' for --task agents"):
        run_dataset(data, db, task="agents", method="grad_cam", progress=False)
    with pytest.raises(InputError, match="unknown units"):
        run_dataset(data, db, task="agents", units="sentences", progress=False)


def test_a_token_budget_cuts_the_turns_and_is_stored(tmp_path: Path) -> None:
    from attribkit.tasks.agents import AgentLog, AgentTask

    lm = tiny_language_model()
    log = write_log(tmp_path / "logs" / "7.json")
    whole = AgentTask(AgentLog.from_file(log), lm=lm)
    budget = lm.count_tokens(whole.prompt(), whole.response, chat=False) - 5
    data = write_jsonl(tmp_path / "a.jsonl", [{"log": "logs/7.json", "max_tokens": budget}])
    db = tmp_path / "runs.db"
    summary = run_dataset(data, db, task="agents", model=lm, progress=False)
    assert summary.stored == 1 and summary.failed == []
    with run_store.open(db) as runs:
        (run,) = runs.query(dataset="a.jsonl")
        assert run.inputs["max_tokens"] == budget
        cut = run.attribution.target["truncation"]
        assert cut["max_tokens"] == budget and cut["tokens"] <= budget and cut["turns_cut"] >= 1


def test_agents_run_stores_each_record_once_and_resumes(tmp_path: Path) -> None:
    lm = tiny_language_model()
    data = write_jsonl(tmp_path / "a.jsonl", rows(tmp_path))
    db = tmp_path / "runs.db"
    summary = run_dataset(data, db, task="agents", model=lm, progress=False)
    assert (summary.stored, summary.task, summary.method) == (3, "agents", "turn_loo")
    # turn_loo: n + 1 passes over the units (final outcome: 4 units; 3 with 3 turns before the
    # last; gold outcome: all 5 turns)
    assert summary.failed == [] and summary.model_calls == 5 + 4 + 6
    assert "(agents task)" in summary.describe()
    with run_store.open(db) as runs:
        stored = {r.key: r for r in runs.query(dataset="a.jsonl")}
        assert len(stored) == 3
        run = stored["seven"]
        assert (run.task, run.method) == ("agents", "turn_loo")
        a = run.attribution
        assert a.task == "agents" and [u.label for u in a.units][2] == "Step 2 - Searcher"
        assert set(a.extras["agent_scores"]) == {"User", "Planner", "Searcher", "Verifier"}
        assert set(a.extras["decision"]) == {"agent", "step", "reason"}
        assert run.inputs["log_id"] == "7.json" and run.inputs["n_turns"] == 5
        assert (run.inputs["mistake_agent"], run.inputs["mistake_step"]) == ("Searcher", 2)
        cut = next(r for r in stored.values() if r.inputs.get("max_turn_chars") == 20)
        assert cut.attribution.target["outcome"] == "gold"
        assert cut.attribution.target["truncation"]["max_turn_chars"] == 20
        assert len(cut.attribution.units) == 5
        inline = next(r for r in stored.values() if r.inputs["log"] is None)
        assert inline.inputs["n_turns"] == 4 and len(inline.attribution.units) == 3
        for r in stored.values():  # nothing of the logs' text is stored
            blob = json.dumps([r.inputs, r.data])
            assert not any(t in blob for t in TEXTS)
        from attribkit.viewer.server import agents_payload, view_kind

        assert view_kind(run) == "agents"
        gold = agents_payload(run.data, run.inputs)["gold"]
        assert gold == {"agent": "Searcher", "step": 2, "unit": 2}
    again = run_dataset(data, db, task="agents", model=lm, progress=False)
    assert (again.stored, again.skipped, again.model_calls) == (0, 3, 0)
    # another method: stored beside the first
    back = run_dataset(data, db, task="agents", model=lm, method="backtrace", progress=False)
    assert (back.stored, back.skipped, back.failed) == (3, 0, [])
    with run_store.open(db) as runs:
        assert {r.method for r in runs.query(dataset="a.jsonl")} == {"turn_loo", "backtrace"}
        assert {r.attribution.target["judge"] for r in runs.query()} == {"local:tiny"}


class ScriptedJudge:
    """Stands in for an endpoint judge: judge methods would ask it; here only its name shows."""

    name = "scripted-judge"


def test_a_given_judge_replaces_the_local_one(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "a.jsonl", rows(tmp_path)[:1])
    db = tmp_path / "runs.db"
    params = {"judge": ScriptedJudge()}
    summary = run_dataset(
        data, db, task="agents", model=tiny_language_model(), params=params, progress=False
    )
    assert (summary.stored, summary.failed) == (1, [])
    with run_store.open(db) as runs:
        (run,) = runs.query()
        assert run.attribution.target["judge"] == "scripted-judge"
        assert "judge" not in run.params  # a task option, not a method parameter


KILL_AFTER_FIRST = """
import os, signal, sys
from attribkit.dataset import runner
write = runner._write
def write_then_die(store, dataset, record, outcome, summary):
    write(store, dataset, record, outcome, summary)
    if summary.stored == 1:
        os.kill(os.getpid(), signal.SIGKILL)
runner._write = write_then_die
from attribkit.cli import app
app(sys.argv[1:], prog_name="attribkit")
"""


def test_killed_agents_run_resumes(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = write_jsonl(tmp_path / "a.jsonl", rows(tmp_path))
    db = tmp_path / "runs.db"
    cmd = [sys.executable, "-c", KILL_AFTER_FIRST, "run-dataset", "--task", "agents"]
    cmd += ["--input", str(data), "--store", str(db), "--model", str(tiny_model_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "1000"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with run_store.open(db) as runs:
        assert len(runs.query()) == 1
    summary = run_dataset(data, db, task="agents", model=str(tiny_model_dir), progress=False)
    assert (summary.stored, summary.skipped, summary.failed) == (2, 1, [])
    with run_store.open(db) as runs:
        keys = sorted(r.key for r in runs.query())
    assert keys == sorted(r.key for r in read_records(data, "agents"))


def test_a_judge_method_asks_the_local_judge(tmp_path: Path) -> None:
    short = [{"agent": a, "content": c} for a, c in (("A", "x 1"), ("B", "y 2"), ("A", "z 3"))]
    data = write_jsonl(tmp_path / "a.jsonl", [{"turns": short, "id": "s"}])
    db = tmp_path / "runs.db"
    lm = tiny_language_model()
    summary = run_dataset(data, db, task="agents", model=lm, method="step_by_step", progress=False)
    assert (summary.stored, summary.failed) == (1, [])
    with run_store.open(db) as runs:
        (run,) = runs.query()
        assert run.attribution.target["judge"] == "local:tiny"
        assert run.cost.judge_calls >= 1 and set(run.attribution.extras["decision"]) == {
            "agent",
            "step",
            "reason",
        }
