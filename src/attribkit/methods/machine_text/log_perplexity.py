"""The log-likelihood detector: the mean token log-probability under the scoring model."""

from __future__ import annotations

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import measure
from attribkit.core.registry import check_units
from attribkit.tasks.machine_text import MachineTextTask


def log_perplexity(task: MachineTextTask) -> Attribution:
    """The log-likelihood detector (Gehrmann, Strobelt & Rush, 'GLTR: Statistical Detection and
    Visualization of Generated Text', 2019; Solaiman et al., 'Release Strategies and the Social
    Impacts of Language Models', 2019).

    Statistic = the mean token log-probability (1/T) Σ_t log p(x_t | x_<t) under ``model``
    (minus the log-perplexity): machine text sits where the model puts its mass, so HIGHER =
    more likely machine-generated. Per-token terms log p(x_t | x_<t) / T (they AVERAGE the
    log-probabilities, i.e. sum to the statistic). ``extras``: ``statistic``, ``log_ppl`` (=
    −statistic). Costs 1 forward pass of ``model`` (the reference is not used).
    """
    check_units(task)
    with measure(task.meter) as cost:
        (stats,) = task.token_stats()
    terms = stats.logp / task.n_tokens
    statistic = float(np.sum(terms))
    return task.result(terms, "log_perplexity", {}, cost, statistic=statistic, log_ppl=-statistic)
