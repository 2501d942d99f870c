"""The default context method, chosen by measurement on real questions
(``benchmarks/context_real.py``: HotpotQA and SQuAD with annotators' gold evidence).

Short contexts (at most ``LONG`` units) run ``hybrid``: the learned attention heads rank the
units and leave-one-out verifies the top four, which costs about what leave-one-out costs there
and beat the heads alone on SQuAD paragraphs (precision@1 0.86 vs 0.75). Long contexts run the
learned ``attention_heads`` alone: one forward pass, and on HotpotQA's ~40 sentences the best
precision@1 of the model-based methods tried (0.81; leave-one-out 0.73 at ~43 passes). A model without a
heads file runs leave-one-out."""

from __future__ import annotations

from typing import Any

from attribkit.core.attribution import Attribution
from attribkit.core.cost import Budget
from attribkit.core.registry import check_units
from attribkit.methods.context.heads import heads_path

__all__ = ["LONG", "auto"]

#: Contexts with more units than this run the attention heads alone.
LONG = 16


def auto(task: Any, *, budget: Budget | None = None) -> Attribution:
    """The default context method: with a heads file for the model, ``hybrid`` (heads prior,
    leave-one-out on its top 4: at most 6 forward passes) when the context has at most ``LONG``
    units, else ``attention_heads`` (1 forward pass); without one, leave-one-out (n + 1 passes).
    The method that ran is in ``params['method']``; ``extras`` are that method's."""
    check_units(task)
    if not heads_path(task.lm).is_file():
        chosen = "loo"
    else:
        chosen = "hybrid" if task.n_units <= LONG else "attention_heads"
    result = task.attribute(chosen, budget=budget)
    result.params = {"method": chosen, **result.params}
    result.method = "auto"
    return result
