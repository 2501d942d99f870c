"""LanguageModel: chat formatting, batched log-probabilities, generation, gradient scorer, cost."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from attribkit.core.errors import InputError
from attribkit.core.units import TextUnits
from attribkit.models.lm import LanguageModel

SHORT = "Hi"
LONG = (
    "Context: the cat sat on the mat. The dog ran in the park. Alice went to the market and "
    "bought apples, pears and bread. The quick brown fox jumps over the lazy dog.\n\n"
    "Query: where did the cat sit?"
)
MID = "What is the capital of France?"


def reference_logprobs(lm: LanguageModel, prompt: str, response: str, chat: bool = True):
    """Independent computation: one unpadded sequence, full log-softmax, manual gather."""
    text = lm.format_prompt(prompt) if chat else prompt
    p = lm.tokenizer(text, add_special_tokens=not chat)["input_ids"]
    r = lm.tokenizer(response, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + r])
    with torch.no_grad():
        logits = lm.model(input_ids=ids).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    return np.array([logp[len(p) + k - 1, t].item() for k, t in enumerate(r)])


def test_format_prompt_applies_chat_template(tiny_lm):
    out = tiny_lm.format_prompt("hello")
    assert out == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    sys_out = tiny_lm.format_prompt("hello", system="be brief")
    assert sys_out.startswith("<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhello")


def test_format_prompt_without_template_is_identity(tiny_lm):
    tok = copy.deepcopy(tiny_lm.tokenizer)
    tok.chat_template = None
    lm = LanguageModel(tiny_lm.model, tok, name="plain")
    assert lm.format_prompt("hello") == "hello"
    assert not lm.has_chat_template


def test_token_logprobs_match_unpadded_reference(tiny_lm):
    prompts = [SHORT, LONG, MID]
    responses = [" on the mat.", "Paris", " The cat sat on the mat, said Alice."]
    got = tiny_lm.token_logprobs(prompts, responses)
    for p, r, g in zip(prompts, responses, got, strict=True):
        ref = reference_logprobs(tiny_lm, p, r)
        assert g.shape == ref.shape
        np.testing.assert_allclose(g, ref, atol=1e-4)
    # chat=False uses the raw prompt
    got = tiny_lm.token_logprobs(LONG, " on the mat.", chat=False)[0]
    np.testing.assert_allclose(
        got, reference_logprobs(tiny_lm, LONG, " on the mat.", False), atol=1e-4
    )


def test_batched_equals_one_at_a_time(tiny_lm):
    prompts = [SHORT, LONG, MID, LONG[:40], "a", LONG + " " + LONG]
    responses = ["x", " on the mat.", "Paris is the capital.", "b", "the dog ran", "mat"]
    batched = tiny_lm.token_logprobs(prompts, responses, batch_size=8)
    single = [
        tiny_lm.token_logprobs(p, r, batch_size=1)[0]
        for p, r in zip(prompts, responses, strict=True)
    ]
    for b, s in zip(batched, single, strict=True):
        np.testing.assert_allclose(b, s, atol=1e-4)
    sums = tiny_lm.logprob(prompts, responses, batch_size=3)
    np.testing.assert_allclose(sums, [s.sum() for s in single], atol=1e-4)


def test_one_response_broadcasts_to_many_prompts(tiny_lm):
    prompts = [LONG, SHORT, MID]
    out = tiny_lm.logprob(prompts, " on the mat.")
    assert out.shape == (3,)
    np.testing.assert_allclose(
        out, [tiny_lm.logprob(p, " on the mat.")[0] for p in prompts], atol=1e-4
    )
    assert not np.allclose(out[0], out[1])  # the prompt matters
    with pytest.raises(InputError, match="2 prompts and 3 responses"):
        tiny_lm.logprob(["a", "b"], ["x", "y", "z"])


def test_empty_response_is_an_input_error(tiny_lm):
    with pytest.raises(InputError, match="response is empty"):
        tiny_lm.logprob(MID, "")


def test_response_with_zero_tokens_is_an_input_error():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1, "b": 2}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]", pad_token="[UNK]")
    cfg = LlamaConfig(
        vocab_size=3,
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    lm = LanguageModel(LlamaForCausalLM(cfg), tok, name="words")
    with pytest.raises(InputError, match="tokenizes to zero tokens"):
        lm.logprob("a b", "   ")
    assert np.isfinite(lm.logprob("a b", "a")).all()


def test_cost_counts_sequences_and_batches(tiny_lm):
    before = tiny_lm.cost.copy()
    tiny_lm.token_logprobs([SHORT, LONG, MID, "a", "b"], "x", batch_size=2)
    spent = tiny_lm.cost - before
    assert (spent.forward_passes, spent.batches, spent.backward_passes) == (5, 3, 0)
    assert spent.seconds > 0
    before = tiny_lm.cost.copy()
    tiny_lm.generate(MID, max_new_tokens=3)
    spent = tiny_lm.cost - before
    assert 1 <= spent.forward_passes <= 3 and spent.batches == spent.forward_passes


def test_generate_returns_new_text_only(tiny_lm):
    before = tiny_lm.cost.copy()
    out = tiny_lm.generate(MID, max_new_tokens=6)
    spent = tiny_lm.cost - before  # one pass per generated token, counted as generated tokens
    assert 1 <= spent.generated_tokens <= 6 and spent.forward_passes == spent.generated_tokens
    assert isinstance(out, str)
    assert "<|im_start|>" not in out and "user" not in out[:5]


def test_repr_and_name(tiny_lm):
    assert tiny_lm.name == "tiny"
    r = repr(tiny_lm)
    assert "tiny" in r and "LlamaForCausalLM" in r and "2 layers" in r


# ---------------------------------------------------------------------------- gradient scorer


def test_gradient_scorer_token_units(tiny_lm):
    prompt, response = "the cat sat on the mat", " Paris"
    gs = tiny_lm.gradient_scorer(prompt, response)
    text = tiny_lm.format_prompt(prompt)
    n_prompt = len(tiny_lm.tokenizer(text, add_special_tokens=False)["input_ids"])
    n_resp = len(tiny_lm.tokenizer(response, add_special_tokens=False)["input_ids"])
    assert gs.x.shape == (n_prompt + n_resp, 32)
    assert gs.unit_index.shape == gs.x.shape
    idx = gs.unit_index[:, 0]
    # units are the prompt's tokens, in order, and they rebuild the prompt exactly
    assert "".join(u.label for u in gs.units) == prompt
    assert idx.max().item() == gs.n_units - 1
    assert (idx[-n_resp:] == -1).all()  # response tokens
    assert (idx[:3] == -1).all()  # '<|im_start|>', 'user', '\n' of the template
    inside = idx[idx >= 0]
    assert torch.equal(inside, torch.arange(len(inside)))  # one token per unit here
    for u in gs.units:
        assert prompt[u.start : u.end] == u.label


def test_gradient_scorer_forward_equals_logprob(tiny_lm):
    prompt, response = LONG, " on the mat."
    gs = tiny_lm.gradient_scorer(prompt, response)
    v = gs.value(gs.x[None])
    np.testing.assert_allclose(v, tiny_lm.logprob(prompt, response), atol=1e-4)


def test_gradient_scorer_baselines(tiny_lm):
    gs = tiny_lm.gradient_scorer(MID, "Paris")
    inside = gs.unit_index[:, 0] >= 0
    assert (gs.baseline[inside] == 0).all()
    assert torch.equal(gs.baseline[~inside], gs.x[~inside])  # template/response keep real values
    gp = tiny_lm.gradient_scorer(MID, "Paris", baseline="pad")
    pad = tiny_lm.model.get_input_embeddings().weight[tiny_lm.pad_id].detach()
    assert torch.allclose(gp.baseline[inside], pad.expand(int(inside.sum()), -1))
    with pytest.raises(InputError, match="unknown baseline"):
        tiny_lm.gradient_scorer(MID, "Paris", baseline="mean")


def test_gradient_scorer_maps_tokens_to_given_units(tiny_lm):
    context = "The cat sat on the mat. The dog ran in the park."
    prompt = f"Context: {context}\n\nQuery: where did the cat sit?"
    units = TextUnits.sentences(context)
    assert len(units) == 2
    gs = tiny_lm.gradient_scorer(prompt, " on the mat", units=units)
    assert gs.units is units
    text = tiny_lm.format_prompt(prompt)
    enc = tiny_lm.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    c0 = text.index(context)
    idx = gs.unit_index[:, 0].tolist()
    for k, (s, e) in enumerate(enc["offset_mapping"]):
        mid = (s + e) / 2 - c0
        if mid < 0 or mid > len(context):
            assert idx[k] == -1, (k, text[s:e])  # "Context:", the query, template tokens
        elif units[0].start <= mid < units[0].end:
            assert idx[k] == 0, (k, text[s:e])
        elif units[1].start <= mid < units[1].end:
            assert idx[k] == 1, (k, text[s:e])
    assert set(idx) == {-1, 0, 1}
    with pytest.raises(InputError, match="does not occur in the prompt"):
        tiny_lm.gradient_scorer(prompt, "x", units=TextUnits.words("zebra crossing"))


def test_gradient_call_counts_forward_and_backward(tiny_lm):
    gs = tiny_lm.gradient_scorer(MID, "Paris", batch_size=2)
    alphas = torch.linspace(0, 1, 5)[:, None, None]
    xb = gs.baseline + alphas * (gs.x - gs.baseline)
    vals, grads = gs.gradient(xb)
    assert vals.shape == (5,) and grads.shape == xb.shape
    assert (gs.cost.forward_passes, gs.cost.backward_passes, gs.cost.batches) == (5, 5, 3)
    inside = gs.unit_index >= 0
    assert grads[:, inside[:, 0]].abs().sum() > 0
    np.testing.assert_allclose(vals[-1], tiny_lm.logprob(MID, "Paris")[0], atol=1e-4)
    assert gs.to_units(grads[-1]).shape == (gs.n_units,)


# ---------------------------------------------------------------------------- real model


@pytest.mark.model
def test_smollm2_generates_paris(smollm2):
    out = smollm2.generate("What is the capital of France?", max_new_tokens=20)
    assert "Paris" in out
    assert "<|im_end|>" not in out and "assistant" not in out


@pytest.mark.model
def test_smollm2_batched_equals_single(smollm2):
    prompts = ["Hi", LONG, "What is the capital of France?"]
    response = "The capital of France is Paris."
    batched = smollm2.token_logprobs(prompts, response, batch_size=8)
    single = [smollm2.token_logprobs(p, response, batch_size=1)[0] for p in prompts]
    for b, s in zip(batched, single, strict=True):
        np.testing.assert_allclose(b, s, atol=1e-4)
    # the answer is far more likely after the question than after "Hi"
    assert batched[2].sum() > batched[0].sum() + 5


@pytest.mark.model
def test_smollm2_gradient_forward_equals_logprob(smollm2):
    prompt, response = "What is the capital of France?", "Paris"
    gs = smollm2.gradient_scorer(prompt, response)
    assert "".join(gs.units.labels) == prompt
    np.testing.assert_allclose(gs.value(gs.x[None]), smollm2.logprob(prompt, response), atol=1e-4)


def test_next_token_logprobs_match_token_logprobs_in_any_batch_shape(tiny_lm) -> None:
    prompts = ["the cat sat", "a", "the dog ran far away"]
    before = tiny_lm.cost.copy()
    rows = tiny_lm.next_token_logprobs(prompts, chat=False, batch_size=2)
    spent = tiny_lm.cost - before
    assert rows.shape[0] == 3 and spent.forward_passes == 3 and spent.batches == 2
    assert np.allclose(np.exp(rows).sum(axis=1), 1.0, atol=1e-4)
    alone = np.stack([tiny_lm.next_token_logprobs([p], chat=False)[0] for p in prompts])
    assert np.allclose(rows, alone, atol=1e-4)
    for p, row in zip(prompts, rows, strict=True):
        tok = tiny_lm.tokenizer.decode([int(row.argmax())])
        want = tiny_lm.token_logprobs([p], [tok], chat=False)[0]
        if len(want) == 1:  # the decoded token re-encodes to itself
            assert abs(float(want[0]) - float(row.max())) < 1e-4
    with pytest.raises(InputError, match="list of strings"):
        tiny_lm.next_token_logprobs("one string")
