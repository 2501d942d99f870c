"""DetectGPT: the text's log-likelihood against that of perturbed rewrites of it (probability
curvature), with a pluggable perturber."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import measure
from attribkit.core.errors import InputError
from attribkit.core.registry import check_units
from attribkit.tasks.machine_text import MachineTextTask

__all__ = ["Perturber", "detectgpt", "word_swap_perturber"]

#: ``perturber(text, n, rng) -> n perturbed texts``
Perturber = Callable[[str, int, np.random.Generator], list[str]]


def word_swap_perturber(
    pct_words_masked: float = 0.3, span_length: int = 2, buffer_size: int = 1
) -> Perturber:
    """A model-free stand-in for DetectGPT's T5 mask filling (T5 is not available offline).

    Chooses spans the way the authors' ``tokenize_and_mask`` does — int(pct_words_masked · W /
    (span_length + 2 · buffer_size)) spans (at least 1) of ``span_length`` whitespace-separated
    words among the W words, at random starts, each at least ``buffer_size`` words away from
    the others: with the defaults about 15 % of the words — and fills every chosen word with a
    different word of the text itself drawn at random (where T5 writes a plausible span).
    Whitespace and the other words are kept as written. The rewrites are less fluent than T5's,
    so the curvature they measure is cruder than the paper's; pass your own perturber (e.g. a
    mask-filling model) to ``detectgpt(perturber=...)``. No model calls.
    """
    if not 0 < pct_words_masked <= 1:
        raise InputError("pct_words_masked must be in (0, 1]")
    if span_length < 1 or buffer_size < 0:
        raise InputError("span_length must be >= 1 and buffer_size >= 0")

    def word_swap(text: str, n: int, rng: np.random.Generator) -> list[str]:
        spans = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
        words = [text[s:e] for s, e in spans]
        distinct = sorted(set(words))
        if len(distinct) < 2:
            raise InputError(
                "the word-swap perturber needs a text with at least 2 different words; give a "
                "longer text or a perturber of your own"
            )
        w = len(words)
        span = min(span_length, w)
        n_spans = max(1, int(pct_words_masked * w / (span + 2 * buffer_size)))
        out = []
        for _ in range(n):
            masked = np.zeros(w, dtype=bool)
            placed = tries = 0
            while placed < n_spans and tries < 20 * n_spans + 100:
                tries += 1
                start = int(rng.integers(0, w - span + 1))
                lo, hi = max(0, start - buffer_size), min(w, start + span + buffer_size)
                if not masked[lo:hi].any():
                    masked[start : start + span] = True
                    placed += 1
            new = list(words)
            for i in np.flatnonzero(masked):
                choices = [d for d in distinct if d != words[i]]
                new[i] = choices[int(rng.integers(len(choices)))]
            parts, pos = [], 0
            for (s, e), word in zip(spans, new, strict=True):
                parts += [text[pos:s], word]
                pos = e
            out.append("".join(parts) + text[pos:])
        return out

    word_swap.__name__ = "word_swap"
    return word_swap


def _name(perturber: Any) -> str:
    return str(getattr(perturber, "__name__", type(perturber).__name__))


def detectgpt(
    task: MachineTextTask,
    *,
    perturber: Perturber | None = None,
    n_perturbations: int = 20,
    seed: int | None = 0,
) -> Attribution:
    """DetectGPT's normalised perturbation discrepancy (Mitchell, Lee, Khazatsky, Manning & Finn,
    'DetectGPT: Zero-Shot Machine-Generated Text Detection using Probability Curvature',
    ICML 2023).

    ``perturber(text, n, rng)`` writes ``n_perturbations`` rewrites x̃ of the text (default
    :func:`word_swap_perturber`, a model-free stand-in for the paper's T5 mask filling; ``rng``
    is ``np.random.default_rng(seed)``). With the length-normalised log-likelihood
    ll(x) = (1/T) Σ_t log p(x_t | x_<t) under ``model`` (the authors' ``get_ll``, minus the
    mean token loss), statistic = (ll(x) − m) / s, where m and s are the mean and the
    (population, ddof = 0, as in the authors' code) standard deviation of ll(x̃) over the
    rewrites. Machine text sits near a local maximum of log p, so its rewrites lose likelihood:
    HIGHER = more likely machine-generated. Per-token terms (log p(x_t | x_<t) − m) / (T · s):
    each token's log-probability against the rewrites' mean per-token log-likelihood; they SUM
    to the statistic. ``extras``: ``statistic``, ``log_likelihood`` (ll(x)),
    ``perturbed_mean`` (m), ``perturbed_sd`` (s), ``perturbed_log_likelihoods``. Costs
    1 + n_perturbations forward passes of ``model`` in batches (the reference is not used; a
    perturber's own model work, e.g. a mask-filling model, is not counted).
    """
    check_units(task)
    if n_perturbations < 2:
        raise InputError("n_perturbations must be >= 2 (the statistic divides by their spread)")
    perturb = perturber if perturber is not None else word_swap_perturber()
    params = {"perturber": _name(perturb), "n_perturbations": n_perturbations, "seed": seed}
    with measure(task.meter) as cost:  # seconds include the perturber's
        texts = perturb(task.text, n_perturbations, np.random.default_rng(seed))
        if (
            not isinstance(texts, list)
            or len(texts) != n_perturbations
            or not all(isinstance(t, str) and t.strip() for t in texts)
        ):
            raise InputError(
                f"the perturber {params['perturber']!r} must return a list of {n_perturbations} "
                "non-empty strings"
            )
        ids = [task.model.encode(t) for t in texts]
        if any(len(i) == 0 for i in ids):
            raise InputError("a perturbed text encodes to no tokens; check the perturber")
        stats = task.token_stats([task.ids, *ids])
    lls = np.array([float(np.mean(st.logp)) for st in stats])
    m = float(np.mean(lls[1:]))
    s = float(np.std(lls[1:]))
    if not s > 1e-12 * max(1.0, abs(m)):
        raise InputError(
            f"all {n_perturbations} perturbed texts have the same log-likelihood, so the "
            "discrepancy cannot be normalised; the perturber changed nothing that the model "
            "sees (give a longer text or another perturber)"
        )
    terms = (stats[0].logp - m) / (task.n_tokens * s)
    return task.result(
        terms,
        "detectgpt",
        params,
        cost,
        statistic=float(np.sum(terms)),
        log_likelihood=float(lls[0]),
        perturbed_mean=m,
        perturbed_sd=s,
        perturbed_log_likelihoods=[float(v) for v in lls[1:]],
    )
