"""The default context method: learned attention heads when the model has a heads file,
otherwise leave-one-out (attribkit's default, chosen by measurement in
``benchmarks/context_traceback.py``)."""

from __future__ import annotations

from typing import Any

from attribkit.core.attribution import Attribution
from attribkit.core.cost import Budget
from attribkit.core.registry import check_units
from attribkit.methods.context.heads import heads_path

__all__ = ["auto"]


def auto(task: Any, *, budget: Budget | None = None) -> Attribution:
    """The default context method: ``attention_heads`` when a heads file ships for the model
    (one forward pass, any n), otherwise leave-one-out (n + 1 passes). The method that ran is in
    ``params['method']``; ``extras`` are that method's."""
    check_units(task)
    chosen = "attention_heads" if heads_path(task.lm).is_file() else "loo"
    result = task.attribute(chosen, budget=budget)
    result.params = {"method": chosen, **result.params}
    result.method = "auto"
    return result
