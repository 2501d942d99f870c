"""Model internals as units: interventions on hidden units (channels of named layers) and what
they cause at the output — the causal graph of a class (Ahmad et al., 2023); FFN neurons and
attention heads of a language model scored for a next token, the layers to edit and a
closed-form fact edit (ACE, 2025); every weight scored for forgetting versus retaining, a mask
of the top fraction and unlearning through it (WAGLE, 2024). Imports only ``core`` and ``models``."""

from attribkit.internals.editing import (
    EditReport,
    EditRequest,
    EditResult,
    edit,
    edit_report,
    module_covariance,
    sample_texts,
)
from attribkit.internals.interventions import (
    CausalGraph,
    ChannelReport,
    causal_graph,
    channel_report,
    channel_scores,
)
from attribkit.internals.neurons import (
    EditLayers,
    ablate_neurons,
    last_logprobs,
    locate_edit_layers,
    neuron_attribution,
    query_layers,
)
from attribkit.internals.unlearning import UnlearnResult, UnlearnStep, unlearn
from attribkit.internals.weights import MASK_METHODS, WeightMask, weight_mask, weight_scores

__all__ = [
    "MASK_METHODS",
    "CausalGraph",
    "ChannelReport",
    "EditLayers",
    "EditReport",
    "EditRequest",
    "EditResult",
    "UnlearnResult",
    "UnlearnStep",
    "WeightMask",
    "ablate_neurons",
    "causal_graph",
    "channel_report",
    "channel_scores",
    "edit",
    "edit_report",
    "last_logprobs",
    "locate_edit_layers",
    "module_covariance",
    "neuron_attribution",
    "query_layers",
    "sample_texts",
    "unlearn",
    "weight_mask",
    "weight_scores",
]
