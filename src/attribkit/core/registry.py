"""The method registry and the one dispatcher, :func:`attribute`.

Every method is a :class:`MethodSpec`: a name, a *kind* (what it takes), the function, its cost
formula, its paper and its declared defaults. Kinds:

- ``"perturbation"``: a :class:`~attribkit.core.scorer.Scorer` over unit masks (any task whose
  units can be masked runs these too, on its :meth:`~attribkit.core.task.Task.unit_scorer`);
- ``"gradient"``: a :class:`~attribkit.core.gradient.GradientScorer`;
- a task kind (``"context"``, ``"generation"``, ``"image"``...): a
  :class:`~attribkit.core.task.Task` of that kind.

Names are unique within a kind (``integrated_gradients`` exists as a gradient, a generation and
an image method). The built-in methods are one explicit list, ``attribkit.methods.catalog``,
registered when the package is imported; :func:`register` adds your own. Functions are imported
on first use, so the registry imports no method module.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from attribkit.core.errors import InputError

#: the kinds that take a scorer rather than a task
SCORER_KINDS = ("perturbation", "gradient")


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: ``fn(scorer_or_task, **params) -> Attribution``.

    ``entry`` is the function or, for lazily imported methods, ``"module:function"``; read it
    as :attr:`fn`. ``kind`` says what the method takes (see the module docstring); ``cost`` is
    its model-call formula, ``cite`` its paper; ``defaults`` are declared parameter defaults the
    dispatcher applies when the caller gives none (e.g. ``units="superpixels"``) and options the
    task is built with (``output="prob"``); ``own_units`` marks a method whose result has units
    of its own rather than the task's (direct logit attribution: residual components).
    """

    name: str
    entry: Callable[..., Any] | str
    kind: str
    cost: str
    cite: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    own_units: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))

    @property
    def fn(self) -> Callable[..., Any]:
        """The method's function (imported on first use)."""
        if callable(self.entry):
            return self.entry
        module, _, attr = self.entry.partition(":")
        return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]

    @property
    def takes(self) -> str:
        """What the method runs on: ``"Scorer"``, ``"GradientScorer"`` or ``"<kind> task"``."""
        return {"perturbation": "Scorer", "gradient": "GradientScorer"}.get(
            self.kind, f"{self.kind} task"
        )

    @property
    def source_file(self) -> str:
        """The file that defines the method's function."""
        return inspect.getsourcefile(inspect.unwrap(self.fn)) or ""

    def accepts(self, param: str) -> bool:
        """Whether the function takes a keyword ``param``."""
        sig = inspect.signature(self.fn).parameters
        return param in sig or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.values())

    def default(self, param: str) -> Any:
        """The declared default of ``param``, else the function's own, else None."""
        if param in self.defaults:
            return self.defaults[param]
        p = inspect.signature(self.fn).parameters.get(param)
        return None if p is None or p.default is inspect.Parameter.empty else p.default

    def to_dict(self) -> dict[str, Any]:
        """Name, kind, what it takes, cost, paper, defaults and source file (for ``attribkit
        methods --json``)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "takes": self.takes,
            "cost": self.cost,
            "cite": self.cite,
            "defaults": {k: v for k, v in self.defaults.items() if _is_plain(v)},
            "source": self.source_file,
        }


def _is_plain(v: Any) -> bool:
    return v is None or isinstance(v, str | int | float | bool)


_REGISTRY: dict[tuple[str, str], MethodSpec] = {}


def add_method(spec: MethodSpec) -> MethodSpec:
    """Register ``spec`` (unique per kind and name; registering the same entry again is a no-op)."""
    key = (spec.kind, spec.name)
    old = _REGISTRY.get(key)
    if old is not None and old.entry != spec.entry:
        raise ValueError(f"a {spec.kind} method named {spec.name!r} is already registered")
    _REGISTRY[key] = spec
    return spec


def add_methods(specs: Iterable[MethodSpec]) -> None:
    """Register several specs (the built-in catalog)."""
    for spec in specs:
        add_method(spec)


def register(
    name: str,
    kind: str,
    cost: str,
    cite: str,
    defaults: Mapping[str, Any] | None = None,
    own_units: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering your own method under ``name`` for ``kind`` (see MethodSpec);
    check it with :func:`attribkit.testing.check_method`."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        add_method(MethodSpec(name, fn, kind, cost, cite, defaults or {}, own_units))
        return fn

    return deco


_SPACES = {"units": ("perturbation", "gradient", "context")}


def get_method(name: str, kind: str | None = None, *, space: str | None = None) -> MethodSpec:
    """The registered method ``name`` of ``kind``. Without a kind: the perturbation, gradient
    or context method of that name, else the only method of that name. InputError listing the
    choices when there is none. (``space`` is the former spelling of ``kind``.)"""
    kind = kind or space
    kinds = _SPACES.get(kind, (kind,)) if kind else None
    if kinds is None:
        found = [s for (k, n), s in _REGISTRY.items() if n == name]
        preferred = [s for s in found if s.kind in _SPACES["units"]]
        if len(preferred) == 1 or len(found) == 1:
            return (preferred or found)[0]
        if found:
            raise InputError(
                f"{name!r} exists for several kinds ({', '.join(sorted(s.kind for s in found))}); "
                "give kind=..."
            )
        kinds = tuple(sorted({k for k, _ in _REGISTRY}))
    for k in kinds:
        if (k, name) in _REGISTRY:
            return _REGISTRY[(k, name)]
    names = sorted({n for k, n in _REGISTRY if k in kinds})
    what = f"{' or '.join(kinds)} " if kind else ""
    raise InputError(f"unknown {what}method {name!r}; choose one of: {', '.join(names)}")


def list_methods(kind: str | None = None) -> list[MethodSpec]:
    """All registered methods (optionally of one kind), sorted by name then kind."""
    specs = sorted(_REGISTRY.values(), key=lambda s: (s.name, s.kind))
    return [s for s in specs if kind is None or s.kind == kind]


def method_kinds() -> list[str]:
    """The kinds that have registered methods."""
    return sorted({k for k, _ in _REGISTRY})


def check_units(scorer: Any, minimum: int = 2) -> None:
    """Raise InputError unless the scorer (or task) has at least ``minimum`` units."""
    n = scorer.n_units
    if n < minimum:
        raise InputError(
            f"only {n} unit to attribute: attribution ranks units against each other and needs at "
            f"least {minimum}; split the input more finely (e.g. sentences or words) or add context"
        )


def resolve(obj: Any, method: str) -> MethodSpec:
    """The method ``attribute(obj, method)`` would run: a task's own kind first, then the
    perturbation methods; a Scorer takes perturbation methods, a GradientScorer gradient ones.
    InputError naming what fits otherwise. No model calls."""
    from attribkit.core.gradient import GradientScorer
    from attribkit.core.scorer import Scorer
    from attribkit.core.task import Task

    if isinstance(obj, Task):
        kinds: tuple[str, ...] = (obj.kind, "perturbation")
        if obj.supports_gradients:
            kinds += ("gradient",)
    elif isinstance(obj, GradientScorer):
        kinds = ("gradient",)
    elif isinstance(obj, Scorer):
        kinds = ("perturbation",)
    else:
        raise InputError(
            f"cannot attribute a {type(obj).__name__}: pass a Scorer, a GradientScorer or a task "
            "(ContextTask, GenerationTask, ImageTask, ...)"
        )
    for k in kinds:
        if (k, method) in _REGISTRY:
            return _REGISTRY[(k, method)]
    other = sorted(k for k, n in _REGISTRY if n == method)
    names = sorted({n for k, n in _REGISTRY if k in kinds})
    hint = ""
    if other:
        hint = f" ({method!r} is a {' and '.join(other)} method"
        if "context" in other:
            hint += ": it reads a language model's internals and needs a ContextTask"
        elif "gradient" in other:
            hint += ": it needs a GradientScorer (a torch model); for a black box use 'loo', "
            hint += "'shapley' or 'kernel_shap'"
        hint += ")"
    raise InputError(
        f"unknown method {method!r} for a {type(obj).__name__}{hint}; choose one of: "
        f"{', '.join(names)}"
    )


def attribute(obj: Any, method: str, *, progress: bool = False, **params: Any) -> Any:
    """Run the registered ``method`` on ``obj`` — a :class:`Scorer`, a :class:`GradientScorer`
    or any task — and return its Attribution.

    A task runs the methods of its kind, every perturbation method on its mask scorer
    (options such as ``budget`` or an image's ``units`` configure that scorer), and, when it
    ``supports_gradients`` (a torch model), every gradient method on its gradient scorer. Declared
    defaults of the method apply where ``params`` gives none. ``progress=True`` shows a
    progress bar of the forward passes of a perturbation method. Costs what the method costs
    (``attribkit methods`` lists each formula).
    """
    return run(resolve(obj, method), obj, progress=progress, **params)


def run(spec: MethodSpec, obj: Any, *, progress: bool = False, **params: Any) -> Any:
    """Run ``spec`` (registered or not) on ``obj`` as :func:`attribute` does: declared
    defaults, the task's parameter preparation, a perturbation method on a task's unit scorer.
    Costs what the method costs."""
    from attribkit.core.scorer import Scorer
    from attribkit.core.task import Task

    for key, value in spec.defaults.items():
        if key not in params and spec.accepts(key):
            params[key] = value
    if isinstance(obj, Task):
        obj.prepare(spec, params)
    if isinstance(obj, Task) and spec.kind == "perturbation":
        scorer = obj.unit_scorer(params)
        return obj.unit_result(_run_on_scorer(spec, scorer, progress, params), scorer)
    if isinstance(obj, Task) and spec.kind == "gradient":
        gradient_scorer = obj.unit_gradient_scorer(params)
        return obj.unit_result(spec.fn(gradient_scorer, **params), gradient_scorer)
    if isinstance(obj, Scorer):
        return _run_on_scorer(spec, obj, progress, params)
    return spec.fn(obj, **params)


def _run_on_scorer(spec: MethodSpec, scorer: Any, progress: bool, params: dict[str, Any]) -> Any:
    if not progress:
        return spec.fn(scorer, **params)
    from attribkit.core.progress import scorer_progress

    with scorer_progress(scorer, f"{spec.name} over {scorer.n_units} units"):
        return spec.fn(scorer, **params)
