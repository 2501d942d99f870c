"""attribkit's core: units, scorers, tasks, the Attribution result, cost accounting and the
registry. It imports nothing from the packages above it (models, tasks, methods, ...)."""

from attribkit.core.attribution import Attribution
from attribkit.core.cost import Budget, Cost, CostMeter, measure
from attribkit.core.errors import (
    AttribkitError,
    BudgetExhausted,
    InputError,
    ScorerError,
    StoreError,
    UnsafeModelFile,
    WindowError,
)
from attribkit.core.gradient import GradientScorer
from attribkit.core.registry import (
    MethodSpec,
    add_method,
    add_methods,
    attribute,
    get_method,
    list_methods,
    register,
)
from attribkit.core.scorer import Scorer
from attribkit.core.task import Task
from attribkit.core.units import ArrayUnits, FeatureUnits, ImageUnits, TextUnits, Unit, Units

__all__ = [
    "ArrayUnits",
    "AttribkitError",
    "Attribution",
    "Budget",
    "BudgetExhausted",
    "Cost",
    "CostMeter",
    "FeatureUnits",
    "GradientScorer",
    "ImageUnits",
    "InputError",
    "MethodSpec",
    "Scorer",
    "ScorerError",
    "StoreError",
    "Task",
    "TextUnits",
    "Unit",
    "Units",
    "UnsafeModelFile",
    "WindowError",
    "add_method",
    "add_methods",
    "attribute",
    "get_method",
    "list_methods",
    "measure",
    "register",
]
