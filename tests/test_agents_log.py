"""Multi-agent logs as units (AgentLog, TurnUnits) and the agents task (AgentTask): loading both
Who&When formats, the serializers, turn removal that keeps step numbers, bad input, the
judge-free value through a real (tiny) model, and no log text in anything an Attribution keeps.

Every log here is hand-written; the shared Who&When logs are only loaded and checked (never
printed) by the last test, which skips without /work/shared."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import attribkit as ak
from attribkit.tasks.agents import (
    ANSWER_CUE,
    AgentLog,
    AgentTask,
    Turn,
    TurnUnits,
    agent_of_role,
    attribute_agents,
    decision_from_scores,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "who_and_when" / "Who&When"

QUESTION = "SECRETQ A crate holds 6 boxes of 7 pears each. How many pears are in the crate?"
TURNS = [
    {"agent": "Planner", "content": "SECRETT Plan: count boxes, count pears per box, multiply."},
    {"agent": "Coder", "content": "SECRETT boxes = 6; per_box = 8; print(boxes * per_box)"},
    {"agent": "Terminal", "content": "SECRETT 48"},
    {"agent": "Checker", "content": "SECRETT The product of 6 and 8 is 48, consistent."},
    {"agent": "Planner", "content": "SECRETT FINAL ANSWER: 48"},
]


def make_log(**kw: Any) -> AgentLog:
    args: dict[str, Any] = {
        "question": QUESTION,
        "ground_truth": "SECRETA 42",
        "mistake_agent": "Coder",
        "mistake_step": "1",
        "meta": {"id": "7.json"},
    }
    args.update(kw)
    return AgentLog(TURNS, **args)


def algorithm_generated() -> dict[str, Any]:
    """A hand-written log in Who&When's Algorithm-Generated layout."""
    return {
        "is_correct": False,
        "question": QUESTION,
        "question_ID": "toy-ag-1",
        "level": "1",
        "ground_truth": "SECRETA 42",
        "history": [
            {
                "content": "SECRETT Solve the pear puzzle.",
                "role": "assistant",
                "name": "Lead_Expert",
            },
            {"content": "SECRETT print(6 * 8)", "role": "user", "name": "Python_Expert"},
            {"content": "SECRETT 48", "role": "user", "name": "Computer_terminal"},
            {"content": "SECRETT Verified: 48.", "role": "user", "name": "Verification_Expert"},
        ],
        "mistake_agent": "Python_Expert",
        "mistake_step": "1",
        "mistake_reason": "SECRETR used 8 instead of 7",
        "system_prompt": {"Python_Expert": "SECRETT you write code"},
    }


def hand_crafted() -> dict[str, Any]:
    """A hand-written log in Who&When's Hand-Crafted (Magentic-One) layout."""
    return {
        "history": [
            {"content": "SECRETQ How many pears?", "role": "human"},
            {"content": "SECRETT We need the count.", "role": "Orchestrator (thought)"},
            {"content": "SECRETT Search the catalogue.", "role": "Orchestrator (-> WebSurfer)"},
            {"content": "SECRETT I found 8 per box.", "role": "WebSurfer"},
            {"content": "SECRETT Done.", "role": "Orchestrator (termination condition)"},
        ],
        "question": QUESTION,
        "ground_truth": "SECRETA 42",
        "is_corrected": False,
        "question_ID": "toy-hc-1",
        "mistake_agent": "WebSurfer",
        "mistake_step": "3",
        "mistake_reason": "SECRETR misread the page",
    }


def write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# --- logs -----------------------------------------------------------------------------------------
def test_log_from_turns_dicts_and_roles() -> None:
    log = AgentLog(
        [
            Turn("A", "one"),
            {"agent": "B", "content": "two"},
            {"name": "C", "role": "user", "content": "three"},
            {"role": "Orchestrator (-> WebSurfer)", "content": "four"},
            {"role": "A", "content": None},
        ],
        mistake_step="2",
    )
    assert [t.agent for t in log.turns] == ["A", "B", "C", "Orchestrator", "A"]
    assert log.turns[2].role == "user" and log.turns[3].role == "Orchestrator (-> WebSurfer)"
    assert log.turns[4].content == ""
    assert log.mistake_step == 2 and isinstance(log.mistake_step, int)
    assert len(log) == 5 and log.agents == ["A", "B", "C", "Orchestrator"]
    assert log.steps_of("A") == [0, 4] and log.steps_of("nobody") == []
    assert log.agent_groups() == {"A": [0, 4], "B": [1], "C": [2], "Orchestrator": [3]}
    assert agent_of_role("Orchestrator (thought)") == "Orchestrator"
    assert agent_of_role("WebSurfer") == "WebSurfer" and agent_of_role("human") == "human"


def test_loading_algorithm_generated(tmp_path: Path) -> None:
    log = AgentLog.from_file(write(tmp_path / "3.json", algorithm_generated()))
    assert log.id == "3.json" and log.meta["format"] == "who_when/algorithm_generated"
    assert log.meta["question_id"] == "toy-ag-1"
    assert log.agents == [
        "Lead_Expert",
        "Python_Expert",
        "Computer_terminal",
        "Verification_Expert",
    ]
    assert log.turns[1].role == "user"
    assert (log.mistake_agent, log.mistake_step) == ("Python_Expert", 1)
    assert log.ground_truth == "SECRETA 42" and log.question == QUESTION
    assert log.agent_at(log.mistake_step) == log.mistake_agent


def test_loading_hand_crafted(tmp_path: Path) -> None:
    log = AgentLog.from_file(write(tmp_path / "12.json", hand_crafted()))
    assert log.meta["format"] == "who_when/hand_crafted"
    assert [t.agent for t in log.turns] == [
        "human",
        "Orchestrator",
        "Orchestrator",
        "WebSurfer",
        "Orchestrator",
    ]
    assert log.turns[2].role == "Orchestrator (-> WebSurfer)"
    assert log.agent_groups() == {"human": [0], "Orchestrator": [1, 2, 4], "WebSurfer": [3]}
    assert (log.mistake_agent, log.mistake_step) == ("WebSurfer", 3)


def test_loading_plain_lists_and_folders(tmp_path: Path) -> None:
    write(tmp_path / "10.json", TURNS)
    write(tmp_path / "2.json", {"turns": TURNS, "mistake_agent": "Coder", "mistake_step": 1})
    write(tmp_path / "1.json", hand_crafted())
    logs = AgentLog.from_dir(tmp_path)
    assert [log.id for log in logs] == ["1.json", "2.json", "10.json"]  # numeric order
    assert logs[2].mistake_step is None and len(logs[2]) == len(TURNS)
    assert logs[1].mistake_step == 1 and logs[1].meta["format"] == "turns"


def test_serialize_numbered_and_unnumbered() -> None:
    log = make_log()
    lines = log.serialize().split("\n")
    assert lines[0] == f"Step 0 - Planner: {TURNS[0]['content']}"
    assert lines[4] == f"Step 4 - Planner: {TURNS[4]['content']}" and len(lines) == 5
    assert log.serialize(numbered=False).split("\n")[1] == f"Coder: {TURNS[1]['content']}"
    kept = log.serialize(keep=[0, 3])
    assert kept == (
        f"Step 0 - Planner: {TURNS[0]['content']}\nStep 3 - Checker: {TURNS[3]['content']}"
    )
    mask = np.array([True, False, False, True, False])
    assert log.serialize(keep=mask) == kept
    assert log.serialize(keep=[]) == ""


def test_turn_units_keep_original_step_numbers() -> None:
    log = make_log()
    units = TurnUnits(log)
    assert units.kind == "turns" and "keep their step numbers" in units.removal
    assert units.labels == [
        "Step 0 - Planner",
        "Step 1 - Coder",
        "Step 2 - Terminal",
        "Step 3 - Checker",
        "Step 4 - Planner",
    ]
    assert units[3].meta == {"agent": "Checker", "step": 3}
    text = units.compose(np.array([True, False, True, True, False]))
    assert re.findall(r"^Step (\d+) - ", text, flags=re.M) == ["0", "2", "3"]
    assert "Step 1" not in text and TURNS[2]["content"] in text
    assert units.groups() == {"Planner": [0, 4], "Coder": [1], "Terminal": [2], "Checker": [3]}
    d = units.to_dict()
    assert d["kind"] == "turns" and d["log_id"] == "7.json" and d["steps"] == [0, 1, 2, 3, 4]
    sub = TurnUnits(log, steps=[0, 1, 2, 3])
    assert len(sub) == 4 and sub.compose(np.ones(4, bool)) == log.serialize(keep=[0, 1, 2, 3])


def test_truncated_records_the_policy() -> None:
    log = make_log()
    cut = log.truncated(12)
    assert all(len(t.content) <= 12 for t in cut.turns)
    assert cut.turns[2].content == TURNS[2]["content"]  # short turns are untouched
    assert cut.meta["truncation"]["max_turn_chars"] == 12
    assert cut.meta["truncation"]["turns_cut"] == sum(len(t["content"]) > 12 for t in TURNS)
    assert cut.mistake_step == 1 and cut.id == "7.json" and "truncation" not in log.meta


def test_repr_holds_no_text() -> None:
    log = make_log()
    for r in (repr(log), repr(AgentTask(log)), repr(TurnUnits(log))):
        assert "SECRET" not in r
    assert "7.json" in repr(log) and "5 turns" in repr(log)


# --- bad input ------------------------------------------------------------------------------------
def test_bad_logs(tmp_path: Path) -> None:
    with pytest.raises(ak.InputError, match=r"no turns.*at least one turn"):
        AgentLog([])
    with pytest.raises(ak.InputError, match=r"mistake_step 5 is out of range.*0\.\.4"):
        make_log(mistake_step=5)
    with pytest.raises(ak.InputError, match="out of range"):
        make_log(mistake_step="-1")
    with pytest.raises(ak.InputError, match="0-based step index"):
        make_log(mistake_step="two")
    with pytest.raises(ak.InputError, match="names no agent"):
        AgentLog([{"content": "x"}])
    with pytest.raises(ak.InputError, match=r"unknown log format.*history.*turns"):
        AgentLog.from_file(write(tmp_path / "odd.json", {"messages": []}))
    with pytest.raises(ak.InputError, match="not valid JSON"):
        (tmp_path / "bad.json").write_text("{", encoding="utf-8")
        AgentLog.from_file(tmp_path / "bad.json")
    empty = algorithm_generated()
    empty["history"] = []
    with pytest.raises(ak.InputError, match=r"9\.json: the log has no turns"):
        AgentLog.from_file(write(tmp_path / "9.json", empty))
    far = hand_crafted()
    far["mistake_step"] = "17"
    with pytest.raises(ak.InputError, match="mistake_step 17 is out of range"):
        AgentLog.from_file(write(tmp_path / "8.json", far))


def test_bad_tasks(tiny_lm: Any) -> None:
    with pytest.raises(ak.InputError, match="outcome='gold' needs the log's ground truth"):
        AgentTask(make_log(ground_truth=None), outcome="gold")
    with pytest.raises(ak.InputError, match="it is step 0"):
        AgentTask(AgentLog([{"agent": "A", "content": "x"}]))
    with pytest.raises(ak.InputError, match="no language model"):
        ak.attribute(AgentTask(make_log()), "loo")
    long = AgentLog(
        [{"agent": f"A{i % 3}", "content": "word " * 200} for i in range(6)], mistake_step=2
    )
    with pytest.raises(ak.WindowError, match=r"window is 512.*max_turn_chars= \(e\.g\. 400\)") as e:
        AgentTask(long, lm=tiny_lm)
    assert e.value.over == int(re.search(r"take (\d+) tokens", str(e.value))[1]) - 512
    with pytest.raises(ak.InputError, match="even with every turn cut to max_turn_chars=900"):
        AgentTask(long, lm=tiny_lm, max_turn_chars=900)
    task = AgentTask(long, lm=tiny_lm, max_turn_chars=40)  # fits
    assert task.target_info["truncation"]["max_turn_chars"] == 40
    with pytest.raises(ak.InputError, match="max_tokens must be a positive number"):
        AgentTask(long, lm=tiny_lm, max_tokens=0)
    with pytest.raises(ak.InputError, match="max_tokens needs a language model"):
        AgentTask(long, max_tokens=100)
    with pytest.raises(ak.InputError, match="even with every turn cut to one character"):
        AgentTask(long, lm=tiny_lm, max_tokens=5)


def test_max_tokens_cuts_turns_to_the_longest_length_that_fits(tiny_lm: Any) -> None:
    turns = [
        {"agent": f"A{i % 3}", "content": f"{i} " + "word " * (5 + 15 * (i % 2))} for i in range(6)
    ]
    long = AgentLog(turns, ground_truth="the answer", mistake_step=2)

    def tokens(task: AgentTask) -> int:
        return tiny_lm.count_tokens(task.prompt(), task.response, chat=False)

    whole = AgentTask(long, lm=tiny_lm, outcome="gold", max_tokens="window")  # fits: untouched
    assert whole.log is long and whole.max_turn_chars is None
    budget = tokens(whole) - 100
    fitted = AgentTask(long, lm=tiny_lm, outcome="gold", max_tokens=budget)
    cut = fitted.max_turn_chars
    assert cut is not None and tokens(fitted) <= budget
    # the longest cut that fits: one more character per turn is over the budget
    over = AgentTask(long, lm=tiny_lm, outcome="gold", max_turn_chars=cut + 1)
    assert tokens(over) > budget
    # short turns are kept whole, long ones lose their ends; the steps are unchanged
    for before, after in zip(long.turns, fitted.log.turns, strict=True):
        assert after.content == before.content[:cut] and after.agent == before.agent
    assert any(len(t.content) < cut for t in fitted.log.turns)
    info = fitted.target_info["truncation"]
    assert info["max_turn_chars"] == cut and info["max_tokens"] == budget
    assert info["tokens"] == tokens(fitted) and info["turns_cut"] >= 3
    # with max_turn_chars too, the fit only cuts further
    both = AgentTask(long, lm=tiny_lm, outcome="gold", max_turn_chars=200, max_tokens=budget)
    assert both.max_turn_chars == cut
    # the final turn stays the outcome (found on the uncut log), cut like the others
    final = AgentTask(long, lm=tiny_lm, max_tokens=budget - 40)
    assert final.outcome_step == 5 and len(final.units) == 5
    assert final.outcome_text == long.turns[5].content[: final.max_turn_chars].strip()
    a = attribute_agents(long, method="turn_loo", lm=tiny_lm, outcome="gold", max_tokens=budget)
    assert a.target["truncation"]["max_turn_chars"] == cut and len(a.units) == 6


# --- the task -------------------------------------------------------------------------------------
def test_outcomes_and_prompt() -> None:
    log = make_log()
    final = AgentTask(log)
    assert final.kind == "agents" and len(final.units) == 4  # the last turn is the outcome
    assert final.outcome_text == TURNS[4]["content"] and final.response.startswith(" ")
    assert final.prompt() == (
        f"Problem: {QUESTION}\n\nConversation of a multi-agent system:\n"
        + log.serialize(keep=[0, 1, 2, 3])
        + ANSWER_CUE
    )
    gold = AgentTask(log, outcome="gold")
    assert len(gold.units) == 5 and gold.outcome_text == "SECRETA 42"
    given = AgentTask(log, outcome="SECRETA 41")
    assert given.target_info["outcome"] == "given" and len(given.units) == 5
    no_question = AgentTask(make_log(question=None))
    assert no_question.prompt().startswith("Conversation of a multi-agent system:\nStep 0")
    info = final.target_info
    assert info["kind"] == "agent_outcome" and info["outcome"] == "final"
    assert info["outcome_step"] == 4 and info["log_id"] == "7.json" and info["judge"] is None
    assert "SECRET" not in json.dumps(info)
    judged = AgentTask(log, judge=object(), with_answer=True)
    assert judged.with_answer and judged.target_info["judge"] == "object"
    assert isinstance(judged.meter, ak.CostMeter)


def test_result_and_decision() -> None:
    task = AgentTask(make_log(), outcome="gold")
    scores = np.array([0.5, 2.0, np.nan, 1.0, 0.25])
    a = task.result(scores, "manual", {}, ak.Cost())
    assert a.task == "agents"
    assert a.extras["agent_scores"] == {
        "Planner": 0.75,
        "Coder": 2.0,
        "Terminal": 0.0,
        "Checker": 1.0,
    }
    assert a.extras["decision"] == {"agent": "Coder", "step": 1, "reason": "highest-scoring turn"}
    given = task.result(scores, "manual", {}, ak.Cost(), decision={"agent": "Checker", "step": 3})
    assert given.extras["decision"] == {"agent": "Checker", "step": 3, "reason": ""}
    assert decision_from_scores(np.full(5, np.nan), list(task.units))["step"] is None
    assert task.decision_from_scores([0, 0, 3, 0, 0])["agent"] == "Terminal"
    saved = json.dumps(a.to_dict())
    assert "SECRET" not in saved
    back = ak.Attribution.from_dict(json.loads(saved))
    assert back.extras["decision"]["step"] == 1 and back.units[1].meta["agent"] == "Coder"


def test_values_and_loo_through_attribute_agents(tiny_lm: Any) -> None:
    log = make_log()
    rows: list[int] = []
    hook = tiny_lm.model.register_forward_pre_hook(
        lambda _m, _a, kw: rows.append(int(kw["input_ids"].shape[0])), with_kwargs=True
    )
    try:
        a = attribute_agents(log, method="loo", lm=tiny_lm)
    finally:
        hook.remove()
    n = len(TURNS) - 1  # outcome "final": turns 0..n-2 are the units
    assert a.task == "agents" and a.method == "loo" and a.scores.shape == (n,)
    assert a.cost.forward_passes == sum(rows) == n + 1
    assert set(a.extras["agent_scores"]) == {"Planner", "Coder", "Terminal", "Checker"}
    assert a.extras["decision"]["step"] == int(np.nanargmax(a.scores))
    assert "SECRET" not in json.dumps(a.to_dict())
    # the values are log p(" " + final turn | prompt), as scored directly without any cache
    task = AgentTask(log, lm=tiny_lm, reuse_prefix=False)
    texts = [task.units.compose(m) for m in ~np.eye(n, dtype=bool)]
    full = task.values([task.units.compose(np.ones(n, bool))])[0]
    direct = tiny_lm.logprob([task.prompt()], " " + TURNS[-1]["content"], chat=False)
    np.testing.assert_allclose(full, direct[0], atol=1e-4, rtol=0)
    np.testing.assert_allclose(full - task.values(texts), a.scores, atol=1e-4, rtol=0)
    before = tiny_lm.cost.forward_passes
    again = AgentTask(log, lm=tiny_lm, outcome="gold").attribute("loo")
    assert again.scores.shape == (len(TURNS),)
    assert tiny_lm.cost.forward_passes - before == again.cost.forward_passes == len(TURNS) + 1


def test_attribute_agents_reads_a_path(tmp_path: Path, tiny_lm: Any) -> None:
    path = write(tmp_path / "5.json", algorithm_generated())
    a = attribute_agents(path, method="loo", lm=tiny_lm, outcome="gold", max_turn_chars=30)
    assert a.input["log_id"] == "5.json" and a.target["truncation"]["max_turn_chars"] == 30
    assert a.target["outcome"] == "gold" and len(a) == 4


# --- the shared logs (never printed) --------------------------------------------------------------
def test_every_shared_who_when_log_loads() -> None:
    files = sorted(DATA.glob("*/*.json")) if DATA.is_dir() else []
    if not files:
        pytest.skip(f"the shared Who&When logs are absent ({DATA}); they live outside the repo")
    families: dict[str, list[AgentLog]] = {}
    for f in files:
        families.setdefault(f.parent.name, []).append(AgentLog.from_file(f))
    assert set(families) <= {"Algorithm-Generated", "Hand-Crafted"}
    for logs in families.values():
        assert all(len(log) >= 1 for log in logs)
        assert all(
            log.mistake_step is not None and 0 <= log.mistake_step < len(log) for log in logs
        )
        speaks = [log.agent_at(log.mistake_step) == log.mistake_agent for log in logs]  # type: ignore[arg-type]
        assert sum(speaks) >= 0.85 * len(logs)


def test_final_outcome_skips_trailing_terminate_turns(tiny_lm):
    from attribkit.tasks.agents import AgentLog, AgentTask, final_turn

    turns = [
        {"agent": "User", "content": "Add 2 and 2."},
        {"agent": "Solver", "content": "2 + 2 = 5."},
        {"agent": "Solver", "content": "The answer is 5."},
        {"agent": "Terminal", "content": "TERMINATE"},
        {"agent": "Terminal", "content": "  "},
    ]
    log = AgentLog(turns)
    assert final_turn(log) == 2
    task = AgentTask(log, lm=tiny_lm)
    assert task.outcome_step == 2 and task.n_units == 2
    assert task.outcome_text == "The answer is 5."
    only_control = AgentLog([{"agent": "A", "content": "TERMINATE"}, {"agent": "B", "content": ""}])
    assert final_turn(only_control) is None
    with pytest.raises(ak.InputError, match="bare TERMINATE"):
        AgentTask(only_control, lm=tiny_lm)
