"""Scoring failure attributions the Who&When way, honestly: exact agent and step accuracy, step
within ±k, joint accuracy, MRR of the gold step when a method ranks turns, bootstrap intervals,
and the official scorer's lenient rule reproduced exactly for comparability.

After Zhang, Yin et al., 'Which Agent Causes Task Failures and When? On Automated Failure
Attribution of LLM Multi-Agent Systems' (Who&When, ICML 2025), whose ``Automated_FA/evaluate.py``
counts an agent correct when the gold name is a substring of the predicted one and a step
correct when the gold step's digits are a substring of the predicted step's (so step "1"
matches "12"), over all logs (unparsed predictions count as wrong). Trivial baselines
(:func:`baseline_predictions`) are scored by the same code so that every table can show them.
No model calls anywhere in this module.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.errors import InputError
from attribkit.core.jsonio import to_json
from attribkit.tasks.agents import AgentLog, decision_from_scores

__all__ = [
    "BASELINE_RULES",
    "WhoWhenScore",
    "baseline_predictions",
    "cross_fitted_majority",
    "parse_predictions",
    "read_predictions",
    "trivial_baselines",
    "who_when_score",
    "write_predictions",
]

#: The trivial rules of :func:`baseline_predictions`.
BASELINE_RULES = (
    "random",
    "most_turns",
    "most_turns_no_terminal",
    "majority",
    "majority_step",
    "first_turn",
)
#: The rules fitted on gold labels (run out of fold by :func:`cross_fitted_majority`).
FITTED_RULES = ("majority", "majority_step")
SCORINGS = ("exact", "official")
#: ``evaluate.py``'s patterns (``read_predictions``).
_BLOCK = re.compile(r"Prediction for ([^:]+\.json):(.*?)(?=Prediction for|\Z)", re.DOTALL)
_AGENT = re.compile(r"Agent Name:\s*([\w_]+)", re.IGNORECASE)
_STEP = re.compile(r"Step Number:\s*(\d+)", re.IGNORECASE)
_UNPARSED_LINE = "Failed to get prediction."


# --- predictions ----------------------------------------------------------------------------------
@dataclass
class _Pred:
    """One normalised prediction: agent and step (None when absent), a reason, and the ranked
    steps when the method ranks turns."""

    agent: str | None
    step: Any
    reason: str = ""
    ranking: list[int] | None = None

    @property
    def step_int(self) -> int | None:
        s = self.step
        if isinstance(s, bool):
            return None
        if isinstance(s, int | np.integer):
            return int(s)
        if isinstance(s, float | np.floating) and float(s).is_integer():
            return int(s)
        if isinstance(s, str) and re.fullmatch(r"\s*-?\d+\s*", s):
            return int(s)
        return None

    @property
    def parsed(self) -> bool:
        return bool(self.agent) and self.step_int is not None


def _normalise(p: Any, i: int) -> _Pred:
    if p is None:
        return _Pred(None, None)
    if isinstance(p, Attribution):
        decision = p.extras.get("decision")
        if decision is None:
            if not all("step" in u.meta and "agent" in u.meta for u in p.units):
                raise InputError(
                    f"prediction {i} is an Attribution without a decision and without turn "
                    "units (meta 'agent', 'step'); pass an agents attribution"
                )
            decision = decision_from_scores(p.scores, p.units)
        ranking = None
        if all("step" in u.meta for u in p.units):
            ranking = [int(p.units[j].meta["step"]) for j in p.ranking]
        return _Pred(
            decision.get("agent") or None,
            decision.get("step"),
            str(decision.get("reason") or ""),
            ranking,
        )
    if isinstance(p, dict):
        rank = p.get("ranking")
        return _Pred(
            (str(p["agent"]) if p.get("agent") not in (None, "") else None),
            p.get("step"),
            str(p.get("reason") or ""),
            None if rank is None else [int(s) for s in rank],
        )
    raise InputError(
        f"prediction {i} is a {type(p).__name__}: give an Attribution, a dict "
        "{'agent': ..., 'step': ...} or None (unparsed)"
    )


def _gold(log: AgentLog, i: int) -> tuple[str, int]:
    if not isinstance(log, AgentLog):
        raise InputError(f"logs[{i}] is a {type(log).__name__}; give AgentLog objects")
    if log.mistake_agent is None or log.mistake_step is None:
        raise InputError(
            f"log {log.id or i} has no gold mistake_agent/mistake_step; score only annotated logs"
        )
    return log.mistake_agent, log.mistake_step


def _ids(logs: Sequence[AgentLog]) -> list[str]:
    ids = [log.id or f"{i}.json" for i, log in enumerate(logs)]
    if len(set(ids)) != len(ids):
        dup = sorted(k for k, c in Counter(ids).items() if c > 1)
        raise InputError(
            f"log ids must be unique for the official format (file names); repeated: {dup[:5]}"
        )
    bad = [x for x in ids if ":" in x or not x.endswith(".json")]
    if bad:
        raise InputError(f"log ids must be file names ending in .json without ':'; got {bad[:5]}")
    return ids


def _aligned(predictions: Sequence[Any], logs: Sequence[AgentLog]) -> list[_Pred]:
    if isinstance(logs, AgentLog) or len(predictions) != len(logs):
        raise InputError(
            f"{len(predictions)} predictions for {len(logs) if not isinstance(logs, AgentLog) else 1}"
            " logs; give one prediction (or None) per log, in the same order"
        )
    if not logs:
        raise InputError("no logs to score")
    return [_normalise(p, i) for i, p in enumerate(predictions)]


def _one_line(text: str) -> str:
    """A reason on one line that cannot open a new block of the official format."""
    text = " ".join(text.split())
    return text.replace("Prediction for", "prediction for")


def _block(ident: str, p: _Pred) -> str:
    if p.agent is None and p.step is None:
        return f"Prediction for {ident}:\n{_UNPARSED_LINE}\n\n"
    lines = [f"Prediction for {ident}:"]
    if p.agent is not None:
        lines.append(f"Agent Name: {' '.join(str(p.agent).split())}")
    if p.step is not None:
        lines.append(f"Step Number: {' '.join(str(p.step).split())}")
    lines.append(f"Reason for Mistake: {_one_line(p.reason)}")
    return "\n".join(lines) + "\n\n"


def _render(preds: Sequence[_Pred], ids: Sequence[str]) -> str:
    return "".join(_block(i, p) for i, p in zip(ids, preds, strict=True))


def parse_predictions(text: str) -> dict[str, dict[str, str]]:
    """The predictions ``evaluate.py`` reads from a text in the official format: file id →
    ``{"predicted_agent", "predicted_step"}`` (strings, exactly as its regular expressions
    capture them); blocks without both fields are left out, later blocks of an id win."""
    out: dict[str, dict[str, str]] = {}
    for block in _BLOCK.finditer(text):
        content, ident = block.group(2).strip(), block.group(1).strip()
        agent, step = _AGENT.search(content), _STEP.search(content)
        if agent and step:
            out[ident] = {"predicted_agent": agent.group(1), "predicted_step": step.group(1)}
    return out


def write_predictions(
    predictions: Sequence[Any], logs: Sequence[AgentLog], path: str | Path
) -> Path:
    """Write predictions in Who&When's official text format (what ``evaluate.py`` reads):
    ``Prediction for {id}:`` then ``Agent Name:``, ``Step Number:`` and ``Reason for Mistake:``
    lines, one block per log (id = the log's file name; ``{i}.json`` for a log without one); an
    unparsed prediction (None) is a block without those lines. Returns the path."""
    preds = _aligned(predictions, logs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_render(preds, _ids(logs)), encoding="utf-8")
    return path


def read_predictions(path: str | Path, logs: Sequence[AgentLog]) -> list[dict[str, Any] | None]:
    """Predictions from an official-format file, aligned with ``logs`` by file id: a dict
    ``{"agent", "step"}`` as ``evaluate.py`` parses it (agent: the first word after
    ``Agent Name:``), or None where the file has no parsed prediction for the log."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot read predictions {path}: {e}") from e
    parsed = parse_predictions(text)
    out: list[dict[str, Any] | None] = []
    for ident in _ids(logs):
        p = parsed.get(ident)
        out.append(
            None if p is None else {"agent": p["predicted_agent"], "step": int(p["predicted_step"])}
        )
    return out


# --- the score ------------------------------------------------------------------------------------
@dataclass
class WhoWhenScore:
    """Failure-attribution accuracy over ``n`` logs.

    ``metrics``: name → ``{"mean", "lo", "hi", "correct"}`` (fraction of all logs, bootstrap
    95 % percentile interval over logs, count): ``agent``, ``step``, ``joint`` (both right),
    ``step_within_k`` for each tolerance k (exact scoring only) and ``mrr`` (reciprocal rank of
    the gold step; exact scoring and only when some prediction ranks turns — a single guess
    counts as a ranking of one step, an unparsed prediction as 0). ``unparsed``: predictions
    without an agent and an integer step (official: what ``evaluate.py`` could not parse);
    they count as wrong. ``rows``: per log, its id and what was right.
    """

    n: int
    scoring: str
    unparsed: int
    metrics: dict[str, dict[str, Any]]
    rows: list[dict[str, Any]] = field(default_factory=list)
    n_boot: int = 1000
    seed: int = 0
    tolerance: tuple[int, ...] = ()

    def __getitem__(self, name: str) -> float:
        """The mean of metric ``name`` (e.g. ``score["agent"]``)."""
        if name not in self.metrics:
            raise InputError(f"no metric {name!r}; use one of {list(self.metrics)}")
        return float(self.metrics[name]["mean"])

    @property
    def agent_accuracy(self) -> float:
        return self["agent"]

    @property
    def step_accuracy(self) -> float:
        return self["step"]

    @property
    def joint_accuracy(self) -> float:
        return self["joint"]

    @property
    def mrr(self) -> float | None:
        return self["mrr"] if "mrr" in self.metrics else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (ids and numbers only)."""
        return to_json(
            {
                "n": self.n,
                "scoring": self.scoring,
                "unparsed": self.unparsed,
                "n_boot": self.n_boot,
                "seed": self.seed,
                "tolerance": list(self.tolerance),
                "metrics": self.metrics,
                "rows": self.rows,
            }
        )

    def table(self) -> str:
        """A markdown table: one line per metric, percent with its 95 % interval."""
        lines = ["| metric | accuracy | 95 % interval | correct |", "|---|---:|---:|---:|"]
        for name, m in self.metrics.items():
            if name == "mrr":
                value, interval = f"{m['mean']:.3f}", f"[{m['lo']:.3f}, {m['hi']:.3f}]"
                correct = "—"
            else:
                value = f"{100 * m['mean']:.1f} %"
                interval = f"[{100 * m['lo']:.1f}, {100 * m['hi']:.1f}]"
                correct = f"{m['correct']}/{self.n}"
            lines.append(f"| {name} | {value} | {interval} | {correct} |")
        lines.append(
            f"\n{self.n} logs, {self.scoring} scoring, {self.unparsed} unparsed (counted wrong); "
            f"bootstrap over logs ({self.n_boot} resamples, seed {self.seed})."
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _exact_rows(
    preds: Sequence[_Pred], logs: Sequence[AgentLog], tolerance: Sequence[int]
) -> tuple[dict[str, np.ndarray], int, bool]:
    cols: dict[str, list[float]] = {"agent": [], "step": [], "joint": []}
    for k in tolerance:
        cols[f"step_within_{k}"] = []
    cols["mrr"] = []
    ranked = any(p.ranking is not None for p in preds)
    unparsed = 0
    for i, (p, log) in enumerate(zip(preds, logs, strict=True)):
        gold_agent, gold_step = _gold(log, i)
        unparsed += not p.parsed
        agent_ok = p.agent is not None and p.agent.strip() == gold_agent.strip()
        s = p.step_int
        step_ok = s is not None and s == gold_step
        cols["agent"].append(agent_ok)
        cols["step"].append(step_ok)
        cols["joint"].append(agent_ok and step_ok)
        for k in tolerance:
            cols[f"step_within_{k}"].append(s is not None and abs(s - gold_step) <= k)
        ranking = p.ranking if p.ranking is not None else ([s] if s is not None else [])
        rr = 1.0 / (ranking.index(gold_step) + 1) if gold_step in ranking else 0.0
        cols["mrr"].append(rr)
    out = {k: np.asarray(v, dtype=float) for k, v in cols.items()}
    if not ranked:
        del out["mrr"]
    return out, unparsed, ranked


def _official_rows(
    preds: Sequence[_Pred], logs: Sequence[AgentLog]
) -> tuple[dict[str, np.ndarray], int]:
    ids = _ids(logs)
    parsed = parse_predictions(_render(preds, ids))  # exactly what evaluate.py would read
    agent, step = [], []
    for i, (ident, log) in enumerate(zip(ids, logs, strict=True)):
        gold_agent, gold_step = _gold(log, i)
        p = parsed.get(ident)
        agent.append(p is not None and str(gold_agent) in p["predicted_agent"])
        step.append(p is not None and str(gold_step) in p["predicted_step"])
    a, s = np.asarray(agent, dtype=float), np.asarray(step, dtype=float)
    return {"agent": a, "step": s, "joint": a * s}, len(logs) - len(parsed)


def who_when_score(
    predictions: Sequence[Any],
    logs: Sequence[AgentLog],
    scoring: str = "exact",
    tolerance: Sequence[int] = (1, 2, 5),
    n_boot: int = 1000,
    seed: int = 0,
) -> WhoWhenScore:
    """Score failure-attribution predictions against the logs' gold agent and step.

    ``predictions`` is aligned with ``logs``: agents Attributions (their
    ``extras["decision"]``, and their turn ranking for MRR), dicts ``{"agent", "step"}``
    (optionally ``"ranking"``: steps, best first) or None (unparsed). ``scoring="exact"``:
    agent names equal, steps equal as integers, plus step within ±k for each k of
    ``tolerance``, joint accuracy and MRR when predictions rank turns. ``scoring="official"``:
    exactly Who&When's ``evaluate.py`` — the predictions rendered in its text format and parsed
    by its regular expressions (agent: the first word after ``Agent Name:``), agent right iff
    the gold agent is a substring of the predicted one, step right iff the gold step's digits
    are a substring of the predicted step's ("1" matches "12"), over all logs. Every metric has
    a bootstrap 95 % percentile interval over logs (``n_boot`` resamples, ``seed``). No model
    calls."""
    if scoring not in SCORINGS:
        raise InputError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
    tol = tuple(int(k) for k in tolerance)
    if any(k < 0 for k in tol):
        raise InputError("tolerances must be >= 0 steps")
    if n_boot < 1:
        raise InputError("n_boot must be >= 1")
    preds = _aligned(predictions, logs)
    if scoring == "exact":
        cols, unparsed, _ = _exact_rows(preds, logs, tol)
    else:
        cols, unparsed = _official_rows(preds, logs)
        tol = ()
    n = len(logs)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(n_boot, n))
    metrics: dict[str, dict[str, Any]] = {}
    for name, v in cols.items():
        boot = v[picks].mean(axis=1)
        metrics[name] = {
            "mean": float(v.mean()),
            "lo": float(np.percentile(boot, 2.5)),
            "hi": float(np.percentile(boot, 97.5)),
            "correct": int(v.sum()) if name != "mrr" else None,
        }
    ids = [log.id or f"{i}.json" for i, log in enumerate(logs)]
    rows = [{"id": ids[i], **{name: float(v[i]) for name, v in cols.items()}} for i in range(n)]
    return WhoWhenScore(n, scoring, int(unparsed), metrics, rows, n_boot, seed, tol)


# --- trivial baselines ----------------------------------------------------------------------------
def _is_terminal(agent: str) -> bool:
    """Code-execution agents (AG2's ``Computer_terminal``, Magentic-One's ``ComputerTerminal``)."""
    return "terminal" in agent.lower()


def _most_turns(log: AgentLog, exclude_terminal: bool = False) -> tuple[str, str]:
    counts = Counter(t.agent for t in log.turns)
    candidates = log.agents
    last = log.turns[-1].agent
    if exclude_terminal:
        kept = [a for a in candidates if not _is_terminal(a)]
        candidates = kept or candidates
    else:
        kept = [a for a in candidates if a != last]
        candidates = kept or candidates
    best = max(candidates, key=lambda a: (counts[a], -candidates.index(a)))
    return (
        best,
        "excluding code-execution agents" if exclude_terminal else "excluding the last speaker",
    )


def baseline_predictions(
    logs: Sequence[AgentLog],
    rule: str,
    train: Sequence[AgentLog] | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Predictions of a trivial rule, one dict ``{"agent", "step", "reason"}`` per log:

    - ``"random"``: an agent uniformly among the log's agents and, independently, a step
      uniformly among its turns (``seed``);
    - ``"most_turns"``: the agent with the most turns, not counting the last turn's speaker
      when another agent speaks (ties: the earliest), and its first turn;
    - ``"most_turns_no_terminal"``: the same, not counting code-execution agents (names
      containing "terminal") instead of the last speaker — the rule that reproduces the brief's
      "most-turns non-terminal agent" numbers more closely;
    - ``"majority"``: the gold agent most frequent in ``train`` (fit it on other logs, e.g.
      :func:`cross_fitted_majority`; ties: the earliest in ``train``) and its first turn in
      the log, or ``most_turns`` where it does not speak;
    - ``"majority_step"``: the gold step most frequent in ``train`` (ties: the smallest; the
      log's last turn when the log is shorter) and the agent speaking there — a constant-step
      guess, the floor for a judge that names one step number whatever the log;
    - ``"first_turn"``: step 0 and its agent.

    No model calls."""
    if rule not in BASELINE_RULES:
        raise InputError(f"unknown baseline rule {rule!r}; choose one of {BASELINE_RULES}")
    if isinstance(logs, AgentLog):
        raise InputError("pass a list of AgentLog objects")
    rng = np.random.default_rng(seed)
    majority = None
    if rule == "majority":
        gold = [log.mistake_agent for log in train or [] if log.mistake_agent is not None]
        if not gold:
            raise InputError(
                "the majority rule needs train= logs with gold agents (fit it on other logs; "
                "cross_fitted_majority(logs) does the folds)"
            )
        majority = Counter(gold).most_common(1)[0][0]
    step_mode = 0
    if rule == "majority_step":
        counts = Counter(log.mistake_step for log in train or [] if log.mistake_step is not None)
        if not counts:
            raise InputError(
                "the majority_step rule needs train= logs with gold steps (fit it on other "
                "logs; cross_fitted_majority(logs, rule='majority_step') does the folds)"
            )
        step_mode = min(counts, key=lambda k: (-counts[k], k))
    out: list[dict[str, Any]] = []
    for log in logs:
        if rule == "random":
            agents = log.agents
            agent = agents[int(rng.integers(len(agents)))]
            step = int(rng.integers(len(log)))
            out.append({"agent": agent, "step": step, "reason": "random agent and step"})
        elif rule in ("most_turns", "most_turns_no_terminal"):
            agent, how = _most_turns(log, rule == "most_turns_no_terminal")
            out.append(
                {
                    "agent": agent,
                    "step": log.steps_of(agent)[0],
                    "reason": f"agent with the most turns ({how}), its first turn",
                }
            )
        elif rule == "majority":
            assert majority is not None
            steps = log.steps_of(majority)
            if steps:
                out.append(
                    {"agent": majority, "step": steps[0], "reason": "majority agent, first turn"}
                )
            else:
                agent, how = _most_turns(log)
                out.append(
                    {
                        "agent": agent,
                        "step": log.steps_of(agent)[0],
                        "reason": f"majority agent absent: most turns ({how}), its first turn",
                    }
                )
        elif rule == "majority_step":
            step = min(step_mode, len(log) - 1)
            agent = log.turns[step].agent
            out.append({"agent": agent, "step": step, "reason": "majority gold step, its agent"})
        else:
            out.append({"agent": log.turns[0].agent, "step": 0, "reason": "first turn"})
    return out


def cross_fitted_majority(
    logs: Sequence[AgentLog], folds: int = 5, seed: int = 0, rule: str = "majority"
) -> list[dict[str, Any]]:
    """A rule fitted on gold labels, out of fold: the logs are shuffled (``seed``) into
    ``folds`` folds and each fold is predicted by ``rule`` (``"majority"``: the majority gold
    agent, or ``"majority_step"``: the majority gold step; see :func:`baseline_predictions`)
    fitted on the other folds. One prediction per log, in the order of ``logs``. No model
    calls."""
    if rule not in FITTED_RULES:
        raise InputError(f"rule must be 'majority' or 'majority_step', got {rule!r}")
    n = len(logs)
    if folds < 2 or folds > n:
        raise InputError(f"folds must be between 2 and the number of logs ({n}), got {folds}")
    order = np.random.default_rng(seed).permutation(n)
    out: list[dict[str, Any] | None] = [None] * n
    for part in np.array_split(order, folds):
        test = set(int(i) for i in part)
        train = [logs[i] for i in range(n) if i not in test]
        preds = baseline_predictions([logs[i] for i in part], rule, train=train)
        for i, p in zip(part, preds, strict=True):
            out[int(i)] = p
    return [p for p in out if p is not None]


def trivial_baselines(
    logs: Sequence[AgentLog],
    rules: Sequence[str] = BASELINE_RULES,
    folds: int = 5,
    seed: int = 0,
) -> dict[str, list[dict[str, Any]]]:
    """Each rule's predictions (:func:`baseline_predictions`), in ``rules`` order, by row
    name: a rule's own name, or for the rules fitted on gold labels ``"majority (5-fold)"`` /
    ``"majority step (5-fold)"``, run out of fold (:func:`cross_fitted_majority`) and left
    out when there are fewer than ``folds`` logs. No model calls."""
    out: dict[str, list[dict[str, Any]]] = {}
    for rule in rules:
        if rule not in FITTED_RULES:
            out[rule] = baseline_predictions(logs, rule, seed=seed)
        elif len(logs) >= folds:
            name = f"{rule.replace('_', ' ')} ({folds}-fold)"
            out[name] = cross_fitted_majority(logs, folds, seed, rule)
    return out
