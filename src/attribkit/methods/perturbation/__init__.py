"""Perturbation methods: they take a :class:`~attribkit.core.scorer.Scorer` over unit masks
(and so run on every task that has one), one file per method."""
