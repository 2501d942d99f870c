"""Generic gradient methods run on any task that supports gradients (a torch model), through
:meth:`Task.unit_gradient_scorer`; other tasks refuse them with a clear error."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import attribkit as ak
from attribkit.core.cost import CostMeter
from attribkit.core.errors import InputError
from attribkit.core.task import Task
from attribkit.core.units import FeatureUnits


class _LinearTask(Task):
    kind = "toy_linear"
    supports_gradients = True

    def __init__(self, w: np.ndarray, x: np.ndarray) -> None:
        self.w, self.x = torch.tensor(w), torch.tensor(x)
        self.units = FeatureUnits(x, names=[f"f{i}" for i in range(len(x))])
        self.target_info = {"kind": "linear", "description": "w · x"}
        self._meter = CostMeter()

    @property
    def meter(self) -> CostMeter:
        return self._meter

    def result(self, scores, method, params, cost, **extras) -> Any:
        raise AssertionError("not used")

    def unit_gradient_scorer(self, params: dict[str, Any]) -> ak.GradientScorer:
        return ak.GradientScorer(lambda xb: xb @ self.w, self.x, units=self.units)


def test_integrated_gradients_on_a_task_is_exact_on_a_linear_model() -> None:
    w, x = np.array([1.0, -2.0, 0.5]), np.array([3.0, 1.0, 4.0])
    task = _LinearTask(w, x)
    a = ak.attribute(task, "integrated_gradients")
    assert a.task == "toy_linear"
    np.testing.assert_allclose(a.scores, w * x, atol=1e-6)  # zero baseline: w_i x_i exactly
    assert a.cost.backward_passes > 0


def test_a_task_without_gradients_says_so() -> None:
    task = _LinearTask(np.ones(2), np.ones(2))
    task.supports_gradients = False
    with pytest.raises(InputError, match="gradient"):
        ak.attribute(task, "integrated_gradients")
