"""Attention suppression: how much each sentence of a chain of thought is *used* by the sentences
after it, read from the model's next-token distributions when no position may attend to it
(Bogdan, Macar, Nanda & Conmy, 'Thought Anchors: Which LLM Reasoning Steps Matter?', 2025).

Mask mechanism: a 4-D additive float attention mask ``(batch, 1, T, T)`` passed through the HF
model's ``attention_mask`` argument (transformers returns an already prepared 4-D mask as is and
both the ``sdpa`` and ``eager`` implementations add it to the pre-softmax logits). It holds the
causal mask plus, in a masked pass, the dtype minimum on every key column of sentence i, so in
every layer and head no query attends to sentence i. No hooks and no patched attention modules
(the authors replace Qwen2 attention ``forward``); any decoder whose HF forward accepts a custom
4-D mask works (checked here on Llama: SmolLM2 and the tiny test Llama, sdpa and eager).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from attribkit.core.attribution import Attribution
from attribkit.core.cost import measure
from attribkit.core.errors import InputError, ScorerError
from attribkit.core.registry import check_units

__all__ = ["suppression"]


def _sequence(task: Any) -> tuple[list[int], list[list[int]], list[int]]:
    """Token ids of the task's full prompt plus the answer (``chat=False``, as the task scores),
    each sentence's token positions (by the tokenizer's offset mapping: a token belongs to the
    sentence holding its last character; whitespace between sentences belongs to none) and the
    answer's token positions. No model calls."""
    lm = task.lm
    prompt = task.prompt()
    before = task.template.split("{reasoning}", 1)[0].format(problem=task.problem)
    text = task.units.text
    offset = len(before) + len(text) - len(text.lstrip())
    ids, spans = lm._prompt_offsets(prompt, False, None)
    sentences: list[list[int]] = [[] for _ in task.units]
    bounds = []
    for s, e in task.trace.spans:
        a, b = offset + s, offset + e
        if prompt[a:b] != text[s:e]:  # the template moved the reasoning: refuse, do not guess
            raise InputError(
                "cannot locate the sentences in the prompt (the template must put the stripped "
                "reasoning at {reasoning} verbatim)"
            )
        bounds.append((a, b))
    for k, (s, e) in enumerate(spans):
        if s < 0 or e <= s:
            continue
        for i, (a, b) in enumerate(bounds):
            if a <= e - 1 < b:
                sentences[i].append(k)
                break
    empty = [i for i, pos in enumerate(sentences) if not pos]
    if empty:
        raise InputError(
            f"sentences {empty} have no token of their own; merge them with a neighbour"
        )
    answer = lm._response_ids(task.answer)
    return list(ids) + answer, sentences, list(range(len(ids), len(ids) + len(answer)))


def _kl(base: torch.Tensor, other: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(p_base ‖ p_other) per row of two logit tensors ``(..., vocab)``, in float32."""
    lp = torch.log_softmax(base.float() / temperature, dim=-1)
    lq = torch.log_softmax(other.float() / temperature, dim=-1)
    return (lp.exp() * (lp - lq)).sum(-1).clamp_min(0.0)


def _token_kl(
    task: Any, batch_size: int | None = None, temperature: float = 1.0
) -> tuple[np.ndarray, np.ndarray, list[list[int]], list[int], np.ndarray]:
    """The N + 1 passes. Returns ``(kl, base_logits_rows, sentences, answer, keep)``: ``kl[i, k]``
    = KL(p_base ‖ p_masked_i) of the next-token distribution at sequence position ``keep[k]``
    (every position from the one predicting the trace's first token to the one predicting the
    answer's last), the base logits at ``keep``, each sentence's token positions and the answer's.
    Counts N + 1 forward passes and one batch per model call on ``task.meter``. Memory: the base
    logits plus one batch of logits (each pass's KL is taken as its batch comes back), so a
    2,048-token trace does not hold N + 1 full-vocabulary logit tables at once."""
    lm = task.lm
    model = getattr(lm, "model", None)
    if model is None or not hasattr(lm, "_prompt_offsets"):
        raise InputError(
            "suppression needs a local LanguageModel (attribkit.models.load(...)) whose "
            f"attention it can mask; got {type(lm).__name__}"
        )
    ids, sentences, answer = _sequence(task)
    window = getattr(lm, "max_positions", None)
    if window and len(ids) > window:
        raise InputError(
            f"the prompt and answer take {len(ids)} tokens but the model's window is {window}; "
            f"cut the trace (trace.head(n) keeps its first n sentences) by about "
            f"{len(ids) - window} tokens"
        )
    n, t = len(sentences), len(ids)
    first = sentences[0][0]
    keep = np.arange(first - 1, t - 1)
    dev, dtype = lm.device, lm.dtype if lm.dtype.is_floating_point else torch.float32
    low = torch.finfo(dtype).min
    causal = torch.full((t, t), low, dtype=dtype, device=dev).triu(1)
    x = torch.tensor([ids], dtype=torch.long, device=dev)
    keep_t = torch.as_tensor(keep, device=dev)
    size = max(1, int(batch_size or getattr(task, "batch_size", 8) or 8))
    meter = task.meter.cost
    base: torch.Tensor | None = None
    kls: list[torch.Tensor] = []  # one KL row per masked pass; logits are dropped per chunk
    order: list[int | None] = [None, *range(n)]  # None: the unmasked pass
    with torch.no_grad():
        for start in range(0, n + 1, size):
            chunk = order[start : start + size]
            mask = causal.expand(len(chunk), 1, t, t).clone()
            for b, i in enumerate(chunk):
                if i is not None:
                    mask[b, 0, :, sentences[i]] = low
            out = model(
                input_ids=x.expand(len(chunk), t),
                attention_mask=mask,
                logits_to_keep=keep_t,
                use_cache=False,
            )
            meter.forward_passes += len(chunk)
            meter.batches += 1
            logits = out.logits
            if not torch.isfinite(logits).all():
                raise ScorerError(
                    "the model returned non-finite logits; check the model weights and dtype "
                    "(float16 on CPU can overflow)"
                )
            if base is None:
                base, logits = logits[0], logits[1:]
            kls.extend(_kl(base, r, temperature) for r in logits.unbind(0))
    assert base is not None
    kl = torch.stack(kls)
    return kl.cpu().numpy().astype(float), base.float().cpu().numpy(), sentences, answer, keep


def suppression(
    task: Any, *, batch_size: int | None = None, temperature: float = 1.0
) -> Attribution:
    """Thought Anchors' attention suppression over the sentences of a :class:`ReasoningTask`
    (Bogdan, Macar, Nanda & Conmy, 'Thought Anchors: Which LLM Reasoning Steps Matter?', 2025).

    The sequence is the task's full raw prompt (template with the problem and all sentences,
    then the answer cue) followed by the answer, teacher forced. One unmasked pass, and for each
    sentence i one pass where no query in any layer or head may attend to sentence i's tokens
    (a 4-D additive mask, see the module docstring; the problem, the template, the whitespace
    between sentences, the cue and the answer are never masked). For every later sentence
    j > i, ``M[j][i]`` is the mean over j's tokens of KL(p_base ‖ p_masked) of the next-token
    distribution that predicts the token (softmax of logits / ``temperature``).

    Returns an Attribution over the N sentences whose score for sentence i is the mean of
    ``M[j][i]`` over j > i (NaN, i.e. unscored, for the last sentence: it has no later one), with
    extras ``matrix`` (N × N lists, ``M[j][i]``, None where j ≤ i so that it survives JSON:
    ``np.array(matrix, dtype=float)`` has NaN there), ``distance_controlled`` (per sentence
    i: the mean over j > i of ``M[j][i] − mu[j − i]``, ``mu[d]`` the mean of all entries at
    distance d; so a sentence scores above 0 when it is used more than sentences usually are at
    the same distance; None for the last sentence) and ``answer_kl`` (per sentence: the mean KL
    over the answer's tokens when it is suppressed).

    Differences from the authors' code, on purpose: plain mean KL at temperature 1 by default
    (they use temperature 0.6, top-p 0.9999 supports and log(KL + 1e-9)), the full vocabulary,
    and a 4-D mask instead of patched attention modules.

    Costs N + 1 forward passes over the whole sequence, ``batch_size`` (default the task's) per
    model call. Raises InputError for a one-sentence trace or a sequence longer than the model's
    window, ScorerError when the model returns non-finite logits.
    """
    check_units(task)
    if not temperature > 0:
        raise InputError(f"temperature must be > 0, got {temperature}")
    with measure(task.meter) as cost:
        kl, _, sentences, answer, keep = _token_kl(task, batch_size, temperature)
    n = len(sentences)
    col = {int(p): k for k, p in enumerate(keep)}  # sequence position → row of kl
    m = np.full((n, n), np.nan)
    for j in range(n):
        cols = [col[p - 1] for p in sentences[j]]
        for i in range(j):
            m[j, i] = float(kl[i, cols].mean())
    answer_kl = [float(kl[i, [col[p - 1] for p in answer]].mean()) for i in range(n)]
    scores = np.array([np.nanmean(m[i + 1 :, i]) if i < n - 1 else np.nan for i in range(n)])
    dist = np.subtract.outer(np.arange(n), np.arange(n))
    mu = {d: float(np.nanmean(m[dist == d])) for d in range(1, n)}
    resid = np.where(dist > 0, m - np.vectorize(lambda d: mu.get(d, np.nan))(dist), np.nan)
    controlled = [float(np.nanmean(resid[i + 1 :, i])) if i < n - 1 else None for i in range(n)]
    params = {"batch_size": batch_size, "temperature": temperature}
    return task.result(
        scores,
        "suppression",
        params,
        cost,
        matrix=[[None if np.isnan(v) else float(v) for v in row] for row in m],
        distance_controlled=controlled,
        answer_kl=answer_kl,
    )
