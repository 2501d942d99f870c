"""A PyTorch classifier (images, tabular features, anything with class outputs) as a scorer.

:class:`TorchClassifier` wraps an ``nn.Module`` whose output is one row of class logits per input.
It turns a :class:`~attribkit.core.units.Units` into a :class:`~attribkit.core.scorer.Scorer`
(perturbation methods) and an input tensor into a
:class:`~attribkit.core.gradient.GradientScorer` (gradient methods), both valued by the
probability, log-probability or logit of one class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from attribkit.core.cost import CostMeter
from attribkit.core.errors import InputError, ScorerError
from attribkit.core.gradient import GradientScorer
from attribkit.core.scorer import Scorer
from attribkit.core.units import Units

OUTPUTS = ("prob", "logit", "logprob")


def _default_preprocess(batch: Any) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch.to(torch.float32)
    return torch.as_tensor(np.asarray(batch), dtype=torch.float32)


class TorchClassifier(CostMeter):
    """A ``torch.nn.Module`` classifier: ``module(preprocess(batch)) -> (B, C)`` logits.

    The module is moved to ``device`` and put in eval mode. A module with a single output (shape
    (B,) or (B, 1)) is read as a binary classifier with logits ``(0, z)``: class 1 then has
    probability ``sigmoid(z)`` and logit ``z``.

    Args:
        module: the classifier; it must return logits (not probabilities).
        preprocess: maps a batch of raw inputs (a list or array as ``Units.compose_batch`` builds
            it: (B, H, W, C) images, (B, d) feature rows...) to the module's input tensor.
            Default: ``torch.as_tensor(batch, dtype=torch.float32)``.
        labels: optional class names, ``labels[i]`` naming class ``i``.
        batch_size: most inputs per forward call.
        device: where the module runs.

    ``cost`` counts every input the module evaluated through this adapter (``forward_passes``)
    and every call into the module (``batches``).
    """

    def __init__(
        self,
        module: torch.nn.Module,
        preprocess: Callable[[Any], torch.Tensor] | None = None,
        labels: Sequence[str] | None = None,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__()
        if not isinstance(module, torch.nn.Module):
            raise InputError(
                f"TorchClassifier needs a torch.nn.Module, got {type(module).__name__}; "
                "wrap a plain function with attribkit.models.blackbox.CallableModel instead"
            )
        if batch_size < 1:
            raise InputError("batch_size must be >= 1")
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self.preprocess = preprocess or _default_preprocess
        self.labels = list(labels) if labels is not None else None
        self.batch_size = batch_size
        self.name = type(module).__name__

    def __repr__(self) -> str:
        return f"TorchClassifier({self.name}, labels={self.labels!r}, cost={self.cost})"

    # -- internals -----------------------------------------------------------------------------

    def _param_dtype(self) -> torch.dtype | None:
        for p in self.module.parameters():
            if torch.is_floating_point(p):
                return p.dtype
        return None

    def _to_tensor(self, batch: Any) -> torch.Tensor:
        """Run ``preprocess`` on a batch of raw inputs and move the result to the device."""
        t = self.preprocess(batch)
        if not isinstance(t, torch.Tensor):
            raise InputError(
                f"preprocess returned {type(t).__name__}; it must return a torch.Tensor holding the batch"
            )
        return self._prepare(t)

    def _prepare(self, t: torch.Tensor) -> torch.Tensor:
        dtype = self._param_dtype()
        if torch.is_floating_point(t) and dtype is not None and t.dtype != dtype:
            t = t.to(dtype)
        return t.to(self.device)

    def _expected(self) -> str:
        """A description of the input the module's first layer expects."""
        for m in self.module.modules():
            if isinstance(m, torch.nn.Linear):
                return f"(batch, ..., {m.in_features}) — its first layer is Linear(in_features={m.in_features})"
            if isinstance(m, torch.nn.Conv1d):
                return f"(batch, {m.in_channels}, length) — its first layer is Conv1d(in_channels={m.in_channels})"
            if isinstance(m, torch.nn.Conv2d):
                return (
                    f"(batch, {m.in_channels}, height, width) — its first layer is "
                    f"Conv2d(in_channels={m.in_channels}); images in (H, W, C) layout need a preprocess "
                    "that permutes them to (B, C, H, W)"
                )
            if isinstance(m, torch.nn.Conv3d):
                return f"(batch, {m.in_channels}, D, H, W) — its first layer is Conv3d(in_channels={m.in_channels})"
        return "the shape its first layer takes"

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """Module output as (B, C) logits; wrong-shape inputs become InputError."""
        try:
            out = self.module(x)
        except RuntimeError as e:
            raise InputError(
                f"the model could not run on an input batch of shape {tuple(x.shape)}: it expects "
                f"{self._expected()}. Check the input (one example has shape {tuple(x.shape[1:])}) "
                f"and the preprocess function. PyTorch said: {str(e).splitlines()[0]}"
            ) from e
        if isinstance(out, (tuple, list)):
            out = out[0]
        elif not isinstance(out, torch.Tensor) and hasattr(out, "logits"):
            out = out.logits
        if not isinstance(out, torch.Tensor):
            raise ScorerError(
                f"the module returned {type(out).__name__}; it must return a tensor of logits"
            )
        if out.ndim == 2 and out.shape[1] == 1:
            out = out[:, 0]
        if out.ndim == 1 and out.shape[0] == x.shape[0]:
            out = torch.stack([torch.zeros_like(out), out], dim=1)
        if out.ndim != 2 or out.shape[0] != x.shape[0]:
            raise ScorerError(
                f"the module returned shape {tuple(out.shape)} for a batch of {x.shape[0]}; "
                "a classifier must return (batch, n_classes) logits"
            )
        return out

    @staticmethod
    def _check_output(output: str) -> None:
        if output not in OUTPUTS:
            raise InputError(f"unknown output {output!r}: use 'prob', 'logit' or 'logprob'")

    @staticmethod
    def _transform(logits: torch.Tensor, output: str) -> torch.Tensor:
        if output == "prob":
            return torch.softmax(logits, dim=-1)
        if output == "logprob":
            return torch.log_softmax(logits, dim=-1)
        return logits

    def _resolve_target(self, target: int | str | None, row: np.ndarray) -> int:
        """Class index of ``target`` (None: argmax of ``row``); checks the range."""
        n_classes = row.shape[0]
        if target is None:
            return int(np.argmax(row))
        if isinstance(target, str):
            if self.labels is None or target not in self.labels:
                known = (
                    f"one of {self.labels}" if self.labels is not None else "an integer class index"
                )
                raise InputError(f"unknown target class {target!r}: use {known}")
            target = self.labels.index(target)
        if isinstance(target, (bool, np.bool_)) or not isinstance(target, (int, np.integer)):
            raise InputError(f"target must be a class index (int) or a label, got {target!r}")
        target = int(target)
        if not 0 <= target < n_classes:
            raise InputError(
                f"target class {target} is out of range: the model has {n_classes} classes "
                f"(0 to {n_classes - 1})"
            )
        return target

    def _target_dict(self, cls: int, output: str, predicted: bool) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": "class_" + output, "class": cls, "output": output}
        if self.labels is not None and cls < len(self.labels):
            d["label"] = self.labels[cls]
        d["predicted"] = predicted
        d["model"] = self.name
        return d

    # -- public API ----------------------------------------------------------------------------

    def predict(self, inputs: Any, output: str = "prob") -> np.ndarray:
        """The (B, C) array of class probabilities / logits / log-probabilities of ``inputs``.

        ``inputs`` is a batch of raw inputs (run through ``preprocess``) or a ready tensor of
        the module's input shape. Costs one forward pass per input, in batches of ``batch_size``.
        """
        self._check_output(output)
        if isinstance(inputs, torch.Tensor):
            n = inputs.shape[0]

            def piece(s: int) -> torch.Tensor:
                return self._prepare(inputs[s : s + self.batch_size])
        else:
            if isinstance(inputs, (str, bytes)) or not hasattr(inputs, "__len__"):
                raise InputError(
                    f"predict takes a batch of inputs (a list or an array with a batch axis), got "
                    f"{type(inputs).__name__}"
                )
            n = len(inputs)

            def piece(s: int) -> torch.Tensor:
                return self._to_tensor(inputs[s : s + self.batch_size])

        if n == 0:
            raise InputError("predict got an empty batch: pass at least one input")
        outs = []
        with self.timed(), torch.inference_mode():
            for start in range(0, n, self.batch_size):
                x = piece(start)
                outs.append(self._transform(self._logits(x), output).double().cpu())
                self.cost.forward_passes += x.shape[0]
                self.cost.batches += 1
        return torch.cat(outs).numpy()

    def scorer(
        self,
        units: Units,
        target: int | str | None = None,
        output: str = "prob",
        batch_size: int | None = None,
        **scorer_kw: Any,
    ) -> Scorer:
        """A :class:`Scorer` whose value for a mask is ``output`` (prob/logit/logprob) of class
        ``target`` on ``units.compose(mask)``.

        ``target`` is a class index, a label name (when ``labels`` were given) or None for the
        class the model predicts on the full input. Building it costs one forward pass (the full
        input, to check the input shape and the target range); each evaluated mask then costs
        one forward pass. Extra keyword arguments (``budget``, ``progress``, ``cache``) go to
        :class:`Scorer`.
        """
        self._check_output(output)
        full = units.compose_batch(np.ones((1, len(units)), dtype=bool))
        row = self.predict(full, output="logit")[0]
        cls = self._resolve_target(target, row)

        def value(batch: Any) -> np.ndarray:
            return self.predict(batch, output=output)[:, cls]

        return Scorer(
            units,
            value,
            target=self._target_dict(cls, output, predicted=target is None),
            batch_size=batch_size or self.batch_size,
            **scorer_kw,
        )

    def gradient_scorer(
        self,
        x: Any,
        target: int | str | None = None,
        output: str = "logit",
        baseline: Any = None,
        unit_index: torch.Tensor | None = None,
        units: Units | None = None,
    ) -> GradientScorer:
        """A :class:`GradientScorer` on one input ``x`` valued by ``output`` of class ``target``.

        ``x`` is one raw input (run through ``preprocess`` as a batch of one) or a ready tensor
        without batch axis; ``baseline`` likewise (default zeros). ``unit_index``/``units`` map
        elements of the model-input tensor to units (default: one unit per element). Building it
        costs one forward pass (to check the shape and resolve ``target=None`` to the predicted
        class); each gradient then costs one forward and one backward pass per row.
        """
        self._check_output(output)
        xt = self._one(x, "x")
        base = None if baseline is None else self._one(baseline, "baseline")
        row = self.predict(xt[None], output="logit")[0]
        cls = self._resolve_target(target, row)

        def forward(xb: torch.Tensor) -> torch.Tensor:
            return self._transform(self._logits(xb), output)[:, cls]

        return GradientScorer(
            forward,
            xt,
            baseline=base,
            unit_index=unit_index,
            units=units,
            target=self._target_dict(cls, output, predicted=target is None),
            batch_size=self.batch_size,
        )

    def _one(self, x: Any, what: str) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            t = x.detach()
        else:
            t = self._to_tensor(np.asarray(x)[None] if not isinstance(x, list) else [x])
            if t.shape[0] != 1:
                raise InputError(
                    f"preprocess turned one {what} into a batch of {t.shape[0]}; it must keep the batch axis"
                )
            t = t[0]
        t = self._prepare(t)
        if not torch.is_floating_point(t):
            raise InputError(f"gradient methods need a floating-point {what}, got {t.dtype}")
        return t.detach()
