"""Facts for neuron attribution and knowledge editing: the 10 known facts of the design notes
(§8), landmark → country → capital chains for multi-hop evaluation, unrelated facts for
specificity, paraphrases, and a small general text sample for the edit's key covariance.

:func:`make_edit_cases` turns chains into seeded edit cases: move a landmark to another country
(``"The Eiffel Tower is located in the country of"`` → ``" Italy"``), and ask the two-hop
question whose answer should follow (``"The capital of the country where the Eiffel Tower is
located is"`` → ``" Rome"``). :func:`known_chains` keeps the chains a model answers before
editing (both hops top-1, and the multi-hop question's capital ranked first among the
candidate capitals), as ACE's multi-hop evaluation requires. Prompts are raw text (no chat
template); answers carry their leading space and are judged by their first token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attribkit.core.errors import InputError
from attribkit.internals.neurons import last_logprobs

__all__ = [
    "CAPITALS",
    "COVARIANCE_TEXT",
    "KNOWN_FACTS",
    "LANDMARKS",
    "Chain",
    "EditCase",
    "chains",
    "known_chains",
    "make_edit_cases",
]

#: The notes' 10 known facts (prompt, first answer token) for SmolLM2-135M-Instruct (§8).
KNOWN_FACTS: list[tuple[str, str]] = [
    ("The capital of France is", " Paris"),
    ("The Eiffel Tower is located in the city of", " Paris"),
    ("The Colosseum is in the country of", " Italy"),
    ("The capital of Italy is", " Rome"),
    ("The capital of Germany is", " Berlin"),
    ("The capital of Japan is", " Tokyo"),
    ("The capital of Spain is", " Madrid"),
    ("The Statue of Liberty is in the city of", " New"),
    ("The largest ocean on Earth is the", " Pacific"),
    ("Water is made of hydrogen and", " oxygen"),
]

#: country -> capital (answers are judged by their first token)
CAPITALS: dict[str, str] = {
    "France": "Paris",
    "Italy": "Rome",
    "Germany": "Berlin",
    "Spain": "Madrid",
    "Japan": "Tokyo",
    "Russia": "Moscow",
    "China": "Beijing",
    "Greece": "Athens",
    "Canada": "Ottawa",
    "Portugal": "Lisbon",
    "Austria": "Vienna",
    "Netherlands": "Amsterdam",
    "India": "New Delhi",
    "Australia": "Canberra",
    "Egypt": "Cairo",
    "Peru": "Lima",
    "Mexico": "Mexico City",
}

#: landmark -> country
LANDMARKS: dict[str, str] = {
    "Eiffel Tower": "France",
    "Louvre": "France",
    "Colosseum": "Italy",
    "Leaning Tower of Pisa": "Italy",
    "Brandenburg Gate": "Germany",
    "Neuschwanstein Castle": "Germany",
    "Sagrada Familia": "Spain",
    "Mount Fuji": "Japan",
    "Tokyo Tower": "Japan",
    "Kremlin": "Russia",
    "Great Wall": "China",
    "Forbidden City": "China",
    "Parthenon": "Greece",
    "CN Tower": "Canada",
    "Schonbrunn Palace": "Austria",
    "Taj Mahal": "India",
    "Sydney Opera House": "Australia",
    "Great Pyramid of Giza": "Egypt",
    "Machu Picchu": "Peru",
    "Chichen Itza": "Mexico",
}

HOP1 = "The {landmark} is located in the country of"
HOP2 = "The capital of {country} is"
MULTIHOP = "The capital of the country where the {landmark} is located is"
PARAPHRASES = (
    "The {landmark} can be found in the country of",
    "Tourists visit the {landmark}, which stands in the country of",
)

#: General encyclopedic sentences (none about the landmarks or capitals above): a small
#: stand-in for the Wikipedia sample MEMIT estimates its key covariance from.
COVARIANCE_TEXT: list[str] = [
    "The river flows through a wide valley before it reaches the sea near a small fishing town.",
    "Photosynthesis converts light energy into chemical energy stored in sugars.",
    "The committee met on Tuesday to discuss the new budget and the hiring plan.",
    "She studied mathematics at university and later worked as a software engineer.",
    "The museum's collection includes paintings, sculptures and ancient coins.",
    "Heavy rain caused flooding in several villages, and the roads were closed for days.",
    "The novel follows a young sailor who leaves home to search for his lost brother.",
    "Copper is a good conductor of electricity and is widely used in electrical wiring.",
    "The football team won the championship after a dramatic penalty shootout.",
    "Most birds build nests in spring, when food is plentiful and the days are longer.",
    "The company reported higher profits this quarter thanks to strong online sales.",
    "In the eighteenth century, trade routes connected distant ports across the ocean.",
    "A healthy diet includes vegetables, fruit, whole grains and enough water.",
    "The violinist performed a concerto with the city orchestra last night.",
    "Volcanoes form where molten rock rises through cracks in the Earth's crust.",
    "The law was passed by parliament after a long debate about its costs.",
    "Children learn new words quickly when they hear them used in many situations.",
    "The bridge was built from steel and concrete and opened to traffic in 1932.",
    "Bees pollinate flowers while they collect nectar to make honey.",
    "The programme teaches students how to write clear and correct computer code.",
    "Snow covered the mountains, and the ski resorts opened earlier than usual.",
    "The doctor advised the patient to rest and to drink plenty of fluids.",
    "Ancient farmers grew wheat and barley and kept goats and sheep.",
    "The train was delayed because of a signal failure near the station.",
    "Astronomers observed a distant galaxy whose light took billions of years to arrive.",
    "He opened a small bakery that became famous for its bread and pastries.",
    "The election results were announced late in the evening.",
    "Salt dissolves in water, but oil floats on the surface.",
    "The library offers free courses on history, languages and painting.",
    "Wolves live and hunt in packs led by an experienced pair.",
    "The engineers tested the engine for several hours before the first flight.",
    "Many people enjoy walking in the park on sunny weekend afternoons.",
    "The treaty ended the war and set new borders between the two kingdoms.",
    "Cotton is grown in warm climates and spun into thread for clothing.",
    "The teacher asked the students to read the first chapter before the next lesson.",
    "Earthquakes are measured with instruments called seismometers.",
    "The village holds a market every Saturday where farmers sell their produce.",
    "Her first album sold millions of copies and won several awards.",
    "The hospital opened a new wing for children with rare diseases.",
    "Glaciers carve deep valleys as they move slowly down the mountains.",
]


@dataclass(frozen=True)
class Chain:
    """landmark → country → capital, with the prompts that ask each hop."""

    landmark: str
    country: str

    @property
    def capital(self) -> str:
        return CAPITALS[self.country]

    @property
    def hop1(self) -> tuple[str, str]:
        """(prompt, answer) of the landmark → country hop."""
        return HOP1.format(landmark=self.landmark), f" {self.country}"

    @property
    def hop2(self) -> tuple[str, str]:
        """(prompt, answer) of the country → capital hop."""
        return HOP2.format(country=self.country), f" {self.capital}"

    @property
    def multihop(self) -> tuple[str, str]:
        """(question, answer) of the two-hop question."""
        return MULTIHOP.format(landmark=self.landmark), f" {self.capital}"


def chains() -> list[Chain]:
    """Every landmark chain of :data:`LANDMARKS`, in order. No model calls."""
    return [Chain(lm, c) for lm, c in LANDMARKS.items()]


def _candidates() -> list[str]:
    return [f" {c}" for c in CAPITALS.values()]


def known_chains(lm: Any, candidates: Sequence[Chain] | None = None) -> tuple[list[Chain], dict]:
    """The chains ``lm`` answers before any edit: hop 1 and hop 2 top-1 (first token) and the
    multi-hop question's capital ranked first among every capital's first token. Returns
    ``(passing chains, counts)`` with ``counts`` = ``{"chains", "hop1", "hop2", "multihop",
    "passing", "capitals_known"}`` (``capitals_known``: countries whose hop 2 is top-1, the
    usable new targets). Costs one forward pass per distinct prompt (batched, ``lm.cost``)."""
    pool = list(candidates) if candidates is not None else chains()
    countries = list(CAPITALS)
    prompts = (
        [c.hop1[0] for c in pool]
        + [HOP2.format(country=k) for k in countries]
        + [c.multihop[0] for c in pool]
    )
    lp = last_logprobs(lm, prompts)
    first = {a: int(lm._response_ids(a)[0]) for a in _all_answers(pool)}
    n = len(pool)
    hop1 = [int(lp[i].argmax()) == first[c.hop1[1]] for i, c in enumerate(pool)]
    cap_ok = {
        k: int(lp[n + j].argmax()) == first[f" {CAPITALS[k]}"] for j, k in enumerate(countries)
    }
    cand = np.array(sorted({first[a] for a in _candidates()}))
    multi = []
    for i, c in enumerate(pool):
        row = lp[n + len(countries) + i]
        multi.append(int(cand[row[cand].argmax()]) == first[c.multihop[1]])
    passing = [c for i, c in enumerate(pool) if hop1[i] and cap_ok[c.country] and multi[i]]
    counts = {
        "chains": n,
        "hop1": int(sum(hop1)),
        "hop2": int(sum(cap_ok[c.country] for c in pool)),
        "multihop": int(sum(multi)),
        "passing": len(passing),
        "capitals_known": [k for k, ok in cap_ok.items() if ok],
    }
    return passing, counts


def _all_answers(pool: Sequence[Chain]) -> set[str]:
    out = set(_candidates())
    for c in pool:
        out |= {c.hop1[1], c.hop2[1], c.multihop[1]}
    return out


@dataclass
class EditCase:
    """One edit and its evaluation prompts (see :func:`attribkit.internals.edit_report`).

    ``request``: the edit (hop 1 of ``chain`` moved to ``new_country``); ``paraphrases`` of the
    edit prompt; ``unrelated``: facts that must not change (known facts and other chains' hops
    not naming the landmark or either country); ``multihop``: the two-hop question with the new
    capital; ``candidates``: every capital, to rank the multi-hop answer against."""

    chain: Chain
    new_country: str
    request: dict[str, str]
    paraphrases: list[str]
    unrelated: list[tuple[str, str]]
    multihop: list[tuple[str, str]]
    candidates: list[str] = field(default_factory=_candidates)


def make_edit_cases(
    pool: Sequence[Chain],
    new_countries: Sequence[str],
    seed: int = 0,
    n_unrelated: int = 8,
) -> list[EditCase]:
    """One :class:`EditCase` per chain of ``pool``: its landmark moves to a country drawn (with
    ``seed``) from ``new_countries`` (other than its own; e.g. the ``capitals_known`` of
    :func:`known_chains`). Unrelated facts: the known facts and hop-1 prompts of other chains
    that mention neither the landmark, its old or new country, nor their capitals, ``n_unrelated``
    of them drawn with the seed. Case ``i`` depends only on ``(seed, pool[i])``. No model calls."""
    if not new_countries:
        raise InputError("give at least one country to move landmarks to")
    unknown = [k for k in new_countries if k not in CAPITALS]
    if unknown:
        raise InputError(f"no capital known for {unknown}; choose from {sorted(CAPITALS)}")
    others = list(KNOWN_FACTS) + [c.hop1 for c in chains()]
    out = []
    for c in pool:
        rng = np.random.default_rng([seed, sum(map(ord, c.landmark))])
        choices = [k for k in new_countries if k != c.country]
        if not choices:
            raise InputError(f"no new country for {c.landmark}: give one other than {c.country}")
        new = choices[int(rng.integers(len(choices)))]
        banned = {c.landmark, c.country, new, c.capital, CAPITALS[new]}
        pool_u = [(p, a) for p, a in others if not any(b in p or b in a for b in banned)]
        pick = rng.permutation(len(pool_u))[:n_unrelated]
        out.append(
            EditCase(
                chain=c,
                new_country=new,
                request={
                    "prompt": c.hop1[0],
                    "subject": c.landmark,
                    "target_new": f" {new}",
                    "target_true": f" {c.country}",
                },
                paraphrases=[p.format(landmark=c.landmark) for p in PARAPHRASES],
                unrelated=[pool_u[i] for i in sorted(pick)],
                multihop=[(c.multihop[0], f" {CAPITALS[new]}")],
            )
        )
    return out
