"""Gradient methods: they take a :class:`~attribkit.core.gradient.GradientScorer`, one file per
method."""
