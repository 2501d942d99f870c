"""Who&When's binary-search judge: halve the log until one step is left (Zhang, Yin et al.,
'Which Agent Causes Task Failures and When? On Automated Failure Attribution of LLM Multi-Agent
Systems', ICML 2025)."""

from __future__ import annotations

from typing import Any

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.registry import check_units
from attribkit.methods.agents._judged import JudgeRun, agent_max, judged_cost, unit_scores
from attribkit.methods.agents.prompts import (
    ANSWER_FIELD,
    HALVES,
    LOWER,
    SYSTEM_BINARY_SEARCH,
    UPPER,
    binary_search_prompt,
)

__all__ = ["binary_search"]


def binary_search(task: Any, *, seed: int | None = 0, system: bool = True) -> Attribution:
    """Search the log's steps [0, n−1] by halving: for the segment [start, end] with
    ``mid = start + (end − start) // 2``, ask the task's judge whether the decisive mistake is
    in the upper half (steps start..mid) or the lower half (mid+1..end), showing the segment as
    numbered lines (:func:`~attribkit.methods.agents.prompts.binary_search_prompt`; the correct
    answer too with ``task.with_answer``, InputError when the log has none), and go on in that
    half until one step is left: the decision (that step, its agent). A reply naming neither
    half picks one at random, as the authors' code, drawn from ``np.random.default_rng(seed)``
    and counted in ``extras["unparsed"]`` and ``extras["random_picks"]``. ``system``: send the
    method's system message.

    Per-turn scores accumulate the halvings: each time a turn's segment is split, the kept
    half's turns gain δ and the dropped half's lose δ (and are not asked about again), with δ
    the judge's log-odds of its choice, |log p(upper) − log p(lower)|, when it gives option
    scores (:class:`~attribkit.models.judge.LocalJudge`), else 1. Every turn is scored; the
    found step scores highest. ``agent_scores``: each agent's highest turn score. Extras:
    ``path`` (each halving: start, end, mid, half, random), ``random_picks``, ``judge_calls``,
    ``unparsed``, ``replies`` (raw texts, which may quote the log), ``prompt_tokens``.

    Costs ⌈log₂ n⌉ judge calls at most (⌊log₂ n⌋ at least) for an n-turn log (a local judge:
    two forward passes per call).
    """
    run = JudgeRun(task, "binary_search")
    check_units(run.task)
    rng = np.random.default_rng(seed)
    sys_msg = SYSTEM_BINARY_SEARCH if system else None
    n = len(run.log)
    acc = np.zeros(n)
    path: list[dict[str, Any]] = []
    start, end = 0, n - 1
    with judged_cost(run.task) as cost:
        while start < end:
            prompt, mid = binary_search_prompt(run.log, start, end, run.with_answer)
            v = run.ask(prompt, {ANSWER_FIELD: list(HALVES)}, sys_msg).fields[ANSWER_FIELD]
            random = v.choice is None
            upper = bool(rng.integers(2) == 0) if random else v.choice == UPPER
            delta = abs(v.scores[UPPER] - v.scores[LOWER]) if v.scores and not random else 1.0
            keep, drop = ((start, mid), (mid + 1, end)) if upper else ((mid + 1, end), (start, mid))
            acc[keep[0] : keep[1] + 1] += delta
            acc[drop[0] : drop[1] + 1] -= delta
            path.append(
                {
                    "start": start,
                    "end": end,
                    "mid": mid,
                    "half": UPPER if upper else LOWER,
                    "random": random,
                }
            )
            start, end = keep
    step = start
    picks = sum(p["random"] for p in path)
    reason = f"binary search: {len(path)} halvings narrowed the log to step {step}"
    if picks:
        reason += f" ({picks} of them random: the reply named no half)"
    per_step = {i: float(acc[i]) for i in range(n)}
    return run.task.result(
        unit_scores(run.task, per_step, np.nan),
        "binary_search",
        run.params(seed=seed, system=system),
        cost,
        decision={"agent": run.log.agent_at(step), "step": step, "reason": reason},
        agent_scores=agent_max(run.log, per_step),
        path=path,
        random_picks=picks,
        **run.extras(),
    )
