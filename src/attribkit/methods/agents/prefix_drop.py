"""Prefix drop: the step of a multi-agent log where the model's belief in the outcome moves most
as the turns are read in order (the judge-free prefix sweep of the attribkit design brief,
after the forced-answer curve of Bogdan, Macar, Nanda & Conmy, 'Thought Anchors: Which LLM
Reasoning Steps Matter?', 2025, applied to Who&When's question of Zhang, Yin et al., 'Which
Agent Causes Task Failures and When?', ICML 2025)."""

from __future__ import annotations

from typing import Any

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import measure
from attribkit.core.registry import check_units
from attribkit.methods.agents._common import agent_task, blame_sign, outcome_phrase

__all__ = ["prefix_drop"]


def prefix_drop(task: Any, *, sign: int | None = None) -> Attribution:
    """Blame each turn of an :class:`AgentTask` by the change its arrival makes to the
    outcome's log-probability along the log.

    The curve v_i = log p(outcome | question, turns 0..i, answer cue) for i = −1 (no turn) ..
    n−1 is scored in one sweep; turn i's blame is ``sign · (v_i − v_{i−1})``: with outcome
    ``"gold"`` (``sign = −1``) the step where belief in the correct answer *drops*, with
    ``"final"`` (the failed answer) or a given text (``sign = +1``) the step where belief in
    the wrong answer *rises*. Blames sum to sign · (v_{n−1} − v_{−1}). ``sign`` overrides the
    default and is recorded in ``params``. The decision is the highest-blame turn, ties to the
    earliest. Returns an Attribution over the turns with ``extras["values"]`` (the n + 1
    curve values, first = no turn), ``agent_scores`` and ``decision``.

    Costs n + 1 forward passes (one batched call; with a local LM one full pass whose key-value
    cache every prefix reuses, so each of the n others runs only the answer cue and the
    outcome); prompts the task already scored cost nothing.
    """
    task = agent_task(task, "prefix_drop")
    check_units(task)
    s = blame_sign(task, sign)
    n = task.n_units
    keep = np.arange(n)[None, :] < np.arange(n + 1)[:, None]  # row k keeps the first k turns
    with measure(task.meter) as cost:
        values = task.values(task.units.compose_batch(keep))
    blame = s * np.diff(values)
    move = "rises" if s > 0 else "drops"
    decision = task.decision_from_scores(
        blame, f"turn at which {outcome_phrase(s)} {move} most (ties: earliest)"
    )
    return task.result(blame, "prefix_drop", {"sign": s}, cost, decision, values=values.tolist())
