"""The Task contract: one kind of input and target, ready to be attributed by any method of its
kind and by every generic perturbation method on its mask scorer.

A task answers five questions: what *kind* it is (the method name space:
``"context"``, ``"generation"``, ``"image"``...), what its *units* are, what its *target* is
(a JSON-serialisable description), through which *meter* all its model work is counted, and
how a method's scores become an :class:`~attribkit.core.attribution.Attribution`
(:meth:`Task.result`). ``attribkit.attribute(task, name, **params)`` dispatches on ``kind``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from attribkit.core.cost import Cost, CostMeter
from attribkit.core.errors import InputError
from attribkit.core.units import Units

if TYPE_CHECKING:
    from attribkit.core.attribution import Attribution
    from attribkit.core.gradient import GradientScorer
    from attribkit.core.registry import MethodSpec
    from attribkit.core.scorer import Scorer


class Task(ABC):
    """Base class of every task kind (context, generation, image, ...).

    Subclasses set ``kind``, ``units`` and ``target_info`` and implement :attr:`meter`; they
    override :meth:`result` (or just :attr:`input_info`) when a result needs more; tasks whose units can be masked also implement :meth:`unit_scorer` (and
    :meth:`unit_result` when a unit method's result needs more than the scorer gives, e.g. an
    image map); :meth:`prepare` adapts a method's parameters to the task (e.g. unit options
    into units). Building these costs no model call unless the subclass says otherwise.
    """

    #: the method name space of this task (``attribkit methods --kind KIND``)
    kind: ClassVar[str]
    #: the units a method of this kind scores by default (an attribute or a property)
    units: Units
    #: what is explained, as a JSON-serialisable dict with at least ``kind`` and
    #: ``description`` (an attribute or a property)
    target_info: dict[str, Any]

    @property
    def n_units(self) -> int:
        """How many units there are."""
        return len(self.units)

    @property
    @abstractmethod
    def meter(self) -> CostMeter:
        """The :class:`CostMeter` every model call of this task is counted on; methods report
        ``with measure(task.meter) as cost: ...``."""

    @property
    def input_info(self) -> dict[str, Any]:
        """What the input was, as a JSON-serialisable dict stored with every result (default:
        the units' own description)."""
        return self.units.to_dict()

    def result(
        self, scores: np.ndarray, method: str, params: dict[str, Any], cost: Cost, **extras: Any
    ) -> Attribution:
        """The Attribution of ``scores`` (one per unit, or rows × units) made by ``method``: by
        default over :attr:`units`, with :attr:`target_info` and :attr:`input_info`. No model
        calls."""
        from attribkit.core.attribution import Attribution

        return Attribution(
            units=list(self.units),
            scores=scores,
            method=method,
            target=self.target_info,
            params=params,
            cost=cost,
            input=self.input_info,
            extras=extras,
            task=self.kind,
        )

    def prepare(self, spec: MethodSpec, params: dict[str, Any]) -> None:
        """Adapt ``params`` in place before ``spec`` runs on this task (default: nothing)."""
        return None

    def unit_scorer(self, params: dict[str, Any]) -> Scorer:
        """The mask :class:`Scorer` over this task's units that generic perturbation methods run
        on. Removes from ``params`` the options it uses (e.g. ``budget``, ``units``).
        Tasks without one raise InputError."""
        raise InputError(
            f"a {self.kind} task has no mask scorer, so perturbation methods do not apply; "
            f"use a {self.kind} method (attribkit methods --kind {self.kind})"
        )

    #: whether generic gradient methods (kind ``"gradient"``) run on this task through
    #: :meth:`unit_gradient_scorer` (tasks over a differentiable torch model set it True)
    supports_gradients: bool = False

    def unit_gradient_scorer(self, params: dict[str, Any]) -> GradientScorer:
        """The :class:`GradientScorer` over this task's units that generic gradient methods
        (``integrated_gradients``, ``saliency``...) run on, when :attr:`supports_gradients`.
        Removes from ``params`` the options it uses. Tasks without one raise InputError."""
        raise InputError(
            f"a {self.kind} task has no gradient scorer (its model is not a differentiable torch "
            "module); use a perturbation method such as 'loo', 'shapley' or 'kernel_shap'"
        )

    def unit_result(self, attribution: Attribution, scorer: Scorer | GradientScorer) -> Attribution:
        """The Attribution of a perturbation (or gradient) method run on :meth:`unit_scorer`
        (or :meth:`unit_gradient_scorer`): by default the
        method's own result, stamped with this task's kind. No model calls."""
        attribution.task = self.kind
        return attribution

    def attribute(self, method: str, **params: Any) -> Attribution:
        """Run ``method`` on this task (see :func:`attribkit.attribute`)."""
        from attribkit.core.registry import attribute

        return attribute(self, method, **params)
