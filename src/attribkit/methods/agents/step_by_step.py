"""Who&When's step-by-step judge: one Yes/No question per step, stopping at the first mistake
(Zhang, Yin et al., 'Which Agent Causes Task Failures and When? On Automated Failure
Attribution of LLM Multi-Agent Systems', ICML 2025)."""

from __future__ import annotations

from typing import Any

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.registry import check_units
from attribkit.methods.agents._judged import (
    JudgeRun,
    agent_max,
    judged_cost,
    scan_steps,
    unit_scores,
)
from attribkit.methods.agents.prompts import SYSTEM_STEP

__all__ = ["step_by_step"]


def step_by_step(task: Any, *, system: bool = True) -> Attribution:
    """For steps i = 0, 1, ... of the log, ask the task's judge whether step i holds a mistake,
    showing the numbered log up to step i
    (:func:`~attribkit.methods.agents.prompts.step_prompt`: answer Yes or No, without being
    overly critical; the correct answer too with ``task.with_answer``, InputError when the log
    has none), and stop at the first Yes. ``system``: send the method's system message.

    The decision is that step and its agent, with the judge's reason; when no step is judged a
    mistake the decision is agent None, step None (Who&When then predicts nothing, which its
    scorer counts as wrong). An unparsed reply counts as No and the scan goes on (as the
    authors' code), counted in ``extras["unparsed"]`` and listed in
    ``extras["unparsed_steps"]``.

    Per-turn scores, for the judged steps: log p(Yes) − log p(No) from a judge that gives
    option scores (:class:`~attribkit.models.judge.LocalJudge`), else 1 for Yes and 0 for No or
    an unparsed reply. Steps after the stop were never judged: their score is NaN (unscored;
    they rank last, in step order). ``agent_scores``: each agent's highest judged score (agents
    with no judged turn are absent). Extras: ``judged_steps``, ``judge_calls``, ``unparsed``,
    ``unparsed_steps``, ``replies`` (raw texts, which may quote the log), ``prompt_tokens``.

    Costs at most n judge calls for an n-turn log (i* + 1 when step i* is the first Yes; a
    local judge: two forward passes per call).
    """
    run = JudgeRun(task, "step_by_step")
    check_units(run.task)
    with judged_cost(run.task) as cost:
        scan = scan_steps(run, range(len(run.log)), SYSTEM_STEP if system else None)
    if scan.found is None:
        decision = {
            "agent": None,
            "step": None,
            "reason": f"step-by-step: no step judged a mistake in {len(scan.judged)} steps",
        }
    else:
        decision = {
            "agent": run.log.agent_at(scan.found),
            "step": scan.found,
            "reason": scan.reason or "step-by-step: the first step the judge found a mistake in",
        }
    return run.task.result(
        unit_scores(run.task, scan.judged, np.nan),
        "step_by_step",
        run.params(system=system),
        cost,
        decision=decision,
        agent_scores=agent_max(run.log, scan.judged),
        judged_steps=sorted(scan.judged),
        unparsed_steps=scan.unparsed_steps,
        **run.extras(),
    )
