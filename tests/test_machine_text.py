"""Zero-shot machine-text detectors: the statistics against a direct numpy computation, the
per-token decompositions, Fast-DetectGPT's null distribution, the HF adapter against torch, an
n-gram LM's samples against held-out text, and bad input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import attribkit as ak
from attribkit.core.errors import InputError, ScorerError
from attribkit.methods.machine_text.detectgpt import word_swap_perturber
from attribkit.models.next_token import HFNextToken, NextTokenModel, same_vocabulary
from attribkit.tasks.machine_text import MachineTextTask, align_tokens, attribute_machine_text
from attribkit.testing import TOY_MACHINE_TEXT, ToyNextToken, tiny_language_model

METHODS = ("log_perplexity", "fast_detectgpt", "binoculars", "detectgpt")


def direct(model: ToyNextToken, reference: ToyNextToken, text: str) -> dict[str, Any]:
    """The detector quantities straight from the bigram tables."""
    ids = np.array(model.encode(text))
    prev = np.r_[model.vocab_size, ids[:-1]]
    logp, logq = model.table[prev], reference.table[prev]
    lp = logp[np.arange(len(ids)), ids]
    q = np.exp(logq)
    mu = (q * logp).sum(1)
    var = (q * logp**2).sum(1) - mu**2
    return {"lp": lp, "mu": mu, "var": var, "T": len(ids)}


def test_protocol_and_toy_model() -> None:
    toy = ToyNextToken(0)
    assert isinstance(toy, NextTokenModel)
    (rows,) = toy.logprobs([toy.encode("abc")])
    assert rows.shape == (3, toy.vocab_size) and rows.dtype == np.float64
    np.testing.assert_allclose(np.exp(rows).sum(1), 1.0)
    assert toy.meter.cost.forward_passes == 1 and toy.counter.rows == 1


@pytest.mark.parametrize("same", [False, True])
def test_statistics_match_a_direct_computation(same: bool) -> None:
    model = ToyNextToken(0)
    reference = model if same else ToyNextToken(1)
    d = direct(model, reference, TOY_MACHINE_TEXT)
    lp, mu, var, n = d["lp"], d["mu"], d["var"], d["T"]
    x_ppl = -mu.mean()
    want = {
        "log_perplexity": (lp.mean(), lp / n),
        "fast_detectgpt": (
            (lp.sum() - mu.sum()) / np.sqrt(var.sum()),
            (lp - mu) / np.sqrt(var.sum()),
        ),
        "binoculars": (lp.mean() / x_ppl, lp / (n * x_ppl)),  # -B = -(log-PPL / X-PPL)
    }
    passes = {
        "log_perplexity": 1,
        "fast_detectgpt": 1 if same else 2,
        "binoculars": 1 if same else 2,
    }
    for name, (stat, terms) in want.items():
        task = MachineTextTask(TOY_MACHINE_TEXT, model, reference=reference)
        a = ak.attribute(task, name)
        assert a.task == "machine_text" and a.method == name
        np.testing.assert_allclose(a.extras["statistic"], stat, rtol=1e-12)
        np.testing.assert_allclose(a.extras["token_terms"], terms, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(a.scores.sum(), stat, rtol=1e-10)  # one unit per character
        assert len(a.units) == n and a.cost.forward_passes == passes[name]
    b = ak.attribute(MachineTextTask(TOY_MACHINE_TEXT, model, reference=reference), "binoculars")
    np.testing.assert_allclose(b.extras["binoculars_score"], -lp.mean() / x_ppl, rtol=1e-12)
    if same:  # with one model the cross-perplexity is the mean entropy
        probs = np.exp(model.table[np.r_[model.vocab_size, model.encode(TOY_MACHINE_TEXT)[:-1]]])
        entropy = -(probs * np.log(probs)).sum(1).mean()
        np.testing.assert_allclose(b.extras["x_ppl"], entropy, rtol=1e-12)


def test_detectgpt_decomposition_and_known_perturbations() -> None:
    model = ToyNextToken(0)
    rewrites = ["The cat sat on the hat.", "A dog sat on the mat.", "The cat ran in the park!"]

    def fixed(text: str, n: int, rng: np.random.Generator) -> list[str]:
        return [rewrites[i % 3] for i in range(n)]

    task = MachineTextTask(TOY_MACHINE_TEXT, model)
    a = ak.attribute(task, "detectgpt", perturber=fixed, n_perturbations=3)
    lls = [direct(model, model, t)["lp"].mean() for t in [TOY_MACHINE_TEXT, *rewrites]]
    m, s = np.mean(lls[1:]), np.std(lls[1:])
    np.testing.assert_allclose(a.extras["statistic"], (lls[0] - m) / s, rtol=1e-12)
    np.testing.assert_allclose(np.sum(a.extras["token_terms"]), a.extras["statistic"], rtol=1e-10)
    np.testing.assert_allclose(a.extras["perturbed_log_likelihoods"], lls[1:], rtol=1e-12)
    assert a.cost.forward_passes == 4 and a.params["perturber"] == "fixed"
    # seeded: the same seed repeats, another seed differs
    runs = [
        ak.attribute(MachineTextTask(TOY_MACHINE_TEXT, model), "detectgpt", seed=s)
        for s in (0, 0, 1)
    ]
    assert runs[0].extras["statistic"] == runs[1].extras["statistic"] != runs[2].extras["statistic"]
    assert runs[0].cost.forward_passes == 21


def test_word_swap_perturber() -> None:
    text = "one two  three four five six seven eight nine ten eleven twelve thirteen fourteen"
    words = text.split()
    out = word_swap_perturber()(text, 50, np.random.default_rng(0))
    changed = []
    for t in out:
        new = t.split()
        assert len(new) == len(words) and set(new) <= set(words)
        assert [len(x) for x in t.split(" ")].count(0) == 1  # the double space is kept
        changed.append(np.mean([a != b for a, b in zip(new, words, strict=True)]))
    assert np.mean(changed) == pytest.approx(2 / 14)  # int(0.3 · 14 / 4) = 1 span of 2 words
    again = word_swap_perturber()(text, 50, np.random.default_rng(0))
    assert again == out
    with pytest.raises(InputError, match="2 different words"):
        word_swap_perturber()("same same same", 2, np.random.default_rng(0))


def test_fast_detectgpt_null_distribution_and_greedy_text() -> None:
    model = ToyNextToken(3, scale=1.5)
    rng = np.random.default_rng(0)
    stats = []
    for _ in range(150):
        text = model.sample(120, rng)
        if not text.strip():
            continue
        a = ak.attribute(MachineTextTask(text, model), "fast_detectgpt")
        stats.append(a.extras["statistic"])
    stats = np.array(stats)
    assert abs(stats.mean()) < 0.3 and 0.75 < stats.std() < 1.3, (stats.mean(), stats.std())
    greedy = model.sample(120, rng, temperature=0)
    g = ak.attribute(MachineTextTask(greedy, model), "fast_detectgpt").extras["statistic"]
    assert g > 5 and g > stats.max()


def test_sentence_units_add_the_token_terms_per_sentence() -> None:
    text = "The cat sat on the mat. The dog ran in the park.\nIt rained."
    tok = ak.attribute(MachineTextTask(text, ToyNextToken(0)), "fast_detectgpt")
    sen = attribute_machine_text(text, ToyNextToken(0), units="sentences")
    assert sen.method == "fast_detectgpt" and sen.input["granularity"] == "sentences"
    assert [u.label for u in sen.units] == [
        "The cat sat on the mat.",
        "The dog ran in the park.",
        "It rained.",
    ]
    terms = np.array(tok.extras["token_terms"])
    owner = np.array(sen.extras["token_unit"])
    # a whitespace-only token stays with the sentence it follows
    assert owner[23] == 0 and owner[48] == 1 and sen.extras["unit_tokens"] == [24, 25, 10]
    np.testing.assert_allclose(sen.scores, [terms[owner == k].sum() for k in range(3)])
    np.testing.assert_allclose(sen.scores.sum(), tok.extras["statistic"], rtol=1e-10)
    assert sen.extras["statistic"] == tok.extras["statistic"]


def test_align_tokens_and_merged_units() -> None:
    text = "Thermal the cat, don't STOP."
    toks = ["<unk>", "the", "cat", ",", "don", "'", "t", "stop", "."]
    spans = align_tokens(text, toks)
    assert [text[s:e] for s, e in spans] == [
        "Thermal",
        "the",
        "cat",
        ",",
        "don",
        "'",
        "t",
        "STOP",
        ".",
    ]

    class Words(ToyNextToken):  # a word model without token_spans: spans by alignment
        def encode(self, text: str) -> list[int]:
            return super().encode("x" * len(text.split()))

        def token_strings(self, ids: Any) -> list[str]:
            return ["<unk>", "cat", "<unk>"][: len(ids)]

    task = MachineTextTask("big cat sat", Words(0))
    assert [u.label for u in task.units] == ["big", "cat", "sat"]


def test_meter_counts_a_model_that_does_not_count() -> None:
    class Silent(ToyNextToken):
        def logprobs(self, sequences: Any) -> list[np.ndarray]:
            out = super().logprobs(sequences)
            self.meter.cost.forward_passes -= len(out)
            return out

    a = ak.attribute(MachineTextTask(TOY_MACHINE_TEXT, Silent(0)), "detectgpt", n_perturbations=4)
    assert a.cost.forward_passes == 5


# --- the Hugging Face adapter ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny() -> Any:
    return tiny_language_model()


def test_hf_adapter_matches_torch(tiny: Any) -> None:
    hf = HFNextToken(tiny, batch_size=2)
    texts = ["The cat sat on the mat.", "Paris", "Alice went to the market and bought bread."]
    seqs = [hf.encode(t) for t in texts]
    assert all(1 not in s for s in seqs)  # no BOS: encoded without special tokens
    before = tiny.cost.forward_passes, tiny.cost.batches
    got = hf.logprobs(seqs)
    assert (tiny.cost.forward_passes - before[0], tiny.cost.batches - before[1]) == (3, 2)
    for s, g in zip(seqs, got, strict=True):
        with torch.no_grad():
            logits = tiny.model(input_ids=torch.tensor([[tiny.tokenizer.bos_token_id, *s]])).logits
        want = torch.log_softmax(logits[0, :-1].double(), -1).numpy()
        assert g.shape == (len(s), hf.vocab_size) and g.dtype == np.float64
        np.testing.assert_allclose(g, want, atol=1e-5)
    # row t scores token t: the gathered values agree with the LM's own response scoring
    lp = tiny.token_logprobs(tiny.tokenizer.bos_token, texts[0], chat=False)[0]
    np.testing.assert_allclose(got[0][np.arange(len(seqs[0])), seqs[0]], lp, atol=1e-5)


def test_hf_task_spans_pairs_and_vocabularies(tiny: Any) -> None:
    text = "The café was quiet. The dog ran in the park."
    task = MachineTextTask(text, tiny)  # a LanguageModel is wrapped in HFNextToken
    assert isinstance(task.model, HFNextToken) and task.reference is task.model
    assert "".join(u.label for u in task.units).replace(" ", "") == text.replace(" ", "")
    a = ak.attribute(task, "fast_detectgpt")
    assert a.cost.forward_passes == 1
    np.testing.assert_allclose(a.scores.sum(), a.extras["statistic"], rtol=1e-9)
    other = HFNextToken(tiny_language_model(seed=1))
    same_vocabulary(task.model, other)
    b = attribute_machine_text(text, tiny, "binoculars", reference=other)
    assert b.cost.forward_passes == 2 and b.target["reference"] == "tiny"
    with pytest.raises(InputError, match="do not share a vocabulary"):
        MachineTextTask("The cat sat.", tiny, reference=ToyNextToken(0))


# --- an n-gram LM's samples against held-out text ---------------------------------------------------
def _auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counted half (Mann-Whitney)."""
    diff = pos[:, None] - neg[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def _source_texts(n: int, seed: int) -> list[str]:
    """'Human' text: a seeded sparse word-bigram process over 400 words (each word has 30
    Zipf-weighted successors), so held-out text holds n-grams the trained LM never saw."""
    rng = np.random.default_rng(1234)  # the process itself is fixed; `seed` draws the texts
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = sorted({"".join(rng.choice(letters, rng.integers(2, 8))) for _ in range(600)})[:400]
    nxt = rng.integers(0, len(vocab), (len(vocab), 30))
    zipf = 1.0 / np.arange(1, 31)
    zipf /= zipf.sum()
    draw = np.random.default_rng(seed)
    texts = []
    for _ in range(n):
        w, words = int(draw.integers(len(vocab))), []
        for _ in range(60):
            words.append(vocab[w])
            w = int(nxt[w, draw.choice(30, p=zipf)])
        texts.append(" ".join(words))
    return texts


def test_ngram_samples_are_detected() -> None:
    ngram = pytest.importorskip("attribkit.models.ngram")
    lm = ngram.NGramLM(order=3, level="word").fit(_source_texts(300, seed=0))
    human = _source_texts(40, seed=1)
    aurocs = {}
    for name, temperature in (("log_perplexity", 0.6), ("fast_detectgpt", 0.8)):
        machine = lm.sample(40, 60, temperature=temperature, seed=0)
        stats = np.array(
            [attribute_machine_text(t, lm, name).extras["statistic"] for t in machine + human]
        )
        aurocs[name] = _auroc(stats[:40], stats[40:])
    # measured: 1.0 and 1.0 (at temperature 1.0: 0.84 and 0.86)
    assert aurocs["log_perplexity"] >= 0.95 and aurocs["fast_detectgpt"] >= 0.85, aurocs
    with pytest.raises(InputError, match="n-gram order"):
        MachineTextTask(human[0].split()[0] + " " + human[0].split()[1], lm)


# --- bad input -------------------------------------------------------------------------------------
def test_bad_input() -> None:
    toy = ToyNextToken(0)
    for text in ("", "   \n"):
        with pytest.raises(InputError, match="empty"):
            MachineTextTask(text, toy)
    with pytest.raises(InputError, match="1 token"):
        MachineTextTask("a", toy)
    with pytest.raises(InputError, match="units must be"):
        MachineTextTask(TOY_MACHINE_TEXT, toy, units="words")
    with pytest.raises(InputError, match="not a next-token model"):
        MachineTextTask(TOY_MACHINE_TEXT, object())

    class Ordered(ToyNextToken):
        order = 5

    with pytest.raises(InputError, match="n-gram order of the model is 5"):
        MachineTextTask("abcd", Ordered(0))

    class Shifted(ToyNextToken):  # same size, other tokens
        def token_strings(self, ids: Any) -> list[str]:
            return [s.upper() for s in super().token_strings(ids)]

    with pytest.raises(InputError, match="different tokens"):
        MachineTextTask(TOY_MACHINE_TEXT, toy, reference=Shifted(1))
    broken = MachineTextTask(TOY_MACHINE_TEXT, ToyNextToken(0, nan=True))
    for name in METHODS:
        with pytest.raises(ScorerError, match="returned NaN"):
            ak.attribute(broken, name)
    task = MachineTextTask(TOY_MACHINE_TEXT, toy)
    with pytest.raises(InputError, match="n_perturbations"):
        ak.attribute(task, "detectgpt", n_perturbations=1)
    with pytest.raises(InputError, match="must return a list of 3"):
        ak.attribute(task, "detectgpt", n_perturbations=3, perturber=lambda t, n, r: [t])
    with pytest.raises(InputError, match="same log-likelihood"):
        ak.attribute(task, "detectgpt", n_perturbations=3, perturber=lambda t, n, r: [t] * n)
    one = MachineTextTask("The cat sat on the mat.", toy, units="sentences")
    with pytest.raises(InputError, match="only 1 unit"):
        ak.attribute(one, "fast_detectgpt")
