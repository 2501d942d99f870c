"""The impersonation report (Jones et al., 2022): n-gram LMs trained on each generated author
forge texts that the authorship model gives to that author far above chance and above a pooled
generator; the report is deterministic, JSON-serialisable, and rejects bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from attribkit.core.errors import InputError
from attribkit.evaluation.impersonation import impersonation_report, sampler_generator
from attribkit.models.authorship import BurrowsDelta, CharNgramSVM
from attribkit.models.ngram import NGramLM

VOCAB = ["".join(chr(97 + (i * 7 + j * 3) % 26) for j in range(2 + i % 5)) for i in range(120)]
VOCAB = list(dict.fromkeys(VOCAB))
AUTHORS = ("alice", "bob", "carol")


def make_authors(per_author: int = 6, n_words: int = 250) -> tuple[list[str], list[str]]:
    """Seeded generated authors: Zipf word profiles distorted by per-author log-normal factors."""
    rng = np.random.default_rng(1)
    base = 1.0 / np.arange(1, len(VOCAB) + 1)
    texts, labels = [], []
    for a in AUTHORS:
        profile = base * np.exp(rng.normal(0, 0.6, len(VOCAB)))
        profile /= profile.sum()
        for _ in range(per_author):
            ws = rng.choice(VOCAB, size=n_words, p=profile).tolist()
            texts.append(". ".join(" ".join(ws[i : i + 10]) for i in range(0, n_words, 10)) + ".")
            labels.append(a)
    return texts, labels


@pytest.fixture(scope="module")
def setting():
    texts, labels = make_authors()
    model = BurrowsDelta(n_words=60).fit(texts, labels)
    lms = {
        a: NGramLM(2).fit([t for t, b in zip(texts, labels, strict=True) if b == a])
        for a in AUTHORS
    }
    pooled = NGramLM(2).fit(texts)
    return model, lms, pooled


def test_forgeries_land_on_their_target_far_above_chance(setting) -> None:
    model, lms, pooled = setting
    report = impersonation_report(model, lms, n=12, seed=3, length=150, baseline_generator=pooled)
    assert report["authors"] == list(AUTHORS) and report["chance"] == pytest.approx(1 / 3)
    for author, row in report["per_author"].items():
        assert row["target_rate"] >= 0.75, (author, row)
        assert row["target_rate"] > row["other_rate"] and row["other_author"] != author
        assert sum(row["distribution"].values()) == pytest.approx(1.0)
        assert row["any_other_rate"] == pytest.approx(1 - row["target_rate"])
        assert row["gain_over_baseline"] == pytest.approx(row["target_rate"] - row["baseline_rate"])
    assert report["mean_target_rate"] > 0.75 > report["chance"]
    # the pooled generator imitates nobody: its forgeries are not all the target's
    assert sum(report["baseline"].values()) == pytest.approx(1.0)
    assert report["mean_target_rate"] > np.mean(
        [r["baseline_rate"] for r in report["per_author"].values()]
    )
    json.dumps(report)  # JSON-serialisable
    again = impersonation_report(model, lms, n=12, seed=3, length=150, baseline_generator=pooled)
    report.pop("seconds"), again.pop("seconds")
    assert again == report


def test_callable_generators_and_another_model(setting) -> None:
    _, lms, _ = setting
    texts, labels = make_authors()
    svm = CharNgramSVM().fit(texts, labels)
    calls = []

    def alice(n: int, seed: int) -> list[str]:
        calls.append((n, seed))
        return lms["alice"].sample(n, 120, temperature=0.8, seed=seed)

    gens = {"alice": alice, "bob": sampler_generator(lms["bob"], length=120, temperature=0.8)}
    report = impersonation_report(svm, gens, n=8, seed=5)
    assert calls == [(8, 5)] and set(report["per_author"]) == {"alice", "bob"}
    assert report["per_author"]["alice"]["target_rate"] > report["chance"]
    assert report["baseline"] is None and "baseline_rate" not in report["per_author"]["bob"]


def test_bad_input_says_what_to_fix(setting) -> None:
    model, lms, _ = setting
    with pytest.raises(InputError, match="no such author"):
        impersonation_report(model, {"dave": lms["alice"]}, n=2)
    with pytest.raises(InputError, match=r"n \(forgeries per author\) must be an integer >= 1"):
        impersonation_report(model, lms, n=0)
    with pytest.raises(InputError, match="non-empty mapping"):
        impersonation_report(model, {}, n=2)
    with pytest.raises(InputError, match="list of 2 strings"):
        impersonation_report(model, {"alice": lambda n, seed: ["only one"]}, n=2)
    with pytest.raises(InputError, match="must be a callable"):
        impersonation_report(model, {"alice": 42}, n=2)
    with pytest.raises(InputError, match="fitted authorship model"):
        impersonation_report(BurrowsDelta(), lms, n=2)
