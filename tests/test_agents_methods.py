"""Judge-free agents methods (turn_loo, prefix_drop, agent_shapley, backtrace): sign conventions
(failed final answer vs gold), ties to the earliest turn, exact costs, agent Shapley efficiency,
the lexical influence graph on a hand-written log, bad input, and the planted-fault recovery
target with the real SmolLM2 (the faulty turn first in >= 4 of 5 synthetic logs).

Every log here is hand-written (no Who&When text). Where a test needs exact ties or exact values
it uses :class:`CopyLM`, a deterministic stand-in language model at the LM boundary; costs and
efficiency are checked on the tiny random Llama, the recovery target on SmolLM2."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from attribkit.core.attribution import Attribution
from attribkit.core.errors import InputError
from attribkit.methods.agents.agent_shapley import agent_shapley
from attribkit.methods.agents.backtrace import anchors, backtrace, influence_graph
from attribkit.methods.agents.prefix_drop import prefix_drop
from attribkit.methods.agents.turn_loo import turn_loo
from attribkit.tasks.agents import AgentLog, AgentTask


# --- a deterministic stand-in LM and hand-written logs --------------------------------------------
class CopyLM:
    """A stand-in LM: log p(response | prompt) = Σ over the response's words w of how often w
    occurs among the prompt's words, plus ``extra[response][t] ·`` (occurrences of t). No meter of
    its own (the task counts), no prefix reuse; ``rows`` counts the pairs it scored."""

    name = "copy-lm"

    def __init__(self, extra: dict[str, dict[str, float]] | None = None) -> None:
        self.extra, self.rows = extra or {}, 0

    def token_logprobs(
        self, prompts: Sequence[str] | str, responses: Sequence[str] | str, chat: bool = True
    ) -> list[np.ndarray]:
        assert chat is False
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if isinstance(responses, str):
            responses = [responses] * len(prompts)
        out = []
        for p, r in zip(prompts, responses, strict=True):
            words = p.split()
            v = sum(words.count(w) for w in r.split())
            v += sum(c * words.count(t) for t, c in self.extra.get(r.strip(), {}).items())
            out.append(np.array([float(v)]))
        self.rows += len(out)
        return out


def seats_log(**kw: Any) -> AgentLog:
    """Searcher finds the right count (448); the Coder writes a wrong total (452) at step 2, the
    Verifier repeats it at step 3, the final turn copies it."""
    turns = [
        {"agent": "Planner", "content": "Task: count the seats. Rows 16 by 28."},
        {"agent": "Searcher", "content": "The plan says 448 seats."},
        {"agent": "Coder", "content": "total = 452"},
        {"agent": "Verifier", "content": "confirmed 452"},
        {"agent": "Planner", "content": "452"},
    ]
    return AgentLog(turns, ground_truth="448", **kw)


def gold_lm() -> CopyLM:
    # belief in the gold "448" rises with each 448 and falls by 2 with each wrong 452
    return CopyLM({"448": {"452": -2.0}})


# --- sign conventions and ties --------------------------------------------------------------------
def test_turn_loo_signs_and_ties() -> None:
    lm = gold_lm()
    final = AgentTask(seats_log(), lm=lm)  # outcome: the failed final answer "452"
    a = turn_loo(final)
    # blame = v(all) − v(without i): turns 2 and 3 each support "452" once; tie → earliest
    np.testing.assert_allclose(a.scores, [0, 0, 1, 1])
    assert a.params == {"sign": 1}
    assert a.extras["decision"] == {
        "agent": "Coder",
        "step": 2,
        "reason": a.extras["decision"]["reason"],
    }
    assert "earliest" in a.extras["decision"]["reason"]
    assert a.extras["agent_scores"] == {
        "Planner": 0.0,
        "Searcher": 0.0,
        "Coder": 1.0,
        "Verifier": 1.0,
    }
    assert a.extras["full_value"] == 2.0
    assert a.cost.forward_passes == 5 == lm.rows  # n + 1, the stand-in counted on the task meter

    gold = AgentTask(seats_log(), lm=gold_lm(), outcome="gold")  # all 5 turns are units
    g = turn_loo(gold)
    # blame = v(without i) − v(all) for v = #448 − 2·#452: the Searcher's 448 *helps* (−1),
    # each 452 hurts (+2); tie between steps 2, 3 and 4 → step 2
    np.testing.assert_allclose(g.scores, [0, -1, 2, 2, 2])
    assert g.params == {"sign": -1}
    assert (g.extras["decision"]["agent"], g.extras["decision"]["step"]) == ("Coder", 2)
    assert "raises belief in the correct answer" in g.extras["decision"]["reason"]
    assert "lowers belief in the failed outcome" in a.extras["decision"]["reason"]
    flipped = turn_loo(gold, sign=1)
    np.testing.assert_allclose(flipped.scores, -g.scores)
    assert flipped.cost.forward_passes == 0  # every prompt was scored by the run before


def test_prefix_drop_signs_and_curve() -> None:
    a = prefix_drop(AgentTask(seats_log(), lm=gold_lm()))
    assert a.extras["values"] == [0.0, 0.0, 0.0, 1.0, 2.0]  # v_-1 .. v_3 of "452"
    np.testing.assert_allclose(a.scores, [0, 0, 1, 1])  # the rise; tie → earliest
    assert a.extras["decision"]["step"] == 2 and a.params == {"sign": 1}
    assert a.cost.forward_passes == 5

    g = prefix_drop(AgentTask(seats_log(), lm=gold_lm(), outcome="gold"))
    assert g.extras["values"] == [0.0, 0.0, 1.0, -1.0, -3.0, -5.0]
    np.testing.assert_allclose(g.scores, [0, -1, 2, 2, 2])  # the drop in belief in "448"
    assert g.extras["decision"]["step"] == 2 and g.params == {"sign": -1}
    assert np.isclose(g.scores.sum(), -(g.extras["values"][-1] - g.extras["values"][0]))


def test_backtrace_on_the_stand_in() -> None:
    lm = gold_lm()
    task = AgentTask(seats_log(), lm=lm)
    none = backtrace(task, suspicion="none")
    assert none.cost.forward_passes == 0 and lm.rows == 0  # lexical edges are free
    # anchors: 16, 28 | 448 | 452 | 452 | 452: steps 2 and 3 reach the final turn with weight 1
    assert sorted(map(tuple, none.extras["edges"])) == [(2, 3, 1.0), (2, 4, 1.0), (3, 4, 1.0)]
    np.testing.assert_allclose(none.scores, [0, 0, 1, 1])
    assert none.extras["decision"]["step"] == 2  # tie → earliest
    assert none.extras["path"] == [2, 4] and none.extras["path_weight"] == {"2": 1.0, "3": 1.0}
    assert none.extras["root"] == 4
    assert none.params == {"edges": "lexical", "threshold": 0.0, "suspicion": "none", "sign": 1}

    loo = backtrace(task)  # path weight × (clipped turn_loo blame + 1e-3)
    np.testing.assert_allclose(loo.scores, [0, 0, 1.001, 1.001])
    assert loo.extras["decision"]["step"] == 2 and loo.cost.forward_passes == 5

    # a threshold above every edge: nothing reaches the final turn, the turn_loo decision
    cut = backtrace(task, threshold=1.0)
    assert cut.extras["path"] == [] and not cut.scores.any()
    assert cut.extras["decision"]["step"] == 2 and cut.cost.forward_passes == 0
    alone = backtrace(task, threshold=1.0, suspicion="none")
    assert alone.extras["decision"] == {
        "agent": None,
        "step": None,
        "reason": "no influence edge: no turn reaches the final answer",
    }

    # a closing TERMINATE turn is not the outcome (the task skips it): the same backtrace
    turns = [*seats_log().turns, {"agent": "Planner", "content": "TERMINATE"}]
    closing = backtrace(AgentTask(AgentLog(turns), lm=gold_lm()), suspicion="none")
    assert closing.extras["root"] == 4 and closing.extras["path"] == [2, 4]
    np.testing.assert_allclose(closing.scores, [0, 0, 1, 1])

    # with the gold outcome the final turn is a unit but, being the root (the symptom), scores 0
    gold = backtrace(AgentTask(seats_log(), lm=gold_lm(), outcome="gold"))
    np.testing.assert_allclose(gold.scores, [0, 0, 2.001, 2.001, 0])
    assert gold.extras["decision"]["step"] == 2 and gold.params["sign"] == -1


def test_backtrace_ablation_edges_on_the_stand_in() -> None:
    lm = CopyLM()
    task = AgentTask(seats_log(), lm=lm)
    w = influence_graph(task, "ablation")
    n = len(task.log)
    assert lm.rows == (n - 1) * (n + 2) // 2 == 14
    # turn 3 "confirmed 452": its word 452 occurs in turn 2 only (and in its own header: never)
    assert np.isclose(w[2, 3], 1 - np.exp(-1.0))
    # turn 4 "452" after turns 0..3 holding 452 twice: dropping 2 or 3 removes one copy
    assert np.isclose(w[2, 4], 1 - np.exp(-1.0)) and np.isclose(w[3, 4], 1 - np.exp(-1.0))
    assert not np.tril(w).any() and ((w >= 0) & (w < 1)).all()
    a = backtrace(task, edges="ablation", suspicion="none")
    assert a.cost.forward_passes == 14 and a.extras["decision"]["step"] == 2


# --- agent Shapley --------------------------------------------------------------------------------
def test_agent_shapley_is_additive_on_an_additive_value() -> None:
    """With an additive value (the stand-in counts copies), each agent's φ is the sum of its
    turns' contributions; turn 0 is kept in every coalition, the Planner plays with step 4."""
    log = AgentLog(
        [
            {"agent": "Planner", "content": "Task: total 452 ?"},
            {"agent": "Searcher", "content": "452 452"},
            {"agent": "Coder", "content": "452"},
            {"agent": "Planner", "content": "maybe 452"},
            {"agent": "Coder", "content": "ok"},
            {"agent": "Verifier", "content": "452"},
        ]
    )
    lm = CopyLM()
    a = agent_shapley(AgentTask(log, lm=lm))
    assert a.extras["phi"] == {"Planner": 1.0, "Searcher": 2.0, "Coder": 1.0}
    assert a.extras["agent_scores"] == a.extras["phi"]
    np.testing.assert_allclose(a.scores, [0, 2, 0.5, 1, 0.5])  # φ shared over playing turns
    assert a.extras["decision"]["agent"] == "Searcher" and a.extras["decision"]["step"] == 1
    assert a.extras["step_blame"] == {"1": 2.0}
    assert len(a.extras["coalition_values"]) == 8
    assert a.extras["coalition_values"][0] == {"agents": [], "value": 1.0}  # turn 0 alone
    # 8 coalitions; the Searcher's one turn removed = the coalition without it: no extra pass
    assert a.cost.forward_passes == 8 == lm.rows
    assert a.params == {"max_agents": 5, "sign": 1}


def test_agent_shapley_efficiency_and_cost_on_the_tiny_model(tiny_lm: Any) -> None:
    log = AgentLog(
        [
            {"agent": "Planner", "content": "find the sum"},
            {"agent": "Coder", "content": "x = 3 + 4"},
            {"agent": "Runner", "content": "7"},
            {"agent": "Coder", "content": "so 7"},
            {"agent": "Planner", "content": "done"},
            {"agent": "Coder", "content": "7"},
        ]
    )
    task = AgentTask(log, lm=tiny_lm)
    rows = CountRows(tiny_lm)
    try:
        a = agent_shapley(task)
    finally:
        rows.remove()
    phi = a.extras["phi"]
    assert set(phi) == {"Planner", "Coder", "Runner"}
    full, first = task.values([task.units.compose(np.ones(5, bool)), log.serialize([0])])
    assert abs(sum(phi.values()) - (full - first)) < 1e-6  # efficiency (sign +1)
    assert abs(a.scores.sum() - (full - first)) < 1e-6
    top = a.extras["decision"]["agent"]
    n_top = len(task.units.groups()[top])
    single = len([u for u in task.units.groups()[top] if u != 0]) == 1
    assert a.cost.forward_passes == 2**3 + n_top - single == rows.count
    assert a.extras["decision"]["step"] in log.steps_of(top)
    assert str(a.extras["decision"]["step"]) in a.extras["step_blame"]
    again = agent_shapley(task)
    assert again.cost.forward_passes == 0 and np.array_equal(again.scores, a.scores)
    # gold outcome: sign −1, efficiency on the signed value
    gold = AgentTask(AgentLog(log.turns, ground_truth="7"), lm=tiny_lm, outcome="gold")
    g = agent_shapley(gold)
    gf, g0 = gold.values([gold.units.compose(np.ones(6, bool)), log.serialize([0])])
    assert g.params["sign"] == -1
    assert abs(sum(g.extras["phi"].values()) + (gf - g0)) < 1e-6
    round_trip(g)


def test_agent_shapley_bad_input(tiny_lm: Any) -> None:
    one = AgentLog([{"agent": "Solo", "content": f"step {i}"} for i in range(4)])
    with pytest.raises(InputError, match="at least 2 agents"):
        agent_shapley(AgentTask(one, lm=CopyLM()))
    # the human speaks only at turn 0 (always kept): one player only
    human = AgentLog([{"agent": "human", "content": "q"}] + [{"agent": "Bot", "content": "a"}] * 3)
    with pytest.raises(InputError, match="at least 2 agents"):
        agent_shapley(AgentTask(human, lm=CopyLM()))
    many = AgentLog([{"agent": f"A{i}", "content": f"t {i}"} for i in range(8)])
    lm = CopyLM()
    with pytest.raises(InputError, match=r"max_agents=5.*turn_loo"):
        agent_shapley(AgentTask(many, lm=lm))
    assert lm.rows == 0  # refused before any model call
    assert len(agent_shapley(AgentTask(many, lm=lm), max_agents=6).extras["phi"]) == 6
    with pytest.raises(InputError, match="max_agents"):
        agent_shapley(AgentTask(many, lm=lm), max_agents=1)


# --- costs on the tiny model -----------------------------------------------------------------------
class CountRows:
    """Counts the sequences the torch model runs (a forward pre-hook)."""

    def __init__(self, lm: Any) -> None:
        self.count = 0

        def hook(module: Any, args: tuple, kwargs: dict) -> None:
            self.count += int(kwargs["input_ids"].shape[0])

        self.handle = lm.model.register_forward_pre_hook(hook, with_kwargs=True)

    def remove(self) -> None:
        self.handle.remove()


def round_trip(a: Attribution) -> None:
    b = Attribution.from_dict(json.loads(json.dumps(a.to_dict(), allow_nan=False)))
    assert np.array_equal(a.scores, b.scores) and b.extras == a.extras


def test_costs_on_the_tiny_model(tiny_lm: Any) -> None:
    log = seats_log()
    n = len(log)  # 5 turns, 4 units with outcome="final"
    rows = CountRows(tiny_lm)
    try:
        task = AgentTask(log, lm=tiny_lm)
        loo = turn_loo(task)
        assert loo.cost.forward_passes == 4 + 1 == rows.count
        # cached: all turns (the last prefix) and turns 0..2 (= turn 3 removed): n_u − 1 passes
        prefix = prefix_drop(task)
        assert prefix.cost.forward_passes == 3 == rows.count - 5
        assert prefix_drop(AgentTask(log, lm=tiny_lm)).cost.forward_passes == 5
        before = rows.count
        bt = backtrace(AgentTask(log, lm=tiny_lm), edges="ablation")
        assert bt.cost.forward_passes == (n - 1) * (n + 2) // 2 + 4 + 1 == rows.count - before
        w = np.array([[0.0] * n for _ in range(n)])
        for j, i, x in bt.extras["edges"]:
            w[j, i] = x
        assert ((w >= 0) & (w < 1)).all() and not np.tril(w).any()
        assert bt.extras["path"] == [] or bt.extras["path"][-1] == n - 1
        # the ablation scorings equal direct full-context scorings of the same pair
        task2 = AgentTask(log, lm=tiny_lm)
        g1 = influence_graph(task2, "ablation")
        np.testing.assert_allclose(g1, w, atol=1e-5)
    finally:
        rows.remove()
    for a in (loo, prefix, bt):
        round_trip(a)
        assert a.task == "agents" and "decision" in a.extras and "agent_scores" in a.extras


def test_a_bfloat16_reader_scores_close_to_float32(tiny_lm: Any) -> None:
    """The bfloat16 path (prefix reuse included) runs end to end and values the full log within
    bfloat16's rounding of float32; turn effects below that rounding (a few hundredths of a nat
    on this tiny model) are not resolved, so only their size is checked."""
    import copy

    import torch

    from attribkit.models.lm import LanguageModel

    model = copy.deepcopy(tiny_lm.model).to(torch.bfloat16)
    # eager attention: torch's bfloat16 SDPA kernel packs for AMX whenever the hardware has it,
    # and fails when ATEN_CPU_CAPABILITY forces a lower instruction set on such a machine
    model.set_attn_implementation("eager")
    half = LanguageModel(model, tiny_lm.tokenizer, name="tiny-bf16")
    assert half.dtype == torch.bfloat16
    full = turn_loo(AgentTask(seats_log(), lm=tiny_lm))
    rounded = turn_loo(AgentTask(seats_log(), lm=half))
    assert np.isfinite(rounded.scores).all() and rounded.cost.forward_passes == 5
    v32, v16 = full.extras["full_value"], rounded.extras["full_value"]
    assert abs(v16 - v32) < 0.01 * abs(v32)
    assert np.abs(rounded.scores - full.scores).max() < 0.1


def test_ablation_edge_equals_a_direct_scoring(tiny_lm: Any) -> None:
    log = seats_log()
    task = AgentTask(log, lm=tiny_lm)
    w = influence_graph(task, "ablation")
    header = "Conversation of a multi-agent system:\n"
    full = header + log.serialize([0, 1, 2]) + "\nStep 3 - Verifier:"
    drop = header + log.serialize([0, 1]) + "\nStep 3 - Verifier:"
    lp = tiny_lm.logprob([full, drop], " confirmed 452", chat=False)
    assert np.isclose(w[2, 3], 1 - np.exp(-max(lp[0] - lp[1], 0.0)), atol=1e-5)


# --- the lexical graph and bad input ---------------------------------------------------------------
def test_lexical_graph_on_a_hand_written_log() -> None:
    log = AgentLog(
        [
            {
                "agent": "Planner",
                "content": "Read https://example.org/data.csv and sum the 'unit price' column.",
            },
            {
                "agent": "Coder",
                "content": "df = pd.read_csv('data.csv'); unit_price = df.price.sum()  # Planner asked",
            },
            {"agent": "Runner", "content": "unit_price: 5,280 (3 rows)"},
            {
                "agent": "Coder",
                "content": "So the total is 5280; see https://example.org/data.csv/",
            },
            {"agent": "Planner", "content": "FINAL ANSWER: 5280 from unitPrice"},
        ]
    )
    assert anchors(log.turns[0].content, log.agents) == {
        "url:https://example.org/data.csv",
        '"unit price',
    }
    assert anchors(log.turns[1].content, log.agents) == {
        '"data.csv',
        "id:data.csv",
        "id:pd.read_csv",
        "id:unit_price",
        "id:df.price.sum",
    }
    assert anchors(log.turns[2].content, log.agents) == {"id:unit_price", "#5280"}  # not "3"
    assert anchors(log.turns[3].content, log.agents) == {
        "#5280",
        "url:https://example.org/data.csv",
    }
    assert anchors(log.turns[4].content, log.agents) == {"#5280", "id:unitPrice"}
    assert anchors("Ask the Planner, said 'Coder'", ["Planner", "Coder"]) == set()
    w = influence_graph(log)
    expected = np.zeros((5, 5))
    expected[1, 2] = 1 / 2  # unit_price
    expected[0, 3] = 1 / 2  # the URL (trailing slash dropped)
    expected[2, 3] = 1 / 2  # 5280 = 5,280
    expected[2, 4] = expected[3, 4] = 1 / 2  # 5280
    np.testing.assert_allclose(w, expected)
    task = AgentTask(log, lm=CopyLM())
    a = backtrace(task, suspicion="none")
    # paths to the final turn: 2 → 4 and 3 → 4 (1/2), 0 → 3 → 4 and 1 → 2 → 4 (1/4)
    np.testing.assert_allclose(a.scores, [0.25, 0.25, 0.5, 0.5])
    assert a.extras["decision"]["step"] == 2 and a.extras["path"] == [2, 4]
    np.testing.assert_allclose(influence_graph(task), w)  # a task's graph is its log's


def test_bad_input(tiny_lm: Any) -> None:
    task = AgentTask(seats_log(), lm=CopyLM())
    with pytest.raises(InputError, match="edges must be one of lexical, ablation"):
        backtrace(task, edges="attention")
    with pytest.raises(InputError, match="edges must be one of"):
        influence_graph(seats_log(), "attention")
    with pytest.raises(InputError, match="AgentTask with lm"):
        influence_graph(seats_log(), "ablation")
    with pytest.raises(InputError, match="suspicion"):
        backtrace(task, suspicion="judge")
    with pytest.raises(InputError, match=r"threshold must be in \[0, 1\]"):
        backtrace(task, threshold=1.5)
    with pytest.raises(InputError, match="sign must be 1, -1"):
        turn_loo(task, sign=2)
    with pytest.raises(InputError, match="pass an AgentTask"):
        turn_loo(object())
    two = AgentTask(
        AgentLog([{"agent": "A", "content": "x"}, {"agent": "B", "content": "y"}]), lm=CopyLM()
    )
    for method in (turn_loo, prefix_drop, backtrace, agent_shapley):
        with pytest.raises(InputError, match="only 1 unit"):
            method(two)  # outcome "final": one turn unit left
    no_lm = AgentTask(seats_log())
    with pytest.raises(InputError, match="no language model"):
        turn_loo(no_lm)


# --- planted faults -------------------------------------------------------------------------------
PLANTED: list[tuple[list[tuple[str, str]], int]] = [
    (  # the Coder computes a wrong total
        [
            (
                "Planner",
                "Task: how many chairs does the hall need? Plan: Searcher finds the rows, Coder multiplies by the seats per row, Verifier checks.",
            ),
            (
                "Searcher",
                "The floor plan at https://example.org/hall-plan shows 24 rows with 18 seats per row.",
            ),
            ("Coder", "rows = 24; seats_per_row = 18; total_chairs = 452"),
            ("Verifier", "The plan source looks reliable and the code style is fine."),
            ("Planner", "FINAL ANSWER: 452"),
        ],
        2,
    ),
    (  # the Searcher reports a wrong figure that the answer copies
        [
            (
                "Planner",
                "Task: what is the height of the old lighthouse in metres? Searcher, please look it up.",
            ),
            (
                "Searcher",
                "According to https://example.org/lighthouse the lighthouse is 67 metres tall.",
            ),
            ("Coder", "No computation is needed here; I only formatted the value as an integer."),
            ("Verifier", "I agree, the reasoning is consistent and nothing is missing."),
            ("Planner", "Thanks everyone, we can finish now."),
            ("Planner", "FINAL ANSWER: 67"),
        ],
        1,
    ),
    (  # the Verifier "corrects" the right total into a wrong one
        [
            (
                "Planner",
                "Task: total pages of the three reports. Searcher lists them, Coder adds, Verifier checks.",
            ),
            ("Searcher", "The report index lists 120 pages, 85 pages and 143 pages."),
            ("Coder", "pages = [120, 85, 143]; total_pages = sum(pages)  # 348"),
            ("Planner", "Good, Verifier please confirm before we finish."),
            ("Verifier", "Correction: the total_pages value should be 391 after rechecking."),
            ("Planner", "FINAL ANSWER: 391"),
        ],
        4,
    ),
    (  # the Coder writes a wrong number that the Verifier repeats (the hard case: two copies)
        [
            (
                "Planner",
                "Task: the yearly cost of the subscription. Searcher finds the monthly price, Coder multiplies by 12.",
            ),
            ("Searcher", "The price page https://example.org/pricing says 645 dollars per month."),
            ("Planner", "Coder, please compute the yearly amount now."),
            ("Coder", "monthly = 645; yearly_cost = 7920"),
            ("Verifier", "Checked: the yearly cost is 7920 dollars."),
            ("Planner", "FINAL ANSWER: 7920"),
        ],
        3,
    ),
    (  # the Searcher misreads a table among turns full of other numbers
        [
            (
                "Planner",
                "Task: the population of the town in the 2010 census. Searcher, find the census table.",
            ),
            ("Searcher", "I opened https://example.org/census which covers 1990, 2000 and 2010."),
            ("Searcher", "The table row for the town reads 2010: 31592 inhabitants."),
            (
                "Coder",
                "No code is needed; the census_table was parsed without errors in 0.42 seconds.",
            ),
            ("Verifier", "The census source from 2011 is official, so the figure can be trusted."),
            ("Planner", "FINAL ANSWER: 31592"),
        ],
        2,
    ),
]


def planted_logs() -> list[AgentLog]:
    """Five synthetic logs (Planner, Searcher, Coder, Verifier) in each of which one agent at a
    known step writes a wrong number that the final answer copies, among distractor turns."""
    return [
        AgentLog(
            [{"agent": a, "content": c} for a, c in turns],
            mistake_agent=turns[step][0],
            mistake_step=step,
            meta={"id": f"planted-{k}"},
        )
        for k, (turns, step) in enumerate(PLANTED)
    ]


def test_planted_logs_and_their_lexical_backtrace() -> None:
    """Lexical backtrace alone (no model) on the planted logs: the faulty turn is the earliest
    turn the final answer's number comes from, so it wins every log."""
    for log in planted_logs():
        assert log.agent_at(log.mistake_step) == log.mistake_agent
        a = backtrace(AgentTask(log, lm=CopyLM()), suspicion="none")
        assert a.extras["decision"]["step"] == log.mistake_step, log.id
        assert a.extras["path"][0] == log.mistake_step and a.extras["path"][-1] == len(log) - 1


@pytest.mark.model
def test_planted_fault_recovery_with_smollm2(smollm2: Any) -> None:
    """The issue's target: turn ablation and backtrace put the faulty turn first in >= 4 of 5
    planted logs, judge-free with SmolLM2-135M (outcome: the failed final answer). Measured:
    4/5 each; the miss is planted-3, where a later turn repeats the wrong number, so removing
    either copy leaves the other (turn_loo blames turn 0, backtrace the repeating turn)."""
    hits = {"turn_loo": [], "backtrace": []}
    for log in planted_logs():
        task = AgentTask(log, lm=smollm2)
        loo = turn_loo(task)
        bt = backtrace(task)  # lexical edges, turn_loo suspicion: every prompt already scored
        assert bt.cost.forward_passes == 0
        hits["turn_loo"].append(loo.extras["decision"]["step"] == log.mistake_step)
        hits["backtrace"].append(bt.extras["decision"]["step"] == log.mistake_step)
    assert sum(hits["turn_loo"]) >= 4, hits
    assert sum(hits["backtrace"]) >= 4, hits
