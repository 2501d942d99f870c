"""The prompt task: seeded label generators, label log-probabilities, prompt evaluation and the
PromptTask's units, fitness, cache and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

import attribkit
from attribkit.core.errors import InputError
from attribkit.tasks.prompt import (
    PromptTask,
    evaluate_prompt,
    label_logprobs,
    label_margins,
)
from attribkit.tasks.prompt_cases import (
    COIN_VERBALIZERS,
    SENTIMENT_VERBALIZERS,
    LabeledExample,
    but_sentiment,
    coin_flip,
)

TEMPLATE = "Review: {input}\nSentiment:"


# ---------------------------------------------------------------------------------- generators


def test_but_sentiment_is_seeded_and_labelled_by_the_clause_after_but():
    a, b = but_sentiment(40, seed=3), but_sentiment(40, seed=3)
    assert a == b
    assert but_sentiment(40, seed=4) != a
    assert but_sentiment(10, seed=3) == a[:10]  # more items extend the list
    pos = {"lovely", "excellent", "wonderful", "superb", "delightful", "great", "fantastic"}
    pos |= {"perfect", "charming", "amazing"}
    for ex in a:
        first, second = ex.text.split(", but ")
        word = second.rstrip(".").split()[-1]
        assert ex.label == ("positive" if word in pos else "negative")
        first_word = first.split()[-1]
        assert ex.meta["first_label"] == ("positive" if first_word in pos else "negative")
        assert ex.meta["contrast"] == (ex.meta["first_label"] != ex.label)
    assert [ex.label for ex in a[:4]] == ["negative", "positive", "negative", "positive"]
    share = np.mean([ex.meta["contrast"] for ex in but_sentiment(400, seed=1, contrast=0.7)])
    assert 0.6 < share < 0.8
    assert not any(ex.meta["contrast"] for ex in but_sentiment(30, contrast=0.0))


def test_coin_flip_is_seeded_and_its_answer_is_the_parity_of_flips():
    a = coin_flip(60, seed=2)
    assert a == coin_flip(60, seed=2) and a != coin_flip(60, seed=3)
    for ex in a:
        flips = ex.text.count(" flips the coin.")
        assert flips == ex.meta["n_flips"]
        assert 1 <= len(ex.meta["names"]) <= 4
        assert ex.label == ("yes" if flips % 2 == 0 else "no")
        assert ex.text.startswith("A coin is heads up.")
        assert ex.text.endswith("Is the coin still heads up?")
    assert {len(ex.meta["names"]) for ex in a} == {1, 2, 3, 4}
    json.dumps([ex.to_dict() for ex in a])


def test_generators_reject_bad_sizes():
    with pytest.raises(InputError):
        but_sentiment(-1)
    with pytest.raises(InputError):
        but_sentiment(5, contrast=1.5)
    with pytest.raises(InputError):
        coin_flip(2.5)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- scoring


def test_label_logprobs_equal_token_logprobs_of_the_first_verbalizer_token(tiny_lm):
    examples = but_sentiment(7, seed=1)
    prompts = [TEMPLATE.replace("{input}", ex.text) for ex in examples]
    verbalizers = {"negative": " negative", "positive": " positive"}
    before = tiny_lm.cost.copy()
    lp = label_logprobs(tiny_lm, prompts, verbalizers, batch_size=3)
    spent = tiny_lm.cost - before
    assert lp.shape == (7, 2)
    assert spent.forward_passes == 7 and spent.batches == 3  # one pass per prompt
    ref = np.array(
        [
            [
                tiny_lm.token_logprobs(p, v, chat=False, batch_size=1)[0][0]
                for v in verbalizers.values()
            ]
            for p in prompts
        ]
    )
    np.testing.assert_allclose(lp, ref, atol=1e-4)
    norm = label_logprobs(tiny_lm, prompts, verbalizers, normalize=True)
    np.testing.assert_allclose(np.exp(norm).sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(norm[:, 0] - norm[:, 1], lp[:, 0] - lp[:, 1], atol=1e-4)


def test_label_margins_are_the_renormalised_probability_gap():
    lp = np.log(np.array([[0.6, 0.2], [0.1, 0.3]]))
    m = label_margins(lp, np.array([0, 0]))
    np.testing.assert_allclose(m, [0.75 - 0.25, 0.25 - 0.75])


def test_evaluate_prompt_reports_accuracy_margin_and_cost(tiny_lm):
    examples = but_sentiment(6, seed=2)
    ev = evaluate_prompt(tiny_lm, TEMPLATE, examples, SENTIMENT_VERBALIZERS)
    assert ev.cost.forward_passes == 6
    gold = np.array([list(SENTIMENT_VERBALIZERS).index(ex.label) for ex in examples])
    assert ev.accuracy == pytest.approx(float(np.mean(np.argmax(ev.logprobs, 1) == gold)))
    assert ev.margin == pytest.approx(float(label_margins(ev.logprobs, gold).mean()))
    assert ev.predictions == [list(SENTIMENT_VERBALIZERS)[i] for i in np.argmax(ev.logprobs, 1)]
    json.dumps(ev.to_dict())


def test_scoring_errors(tiny_lm):
    ex = but_sentiment(2)
    with pytest.raises(InputError, match="slot"):
        evaluate_prompt(tiny_lm, "Review: nothing", ex, SENTIMENT_VERBALIZERS)
    with pytest.raises(InputError, match="empty"):
        evaluate_prompt(tiny_lm, TEMPLATE, [], SENTIMENT_VERBALIZERS)
    with pytest.raises(InputError, match="verbalizer key"):
        evaluate_prompt(tiny_lm, TEMPLATE, [LabeledExample("x", "neutral")], SENTIMENT_VERBALIZERS)
    with pytest.raises(InputError, match="same token"):
        label_logprobs(tiny_lm, ["a"], {"a": " positive", "b": " positively"})
    with pytest.raises(InputError):
        label_logprobs(object(), ["a"], SENTIMENT_VERBALIZERS)


# ---------------------------------------------------------------------------------- the task


def test_prompt_task_units_skip_slot_and_protected_text(tiny_lm):
    template = "Classify it. Review: {input}\nSentiment:"
    task = PromptTask(tiny_lm, template, but_sentiment(4), SENTIMENT_VERBALIZERS,
                      protected=["Sentiment:"])  # fmt: skip
    for u in task.units:
        assert u.end <= template.index("{input}") or u.start >= template.index("{input}") + 7
        assert u.start < template.index("Sentiment:") or u.start >= len(template)
    empty = task.render(np.zeros(task.n_units, dtype=bool))
    assert "{input}" in empty and empty.endswith("Sentiment:")
    assert task.render(np.ones(task.n_units, dtype=bool)) == template
    assert task.kind == "prompt" and task.meter is tiny_lm
    json.dumps(task.input_info)
    json.dumps(task.target_info)


def test_prompt_task_fitness_is_cached_and_counted(tiny_lm):
    fit_set = but_sentiment(5, seed=7)
    task = PromptTask(tiny_lm, TEMPLATE, fit_set, SENTIMENT_VERBALIZERS, fitness="margin")
    full = np.ones(task.n_units, dtype=bool)
    before = tiny_lm.cost.copy()
    f = task.fitness(full)
    assert (tiny_lm.cost - before).forward_passes == 5  # |fitness set| passes
    again = task.fitness(full)
    assert (tiny_lm.cost - before).forward_passes == 5  # seen: no new pass
    assert f[0] == again[0]
    ev = evaluate_prompt(tiny_lm, TEMPLATE, fit_set, SENTIMENT_VERBALIZERS)
    assert f[0] == pytest.approx(ev.margin, abs=1e-6)
    vals = task.fitness_values()
    assert vals["accuracy"] == pytest.approx(ev.accuracy)


def test_perturbation_methods_run_on_a_prompt_task(tiny_lm):
    task = PromptTask(tiny_lm, "Tell me. {input} Answer:", but_sentiment(3), SENTIMENT_VERBALIZERS,
                      fitness="margin")  # fmt: skip
    a = attribkit.attribute(task, "loo")
    assert a.task == "prompt" and len(a.scores) == task.n_units
    full = task.fitness(np.ones(task.n_units, dtype=bool))[0]
    drop0 = np.ones(task.n_units, dtype=bool)
    drop0[0] = False
    assert a.scores[0] == pytest.approx(full - task.fitness(drop0)[0])
    s = attribkit.attribute(task, "kernel_shap", n_samples=16, seed=0)
    assert len(s.scores) == task.n_units


def test_prompt_task_from_demonstrations(tiny_lm):
    demos = but_sentiment(3, seed=9)
    task = PromptTask.from_demonstrations(tiny_lm, demos, but_sentiment(2), SENTIMENT_VERBALIZERS)
    assert task.n_units == 3 and task.unit_kind == "demonstrations"
    assert task.units[1].label.startswith("Review: " + demos[1].text)
    assert task.units[1].label.endswith(SENTIMENT_VERBALIZERS[demos[1].label] + "\n\n")
    keep = np.array([True, False, True])
    text = task.render(keep)
    assert demos[1].text not in text and demos[0].text in text and text.endswith("Sentiment:")
    tokens = PromptTask.from_demonstrations(
        tiny_lm, demos, but_sentiment(2), SENTIMENT_VERBALIZERS, units="tokens"
    )
    assert tokens.n_units > 3 and tokens.template == task.template


def test_prompt_task_errors(tiny_lm):
    ex = but_sentiment(2)
    with pytest.raises(InputError, match="empty"):
        PromptTask(tiny_lm, TEMPLATE, [], SENTIMENT_VERBALIZERS)
    with pytest.raises(InputError, match="slot"):
        PromptTask(tiny_lm, "Review:\nSentiment:", ex, SENTIMENT_VERBALIZERS)
    with pytest.raises(InputError, match="verbalizer key"):
        PromptTask(tiny_lm, TEMPLATE, [LabeledExample("a", "meh")], SENTIMENT_VERBALIZERS)
    with pytest.raises(InputError, match="fitness"):
        PromptTask(tiny_lm, TEMPLATE, ex, SENTIMENT_VERBALIZERS, fitness="f1")
    with pytest.raises(InputError, match="demonstration"):
        PromptTask(tiny_lm, TEMPLATE, ex, SENTIMENT_VERBALIZERS, units="demonstrations")
    with pytest.raises(InputError, match="protected"):
        PromptTask(tiny_lm, TEMPLATE, ex, SENTIMENT_VERBALIZERS, protected=["absent"])


# ---------------------------------------------------------------------------------- SmolLM2


@pytest.mark.model
def test_smollm2_gets_but_sentiment_mostly_right_zero_shot(smollm2):
    examples = but_sentiment(24, seed=11)
    ev = evaluate_prompt(smollm2, TEMPLATE, examples, SENTIMENT_VERBALIZERS)
    assert ev.accuracy >= 0.8
    assert ev.cost.forward_passes == 24
    lp = label_logprobs(smollm2, [TEMPLATE.replace("{input}", examples[0].text)],
                        SENTIMENT_VERBALIZERS)  # fmt: skip
    ref = [smollm2.token_logprobs(TEMPLATE.replace("{input}", examples[0].text), v, chat=False)[0][0]
           for v in SENTIMENT_VERBALIZERS.values()]  # fmt: skip
    np.testing.assert_allclose(lp[0], ref, atol=1e-3)


@pytest.mark.model
def test_verbalizers_are_single_smollm2_tokens(smollm2):
    for verbalizers in (SENTIMENT_VERBALIZERS, COIN_VERBALIZERS):
        for text in verbalizers.values():
            assert len(smollm2.tokenizer(text, add_special_tokens=False)["input_ids"]) == 1
