"""Helpers shared by the judge-free agents methods: the task check, the blame sign and the
single-turn ablation they all build on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from attribkit.core.errors import InputError
from attribkit.tasks.agents import AgentTask

__all__ = [
    "agent_task",
    "blame_sign",
    "keep_all_but",
    "outcome_phrase",
    "removal_effect",
    "turn_ablation",
]


def agent_task(task: Any, method: str) -> AgentTask:
    """``task`` itself when it is an :class:`AgentTask`; InputError otherwise. No model calls."""
    if not isinstance(task, AgentTask):
        raise InputError(
            f"{method} attributes a multi-agent log: pass an AgentTask (AgentTask(log, lm=...) or "
            f"attribkit.attribute_agents(log, method={method!r}, lm=...)), got "
            f"{type(task).__name__}"
        )
    return task


def blame_sign(task: AgentTask, sign: int | None) -> int:
    """+1 when blame is *support* for the outcome, −1 when blame is *lowering* it.

    The default follows ``task.outcome_kind``: ``"final"`` (the system's own, failed final
    answer) and a given text (taken as a failed outcome) → +1, a turn is to blame when it raises
    log p(outcome); ``"gold"`` (the correct answer) → −1, a turn is to blame when it lowers
    log p(gold). ``sign`` (+1 or −1) overrides it, e.g. −1 for a given text that is the correct
    answer. No model calls."""
    if sign is None:
        return -1 if task.outcome_kind == "gold" else 1
    if isinstance(sign, bool) or sign not in (1, -1):
        raise InputError(f"sign must be 1, -1 or None (from the task's outcome), got {sign!r}")
    return int(sign)


def outcome_phrase(sign: int) -> str:
    """How a positive blame reads for ``sign``, for decision reasons."""
    return "belief in the failed outcome" if sign > 0 else "belief in the correct answer"


def removal_effect(sign: int) -> str:
    """What removing a blamed turn does, for decision reasons."""
    return (
        "lowers belief in the failed outcome" if sign > 0 else "raises belief in the correct answer"
    )


def keep_all_but(n: int, i: int) -> np.ndarray:
    """A keep-mask over ``n`` units with unit ``i`` dropped."""
    mask = np.ones(n, dtype=bool)
    mask[i] = False
    return mask


def turn_ablation(
    task: AgentTask, sign: int, units: Sequence[int] | None = None
) -> tuple[float, np.ndarray, np.ndarray]:
    """Single-turn ablation: ``(v(all), v(all without unit i) for each i, blame_i)`` with
    blame_i = sign · (v(all) − v(all without i)), for ``units`` (unit indices; all when None).
    One batched :meth:`AgentTask.values` call: 1 + len(units) forward passes, fewer when the
    task already scored some of these prompts."""
    n = task.n_units
    idx = list(range(n)) if units is None else [int(u) for u in units]
    texts = [task.units.compose(np.ones(n, dtype=bool))]
    texts += [task.units.compose(keep_all_but(n, i)) for i in idx]
    values = task.values(texts)
    full, without = float(values[0]), values[1:]
    return full, without, sign * (full - without)
