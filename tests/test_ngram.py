"""The n-gram LM: proper next-token distributions over the whole vocabulary, equal to a
brute-force interpolated Kneser-Ney / absolute discounting, the next-token protocol (encode,
token_strings, logprobs with counted cost), sampling (seeded, temperature, round trip) and bad
input."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest

from attribkit.core.errors import InputError
from attribkit.models.ngram import NGramLM, detokenize_words, word_tokens

CORPUS = [
    "The cat sat on the mat. The dog sat on the log.",
    "A cat and a dog met on the mat, and the cat ran.",
    "San Francisco is far; san francisco is foggy. I lost my glasses, my red glasses!",
    "Reading glasses, sun glasses and the new glasses: 3 pairs in 2024.",
]


def _reference(lm: NGramLM, texts: list[str], ctx: tuple[int, ...]) -> np.ndarray:
    """p(. | ctx) by the textbook recursion, from Counters (a fixed discount per order)."""
    n, v = lm.order, lm.vocab_size
    start = v
    seqs = [[start] * (n - 1) + lm.encode(t) + [lm.end_id] for t in texts]
    grams = {
        k: [tuple(s[i - k + 1 : i + 1]) for s in seqs for i in range(n - 1, len(s))]
        for k in range(1, n + 1)
    }

    def counts(k: int) -> Counter:
        if k == n or lm.smoothing == "absolute":
            return Counter(grams[k])
        return Counter(g[1:] for g in set(grams[k + 1]))  # distinct left extensions

    def p(k: int, h: tuple[int, ...]) -> np.ndarray:
        lower = p(k - 1, h[1:]) if k > 1 else np.full(v, 1.0 / v)
        c = {g[-1]: x for g, x in counts(k).items() if g[:-1] == h}
        if not c:
            return lower
        total, d = sum(c.values()), lm.discount
        out = lower * d * len(c) / total
        for w, x in c.items():
            out[w] += (x - d) / total
        return out

    return p(n, ctx)


@pytest.mark.parametrize("smoothing", ["kneser-ney", "absolute"])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_logprobs_equal_the_textbook_recursion(order: int, smoothing: str) -> None:
    lm = NGramLM(order, smoothing=smoothing, discount=0.7).fit(CORPUS)
    text = "the cat sat on my glasses in san francisco zebra"
    ids = lm.encode(text)
    assert lm.unk_id in ids  # "zebra" is unknown
    rows = lm.logprobs([ids])[0]
    assert rows.shape == (len(ids), lm.vocab_size) and rows.dtype == np.float64
    padded = [lm.vocab_size] * (order - 1) + ids
    for t in range(len(ids)):
        ref = _reference(lm, CORPUS, tuple(padded[t : t + order - 1]))
        np.testing.assert_allclose(np.exp(rows[t]), ref, rtol=1e-12, atol=0)


@pytest.mark.parametrize("level", ["word", "char"])
@pytest.mark.parametrize("smoothing", ["kneser-ney", "absolute"])
@pytest.mark.parametrize("order", [1, 2, 4])
def test_every_distribution_is_proper_over_the_whole_vocabulary(
    level: str, smoothing: str, order: int
) -> None:
    lm = NGramLM(order, level=level, smoothing=smoothing).fit(CORPUS)
    assert lm.token_strings([0, 1]) == ["<unk>", "</s>"]
    ids = lm.encode("the dog met a cat: ZEBRA 42! " + CORPUS[2])
    for rows in lm.logprobs([ids, ids[:3]]):
        p = np.exp(rows)
        assert np.all(np.isfinite(rows)) and np.all(p > 0)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    # estimated discounts stay in (0, 1)
    assert all(0 < level_.discount < 1 for level_ in lm._levels)


def test_row_zero_is_the_start_state_and_rows_follow_the_prefix() -> None:
    lm = NGramLM(3).fit(CORPUS)
    ids = lm.encode("the cat sat")
    rows = lm.logprobs([ids])[0]
    np.testing.assert_allclose(np.exp(rows[0]), lm.next_token_distribution(""), atol=1e-15)
    np.testing.assert_allclose(np.exp(rows[2]), lm.next_token_distribution("the cat"), atol=1e-15)
    # the start state has seen "the" start two texts: it beats a word never at the start
    assert rows[0][lm.encode("the")[0]] > rows[0][lm.encode("mat")[0]]
    # Kneser-Ney: "francisco" is frequent but follows only "san"; "glasses" follows many words.
    # After an unseen context, continuation counts rank glasses first, raw counts do not.
    extra = ["san francisco san francisco san francisco san francisco"]
    kn = NGramLM(2, smoothing="kneser-ney", discount=0.75).fit(CORPUS + extra)
    ad = NGramLM(2, smoothing="absolute", discount=0.75).fit(CORPUS + extra)
    g, f = kn.encode("glasses francisco")
    p_kn = kn.next_token_distribution("zebra")
    p_ad = ad.next_token_distribution("zebra")
    assert p_kn[g] > p_kn[f] and p_ad[g] < p_ad[f]


def test_protocol_cost_and_token_strings() -> None:
    lm = NGramLM(2).fit(CORPUS)
    assert lm.name == "ngram-word-2" and lm.vocab_size == len(lm.vocab)
    ids = lm.encode("The cat, the DOG.")
    assert lm.token_strings(ids) == ["the", "cat", ",", "the", "dog", "."]
    assert lm.decode(ids) == "the cat, the dog."
    text = "The İcat, the DOG."
    spans = lm.token_spans(text)
    assert len(spans) == len(lm.encode(text))
    # "İ" lower-cases to "i" + a combining dot: two tokens, both spanning the one character
    assert [text[a:b] for a, b in spans] == ["The", "İ", "İ", "cat", ",", "the", "DOG", "."]
    assert NGramLM(2, level="char").fit(CORPUS).token_spans("ab") == [(0, 1), (1, 2)]
    before = lm.meter.cost.copy()
    lm.logprobs([ids, ids[:2], ids[:1]])
    spent = lm.meter.cost - before
    assert (spent.forward_passes, spent.batches) == (3, 1)
    lm.token_logprobs("the cat sat on the mat")
    assert lm.meter.cost.forward_passes == before.forward_passes + 4
    # a batch and one-by-one give the same rows
    one = lm.logprobs([ids[:2]])[0]
    np.testing.assert_array_equal(one, lm.logprobs([ids, ids[:2]])[1])


def test_word_tokenisation_and_detokenisation_round_trip() -> None:
    text = "Don't stop (now): it's 2024, isn't it? Yes -- 100%."
    toks = word_tokens(text)
    assert toks[:4] == ["don", "'", "t", "stop"] and "2024" in toks and "%" in toks
    assert word_tokens(detokenize_words(toks)) == toks
    assert detokenize_words(["don", "'", "t", "stop", "(", "now", ")", "."]) == "don't stop (now)."


def test_sampling_is_seeded_round_trips_and_obeys_temperature() -> None:
    lm = NGramLM(3).fit(CORPUS)
    a = lm.sample(4, 30, seed=7)
    assert a == lm.sample(4, 30, seed=7) and a != lm.sample(4, 30, seed=8)
    for text in a:
        ids = lm.encode(text)
        assert len(ids) == 30 and lm.unk_id not in ids and lm.end_id not in ids
    before = lm.meter.cost.copy()
    lm.sample(3, 10, seed=0, prompt="the cat")
    spent = lm.meter.cost - before
    assert (spent.forward_passes, spent.batches, spent.generated_tokens) == (30, 10, 30)
    # stop_at_end: a sample may end early, never longer than length
    short = lm.sample(20, 200, seed=0, stop_at_end=True)
    assert all(len(lm.encode(t)) <= 200 for t in short)
    assert min(len(lm.encode(t)) for t in short) < 200
    # greedy: temperature 0 takes the argmax after the prompt
    p = lm.next_token_distribution("the cat")
    p[[0, 1]] = 0
    assert lm.sample(1, 1, temperature=0, prompt="the cat")[0] == lm.vocab[int(np.argmax(p))]
    # temperature scales the log-probabilities: a unigram model's sample frequencies follow
    # p ** (1 / T), renormalised (here T = 0.5)
    uni = NGramLM(1).fit(["a a a a a a b b b c"])
    text = uni.sample(1, 4000, temperature=0.5, seed=1)[0]
    freq = Counter(text.split())
    q = uni.next_token_distribution("")[2:] ** 2
    q /= q.sum()
    got = np.array([freq[w] for w in uni.vocab[2:]]) / 4000
    np.testing.assert_allclose(got, q, atol=0.03)


def test_char_level_keeps_case_and_spaces() -> None:
    lm = NGramLM(4, level="char").fit(CORPUS)
    assert lm.token_strings(lm.encode("The ")) == ["T", "h", "e", " "]
    assert lm.encode("€")[0] == lm.unk_id
    s = lm.sample(2, 50, seed=3)
    assert all(len(t) == 50 for t in s) and lm.decode(lm.encode(s[0])) == s[0]


def test_a_500_token_text_with_a_5k_vocabulary_scores_fast() -> None:
    rng = np.random.default_rng(0)
    words = ["".join(chr(97 + int(d)) for d in f"{i:05d}") for i in range(5000)]
    zipf = 1.0 / np.arange(1, 5001)
    texts = [
        " ".join(rng.choice(words, size=400, p=zipf / zipf.sum()).tolist()) for _ in range(100)
    ]
    lm = NGramLM(3).fit(texts)
    assert lm.vocab_size > 3000
    ids = lm.encode(" ".join(rng.choice(words, size=500).tolist()))
    start = time.perf_counter()
    rows = lm.logprobs([ids])[0]
    assert time.perf_counter() - start < 1.0
    assert rows.shape == (500, lm.vocab_size)


def test_bad_input_says_what_to_fix() -> None:
    with pytest.raises(InputError, match="order"):
        NGramLM(0)
    with pytest.raises(InputError, match="level"):
        NGramLM(2, level="byte")
    with pytest.raises(InputError, match="smoothing"):
        NGramLM(2, smoothing="good-turing")
    with pytest.raises(InputError, match="discount"):
        NGramLM(2, discount=1.5)
    with pytest.raises(InputError, match="not fitted"):
        NGramLM(2).encode("the cat")
    with pytest.raises(InputError, match="empty"):
        NGramLM(2).fit([])
    with pytest.raises(InputError, match="single string"):
        NGramLM(2).fit("the cat sat")
    with pytest.raises(InputError, match="shorter than the n-gram order"):
        NGramLM(3).fit(["the cat", "a dog", ""])
    lm = NGramLM(3).fit(CORPUS)
    with pytest.raises(InputError, match="fewer than the n-gram order"):
        lm.token_logprobs("the cat")
    with pytest.raises(InputError, match="fewer than the n-gram order"):
        lm.perplexity("")
    with pytest.raises(InputError, match="empty"):
        lm.logprobs([[]])
    with pytest.raises(InputError, match="out of range"):
        lm.logprobs([[0, lm.vocab_size]])
    with pytest.raises(InputError, match="not a string"):
        lm.logprobs(["the cat"])
    with pytest.raises(InputError, match="length"):
        lm.sample(2, 0)
    with pytest.raises(InputError, match="temperature"):
        lm.sample(2, 5, temperature=-1)
    # a short text is fine inside a corpus with a long enough one, and scores with a low order
    assert NGramLM(2).fit(["a b c", "x"]).perplexity("a b") > 1
