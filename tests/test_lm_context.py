"""LanguageModel for context traceback: prefix key-value reuse, token spans, window size and
attention rows recomputed from the attention inputs (compared with eager ``output_attentions``)."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch

from attribkit.core.errors import InputError
from attribkit.models.lm import LanguageModel

NAMES = ["Ardo", "Belin", "Corva", "Dusan", "Elko", "Farin", "Gorin", "Halvi", "Iskor", "Jarno"]


def loo_case(n: int = 10) -> tuple[str, list[str], str]:
    """A needle-style context of n same-shape sentences; the full prompt and the n prompts that
    each leave one sentence out; the forced response."""
    sents = [f"The access code of {NAMES[i % 10]} is {100 + 7 * i}-X{10 + i}." for i in range(n)]
    query = f"\n\nQuery: What is the access code of {NAMES[3]}?"
    full = "Context: " + " ".join(sents) + query
    masked = [
        "Context: " + " ".join(s for j, s in enumerate(sents) if j != k) + query for k in range(n)
    ]
    return full, masked, f"The access code of {NAMES[3]} is 121-X13."


def eager_rows(model, ids: list[int], n_prompt: int, heads) -> np.ndarray:
    """Independent reference: output_attentions from an eager copy of the model."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), output_attentions=True, use_cache=False)
    t = len(ids)
    return np.stack(
        [out.attentions[layer][0, h, n_prompt - 1 : t - 1, :n_prompt].numpy() for layer, h in heads]
    )


def all_heads(lm: LanguageModel) -> list[tuple[int, int]]:
    return [(layer, h) for layer in range(lm.n_layers) for h in range(lm.n_heads)]


# ---------------------------------------------------------------------------- prefix reuse


def test_reuse_prefix_equals_full_passes_for_leave_one_out(tiny_lm):
    full, masked, resp = loo_case(10)
    plain = tiny_lm.token_logprobs(masked, resp)
    n_full = tiny_lm.count_tokens(full, resp)
    before, tok0 = tiny_lm.cost.copy(), tiny_lm.tokens_processed
    ref = tiny_lm.set_reference(full, resp)  # returns the full prompt's values
    reused = tiny_lm.token_logprobs(masked, resp, reuse_prefix=True)
    spent = tiny_lm.cost - before
    tokens = tiny_lm.tokens_processed - tok0
    np.testing.assert_allclose(ref, tiny_lm.token_logprobs(full, resp)[0], atol=1e-4)
    assert tiny_lm.reference_ids == tiny_lm._prompt_ids(full, True) + tiny_lm._response_ids(resp)
    for a, b in zip(plain, reused, strict=True):
        np.testing.assert_allclose(b, a, atol=1e-4)
    # n + 1 passes (reference + one per masked prompt); rows with a cache run one at a time
    assert spent.forward_passes == 11
    assert n_full < tokens < 0.75 * 11 * n_full  # only the suffixes were recomputed
    # the reference is untouched: same ids, same cache length, same results again
    assert all(k.shape[-2] == n_full for k, _ in tiny_lm._reference.kv)
    again = tiny_lm.logprob(masked, resp, reuse_prefix=True)
    np.testing.assert_allclose(again, [a.sum() for a in plain], atol=1e-4)
    tiny_lm.clear_reference()
    assert tiny_lm.reference_ids is None


def test_reuse_prefix_sets_the_reference_from_the_first_pair(tiny_lm):
    full, masked, resp = loo_case(6)
    tiny_lm.clear_reference()
    plain = tiny_lm.logprob([full, *masked], resp)
    before = tiny_lm.cost.copy()
    reused = tiny_lm.logprob([full, *masked], resp, reuse_prefix=True)
    np.testing.assert_allclose(reused, plain, atol=1e-4)
    assert (tiny_lm.cost - before).forward_passes == 7
    assert tiny_lm.reference_ids == tiny_lm._prompt_ids(full, True) + tiny_lm._response_ids(resp)
    # another prompt family: nothing can use the reference, so its first pair replaces it
    other = [f"Summarise: {m}" for m in masked[:3]]
    np.testing.assert_allclose(
        tiny_lm.logprob(other, resp, reuse_prefix=True), tiny_lm.logprob(other, resp), atol=1e-4
    )
    assert tiny_lm.reference_ids[: len(tiny_lm._prompt_ids(other[0], True))] == (
        tiny_lm._prompt_ids(other[0], True)
    )
    tiny_lm.clear_reference()


def test_reuse_prefix_mixes_cached_and_batched_rows(tiny_lm):
    full, masked, resp = loo_case(8)
    prompts = [masked[3], "Hi", masked[0], full, "What is the capital of France?", masked[7]]
    responses = [resp, "x", " on the mat.", resp, "Paris", "The code is 170-X17."]
    plain = tiny_lm.token_logprobs(prompts, responses, batch_size=2)
    tiny_lm.set_reference(full)  # the prompt only
    before, tok0 = tiny_lm.cost.copy(), tiny_lm.tokens_processed
    reused = tiny_lm.token_logprobs(prompts, responses, batch_size=2, reuse_prefix=True)
    for a, b in zip(plain, reused, strict=True):
        np.testing.assert_allclose(b, a, atol=1e-4)
    spent = tiny_lm.cost - before
    # reused: masked[3], full (capped at len(prompt) - 1), masked[7]; batched: the other three
    assert (spent.forward_passes, spent.batches) == (6, 3 + 2)
    n_tokens = sum(tiny_lm.count_tokens(p, r) for p, r in zip(prompts, responses, strict=True))
    assert tiny_lm.tokens_processed - tok0 < n_tokens
    tiny_lm.clear_reference()


def test_reuse_prefix_needs_a_long_enough_shared_prefix(tiny_lm):
    tiny_lm.set_reference("Hi there")
    prompts, resp = ["Hi you", "Hi all"], " hello"
    tok0 = tiny_lm.tokens_processed
    out = tiny_lm.logprob(prompts, resp, reuse_prefix=True)
    # shared prefix < reuse_min_prefix: full passes (the first pair became the reference)
    assert tiny_lm.tokens_processed - tok0 == sum(tiny_lm.count_tokens(p, resp) for p in prompts)
    np.testing.assert_allclose(out, tiny_lm.logprob(prompts, resp), atol=1e-4)
    tiny_lm.clear_reference()


def test_one_prompt_many_replies_rebases_a_reference_it_barely_shares(tiny_lm):
    # a judge's pattern: one new prompt, several short replies; the reference (another prompt)
    # shares only the first sentences, so the first reply's pass becomes the new reference
    full, masked, _ = loo_case(8)
    replies = ["Yes", "No", "Maybe not"]
    plain = tiny_lm.token_logprobs(masked[2], replies)
    tiny_lm.set_reference(full)
    before, tok0 = tiny_lm.cost.copy(), tiny_lm.tokens_processed
    got = tiny_lm.token_logprobs(masked[2], replies, reuse_prefix=True)
    for a, b in zip(plain, got, strict=True):
        np.testing.assert_allclose(b, a, atol=1e-4)
    assert (tiny_lm.cost - before).forward_passes == 3
    n_prompt = tiny_lm.count_tokens(masked[2])
    spent = tiny_lm.tokens_processed - tok0
    assert spent < n_prompt + 3 * 8  # one pass over the prompt, then only the replies
    assert tiny_lm.reference_ids[:n_prompt] == tiny_lm.encode_pairs(masked[2], "Yes")[0][0]
    # the same prompt again: the new reference serves every reply, nothing is rerun
    tok0 = tiny_lm.tokens_processed
    tiny_lm.token_logprobs(masked[2], replies, reuse_prefix=True)
    assert tiny_lm.tokens_processed - tok0 < 3 * 8
    tiny_lm.clear_reference()


def test_reuse_prefix_with_raw_prompts(tiny_lm):
    full, masked, resp = loo_case(5)
    tiny_lm.set_reference(full, chat=False)
    out = tiny_lm.logprob(masked, resp, chat=False, reuse_prefix=True)
    np.testing.assert_allclose(out, tiny_lm.logprob(masked, resp, chat=False), atol=1e-4)
    tiny_lm.clear_reference()


def test_tokens_processed_counts_every_model_call(tiny_lm):
    tok0 = tiny_lm.tokens_processed
    tiny_lm.logprob(["Hi", "What is the capital of France?"], "Paris", batch_size=1)
    expected = tiny_lm.count_tokens("Hi", "Paris") + tiny_lm.count_tokens(
        "What is the capital of France?", "Paris"
    )
    assert tiny_lm.tokens_processed - tok0 == expected
    tok0, before = tiny_lm.tokens_processed, tiny_lm.cost.copy()
    tiny_lm.generate("Hi", max_new_tokens=3)
    new = (tiny_lm.cost - before).forward_passes
    assert tiny_lm.tokens_processed - tok0 == tiny_lm.count_tokens("Hi") + new
    tok0, before = tiny_lm.tokens_processed, tiny_lm.cost.copy()
    assert tiny_lm.set_reference("Hi") is None
    tiny_lm.set_reference("Hi", "Paris")
    tok0 += tiny_lm.count_tokens("Hi")
    before.forward_passes += 1
    assert tiny_lm.tokens_processed - tok0 == tiny_lm.count_tokens("Hi", "Paris")
    assert (tiny_lm.cost - before).forward_passes == 1
    tiny_lm.clear_reference()
    gs = tiny_lm.gradient_scorer("Hi", "Paris")
    tok0 = tiny_lm.tokens_processed
    gs.value(torch.stack([gs.x, gs.baseline]))
    assert tiny_lm.tokens_processed - tok0 == 2 * tiny_lm.count_tokens("Hi", "Paris")


# ---------------------------------------------------------------------------- spans and window


@pytest.mark.parametrize(
    "response", [" The capital of France is Paris.", "Héllo  wörld 🙂 x\n\nend", "a"]
)
def test_response_token_spans_follow_the_scored_tokens(tiny_lm, response):
    spans = tiny_lm.response_token_spans(response)
    ids = tiny_lm._response_ids(response)
    assert len(spans) == len(ids) == len(tiny_lm.token_logprobs("Hi", response)[0])
    # in order, and together they cover the response exactly (byte pieces share a character)
    distinct = list(dict.fromkeys(spans))
    assert "".join(response[s:e] for s, e in distinct) == response
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(distinct))
    for (s, e), i in zip(spans, ids, strict=True):
        piece = tiny_lm.tokenizer.decode([i])
        if "\ufffd" not in piece:  # a whole-character token decodes to its own text
            assert piece == response[s:e]


def test_prompt_token_spans_and_counts(tiny_lm):
    prompt = "Context: the cat sat on the mat.\n\nQuery: where did the cat sit?"
    spans = tiny_lm.prompt_token_spans(prompt)
    assert len(spans) == tiny_lm.count_tokens(prompt) == len(tiny_lm._prompt_ids(prompt, True))
    inside = [(s, e) for s, e in spans if s >= 0]
    assert "".join(prompt[s:e] for s, e in dict.fromkeys(inside)) == prompt
    assert spans[:3] == [(-1, -1)] * 3  # '<|im_start|>', 'user', '\n'
    assert spans[-1] == (-1, -1)  # the generation prompt
    raw = tiny_lm.prompt_token_spans(prompt, chat=False)
    assert len(raw) == tiny_lm.count_tokens(prompt, chat=False)
    assert tiny_lm.count_tokens(prompt, " on the mat.") == len(spans) + len(
        tiny_lm.response_token_spans(" on the mat.")
    )
    assert tiny_lm.max_positions == 512


# ---------------------------------------------------------------------------- attention rows


def test_attention_rows_equal_eager_attention(tiny_lm):
    prompt = "Context: the cat sat on the mat. The dog ran in the park.\n\nQuery: where?"
    resp = " on the mat."
    before, tok0 = tiny_lm.cost.copy(), tiny_lm.tokens_processed
    rows, spans = tiny_lm.attention_rows(prompt, resp)
    assert (tiny_lm.cost - before).forward_passes == 1
    ids, r = tiny_lm._prompt_ids(prompt, True), tiny_lm._response_ids(resp)
    assert tiny_lm.tokens_processed - tok0 == len(ids) + len(r)
    assert rows.dtype == np.float32 and rows.shape == (2 * 4, len(r), len(ids))
    assert spans == tiny_lm.prompt_token_spans(prompt)
    eager = copy.deepcopy(tiny_lm.model)
    eager.set_attn_implementation("eager")
    ref = eager_rows(eager, ids + r, len(ids), all_heads(tiny_lm))
    np.testing.assert_allclose(rows, ref, atol=1e-4)
    assert (rows >= 0).all() and (rows.sum(-1) <= 1 + 1e-5).all()
    # a subset, in the order given (repeats allowed), and raw prompts
    heads = [(1, 3), (0, 0), (1, 3)]
    sub, _ = tiny_lm.attention_rows(prompt, resp, heads=heads)
    np.testing.assert_allclose(sub, ref[[7, 0, 7]], atol=1e-6)
    raw, raw_spans = tiny_lm.attention_rows(prompt, resp, heads=heads, chat=False)
    ids = tiny_lm._prompt_ids(prompt, False)
    np.testing.assert_allclose(raw, eager_rows(eager, ids + r, len(ids), heads), atol=1e-4)
    assert len(raw_spans) == len(ids)


def test_attention_rows_only_run_the_layers_needed(tiny_lm):
    calls = []
    handle = tiny_lm.model.model.layers[1].register_forward_hook(lambda *a: calls.append(1))
    try:
        rows, _ = tiny_lm.attention_rows("the cat sat on the mat", " Paris", heads=[(0, 2)])
    finally:
        handle.remove()
    assert calls == [] and rows.shape[0] == 1


def test_attention_rows_rejects_bad_heads(tiny_lm):
    with pytest.raises(InputError, match="out of range"):
        tiny_lm.attention_rows("Hi", "x", heads=[(2, 0)])
    with pytest.raises(InputError, match="out of range"):
        tiny_lm.attention_rows("Hi", "x", heads=[(0, 4)])
    with pytest.raises(InputError, match="'all'"):
        tiny_lm.attention_rows("Hi", "x", heads="some")
    with pytest.raises(InputError, match="empty"):
        tiny_lm.attention_rows("Hi", "x", heads=[])


def _family_model(kind: str, vocab: int):
    import transformers as tr

    torch.manual_seed(0)
    from attribkit.testing import TINY_SHAPE

    common = dict(vocab_size=vocab, **TINY_SHAPE)
    if kind == "mistral":  # sliding window on every layer
        model = tr.MistralForCausalLM(tr.MistralConfig(**common, sliding_window=8))
    elif kind == "qwen2":  # q/k biases; layer 1 uses a sliding window
        cfg = tr.Qwen2Config(
            **common, use_sliding_window=True, sliding_window=8, max_window_layers=1
        )
        model = tr.Qwen2ForCausalLM(cfg)
    else:  # qwen3: per-head q/k norm, explicit head_dim
        model = tr.Qwen3ForCausalLM(tr.Qwen3Config(**common, head_dim=8))
    with torch.no_grad():  # larger weights: peaked, input-dependent attention
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(10)
    return model.eval()


@pytest.mark.parametrize("kind", ["mistral", "qwen2", "qwen3"])
def test_attention_rows_other_llama_like_families(tiny_lm, kind):
    tok = tiny_lm.tokenizer
    model = _family_model(kind, len(tok))
    lm = LanguageModel(model, tok, name=kind)
    prompt = "Context: the cat sat on the mat. The dog ran in the park.\n\nQuery: where?"
    rows, _ = lm.attention_rows(prompt, " on the mat.")
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    ids, r = lm._prompt_ids(prompt, True), lm._response_ids(" on the mat.")
    np.testing.assert_allclose(rows, eager_rows(eager, ids + r, len(ids), all_heads(lm)), atol=1e-4)
    if kind == "mistral":  # the 8-token window: far keys get nothing
        assert (rows[:, :, : len(ids) - 8] == 0).all() and rows[:, 0, -1].min() > 0


def test_attention_rows_need_eager_outside_the_llama_family(tiny_lm):
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = tiny_lm.tokenizer
    cfg = GPT2Config(
        vocab_size=len(tok),
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=128,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    model = GPT2LMHeadModel(cfg).eval()
    lm = LanguageModel(model, tok, name="gpt2")
    assert lm.max_positions == 128
    with pytest.raises(InputError, match=r"GPT2LMHeadModel.*attn_implementation='eager'"):
        lm.attention_rows("the cat sat", " on the mat")
    model.set_attn_implementation("eager")
    rows, spans = lm.attention_rows("the cat sat", " on the mat", heads=[(1, 3), (0, 0)])
    ids, r = lm._prompt_ids("the cat sat", True), lm._response_ids(" on the mat")
    np.testing.assert_allclose(rows, eager_rows(model, ids + r, len(ids), [(1, 3), (0, 0)]))
    assert len(spans) == len(ids)


# ---------------------------------------------------------------------------- real model


@pytest.mark.model
def test_smollm2_reuse_prefix_leave_one_out(smollm2):
    full, masked, resp = loo_case(10)
    plain = smollm2.token_logprobs(masked, resp)
    tok0 = smollm2.tokens_processed
    smollm2.set_reference(full, resp)
    reused = smollm2.token_logprobs(masked, resp, reuse_prefix=True)
    for a, b in zip(plain, reused, strict=True):
        np.testing.assert_allclose(b, a, atol=1e-4)
    assert smollm2.tokens_processed - tok0 < 0.7 * 11 * smollm2.count_tokens(full, resp)
    smollm2.clear_reference()


@pytest.mark.model
def test_smollm2_attention_rows_equal_eager(smollm2):
    full, _, resp = loo_case(4)
    heads = [(8, 0), (18, 6), (0, 8), (29, 1)]
    rows, spans = smollm2.attention_rows(full, resp)
    sub, _ = smollm2.attention_rows(full, resp, heads=heads)
    ids, r = smollm2._prompt_ids(full, True), smollm2._response_ids(resp)
    assert rows.shape == (30 * 9, len(r), len(ids)) and len(spans) == len(ids)
    assert smollm2.model.config._attn_implementation == "sdpa"
    smollm2.model.set_attn_implementation("eager")
    try:
        ref = eager_rows(smollm2.model, ids + r, len(ids), all_heads(smollm2))
    finally:
        smollm2.model.set_attn_implementation("sdpa")
    np.testing.assert_allclose(rows, ref, atol=1e-4)
    np.testing.assert_allclose(sub, ref[[8 * 9 + 0, 18 * 9 + 6, 8, 29 * 9 + 1]], atol=1e-4)


@pytest.mark.model
def test_smollm2_spans_and_window(smollm2):
    resp = "The access code of Dusan is 121-X13. Héllo 🙂!"
    spans = smollm2.response_token_spans(resp)
    assert len(spans) == len(smollm2.token_logprobs("Hi", resp)[0])
    assert "".join(resp[s:e] for s, e in dict.fromkeys(spans)) == resp
    assert smollm2.max_positions == 8192
    prompt = "Context: a b c.\n\nQuery: d?"
    spans = smollm2.prompt_token_spans(prompt)
    assert "".join(prompt[s:e] for s, e in dict.fromkeys(spans) if s >= 0) == prompt
