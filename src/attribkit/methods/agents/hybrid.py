"""Who&When's hybrid judge: all-at-once for the agent, then step-by-step over that agent's
turns (Zhang, Yin et al., 'Which Agent Causes Task Failures and When? On Automated Failure
Attribution of LLM Multi-Agent Systems', ICML 2025, Table 3)."""

from __future__ import annotations

from typing import Any

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.registry import check_units
from attribkit.methods.agents._judged import (
    JudgeRun,
    ask_agent_step,
    judged_cost,
    scan_steps,
    unit_scores,
)
from attribkit.methods.agents.prompts import SYSTEM_ALL_AT_ONCE, SYSTEM_STEP, all_at_once_prompt

__all__ = ["hybrid"]


def hybrid(task: Any, *, system: bool = True) -> Attribution:
    """Ask the task's judge the all-at-once question
    (:func:`~attribkit.methods.agents.all_at_once.all_at_once`) and keep its agent; then ask
    step-by-step's Yes/No question (:func:`~attribkit.methods.agents.step_by_step.step_by_step`)
    at that agent's turns only, in order, each with the numbered log up to that turn, stopping
    at the first Yes. With ``task.with_answer`` every prompt gives the correct answer
    (InputError when the log has none). ``system``: send the methods' system messages.

    The decision is the agent and its first turn judged a mistake, with the judge's reason.
    When none of its turns is judged a mistake, the step is all-at-once's own step if that is
    one of the agent's turns (``extras["fallback"]`` is ``"all_at_once_step"``), else the
    agent's turn with the highest step-by-step score, the earliest on ties
    (``"highest_judged_turn"``); the paper does not say, this keeps agent and step consistent. When the
    all-at-once reply names no agent, nothing more is asked and the decision is agent None,
    step None (``extras["fallback"]`` is ``"unparsed_agent"``).

    Per-turn scores: step-by-step's at the agent's judged turns (log p(Yes) − log p(No) from a
    judge giving option scores, else 1 for Yes, 0 for No); the other turns are unscored (NaN)
    and rank after them in all-at-once's step order (``extras["ranking"]``). When no unit was
    judged (unparsed agent, or an agent speaking only in the final turn, left out of the units)
    the scores are all-at-once's. ``agent_scores``: all-at-once's agent scores. Extras:
    ``all_at_once`` (its agent and step), ``judged_steps``, ``unparsed_steps``, ``fallback``,
    ``judge_calls``, ``unparsed``, ``replies`` (raw texts, which may quote the log),
    ``prompt_tokens``.

    Costs 1 + at most n_a judge calls, n_a the number of turns of the chosen agent.
    """
    run = JudgeRun(task, "hybrid")
    check_units(run.task)
    prompt = all_at_once_prompt(run.log, run.with_answer)
    with judged_cost(run.task) as cost:
        first = ask_agent_step(run, prompt, SYSTEM_ALL_AT_ONCE if system else None)
        steps = [] if first.agent is None else run.log.steps_of(first.agent)
        scan = (
            None if first.agent is None else scan_steps(run, steps, SYSTEM_STEP if system else None)
        )
    prior = unit_scores(run.task, first.step_scores, 0.0)
    ranking = [int(i) for i in np.argsort(-prior, kind="stable")]
    fallback = None
    if scan is None:
        scores = prior
        fallback = "unparsed_agent"
        decision = {
            "agent": None,
            "step": None,
            "reason": "hybrid: the all-at-once reply named no agent (unparsed)",
        }
    else:
        scores = unit_scores(run.task, scan.judged, np.nan)
        if not np.isfinite(scores).any():  # the agent speaks only outside the units
            scores = prior
        if scan.found is not None:
            step = scan.found
            reason = scan.reason or "hybrid: the agent's first turn judged a mistake"
        elif first.step in steps:
            fallback, step = "all_at_once_step", first.step
            reason = f"hybrid: no turn of {first.agent} judged a mistake; all-at-once's step"
        else:
            fallback = "highest_judged_turn"
            step = max(steps, key=lambda s: (scan.judged[s], -s))
            reason = (
                f"hybrid: no turn of {first.agent} judged a mistake and all-at-once's step is "
                "not one of its turns; its turn the judge found most suspect"
            )
        decision = {"agent": first.agent, "step": step, "reason": reason}
    return run.task.result(
        scores,
        "hybrid",
        run.params(system=system),
        cost,
        decision=decision,
        agent_scores=first.agent_scores,
        all_at_once={"agent": first.agent, "step": first.step},
        judged_steps=[] if scan is None else sorted(scan.judged),
        unparsed_steps=[] if scan is None else scan.unparsed_steps,
        fallback=fallback,
        ranking=ranking,
        **run.extras(),
    )
