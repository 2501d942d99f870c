"""Fast-DetectGPT, analytic: the text's log-likelihood against its expectation under the
sampling model's next-token distributions, in standard deviations."""

from __future__ import annotations

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import measure
from attribkit.core.errors import ScorerError
from attribkit.core.registry import check_units
from attribkit.tasks.machine_text import MachineTextTask


def fast_detectgpt(task: MachineTextTask) -> Attribution:
    """Fast-DetectGPT's analytic conditional probability curvature (Bao, Zhao, Teng, Yang &
    Zhang, 'Fast-DetectGPT: Efficient Zero-Shot Detection of Machine-Generated Text via
    Conditional Probability Curvature', ICLR 2024).

    With the sampling distribution q_t (``reference``) and the scoring log-probabilities
    log p_t (``model``) at each token t: μ_t = Σ_v q_t(v) log p_t(v), σ²_t = Σ_v q_t(v)
    log p_t(v)² − μ_t², and statistic = (Σ_t log p_t(x_t) − Σ_t μ_t) / sqrt(Σ_t σ²_t): how far
    the text's log-likelihood lies above what texts sampled token by token from q would get
    (the authors' ``get_sampling_discrepancy_analytic``). HIGHER = more likely machine-generated
    (machine text picks tokens more likely than a sample; with q = p, text sampled from p scores
    about N(0, 1)). Per-token terms (log p_t(x_t) − μ_t) / sqrt(Σ_t σ²_t) SUM to it.
    ``extras``: ``statistic``, ``log_likelihood`` (Σ log p_t(x_t)), ``expected_log_likelihood``
    (Σ μ_t), ``sd`` (sqrt Σ σ²_t). Costs 1 forward pass (2 with a distinct reference model).
    """
    check_units(task)
    with measure(task.meter) as cost:
        (stats,) = task.token_stats(expected=True)
    assert stats.mean is not None and stats.var is not None
    total_var = float(np.sum(stats.var))
    if not total_var > 0:
        raise ScorerError(
            f"the sampling model {task.reference.name!r} puts all its probability on one token "
            "at every position, so the curvature has no spread; use a model with some entropy"
        )
    sd = float(np.sqrt(total_var))
    terms = (stats.logp - stats.mean) / sd
    return task.result(
        terms,
        "fast_detectgpt",
        {},
        cost,
        statistic=float(np.sum(terms)),
        log_likelihood=float(np.sum(stats.logp)),
        expected_log_likelihood=float(np.sum(stats.mean)),
        sd=sd,
    )
