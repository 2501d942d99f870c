"""Backtrace over an influence graph of turns: from the final answer of a multi-agent log back
along information dependencies to the most suspicious ancestor. The idea of Zhang, Shi, Gu,
You, Zhang, Gan, Yuan & Huang, 'GraphTracer', arXiv 2510.10581, 2025 (withdrawn, no code: an
idea here, not a reproduction); the ablation edges are the turn-level twin of the attention
suppression of Bogdan, Macar, Nanda & Conmy, 'Thought Anchors: Which LLM Reasoning Steps
Matter?', 2025; blame flows upstream to the producer of what later turns use, as in the
performance causal inversion of Ma et al., 'Automatic Failure Attribution and Critical Step
Prediction Method for Multi-Agent Systems Based on Causal Inference', 2025.

Influence graph: a weight w(j→i) in [0, 1] for every pair of turns j < i (all turns of the log,
the final one included), stored as an n × n matrix ``W[j, i]`` (zero on and below the diagonal).

- ``edges="lexical"`` (free, no model call): each turn's *anchors* are its numbers of at least
  two digits (thousands separators dropped: ``5,280`` = ``5280``), URLs, quoted strings (in
  double, single or back quotes, 2–80 characters, case and spacing folded) and code-like
  identifiers of at least 4 characters (snake_case, camelCase / inner capitals, dotted names
  such as ``data.csv`` or ``np.mean``); the log's agent names are not anchors (turns address
  each other by name). w(j→i) = |anchors(j) ∩ anchors(i)| / |anchors(i)|: the share of what
  turn i mentions that turn j already mentioned.
- ``edges="ablation"``: Δ(j→i) = log p(turn i | question, turns < i) − log p(turn i | question,
  turns < i without j), turn i's content teacher-forced after its ``Step i - agent:`` header
  with the task's LM; w(j→i) = 1 − exp(−max(Δ, 0)), the share of turn i's probability that
  goes when j goes. (n − 1)(n + 2)/2 scorings: n(n − 1)/2 ablated contexts and n − 1 full ones.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import measure
from attribkit.core.errors import InputError
from attribkit.core.registry import check_units
from attribkit.methods.agents._common import agent_task, blame_sign, turn_ablation
from attribkit.tasks.agents import QUESTION_BLOCK, AgentLog, AgentTask

__all__ = ["EDGE_KINDS", "SUSPICIONS", "anchors", "backtrace", "influence_graph"]

EDGE_KINDS = ("lexical", "ablation")
SUSPICIONS = ("turn_loo", "none")
#: Added to a clipped turn_loo blame, so that path weight still ranks turns no ablation blames.
EPS = 1e-3

_URL = re.compile(r"https?://[^\s<>\"'`)\]]+")
_NUMBER = re.compile(r"(?<![\w.])\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\w])|(?<![\w.,])\d+(?:\.\d+)?")
_QUOTED = re.compile(r"\"([^\"\n]{2,80})\"|(?<!\w)'([^'\n]{2,80})'(?!\w)|`([^`\n]{2,80})`")
_WORD = re.compile(r"(?<![\w.])[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*(?!\w)")
_CAMEL = re.compile(r"[a-z0-9][A-Z]")


def anchors(text: str, exclude: Any = ()) -> set[str]:
    """The lexical anchors of a turn's text (see the module docstring): numbers of ≥ 2 digits
    (``#5280``), URLs (``url:...``), quoted strings (``"...``) and identifiers of ≥ 4
    characters (``id:...``), minus the names in ``exclude`` (compared case-folded). No model
    calls."""
    skip = {str(e).casefold() for e in exclude}
    found: set[str] = set()
    for m in _URL.finditer(text):
        url = m.group(0).rstrip(".,;:!?").rstrip("/")
        found.add("url:" + url)
    rest = _URL.sub(" ", text)
    for m in _QUOTED.finditer(rest):
        q = next(g for g in m.groups() if g is not None)
        q = " ".join(q.split()).casefold()
        if len(q) >= 2 and q not in skip:
            found.add('"' + q)
    for m in _NUMBER.finditer(rest):
        digits = m.group(0).replace(",", "")
        if sum(c.isdigit() for c in digits) >= 2:
            found.add("#" + digits)
    for m in _WORD.finditer(rest):
        word = m.group(0)
        code = "." in word or "_" in word.strip("_") or _CAMEL.search(word) is not None
        ident = word.strip("_")
        if code and len(ident) >= 4 and ident.casefold() not in skip:
            found.add("id:" + ident)
    return found


def _lexical(log: AgentLog) -> np.ndarray:
    names = log.agents
    sets = [anchors(t.content, names) for t in log.turns]
    n = len(sets)
    w = np.zeros((n, n))
    for i in range(1, n):
        if not sets[i]:
            continue
        for j in range(i):
            w[j, i] = len(sets[j] & sets[i]) / len(sets[i])
    return w


def _ablation(task: AgentTask) -> np.ndarray:
    """The ablation weights; counts one forward pass per scoring on ``task.meter``."""
    task._need_lm()
    lm = task.lm
    log = task.log
    n = len(log)
    q = log.question
    question = QUESTION_BLOCK.format(question=q) if q is not None else ""
    prompts: list[str] = []
    responses: list[str] = []
    index: list[tuple[int, int]] = []  # (i, j) with j = -1 for the full context
    for i in range(1, n):
        content = log.turns[i].content.strip()
        if not content:
            continue
        header = f"Step {i} - {log.turns[i].agent}:"
        for j in (-1, *range(i)):
            kept = log.serialize([k for k in range(i) if k != j])
            text = kept + "\n" + header if kept else header
            prompts.append(task.template.format(question=question, log=text))
            responses.append(" " + content)
            index.append((i, j))
    w = np.zeros((n, n))
    if not prompts:
        return w
    kwargs: dict[str, Any] = {"chat": False}
    if task.reuse_prefix and hasattr(lm, "set_reference"):
        kwargs["reuse_prefix"] = True
    scores = lm.token_logprobs(prompts, responses, **kwargs)
    if task.meter is not lm:  # an LM without a meter of its own: count here
        task.meter.cost.forward_passes += len(prompts)
        task.meter.cost.batches += 1
    full: dict[int, float] = {}
    for (i, j), lp in zip(index, scores, strict=True):
        if j < 0:
            full[i] = float(np.sum(lp))
    for (i, j), lp in zip(index, scores, strict=True):
        if j >= 0:
            delta = full[i] - float(np.sum(lp))
            w[j, i] = 1.0 - math.exp(-max(delta, 0.0))
    return w


def influence_graph(source: Any, edges: str = "lexical") -> np.ndarray:
    """The influence graph over all turns of a log: an n × n matrix, ``W[j, i]`` = w(j→i) in
    [0, 1] for j < i, zero elsewhere (weights in the module docstring).

    ``source``: an :class:`AgentLog` or an :class:`AgentTask` (its log, cut to its
    ``max_turn_chars``); ``edges="ablation"`` needs an AgentTask with an LM. Costs nothing with
    ``"lexical"``; with ``"ablation"`` (n − 1)(n + 2)/2 forward passes (turns with empty content
    are not scored), batched, counted on the task's meter."""
    if edges not in EDGE_KINDS:
        raise InputError(f"edges must be one of {', '.join(EDGE_KINDS)}, got {edges!r}")
    if isinstance(source, AgentTask):
        log = source.log
    elif isinstance(source, AgentLog):
        log = source
    else:
        raise InputError(
            f"influence_graph needs an AgentLog or an AgentTask, got {type(source).__name__}"
        )
    if edges == "lexical":
        return _lexical(log)
    if not isinstance(source, AgentTask):
        raise InputError(
            "edges='ablation' scores turns with a language model: pass an AgentTask with lm=..."
        )
    return _ablation(source)


def _widest(w: np.ndarray, root: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Max-product path weight from each turn to ``root`` over edges above ``threshold`` (root:
    1, unreachable: 0) and each turn's next turn on that path (-1 at the root and where
    unreachable). No model calls."""
    n = w.shape[0]
    best = np.zeros(n)
    nxt = np.full(n, -1)
    best[root] = 1.0
    for i in range(root, 0, -1):
        if best[i] <= 0:
            continue
        for j in range(i):
            if w[j, i] > threshold and best[i] * w[j, i] > best[j]:
                best[j], nxt[j] = best[i] * w[j, i], i
    return best, nxt


def backtrace(
    task: Any,
    *,
    edges: str = "lexical",
    threshold: float = 0.0,
    suspicion: str = "turn_loo",
    sign: int | None = None,
) -> Attribution:
    """Trace a failure back from the final turn of an :class:`AgentTask`'s log along an
    influence graph (:func:`influence_graph`) to its most suspicious ancestor.

    The root is the final answer: the log's last turn (with outcome ``"final"`` the scored
    outcome, not a unit), or, when no edge above ``threshold`` enters it (a closing
    ``TERMINATE`` turn, as in most Who&When Algorithm-Generated logs), the latest turn that one
    enters — the latest turn that builds on earlier ones (``extras["root"]``). Ancestors are the
    turns with a path to the root through edges of weight > ``threshold``; each gets its *path
    weight* P — the maximum over paths of the product of edge weights (in [0, 1], so long
    chains fade) — and its score is P × suspicion: with ``suspicion="turn_loo"`` the turn's
    :func:`turn_loo` blame (sign from the outcome, or ``sign``) clipped at 0, plus ``EPS`` =
    1e-3 (so that path weight still ranks turns that no ablation blames); with ``"none"`` 1.
    Turns that are not ancestors, and the root itself (the symptom), score 0. The decision is
    the best-scoring ancestor, ties to the earliest turn (the earliest decisive error); when no
    edge exists at all, the highest turn_loo blame (or no decision with ``"none"``). Returns an
    Attribution over the turns with extras ``edges`` (a list of ``[j, i, w]`` step pairs with
    w > 0), ``root``, ``path`` (the steps from the decided turn to the root; empty without an
    ancestor), ``path_weight`` (step → P for every ancestor), ``agent_scores`` and
    ``decision``.

    Costs: lexical edges 0 forward passes, ablation edges (n − 1)(n + 2)/2 for an n-turn log;
    plus, with ``suspicion="turn_loo"``, the n_u + 1 of turn_loo over the n_u turn units
    (prompts the task already scored cost nothing).
    """
    task = agent_task(task, "backtrace")
    check_units(task)
    if edges not in EDGE_KINDS:
        raise InputError(f"edges must be one of {', '.join(EDGE_KINDS)}, got {edges!r}")
    if suspicion not in SUSPICIONS:
        raise InputError(f"suspicion must be one of {', '.join(SUSPICIONS)}, got {suspicion!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise InputError(f"threshold must be a number in [0, 1], got {threshold!r}")
    if not 0.0 <= threshold <= 1.0:
        raise InputError(
            f"threshold must be in [0, 1] (edge weights are in [0, 1]), got {threshold}"
        )
    s = blame_sign(task, sign)
    n_u = task.n_units
    steps = [int(u.meta["step"]) for u in task.units]
    with measure(task.meter) as cost:
        w = influence_graph(task, edges)
        blame = turn_ablation(task, s)[2] if suspicion == "turn_loo" else None
    entered = np.flatnonzero((w > threshold).any(axis=0))
    root = int(entered[-1]) if entered.size else len(task.log) - 1
    best, nxt = _widest(w, root, float(threshold))
    path_w = np.array([best[st] if st != root else 0.0 for st in steps])
    susp = np.ones(n_u) if blame is None else np.maximum(blame, 0.0) + EPS
    scores = path_w * susp
    reach = path_w > 0
    if reach.any():
        k = int(np.argmax(np.where(reach, scores, -np.inf)))
        st = steps[k]
        path = [st]
        while path[-1] != root:
            path.append(int(nxt[path[-1]]))
        decision = {
            "agent": task.units[k].meta["agent"],
            "step": st,
            "reason": f"ancestor of the final answer (step {root}) with the highest path weight "
            "x suspicion (ties: earliest)",
        }
    else:
        path = []
        if blame is None:
            decision = {
                "agent": None,
                "step": None,
                "reason": "no influence edge: no turn reaches the final answer",
            }
        else:
            decision = task.decision_from_scores(
                blame, "no influence edge: the highest turn_loo blame"
            )
    return task.result(
        scores,
        "backtrace",
        {"edges": edges, "threshold": float(threshold), "suspicion": suspicion, "sign": s},
        cost,
        decision,
        edges=[[int(j), int(i), float(w[j, i])] for j, i in zip(*np.nonzero(w), strict=True)],
        root=root,
        path=path,
        path_weight={str(st): float(best[st]) for st in range(root) if best[st] > 0},
    )
