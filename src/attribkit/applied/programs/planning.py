"""Programs from attributions, attributions from programs, and a check of module outputs
(Wan et al., "GenerationPrograms: Fine-grained Attribution with Executable Programs", COLM 2025,
post-hoc mode and module-level verification).

- :func:`plan_post_hoc` turns a response into a program: for each response sentence, any
  registered context method ranks the source sentences; the top one plus any within ``ratio``
  of its score (at most ``max_sources``) become ``paraphrase(Si)`` or ``fusion(Si, Sj, ...)``.
- :func:`program_attribution` gives one :class:`~attribkit.core.attribution.Attribution` per
  output sentence (1 for cited units, 0 otherwise) with the node tree in ``extras["program"]``.
- :func:`verify` flags module outputs that do not depend on one of their inputs (leave-one-out
  on the module prompt: the output's log-probability does not drop when that input is removed).
- :func:`cite_with_program` does it all in one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attribkit.applied.programs.execute import (
    ExtractiveTextOps,
    LMTextOps,
    NodeRun,
    ProgramRun,
    TextOps,
    execute,
    module_prompt,
)
from attribkit.applied.programs.grammar import Call, Node, Program, Source, node_dict
from attribkit.core.attribution import Attribution
from attribkit.core.cost import Cost, measure
from attribkit.core.errors import InputError
from attribkit.core.units import TextUnits, Unit
from attribkit.tasks.context import ContextTask
from attribkit.tasks.prompt_scores import lm_meter

DEFAULT_RATIO = 0.5
DEFAULT_MAX_SOURCES = 3
#: verify's default: a drop of at most this many nats per output token counts as "no drop"
DEFAULT_TOLERANCE = 0.1


def select_sources(
    scores: np.ndarray,
    ratio: float = DEFAULT_RATIO,
    max_sources: int = DEFAULT_MAX_SOURCES,
) -> list[int]:
    """The units a post-hoc plan cites from one sentence's scores: the top unit, plus every
    other unit with a positive score at least ``ratio`` times the top's (when the top is
    positive), best first, at most ``max_sources``. Unscored (NaN) units are never added.
    No model calls."""
    if not 0 < ratio <= 1:
        raise InputError(f"ratio must be in (0, 1], got {ratio}")
    if max_sources < 1:
        raise InputError(f"max_sources must be >= 1, got {max_sources}")
    v = np.asarray(scores, dtype=float)
    key = np.where(np.isnan(v), -np.inf, v)
    order = np.argsort(-key, kind="stable")
    keep = [int(order[0])]
    top = key[order[0]]
    for u in order[1:]:
        if len(keep) >= max_sources or not (top > 0 and key[u] > 0 and key[u] >= ratio * top):
            break
        keep.append(int(u))
    return keep


def source_node(units: Sequence[int]) -> Node:
    """``paraphrase(Si)`` for one unit, ``fusion(Si, Sj, ...)`` (in context order) for more."""
    units = sorted(int(u) for u in units)
    if not units:
        raise InputError("a sentence needs at least one source unit")
    if len(units) == 1:
        return Call("paraphrase", (Source(units[0]),))
    return Call("fusion", tuple(Source(u) for u in units))


def plan_post_hoc(
    task: ContextTask,
    method: str = "loo",
    *,
    ratio: float = DEFAULT_RATIO,
    max_sources: int = DEFAULT_MAX_SOURCES,
    spans: Sequence[str | tuple[int, int]] | None = None,
    **params: Any,
) -> Program:
    """A program for ``task``'s existing response: one bullet per response sentence (or per
    ``spans``), planned from the context attribution ``method`` of that sentence
    (:meth:`ContextTask.with_span`) with :func:`select_sources`.

    Returns a :class:`Program` with ``planner="post_hoc:<method>"``, the per-sentence
    ``attributions``, the ``response_sentences`` and the planning ``cost``. Costs the method's
    model calls once per sentence, minus what the task has cached: perturbation methods with the
    same masks (``loo``; ``contextcite`` with one seed) pay their passes once for all sentences;
    ``attention_heads`` one pass per sentence."""
    if not isinstance(task, ContextTask):
        raise InputError(
            f"plan_post_hoc needs a ContextTask, got {type(task).__name__}; build one with "
            "ContextTask(lm, context, query, response)"
        )
    spans = list(spans) if spans is not None else task.sentence_spans()
    if not spans:
        spans = [(0, len(task.response))]
    attributions: list[Attribution] = []
    nodes: list[Node] = []
    texts: list[str] = []
    with measure(task.meter) as cost:
        for span in spans:
            sub = task.with_span(span)
            attribution = sub.attribute(method, **params)
            attributions.append(attribution)
            nodes.append(source_node(select_sources(attribution.vector, ratio, max_sources)))
            assert sub.span is not None
            texts.append(task.response[sub.span[0] : sub.span[1]])
    return Program(
        nodes,
        text=None,
        planner=f"post_hoc:{method}",
        response_sentences=texts,
        attributions=attributions,
        cost=cost,
    )


def _units_of(program: Program, units: TextUnits | Sequence[Unit] | None) -> list[Unit]:
    if units is None:
        if not program.attributions:
            raise InputError(
                "pass units= (the context units the program cites); only a post-hoc plan knows "
                "its units"
            )
        return list(program.attributions[0].units)
    if isinstance(units, TextUnits):
        return list(units.units)
    return [u if isinstance(u, Unit) else Unit(i, str(u)) for i, u in enumerate(units)]


def program_attribution(
    program: Program,
    units: TextUnits | Sequence[Unit] | Sequence[str] | None = None,
    run: ProgramRun | None = None,
) -> list[Attribution]:
    """One Attribution per output sentence over the context units: score 1 for the units the
    sentence cites, 0 otherwise; ``task="program"``, ``extras["program"]`` = the sentence's node
    tree (from ``run`` when given: with outputs; else the static tree) and, for a post-hoc plan,
    ``extras["post_hoc_scores"]`` = the planning method's scores. Cost: the sentence's share of
    the run (or of planning); no new model calls."""
    unit_list = _units_of(program, units)  # type: ignore[arg-type]
    program.check_units(len(unit_list))
    if run is not None and run.program is not program:
        raise InputError("the run is of another program; pass the run execute(program, ...) gave")
    if isinstance(units, TextUnits):
        inp = units.to_dict()
    elif program.attributions:
        inp = dict(program.attributions[0].input)
    else:
        inp = {"kind": "text", "removal": "n/a"}
    out = []
    for i, node in enumerate(program.sentences):
        scores = np.zeros(len(unit_list))
        cited = run.citations(i) if run is not None else program.citations(i)
        scores[cited] = 1.0
        tree = run.roots[i].to_dict() if run is not None else node_dict(node)
        sentence = None
        if run is not None:
            sentence = run.sentences[i]
        elif program.response_sentences is not None:
            sentence = program.response_sentences[i]
        extras: dict[str, Any] = {"program": tree, "citations": cited, "plan": str(node)}
        cost = run.sentence_costs[i] if run is not None else Cost()
        target: dict[str, Any] = {
            "kind": "program_sentence",
            "description": f"output sentence {i + 1} of the program: {sentence!r}",
            "sentence": sentence,
            "index": i,
        }
        if program.attributions:
            planned = program.attributions[i]
            extras["post_hoc_scores"] = [None if np.isnan(x) else float(x) for x in planned.vector]
            extras["post_hoc_method"] = planned.method
            if run is None:
                cost = planned.cost
            if isinstance(planned.target, dict):
                for key in ("query", "response", "model"):
                    if key in planned.target:
                        target[key] = planned.target[key]
        if program.repairs:
            extras["repairs"] = [r.to_dict() for r in program.repairs if r.sentence == i]
        out.append(
            Attribution(
                units=unit_list,
                scores=scores,
                method=f"program:{program.planner}",
                target=target,
                params={"planner": program.planner, "backend": run.backend if run else None},
                cost=cost,
                input=inp,
                extras=extras,
                task="program",
            )
        )
    return out


@dataclass
class NodeCheck:
    """The verification of one module call: its node ``id``, ``op``, ``output``, the input
    labels, ``drops[j]`` = log p(output | all inputs) - log p(output | input j removed) (nats,
    summed over the output's ``n_tokens`` tokens), and ``flagged`` when some drop per output
    token is <= the tolerance."""

    id: str
    op: str
    output: str
    inputs: list[str]
    full_logprob: float
    drops: list[float]
    n_tokens: int
    flagged: bool

    @property
    def drops_per_token(self) -> list[float]:
        """The drops divided by the output's token count."""
        return [d / max(self.n_tokens, 1) for d in self.drops]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return {
            "id": self.id,
            "op": self.op,
            "output": self.output,
            "inputs": list(self.inputs),
            "full_logprob": self.full_logprob,
            "drops": list(self.drops),
            "drops_per_token": self.drops_per_token,
            "n_tokens": self.n_tokens,
            "flagged": self.flagged,
        }


@dataclass
class Verification:
    """:func:`verify`'s result: one :class:`NodeCheck` per executed module call, the tolerance,
    and the cost of scoring."""

    checks: list[NodeCheck]
    tolerance: float
    cost: Cost = field(default_factory=Cost)

    @property
    def flagged(self) -> list[NodeCheck]:
        """The checks whose output did not depend on some input."""
        return [c for c in self.checks if c.flagged]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return {
            "tolerance": self.tolerance,
            "checks": [c.to_dict() for c in self.checks],
            "flagged": [c.id for c in self.flagged],
            "cost": self.cost.to_dict(),
        }


def _input_label(child: NodeRun) -> str:
    return child.args[0] if child.op == "source" else child.id


def verify(
    program: Program,
    lm: Any,
    units: TextUnits | Sequence[str],
    run: ProgramRun | None = None,
    *,
    ops: TextOps | None = None,
    question: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    prompts: dict[str, str] | None = None,
) -> Verification:
    """Leave-one-input-out on each module call: score the call's output after its module prompt
    (:func:`~attribkit.applied.programs.execute.module_prompt`) with all inputs and with each
    input removed; a call whose output log-probability drops by no more than ``tolerance`` nats
    per output token when some input is removed is flagged (the output ignores that input; on
    SmolLM2 a copied input's partner drops ~0.01 nats/token, faithful fusions 3+).

    ``run`` is the executed program (default: ``execute(program, units, ops or LMTextOps(lm))``,
    which costs its generations). Returns a :class:`Verification`. Costs 1 + (number of inputs)
    forward passes per distinct module call, in one batched ``token_logprobs`` call."""
    if run is None:
        run = execute(program, units, ops if ops is not None else LMTextOps(lm), question)
    elif run.program is not program:
        raise InputError("the run is of another program; pass the run execute(program, ...) gave")
    calls: list[NodeRun] = []
    seen: set[tuple[str, tuple[str | None, ...], str | None]] = set()
    for root in run.roots:
        for node in root.walk():
            if node.op in ("source", "copy") or not node.ok:
                continue
            key = (node.op, tuple(c.output for c in node.children), node.instruction)
            if key in seen:
                continue
            seen.add(key)
            calls.append(node)
    prompt_list: list[str] = []
    responses: list[str] = []
    for node in calls:
        inputs = [c.output or "" for c in node.children]
        variants = [inputs] + [inputs[:j] + inputs[j + 1 :] for j in range(len(inputs))]
        for v in variants:
            prompt_list.append(module_prompt(node.op, v, node.instruction, question, prompts))
            responses.append(str(node.output))
    checks: list[NodeCheck] = []
    meter = lm_meter(lm)
    with measure(meter) as cost:
        values = lm.token_logprobs(prompt_list, responses) if prompt_list else []
        if meter is not lm:  # an LM without its own meter: count here
            meter.cost.forward_passes += len(prompt_list)
            meter.cost.batches += 1
        sums = [float(np.sum(v)) for v in values]
        lengths = [len(v) for v in values]
        pos = 0
        for node in calls:
            k = len(node.children)
            full, without = sums[pos], sums[pos + 1 : pos + 1 + k]
            pos += 1 + k
            drops = [full - w for w in without]
            n_tokens = lengths[pos - 1 - k]
            checks.append(
                NodeCheck(
                    node.id,
                    node.op,
                    str(node.output),
                    [_input_label(c) for c in node.children],
                    full,
                    drops,
                    n_tokens,
                    any(d / max(n_tokens, 1) <= tolerance for d in drops),
                )
            )
    return Verification(checks, tolerance, cost)


@dataclass
class ProgramCitation:
    """:func:`cite_with_program`'s result: the post-hoc ``program``, one ``attributions`` entry
    per response sentence (:func:`program_attribution`), the ``run`` when the program was
    executed, and the total ``cost`` (``generations`` counts module generations)."""

    program: Program
    attributions: list[Attribution]
    run: ProgramRun | None
    cost: Cost
    generations: int
    units: TextUnits

    def cited_response(self) -> str:
        """The response with ``[n]`` markers (1-based source ids) before each sentence's final
        period: the executed program's output when it was run, else the original sentences."""
        if self.run is not None:
            return self.run.cited_response()
        out = []
        for i, s in enumerate(self.program.response_sentences or []):
            marks = "".join(f"[{u + 1}]" for u in self.program.citations(i))
            s = s.rstrip()
            out.append(s[:-1] + marks + s[-1] if s[-1:] in ".!?" else s + marks)
        return " ".join(out)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict: program, per-sentence attributions, run and cost."""
        return {
            "program": self.program.to_dict(),
            "attributions": [a.to_dict() for a in self.attributions],
            "run": self.run.to_dict() if self.run is not None else None,
            "cited_response": self.cited_response(),
            "cost": self.cost.to_dict(),
            "generations": self.generations,
        }


def cite_with_program(
    lm: Any,
    context: str | Sequence[str] | TextUnits,
    query: str,
    response: str,
    method: str = "loo",
    ops: TextOps | str | None = None,
    *,
    units: str | Sequence[str] = "sentences",
    ratio: float = DEFAULT_RATIO,
    max_sources: int = DEFAULT_MAX_SOURCES,
    module_question: bool = False,
    **params: Any,
) -> ProgramCitation:
    """Cite ``response`` through a post-hoc program: plan it with ``method``
    (:func:`plan_post_hoc`), optionally execute it (``ops``: a :class:`TextOps`, ``"lm"`` for
    ``LMTextOps(lm)``, ``"extractive"``; None = do not execute), and return per-sentence program
    attributions. Costs the method's model calls (``loo``: n + 1 forward passes for all
    sentences together) plus, with ``ops="lm"``, one generation per module call."""
    task = ContextTask(lm, context, query, response, units=units)
    program = plan_post_hoc(task, method, ratio=ratio, max_sources=max_sources, **params)
    backend: TextOps | None
    if isinstance(ops, str):
        if ops not in ("lm", "extractive"):
            raise InputError(f"unknown ops {ops!r}: use 'lm', 'extractive' or a TextOps back end")
        backend = LMTextOps(lm) if ops == "lm" else ExtractiveTextOps()
    else:
        backend = ops
    run = None
    total = program.cost.copy() if program.cost is not None else Cost()
    if backend is not None:
        run = execute(program, task.units, backend, query if module_question else None)
        total = total + run.cost
    attributions = program_attribution(program, task.units, run)
    return ProgramCitation(
        program, attributions, run, total, run.generations if run else 0, task.units
    )


__all__ = [
    "NodeCheck",
    "ProgramCitation",
    "Verification",
    "cite_with_program",
    "plan_post_hoc",
    "program_attribution",
    "select_sources",
    "source_node",
    "verify",
]
