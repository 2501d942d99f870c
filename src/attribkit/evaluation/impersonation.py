"""Impersonation of authors by generated text: how often an authorship model attributes a
forgery to the author it imitates ("Are You Robert or RoBERTa? Deceiving Online Authorship
Attribution Models Using Neural Text Generators", Jones, Nurse and Li, 2022).

For each target author a generator trained on (or prompted with) that author's texts writes
``n`` forgeries; the authorship model attributes each to one known author. The report gives,
per target, the share attributed to the target (``target_rate``, the attack's success), the
largest share attributed to any single other author (``other_rate``) and the whole
distribution, beside the chance rate 1/k and, as the paper's baseline, the share of forgeries
from a generator trained on all authors pooled that lands on the target (``baseline_rate``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from attribkit.core.errors import InputError

__all__ = ["ForgeryGenerator", "Sampler", "impersonation_report", "sampler_generator"]

#: the generator type: ``generator(n, seed)`` returns ``n`` forged texts (same seed, same texts)
ForgeryGenerator = Callable[[int, int], Sequence[str]]


@runtime_checkable
class Sampler(Protocol):
    """Anything with ``sample(n, length, temperature=..., seed=...) -> list[str]``, such as
    :class:`attribkit.models.ngram.NGramLM`."""

    def sample(
        self, n: int, length: int, temperature: float = 1.0, seed: int | None = 0
    ) -> list[str]: ...


def sampler_generator(
    sampler: Sampler, *, length: int = 200, temperature: float = 1.0
) -> ForgeryGenerator:
    """A :data:`ForgeryGenerator` that draws ``n`` texts of ``length`` tokens from ``sampler``
    (e.g. an :class:`~attribkit.models.ngram.NGramLM` trained on one author) at
    ``temperature``. Each call costs what ``sampler.sample`` costs (for an n-gram LM: n x
    length counted forward passes, no neural model)."""
    if not hasattr(sampler, "sample"):
        raise InputError(f"{type(sampler).__name__} has no sample(n, length, ..., seed=...)")

    def generate(n: int, seed: int) -> list[str]:
        return list(sampler.sample(n, length, temperature=temperature, seed=seed))

    return generate


def _as_generator(g: Any, what: str, length: int, temperature: float) -> ForgeryGenerator:
    if hasattr(g, "sample"):
        return sampler_generator(g, length=length, temperature=temperature)
    if callable(g):
        return g
    raise InputError(
        f"the generator for {what} must be a callable (n, seed) -> list of texts or an object "
        f"with sample(n, length, temperature=..., seed=...), got {type(g).__name__}"
    )


def _texts(out: Any, n: int, what: str) -> list[str]:
    texts = list(out) if not isinstance(out, str) else [out]
    if len(texts) != n or not all(isinstance(t, str) for t in texts):
        raise InputError(f"the generator for {what} must return a list of {n} strings")
    return texts


def _shares(predicted: Sequence[str], classes: list[str]) -> dict[str, float]:
    n = len(predicted)
    return {c: float(sum(p == c for p in predicted) / n) for c in classes}


def impersonation_report(
    aa_model: Any,
    generators: Mapping[str, ForgeryGenerator | Sampler],
    *,
    n: int = 20,
    seed: int = 0,
    length: int = 200,
    temperature: float = 1.0,
    baseline_generator: ForgeryGenerator | Sampler | None = None,
) -> dict[str, Any]:
    """How often forgeries imitating each author are attributed to that author (Jones et al.,
    "Are You Robert or RoBERTa? Deceiving Online Authorship Attribution Models Using Neural Text
    Generators", 2022).

    Args:
        aa_model: a fitted authorship model with ``classes_`` and ``predict(texts)`` (any model
            of :mod:`attribkit.models.authorship`).
        generators: target author (one of ``aa_model.classes_``) → its forgery generator: a
            :data:`ForgeryGenerator` ``(n, seed) -> texts``, or a :class:`Sampler` (an object
            with ``sample``, e.g. an ``NGramLM`` fitted on the author's texts), which draws
            texts of ``length`` tokens at ``temperature``.
        n: forgeries per target author.
        seed: every generator is called with this seed (the report is deterministic when the
            generators are).
        baseline_generator: optional generator trained on all authors pooled; its ``n``
            forgeries give, per target, ``baseline_rate`` (the share attributed to the target
            without imitating it).

    Returns a JSON-serialisable dict: ``authors`` (the model's classes), ``n``, ``seed``,
    ``chance`` (1/k), ``per_author`` (target → ``target_rate``, ``other_rate`` (the largest
    share given to one other author), ``other_author`` (that author), ``any_other_rate``
    (1 − target_rate), ``distribution`` (author → share), ``baseline_rate`` when a baseline is
    given, ``gain_over_baseline`` and ``gain_over_chance``), ``mean_target_rate``,
    ``mean_other_rate``, ``baseline`` (the pooled forgeries' distribution, or None) and
    ``seconds``.

    Costs: ``n`` forgeries per generator (what each generator costs; an n-gram LM counts n x
    length forward passes on its own meter) and one ``aa_model.predict`` call per generator
    (no model calls for the scikit-learn authorship models).
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise InputError(f"n (forgeries per author) must be an integer >= 1, got {n!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InputError(f"seed must be an integer, got {seed!r}")
    classes = getattr(aa_model, "classes_", None)
    if classes is None or not hasattr(aa_model, "predict"):
        raise InputError("aa_model must be a fitted authorship model (classes_ and predict)")
    classes = [str(c) for c in classes]
    if not isinstance(generators, Mapping) or not generators:
        raise InputError("generators must be a non-empty mapping: target author → generator")
    unknown = [a for a in generators if a not in classes]
    if unknown:
        raise InputError(
            f"no such author in the model: {unknown}; the model knows {', '.join(classes)}"
        )
    start = time.perf_counter()
    k = len(classes)
    per_author: dict[str, dict[str, Any]] = {}
    baseline = None
    if baseline_generator is not None:
        gen = _as_generator(baseline_generator, "the baseline", length, temperature)
        texts = _texts(gen(n, seed), n, "the baseline")
        baseline = _shares(aa_model.predict(texts), classes)
    for author, g in generators.items():
        gen = _as_generator(g, repr(author), length, temperature)
        texts = _texts(gen(n, seed), n, repr(author))
        dist = _shares(aa_model.predict(texts), classes)
        others = {c: v for c, v in dist.items() if c != author}
        other_author = max(others, key=lambda c: (others[c], -classes.index(c)))
        row: dict[str, Any] = {
            "target_rate": dist[author],
            "other_rate": others[other_author],
            "other_author": other_author,
            "any_other_rate": float(1.0 - dist[author]),
            "distribution": dist,
            "gain_over_chance": float(dist[author] - 1.0 / k),
        }
        if baseline is not None:
            row["baseline_rate"] = baseline[author]
            row["gain_over_baseline"] = float(dist[author] - baseline[author])
        per_author[author] = row
    return {
        "authors": classes,
        "n": n,
        "seed": seed,
        "chance": 1.0 / k,
        "per_author": per_author,
        "mean_target_rate": float(np.mean([r["target_rate"] for r in per_author.values()])),
        "mean_other_rate": float(np.mean([r["other_rate"] for r in per_author.values()])),
        "baseline": baseline,
        "seconds": time.perf_counter() - start,
    }
