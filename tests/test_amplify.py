"""AMPLIFY (attribkit.applied.amplify): MCS ordering and rationale text on a hand-made proxy,
the linear proxy's exact gradient × input, the controls, determinism, bad input, and one
end-to-end run on SmolLM2."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from attribkit.applied.amplify import (
    AmplifyResult,
    LinearProxy,
    Proxy,
    SelfProxy,
    amplify,
    few_shot_template,
    misclassification_confidence,
    random_shots,
    random_word_prompts,
    random_word_rationale,
    rationale_text,
    rationale_words,
    select_by_mcs,
    word_key,
)
from attribkit.core.attribution import Attribution
from attribkit.core.cost import Cost, CostMeter
from attribkit.core.errors import InputError
from attribkit.core.units import TextUnits
from attribkit.tasks.prompt import evaluate_prompt
from attribkit.tasks.prompt_cases import (
    COIN_VERBALIZERS,
    SENTIMENT_VERBALIZERS,
    LabeledExample,
    but_sentiment,
    coin_flip,
)

TEMPLATE = "Review: {input}\nSentiment:"


class HandProxy(CostMeter):
    """A proxy whose probabilities and word scores are set by hand: ``probs[text]`` is the
    probability of each label, ``word_scores[word]`` the attribution of that word toward the
    gold label (unlisted words score 0)."""

    def __init__(
        self,
        labels: Sequence[str],
        probs: dict[str, Sequence[float]],
        word_scores: dict[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.labels = list(labels)
        self.probs = {k: np.asarray(v, float) for k, v in probs.items()}
        self.word_scores = word_scores or {}
        self.explained: list[tuple[str, str]] = []

    @property
    def meter(self) -> CostMeter:
        return self

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        self.cost.forward_passes += len(texts)
        return np.array([self.probs[t] for t in texts])

    def explain(self, text: str, label: str) -> Attribution:
        self.explained.append((text, label))
        self.cost.backward_passes += 1
        units = TextUnits.words(text)
        scores = [self.word_scores.get(u.label.strip(".,?"), 0.0) for u in units]
        return Attribution(list(units), np.array(scores), "hand", cost=Cost(backward_passes=1))


# --- MCS and selection ----------------------------------------------------------------------


def test_mcs_is_the_best_wrong_label_minus_the_gold_one():
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.3], [0.1, 0.2]])
    p3 = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    np.testing.assert_allclose(
        misclassification_confidence(p, [1, 1, 0, 0]), [0.8, -0.6, -0.2, 0.1]
    )
    # several wrong labels: the most probable wrong one
    np.testing.assert_allclose(misclassification_confidence(p3, [2, 1]), [0.2, 0.5])


def test_selection_takes_errors_by_mcs_then_falls_back_to_correct_items():
    mcs = np.array([0.1, 0.9, -0.5, 0.3, 0.7, 0.2])
    correct = np.array([False, True, False, True, False, True])
    assert select_by_mcs(mcs, correct, 2) == [4, 0]
    # only 3 errors: then the correct items, highest MCS first
    assert select_by_mcs(mcs, correct, 5) == [4, 0, 2, 1, 3]
    labels = ["a", "a", "a", "b", "a", "b"]
    # balanced: two of each label; the errors are all "a", so both "b" come from the correct items
    assert select_by_mcs(mcs, correct, 4, labels, balanced=True) == [4, 0, 3, 5]


def _validation() -> list[LabeledExample]:
    texts = [
        ("The soup was awful.", "negative"),
        ("The staff was lovely.", "positive"),
        ("The room was dismal.", "negative"),
        ("The view was superb.", "positive"),
        ("The bread was poor.", "negative"),
        ("The wine was great.", "positive"),
    ]
    return [LabeledExample(t, y) for t, y in texts]


def test_amplify_orders_shots_by_the_proxy_mcs_among_the_lm_errors(tiny_lm):
    val = _validation()
    labels = list(SENTIMENT_VERBALIZERS)
    # hand-set proxy probabilities: MCS = p(wrong) - p(gold) = 1 - 2 p(gold)
    p_gold = [0.10, 0.45, 0.30, 0.80, 0.05, 0.60]
    probs = {}
    for e, g in zip(val, p_gold, strict=True):
        row = [1 - g, g] if e.label == "positive" else [g, 1 - g]
        probs[e.text] = row
    proxy = HandProxy(labels, probs)
    base = evaluate_prompt(tiny_lm, TEMPLATE, val, SENTIMENT_VERBALIZERS)
    result = amplify(
        tiny_lm, [], val, SENTIMENT_VERBALIZERS, proxy=proxy, n_shots=6, template=TEMPLATE
    )
    assert isinstance(result, AmplifyResult)
    mcs = 1 - 2 * np.array(p_gold)
    np.testing.assert_allclose(result.mcs, mcs)
    wrong = [i for i in np.argsort(-mcs, kind="stable") if not base.correct[i]]
    right = [i for i in np.argsort(-mcs, kind="stable") if base.correct[i]]
    assert 0 < len(wrong) < len(val)  # both the errors and the fallback are exercised
    assert wrong + right != list(np.argsort(-mcs, kind="stable"))  # not MCS order alone
    assert [s.index for s in result.shots] == wrong + right  # errors first, each by MCS
    assert result.n_errors == len(wrong) and result.n_fallback == len(right)
    assert [s.lm_correct for s in result.shots] == [False] * len(wrong) + [True] * len(right)
    # costs: one LM pass per validation item, one proxy pass per item and one explanation per shot
    assert result.lm_cost.forward_passes == len(val)
    assert result.proxy_cost.forward_passes == len(val)
    assert result.proxy_cost.backward_passes == 6
    assert result.cost.forward_passes == 2 * len(val)
    # every shot explained toward its gold label
    assert proxy.explained == [(val[s.index].text, val[s.index].label) for s in result.shots]


def test_rationale_names_top_words_toward_gold_without_stop_words(tiny_lm):
    val = [LabeledExample("The food was awful, but the staff was lovely.", "positive")]
    # "the" and "was" score highest but are stop words; "lovely" then "staff" come next
    scores = {"the": 9.0, "was": 8.0, "lovely": 5.0, "staff": 3.0, "food": 1.0, "awful": -4.0}
    proxy = HandProxy(list(SENTIMENT_VERBALIZERS), {val[0].text: [0.7, 0.3]}, scores)
    result = amplify(
        tiny_lm, [], val, SENTIMENT_VERBALIZERS, proxy=proxy, n_shots=1, template=TEMPLATE
    )
    shot = result.shots[0]
    assert shot.words == ["lovely", "staff"]
    expected = (
        "The key words: 'lovely' and 'staff' are important clues to predict 'positive' as the "
        "correct answer."
    )
    assert shot.rationale == expected
    assert result.template == (
        "Review: The food was awful, but the staff was lovely.\n"
        + expected
        + "\nSentiment: positive\n\nReview: {input}\nSentiment:"
    )
    assert result.prompt("X.").endswith("Review: X.\nSentiment:")
    assert result.without_rationales() == (
        "Review: The food was awful, but the staff was lovely.\nSentiment: positive\n\n"
        "Review: {input}\nSentiment:"
    )


def test_rationale_text_and_words_edge_cases():
    assert rationale_text(["a", "b", "c"], "yes") == (
        "The key words: 'a', 'b' and 'c' are important clues to predict 'yes' as the correct "
        "answer."
    )
    assert rationale_text(["coin"], "no") == (
        "The key word: 'coin' is an important clue to predict 'no' as the correct answer."
    )
    units = TextUnits.words("Lovely! lovely the soup.")
    att = Attribution(list(units), np.array([1.0, 3.0, 5.0, 2.0]), "hand")
    # one word per key (case and punctuation ignored), the higher-scoring occurrence quoted
    assert rationale_words(att, 3) == ["lovely", "soup"]
    only_stop = TextUnits.words("it was the")
    att2 = Attribution(list(only_stop), np.array([1.0, 3.0, 2.0]), "hand")
    assert rationale_words(att2, 2) == ["was", "the"]  # no content word: stop words allowed
    assert word_key("'Lovely,'") == "lovely" and word_key("--") == ""


# --- the linear proxy -----------------------------------------------------------------------


def test_linear_proxy_attribution_is_coefficient_times_feature():
    from sklearn.linear_model import LogisticRegression

    train = but_sentiment(60, seed=4)
    proxy = LinearProxy.fit(train, list(SENTIMENT_VERBALIZERS), seed=0)
    assert isinstance(proxy, Proxy)
    # the same regression fitted directly: coef_ is the gradient of the positive class's logit
    x = proxy.features([e.text for e in train])
    ref = LogisticRegression(C=1.0, max_iter=2000, random_state=0).fit(x, [e.label for e in train])
    assert list(ref.classes_) == ["negative", "positive"]
    np.testing.assert_allclose(proxy.weights[1], ref.coef_[0], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(proxy.weights[0], -ref.coef_[0], rtol=1e-6, atol=1e-9)
    test = but_sentiment(10, seed=5)
    probs = proxy.probabilities([e.text for e in test])
    ref_probs = ref.predict_proba(proxy.features([e.text for e in test]))
    np.testing.assert_allclose(probs, ref_probs, rtol=1e-6, atol=1e-9)
    text = "The soup was lovely, but the soup was awful and unknownword."
    for label in SENTIMENT_VERBALIZERS:
        att = proxy.explain(text, label)
        counts = proxy.features([text])[0]
        per_feature = np.zeros(len(proxy.vocabulary))
        for u, s in zip(att.units, att.scores, strict=True):
            j = proxy.vocabulary.get(word_key(u.label))
            if j is None:
                assert s == 0.0  # out of vocabulary
            else:
                per_feature[j] += s
        w = proxy.weights[list(SENTIMENT_VERBALIZERS).index(label)]
        np.testing.assert_array_equal(per_feature, w * counts)  # exactly gradient × input
    assert proxy.cost.forward_passes == len(test)  # one per scored text
    assert proxy.cost.backward_passes == 2


def test_linear_proxy_with_three_labels_uses_each_class_row():
    train = [
        LabeledExample(t, y)
        for t, y in [
            ("red apple", "a"),
            ("red cherry", "a"),
            ("blue sky", "b"),
            ("blue sea", "b"),
            ("green leaf", "c"),
            ("green grass", "c"),
        ]
    ]
    proxy = LinearProxy.fit(train, ["a", "b", "c"])
    p = proxy.probabilities(["red", "blue", "green"])
    assert list(p.argmax(axis=1)) == [0, 1, 2]
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    att = proxy.explain("blue red", "b")
    assert att.scores[0] > 0 > att.scores[1]


# --- controls and determinism -----------------------------------------------------------------


def test_random_word_control_draws_words_from_each_shot_input_and_redraws_per_prompt():
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    shots = coin_flip(4, seed=1)
    texts = [e.text for e in coin_flip(12, seed=2)]
    prompts = random_word_prompts(shots, texts, COIN_VERBALIZERS, template=TEMPLATE, k_words=2)
    assert len(prompts) == len(texts)
    rationales_per_prompt = []
    for prompt, text in zip(prompts, texts, strict=True):
        assert prompt.endswith(f"Review: {text}\nSentiment:")
        demos = prompt.split("\n\n")[:-1]
        assert len(demos) == len(shots)
        lines = []
        for demo, shot in zip(demos, shots, strict=True):
            line = demo.split("\n")[1]
            words = line.split("'")[1:-3:2]  # the quoted words before the quoted label
            assert len(words) == 2
            assert line.endswith(f"predict '{shot.label}' as the correct answer.")
            input_keys = {word_key(w) for w in shot.text.split()}
            assert all(word_key(w) in input_keys for w in words)
            assert not {word_key(w) for w in words} & ENGLISH_STOP_WORDS  # e.g. "not", "the"
            lines.append(line)
        rationales_per_prompt.append(tuple(lines))
    assert len(set(rationales_per_prompt)) > 1  # re-drawn for each prompt
    again = random_word_prompts(shots, texts, COIN_VERBALIZERS, template=TEMPLATE, k_words=2)
    other = random_word_prompts(
        shots, texts, COIN_VERBALIZERS, template=TEMPLATE, k_words=2, seed=1
    )
    assert again == prompts and other != prompts
    words, text = random_word_rationale(shots[0].text, "no", 50, np.random.default_rng(0))
    assert len(words) == len({word_key(w) for w in words})  # capped at the distinct content words


def test_random_shots_are_seeded_and_balanced():
    pool = but_sentiment(20, seed=0)
    a = random_shots(pool, 4, seed=3, balanced=True)
    assert a == random_shots(pool, 4, seed=3, balanced=True)
    assert a != random_shots(pool, 4, seed=4, balanced=True)
    assert sorted(e.label for e in a) == ["negative", "negative", "positive", "positive"]
    assert all(e in pool for e in a) and len({e.text for e in a}) == 4


def test_amplify_is_deterministic_under_its_seed(tiny_lm):
    train, val = coin_flip(30, seed=0), coin_flip(8, seed=1)
    kw = dict(proxy="linear", n_shots=3, template=TEMPLATE, seed=7)
    verbalizers = {"no": "no", "yes": "yes"}  # the tiny tokenizer splits " no" into " " + "no"
    a = amplify(tiny_lm, train, val, verbalizers, **kw)
    b = amplify(tiny_lm, train, val, verbalizers, **kw)
    assert a.template == b.template and a.template.count("The key words:") == 3
    np.testing.assert_array_equal(a.mcs, b.mcs)
    assert [s.index for s in a.shots] == [s.index for s in b.shots]


def test_few_shot_template_checks_its_input():
    shots = [LabeledExample("x", "yes")]
    with pytest.raises(InputError, match="exactly once"):
        few_shot_template(shots, COIN_VERBALIZERS, "no slot here")
    with pytest.raises(InputError, match="not in the verbalizers"):
        few_shot_template([LabeledExample("x", "maybe")], COIN_VERBALIZERS, TEMPLATE)
    with pytest.raises(InputError, match="one per shot"):
        few_shot_template(shots, COIN_VERBALIZERS, TEMPLATE, rationales=["a", "b"])


# --- Self-AMPLIFY ---------------------------------------------------------------------------


def test_self_proxy_explains_the_lm_label_probability_by_loo(tiny_lm):
    proxy = SelfProxy(tiny_lm, SENTIMENT_VERBALIZERS, TEMPLATE)
    text = "The food was awful, but the staff was lovely."
    before = tiny_lm.cost.forward_passes
    att = proxy.explain(text, "positive")
    n_words = len(text.split())
    assert tiny_lm.cost.forward_passes - before == n_words + 1
    assert att.cost.forward_passes == n_words + 1
    # LOO: each score = value(all words) - value(without the word), value = renormalised log p
    full = np.log(proxy.probabilities([text])[0, 1])
    units = TextUnits.words(text)
    without = [units.compose(~np.eye(n_words, dtype=bool)[i]) for i in range(n_words)]
    np.testing.assert_allclose(
        att.scores, full - np.log(proxy.probabilities(without)[:, 1]), atol=1e-5
    )
    assert tiny_lm.cost.forward_passes - before == n_words + 1  # all cached


def test_self_amplify_reuses_the_validation_passes(tiny_lm):
    val = but_sentiment(6, seed=2)
    result = amplify(
        tiny_lm, [], val, SENTIMENT_VERBALIZERS, proxy="self", n_shots=2, template=TEMPLATE
    )
    assert result.lm_cost.forward_passes == len(val)
    # the proxy's probabilities are the validation run's: its passes are the two LOO runs only
    n_words = [len(s.example.text.split()) for s in result.shots]
    assert result.proxy_cost.forward_passes == sum(n_words)  # full prompts were cached
    assert all(s.rationale and s.rationale.startswith("The key words:") for s in result.shots)
    np.testing.assert_allclose(
        result.mcs,
        misclassification_confidence(
            np.exp(result.validation.logprobs)
            / np.exp(result.validation.logprobs).sum(axis=1, keepdims=True),
            [list(SENTIMENT_VERBALIZERS).index(e.label) for e in val],
        ),
    )


# --- bad input ------------------------------------------------------------------------------


def test_bad_input_raises_input_error(tiny_lm):
    val, train = but_sentiment(4, seed=0), but_sentiment(10, seed=1)
    v = SENTIMENT_VERBALIZERS
    with pytest.raises(InputError, match="train set is empty"):
        amplify(tiny_lm, [], val, v)
    with pytest.raises(InputError, match="validation set is empty"):
        amplify(tiny_lm, train, [], v)
    with pytest.raises(InputError, match="k_words must be >= 1"):
        amplify(tiny_lm, train, val, v, k_words=0)
    with pytest.raises(InputError, match="n_shots must be >= 1"):
        amplify(tiny_lm, train, val, v, n_shots=0)
    with pytest.raises(InputError, match="not in the verbalizers"):
        amplify(tiny_lm, train, [*val, LabeledExample("Meh.", "neutral")], v)
    with pytest.raises(InputError, match="not in the verbalizers"):
        amplify(tiny_lm, [*train, LabeledExample("Meh.", "neutral")], val, v)
    with pytest.raises(InputError, match="at least two labels"):
        amplify(tiny_lm, train, val, {"positive": " positive"})
    with pytest.raises(InputError, match="exactly once"):
        amplify(tiny_lm, train, val, v, template="no slot")
    with pytest.raises(InputError, match="unknown proxy"):
        amplify(tiny_lm, train, val, v, proxy="bert")
    with pytest.raises(InputError, match="differ from the verbalizers"):
        amplify(tiny_lm, train, val, v, proxy=HandProxy(["positive", "negative"], {}))
    with pytest.raises(InputError, match="not a proxy"):
        amplify(tiny_lm, train, val, v, proxy=object())  # type: ignore[arg-type]
    with pytest.raises(InputError, match="at least two labels"):
        LinearProxy.fit([e for e in train if e.label == "positive"])
    with pytest.raises(InputError, match="k_words"):
        random_word_prompts(val, ["x"], v, k_words=0)
    with pytest.raises(InputError, match="empty"):
        random_shots([], 2)


# --- SmolLM2 --------------------------------------------------------------------------------


@pytest.mark.model
def test_amplify_end_to_end_on_smollm2(smollm2):
    train, val, test = but_sentiment(40, seed=1), but_sentiment(8, seed=2), but_sentiment(4, seed=3)
    result = amplify(
        smollm2, train, val, SENTIMENT_VERBALIZERS, n_shots=2, template=TEMPLATE, balanced=True
    )
    assert result.lm_cost.forward_passes == len(val)
    assert result.proxy_cost.forward_passes == len(val) and result.proxy_cost.backward_passes == 2
    assert result.cost.seconds > 0 and result.lm_cost.seconds > 0
    assert sorted(s.example.label for s in result.shots) == ["negative", "positive"]
    assert result.template.count("are important clues to predict") == 2
    evaluation = result.evaluate(smollm2, test)
    assert evaluation.cost.forward_passes == len(test)
    assert 0.0 <= evaluation.accuracy <= 1.0 and evaluation.n == len(test)
