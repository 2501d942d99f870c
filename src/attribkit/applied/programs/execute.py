"""Running a program: each module call through a :class:`TextOps` back end, inner calls first,
with citations propagated as the union of the inputs' citations (Wan et al., "GenerationPrograms:
Fine-grained Attribution with Executable Programs", COLM 2025).

Back ends: :class:`LMTextOps` (a language model with module prompts written for attribkit — the
reference's prompt files are not in its repository) and :class:`ExtractiveTextOps`
(deterministic, no model: paraphrase = identity, compression = the text before the first comma,
fusion = the inputs joined by ``"; "``). Citations are unit indices, recorded per node, so two
nodes producing the same text never overwrite each other; a call that fails is recorded with its
error, and every call that needs its output fails with it (the reference silently drops the
sentence).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from attribkit.applied.programs.grammar import Call, Node, Program, Source
from attribkit.core.cost import Cost, CostMeter, measure
from attribkit.core.errors import AttribkitError, InputError
from attribkit.core.units import TextUnits
from attribkit.tasks.prompt_scores import lm_meter

#: attribkit's module prompts; ``{sentences}`` is one input per line
MODULE_PROMPTS: dict[str, str] = {
    "paraphrase": (
        "Paraphrase the sentence below. Keep every name, number and fact; add nothing.\n"
        "{extra}\nSentence:\n{sentences}\n\nWrite only the paraphrased sentence."
    ),
    "compression": (
        "Shorten the sentence below: keep its main fact with its exact names and numbers, in "
        "fewer words.\n{extra}\nSentence:\n{sentences}\n\nWrite only the shortened sentence."
    ),
    "fusion": (
        "Combine the sentences below into one sentence that keeps every name, number and fact "
        "of each.\n{extra}\nSentences:\n{sentences}\n\nWrite only the combined sentence."
    ),
}


@runtime_checkable
class TextOps(Protocol):
    """A back end for the three modules. ``run`` returns the module's output text for ``inputs``
    (one string for paraphrase and compression, two or more for fusion); ``meter`` counts its
    model calls; ``generations`` counts its generation calls."""

    name: str
    generations: int

    @property
    def meter(self) -> CostMeter: ...

    def run(
        self,
        op: str,
        inputs: Sequence[str],
        instruction: str | None = None,
        question: str | None = None,
    ) -> str: ...


def module_prompt(
    op: str,
    inputs: Sequence[str],
    instruction: str | None = None,
    question: str | None = None,
    prompts: dict[str, str] | None = None,
) -> str:
    """The user message of module ``op`` over ``inputs`` (one per line), with the optional
    instruction and question. No model calls."""
    table = prompts or MODULE_PROMPTS
    if op not in table:
        raise InputError(f"unknown module {op!r}; use one of {', '.join(table)}")
    extra = ""
    if question:
        extra += f"Question: {question}\n"
    if instruction:
        extra += f"Instruction: {instruction}\n"
    lines = "\n".join(s.replace("\n", " ").strip() for s in inputs)
    return table[op].format(sentences=lines, extra=extra)


def first_sentence_line(text: str) -> str:
    """The first non-empty line of a generation, without a leading bullet or quotes."""
    for line in text.splitlines():
        line = line.strip().lstrip("-*• ").strip().strip('"').strip()
        if line:
            return line
    return ""


class LMTextOps:
    """The modules as greedy generations of a language model with attribkit's module prompts
    (:data:`MODULE_PROMPTS`); the output is the first non-empty line. Costs one generation per
    call (``max_new_tokens`` decoding steps at most), counted in :attr:`generations` and on the
    LM's meter."""

    def __init__(
        self, lm: Any, max_new_tokens: int = 64, prompts: dict[str, str] | None = None
    ) -> None:
        self.lm, self.max_new_tokens = lm, int(max_new_tokens)
        self.prompts = dict(prompts or MODULE_PROMPTS)
        self.name = f"lm:{getattr(lm, 'name', type(lm).__name__)}"
        self.generations = 0
        self._meter = lm_meter(lm)

    @property
    def meter(self) -> CostMeter:
        """The LM's meter (or the back end's own when the LM has none)."""
        return self._meter

    def prompt(
        self,
        op: str,
        inputs: Sequence[str],
        instruction: str | None = None,
        question: str | None = None,
    ) -> str:
        """The module prompt this back end sends for ``op`` over ``inputs``. No model calls."""
        return module_prompt(op, inputs, instruction, question, self.prompts)

    def run(
        self,
        op: str,
        inputs: Sequence[str],
        instruction: str | None = None,
        question: str | None = None,
    ) -> str:
        """One greedy generation of module ``op``; returns its first non-empty line."""
        text = self.lm.generate(
            self.prompt(op, inputs, instruction, question), max_new_tokens=self.max_new_tokens
        )
        self.generations += 1
        return first_sentence_line(str(text))


class ExtractiveTextOps:
    """Deterministic modules without a model: paraphrase returns its input, compression the text
    before the first comma (with the input's final punctuation), fusion joins the inputs with
    ``"; "`` (inner final periods dropped). Costs nothing; for tests and as a faithful
    reference back end."""

    name = "extractive"

    def __init__(self) -> None:
        self.generations = 0
        self._meter = CostMeter()

    @property
    def meter(self) -> CostMeter:
        """A meter that never counts anything (no model)."""
        return self._meter

    def run(
        self,
        op: str,
        inputs: Sequence[str],
        instruction: str | None = None,
        question: str | None = None,
    ) -> str:
        """The module's deterministic output; ``instruction`` and ``question`` are ignored."""
        texts = [s.strip() for s in inputs]
        if op == "paraphrase":
            return texts[0]
        if op == "compression":
            head, comma, _ = texts[0].partition(",")
            end = texts[0][-1] if comma and texts[0][-1:] in ".!?" else ""
            return head.strip() + end
        if op == "fusion":
            parts = [t.rstrip(".") for t in texts[:-1]] + [texts[-1]]
            return "; ".join(parts)
        raise InputError(f"unknown module {op!r}; use paraphrase, compression or fusion")


@dataclass
class NodeRun:
    """One executed node: ``op`` (a module, ``"source"`` for a source sentence, ``"copy"`` for a
    bullet that is a bare sentence id), its ``args`` as written, its ``output`` text (None when it
    failed), its ``citations`` (unit indices: the union of its inputs'), its ``children`` (one per
    argument, in order), ``error`` when it failed, ``cached`` when an equal call earlier in the
    run answered it, and ``id`` (``"<sentence>.<k>"``, k-th call of that bullet, inner first)."""

    op: str
    args: list[str]
    instruction: str | None
    output: str | None
    citations: list[int]
    children: list[NodeRun] = field(default_factory=list)
    error: str | None = None
    cached: bool = False
    id: str = ""

    @property
    def ok(self) -> bool:
        """Whether the node produced an output."""
        return self.output is not None

    def walk(self) -> list[NodeRun]:
        """This node and every node under it, inner first."""
        out: list[NodeRun] = []
        for c in self.children:
            out.extend(c.walk())
        out.append(self)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The node tree as a JSON-serialisable dict (what the viewer draws)."""
        return {
            "id": self.id,
            "op": self.op,
            "args": list(self.args),
            "instruction": self.instruction,
            "output": self.output,
            "citations": list(self.citations),
            "error": self.error,
            "cached": self.cached,
            "children": [c.to_dict() for c in self.children],
        }


@dataclass
class ProgramRun:
    """The result of :func:`execute`: one root :class:`NodeRun` per output sentence, the output
    sentences (None where the bullet failed), the failures, the back end's name, and the cost
    (``cost``: model calls and seconds; ``generations``: module generations; per sentence in
    ``sentence_costs``)."""

    program: Program
    roots: list[NodeRun]
    sentences: list[str | None]
    failures: list[str]
    backend: str
    cost: Cost
    generations: int
    sentence_costs: list[Cost]

    @property
    def response(self) -> str:
        """The output sentences that were produced, joined by spaces."""
        return " ".join(s for s in self.sentences if s)

    def citations(self, sentence: int) -> list[int]:
        """The unit indices output sentence ``sentence`` cites."""
        return list(self.roots[sentence].citations)

    def cited_response(self) -> str:
        """The response with ``[n]`` markers (1-based sentence ids) before each sentence's final
        period, as the reference writes sentence-level citations."""
        out = []
        for s, root in zip(self.sentences, self.roots, strict=True):
            if not s:
                continue
            marks = "".join(f"[{u + 1}]" for u in root.citations)
            out.append(s[:-1] + marks + "." if s.endswith(".") else s + marks)
        return " ".join(out)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict: program, node trees, sentences, failures and cost."""
        return {
            "program": self.program.to_dict(),
            "backend": self.backend,
            "sentences": list(self.sentences),
            "nodes": [r.to_dict() for r in self.roots],
            "failures": list(self.failures),
            "cost": self.cost.to_dict(),
            "generations": self.generations,
            "sentence_costs": [c.to_dict() for c in self.sentence_costs],
        }


def unit_texts(units: TextUnits | Sequence[str]) -> list[str]:
    """The source sentences' texts, indexed by unit (``S<i+1>`` is item ``i``)."""
    if isinstance(units, TextUnits):
        return list(units.labels)
    if isinstance(units, str):
        raise InputError("pass the source sentences as a list of strings or TextUnits")
    texts = [str(u) for u in units]
    if not texts:
        raise InputError("no source sentences: pass the context units the program cites")
    return texts


class _Executor:
    """Evaluates nodes inner first, answering an equal call (same op, args, instruction) from
    the outputs of this run."""

    def __init__(self, texts: list[str], ops: TextOps, question: str | None) -> None:
        self.texts, self.ops, self.question = texts, ops, question
        self.memo: dict[Call, str] = {}

    def node(self, node: Node, sentence: int, counter: list[int]) -> NodeRun:
        if isinstance(node, Source):
            return NodeRun("source", [node.label], None, self.texts[node.unit], [node.unit])
        children = [self.node(a, sentence, counter) for a in node.args]
        citations = sorted({u for c in children for u in c.citations})
        counter[0] += 1
        run = NodeRun(
            node.op,
            [str(a) for a in node.args],
            node.instruction,
            None,
            citations,
            children,
            id=f"{sentence + 1}.{counter[0]}",
        )
        failed = [c for c in children if not c.ok]
        if failed:
            run.error = f"input {failed[0].id or failed[0].args[0]} failed"
            return run
        if node in self.memo:
            run.output, run.cached = self.memo[node], True
            return run
        inputs = [c.output for c in children if c.output is not None]
        try:
            out = self.ops.run(node.op, inputs, node.instruction, self.question)
        except AttribkitError as e:
            run.error = f"{type(e).__name__}: {e}"
            return run
        if not out or not out.strip():
            run.error = "the module returned an empty output"
            return run
        run.output = out.strip()
        self.memo[node] = run.output
        return run


def execute(
    program: Program,
    units: TextUnits | Sequence[str],
    ops: TextOps | None = None,
    question: str | None = None,
) -> ProgramRun:
    """Run ``program`` over the source sentences ``units`` with back end ``ops`` (default
    :class:`ExtractiveTextOps`): each bullet's calls inner first, citations = union of inputs'.

    Returns a :class:`ProgramRun`. Costs one module call per distinct call node (equal calls in
    one run are answered once): with :class:`LMTextOps` one generation each. A failed call is
    recorded in ``failures`` and on its node, and the sentence that needs it is None.
    """
    texts = unit_texts(units)
    program.check_units(len(texts))
    ops = ops if ops is not None else ExtractiveTextOps()
    if not isinstance(ops, TextOps):
        raise InputError(
            f"{type(ops).__name__} is not a TextOps back end (needs name, generations, meter "
            "and run(op, inputs, instruction, question)); use LMTextOps(lm) or ExtractiveTextOps()"
        )
    executor = _Executor(texts, ops, question)
    roots, sentences, failures, costs = [], [], [], []
    gen0 = ops.generations
    start = time.perf_counter()
    with measure(ops.meter) as total:
        for i, node in enumerate(program.sentences):
            with measure(ops.meter) as cost:
                if isinstance(node, Source):
                    root = NodeRun("copy", [node.label], None, texts[node.unit], [node.unit])
                    root.id = f"{i + 1}.0"
                else:
                    root = executor.node(node, i, [0])
            costs.append(cost)
            roots.append(root)
            sentences.append(root.output)
            for n in root.walk():
                if n.error and not n.error.startswith("input "):
                    failures.append(f"sentence {i + 1}, node {n.id} ({n.op}): {n.error}")
            if root.output is None and not any(
                f.startswith(f"sentence {i + 1},") for f in failures
            ):
                failures.append(f"sentence {i + 1}: {root.error}")
    total.seconds = time.perf_counter() - start
    return ProgramRun(
        program, roots, sentences, failures, ops.name, total, ops.generations - gen0, costs
    )
