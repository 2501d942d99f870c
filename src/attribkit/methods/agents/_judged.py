"""What the judge methods over multi-agent logs share: the task and judge checks, counting the
judge's work together with the task's, the record of the judge calls, and the two questions
several methods ask — all-at-once's "which agent, which step?" and step-by-step's "is there a
mistake at this step?". No model calls outside :meth:`JudgeRun.ask`."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from attribkit.core.cost import Cost, measure
from attribkit.core.errors import InputError
from attribkit.core.registry import check_units
from attribkit.methods.agents._common import agent_task
from attribkit.methods.agents.prompts import (
    AGENT_FIELD,
    ANSWER_FIELD,
    NO,
    STEP_FIELD,
    SYSTEM_ALL_AT_ONCE,
    YES,
    reply_reason,
    step_prompt,
)
from attribkit.models.judge import Judgement
from attribkit.tasks.agents import AgentTask

__all__ = [
    "AgentStep",
    "JudgeRun",
    "StepScan",
    "agent_max",
    "ask_agent_step",
    "ask_once",
    "judged_cost",
    "scan_steps",
    "unit_scores",
]


def _judge_task(task: Any, method: str) -> AgentTask:
    task = agent_task(task, method)
    if task.judge is None:
        raise InputError(
            f"{method} asks a judge, but the task has none: pass judge=ChatJudge(...) or "
            "LocalJudge(lm) (attribkit.models.judge) to AgentTask / attribute_agents"
        )
    if not callable(getattr(task.judge, "ask", None)):
        raise InputError(
            f"the task's judge is a {type(task.judge).__name__} without ask(prompt, fields, "
            "system); pass judge=ChatJudge(...) or LocalJudge(lm)"
        )
    return task


@contextmanager
def judged_cost(task: AgentTask) -> Iterator[Cost]:
    """Like :func:`~attribkit.core.cost.measure` on the task's meter, adding what the judge's
    own meter spent when it is a different one (a :class:`ChatJudge`, a LocalJudge on another
    LM); a LocalJudge on the task's LM shares its cost and is counted once. Seconds: the wall
    time of the block."""
    meters: list[Any] = [task.meter]
    judge_cost = getattr(task.judge, "cost", None)
    if isinstance(judge_cost, Cost) and judge_cost is not task.meter.cost:
        meters.append(task.judge)
    out = Cost()
    start = time.perf_counter()
    with ExitStack() as stack:
        parts = [stack.enter_context(measure(m)) for m in meters]
        yield out
    total = sum(parts, Cost())
    total.seconds = time.perf_counter() - start
    for f in fields(Cost):
        setattr(out, f.name, getattr(total, f.name))


def judge_name(judge: Any) -> Any:
    """The judge's record for a result: its ``describe()`` (never a key), else its name."""
    describe = getattr(judge, "describe", None)
    if callable(describe):
        return describe()
    return str(getattr(judge, "name", None) or type(judge).__name__)


class JudgeRun:
    """One method run's judge calls: each :meth:`ask` goes to the task's judge and is recorded
    (calls, unparsed replies, reply texts, prompt tokens)."""

    def __init__(self, task: Any, method: str) -> None:
        self.task = _judge_task(task, method)
        self.log = self.task.log
        self.judge = self.task.judge
        self.with_answer = self.task.with_answer
        self.calls = 0
        self.unparsed = 0
        self.replies: list[str] = []
        self.prompt_tokens = 0

    def ask(
        self, prompt: str, fields: Mapping[str, Sequence[str]], system: str | None
    ) -> Judgement:
        """One judge call (see :meth:`Judge.ask`), recorded."""
        j = self.judge.ask(prompt, fields, system)
        self.calls += 1
        self.unparsed += 0 if j.parsed else 1
        self.replies.append(j.text)
        self.prompt_tokens += int(j.prompt_tokens)
        return j

    def params(self, **extra: Any) -> dict[str, Any]:
        """The result's params: the judge's record, ``with_answer`` and the method's own."""
        return {"judge": judge_name(self.judge), "with_answer": self.with_answer, **extra}

    def extras(self) -> dict[str, Any]:
        """``judge_calls``, ``unparsed`` (calls whose reply missed a field), ``replies`` (raw
        texts; they may quote the log) and ``prompt_tokens`` (as counted by the judge)."""
        return {
            "judge_calls": self.calls,
            "unparsed": self.unparsed,
            "replies": list(self.replies),
            "prompt_tokens": self.prompt_tokens,
        }


def unit_scores(task: AgentTask, per_step: Mapping[int, float], default: float) -> np.ndarray:
    """One score per unit from scores per log step (``default`` for steps without one)."""
    return np.array([float(per_step.get(s, default)) for s in task.units.steps], dtype=float)


def agent_max(log: Any, per_step: Mapping[int, float]) -> dict[str, float]:
    """Each agent → the highest finite score of its scored steps; agents none of whose steps
    has a score are left out."""
    out: dict[str, float] = {}
    for s, v in per_step.items():
        if np.isfinite(v):
            a = log.agent_at(s)
            out[a] = max(out.get(a, -np.inf), float(v))
    return {a: out[a] for a in log.agents if a in out}


def _decision(agent: str | None, step: int | None, reason: str) -> dict[str, Any]:
    return {"agent": agent, "step": step, "reason": reason}


@dataclass
class AgentStep:
    """All-at-once's answer: the agent and step chosen (None when unparsed), the reason (the
    reply's text after ``Reason for Mistake:``, empty when none), per-step and per-agent scores
    (the judge's log-probabilities when it gives them, else 1 for the choice and 0 elsewhere)."""

    agent: str | None
    step: int | None
    reason: str
    step_scores: dict[int, float]
    agent_scores: dict[str, float]
    scored: bool

    def decision(self, what: str) -> dict[str, Any]:
        reason = self.reason or (
            f"{what}: the judge's most probable agent and step"
            if self.scored
            else f"{what}: the judge named this agent and step"
        )
        if self.agent is None and self.step is None:
            reason = f"{what}: the judge's reply named neither an agent nor a step (unparsed)"
        return _decision(self.agent, self.step, reason)


def ask_agent_step(run: JudgeRun, prompt: str, system: str | None) -> AgentStep:
    """Ask ``prompt`` for ``Agent Name`` (the log's agents) and ``Step Number`` (``"0"`` ..
    ``str(n - 1)``). One judge call."""
    log = run.log
    fields = {AGENT_FIELD: log.agents, STEP_FIELD: [str(i) for i in range(len(log))]}
    j = run.ask(prompt, fields, system)
    av, sv = j.fields[AGENT_FIELD], j.fields[STEP_FIELD]
    step = None if sv.choice is None else int(sv.choice)
    if sv.scores:
        step_scores = {int(o): float(v) for o, v in sv.scores.items()}
    else:
        step_scores = {i: 0.0 for i in range(len(log))}
        if step is not None:
            step_scores[step] = 1.0
    if av.scores:
        agent_scores = {a: float(av.scores[a]) for a in log.agents}
    else:
        agent_scores = {a: (1.0 if a == av.choice else 0.0) for a in log.agents}
    return AgentStep(
        av.choice,
        step,
        reply_reason(j.text),
        step_scores,
        agent_scores,
        bool(sv.scores),
    )


@dataclass
class StepScan:
    """Step-by-step's answer over the steps asked: the first step judged a mistake (None when
    none was), the judge's reason for it, and a score per judged step (log p(Yes) − log p(No)
    when the judge gives scores, else 1 for Yes and 0 for No or an unparsed reply)."""

    found: int | None
    reason: str
    judged: dict[int, float] = field(default_factory=dict)
    unparsed_steps: list[int] = field(default_factory=list)


def scan_steps(run: JudgeRun, steps: Sequence[int], system: str | None) -> StepScan:
    """Ask, for each step in order, whether it holds a mistake (the numbered log up to it),
    stopping at the first Yes; an unparsed reply counts as No (the scan goes on, as Who&When's
    code). At most ``len(steps)`` judge calls."""
    scan = StepScan(None, "")
    for s in steps:
        j = run.ask(step_prompt(run.log, s, run.with_answer), {ANSWER_FIELD: [YES, NO]}, system)
        v = j.fields[ANSWER_FIELD]
        if v.scores:
            scan.judged[s] = float(v.scores[YES] - v.scores[NO])
        else:
            scan.judged[s] = 1.0 if v.choice == YES else 0.0
        if v.choice is None:
            scan.unparsed_steps.append(s)
        if v.choice == YES:
            scan.found, scan.reason = s, reply_reason(j.text, ("Reason",))
            break
    return scan


def ask_once(task: Any, method: str, prompt_for: Any, label: str, system: bool) -> Any:
    """The one-call methods (all-at-once, A2P): ask the judge once with ``prompt_for(log,
    with_answer)`` for the agent and the step, and return the task's Attribution of the reply
    (per-turn step log-probabilities from a local judge, else 1 for the chosen step and 0
    elsewhere; the decision labelled ``label``). Costs 1 judge call."""
    run = JudgeRun(task, method)
    check_units(run.task)
    prompt = prompt_for(run.log, run.with_answer)
    with judged_cost(run.task) as cost:
        got = ask_agent_step(run, prompt, SYSTEM_ALL_AT_ONCE if system else None)
    return run.task.result(
        unit_scores(run.task, got.step_scores, 0.0),
        method,
        run.params(system=system),
        cost,
        decision=got.decision(label),
        agent_scores=got.agent_scores,
        **run.extras(),
    )
