"""Invented people × relations facts for unlearning, and the toy model trained on them.

Every person is an invented syllable name; each relation assigns one value from a short list at
random with the seed (``"city"``: ``"Brakor lives in"`` → ``" Paris"``; ``"job"``: ``"Brakor
works as a"`` → ``" baker"``), so a model can only know a fact from training on it. Values are
common words (one token in most BPE vocabularies); the facts themselves are invented.

:func:`split_facts` makes the unlearning sets: ``forget`` = one relation's facts of a seeded
subset of people, ``retain`` = the same relation's facts of everybody else, ``other`` = the other
relations' facts of every person (utility on knowledge the forget set does not touch by
construction; forgotten people included, so spill-over shows).

:func:`train_toy_lm` is the toy of the design notes (§6.4): a 2-layer Llama (d = 128) trained
from scratch with AdamW on the facts, over a word-level tokenizer built from them (each name,
word and value one token). No download.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from attribkit.core.errors import InputError
from attribkit.internals.weights import example_nll, trainable_parameters
from attribkit.models.lm import LanguageModel
from attribkit.tasks.context_cases import InventedNames

__all__ = [
    "RELATIONS",
    "PersonFact",
    "UnlearningSplit",
    "fit_facts",
    "make_people_facts",
    "split_facts",
    "toy_fact_model",
    "toy_fact_tokenizer",
    "train_toy_lm",
]

#: relation -> (prompt template, the values it takes)
RELATIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "city": (
        "{person} lives in",
        ("Paris", "Tokyo", "London", "Berlin", "Madrid", "Rome", "Cairo", "Sydney"),
    ),
    "job": (
        "{person} works as a",
        ("doctor", "baker", "pilot", "farmer", "teacher", "singer", "lawyer", "nurse"),
    ),
}


@dataclass(frozen=True)
class PersonFact:
    """One invented fact: ``prompt`` (``"Brakor lives in"``) and ``answer`` (``" Paris"``)."""

    person: str
    relation: str
    value: str

    @property
    def prompt(self) -> str:
        return RELATIONS[self.relation][0].format(person=self.person)

    @property
    def answer(self) -> str:
        return " " + self.value


@dataclass
class UnlearningSplit:
    """``forget`` / ``retain``: one relation's facts of the forgotten people / of the others;
    ``other``: the other relations' facts of every person."""

    forget: list[PersonFact]
    retain: list[PersonFact]
    other: list[PersonFact]


def make_people_facts(
    n_people: int = 80, relations: Sequence[str] = ("city", "job"), seed: int = 0
) -> list[PersonFact]:
    """``n_people`` invented people, each with one fact per relation (values drawn uniformly
    with the seed); people in order, relations in the given order. No model calls."""
    if n_people < 2:
        raise InputError(f"need at least 2 people, got {n_people}")
    unknown = [r for r in relations if r not in RELATIONS]
    if unknown or not relations:
        raise InputError(f"unknown relations {unknown}; choose from {', '.join(RELATIONS)}")
    rng = np.random.default_rng(seed)
    names = InventedNames(rng)
    people = [names.person() for _ in range(n_people)]
    facts = []
    for person in people:
        for rel in relations:
            values = RELATIONS[rel][1]
            facts.append(PersonFact(person, rel, values[int(rng.integers(len(values)))]))
    return facts


def split_facts(
    facts: Sequence[PersonFact], n_forget: int, relation: str = "city", seed: int = 0
) -> UnlearningSplit:
    """Forget ``relation`` for ``n_forget`` people drawn with the seed. No model calls."""
    people = sorted({f.person for f in facts if f.relation == relation})
    if not 0 < n_forget < len(people):
        raise InputError(
            f"n_forget must lie in [1, {len(people) - 1}] for {len(people)} people with a "
            f"{relation!r} fact, got {n_forget}"
        )
    rng = np.random.default_rng(seed)
    gone = {people[i] for i in rng.choice(len(people), size=n_forget, replace=False)}
    rel = [f for f in facts if f.relation == relation]
    return UnlearningSplit(
        forget=[f for f in rel if f.person in gone],
        retain=[f for f in rel if f.person not in gone],
        other=[f for f in facts if f.relation != relation],
    )


def toy_fact_tokenizer(facts: Sequence[PersonFact]) -> object:
    """A word-level tokenizer over the words of ``facts`` (each name, word and value one
    token), BOS added to prompts. No model calls."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    words = sorted({w for f in facts for w in (f.prompt + f.answer).split()})
    vocab = {w: i for i, w in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", vocab["<s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        unk_token="<unk>",
    )  # fmt: skip


def toy_fact_model(vocab_size: int, hidden: int = 128, layers: int = 2, seed: int = 0) -> object:
    """A randomly initialised Llama (``layers`` layers, width ``hidden``, 4 heads, MLP
    2·hidden, untied head) seeded with ``seed``. No model calls."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=32, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )  # fmt: skip
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return LlamaForCausalLM(config).eval()


def fit_facts(
    lm: LanguageModel,
    facts: Sequence[PersonFact],
    steps: int,
    lr: float,
    batch_size: int,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> LanguageModel:
    """Train every weight of ``lm`` on ``facts`` (plain answer NLL, AdamW, ``steps`` batches of
    ``batch_size`` drawn without replacement within a seeded pass over the facts), in place;
    returns ``lm`` in eval mode. Costs ``steps · batch_size`` forward and backward passes,
    counted on ``lm.cost``."""
    if steps < 1 or batch_size < 1:
        raise InputError("steps and batch_size must be >= 1")
    pairs = lm.encode_pairs([f.prompt for f in facts], [f.answer for f in facts], chat=False)
    opt = torch.optim.AdamW(
        list(trainable_parameters(lm.model).values()), lr=lr, weight_decay=weight_decay
    )
    rng = np.random.default_rng(seed)
    order, cursor = rng.permutation(len(pairs)), 0
    with lm.timed():
        for _ in range(steps):
            if cursor >= len(order):
                order, cursor = rng.permutation(len(pairs)), 0
            idx = order[cursor : cursor + batch_size]
            cursor += batch_size
            loss = example_nll(lm, [pairs[i] for i in idx]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            lm.cost.backward_passes += len(idx)
            opt.step()
    lm.model.eval()
    return lm


def train_toy_lm(
    facts: Sequence[PersonFact],
    steps: int = 160,
    lr: float = 6e-3,
    batch_size: int = 160,
    weight_decay: float = 0.01,
    hidden: int = 128,
    layers: int = 2,
    seed: int = 0,
) -> LanguageModel:
    """The toy of the design notes (§6.4): :func:`toy_fact_model` trained from scratch on
    ``facts`` with :func:`fit_facts`. The notes' run took 600 AdamW steps; these defaults (160
    full-batch steps at lr 6e-3) reach 100 % training accuracy on 80 people × 2 relations
    (seed 0) with fewer passes. Returns a :class:`LanguageModel` (name ``"toy-facts"``) whose
    ``cost`` holds the training passes: ``steps · batch_size`` forward and backward passes."""
    tok = toy_fact_tokenizer(facts)
    lm = LanguageModel(toy_fact_model(len(tok), hidden, layers, seed), tok, name="toy-facts")
    return fit_facts(lm, facts, steps, lr, batch_size, weight_decay, seed)
