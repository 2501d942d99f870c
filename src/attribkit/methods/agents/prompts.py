"""Prompts of the judge methods over multi-agent logs: Who&When's all-at-once, step-by-step and
binary search (Zhang, Yin et al., 'Which Agent Causes Task Failures and When? On Automated
Failure Attribution of LLM Multi-Agent Systems', ICML 2025) and A2P's abduction → action →
prediction scaffold (West et al., 'Abduct, Act, Predict: Scaffolding Causal Inference for
Automated Failure Attribution in Multi-Agent Systems', 2025).

The texts are attribkit's own wording of the published designs:

- all-at-once shows the log *unnumbered* (``agent: content`` lines, as the paper) and explains
  that steps count from 0; the reply is ``Agent Name: / Step Number: / Reason for Mistake:``;
- step-by-step shows the *numbered* prefix ``Step 0 - agent: ...`` up to the step judged and
  asks whether that step holds a mistake (Yes/No), asking the judge not to be overly critical;
- binary search shows a *numbered* segment and asks whether the decisive mistake lies in its
  upper half (the earlier steps) or its lower half (the later steps). Who&When's own segment is
  unnumbered, but its half descriptions name step numbers; numbering the lines lets the judge
  match them (A2P reports that step numbers matter for step accuracy);
- A2P shows the numbered log under ``PROBLEM`` / ``CORRECT ANSWER`` / ``CONVERSATION HISTORY``
  blocks, then asks for the three steps and the same three-line reply as all-at-once.

Every prompt states the problem when the log has a question, and adds the line giving the
correct answer only with ``with_answer=True`` (an InputError when the log has no ground truth):
that line is the only difference between Who&When's "with" and "without ground truth" settings.
Building a prompt costs no model call.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from attribkit.core.errors import InputError
from attribkit.tasks.agents import AgentLog

__all__ = [
    "AGENT_FIELD",
    "ANSWER_FIELD",
    "HALVES",
    "LOWER",
    "NO",
    "REASON_FIELD",
    "STEP_FIELD",
    "SYSTEM_ALL_AT_ONCE",
    "SYSTEM_BINARY_SEARCH",
    "SYSTEM_STEP",
    "UPPER",
    "YES",
    "YES_NO",
    "a2p_prompt",
    "all_at_once_prompt",
    "answer_line",
    "binary_search_prompt",
    "problem_line",
    "reply_reason",
    "step_prompt",
]

#: Field labels of the replies (what :meth:`Judge.ask` parses and a local judge scores).
AGENT_FIELD = "Agent Name"
STEP_FIELD = "Step Number"
REASON_FIELD = "Reason for Mistake"
ANSWER_FIELD = "Answer"
YES, NO = "Yes", "No"
YES_NO = (YES, NO)
UPPER, LOWER = "upper half", "lower half"
HALVES = (UPPER, LOWER)

SYSTEM_ALL_AT_ONCE = "You analyse conversations between AI agents and find where they went wrong."
SYSTEM_STEP = "You check a multi-agent conversation one step at a time, carefully and fairly."
SYSTEM_BINARY_SEARCH = (
    "You locate the decisive mistake inside a segment of a multi-agent conversation."
)


def problem_line(log: AgentLog) -> str:
    """``"The problem the agents worked on: {question}\\n"`` when the log has a question, else
    an empty string. No model calls."""
    q = log.question
    return f"The problem the agents worked on: {q}\n" if q is not None and q.strip() else ""


def answer_line(log: AgentLog, with_answer: bool) -> str:
    """``"The correct answer to the problem is: {ground truth}\\n"`` with ``with_answer``, else an
    empty string; InputError when ``with_answer`` is set and the log has no ground truth. No
    model calls."""
    if not with_answer:
        return ""
    gt = log.ground_truth
    if gt is None or not gt.strip():
        raise InputError(
            "with_answer=True shows the correct answer to the judge, but this log has no ground "
            "truth; pass with_answer=False or give the log a ground_truth"
        )
    return f"The correct answer to the problem is: {gt}\n"


def _header(log: AgentLog, with_answer: bool) -> str:
    head = problem_line(log) + answer_line(log, with_answer)
    return head + "\n" if head else ""


def all_at_once_prompt(log: AgentLog, with_answer: bool = False) -> str:
    """Who&When's all-at-once prompt: the whole log as unnumbered ``agent: content`` lines, the
    question (and answer), and the request for the responsible agent, the 0-based step of its
    first decisive mistake and the reason, as ``Agent Name: / Step Number: / Reason for
    Mistake:`` lines. No model calls."""
    agents = ", ".join(log.agents)
    return (
        "Several AI agents worked together on a real-world problem and reached a wrong "
        "solution. Find the agent that made the mistake, the step where it made it, and why.\n"
        + _header(log, with_answer)
        + "The conversation, one step per line (agent: what it said):\n\n"
        + log.serialize(numbered=False)
        + "\n\nFrom this conversation, tell:\n"
        f"1. Which agent made the mistake that is most directly responsible for the wrong "
        f"solution (one of: {agents}). If no agent made an obvious mistake, still choose the "
        "single most responsible one.\n"
        "2. The step where that agent first made the mistake. Steps count the lines above from "
        "0: in a conversation 'A: ...', 'B: ...', 'C: ...', 'A: ...', a mistake in C's line is "
        "step 2 and a mistake in A's second line is step 3.\n"
        "3. Why: the reason for your choice.\n\n"
        "Reply in exactly this format:\n"
        f"{AGENT_FIELD}: <the agent's name>\n"
        f"{STEP_FIELD}: <the step number>\n"
        f"{REASON_FIELD}: <your explanation>"
    )


def step_prompt(log: AgentLog, step: int, with_answer: bool = False) -> str:
    """Who&When's step-by-step prompt for ``step``: the numbered prefix ``Step 0 - agent: ...``
    up to and including ``step`` (the log text comes first so that consecutive prompts share a
    prefix), then whether that step holds a mistake — Yes or No, without being overly
    critical — as ``Answer: Yes|No`` and ``Reason:`` lines. No model calls."""
    if not 0 <= step < len(log):
        raise InputError(f"step {step} is out of range (0..{len(log) - 1})")
    agent = log.agent_at(step)
    return (
        "Several AI agents are working together on a real-world problem. Judge the "
        "conversation step by step.\n"
        + _header(log, with_answer)
        + "The conversation so far, one numbered step per line:\n\n"
        + log.serialize(range(step + 1), numbered=True)
        + f"\n\nThe latest step, step {step}, was taken by {agent}. Is there a mistake at this "
        "step: does it contain an error that could derail solving the problem or lead to a "
        "wrong solution? Do not be overly critical: answer Yes only for an error that clearly "
        "harms the process.\n\n"
        "Answer Yes or No, in exactly this format:\n"
        f"{ANSWER_FIELD}: Yes or No\n"
        "Reason: <a short explanation>"
    )


def binary_search_prompt(
    log: AgentLog, start: int, end: int, with_answer: bool = False
) -> tuple[str, int]:
    """Who&When's binary-search prompt over steps ``start..end`` (numbered lines) and the split
    ``mid = start + (end - start) // 2``: is the decisive mistake in the upper half (steps
    ``start..mid``) or the lower half (``mid + 1..end``)? Returns ``(prompt, mid)``; the reply
    is ``Answer: upper half|lower half``. No model calls."""
    if not 0 <= start < end < len(log):
        raise InputError(
            f"a binary-search segment needs 0 <= start < end < {len(log)}, got {start}..{end}"
        )
    mid = start + (end - start) // 2
    prompt = (
        "Several AI agents worked together on a real-world problem and failed to solve it. "
        "Your task is to locate the single most critical mistake, the one that led to the "
        "failure, inside a segment of their conversation.\n"
        + _header(log, with_answer)
        + f"The segment, from step {start} to step {end}:\n\n"
        + log.serialize(range(start, end + 1), numbered=True)
        + "\n\nIs the most critical mistake more likely in the upper half of this segment "
        f"(step {start} to step {mid}) or in the lower half (step {mid + 1} to step {end})? If "
        "no single mistake is clear, use your judgement and pick the half holding the step you "
        "find most responsible for the failure.\n\n"
        "Reply with only one of these two lines:\n"
        f"{ANSWER_FIELD}: {UPPER}\n"
        f"{ANSWER_FIELD}: {LOWER}"
    )
    return prompt, mid


def a2p_prompt(log: AgentLog, with_answer: bool = False) -> str:
    """A2P's prompt: ``PROBLEM`` (when the log has a question), ``CORRECT ANSWER`` (with
    ``with_answer``) and ``CONVERSATION HISTORY`` (numbered ``Step i - agent: content`` lines)
    blocks, the abduction → action → prediction instructions, and the three-line reply ``Agent
    Name: / Step Number: / Reason for Mistake:``. No model calls."""
    blocks = []
    q = log.question
    if q is not None and q.strip():
        blocks.append(f"PROBLEM: {q}\n")
    if with_answer:
        answer_line(log, True)  # InputError without a ground truth
        blocks.append(f"CORRECT ANSWER: {log.ground_truth}\n")
    head = "".join(blocks)
    return (
        "Several AI agents worked together on a problem and produced a wrong solution. Find the "
        "root cause of the failure by causal reasoning in three steps: abduction, action, "
        "prediction.\n\n"
        + (head + "\n" if head else "")
        + "CONVERSATION HISTORY:\n"
        + log.serialize(numbered=True)
        + "\n\nSTEP 1 - ABDUCTION (the hidden cause): for each action that may have gone wrong, "
        "infer what explains it — a gap in knowledge, a misreading, a false assumption, missing "
        "information — and single out the error that most plausibly caused the failure.\n"
        "STEP 2 - ACTION (the smallest fix): say what that agent should have done instead, as "
        "the minimal concrete intervention on that step.\n"
        "STEP 3 - PREDICTION (the counterfactual): imagine the next few turns had the fix been "
        "made, and follow the chain from the fix to the final result: would the agents then "
        "have reached the correct answer? Keep the error only if fixing it changes failure "
        "into success.\n\n"
        "Then give your attribution: the agent whose error is the decisive root cause, the step "
        "(the number in 'Step i') where it first occurs, and the causal reasoning behind it.\n\n"
        "Reply in exactly this format:\n"
        f"{AGENT_FIELD}: <the agent's name>\n"
        f"{STEP_FIELD}: <the step number>\n"
        f"{REASON_FIELD}: <your abduction, intervention and prediction, in under 150 words>"
    )


def reply_reason(text: str | None, labels: Sequence[str] = (REASON_FIELD, "Reason")) -> str:
    """The explanation in a judge's free-text reply: everything after the first ``label:`` of
    ``labels`` tried in order (markdown ``**`` removed, whitespace trimmed); an empty string
    when there is none. No model calls."""
    if not text:
        return ""
    for label in labels:
        m = re.search(rf"(?<!\w){re.escape(label)}\s*\**\s*:\s*(.*)", text, re.I | re.S)
        if m:
            return m.group(1).replace("**", "").strip()
    return ""
