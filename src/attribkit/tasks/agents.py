"""Failure attribution over multi-agent logs: which agent, at which step, caused a failure.

After Zhang, Yin et al., 'Which Agent Causes Task Failures and When? On Automated Failure
Attribution of LLM Multi-Agent Systems' (Who&When, ICML 2025); West et al., 'Abduct, Act,
Predict: Scaffolding Causal Inference for Automated Failure Attribution in Multi-Agent Systems'
(A2P, 2025); Ma et al., 'Automatic Failure Attribution and Critical Step Prediction Method for
Multi-Agent Systems Based on Causal Inference' (agent Shapley, 2025).

An :class:`AgentLog` is a multi-agent conversation: its turns (each spoken by an agent), and
optionally the question, the gold answer and the annotated mistake (agent and 0-based step).
:meth:`AgentLog.from_file` reads a Who&When file (both families) or a plain list of turns. An
:class:`AgentTask` (kind ``"agents"``) makes the turns units (:class:`TurnUnits`: removing a turn
drops it, the others keep their step numbers) and values a subset of turns judge-free as
log p(outcome | prompt built from the kept turns) with a language model, so every perturbation
method (``loo``, ``shapley``...) runs on it; judge methods (``attribkit methods --kind agents``)
read its ``judge`` and ``with_answer``. Every result carries per-turn scores, per-agent totals
(``extras["agent_scores"]``) and a decision (``extras["decision"]``: agent, step, reason).

Logs of public benchmarks may embed questions and answers that must not be reshared: a log's
``repr``, its units' labels (``"Step i - agent"``), the task's ``target_info`` and every
Attribution it makes hold ids, agents and step numbers only, never the text of a turn, the
question or an answer.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import Budget, Cost, CostMeter
from attribkit.core.errors import InputError, WindowError
from attribkit.core.jsonio import unit_vector
from attribkit.core.registry import attribute
from attribkit.core.scorer import Scorer
from attribkit.core.task import Task
from attribkit.core.units import Unit, Units
from attribkit.tasks.prompt_scores import PromptLogprobs, lm_meter

__all__ = [
    "ANSWER_CUE",
    "DEFAULT_METHOD",
    "PROMPT_TEMPLATE",
    "QUESTION_BLOCK",
    "AgentLog",
    "AgentTask",
    "Turn",
    "TurnUnits",
    "agent_of_role",
    "attribute_agents",
    "decision_from_scores",
    "final_turn",
]

DEFAULT_METHOD = "turn_loo"
#: The judge-free prompt: ``{question}`` receives :data:`QUESTION_BLOCK` when the log has a
#: question (else nothing), ``{log}`` the kept turns as numbered ``Step i - agent: content``
#: lines; :data:`ANSWER_CUE` follows, then the outcome is scored.
PROMPT_TEMPLATE = "{question}Conversation of a multi-agent system:\n{log}"
QUESTION_BLOCK = "Problem: {question}\n\n"
#: What follows the kept turns; the outcome is scored after it, with one leading space.
ANSWER_CUE = "\n\nFinal answer:"
#: Suggested per-turn cut for small models' windows (the pilot's and the GraphTracer
#: reproduction's 350–400 characters).
SUGGESTED_TURN_CHARS = 400
_OUTCOMES = ("final", "gold")
_ROLE_SUFFIX = re.compile(r"\s*\([^()]*\)\s*$")


def agent_of_role(role: str) -> str:
    """The agent of a Who&When Hand-Crafted role: a trailing parenthesised part is stripped
    (``"Orchestrator (-> WebSurfer)"`` → ``"Orchestrator"``, ``"WebSurfer"`` → itself)."""
    stripped = _ROLE_SUFFIX.sub("", role).strip()
    return stripped or role.strip()


@dataclass(frozen=True)
class Turn:
    """One turn of a multi-agent log: who spoke (``agent``), what (``content``) and the raw role
    label of the source when it differs (e.g. ``"Orchestrator (thought)"``, ``"assistant"``)."""

    agent: str
    content: str
    role: str | None = None


def _turn(item: Any, i: int) -> Turn:
    """A Turn from a Turn or a dict ``{agent|name|role, content}``."""
    if isinstance(item, Turn):
        agent, content, role = item.agent, item.content, item.role
    elif isinstance(item, Mapping):
        role = item.get("role")
        role = None if role is None else str(role)
        if item.get("agent") not in (None, ""):
            agent = item["agent"]
        elif item.get("name") not in (None, ""):
            agent = item["name"]
        elif role:
            agent = agent_of_role(role)
        else:
            raise InputError(
                f"turn {i} names no agent: give each turn an 'agent' (or 'name', or 'role')"
            )
        content = item.get("content")
    else:
        raise InputError(
            f"turn {i} is a {type(item).__name__}: give Turn objects or dicts "
            "{'agent': ..., 'content': ...}"
        )
    if not isinstance(agent, str) or not agent.strip():
        raise InputError(f"turn {i} has an empty agent name; name who spoke")
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise InputError(f"turn {i}: content must be a string, got {type(content).__name__}")
    return Turn(agent.strip(), content, role)


def _step(value: Any, n: int) -> int | None:
    """The gold step as an int in [0, n), None when absent; InputError otherwise."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise InputError(f"mistake_step must be a 0-based step index, got {value!r}")
    if isinstance(value, str):
        if not re.fullmatch(r"\s*-?\d+\s*", value):
            raise InputError(f"mistake_step must be a 0-based step index, got {value!r}")
        value = int(value)
    if not isinstance(value, int | np.integer):
        raise InputError(f"mistake_step must be a 0-based step index, got {value!r}")
    step = int(value)
    if not 0 <= step < n:
        raise InputError(
            f"mistake_step {step} is out of range for a log of {n} turns (steps 0..{n - 1}); "
            "check that steps count from 0 and that the log is complete"
        )
    return step


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _mask_or_steps(keep: Any, n: int) -> list[int]:
    """Step indices from a boolean mask of length ``n`` or from an iterable of indices."""
    arr = np.asarray(list(keep) if not isinstance(keep, np.ndarray) else keep)
    if arr.size == 0:
        return []
    if arr.dtype == bool:
        if arr.ndim != 1 or len(arr) != n:
            raise InputError(f"a keep mask needs one boolean per turn ({n}), got {arr.shape}")
        return [int(i) for i in np.flatnonzero(arr)]
    if not np.issubdtype(arr.dtype, np.integer) or arr.ndim != 1:
        raise InputError("keep must be step indices or one boolean per turn")
    steps = sorted({int(i) for i in arr})
    if steps and (steps[0] < 0 or steps[-1] >= n):
        raise InputError(f"keep has a step outside 0..{n - 1}")
    return steps


class AgentLog:
    """A multi-agent conversation: turns, the question it worked on, the gold answer and the
    annotated mistake. No model calls.

    Args:
        turns: :class:`Turn` objects or dicts ``{"agent", "content"}`` (``{"name", "content"}``
            and ``{"role", "content"}`` too; a role's trailing parenthesised part is stripped
            to give the agent, as in Who&When's Hand-Crafted logs).
        question: the task the system worked on (optional).
        ground_truth: the correct answer (optional; needed for ``outcome="gold"``).
        mistake_agent: the annotated agent responsible for the failure (optional).
        mistake_step: the annotated 0-based step of its first decisive mistake (an int or a
            string of digits, stored as an int; optional).
        meta: anything else (``id``: the file name when read from a file; ``truncation``).
    """

    def __init__(
        self,
        turns: Sequence[Turn | Mapping[str, Any]],
        question: str | None = None,
        ground_truth: str | None = None,
        mistake_agent: str | None = None,
        mistake_step: int | str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(turns, str | bytes | Mapping) or not isinstance(turns, Iterable):
            raise InputError(
                "turns must be a list of Turn objects or dicts {'agent': ..., 'content': ...}"
            )
        self.turns: list[Turn] = [_turn(t, i) for i, t in enumerate(turns)]
        if not self.turns:
            raise InputError(
                "the log has no turns: there is nothing to attribute; give at least one turn "
                "{'agent': ..., 'content': ...} (a Who&When file keeps them under 'history')"
            )
        self.question = _opt_str(question)
        self.ground_truth = _opt_str(ground_truth)
        self.mistake_agent = _opt_str(mistake_agent)
        self.mistake_step = _step(mistake_step, len(self.turns))
        self.meta: dict[str, Any] = dict(meta or {})

    # --- reading files --------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path) -> AgentLog:
        """Read a log from a JSON file: a Who&When log (``history``: Algorithm-Generated turns
        ``{content, role, name}`` — the agent is ``name`` — or Hand-Crafted turns
        ``{content, role}`` — the agent is the role without its parenthesised suffix), a plain
        list of turns, or ``{"turns": [...]}`` (with optional ``question``, ``ground_truth``,
        ``mistake_agent``, ``mistake_step``). ``meta["id"]`` is the file name. No model calls."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise InputError(f"cannot read {path}: {e}") from e
        except ValueError as e:
            raise InputError(f"{path} is not valid JSON: {e}") from e
        meta: dict[str, Any] = {"id": path.name, "source": str(path)}
        if isinstance(data, list):
            return cls(data, meta={**meta, "format": "turns"})
        if isinstance(data, dict) and isinstance(data.get("history"), list):
            history = data["history"]
            named = any(isinstance(t, Mapping) and t.get("name") for t in history)
            meta["format"] = "who_when/" + ("algorithm_generated" if named else "hand_crafted")
            for key in ("question_ID", "level"):
                if data.get(key) is not None:
                    meta["question_id" if key == "question_ID" else key] = data[key]
            turns = [
                {"agent": t.get("name"), "role": t.get("role"), "content": t.get("content")}
                if isinstance(t, Mapping) and t.get("name")
                else t
                for t in history
            ]
            return cls._from_mapping(data, turns, meta, path)
        if isinstance(data, dict) and isinstance(data.get("turns"), list):
            return cls._from_mapping(data, data["turns"], {**meta, "format": "turns"}, path)
        raise InputError(
            f"{path}: unknown log format; expected a Who&When log (an object with 'history': "
            "[{content, role[, name]}]), a JSON list of turns [{agent, content}], or an object "
            "{'turns': [...]}"
        )

    @classmethod
    def _from_mapping(
        cls, data: Mapping[str, Any], turns: list[Any], meta: dict[str, Any], path: Path
    ) -> AgentLog:
        try:
            return cls(
                turns,
                question=data.get("question"),
                ground_truth=data.get("ground_truth"),
                mistake_agent=data.get("mistake_agent"),
                mistake_step=data.get("mistake_step"),
                meta=meta,
            )
        except InputError as e:
            raise InputError(f"{path.name}: {e}") from None

    @classmethod
    def from_dir(cls, path: str | Path) -> list[AgentLog]:
        """Every ``*.json`` log in a folder (not its subfolders), sorted by numeric file id
        (``2.json`` before ``10.json``). No model calls."""
        folder = Path(path)
        if not folder.is_dir():
            raise InputError(f"{folder} is not a folder; pass a folder of JSON logs")
        files = [p for p in folder.glob("*.json") if p.is_file()]
        if not files:
            raise InputError(f"{folder} holds no *.json log")

        def key(p: Path) -> tuple[float, str]:
            digits = "".join(c for c in p.stem if c.isdigit())
            return (int(digits) if digits else math.inf, p.name)

        return [cls.from_file(p) for p in sorted(files, key=key)]

    # --- reading --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.turns)

    def __repr__(self) -> str:
        gold = (
            f", gold=({self.mistake_agent!r}, {self.mistake_step})"
            if self.mistake_agent is not None or self.mistake_step is not None
            else ""
        )
        ident = f"{self.meta['id']!r}, " if "id" in self.meta else ""
        return f"AgentLog({ident}{len(self)} turns, {len(self.agents)} agents{gold})"

    @property
    def id(self) -> str | None:
        """The log's id (its file name when read from a file), or None."""
        v = self.meta.get("id")
        return None if v is None else str(v)

    @property
    def agents(self) -> list[str]:
        """The distinct agents, in order of first appearance."""
        return list(dict.fromkeys(t.agent for t in self.turns))

    def agent_at(self, step: int) -> str:
        """The agent speaking at ``step``."""
        if not 0 <= step < len(self):
            raise InputError(f"step {step} is out of range (0..{len(self) - 1})")
        return self.turns[step].agent

    def steps_of(self, agent: str) -> list[int]:
        """The steps where ``agent`` speaks (empty when it never does)."""
        return [i for i, t in enumerate(self.turns) if t.agent == agent]

    def agent_groups(self) -> dict[str, list[int]]:
        """Each agent → the steps where it speaks, agents in order of first appearance."""
        groups: dict[str, list[int]] = {}
        for i, t in enumerate(self.turns):
            groups.setdefault(t.agent, []).append(i)
        return groups

    def serialize(self, keep: Any = None, numbered: bool = True) -> str:
        """The log as text, one turn per line: ``Step {i} - {agent}: {content}`` (numbered; the
        original step numbers are kept when ``keep`` drops turns) or Who&When all-at-once's
        unnumbered ``{agent}: {content}``. ``keep``: step indices or one boolean per turn (all
        turns when None). No model calls."""
        steps = range(len(self)) if keep is None else _mask_or_steps(keep, len(self))
        if numbered:
            lines = [f"Step {i} - {self.turns[i].agent}: {self.turns[i].content}" for i in steps]
        else:
            lines = [f"{self.turns[i].agent}: {self.turns[i].content}" for i in steps]
        return "\n".join(lines)

    def truncated(self, max_chars: int) -> AgentLog:
        """A copy with every turn's content cut to its first ``max_chars`` characters; the
        policy is recorded in ``meta["truncation"]`` (``max_turn_chars``, ``turns_cut``,
        ``chars_removed``). No model calls."""
        if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
            raise InputError(f"max_chars must be a positive number of characters, got {max_chars}")
        cut = [len(t.content) > max_chars for t in self.turns]
        removed = sum(max(len(t.content) - max_chars, 0) for t in self.turns)
        turns = [Turn(t.agent, t.content[:max_chars], t.role) for t in self.turns]
        out = AgentLog(
            turns,
            self.question,
            self.ground_truth,
            self.mistake_agent,
            self.mistake_step,
            meta={
                **self.meta,
                "truncation": {
                    "max_turn_chars": max_chars,
                    "turns_cut": int(sum(cut)),
                    "chars_removed": int(removed),
                },
            },
        )
        return out


# --- units ----------------------------------------------------------------------------------------
class TurnUnits(Units):
    """The turns of an :class:`AgentLog` as units (all of them, or the given ``steps``).

    Each unit's label is ``"Step i - agent"`` (never the content) and its meta
    ``{"agent", "step"}``. ``compose(mask)`` is the numbered serialization of the kept turns:
    a dropped turn disappears and the others keep their original step numbers.
    """

    kind = "turns"
    removal = "drop the turn (the others keep their step numbers)"

    def __init__(self, log: AgentLog, steps: Sequence[int] | None = None) -> None:
        if not isinstance(log, AgentLog):
            raise InputError(f"TurnUnits needs an AgentLog, got {type(log).__name__}")
        steps = list(range(len(log))) if steps is None else [int(s) for s in steps]
        if not steps:
            raise InputError("no turns to use as units")
        if sorted(set(steps)) != steps or steps[0] < 0 or steps[-1] >= len(log):
            raise InputError(f"steps must be increasing, distinct and inside 0..{len(log) - 1}")
        self.log, self.steps = log, steps
        super().__init__(
            [
                Unit(
                    i,
                    f"Step {s} - {log.turns[s].agent}",
                    meta={"agent": log.turns[s].agent, "step": s},
                )
                for i, s in enumerate(steps)
            ]
        )

    def compose(self, mask: np.ndarray) -> str:
        """The numbered serialized text of the kept turns (original step numbers)."""
        m = self.check_masks(mask)[0]
        return self.log.serialize([s for s, k in zip(self.steps, m, strict=True) if k])

    def groups(self) -> dict[str, list[int]]:
        """Each agent → the indices of its units (not steps), in order of first appearance."""
        out: dict[str, list[int]] = {}
        for u in self.units:
            out.setdefault(u.meta["agent"], []).append(u.index)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The units' description for an Attribution: ids and step numbers, no text."""
        d: dict[str, Any] = {
            "kind": self.kind,
            "removal": self.removal,
            "log_id": self.log.id,
            "n_turns": len(self.log),
            "steps": list(self.steps),
            "agents": self.log.agents,
        }
        if "source" in self.log.meta:
            d["source"] = str(self.log.meta["source"])
        if "truncation" in self.log.meta:
            d["truncation"] = self.log.meta["truncation"]
        return d


# --- decisions ------------------------------------------------------------------------------------
def decision_from_scores(
    scores: Any, units: Sequence[Unit], reason: str = "highest-scoring turn"
) -> dict[str, Any]:
    """The decision ``{"agent", "step", "reason"}`` of per-turn scores: the step of the unit
    with the highest finite score (ties: the earliest), and the agent speaking there; agent
    and step None when no score is finite. Rows × units scores are summed over rows. No model
    calls."""
    v = unit_vector(scores)
    if len(v) != len(units):
        raise InputError(f"{len(v)} scores for {len(units)} turns; give one score per turn")
    finite = np.isfinite(v)
    if not finite.any():
        return {"agent": None, "step": None, "reason": "no turn has a finite score"}
    i = int(np.argmax(np.where(finite, v, -np.inf)))
    return {"agent": units[i].meta["agent"], "step": int(units[i].meta["step"]), "reason": reason}


def _agent_scores(scores: Any, units: Sequence[Unit]) -> dict[str, float]:
    v = unit_vector(scores)
    out: dict[str, float] = {}
    for u, s in zip(units, v, strict=True):
        a = u.meta["agent"]
        out[a] = out.get(a, 0.0) + (float(s) if np.isfinite(s) else 0.0)
    return out


# --- the task -------------------------------------------------------------------------------------
def check_max_tokens(max_tokens: Any) -> int | str | None:
    """``max_tokens`` as given when it is None, ``"window"`` or a positive number of tokens;
    InputError otherwise. No model calls."""
    if max_tokens is None or max_tokens == "window":
        return max_tokens
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InputError(
            f"max_tokens must be a positive number of tokens or 'window', got {max_tokens!r}"
        )
    return max_tokens


_CONTROL = re.compile(r"\W*(terminate|exit)?\W*", re.IGNORECASE)


def final_turn(log: AgentLog) -> int | None:
    """The step of the log's last substantive turn: trailing turns that are empty or a bare
    control word (``TERMINATE``, AG2's end-of-chat signal; ``exit``) are skipped. None when every
    turn is. No model calls."""
    for step in range(len(log) - 1, -1, -1):
        if not _CONTROL.fullmatch(log.turns[step].content):
            return step
    return None


class AgentTask(Task):
    """One multi-agent log to attribute a failure in (task kind ``"agents"``: the agent methods,
    and every perturbation method on :meth:`scorer`).

    Judge-free value of a subset of turns: log p(outcome | prompt), the prompt being
    ``template`` with the question block (only when the log has a question) and the kept turns
    as numbered ``Step i - agent: content`` lines, then ``cue``; the outcome is scored after
    the cue with one leading space, teacher-forced on the raw prompt (``chat=False``), reusing
    the key-value cache of the full prompt for every prompt sharing a prefix with it (local
    LMs). The outcome is

    - ``"final"`` (default): the content of the last substantive turn (:func:`final_turn`:
      trailing empty or bare ``TERMINATE`` turns, AG2's end-of-chat signal, are skipped), the
      system's own final answer. It is the scored response, so it and the turns after it are
      left OUT of the prompt and of the units: the units are the turns before it (a log whose
      first turn is its last substantive one has nothing to attribute);
    - ``"gold"``: the log's ground truth (InputError if it has none); the units are all turns;
    - any other string: that text; the units are all turns.

    A judge method reads :attr:`judge` (an opaque judge object) and :attr:`with_answer`
    (whether its prompt shows the gold answer); a task without an LM serves judge methods only.
    Building the task costs no model call.

    Args:
        log: the :class:`AgentLog` (or a path to one).
        lm: a language model whose ``token_logprobs`` takes ``chat=False``; needed by
            judge-free methods only.
        judge: the judge judge methods use (stored as given).
        outcome: ``"final"``, ``"gold"`` or the text to score.
        with_answer: whether judge methods show the gold answer (stored for them).
        max_turn_chars: cut every turn to this many characters before anything else (recorded
            in :attr:`target_info` and results); with None (and no ``max_tokens``) a prompt past
            the LM's window is an InputError suggesting it.
        max_tokens: a budget for the prompt and outcome in the LM's tokens, or ``"window"``
            (the LM's own window): a log over it has every turn cut to the longest common
            length at which it fits (found by binary search on the cut, about log2 of the
            longest turn's length tokenizations, no model call), so long turns lose their ends
            and short ones are kept whole. :attr:`max_turn_chars` then holds the cut used, and
            ``target_info["truncation"]`` records it with the budget and the tokens it left.
            Bounds the cost of ablation methods, which re-read the log once per turn.
        template: the prompt before the cue, with ``{log}`` and optionally ``{question}``
            (which receives :data:`QUESTION_BLOCK` or nothing).
        batch_size: prompts per scorer batch.
        cue: what follows the kept turns (default :data:`ANSWER_CUE`).
        reuse_prefix: reuse the full prompt's key-value cache (local LMs only); results equal
            ``reuse_prefix=False`` up to float rounding.
    """

    kind = "agents"

    def __init__(
        self,
        log: AgentLog | str | Path,
        lm: Any = None,
        judge: Any = None,
        outcome: str = "final",
        with_answer: bool = False,
        max_turn_chars: int | None = None,
        template: str = PROMPT_TEMPLATE,
        batch_size: int = 8,
        *,
        cue: str = ANSWER_CUE,
        reuse_prefix: bool = True,
        max_tokens: int | str | None = None,
    ) -> None:
        if isinstance(log, str | Path):
            log = AgentLog.from_file(log)
        if not isinstance(log, AgentLog):
            raise InputError(
                f"log must be an AgentLog, got {type(log).__name__}; build one with "
                "AgentLog(turns) or AgentLog.from_file(path)"
            )
        if "{log}" not in template:
            raise InputError("the template must contain {log} (and may contain {question})")
        if batch_size < 1:
            raise InputError("batch_size must be >= 1")
        if not isinstance(outcome, str) or not outcome.strip():
            raise InputError(
                "outcome must be 'final' (the last turn), 'gold' (the ground truth) or a "
                "non-empty text to score"
            )
        self.source_log = log
        self.lm, self.judge, self.with_answer = lm, judge, bool(with_answer)
        self.template, self.cue, self.batch_size = template, cue, batch_size
        self.reuse_prefix = reuse_prefix
        self.outcome_kind = outcome if outcome in _OUTCOMES else "given"
        self._outcome = outcome
        self.outcome_step: int | None = None
        if outcome == "final":
            last = final_turn(log)
            if last is None:
                raise InputError(
                    "outcome='final' scores the last substantive turn, but every turn is empty "
                    "or a bare TERMINATE; pass outcome='gold' or the text to score"
                )
            if last < 1:
                raise InputError(
                    "with outcome='final' the last substantive turn is the scored answer and the "
                    f"turns before it are the units, but it is step {last}; pass outcome='gold' "
                    "or a text, or a longer log"
                )
            self.outcome_step = last
        elif outcome == "gold" and (log.ground_truth is None or not log.ground_truth.strip()):
            raise InputError(
                "outcome='gold' needs the log's ground truth, but it has none; pass "
                "outcome='final' (the last turn) or the text to score"
            )
        self.max_turn_chars = max_turn_chars
        self._use_log(log if max_turn_chars is None else log.truncated(max_turn_chars))
        self.max_tokens = self._token_budget(max_tokens)
        if self.max_tokens is not None:
            self._fit_tokens(self.max_tokens)
        self._meter: CostMeter = lm_meter(lm) if lm is not None else CostMeter()
        self._scores: PromptLogprobs | None = None
        if lm is not None:
            self._check_window()
            self._scores = PromptLogprobs(
                lm, self.response, self.prompt(), self._meter, reuse_prefix=reuse_prefix, chat=False
            )

    def _use_log(self, log: AgentLog) -> None:
        """Make ``log`` (the source log, or a cut of it: same turns and steps) the one whose
        units, prompt and outcome text the task uses."""
        self.log = log
        if self._outcome == "final":
            assert self.outcome_step is not None
            text, steps = log.turns[self.outcome_step].content, list(range(self.outcome_step))
        elif self._outcome == "gold":
            text, steps = str(log.ground_truth), list(range(len(log)))
        else:
            text, steps = self._outcome, list(range(len(log)))
        self.outcome_text = text.strip()
        self.response = " " + self.outcome_text
        self.units: TurnUnits = TurnUnits(log, steps)

    def _token_budget(self, max_tokens: int | str | None) -> int | None:
        if check_max_tokens(max_tokens) is None:
            return None
        if self.lm is None or getattr(self.lm, "count_tokens", None) is None:
            raise InputError(
                "max_tokens needs a language model that counts tokens (lm=..., e.g. "
                "attribkit.load_lm()); without one, cut the turns with max_turn_chars="
            )
        if max_tokens == "window":
            window = getattr(self.lm, "max_positions", None)
            if not window:
                raise InputError(
                    "max_tokens='window' needs the model's window, but it does not say; pass "
                    "max_tokens as a number of tokens"
                )
            return int(window)
        return int(max_tokens)  # checked above: a positive int

    def _prompt_tokens(self) -> int:
        return int(self.lm.count_tokens(self.prompt(), self.response, chat=False))

    def _fit_tokens(self, budget: int) -> None:
        """Cut every turn to the longest common length at which the prompt and outcome take at
        most ``budget`` tokens (binary search; tokenizations only)."""
        tokens = self._prompt_tokens()
        if tokens <= budget:
            return
        cut_log = self.log  # already cut to max_turn_chars, if given

        def fits(chars: int) -> int | None:
            self._use_log(self.source_log.truncated(chars))
            n = self._prompt_tokens()
            return n if n <= budget else None

        lo, hi = 1, max(len(t.content) for t in cut_log.turns) - 1
        best = fits(lo) if hi >= 1 else None
        if best is None:
            raise InputError(
                f"the log's prompt and outcome take {tokens} tokens, and even with every turn "
                f"cut to one character they take more than max_tokens={budget} (the question, "
                "the step labels and a gold or given outcome are not cut); raise max_tokens or "
                "use a model with a longer window"
            )
        while lo < hi:
            mid = (lo + hi + 1) // 2
            n = fits(mid)
            if n is None:
                hi = mid - 1
            else:
                lo, best = mid, n
        self._use_log(self.source_log.truncated(lo))
        self.log.meta["truncation"].update(max_tokens=budget, tokens=best)
        self.max_turn_chars = lo

    @property
    def meter(self) -> CostMeter:
        """The LM's own meter when it has one, else the task's (judge methods count there)."""
        return self._meter

    @property
    def target_info(self) -> dict[str, Any]:
        """What is explained, without any text of the log, question or outcome (ids only)."""
        what = {
            "final": f"the final turn's content (step {self.outcome_step}, left out of the units)",
            "gold": "the log's ground-truth answer",
            "given": "a given text",
        }[self.outcome_kind]
        judge = self.judge
        judge_name = (
            None
            if judge is None
            else str(
                getattr(judge, "name", None)
                or getattr(judge, "model", None)
                or type(judge).__name__
            )
        )
        return {
            "kind": "agent_outcome",
            "description": f"log p(outcome | question, kept turns, answer cue); outcome = {what}",
            "outcome": self.outcome_kind,
            "outcome_step": self.outcome_step,
            "outcome_chars": len(self.outcome_text),
            "with_answer": self.with_answer,
            "truncation": self.log.meta.get("truncation"),
            "model": None if self.lm is None else getattr(self.lm, "name", type(self.lm).__name__),
            "judge": judge_name,
            "log_id": self.log.id,
            "mistake_agent": self.log.mistake_agent,  # the annotation (names and a step only)
            "mistake_step": self.log.mistake_step,
            "question_in_prompt": self.log.question is not None,
            "template": self.template,
            "cue": self.cue,
        }

    def result(
        self,
        scores: np.ndarray,
        method: str,
        params: dict[str, Any],
        cost: Cost,
        decision: Mapping[str, Any] | None = None,
        **extras: Any,
    ) -> Attribution:
        """An Attribution over the turns: ``extras`` gain ``agent_scores`` (each agent → the
        sum of its turns' finite scores, unless given) and ``decision`` (given, else the
        highest-scoring turn and its agent: :func:`decision_from_scores`). No model calls."""
        units = list(self.units)
        if "agent_scores" not in extras:
            extras["agent_scores"] = _agent_scores(scores, units)
        if decision is None:
            decision = decision_from_scores(scores, units)
        else:
            missing = {"agent", "step"} - set(decision)
            if missing:
                raise InputError(f"a decision needs 'agent', 'step' and 'reason'; {missing} lack")
            decision = {
                "agent": decision["agent"],
                "step": None if decision["step"] is None else int(decision["step"]),
                "reason": str(decision.get("reason", "")),
            }
        extras["decision"] = dict(decision)
        return Attribution(
            units=units,
            scores=scores,
            method=method,
            target=self.target_info,
            params=params,
            cost=cost,
            input=self.units.to_dict(),
            extras=extras,
            task=self.kind,
        )

    def decision_from_scores(self, scores: Any, reason: str = "highest-scoring turn") -> dict:
        """:func:`decision_from_scores` over this task's units."""
        return decision_from_scores(scores, list(self.units), reason)

    def unit_scorer(self, params: dict[str, Any]) -> Scorer:
        """:meth:`scorer`; takes ``budget`` from ``params``."""
        return self.scorer(budget=params.pop("budget", None))

    def unit_result(self, attribution: Attribution, scorer: Scorer) -> Attribution:
        """A perturbation method's result as an agents Attribution (agent totals, decision)."""
        a = attribution
        return self.result(a.scores, a.method, a.params, a.cost, **a.extras)

    # --- prompts --------------------------------------------------------------------------------
    def prompt(self, log_text: str | None = None) -> str:
        """The raw prompt for the kept turns ``log_text`` (a composed text; all units when
        None): the template with the question block and the turns, then the cue."""
        kept = self.units.compose(np.ones(len(self.units), bool)) if log_text is None else log_text
        q = self.log.question
        question = QUESTION_BLOCK.format(question=q) if q is not None else ""
        return self.template.format(question=question, log=kept) + self.cue

    def _check_window(self) -> None:
        window = getattr(self.lm, "max_positions", None)
        count = getattr(self.lm, "count_tokens", None)
        if not window or count is None:
            return
        total = count(self.prompt(), self.response, chat=False)
        if total <= window:
            return
        if self.max_turn_chars is None:
            raise WindowError(
                f"the prompt and outcome take {total} tokens but the model's window is {window}; "
                "cut the turns to fit it with max_tokens='window', or every turn with "
                f"max_turn_chars= (e.g. {SUGGESTED_TURN_CHARS}), or use a model with a longer "
                "window",
                total - window,
            )
        raise WindowError(
            f"even with every turn cut to max_turn_chars={self.max_turn_chars} the prompt and "
            f"outcome take {total} tokens but the model's window is {window}; pass "
            "max_tokens='window' (cuts further, to fit), a smaller max_turn_chars, or use a "
            "model with a longer window",
            total - window,
        )

    # --- values ---------------------------------------------------------------------------------
    def _need_lm(self) -> PromptLogprobs:
        if self._scores is None:
            raise InputError(
                "this agents task has no language model, so judge-free values cannot be "
                "computed; pass lm=... (e.g. attribkit.load_lm()) or use a judge method"
            )
        return self._scores

    def token_logprobs(self, prompts: Sequence[str]) -> list[np.ndarray]:
        """Per-token log-probabilities of the outcome after each raw prompt, cached per prompt.
        Costs one forward pass per prompt not seen before (with a local LM the first is the
        full prompt, whose key-value cache later prompts reuse)."""
        return self._need_lm()(prompts)

    def values(self, log_texts: Sequence[str]) -> np.ndarray:
        """log p(outcome | prompt) for each composed text of kept turns: one per text. Costs
        one forward pass per text not scored before."""
        scores = self._need_lm()
        prompts = [self.prompt(t) for t in log_texts]
        return np.array([lp.sum() for lp in scores(prompts)], dtype=float)

    def scorer(
        self, budget: Budget | None = None, progress: Callable[[int], None] | None = None
    ) -> Scorer:
        """A mask :class:`Scorer` over the turns for log p(outcome | kept turns); passes are
        counted on :attr:`meter`, prompts already scored cost nothing."""
        self._need_lm()
        return Scorer(
            self.units,
            self.values,
            target=self.target_info,
            batch_size=self.batch_size,
            budget=budget,
            progress=progress,
            meter=self._meter,
            task_kind=self.kind,
        )

    def attribute(
        self, method: str = DEFAULT_METHOD, budget: Budget | None = None, **params: Any
    ) -> Attribution:
        """Run an agents method, or a perturbation method on :meth:`scorer`, on this task
        (:func:`attribkit.attribute`); ``budget`` caps a perturbation method's passes."""
        if budget is not None:
            params["budget"] = budget
        return attribute(self, method, **params)

    def __repr__(self) -> str:
        return (
            f"AgentTask({self.log!r}, {len(self.units)} turn units, outcome={self.outcome_kind!r})"
        )


def attribute_agents(
    log: AgentLog | str | Path,
    method: str = DEFAULT_METHOD,
    judge: Any = None,
    lm: Any = None,
    with_answer: bool = False,
    outcome: str = "final",
    max_turn_chars: int | None = None,
    budget: Budget | None = None,
    max_tokens: int | str | None = None,
    **params: Any,
) -> Attribution:
    """Attribute a multi-agent log's failure to its turns and agents.

    ``log`` is an :class:`AgentLog` or a path to a log file. Judge-free methods need ``lm``,
    judge methods ``judge``; ``max_turn_chars`` and ``max_tokens`` cut the turns as in
    :class:`AgentTask`. Returns an Attribution over the turns with ``extras["agent_scores"]``
    and ``extras["decision"]``; costs the method's model calls (``loo``: one forward pass per
    unit plus one).
    """
    task = AgentTask(
        log,
        lm=lm,
        judge=judge,
        outcome=outcome,
        with_answer=with_answer,
        max_turn_chars=max_turn_chars,
        max_tokens=max_tokens,
    )
    return task.attribute(method, budget=budget, **params)
