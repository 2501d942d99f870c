"""Tabular methods (kind ``tabular``): each takes a :class:`~attribkit.tasks.tabular.TabularTask`;
the generic perturbation methods (and, over a torch model, the gradient methods) run on a
TabularTask too."""
