"""Attribution methods, one module per family. Importing this package registers them all.

Perturbation methods take a :class:`~attribkit.core.scorer.Scorer` over unit masks; gradient
methods take a :class:`~attribkit.core.gradient.GradientScorer`. Run any of them by name with
``attribkit.attribute(scorer, name, **params)``; ``attribkit.list_methods()`` lists them.
"""

# token (generation) methods and image-map methods (their own name spaces)
from attribkit.methods import (
    cam,
    craft,
    generation,
    image_gradients,
    image_perturbation,
    reagent,
    subset,
)
from attribkit.methods.attention import attention_heads, attntrace, select_heads
from attribkit.methods.context import auto, contextcite, hybrid
from attribkit.methods.dla import direct_logit_attribution
from attribkit.methods.gradients import (
    input_x_gradient,
    integrated_gradients,
    saliency,
    smoothgrad,
)
from attribkit.methods.grains import SteeringVectors, grains_vectors, steer
from attribkit.methods.kernel_shap import kernel_shap
from attribkit.methods.lime import lime
from attribkit.methods.occlusion import leave_one_out, occlusion
from attribkit.methods.rise import rise
from attribkit.methods.shapley import shapley
from attribkit.methods.surrogate import lasso_surrogate
from attribkit.methods.tracllm import tracllm

__all__ = [
    "SteeringVectors",
    "attention_heads",
    "attntrace",
    "auto",
    "cam",
    "contextcite",
    "craft",
    "direct_logit_attribution",
    "generation",
    "grains_vectors",
    "hybrid",
    "image_gradients",
    "image_perturbation",
    "input_x_gradient",
    "integrated_gradients",
    "kernel_shap",
    "lasso_surrogate",
    "leave_one_out",
    "lime",
    "occlusion",
    "reagent",
    "rise",
    "saliency",
    "select_heads",
    "shapley",
    "smoothgrad",
    "steer",
    "subset",
    "tracllm",
]
