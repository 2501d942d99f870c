"""The GenerationPrograms plan grammar: one bullet per output sentence, each a nested call over
``paraphrase``, ``compression`` and ``fusion`` whose arguments are source-sentence ids ``S<n>``
(Wan, Hirsch, Stengel-Eskin, Dagan, Bansal, "GenerationPrograms: Fine-grained Attribution with
Executable Programs", COLM 2025).

The grammar is the reference code's (``src/util.py``): ``paraphrase(x, instruction=None)`` and
``compression(x, instruction=None)`` take exactly one positional argument, ``fusion(x1, ...,
xn, instruction=None)`` at least two; ``instruction`` is the only keyword; arguments are sentence
ids or calls. Bullets are parsed with Python's :mod:`ast` (never evaluated). Differences from the
reference, on purpose:

- a bullet that is a bare ``S3`` is a valid *copy* node (the reference silently drops it);
- the reference's two repairs (``")), instruction"`` -> ``"), instruction"``, then every ``"))"``
  -> ``")"``) are tried only after a parse failure, as there, but every repair that was applied
  is recorded on the :class:`Program` (:attr:`Program.repairs`), never silent;
- ``instruction`` must be a string literal or None (the reference also takes a name or a call),
  and a bullet holds one expression (the reference runs every expression of a line);
- a bullet that still does not parse, an unknown function, a wrong number of arguments, an
  unknown keyword, an argument that is not a sentence id or a call, or a sentence id beyond the
  context raise :class:`~attribkit.core.errors.InputError` (the reference prints and drops);
- sentence ids become *unit indices* (``S3`` -> unit 2), so citations never go through sentence
  text: two documents holding the same sentence keep separate citations.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from attribkit.core.errors import InputError

#: positional-argument bounds (min, max; None = unbounded) of each module, as in the reference
ARITY: dict[str, tuple[int, int | None]] = {
    "paraphrase": (1, 1),
    "compression": (1, 1),
    "fusion": (2, None),
}
#: the reference's repairs, in the order they are tried after a parse failure
REPAIRS: tuple[tuple[str, str], ...] = ((")), instruction", "), instruction"), ("))", ")"))

_SENTENCE_ID = re.compile(r"S([1-9][0-9]*)")


@dataclass(frozen=True)
class Source:
    """A source sentence, ``S<unit + 1>`` in a plan; ``unit`` is its 0-based unit index."""

    unit: int

    @property
    def label(self) -> str:
        """The sentence id as written in a plan, e.g. ``"S3"``."""
        return f"S{self.unit + 1}"

    def __str__(self) -> str:
        return self.label


@dataclass(frozen=True)
class Call:
    """One module call: ``op`` (``paraphrase``, ``compression`` or ``fusion``) over ``args``
    (sources or inner calls) with an optional free-text ``instruction``."""

    op: str
    args: tuple[Node, ...]
    instruction: str | None = None

    def __str__(self) -> str:
        parts = [str(a) for a in self.args]
        if self.instruction is not None:
            parts.append(f"instruction={self.instruction!r}")
        return f"{self.op}({', '.join(parts)})"


Node = Source | Call


@dataclass(frozen=True)
class Repair:
    """A repair applied to bullet ``sentence`` (0-based) after it failed to parse: ``rule`` was
    replaced by ``replacement``, turning ``before`` into ``after``."""

    sentence: int
    rule: str
    replacement: str
    before: str
    after: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return {
            "sentence": self.sentence,
            "rule": self.rule,
            "replacement": self.replacement,
            "before": self.before,
            "after": self.after,
        }


def sources(node: Node) -> list[int]:
    """The unit indices of every source under ``node``, sorted and without repeats: the node's
    citations by construction. No model calls."""
    if isinstance(node, Source):
        return [node.unit]
    return sorted({u for a in node.args for u in sources(a)})


def calls(node: Node) -> Iterator[Call]:
    """Every call under (and including) ``node``, inner calls first (the reference's
    depth-first order, which is also the execution order)."""
    if isinstance(node, Call):
        for a in node.args:
            yield from calls(a)
        yield node


@dataclass
class Program:
    """A plan: one node per output sentence (:attr:`sentences`), the repairs that were needed to
    parse it, and, for a plan made post hoc from an attribution, that attribution.

    ``text`` is the plan as given (None for a plan built in code); :meth:`plan_text` writes the
    canonical plan back. ``planner`` says where the plan came from (``"given"``,
    ``"post_hoc:<method>"``). ``response_sentences`` holds the sentences a post-hoc plan
    explains; ``attributions`` the per-sentence context attributions it was planned from, and
    ``cost`` what planning cost. Building one costs no model calls.
    """

    sentences: list[Node]
    repairs: list[Repair] = field(default_factory=list)
    text: str | None = None
    planner: str = "given"
    response_sentences: list[str] | None = None
    attributions: list[Any] | None = None
    cost: Any = None

    def __post_init__(self) -> None:
        if not self.sentences:
            raise InputError(
                "the program is empty: give one bullet per output sentence, e.g. '- fusion(S1, S2)'"
            )

    def __len__(self) -> int:
        return len(self.sentences)

    def citations(self, sentence: int) -> list[int]:
        """The unit indices output sentence ``sentence`` cites (the union of its sources)."""
        return sources(self.sentences[sentence])

    @property
    def max_unit(self) -> int:
        """The largest unit index any node refers to."""
        return max(u for node in self.sentences for u in sources(node))

    def check_units(self, n_units: int) -> None:
        """Raise InputError when a sentence id is beyond ``n_units`` context units."""
        for i, node in enumerate(self.sentences):
            bad = [u for u in sources(node) if u >= n_units]
            if bad:
                raise InputError(
                    f"bullet {i + 1} ({node}) cites S{bad[0] + 1} but the context has only "
                    f"{n_units} sentences (S1..S{n_units}); use ids within that range"
                )

    def plan_text(self) -> str:
        """The plan as bullets, one per output sentence (parses back to an equal program)."""
        return "\n".join(f"- {node}" for node in self.sentences)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict: the bullets, each node's sources, the repairs."""
        return {
            "planner": self.planner,
            "text": self.text,
            "plan": self.plan_text(),
            "sentences": [node_dict(n) for n in self.sentences],
            "citations": [self.citations(i) for i in range(len(self))],
            "repairs": [r.to_dict() for r in self.repairs],
            "response_sentences": self.response_sentences,
        }

    def __str__(self) -> str:
        return self.plan_text()


def node_dict(node: Node) -> dict[str, Any]:
    """A static node tree (no outputs): op, args, instruction, citations and children."""
    if isinstance(node, Source):
        return {
            "op": "source",
            "args": [node.label],
            "instruction": None,
            "output": None,
            "citations": [node.unit],
            "children": [],
        }
    return {
        "op": node.op,
        "args": [str(a) for a in node.args],
        "instruction": node.instruction,
        "output": None,
        "citations": sources(node),
        "children": [node_dict(a) for a in node.args],
    }


def _clean(line: str) -> str:
    """A bullet without its marker and markdown (the reference strips leading '-' and spaces,
    ``**`` and backticks)."""
    line = line.strip().replace("**", "").replace("`", "")
    return line.lstrip("-*• ").strip()


def _argument(node: ast.expr, bullet: int) -> Node:
    if isinstance(node, ast.Call):
        return _call(node, bullet)
    name = node.id if isinstance(node, ast.Name) else None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        name = node.value
    if name is not None:
        m = _SENTENCE_ID.fullmatch(name)
        if m:
            return Source(int(m.group(1)) - 1)
        raise InputError(
            f"bullet {bullet + 1}: {name!r} is not a sentence id; arguments are sentence ids "
            "S1, S2, ... or calls"
        )
    raise InputError(
        f"bullet {bullet + 1}: the argument {ast.unparse(node)!r} is not a sentence id or a "
        "call; arguments are sentence ids S1, S2, ... or calls"
    )


def _call(node: ast.Call, bullet: int) -> Call:
    if not isinstance(node.func, ast.Name):
        raise InputError(
            f"bullet {bullet + 1}: {ast.unparse(node.func)!r} is not a plain function name; "
            f"use one of {', '.join(ARITY)}"
        )
    op = node.func.id
    if op not in ARITY:
        raise InputError(
            f"bullet {bullet + 1}: unknown function {op!r}; use one of {', '.join(ARITY)}"
        )
    lo, hi = ARITY[op]
    n = len(node.args)
    if n < lo or (hi is not None and n > hi):
        want = f"exactly {lo}" if lo == hi else f"at least {lo}"
        raise InputError(
            f"bullet {bullet + 1}: {op} takes {want} positional argument(s), got {n} "
            f"in {ast.unparse(node)!r}"
        )
    if any(isinstance(a, ast.Starred) for a in node.args):
        raise InputError(f"bullet {bullet + 1}: starred arguments are not part of the grammar")
    instruction: str | None = None
    for kw in node.keywords:
        if kw.arg != "instruction":
            raise InputError(
                f"bullet {bullet + 1}: unknown keyword {kw.arg!r} in {op}(...); the only "
                "keyword is instruction='...'"
            )
        value = kw.value
        if isinstance(value, ast.Constant) and (
            value.value is None or isinstance(value.value, str)
        ):
            instruction = value.value
        else:
            raise InputError(
                f"bullet {bullet + 1}: instruction must be a string or None, got "
                f"{ast.unparse(value)!r}"
            )
    args = tuple(_argument(a, bullet) for a in node.args)
    return Call(op, args, instruction)


def _parse_expression(text: str) -> ast.expr:
    """The single expression of ``text``; SyntaxError when it is not one."""
    tree = ast.parse(text, mode="exec")
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Expr):
        raise SyntaxError("a bullet must be a single expression")
    return tree.body[0].value


def parse_bullet(line: str, index: int = 0) -> tuple[Node, list[Repair]]:
    """One bullet -> its node and the repairs that were needed (none when it parsed as given).

    The reference's repairs run only after a parse failure, in order, each on the result of the
    previous one; a bullet that still fails raises InputError. No model calls."""
    text = _clean(line)
    repairs: list[Repair] = []
    try:
        expr = _parse_expression(text)
    except SyntaxError as first:
        expr = None
        current = text
        for rule, replacement in REPAIRS:
            if rule not in current:
                continue
            fixed = current.replace(rule, replacement)
            repairs.append(Repair(index, rule, replacement, current, fixed))
            current = fixed
            try:
                expr = _parse_expression(current)
                break
            except SyntaxError:
                continue
        if expr is None:
            raise InputError(
                f"bullet {index + 1} ({text!r}) is not a valid call ({first.msg}); write "
                "nested calls such as fusion(S1, paraphrase(S2)), one per line"
            ) from None
    if isinstance(expr, ast.Call):
        return _call(expr, index), repairs
    return _argument(expr, index), repairs


def parse_program(text: str, n_units: int | None = None) -> Program:
    """Parse a plan: one bullet (``- fusion(S1, S2, instruction='...')``) per non-empty line.

    Returns a :class:`Program` whose :attr:`~Program.repairs` lists every repair applied; with
    ``n_units``, sentence ids beyond it raise InputError. Blank lines and code-fence lines are
    skipped. Parsing uses :mod:`ast` only (nothing is evaluated). No model calls.
    """
    if not isinstance(text, str):
        raise InputError(f"a program is a string of bullets, got {type(text).__name__}")
    nodes: list[Node] = []
    repairs: list[Repair] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not _clean(stripped) or stripped.startswith("```"):
            continue
        node, fixes = parse_bullet(stripped, len(nodes))
        nodes.append(node)
        repairs.extend(fixes)
    if not nodes:
        raise InputError(
            "the program is empty: give one bullet per output sentence, e.g. '- fusion(S1, S2)'"
        )
    program = Program(nodes, repairs, text=text)
    if n_units is not None:
        program.check_units(n_units)
    return program
