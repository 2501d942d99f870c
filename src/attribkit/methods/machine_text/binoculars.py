"""Binoculars: the observer's log-perplexity over the observer-performer cross-perplexity."""

from __future__ import annotations

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import measure
from attribkit.core.errors import ScorerError
from attribkit.core.registry import check_units
from attribkit.tasks.machine_text import MachineTextTask


def binoculars(task: MachineTextTask) -> Attribution:
    """The Binoculars score (Hans, Schwarzschild, Cherepanova, Kazemi, Saha, Goldblum, Geiping &
    Goldstein, 'Spotting LLMs With Binoculars: Zero-Shot Detection of Machine-Generated Text',
    ICML 2024), with the observer = ``model`` and the performer = ``reference``.

    B = log-PPL_observer(x) / X-PPL, where log-PPL = −(1/T) Σ_t log p_obs,t(x_t) and the
    cross-perplexity X-PPL = (1/T) Σ_t −Σ_v p_perf,t(v) log p_obs,t(v): the text's surprise
    against how surprising the performer's own next-token choices are to the observer.
    Numerator and denominator both use the observer's log-probabilities, the performer's
    distribution only weighting them (the structure of the authors' released code, where the
    perplexity and the cross-entropy's log-probabilities come from one model and the weights
    from the other; the paper's eq. 3 attaches the two names differently). Low B = machine, so the
    statistic is −B: HIGHER = more likely machine-generated. Per-token terms
    log p_obs,t(x_t) / (T · X-PPL) SUM to −B. With reference = model, X-PPL is the model's mean
    entropy. ``extras``: ``statistic``, ``binoculars_score`` (B), ``log_ppl``, ``x_ppl``.
    Costs 2 forward passes (1 when the reference is the model).
    """
    check_units(task)
    with measure(task.meter) as cost:
        (stats,) = task.token_stats(expected=True)
    assert stats.mean is not None
    x_ppl = float(-np.mean(stats.mean))
    if not x_ppl > 0:
        raise ScorerError(
            "the cross-perplexity is 0: the performer puts all its mass on tokens the observer is "
            "certain of at every position, so B is undefined; use models with some entropy"
        )
    log_ppl = float(-np.mean(stats.logp))
    terms = stats.logp / (task.n_tokens * x_ppl)
    score = log_ppl / x_ppl
    return task.result(
        terms,
        "binoculars",
        {},
        cost,
        statistic=-score,
        binoculars_score=score,
        log_ppl=log_ppl,
        x_ppl=x_ppl,
    )
