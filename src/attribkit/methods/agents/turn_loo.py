"""Turn ablation: which turn of a multi-agent log, removed, most changes the model's belief in
the outcome (a judge-free reading of failure attribution after Zhang, Yin et al., 'Which Agent
Causes Task Failures and When? On Automated Failure Attribution of LLM Multi-Agent Systems',
ICML 2025; the single-step intervention of Ma et al., 'Automatic Failure Attribution and
Critical Step Prediction Method for Multi-Agent Systems Based on Causal Inference', 2025)."""

from __future__ import annotations

from typing import Any

from attribkit.core.attribution import Attribution
from attribkit.core.cost import measure
from attribkit.core.registry import check_units
from attribkit.methods.agents._common import (
    agent_task,
    blame_sign,
    removal_effect,
    turn_ablation,
)

__all__ = ["turn_loo"]


def turn_loo(task: Any, *, sign: int | None = None) -> Attribution:
    """Leave-one-turn-out blame over the turns of an :class:`AgentTask`.

    With v(S) = log p(outcome | question, turns S, answer cue) (:meth:`AgentTask.values`), turn
    i's blame is ``sign · (v(all) − v(all without turn i))`` (higher = more to blame):

    - outcome ``"final"`` (the system's own failed answer; the default) and a given text:
      ``sign = +1`` — a turn that *supports* the wrong outcome is to blame;
    - outcome ``"gold"``: ``sign = −1`` — a turn whose presence *lowers* belief in the correct
      answer is to blame, i.e. blame = v(without i) − v(all).

    ``sign`` (+1/−1) overrides the default; the sign used is recorded in ``params``. The
    decision is the highest-blame turn and its agent, ties to the earliest turn (Who&When's
    "earliest decisive error"). Returns an Attribution over the turns with
    ``extras["agent_scores"]`` (sums of turn blames), ``extras["decision"]`` and
    ``extras["full_value"]`` (v(all)).

    Costs n + 1 forward passes for n turn units (one batched call; with a local LM one full pass
    whose key-value cache the n ablated prompts reuse up to the removed turn); prompts the task
    already scored cost nothing.
    """
    task = agent_task(task, "turn_loo")
    check_units(task)
    s = blame_sign(task, sign)
    with measure(task.meter) as cost:
        full, _, blame = turn_ablation(task, s)
    decision = task.decision_from_scores(
        blame, f"turn whose removal most {removal_effect(s)} (ties: earliest)"
    )
    return task.result(blame, "turn_loo", {"sign": s}, cost, decision, full_value=full)
