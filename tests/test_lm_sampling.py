"""Sampling in the language-model adapters: ``generate(temperature=, top_p=, seed=, n=, prefill=)``
on the local :class:`LanguageModel` (tiny random Llama; SmolLM2 under ``-m model``) and on
:class:`OpenAICompatibleLM` (the loopback completions server of ``test_adapters``)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from attribkit.core.errors import InputError, ScorerError
from attribkit.models.http_lm import OpenAICompatibleLM
from attribkit.models.lm import LanguageModel
from test_adapters import serve

PROMPT = "Where did the cat sit?"
RAW = "The capital of France is"
HOT = 2.0  # the tiny random model is peaked: at temperature 1 most samples repeat one token


class _Spy:
    """Calls through to ``model.generate`` and records each call's inputs and output ids."""

    def __init__(self, lm: LanguageModel) -> None:
        self.inner = lm.model.generate
        self.calls: list[tuple[torch.Tensor, torch.Tensor, dict[str, Any]]] = []

    def __call__(self, input_ids: torch.Tensor, **kw: Any) -> torch.Tensor:
        out = self.inner(input_ids=input_ids, **kw)
        self.calls.append((input_ids, out, kw))
        return out


@pytest.fixture
def spy(tiny_lm, monkeypatch) -> _Spy:
    s = _Spy(tiny_lm)
    monkeypatch.setattr(tiny_lm.model, "generate", s)
    return s


def _greedy_reference(lm: LanguageModel, prompt: str, chat: bool, max_new: int) -> str:
    """What ``generate`` did before sampling existed (one greedy HF call, stripped text)."""
    ids = torch.tensor([lm._prompt_ids(prompt, chat)])
    out = lm.model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new,
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        eos_token_id=lm.stop_ids,
        pad_token_id=lm.pad_id,
    )
    return str(lm.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)).strip()


# ----------------------------------------------------------------------------- local: greedy


def test_greedy_default_unchanged(tiny_lm):
    for prompt, chat in [(PROMPT, True), (RAW, False)]:
        want = _greedy_reference(tiny_lm, prompt, chat, 12)
        before = tiny_lm.cost.copy()
        got = tiny_lm.generate(prompt, max_new_tokens=12, chat=chat)
        spent = tiny_lm.cost - before
        assert got == want == tiny_lm.generate(prompt, 12, chat, temperature=0.0)
        assert spent.forward_passes == spent.batches == spent.generated_tokens == 12
    assert tiny_lm.generate(RAW, 4, chat=False) == "is is is is"  # pinned before this change
    # top_p and seed do not matter at temperature 0; n > 1 gives n copies from one run
    assert tiny_lm.generate(RAW, 4, chat=False, top_p=0.5, seed=3) == "is is is is"
    before = tiny_lm.cost.copy()
    assert tiny_lm.generate(RAW, 4, chat=False, n=3) == ["is is is is"] * 3
    spent = tiny_lm.cost - before
    assert spent.batches == spent.forward_passes == spent.generated_tokens == 4


def test_tiny_top_p_keeps_only_the_top_token(tiny_lm):
    # a nucleus smaller than the top token's probability leaves only the greedy choice
    want = tiny_lm.generate(PROMPT, 8)
    assert tiny_lm.generate(PROMPT, 8, temperature=HOT, top_p=1e-6, seed=0, n=3) == [want] * 3


# ----------------------------------------------------------------------------- local: sampling


def test_seeded_samples_reproducible_and_varied(tiny_lm):
    a = tiny_lm.generate(PROMPT, 12, temperature=HOT, seed=1, n=4)
    assert isinstance(a, list) and len(a) == 4 and all(isinstance(t, str) for t in a)
    assert tiny_lm.generate(PROMPT, 12, temperature=HOT, seed=1, n=4) == a
    assert len(set(a)) > 1  # the n samples differ from one another
    b = tiny_lm.generate(PROMPT, 12, temperature=HOT, seed=2, n=4)
    assert b != a
    one = tiny_lm.generate(PROMPT, 12, temperature=HOT, seed=1)
    assert isinstance(one, str)
    assert tiny_lm.generate(PROMPT, 12, temperature=HOT, seed=1) == one


def test_seeded_call_leaves_global_rng_alone(tiny_lm):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    expected = torch.rand(3)
    torch.set_rng_state(state)
    tiny_lm.generate(PROMPT, 6, temperature=HOT, seed=7, n=2)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(torch.rand(3), expected)
    # seed=None draws from the global RNG, so torch.manual_seed makes it reproducible too
    torch.manual_seed(5)
    a = tiny_lm.generate(PROMPT, 12, temperature=HOT, n=4)
    torch.manual_seed(5)
    assert tiny_lm.generate(PROMPT, 12, temperature=HOT, n=4) == a


def test_n_samples_in_one_batched_call(tiny_lm, spy):
    # Calls are counted twice: model.generate calls (the spy) and model forward calls (a hook,
    # one per decoding step, each on all n rows) against cost.batches / cost.forward_passes.
    rows: list[int] = []

    def hook(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        x = kwargs.get("input_ids", args[0] if args else None)
        rows.append(int(x.shape[0]))

    handle = tiny_lm.model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        before = tiny_lm.cost.copy()
        out = tiny_lm.generate(PROMPT, 10, temperature=HOT, seed=0, n=4)
        spent = tiny_lm.cost - before
    finally:
        handle.remove()
    assert len(out) == 4 and len(spy.calls) == 1
    assert spy.calls[0][2]["num_return_sequences"] == 4 and spy.calls[0][0].shape[0] == 1
    assert rows == [4] * len(rows) and spent.batches == len(rows) == 10
    assert spent.forward_passes == 4 * len(rows)
    assert spent.generated_tokens == 40  # no row stopped early here


def test_generated_tokens_exclude_padding(tiny_lm, monkeypatch):
    # A token the model samples often is made a stop token, so rows end at different steps and
    # the batch is padded after them; only tokens up to each row's stop token count.
    lm = LanguageModel(tiny_lm.model, tiny_lm.tokenizer, name="tiny-stop")
    stop = 94
    lm.stop_ids = [*lm.stop_ids, stop]
    spy = _Spy(lm)
    monkeypatch.setattr(lm.model, "generate", spy)
    out = lm.generate(PROMPT, 12, temperature=HOT, seed=0, n=8)
    ((inputs, ids, _),) = spy.calls
    new = ids[:, inputs.shape[1] :].tolist()
    lengths = [next((i + 1 for i, t in enumerate(r) if t in lm.stop_ids), len(r)) for r in new]
    assert len(set(lengths)) > 1 and min(lengths) < len(new[0])  # some rows really were padded
    for row, k in zip(new, lengths, strict=True):
        assert all(t == lm.pad_id for t in row[k:])
    assert lm.cost.generated_tokens == sum(lengths) < 8 * len(new[0])
    assert lm.cost.batches == len(new[0]) and lm.cost.forward_passes == 8 * len(new[0])
    assert lm.tokens_processed == 8 * inputs.shape[1] + sum(lengths)
    texts = [
        lm.tokenizer.decode(r[:k], skip_special_tokens=True).strip()
        for r, k in zip(new, lengths, strict=True)
    ]
    assert out == texts


def test_prefill_starts_the_answer_and_is_not_returned(tiny_lm, spy):
    prefill = "The answer is"
    pre_ids = tiny_lm.tokenizer(prefill, add_special_tokens=False)["input_ids"]
    for chat in (True, False):
        out = tiny_lm.generate(PROMPT, 6, chat=chat, prefill=prefill)
        inputs, ids, _ = spy.calls[-1]
        want_in = tiny_lm._prompt_ids(PROMPT, chat) + pre_ids
        assert inputs[0].tolist() == want_in  # after the assistant header / the raw prompt
        full = tiny_lm.tokenizer.decode(
            ids[0, len(want_in) - len(pre_ids) :], skip_special_tokens=True
        )
        assert full.startswith(prefill) and full[len(prefill) :].rstrip() == out
        assert not out.startswith(prefill)
    # the same holds for every sample
    outs = tiny_lm.generate(PROMPT, 6, temperature=HOT, seed=0, n=3, prefill=prefill)
    assert len(outs) == 3 and spy.calls[-1][0][0].tolist()[-len(pre_ids) :] == pre_ids


def test_bad_arguments(tiny_lm):
    bad = [
        {"temperature": -0.1},
        {"temperature": float("nan")},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"n": 0},
        {"n": 2.0},
        {"seed": "1"},
        {"max_new_tokens": 0},
        {"prefill": 3},
    ]
    for kw in bad:
        with pytest.raises(InputError, match=next(iter(kw))):
            tiny_lm.generate(PROMPT, **kw)


# ----------------------------------------------------------------------------- HTTP adapter


def test_http_sampling_request_and_choices(tiny_lm):
    with serve(tiny_lm, delay=0.0) as server:
        chat_format = tiny_lm.format_prompt("{prompt}")  # the tiny model's chat template
        lm = OpenAICompatibleLM(server.url, "tiny", prompt_format=chat_format)
        greedy = lm.generate(PROMPT, 4)
        body = server.requests[-1]
        assert isinstance(greedy, str) and body["temperature"] == 0
        assert not {"n", "seed", "top_p"} & set(body)  # the greedy request is as before
        a = lm.generate(PROMPT, 5, temperature=HOT, top_p=0.9, seed=3, n=3)
        body = server.requests[-1]
        assert (body["n"], body["seed"], body["temperature"], body["top_p"]) == (3, 3, HOT, 0.9)
        # the server lists choices in reverse; the answers come back in index order
        assert a == server.generated[-3:] and len(a) == 3
        assert lm.generate(PROMPT, 5, temperature=HOT, top_p=0.9, seed=3, n=3) == a
        assert lm.generate(PROMPT, 5, temperature=HOT, top_p=0.9, seed=4, n=3) != a
        out = lm.generate(PROMPT, 5, prefill="The answer:")
        assert server.requests[-1]["prompt"] == chat_format.format(prompt=PROMPT) + "The answer:"
        assert out == server.generated[-1]  # the continuation only
        assert lm.cost.generated_tokens == 4 + 3 * 3 * 5 + 5  # usage.completion_tokens
        assert lm.cost.batches == 5 and lm.cost.forward_passes == lm.cost.generated_tokens
        with pytest.raises(InputError, match="top_p"):
            lm.generate(PROMPT, top_p=0)
    with serve(tiny_lm, mode="error500", delay=0.0) as server:
        lm = OpenAICompatibleLM(server.url, "tiny", api_key="sk-very-secret")
        with pytest.raises(ScorerError, match="HTTP 500") as e:
            lm.generate(PROMPT, 3, temperature=1.0, n=2, seed=1)
        assert "sk-very-secret" not in str(e.value)


# ----------------------------------------------------------------------------- SmolLM2


@pytest.mark.model
def test_smollm2_seeded_samples_reproducible(smollm2):
    prompt = "Name a fruit."
    state = torch.get_rng_state()
    a = smollm2.generate(prompt, 12, temperature=0.6, seed=11, n=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert isinstance(a, list) and len(a) == 3 and all(t.strip() for t in a)
    assert smollm2.generate(prompt, 12, temperature=0.6, seed=11, n=3) == a
