"""A2P: all-at-once attribution scaffolded by abduction, action and prediction (West et al.,
'Abduct, Act, Predict: Scaffolding Causal Inference for Automated Failure Attribution in
Multi-Agent Systems', 2025), on Who&When's all-at-once setting (Zhang, Yin et al., 'Which Agent
Causes Task Failures and When? On Automated Failure Attribution of LLM Multi-Agent Systems',
ICML 2025)."""

from __future__ import annotations

from typing import Any

from attribkit.core.attribution import Attribution
from attribkit.methods.agents._judged import ask_once
from attribkit.methods.agents.prompts import a2p_prompt

__all__ = ["a2p"]


def a2p(task: Any, *, system: bool = True) -> Attribution:
    """Ask the task's judge once with A2P's prompt
    (:func:`~attribkit.methods.agents.prompts.a2p_prompt`): the ``PROBLEM`` (when the log has a
    question), the ``CORRECT ANSWER`` (only with ``task.with_answer``; InputError when the log
    has none) and the numbered ``CONVERSATION HISTORY``, then three steps in one pass —
    abduction (the hidden cause of each suspect action), action (the minimal corrective
    intervention), prediction (the counterfactual trajectory: does the fix turn failure into
    success?) — and the reply ``Agent Name: / Step Number: / Reason for Mistake:``.
    ``system``: send the method's system message.

    Scores, decision and extras as :func:`~attribkit.methods.agents.all_at_once.all_at_once`:
    per-turn step log-probabilities from a local judge, else 1 for the chosen step and 0
    elsewhere; the decision is the judge's agent, step and reason (None when unparsed).

    Costs 1 judge call (a local judge: one forward pass per agent and per step option).
    """
    return ask_once(task, "a2p", a2p_prompt, "A2P", system)
