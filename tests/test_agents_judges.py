"""Judge methods over multi-agent logs (methods/agents: all_at_once, step_by_step, binary_search,
hybrid, a2p; prompts.py): an endpoint judge against a scripted loopback server (each method's
cost model in judge calls, parsed decisions, unparsed replies, the prompts actually sent, with
and without the answer) and the local constrained-choice judge on the tiny random Llama (always
parsed, forward passes counted once with the task's own LM, rankings for MRR). Hand-written
logs only."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest

from attribkit.core.errors import InputError
from attribkit.evaluation.who_when import who_when_score
from attribkit.methods.agents.a2p import a2p
from attribkit.methods.agents.all_at_once import all_at_once
from attribkit.methods.agents.binary_search import binary_search
from attribkit.methods.agents.hybrid import hybrid
from attribkit.methods.agents.prompts import (
    SYSTEM_STEP,
    a2p_prompt,
    all_at_once_prompt,
    binary_search_prompt,
    reply_reason,
    step_prompt,
)
from attribkit.methods.agents.step_by_step import step_by_step
from attribkit.models.judge import ChatJudge, LocalJudge
from attribkit.tasks.agents import AgentLog, AgentTask
from attribkit.testing import tiny_language_model
from test_judge import Reply, chat, serve

TURNS = [
    ("User", "Which is the cheapest of the three tickets: 12, 9 or 15 euros?"),
    ("Planner", "Searcher, list the prices. Checker, confirm the minimum."),
    ("Searcher", "The prices are 12, 19 and 15 euros."),
    ("Checker", "The minimum of 12, 19 and 15 is 12."),
    ("Searcher", "Confirmed: 12, 19 and 15."),
    ("Planner", "Summing up for the user."),
    ("Planner", "The cheapest ticket costs 12 euros."),
]
QUESTION = "Which is the cheapest of the three tickets?"
ANSWER = "9 euros"
ALL = (all_at_once, step_by_step, binary_search, hybrid, a2p)


def make_log(ground_truth: str | None = ANSWER, question: str | None = QUESTION) -> AgentLog:
    return AgentLog(
        [{"agent": a, "content": c} for a, c in TURNS],
        question=question,
        ground_truth=ground_truth,
        mistake_agent="Searcher",
        mistake_step=2,
        meta={"id": "tickets.json"},
    )


def chat_task(url: str, with_answer: bool = False, **kw: Any) -> AgentTask:
    judge = ChatJudge(url, "judge-model", retries=0, timeout=10)
    return AgentTask(kw.pop("log", make_log()), judge=judge, with_answer=with_answer, **kw)


def prompt_of(request: dict) -> str:
    return request["body"]["messages"][-1]["content"]


def latest_step(body: dict) -> int:
    m = re.search(r"The latest step, step (\d+),", body["messages"][-1]["content"])
    assert m, "not a step-by-step prompt"
    return int(m.group(1))


def segment(body: dict) -> tuple[int, int, int]:
    text = body["messages"][-1]["content"]
    start, end = map(int, re.search(r"The segment, from step (\d+) to step (\d+):", text).groups())
    return start, end, start + (end - start) // 2


def wide_tiny_lm(seed: int = 0) -> Any:
    """The tiny random Llama with a 2,048-token window: judge prompts with their instructions
    take ~1,100 tokens of its character-level tokenizer (positions are rotary, so only the
    configured limit changes)."""
    lm = tiny_language_model(seed)
    lm.model.config.max_position_embeddings = 2048
    return lm


# ---------------------------------------------------------------------- prompts


def test_prompts_numbering_question_and_answer() -> None:
    log = make_log()
    aao = all_at_once_prompt(log)
    assert "Searcher: The prices are 12, 19 and 15 euros." in aao
    assert "Step 2" not in aao and not re.search(r"Step \d+ -", aao)  # unnumbered, as the paper
    assert QUESTION in aao and ANSWER not in aao and "correct answer" not in aao
    assert f"The correct answer to the problem is: {ANSWER}" in all_at_once_prompt(log, True)
    for label in ("Agent Name:", "Step Number:", "Reason for Mistake:"):
        assert label in aao

    sbs = step_prompt(log, 2)
    assert "Step 0 - User: Which" in sbs and "Step 2 - Searcher: The prices" in sbs
    assert "Step 3 -" not in sbs  # the prefix ends at the step judged
    assert "Yes or No" in sbs and "overly critical" in sbs and ANSWER not in sbs
    assert step_prompt(log, 3).startswith(sbs.split("Step 2 - Searcher")[0])  # shared prefix
    assert ANSWER in step_prompt(log, 2, with_answer=True)

    bs, mid = binary_search_prompt(log, 2, 6)
    assert mid == 4 and "Step 2 - Searcher" in bs and "Step 1 -" not in bs
    assert "upper half" in bs and "lower half" in bs and "(step 2 to step 4)" in bs

    ap = a2p_prompt(log, with_answer=True)
    for block in ("PROBLEM:", "CORRECT ANSWER: 9 euros", "CONVERSATION HISTORY:", "ABDUCTION"):
        assert block in ap
    assert "ACTION" in ap and "PREDICTION" in ap and "Step 2 - Searcher: The prices" in ap
    assert ap.index("ABDUCTION") < ap.index("STEP 2 - ACTION") < ap.index("PREDICTION")
    assert "CORRECT ANSWER" not in a2p_prompt(log) and ANSWER not in a2p_prompt(log)
    # no question: no problem line or block
    bare = make_log(question=None)
    assert "problem the agents worked on" not in all_at_once_prompt(bare)
    assert "PROBLEM:" not in a2p_prompt(bare)
    with pytest.raises(InputError, match="no ground truth"):
        all_at_once_prompt(make_log(ground_truth=None), with_answer=True)
    assert reply_reason("Agent Name: A\n**Reason for Mistake:** it misread 9") == "it misread 9"
    assert reply_reason("1. Yes\n2. Reason: wrong", ("Reason",)) == "wrong"
    assert reply_reason("no reason given") == ""


# ---------------------------------------------------------------------- endpoint judge


def test_all_at_once_chat_parses_and_counts() -> None:
    text = "Agent Name: Searcher\nStep Number: 2\nReason for Mistake: it misread the second price."
    with serve(Reply(chat(text, prompt_tokens=300, completion_tokens=17))) as server:
        task = chat_task(server.url, outcome="gold")
        a = all_at_once(task)
    assert len(server.requests) == 1 and a.extras["judge_calls"] == 1
    assert a.cost.judge_calls == 1 and a.cost.generated_tokens == 17
    assert a.cost.forward_passes == 0 and a.cost.seconds > 0
    assert a.extras["decision"] == {
        "agent": "Searcher",
        "step": 2,
        "reason": "it misread the second price.",
    }
    np.testing.assert_array_equal(a.scores, [0, 0, 1, 0, 0, 0, 0])
    assert a.extras["agent_scores"] == {"User": 0.0, "Planner": 0.0, "Searcher": 1.0, "Checker": 0}
    assert a.extras["unparsed"] == 0 and a.extras["replies"] == [text]
    assert a.extras["prompt_tokens"] == 300
    assert a.params["with_answer"] is False and a.params["judge"]["model"] == "judge-model"
    body = server.requests[0]["body"]
    assert body["messages"][0]["role"] == "system"
    sent = prompt_of(server.requests[0])
    assert sent == all_at_once_prompt(task.log) and ANSWER not in sent
    assert "Checker: The minimum" in sent and not re.search(r"Step \d+ -", sent)


def test_all_at_once_with_answer_and_unparsed() -> None:
    with serve(Reply(chat("I cannot tell from this conversation.")), Reply(chat(""))) as server:
        task = chat_task(server.url, with_answer=True)  # outcome 'final': 6 turn units
        a = all_at_once(task)
        b = all_at_once(task, system=False)
    assert f"The correct answer to the problem is: {ANSWER}" in prompt_of(server.requests[0])
    assert server.requests[1]["body"]["messages"][0]["role"] == "user"  # no system message
    for r in (a, b):
        assert r.extras["unparsed"] == 1 and r.extras["judge_calls"] == 1
        assert r.extras["decision"]["agent"] is None and r.extras["decision"]["step"] is None
        assert "unparsed" in r.extras["decision"]["reason"]
        assert r.scores.shape == (6,) and np.all(r.scores == 0)
    assert a.params["with_answer"] is True and b.params["system"] is False


def test_with_answer_needs_ground_truth_and_judge_needed() -> None:
    log = make_log(ground_truth=None)
    with serve() as server:
        for method in ALL:
            with pytest.raises(InputError, match="no ground truth"):
                method(chat_task(server.url, with_answer=True, log=log))
    assert server.requests == []  # refused before any judge call
    for method in ALL:
        with pytest.raises(InputError, match=r"pass judge=ChatJudge\(\.\.\.\) or LocalJudge"):
            method(AgentTask(make_log()))
        with pytest.raises(InputError, match="pass an AgentTask"):
            method(object())
    one_unit = AgentLog([{"agent": "A", "content": "hi"}, {"agent": "B", "content": "bye"}])
    with pytest.raises(InputError, match="only 1 unit"):
        all_at_once(AgentTask(one_unit, judge=ChatJudge("http://127.0.0.1:9", "m")))


def step_script(yes_at: set[int], unparsed_at: frozenset[int] = frozenset()):
    def respond(body: dict) -> Reply:
        k = latest_step(body)
        if k in unparsed_at:
            return Reply(chat("Hard to say."))
        if k in yes_at:
            return Reply(chat(f"1. Yes\n2. Reason: step {k} copies a wrong price."))
        return Reply(chat("Answer: No\nReason: fine."))

    return respond


def test_step_by_step_chat_stops_at_first_yes() -> None:
    with serve(respond=step_script({2, 4}, frozenset({1}))) as server:
        a = step_by_step(chat_task(server.url, outcome="gold"))
    steps = [latest_step(r["body"]) for r in server.requests]
    assert steps == [0, 1, 2]  # i* + 1 calls, early stop
    assert a.extras["judge_calls"] == 3 == a.cost.judge_calls
    assert a.extras["decision"] == {
        "agent": "Searcher",
        "step": 2,
        "reason": "step 2 copies a wrong price.",
    }
    assert a.extras["unparsed"] == 1 and a.extras["unparsed_steps"] == [1]
    assert a.extras["judged_steps"] == [0, 1, 2]
    np.testing.assert_array_equal(a.scores, [0, 0, 1, np.nan, np.nan, np.nan, np.nan])
    assert list(a.ranking[:3]) == [2, 0, 1]  # unjudged steps last
    assert a.extras["agent_scores"] == {"User": 0.0, "Planner": 0.0, "Searcher": 1.0}
    for r in server.requests:  # numbered prefixes up to the judged step
        k = latest_step(r["body"])
        text = prompt_of(r)
        assert f"Step {k} - {TURNS[k][0]}: {TURNS[k][1]}" in text
        assert f"Step {k + 1} -" not in text and ANSWER not in text
        assert r["body"]["messages"][0]["content"] == SYSTEM_STEP


def test_step_by_step_chat_no_mistake_found() -> None:
    with serve(respond=step_script(set())) as server:
        a = step_by_step(chat_task(server.url, with_answer=True))
    assert len(server.requests) == len(TURNS) == a.extras["judge_calls"]  # all n steps
    assert all(ANSWER in prompt_of(r) for r in server.requests)
    d = a.extras["decision"]
    assert d["agent"] is None and d["step"] is None and "no step judged" in d["reason"]
    assert np.all(a.scores == 0) and a.extras["unparsed"] == 0


def half_script(target: int):
    def respond(body: dict) -> Reply:
        _, _, mid = segment(body)
        return Reply(chat("upper half" if target <= mid else "Answer: lower half"))

    return respond


def expected_calls(n: int, target: int) -> int:
    start, end, calls = 0, n - 1, 0
    while start < end:
        mid = start + (end - start) // 2
        start, end = (start, mid) if target <= mid else (mid + 1, end)
        calls += 1
    return calls


def test_binary_search_chat_finds_every_step_in_log2_calls() -> None:
    n = len(TURNS)
    for target in range(n):
        with serve(respond=half_script(target)) as server:
            a = binary_search(chat_task(server.url, outcome="gold"))
        calls = a.extras["judge_calls"]
        assert calls == len(server.requests) == expected_calls(n, target) == a.cost.judge_calls
        assert math.floor(math.log2(n)) <= calls <= math.ceil(math.log2(n))
        assert a.extras["decision"]["step"] == target
        assert a.extras["decision"]["agent"] == TURNS[target][0]
        assert a.extras["unparsed"] == 0 and a.extras["random_picks"] == 0
        assert int(np.argmax(a.scores)) == target and np.isfinite(a.scores).all()
        assert sorted(a.scores).count(a.scores.max()) == 1  # the found step alone on top
        first = prompt_of(server.requests[0])
        assert "The segment, from step 0 to step 6:" in first and "Step 6 - Planner" in first
        assert a.extras["path"][0]["start"] == 0


def test_binary_search_chat_unparsed_picks_a_seeded_random_half() -> None:
    decisions = {}
    for seed in range(6):
        with serve(respond=lambda body: Reply(chat("Both halves look fine to me."))) as server:
            a = binary_search(chat_task(server.url, outcome="gold"), seed=seed)
        calls = a.extras["judge_calls"]
        assert a.extras["unparsed"] == calls == a.extras["random_picks"] == len(server.requests)
        assert "random" in a.extras["decision"]["reason"] and a.params["seed"] == seed
        decisions[seed] = a.extras["decision"]["step"]
    assert len(set(decisions.values())) > 1  # the halves are drawn, not fixed
    with serve(respond=lambda body: Reply(chat("?"))) as server:
        again = binary_search(chat_task(server.url, outcome="gold"), seed=3)
    assert again.extras["decision"]["step"] == decisions[3]  # and reproducible


def test_hybrid_chat_asks_only_the_agents_turns() -> None:
    first = Reply(chat("Agent Name: Searcher\nStep Number: 4\nReason for Mistake: bad prices"))
    with serve(first, respond=step_script({4})) as server:
        a = hybrid(chat_task(server.url, outcome="gold"))
    asked = [latest_step(r["body"]) for r in server.requests[1:]]
    assert asked == [2, 4]  # Searcher's turns, up to the first Yes
    assert a.extras["judge_calls"] == 3 == 1 + len(asked) == a.cost.judge_calls
    assert a.extras["decision"]["agent"] == "Searcher" and a.extras["decision"]["step"] == 4
    assert a.extras["fallback"] is None and a.extras["all_at_once"] == {
        "agent": "Searcher",
        "step": 4,
    }
    assert np.isnan(a.scores[[0, 1, 3, 5, 6]]).all() and list(a.scores[[2, 4]]) == [0.0, 1.0]
    assert list(a.ranking[:3]) == [4, 2, 0]  # judged first, then all-at-once's order

    # no Yes: all-at-once's step when it is the agent's, else the agent's most suspect turn
    for step, want, fallback in ((4, 4, "all_at_once_step"), (3, 2, "highest_judged_turn")):
        reply = Reply(chat(f"Agent Name: Searcher\nStep Number: {step}\nReason for Mistake: x"))
        with serve(reply, respond=step_script(set())) as server:
            b = hybrid(chat_task(server.url, outcome="gold"))
        assert b.extras["judge_calls"] == 1 + 2 and b.extras["fallback"] == fallback
        assert (b.extras["decision"]["agent"], b.extras["decision"]["step"]) == ("Searcher", want)

    # unparsed agent: nothing more is asked
    with serve(Reply(chat("Step Number: 3"))) as server:
        c = hybrid(chat_task(server.url, outcome="gold"))
    assert len(server.requests) == 1 and c.extras["fallback"] == "unparsed_agent"
    assert c.extras["decision"]["agent"] is None and c.extras["unparsed"] == 1
    np.testing.assert_array_equal(c.scores, [0, 0, 0, 1, 0, 0, 0])


def test_a2p_chat() -> None:
    text = (
        "Agent Name: Checker\nStep Number: 3\nReason for Mistake: fixing step 2's copy would help"
    )
    with serve(Reply(chat(text)), Reply(chat(text))) as server:
        a = a2p(chat_task(server.url, outcome="gold"))
        b = a2p(chat_task(server.url, with_answer=True, outcome="gold"))
    assert a.extras["judge_calls"] == 1 == a.cost.judge_calls
    assert a.extras["decision"] == {
        "agent": "Checker",
        "step": 3,
        "reason": "fixing step 2's copy would help",
    }
    plain, answered = prompt_of(server.requests[0]), prompt_of(server.requests[1])
    for block in ("ABDUCTION", "ACTION", "PREDICTION", "CONVERSATION HISTORY:", "PROBLEM:"):
        assert block in plain
    assert "Step 2 - Searcher: The prices" in plain
    assert "CORRECT ANSWER" not in plain and ANSWER not in plain
    assert f"CORRECT ANSWER: {ANSWER}" in answered and b.params["with_answer"] is True


# ---------------------------------------------------------------------- local judge


def test_local_judge_every_method() -> None:
    lm = wide_tiny_lm()
    log = make_log()
    n, n_agents = len(TURNS), len(log.agents)
    results = {}
    for method in ALL:
        task = AgentTask(log, lm=lm, judge=LocalJudge(lm), outcome="gold")
        a = method(task)
        results[method.__name__] = a
        calls = a.extras["judge_calls"]
        assert a.extras["unparsed"] == 0 and a.cost.judge_calls == calls  # never unparsed
        per_call = {  # forward passes: one per option of every field asked
            "all_at_once": n_agents + n,
            "a2p": n_agents + n,
            "step_by_step": 2 * calls,
            "binary_search": 2 * calls,
            "hybrid": n_agents + n + 2 * (calls - 1),
        }
        assert a.cost.forward_passes == per_call[method.__name__]
        scored = ~np.isnan(a.scores)
        assert scored.any() and np.isfinite(a.scores[scored]).all()
        assert sorted(a.ranking) == list(range(n))
        d = a.extras["decision"]
        assert d["agent"] is None or d["agent"] in log.agents
        assert a.params["judge"]["lm"] == "tiny" and a.params["judge"]["judge"] == "LocalJudge"
    # all-at-once: unit scores are the judge's step log-probabilities, decision their argmax
    aao = results["all_at_once"]
    assert aao.extras["decision"]["step"] == int(np.argmax(aao.scores))
    assert np.all(aao.scores < 0) and set(aao.extras["agent_scores"]) == set(log.agents)
    # step-by-step: log p(Yes) - log p(No) of the judge's own answer on the same prompt
    sbs = results["step_by_step"]
    direct = LocalJudge(lm).ask(step_prompt(log, 0), {"Answer": ["Yes", "No"]}, SYSTEM_STEP)
    s = direct.fields["Answer"].scores
    assert sbs.scores[0] == pytest.approx(s["Yes"] - s["No"], abs=1e-3)
    judged = sbs.extras["judged_steps"]
    assert len(judged) == sbs.extras["judge_calls"] and np.isnan(sbs.scores[len(judged) :]).all()
    if sbs.extras["decision"]["step"] is not None:
        assert sbs.scores[judged[-1]] >= 0 and np.all(sbs.scores[judged[:-1]] < 0)
    # binary search: every turn scored, the found step on top, at most ceil(log2 n) calls
    bs = results["binary_search"]
    assert int(np.argmax(bs.scores)) == bs.extras["decision"]["step"]
    assert bs.extras["judge_calls"] <= math.ceil(math.log2(n))
    # rankings give an MRR
    preds = [results[m.__name__] for m in ALL]
    score = who_when_score(preds, [log] * len(preds), n_boot=10)
    assert 0 < score["mrr"] <= 1


def test_local_judge_cost_counted_once_or_added() -> None:
    lm = wide_tiny_lm()
    log = make_log()
    options = len(log.agents) + len(log)
    # the judge on the task's own LM: one meter, counted once
    shared = AgentTask(log, lm=lm, judge=LocalJudge(lm), outcome="gold")
    before = lm.cost.copy()
    a = all_at_once(shared)
    assert a.cost.judge_calls == 1 and a.cost.forward_passes == options
    assert (lm.cost - before).forward_passes == options
    # the judge on another LM: its meter is added to the task's
    other = wide_tiny_lm(seed=1)
    split = AgentTask(log, lm=lm, judge=LocalJudge(other), outcome="gold")
    before_task, before_judge = lm.cost.copy(), other.cost.copy()
    b = all_at_once(split)
    assert (lm.cost - before_task).forward_passes == 0
    assert (other.cost - before_judge).forward_passes == options
    assert b.cost.judge_calls == 1 and b.cost.forward_passes == options
    # no LM on the task: the judge's work is still counted
    c = all_at_once(AgentTask(log, judge=LocalJudge(other), outcome="gold"))
    assert c.cost.judge_calls == 1 and c.cost.forward_passes == options
    # an endpoint judge on a task with an LM: judge calls from the judge's meter
    with serve(Reply(chat("Agent Name: Planner\nStep Number: 1"))) as server:
        d = all_at_once(AgentTask(log, lm=lm, judge=ChatJudge(server.url, "m"), outcome="gold"))
    assert d.cost.judge_calls == 1 and d.cost.forward_passes == 0 and d.cost.batches == 1
    assert d.extras["decision"]["reason"].startswith("all-at-once")


def test_local_judge_window_error_is_clear(tiny_lm) -> None:
    task = AgentTask(make_log(), judge=LocalJudge(tiny_lm), outcome="gold")  # 512-token window
    with pytest.raises(InputError, match="window; truncate"):
        all_at_once(task)
