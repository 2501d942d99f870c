"""Who&When's all-at-once judge: the whole log in one prompt, one answer (Zhang, Yin et al.,
'Which Agent Causes Task Failures and When? On Automated Failure Attribution of LLM Multi-Agent
Systems', ICML 2025)."""

from __future__ import annotations

from typing import Any

from attribkit.core.attribution import Attribution
from attribkit.methods.agents._judged import ask_once
from attribkit.methods.agents.prompts import all_at_once_prompt

__all__ = ["all_at_once"]


def all_at_once(task: Any, *, system: bool = True) -> Attribution:
    """Ask the task's judge once, showing the whole log as unnumbered ``agent: content`` lines
    (the paper's all-at-once; :func:`~attribkit.methods.agents.prompts.all_at_once_prompt`),
    which agent made the decisive mistake, at which 0-based step, and why; with
    ``task.with_answer`` the prompt also gives the correct answer (InputError when the log has
    none). ``system``: send the method's system message.

    The judge chooses among the log's agents (``Agent Name``) and steps 0..n−1 (``Step
    Number``; the final turn included, as the paper, even when it is not a unit); the reason is
    the reply's text after ``Reason for Mistake:`` (a local judge gives none). Per-turn scores:
    the judge's log-probability of each step (:class:`~attribkit.models.judge.LocalJudge`),
    else 1 for the chosen step and 0 elsewhere; ``agent_scores`` likewise over agents. The
    decision is the judge's agent and step (either None when the reply did not name it, counted
    in ``extras["unparsed"]``). Extras: ``judge_calls``, ``unparsed``, ``replies`` (raw texts,
    which may quote the log), ``prompt_tokens``.

    Costs 1 judge call (a local judge: one forward pass per agent and per step option).
    """
    return ask_once(task, "all_at_once", all_at_once_prompt, "all-at-once", system)
