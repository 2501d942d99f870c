"""Agent Shapley: exact Shapley values over the agents of a multi-agent log, then the critical
step inside the most-blamed agent (after Ma, Zhu, Guo, Shi, Shen, Liu & Liang, 'Automatic
Failure Attribution and Critical Step Prediction Method for Multi-Agent Systems Based on Causal
Inference', 2025; the agent-then-step split of Who&When's hybrid method, Zhang, Yin et al.,
'Which Agent Causes Task Failures and When?', ICML 2025).

The paper's characteristic function could not be read (no code); here v(S) is the judge-free
value of the log keeping only the turns of the agents in S, in their original order.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import measure
from attribkit.core.errors import InputError
from attribkit.core.registry import check_units
from attribkit.methods.agents._common import (
    agent_task,
    blame_sign,
    keep_all_but,
    removal_effect,
)

__all__ = ["agent_shapley"]


def _shapley(values: np.ndarray, a: int) -> np.ndarray:
    """Exact Shapley values of ``a`` players from ``values[bits]`` of every coalition (bit k of
    ``bits`` = player k is in). No model calls."""
    size = np.array([bin(b).count("1") for b in range(1 << a)])
    weight = np.array(
        [math.factorial(k) * math.factorial(a - k - 1) / math.factorial(a) for k in range(a)]
    )
    phi = np.zeros(a)
    for k in range(a):
        without = np.array([b for b in range(1 << a) if not b >> k & 1])
        phi[k] = float(np.sum(weight[size[without]] * (values[without | 1 << k] - values[without])))
    return phi


def agent_shapley(task: Any, *, max_agents: int = 5, sign: int | None = None) -> Attribution:
    """Exact agent-level Shapley values of an :class:`AgentTask`, and the critical step inside
    the most-blamed agent.

    Players are the agents (:meth:`TurnUnits.groups`). The first turn (the task statement, or
    the human's question) is kept in *every* coalition: v(∅) is the value of turn 0 alone, and
    when turn 0's speaker also speaks later it plays with its other turns only (an agent that
    speaks only at turn 0, e.g. Hand-Crafted's ``human``, is no player). v(S) = sign · log
    p(outcome | question, turn 0 and the turns of the agents in S in their original order,
    answer cue), with ``sign`` as in :func:`turn_loo` (+1 for the failed ``"final"`` answer or
    a given text, −1 for ``"gold"``). φ is exact over all 2^A coalitions, so it is efficient:
    Σφ = sign · (v(all turns) − v(turn 0 only)).

    Decision: the agent with the highest φ (ties: the one speaking first); its step is the turn
    of that agent (turn 0 included when it is theirs) whose single removal most lowers the
    signed value (turn_loo's blame restricted to the agent), ties to the earliest.

    Per-turn scores: each playing agent's φ shared equally among its playing turns (turn 0
    scores 0), so turn scores sum to φ per agent and to v(all) − v(turn 0) overall. Extras:
    ``phi`` (agent → φ), ``coalition_values`` (a list of ``{"agents", "value"}``, the signed
    v(S) for every coalition), ``step_blame`` (step → blame for the top agent's turns),
    ``agent_scores`` (= ``phi``, 0 for agents that do not play) and ``decision``.

    Costs 2^A forward passes for the coalitions (one batched call; the grand coalition is the
    full log) plus n_a for the single-turn ablations of the top agent's n_a turns, minus those
    already scored (when the agent has one playing turn, its ablation is the coalition without
    it); prompts the task already scored cost nothing. A log with fewer than 2 playing agents is
    an InputError; so is one with more than ``max_agents`` (default 5: 32 coalitions).
    """
    task = agent_task(task, "agent_shapley")
    check_units(task)
    s = blame_sign(task, sign)
    if isinstance(max_agents, bool) or not isinstance(max_agents, int) or max_agents < 2:
        raise InputError(f"max_agents must be an integer >= 2, got {max_agents!r}")
    n = task.n_units
    groups = {a: [u for u in us if u != 0] for a, us in task.units.groups().items()}
    players = [a for a, us in groups.items() if us]
    if len(players) < 2:
        raise InputError(
            f"Shapley over agents needs at least 2 agents speaking after the first turn, but "
            f"this log has {len(players)} ({', '.join(players) or 'none'}); use turn_loo or "
            "prefix_drop to blame its turns"
        )
    if len(players) > max_agents:
        raise InputError(
            f"this log has {len(players)} agents, more than max_agents={max_agents}: exact "
            f"Shapley needs 2^{len(players)} = {2 ** len(players)} coalition passes; raise "
            "max_agents, or use turn_loo (n + 1 passes)"
        )
    a = len(players)
    member = np.zeros((a, n), dtype=bool)
    for k, p in enumerate(players):
        member[k, groups[p]] = True
    masks = np.zeros((1 << a, n), dtype=bool)
    masks[:, 0] = True
    for bits in range(1 << a):
        for k in range(a):
            if bits >> k & 1:
                masks[bits] |= member[k]
    with measure(task.meter) as cost:
        values = s * task.values(task.units.compose_batch(masks))
        phi = _shapley(values, a)
        top = players[int(np.argmax(phi))]
        steps = task.units.groups()[top]
        loo = s * task.values(
            task.units.compose_batch(np.stack([keep_all_but(n, u) for u in steps]))
        )
    full = float(values[-1])
    blame = full - loo
    best = steps[int(np.argmax(blame))]
    unit = task.units[best]
    scores = np.zeros(n)
    for k, p in enumerate(players):
        scores[groups[p]] = phi[k] / len(groups[p])
    phis = {p: float(phi[k]) for k, p in enumerate(players)}
    decision = {
        "agent": top,
        "step": int(unit.meta["step"]),
        "reason": (
            "agent with the highest Shapley value of "
            + ("support for the failed outcome" if s > 0 else "harm to the correct answer")
            + f"; its turn whose removal alone most {removal_effect(s)} (ties: earliest)"
        ),
    }
    return task.result(
        scores,
        "agent_shapley",
        {"max_agents": max_agents, "sign": s},
        cost,
        decision,
        agent_scores={ag: phis.get(ag, 0.0) for ag in task.units.groups()},
        phi=phis,
        coalition_values=[
            {"agents": [p for k, p in enumerate(players) if bits >> k & 1], "value": float(v)}
            for bits, v in enumerate(values)
        ],
        step_blame={
            str(task.units[u].meta["step"]): float(b) for u, b in zip(steps, blame, strict=True)
        },
    )
