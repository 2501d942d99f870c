"""The method registry: every attribution method is registered by name with what it needs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from attribkit.core.errors import InputError

Kind = Literal["perturbation", "gradient", "context", "generation", "image"]


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: ``fn(scorer, **params) -> Attribution``.

    ``kind`` says what it takes: ``"perturbation"``, a :class:`Scorer` over unit masks;
    ``"gradient"``, a :class:`GradientScorer`; ``"context"``, a
    :class:`~attribkit.tasks.context.ContextTask` (methods that read an LM's internals, such as
    attention); ``"generation"``, a :class:`~attribkit.tasks.generation.GenerationTask` (token
    attribution matrices; these have their own names, so ``integrated_gradients`` exists both as
    a gradient method and as a generation method); ``"image"``, an
    :class:`~attribkit.tasks.image.ImageTask` (maps over an image, also their own name space:
    ``attribkit.attribute_image`` runs them). ``cost`` is the model-call formula, ``cite``
    the paper.
    """

    name: str
    fn: Callable[..., Any]
    kind: Kind
    cost: str
    cite: str


Space = Literal["units", "generation", "image"]
_REGISTRY: dict[tuple[str, str], MethodSpec] = {}


def _space(kind: str) -> str:
    return kind if kind in ("generation", "image") else "units"


def register(
    name: str, kind: Kind, cost: str, cite: str
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering an attribution method under ``name`` (unique per space: generation
    methods, image methods, or every other kind)."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        key = (_space(kind), name)
        if key in _REGISTRY and _REGISTRY[key].fn is not fn:
            raise ValueError(f"method name {name!r} is already registered")
        _REGISTRY[key] = MethodSpec(name, fn, kind, cost, cite)
        return fn

    return deco


def get_method(name: str, space: Space = "units") -> MethodSpec:
    """The registered method called ``name`` (``space="generation"`` for token-attribution
    methods of generated text, ``"image"`` for image maps); InputError listing the choices
    otherwise."""
    import attribkit.methods  # noqa: F401  (registers the built-in methods)

    try:
        return _REGISTRY[(space, name)]
    except KeyError:
        names = sorted(n for s, n in _REGISTRY if s == space)
        raise InputError(f"unknown method {name!r}; choose one of: {', '.join(names)}") from None


def list_methods(kind: Kind | None = None) -> list[MethodSpec]:
    """All registered methods (optionally of one kind), sorted by name then kind."""
    import attribkit.methods  # noqa: F401

    specs = sorted(_REGISTRY.values(), key=lambda s: (s.name, s.kind))
    return [s for s in specs if kind is None or s.kind == kind]


def check_units(scorer: Any, minimum: int = 2) -> None:
    """Raise InputError unless the scorer has at least ``minimum`` units."""
    n = scorer.n_units
    if n < minimum:
        raise InputError(
            f"only {n} unit to attribute: attribution ranks units against each other and needs at "
            f"least {minimum}; split the input more finely (e.g. sentences or words) or add context"
        )


def attribute(scorer: Any, method: str, *, progress: bool = False, **params: Any) -> Any:
    """Run the registered ``method`` on ``scorer`` and return its Attribution.

    ``progress=True`` shows a progress bar of the scorer's forward passes while it runs.
    Costs what the method costs (see ``list_methods()`` for each formula).
    """
    spec = get_method(method)
    from attribkit.core.gradient import GradientScorer
    from attribkit.core.scorer import Scorer

    if spec.kind == "gradient" and not isinstance(scorer, GradientScorer):
        raise InputError(
            f"{method!r} is a gradient method and needs a GradientScorer (a torch model); "
            "for a black-box scorer use a perturbation method such as 'loo', 'shapley' or 'kernel_shap'"
        )
    if spec.kind == "perturbation" and not isinstance(scorer, Scorer):
        raise InputError(
            f"{method!r} is a perturbation method and needs a mask Scorer, "
            f"not {type(scorer).__name__}"
        )
    if spec.kind == "context" and isinstance(scorer, Scorer | GradientScorer):
        raise InputError(
            f"{method!r} reads a language model's internals and needs a ContextTask; "
            "use attribkit.attribute_context(lm, context, query, method=...)"
        )
    if progress and spec.kind == "perturbation":
        from attribkit.core.progress import scorer_progress

        with scorer_progress(scorer, f"{method} over {scorer.n_units} units"):
            return spec.fn(scorer, **params)
    return spec.fn(scorer, **params)
