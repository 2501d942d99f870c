"""Time-series attribution methods (kind ``timeseries``): each takes a
:class:`~attribkit.tasks.timeseries.TimeSeriesTask` and returns an Attribution with the (T, C) map
in ``extras["map"]``: sliding-window ``occlusion`` and the TimeX surrogate (``timex``). The generic
perturbation methods, and for a torch model the generic gradient methods, run on the task too."""
