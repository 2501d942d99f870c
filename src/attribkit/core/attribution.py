"""The Attribution result: units, scores, what was explained, by which method, at what cost."""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attribkit.core.cost import Cost
from attribkit.core.errors import InputError
from attribkit.core.jsonio import scores_from_json, to_json, unit_vector
from attribkit.core.png import png_data_url
from attribkit.core.units import Unit

FORMAT = "attribkit.attribution"
#: version 2 adds ``task`` (the task kind that made the result) and ``heatmap`` (an image
#: attribution's map, formerly ``extras["heatmap"]``); version-1 files still load.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)


def _encode_input(inp: dict[str, Any]) -> dict[str, Any]:
    """The input description for JSON: an ``image`` array becomes a PNG data URL
    (``image_png``), encoded only when the result is saved."""
    image = inp.get("image")
    if not isinstance(image, np.ndarray):
        return inp
    out = {k: v for k, v in inp.items() if k != "image"}
    out.update(image_png=png_data_url(image), image_shape=list(image.shape))
    return out


def task_kind(d: dict[str, Any]) -> str | None:
    """The task kind recorded in an Attribution dict (:meth:`Attribution.to_dict`): its
    ``task`` (format 2), inferred for format 1, which did not record it; None for a bare
    Scorer's or GradientScorer's result. Reads nothing else (cheap on a stored run)."""
    return _task_of_version_1(d) if d.get("version") == 1 else d.get("task")


def _task_of_version_1(d: dict[str, Any]) -> str | None:
    """The task kind of a format-1 dict, which did not record it."""
    target, inp = d.get("target"), d.get("input") or {}
    if isinstance(target, dict) and str(target.get("kind", "")).startswith("response_"):
        return "context"
    if inp.get("kind") == "tokens":
        return "generation"
    if inp.get("kind") == "image" or "heatmap" in (d.get("extras") or {}):
        return "image"
    return None


@dataclass
class Attribution:
    """Scores for the units of one input, with everything needed to read, compare and keep them.

    ``scores`` has one entry per unit (higher = more responsible for the target); ``NaN`` marks a
    unit the method did not score. A 2-D ``scores`` (rows × units) holds one row per target
    position (e.g. per generated token); ranking then uses the sum over rows.

    ``task`` is the kind of task that made it (``"context"``, ``"generation"``, ``"image"``...;
    None for a bare Scorer or GradientScorer); ``image_map`` is an image attribution's 2-D map
    at the model's input resolution (read it as :attr:`heatmap`).
    """

    units: list[Unit]
    scores: np.ndarray
    method: str
    target: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    cost: Cost = field(default_factory=Cost)
    input: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    task: str | None = None
    image_map: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=float)
        if self.image_map is not None:
            self.image_map = np.asarray(self.image_map, dtype=np.float32)
            if self.image_map.ndim != 2:
                raise InputError(f"an image map must be 2-D (H, W), got {self.image_map.shape}")
        if self.scores.ndim not in (1, 2) or self.scores.shape[-1] != len(self.units):
            raise InputError(
                f"scores of shape {self.scores.shape} do not match {len(self.units)} units; "
                "give one score per unit (or rows × units)"
            )

    @classmethod
    def from_scorer(
        cls,
        scorer: Any,
        scores: np.ndarray,
        method: str,
        params: dict[str, Any],
        cost: Cost,
        **extras: Any,
    ) -> Attribution:
        """Build a result from a :class:`Scorer` or :class:`GradientScorer` and the method's output."""
        return cls(
            units=list(scorer.units),
            scores=scores,
            method=method,
            target=scorer.target,
            params=params,
            cost=cost,
            input=scorer.units.to_dict(),
            extras=extras,
            task=getattr(scorer, "task_kind", None),
        )

    # --- reading -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.units)

    @property
    def vector(self) -> np.ndarray:
        """One score per unit: the scores, or for rows × units the sum over the rows that scored
        the unit; NaN where no row did (see :func:`attribkit.core.jsonio.unit_vector`)."""
        return unit_vector(self.scores)

    @property
    def ranking(self) -> np.ndarray:
        """Unit indices, highest score first (stable for ties). Unscored (NaN) units come last,
        in the order of ``extras['ranking']`` when the method gives one (e.g. a prior's order)."""
        v = self.vector
        key = np.where(np.isnan(v), -np.inf, v)
        order = np.argsort(-key, kind="stable")
        hint = self.extras.get("ranking")
        if hint is None or not np.isnan(v).any():
            return order
        position = {int(u): p for p, u in enumerate(hint)}
        scored = [int(u) for u in order if not np.isnan(v[u])]
        unscored = sorted(
            (int(u) for u in order if np.isnan(v[u])),
            key=lambda u: position.get(u, len(position) + u),
        )
        return np.array(scored + unscored, dtype=int)

    @property
    def heatmap(self) -> np.ndarray:
        """The 2-D attribution map at image resolution (image attributions only); InputError
        for other results."""
        if self.image_map is None:
            raise InputError(
                f"this {self.task or self.input.get('kind', '')} attribution has no image "
                "heatmap; heatmaps come from image tasks (attribkit.attribute_image)"
            )
        return self.image_map.astype(float)

    def top(self, k: int = 5) -> list[tuple[Unit, float]]:
        """The ``k`` highest-scoring units with their scores, best first."""
        v = self.vector
        return [(self.units[i], float(v[i])) for i in self.ranking[: max(k, 0)]]

    def __repr__(self) -> str:
        target = (
            self.target
            if not isinstance(self.target, dict)
            else self.target.get("description", self.target)
        )
        t = str(target)
        t = t if len(t) <= 60 else t[:57] + "..."
        lines = [
            f"Attribution(method={self.method!r}, {len(self)} {self.input.get('kind', '')} units, "
            f"target={t!r}, cost={self.cost})".replace("  ", " ")
        ]
        for unit, score in self.top(min(5, len(self))):
            label = unit.label.replace("\n", " ")
            label = label if len(label) <= 70 else label[:67] + "..."
            lines.append(f"  #{unit.index:<4d} {score:+.4f}  {label}")
        if len(self) > 5:
            lines.append(f"  ... {len(self) - 5} more")
        return "\n".join(lines)

    def compare(self, other: Attribution, k: int = 5) -> dict[str, float]:
        """Rank agreement with another Attribution of the same units (Spearman, Kendall, top-k)."""
        from attribkit.evaluation.agreement import agreement

        return agreement(self, other, k=k)

    # --- keeping -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A versioned, JSON-serialisable dict (NaN scores become null)."""
        from attribkit import __version__

        return to_json(  # type: ignore[no-any-return]
            {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "attribkit": __version__,
                "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                "task": self.task,
                "method": self.method,
                "params": self.params,
                "target": self.target,
                "input": _encode_input(self.input),
                "units": [u.to_dict() for u in self.units],
                "scores": self.scores,
                "ranking": self.ranking,
                "cost": self.cost.to_dict(),
                "extras": self.extras,
                "heatmap": self.image_map,
            }
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Attribution:
        """Rebuild an Attribution written by :meth:`to_dict` (format 2, or format 1 of attribkit
        0.1: its task kind is inferred and its ``extras['heatmap']`` becomes the image map);
        refuses unknown formats and versions."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise InputError(
                "not an attribkit attribution (missing 'format': 'attribkit.attribution')"
            )
        version = d.get("version")
        if version not in READABLE_VERSIONS:
            raise InputError(
                f"attribution format version {version} is not supported by this attribkit "
                f"(it reads versions {', '.join(map(str, READABLE_VERSIONS))}); use the attribkit "
                "version that wrote it"
            )
        extras = dict(d.get("extras") or {})
        if version == 1:
            task, image_map = _task_of_version_1(d), extras.pop("heatmap", None)
        else:
            task, image_map = d.get("task"), d.get("heatmap")
        return cls(
            units=[Unit.from_dict(u) for u in d["units"]],
            scores=scores_from_json(d["scores"]),
            method=d["method"],
            target=d.get("target"),
            params=d.get("params") or {},
            cost=Cost.from_dict(d.get("cost") or {}),
            input=d.get("input") or {},
            extras=extras,
            task=task,
            image_map=None if image_map is None else scores_from_json(image_map),
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write versioned JSON atomically (a crash never leaves a half-written file). Returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.to_dict(), f, ensure_ascii=False, indent=1)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Attribution:
        """Read an Attribution saved with :meth:`save`."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise InputError(
                f"{path} is not valid JSON ({e}); was it written by Attribution.save?"
            ) from e
        return cls.from_dict(data)

    def explain(self, mode: str = "template", **kw: Any) -> str:
        """A natural-language explanation of this result (see :func:`attribkit.viz.explain`):
        ``mode="template"`` is model-free; ``mode="llm"`` prompts an LM (costs one generation)."""
        from attribkit.viz.explain import explain

        return explain(self, mode=mode, **kw)  # type: ignore[arg-type]

    # --- rendering -----------------------------------------------------------------------------
    def to_html(self, title: str | None = None) -> str:
        """A self-contained HTML page highlighting units by score; all text is escaped."""
        from attribkit.viz.html import attribution_html

        return attribution_html(self, title=title)

    def _repr_html_(self) -> str:
        """The notebook view, an HTML fragment in the viewer's view for the task kind (context
        text, token heat map, map over the image, feature bars); all text is escaped
        (:func:`attribkit.viz.notebook.notebook_html`)."""
        from attribkit.viz.notebook import notebook_html

        return notebook_html(self)
