"""Action sets: which changes a person can make to the features a model reads.

An :class:`ActionSet` says, for every column of a tabular model's input, whether the person can
act on it and how (Ustun, Spangher & Liu, 'Actionable Recourse in Linear Classification', 2019;
Cheon, Wernerfelt, Friedler & Ustun, 'Feature Responsiveness Scores: Model-Agnostic Explanations
for Recourse', ICLR 2025):

- **immutable** features (the default for every column an action set leaves out) never change
  by the person's own action;
- **bounds** ``lb``/``ub`` on the value an action may reach (a row whose current value lies
  outside its feature's bounds is an error, naming the row and the feature);
- a **direction**: ``"increase"`` (only up), ``"decrease"`` (only down) or ``"both"``;
- ``max_change``: the largest change one action may make (reachml's step bounds);
- **integer grids** (``"integer": true``, or ``"step": s``: the reachable values are
  ``x + k·s``): such *discrete* features are enumerated; features without a step are
  *continuous* and sampled uniformly within their reachable interval;
- **groups** that move as one: a one-hot group (one column of the group is 1; with
  ``"allow_none"`` all zeros is a valid state too, the reference category) or a thermometer
  group (columns ``x ≥ t1``, ``x ≥ t2``... ordered by threshold: a prefix of ones). A group's
  *levels* are its valid states in the order of its columns (none first, when allowed); its
  direction and ``max_change`` count levels;
- **linkages**: a change of ``d`` in a source (a column, or a group's level) forces a change of
  ``ratio · d`` in a target column, e.g. one more year at the same address makes the applicant
  one year older. Forced co-moves ignore the target's actionability and direction (an immutable
  age still ages) but not its bounds: an action whose forced co-move would leave the target's
  bounds is infeasible. Linkages chain (a target may be the source of another); cycles are
  refused.

Limit: *if-then* constraints (e.g. "if the person gets a degree, years of education increase by
4") and other constraints that couple the choices of several features need a mixed-integer
program (reachml builds one with CPLEX or SCIP); they are not supported here. Only single-feature
actions with their forced co-moves are generated, which is what responsiveness scores need.

The ACTIONS.json format (:meth:`ActionSet.from_json`)::

    {
      "savings": {"actionable": true, "direction": "increase", "lb": 0, "ub": 5e4},
      "residence_years": {"actionable": true, "direction": "increase", "lb": 1, "ub": 4,
                          "integer": true, "max_change": 2, "why": "one can stay longer"},
      "__groups__": {
        "housing": {"kind": "onehot", "columns": ["rent", "own", "free"], "actionable": false}
      },
      "__links__": [{"source": "residence_years", "target": "age", "ratio": 1}]
    }

Column keys: ``actionable``, ``direction``, ``lb``, ``ub``, ``step``, ``integer``,
``max_change``, ``why`` (a note, kept). ``__groups__`` maps a group name to ``kind``
(``"onehot"`` or ``"thermometer"``), ``columns``, ``actionable``, ``direction``, ``max_change``,
``allow_none`` (one-hot only) and ``why``; a grouped column takes no rule of its own except its
bounds. ``__links__`` lists ``{"source", "target", "ratio", "why"}``. Columns left out are
immutable. A top-level ``"__about__"`` string is kept as a description.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attribkit.core.errors import InputError

__all__ = ["DIRECTIONS", "ActionSet", "FeatureRule", "Group", "Link"]

DIRECTIONS = ("increase", "decrease", "both")
GROUP_KINDS = ("onehot", "thermometer")
_RULE_KEYS = {"actionable", "direction", "lb", "ub", "step", "integer", "max_change", "why"}
_GROUP_KEYS = {"kind", "columns", "actionable", "direction", "max_change", "allow_none", "why"}
_LINK_KEYS = {"source", "target", "ratio", "why"}
_EPS = 1e-9


def _direction(value: Any, where: str) -> str:
    if value not in DIRECTIONS:
        raise InputError(f"{where}: direction {value!r} is not one of {DIRECTIONS}")
    return str(value)


def _number(value: Any, where: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError) as e:
        raise InputError(f"{where} must be a number, got {value!r}") from e
    if math.isnan(out):
        raise InputError(f"{where} must be a number, got NaN")
    return out


@dataclass(frozen=True)
class FeatureRule:
    """What a person can do to one column (see the module docstring). ``step`` set = discrete
    (enumerated on the grid ``x + k·step``); ``step`` None = continuous (sampled)."""

    name: str
    actionable: bool = False
    direction: str = "both"
    lb: float = -math.inf
    ub: float = math.inf
    step: float | None = None
    max_change: float | None = None
    why: str = ""

    def __post_init__(self) -> None:
        _direction(self.direction, f"feature {self.name!r}")
        if self.lb > self.ub:
            raise InputError(f"feature {self.name!r}: lb {self.lb} is above ub {self.ub}")
        if self.step is not None and not self.step > 0:
            raise InputError(f"feature {self.name!r}: step must be > 0, got {self.step}")
        if self.max_change is not None and not self.max_change > 0:
            raise InputError(f"feature {self.name!r}: max_change must be > 0")

    @property
    def discrete(self) -> bool:
        return self.step is not None

    def interval(self, x: float) -> tuple[float, float]:
        """The values one action can reach from ``x``: bounds, direction and max_change."""
        lo, hi = self.lb, self.ub
        if self.direction == "increase":
            lo = x
        elif self.direction == "decrease":
            hi = x
        if self.max_change is not None:
            lo, hi = max(lo, x - self.max_change), min(hi, x + self.max_change)
        return lo, hi

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"actionable": self.actionable}
        if self.actionable:
            d["direction"] = self.direction
        for key in ("lb", "ub"):
            v = getattr(self, key)
            if math.isfinite(v):
                d[key] = v
        if self.step is not None:
            d["step"] = self.step
        if self.max_change is not None:
            d["max_change"] = self.max_change
        if self.why:
            d["why"] = self.why
        return d


@dataclass(frozen=True)
class Group:
    """Columns that move as one: a one-hot or thermometer encoding of one variable. Its levels
    are its valid states in column order (all zeros first when ``allow_none``, or for a
    thermometer the level below every threshold)."""

    name: str
    kind: str
    columns: tuple[str, ...]
    actionable: bool = False
    direction: str = "both"
    max_change: int | None = None
    allow_none: bool = False
    why: str = ""

    def __post_init__(self) -> None:
        if self.kind not in GROUP_KINDS:
            raise InputError(f"group {self.name!r}: kind {self.kind!r} is not one of {GROUP_KINDS}")
        if len(self.columns) < 1 or len(set(self.columns)) != len(self.columns):
            raise InputError(f"group {self.name!r} needs distinct columns, got {self.columns}")
        if self.kind == "onehot" and len(self.columns) + self.allow_none < 2:
            raise InputError(f"one-hot group {self.name!r} has a single state")
        _direction(self.direction, f"group {self.name!r}")

    @property
    def n_levels(self) -> int:
        if self.kind == "thermometer":
            return len(self.columns) + 1
        return len(self.columns) + int(self.allow_none)

    def codes(self) -> np.ndarray:
        """(levels, columns) 0/1 array: the encoding of every level."""
        k = len(self.columns)
        if self.kind == "thermometer":
            return (np.arange(k)[None, :] < np.arange(k + 1)[:, None]).astype(float)
        eye = np.eye(k)
        return np.vstack([np.zeros((1, k)), eye]) if self.allow_none else eye

    def level(self, values: np.ndarray) -> int | None:
        """The level encoded by ``values`` (this group's columns of one row), None if invalid."""
        match = np.nonzero((np.abs(self.codes() - values[None, :]) < _EPS).all(axis=1))[0]
        return int(match[0]) if len(match) else None

    def reachable(self, level: int) -> np.ndarray:
        """The levels one action can move to from ``level`` (not ``level`` itself)."""
        levels = np.arange(self.n_levels)
        ok = levels != level
        if self.direction == "increase":
            ok &= levels > level
        elif self.direction == "decrease":
            ok &= levels < level
        if self.max_change is not None:
            ok &= np.abs(levels - level) <= self.max_change
        return levels[ok]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kind": self.kind,
            "columns": list(self.columns),
            "actionable": self.actionable,
        }
        if self.actionable:
            d["direction"] = self.direction
        if self.max_change is not None:
            d["max_change"] = self.max_change
        if self.allow_none:
            d["allow_none"] = True
        if self.why:
            d["why"] = self.why
        return d


@dataclass(frozen=True)
class Link:
    """A change ``d`` of ``source`` (a column, or a group's level) forces ``target`` to change by
    ``ratio · d``."""

    source: str
    target: str
    ratio: float = 1.0
    why: str = ""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"source": self.source, "target": self.target, "ratio": self.ratio}
        if self.why:
            d["why"] = self.why
        return d


@dataclass
class ActionSet:
    """The actions available on the columns ``names`` of a model's input (module docstring).

    Build it with :meth:`from_dict` / :meth:`from_json` (the ACTIONS.json format) or directly
    from :class:`FeatureRule`, :class:`Group` and :class:`Link` objects; columns without a rule
    are immutable. InputError for a rule, group or link naming an unknown column, a column in two
    groups, a grouped column with a rule of its own, a link into a group, or a cycle of links.
    """

    names: list[str]
    rules: dict[str, FeatureRule] = field(default_factory=dict)
    groups: list[Group] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    about: str = ""

    def __post_init__(self) -> None:
        self.names = [str(n) for n in self.names]
        if len(set(self.names)) != len(self.names):
            raise InputError("feature names must be distinct")
        self.index = {n: i for i, n in enumerate(self.names)}
        for name in self.rules:
            self._known(name, "the action set")
        self.rules = {n: self.rules.get(n, FeatureRule(n)) for n in self.names}
        self.group_of: dict[str, Group] = {}
        by_name: dict[str, Group] = {}
        for g in self.groups:
            if g.name in by_name or g.name in self.index:
                raise InputError(f"group name {g.name!r} is used twice (or is a column's name)")
            by_name[g.name] = g
            for c in g.columns:
                self._known(c, f"group {g.name!r}")
                if c in self.group_of:
                    raise InputError(
                        f"column {c!r} is in groups {self.group_of[c].name!r} and {g.name!r}"
                    )
                if self.rules[c].actionable:
                    raise InputError(
                        f"column {c!r} belongs to group {g.name!r}: set actionable/direction on "
                        "the group, not on the column"
                    )
                self.group_of[c] = g
        self.group_by_name = by_name
        self.links_from: dict[str, list[Link]] = {}
        for link in self.links:
            if link.source not in self.index and link.source not in by_name:
                raise InputError(
                    f"link source {link.source!r} is neither a column nor a group; known columns: "
                    f"{', '.join(self.names)}"
                )
            if link.source in by_name and by_name[link.source].kind == "onehot":
                raise InputError(
                    f"link source {link.source!r} is a one-hot group: its categories have no "
                    "order to scale a change by; use a thermometer group or a column"
                )
            self._known(link.target, "a link")
            if link.target in self.group_of:
                raise InputError(
                    f"link target {link.target!r} is in group {self.group_of[link.target].name!r}; "
                    "a forced change must land on a plain column"
                )
            self.links_from.setdefault(link.source, []).append(link)
        self._check_cycles()

    def _known(self, name: str, where: str) -> None:
        if name not in self.index:
            raise InputError(
                f"{where} names the column {name!r}, which the data does not have; known columns: "
                f"{', '.join(self.names)}"
            )

    def _check_cycles(self) -> None:
        def visit(node: str, path: tuple[str, ...]) -> None:
            for link in self.links_from.get(node, []):
                if link.target in path:
                    raise InputError(f"the links form a cycle: {' -> '.join((*path, link.target))}")
                visit(link.target, (*path, link.target))

        for source in list(self.links_from):
            visit(source, (source,))

    # --- reading and writing ------------------------------------------------------------------
    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], names: Sequence[str]) -> ActionSet:
        """An action set from the ACTIONS.json structure (module docstring) for the columns
        ``names``. InputError naming any unknown column or key."""
        if not isinstance(spec, Mapping):
            raise InputError(f"an action set is a JSON object, got {type(spec).__name__}")
        rules: dict[str, FeatureRule] = {}
        groups: list[Group] = []
        links: list[Link] = []
        about = str(spec.get("__about__", ""))
        for key, value in spec.items():
            if key == "__about__":
                continue
            if key == "__groups__":
                groups = [_group(n, g) for n, g in dict(value).items()]
            elif key == "__links__":
                links = [_link(v) for v in value]
            elif key.startswith("__"):
                raise InputError(
                    f"unknown key {key!r} in the action set: use '__groups__', '__links__' or "
                    "'__about__'"
                )
            else:
                rules[key] = _rule(key, value)
        unknown = [k for k in rules if k not in set(map(str, names))]
        if unknown:
            raise InputError(
                f"the action set names column(s) {unknown} that the data does not have; known "
                f"columns: {', '.join(map(str, names))}"
            )
        return cls(list(names), rules, groups, links, about)

    @classmethod
    def from_json(cls, source: str | Path | Mapping[str, Any], names: Sequence[str]) -> ActionSet:
        """Read an ACTIONS.json file (a path, a JSON string or an already parsed dict)."""
        if isinstance(source, Mapping):
            return cls.from_dict(source, names)
        text = str(source)
        if not text.lstrip().startswith("{"):
            path = Path(text)
            if not path.is_file():
                raise InputError(f"action set file {path} does not exist")
            text = path.read_text(encoding="utf-8")
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"the action set is not valid JSON: {e}") from e
        return cls.from_dict(spec, names)

    @classmethod
    def from_data(
        cls,
        X: np.ndarray,
        names: Sequence[str],
        actionable: Iterable[str] | None = None,
        direction: str = "both",
    ) -> ActionSet:
        """Every column in ``actionable`` (default: all) can move, in ``direction``, within the
        range the data ``X`` shows; columns whose values are all integers get an integer grid.
        A convenience for exploration: a real action set says what people can actually do."""
        X = np.asarray(X, dtype=float)
        chosen = set(names if actionable is None else actionable)
        rules = {}
        for j, n in enumerate(names):
            if n in chosen:
                col = X[:, j]
                integer = bool(np.all(col == np.round(col)))
                rules[n] = FeatureRule(
                    n, True, direction, float(col.min()), float(col.max()), 1.0 if integer else None
                )
        return cls(list(names), rules)

    def to_dict(self) -> dict[str, Any]:
        """The ACTIONS.json structure (rules only for columns that differ from the default)."""
        out: dict[str, Any] = {}
        if self.about:
            out["__about__"] = self.about
        for n in self.names:
            d = self.rules[n].to_dict()
            if d != {"actionable": False}:
                out[n] = d
        if self.groups:
            out["__groups__"] = {g.name: g.to_dict() for g in self.groups}
        if self.links:
            out["__links__"] = [link.to_dict() for link in self.links]
        return out

    def to_json(self, path: str | Path | None = None) -> str:
        """The ACTIONS.json text; written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    # --- what can move -----------------------------------------------------------------------
    @property
    def actionable(self) -> np.ndarray:
        """(features,) bool: the columns a person can change directly (an actionable rule, or a
        column of an actionable group). Columns changed only as forced co-moves are False."""
        return np.array(
            [
                self.group_of[n].actionable if n in self.group_of else self.rules[n].actionable
                for n in self.names
            ]
        )

    def __repr__(self) -> str:
        return (
            f"ActionSet({len(self.names)} columns, {int(self.actionable.sum())} actionable, "
            f"{len(self.groups)} groups, {len(self.links)} links)"
        )

    def check(self, X: np.ndarray) -> None:
        """InputError unless every row of ``X`` is a valid starting point: the right width,
        every value within its feature's bounds, every group in a valid state (the message names
        the row and the feature or group)."""
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or X.shape[1] != len(self.names):
            raise InputError(
                f"the rows have shape {X.shape}; the action set has {len(self.names)} columns"
            )
        lb = np.array([self.rules[n].lb for n in self.names])
        ub = np.array([self.rules[n].ub for n in self.names])
        bad = (lb - _EPS > X) | (ub + _EPS < X)
        if bad.any():
            r, c = (int(i[0]) for i in np.nonzero(bad))
            n = self.names[c]
            raise InputError(
                f"row {r}: feature {n!r} = {X[r, c]:g} lies outside its bounds "
                f"[{lb[c]:g}, {ub[c]:g}] in the action set; widen the bounds to include the "
                "current value"
            )
        for g in self.groups:
            cols = [self.index[c] for c in g.columns]
            codes = g.codes()
            ok = (np.abs(X[:, cols][:, None, :] - codes[None]) < _EPS).all(axis=2).any(axis=1)
            if not ok.all():
                r = int(np.nonzero(~ok)[0][0])
                raise InputError(
                    f"row {r}: the columns of {g.kind} group {g.name!r} ({', '.join(g.columns)}) "
                    f"hold {X[r, cols].tolist()}, not a valid {g.kind} state"
                )

    def candidates(
        self,
        x: np.ndarray,
        j: int,
        rng: np.random.Generator,
        n_samples: int = 100,
        max_grid: int = 1000,
    ) -> np.ndarray:
        """The points a single action on column ``j`` reaches from the row ``x``, forced
        co-moves applied: (m, features). A discrete column enumerates its grid (``n_samples``
        grid values drawn without replacement when the grid has more than ``max_grid``); a
        continuous one draws ``n_samples`` values uniformly in its reachable interval; a grouped
        column moves its group to every reachable level that changes the column. Empty for an
        immutable column or when nothing is reachable. No model calls."""
        x = np.asarray(x, dtype=float)
        name = self.names[j]
        group = self.group_of.get(name)
        if group is not None:
            return self._group_moves(x, group, self.index[name])
        rule = self.rules[name]
        if not rule.actionable:
            return np.zeros((0, len(x)))
        lo, hi = rule.interval(float(x[j]))
        if rule.discrete:
            assert rule.step is not None
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise InputError(
                    f"discrete feature {name!r} can move without limit; give it lb/ub or "
                    "max_change so that its values can be enumerated"
                )
            k = np.arange(
                math.ceil((lo - x[j]) / rule.step - _EPS),
                math.floor((hi - x[j]) / rule.step + _EPS) + 1,
            )
            k = k[k != 0]
            if len(k) > max_grid:
                k = np.sort(rng.choice(k, size=min(n_samples, len(k)), replace=False))
            values = x[j] + k * rule.step
        else:
            if hi - lo <= _EPS:
                return np.zeros((0, len(x)))
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise InputError(
                    f"continuous feature {name!r} can move without limit; give it lb/ub or "
                    "max_change so that its actions can be sampled"
                )
            values = rng.uniform(lo, hi, size=n_samples)
        points = np.repeat(x[None, :], len(values), axis=0)
        points[:, j] = values
        return self._co_move(points, name, values - x[j])

    def _group_moves(self, x: np.ndarray, group: Group, j: int) -> np.ndarray:
        if not group.actionable:
            return np.zeros((0, len(x)))
        cols = [self.index[c] for c in group.columns]
        level = group.level(x[cols])
        if level is None:
            raise InputError(
                f"the columns of group {group.name!r} hold {x[cols].tolist()}, not a valid "
                f"{group.kind} state"
            )
        codes = group.codes()
        levels = group.reachable(level)
        pos = group.columns.index(self.names[j])
        levels = levels[codes[levels, pos] != codes[level, pos]]
        points = np.repeat(x[None, :], len(levels), axis=0)
        points[:, cols] = codes[levels]
        return self._co_move(points, group.name, (levels - level).astype(float))

    def _co_move(self, points: np.ndarray, source: str, delta: np.ndarray) -> np.ndarray:
        """Apply the links out of ``source`` for changes ``delta`` (one per point); drop points
        whose forced change leaves a target's bounds."""
        keep = np.ones(len(points), dtype=bool)
        todo = [(source, delta)]
        while todo:
            src, d = todo.pop()
            for link in self.links_from.get(src, []):
                t = self.index[link.target]
                change = link.ratio * d
                points[:, t] += change
                rule = self.rules[link.target]
                keep &= (points[:, t] >= rule.lb - _EPS) & (points[:, t] <= rule.ub + _EPS)
                todo.append((link.target, change))
        return points[keep]


def _rule(name: str, spec: Any) -> FeatureRule:
    if not isinstance(spec, Mapping):
        raise InputError(f"the rule of column {name!r} must be an object, got {spec!r}")
    extra = set(spec) - _RULE_KEYS
    if extra:
        raise InputError(
            f"column {name!r}: unknown key(s) {sorted(extra)}; use {sorted(_RULE_KEYS)}"
        )
    step = spec.get("step")
    if spec.get("integer") and step is None:
        step = 1.0
    return FeatureRule(
        name=name,
        actionable=bool(spec.get("actionable", False)),
        direction=_direction(spec.get("direction", "both"), f"column {name!r}"),
        lb=_number(spec.get("lb", -math.inf), f"column {name!r}: lb"),
        ub=_number(spec.get("ub", math.inf), f"column {name!r}: ub"),
        step=None if step is None else _number(step, f"column {name!r}: step"),
        max_change=None
        if spec.get("max_change") is None
        else _number(spec["max_change"], f"column {name!r}: max_change"),
        why=str(spec.get("why", "")),
    )


def _group(name: str, spec: Any) -> Group:
    if not isinstance(spec, Mapping) or "columns" not in spec or "kind" not in spec:
        raise InputError(f"group {name!r} needs at least 'kind' and 'columns'")
    extra = set(spec) - _GROUP_KEYS
    if extra:
        raise InputError(
            f"group {name!r}: unknown key(s) {sorted(extra)}; use {sorted(_GROUP_KEYS)}"
        )
    mc = spec.get("max_change")
    return Group(
        name=name,
        kind=str(spec["kind"]),
        columns=tuple(str(c) for c in spec["columns"]),
        actionable=bool(spec.get("actionable", False)),
        direction=_direction(spec.get("direction", "both"), f"group {name!r}"),
        max_change=None if mc is None else int(mc),
        allow_none=bool(spec.get("allow_none", False)),
        why=str(spec.get("why", "")),
    )


def _link(spec: Any) -> Link:
    if not isinstance(spec, Mapping) or "source" not in spec or "target" not in spec:
        raise InputError(f"a link needs 'source' and 'target', got {spec!r}")
    extra = set(spec) - _LINK_KEYS
    if extra:
        raise InputError(f"a link has unknown key(s) {sorted(extra)}; use {sorted(_LINK_KEYS)}")
    return Link(
        str(spec["source"]),
        str(spec["target"]),
        _number(spec.get("ratio", 1.0), "a link's ratio"),
        str(spec.get("why", "")),
    )
