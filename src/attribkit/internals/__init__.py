"""Model internals: interventions on hidden units (channels of named layers) and what they
cause at the output — the causal graph of a class (Ahmad et al., 2023), shared by neuron-level
methods. Imports only ``core`` and ``models``."""

from attribkit.internals.interventions import (
    CausalGraph,
    ChannelReport,
    causal_graph,
    channel_report,
    channel_scores,
)

__all__ = ["CausalGraph", "ChannelReport", "causal_graph", "channel_report", "channel_scores"]
