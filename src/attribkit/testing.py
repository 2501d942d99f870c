"""Conformance checks every attribution method must pass, like scikit-learn's ``check_estimator``.

``check_method("kernel_shap")`` runs every check on a registered method (or on a
:class:`MethodSpec` that is not registered) and raises ``AssertionError`` naming the method, the
check and what went wrong. Perturbation methods are run on :func:`toy_scorer` (6 features, a
fixed non-linear numpy function); gradient methods on :func:`toy_gradient_scorer` (a small
torch MLP); image methods on :func:`toy_image_task` (a tiny random CNN, 32 × 32 image); context,
generation and reasoning methods on :func:`toy_context_task`, :func:`toy_generation_task` and
:func:`toy_reasoning_task` (a tiny random Llama); machine-text detectors on
:func:`toy_machine_text_task` (two seeded character bigram models). All checks together take
well under a second for a typical method.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from attribkit.core.attribution import Attribution
from attribkit.core.cost import Cost, CostMeter
from attribkit.core.errors import InputError, ScorerError
from attribkit.core.gradient import GradientScorer
from attribkit.core.registry import SCORER_KINDS, MethodSpec, get_method, run
from attribkit.core.scorer import Scorer
from attribkit.core.units import FeatureUnits, Unit, Units

__all__ = [
    "TOY_KINDS",
    "TOY_PARAMS",
    "ToyKind",
    "ToyNextToken",
    "check_method",
    "iter_checks",
    "toy_agents_task",
    "toy_context_task",
    "toy_few_shot_task",
    "toy_generation_task",
    "toy_gradient_scorer",
    "toy_image_task",
    "toy_machine_text_task",
    "toy_params",
    "toy_reasoning_task",
    "toy_scorer",
]

ToyScorer = Any  # a Scorer, a GradientScorer or a ContextTask

#: Parameters a built-in method needs on the toy inputs (explicit heads on the tiny language
#: model; 16 regions for subset selection, whose superpixels the toy noise image lacks).
TOY_PARAMS: dict[str, dict[str, Any]] = {
    "attention_heads": {"heads": [(0, 1), (1, 2)]},
    "attntrace": {"B": 4},
    "context:hybrid": {"heads": [(0, 1), (1, 2)]},
    "smdl": {"units": np.arange(16).reshape(4, 4).repeat(8, 0).repeat(8, 1)},
    "lima": {"units": np.arange(16).reshape(4, 4).repeat(8, 0).repeat(8, 1)},
    "receiver_heads": {"proximity": 1, "top_k": 2},  # 4 toy sentences, 2 layers
    "responsiveness": {"n_samples": 20},
    "timex": {"epochs": 2},
    "drise": {"n_masks": 64},
    # the tiny random model never writes \boxed{}; a hot temperature varies its answers
    "resampling": {
        "rollouts": 2,
        "max_new_tokens": 4,
        "temperature": 3.0,
        "top_p": 1.0,
        "extract": "last_word",
    },
}


def toy_params(kind: str, name: str) -> dict[str, Any]:
    """The toy parameters of method ``name`` of ``kind``: ``TOY_PARAMS["kind:name"]`` when a name
    is shared by several kinds, else ``TOY_PARAMS[name]``, else none. A copy."""
    return dict(TOY_PARAMS.get(f"{kind}:{name}", TOY_PARAMS.get(name, {})))


class _Counted:
    """Wraps a value function and counts, independently of the scorer, the inputs it received."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn, self.rows, self.grad_rows = fn, 0, 0

    def __call__(self, batch: Any) -> Any:
        rows = len(batch)
        self.rows += rows
        if isinstance(batch, torch.Tensor) and batch.requires_grad and torch.is_grad_enabled():
            self.grad_rows += rows
        return self.fn(batch)


def _toy_function(z: np.ndarray) -> np.ndarray:
    """A fixed non-linear function of any number of features (interactions, saturation, a square)."""
    z = np.asarray(z, dtype=float)
    n = z.shape[1]
    w = 1.5 * np.cos(1.3 * np.arange(n))
    return (
        z @ w + 0.8 * z[:, 0] * z[:, 1 % n] - np.tanh(z[:, n // 2] * z[:, -1]) + 0.2 * z[:, -1] ** 2
    )


def toy_scorer(
    n_units: int = 6, fn: Callable[[Any], Any] | None = None, batch_size: int = 16
) -> Scorer:
    """A small :class:`Scorer` over ``n_units`` features (x = 1, −1.5, 2, ..., baseline 0) and a
    fixed non-linear numpy function (or ``fn``, which receives a (B, n) array). No model behind it."""
    x = np.array([(1.0 + 0.5 * i) * (-1) ** i for i in range(n_units)])
    return Scorer(
        FeatureUnits(x),
        fn if fn is not None else _toy_function,
        target="toy",
        batch_size=batch_size,
    )


def toy_gradient_scorer(
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    unit_index: list[int] | None = None,
) -> GradientScorer:
    """A :class:`GradientScorer` over a fixed 8-input tanh MLP (weights from a seeded generator).

    Units group the inputs as ``[0, 0, 1, 1, 2, 2, 3, -1]`` by default (four units; the last
    input belongs to none). Baseline zeros, batch size 4.
    """
    g = torch.Generator().manual_seed(0)
    w1 = torch.randn(8, 16, generator=g, dtype=torch.float32) / 8**0.5
    b1 = torch.randn(16, generator=g, dtype=torch.float32) * 0.1
    w2 = torch.randn(16, generator=g, dtype=torch.float32) / 4.0
    x = torch.linspace(-1.0, 1.5, 8, dtype=torch.float32)

    def mlp(xb: torch.Tensor) -> torch.Tensor:
        return torch.tanh(xb @ w1 + b1) @ w2

    index = torch.tensor(unit_index if unit_index is not None else [0, 0, 1, 1, 2, 2, 3, -1])
    n = int(index.max()) + 1
    units = Units([Unit(i, f"group{i}") for i in range(n)])
    return GradientScorer(
        forward or mlp, x, unit_index=index, units=units, target="toy mlp", batch_size=4
    )


CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "The capital of France is Paris. Paris is a city on the Seine.",
    "Context: the cat sat on the mat. The dog ran in the park.",
    "Query: where did the cat sit? Answer: on the mat.",
    "Alice went to the market and bought apples, pears and bread.",
    "What is the capital of Italy? Rome is the capital of Italy.",
    "The quick brown fox jumps over the lazy dog 0123456789 times!",
]


def make_tiny_tokenizer() -> Any:
    """A byte-level BPE tokenizer trained in-process (no download) with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "<|im_end|>", "<|im_start|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


#: The shape shared by the tiny test transformers (any decoder family accepts these keys).
TINY_SHAPE = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
)


def make_tiny_model(vocab_size: int, seed: int = 0) -> Any:
    """A 2-layer randomly initialised LlamaForCausalLM (hidden 32, 4 heads, 2 kv heads)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        **TINY_SHAPE,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    model = LlamaForCausalLM(config).eval()
    # Larger-than-default weights so that log-probabilities differ visibly between inputs.
    with torch.no_grad():
        model.model.embed_tokens.weight.normal_(0.0, 1.0)
    return model


def tiny_language_model(seed: int = 0) -> Any:
    """A :class:`~attribkit.models.lm.LanguageModel` over a tiny random Llama (2 layers, hidden
    32) with an in-process BPE tokenizer and a chat template: no download, built in well under a
    second. For fast tests of code that needs a real transformer."""
    from attribkit.models.lm import LanguageModel

    tok = make_tiny_tokenizer()
    return LanguageModel(make_tiny_model(len(tok), seed=seed), tok, name="tiny")


TOY_CONTEXT = [
    "The cat sat on the mat.",
    "The dog ran in the park.",
    "Alice went to the market.",
    "She bought apples and pears.",
    "Paris is a city on the Seine.",
    "Rome is the capital of Italy.",
]


def toy_context_task(n_units: int = 6, lm: Any = None) -> Any:
    """A :class:`~attribkit.tasks.context.ContextTask` over ``n_units`` short sentences on the
    tiny language model, with a forced response. No real model behind it."""
    from attribkit.tasks.context import ContextTask

    lm = lm if lm is not None else tiny_language_model()
    context = TOY_CONTEXT[:n_units]
    return ContextTask(lm, context, "Where did the cat sit?", "On the mat.", units=context)


class _CountingLM:
    """Proxies a LanguageModel and counts, independently of its meter, the sequences it runs."""

    def __init__(self, lm: Any) -> None:
        self._lm, self.rows, self.grad_rows = lm, 0, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lm, name)

    def token_logprobs(self, prompts: Any, responses: Any, **kw: Any) -> Any:
        self.rows += 1 if isinstance(prompts, str) else len(prompts)
        return self._lm.token_logprobs(prompts, responses, **kw)

    def set_reference(self, *args: Any, **kw: Any) -> Any:
        self.rows += 1
        return self._lm.set_reference(*args, **kw)

    def attention_rows(self, *args: Any, **kw: Any) -> Any:
        self.rows += 1
        return self._lm.attention_rows(*args, **kw)


TOY_PROBLEM = "What is 2 + 3?"
TOY_TRACE = (
    "I need to add 2 and 3. First, 2 + 3 = 5. Let me check: 5 - 3 = 2.\n\nSo the answer is 5."
)


def toy_reasoning_task(text: str = TOY_TRACE, lm: Any = None, answer: str = "5") -> Any:
    """A :class:`~attribkit.tasks.reasoning.ReasoningTask` on the tiny language model: a short
    arithmetic trace (4 sentences by Thought Anchors' rules) and its answer. No real model
    behind it."""
    from attribkit.tasks.reasoning import ReasoningTask, ReasoningTrace

    lm = lm if lm is not None else tiny_language_model()
    return ReasoningTask(lm, ReasoningTrace(TOY_PROBLEM, text, answer=answer))


TOY_LOG = (
    ("User", "Find the cheapest of three train tickets: 12, 9 and 15 euros."),
    ("Planner", "Searcher, list the prices; Verifier, check the minimum."),
    ("Searcher", "The prices are 12, 19 and 15 euros."),
    ("Verifier", "The minimum of 12, 19 and 15 is 12."),
    ("Planner", "The cheapest ticket costs 12 euros."),
)


def _tiny_long_lm() -> Any:
    """The tiny language model with a 2,048-position window: the judges' prompts run past its
    512 positions, and its rotary positions take any length, so only the limit changes (shorter
    prompts score the same)."""
    lm = tiny_language_model()
    lm.model.config.max_position_embeddings = 2048
    return lm


def toy_agents_task(turns: Any = TOY_LOG, lm: Any = None, judge: bool = True) -> Any:
    """An :class:`~attribkit.tasks.agents.AgentTask` on the tiny language model: a 5-turn log of
    4 agents (a planted misreading at step 2) whose last turn is the scored outcome (so 4 turn
    units), with a :class:`~attribkit.models.judge.LocalJudge` on the same model unless
    ``judge=False``. No real model behind it."""
    from attribkit.models.judge import LocalJudge
    from attribkit.tasks.agents import AgentLog, AgentTask

    lm = lm if lm is not None else _tiny_long_lm()
    log = AgentLog(
        [{"agent": a, "content": c} for a, c in turns],
        ground_truth="9 euros",
        mistake_agent="Searcher",
        mistake_step=2 if len(turns) > 2 else None,
    )
    return AgentTask(log, lm=lm, judge=LocalJudge(lm) if judge else None)


def toy_generation_task(
    prompt: str = "the cat sat on the mat", response: str = "the cat", lm: Any = None
) -> Any:
    """A :class:`~attribkit.tasks.generation.GenerationTask` on the tiny language model with a
    forced two-token response. No real model behind it."""
    from attribkit.tasks.generation import GenerationTask

    lm = lm if lm is not None else tiny_language_model()
    return GenerationTask(lm, prompt, response)


def warm_template_cache(task: Any) -> None:
    """Build a GenerationTask's chat-template cache now, so that a test can count a method's
    model calls without it (the first method that needs the cache otherwise builds it and counts
    its passes: 1, or 3 the first time a model is used)."""
    task._cached_prefix(torch.tensor([task.ids], device=task.lm.device), None)


class _Rows:
    """An independent count of the sequences a toy model ran (shared by a model pair)."""

    def __init__(self) -> None:
        self.rows, self.grad_rows = 0, 0


#: The toy next-token model's vocabulary: the newline and printable ASCII, one token each.
TOY_ALPHABET = "\n" + "".join(chr(c) for c in range(32, 127))
TOY_MACHINE_TEXT = "The cat sat on the mat. The dog ran in the park."


class ToyNextToken:
    """A tiny deterministic :class:`~attribkit.models.next_token.NextTokenModel`: a character
    bigram model over :data:`TOY_ALPHABET` (96 tokens) whose log-probability table comes from a
    seeded generator (logits ~ N(0, ``scale``²); one extra row is the start state). Counts one
    forward pass per sequence on ``meter`` and, independently, on ``counter.rows``;
    ``nan=True`` makes a broken model that returns NaN. :meth:`sample` writes text from it
    (exactly, by the table). No real model behind it."""

    def __init__(
        self,
        seed: int = 0,
        *,
        scale: float = 2.0,
        nan: bool = False,
        counter: Any = None,
        name: str | None = None,
    ) -> None:
        self.name = name or f"toy-bigram-{seed}"
        self.vocab_size = len(TOY_ALPHABET)
        self.meter = CostMeter()
        self.batch_size = 8
        self.counter = counter if counter is not None else _Rows()
        logits = np.random.default_rng(seed).normal(
            0.0, scale, (self.vocab_size + 1, self.vocab_size)
        )
        top = logits.max(axis=1, keepdims=True)
        self.table = logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
        if nan:
            self.table[:] = np.nan
        self._index = {c: i for i, c in enumerate(TOY_ALPHABET)}

    def encode(self, text: str) -> list[int]:
        """One id per character; InputError for a character outside printable ASCII."""
        bad = sorted({c for c in text if c not in self._index})
        if bad:
            raise InputError(f"the toy model knows printable ASCII only, not {bad[:3]}")
        return [self._index[c] for c in text]

    def token_strings(self, ids: Any) -> list[str]:
        return [TOY_ALPHABET[int(i)] for i in ids]

    def logprobs(self, sequences: Any) -> list[np.ndarray]:
        """The table's rows for each prefix: one forward pass per sequence, one batch."""
        with self.meter.timed():
            start = self.vocab_size
            out = [self.table[[start, *[int(i) for i in s[:-1]]]].copy() for s in sequences]
        self.meter.cost.forward_passes += len(out)
        self.meter.cost.batches += 1
        self.counter.rows += len(out)
        return out

    def sample(self, n_tokens: int, rng: np.random.Generator, temperature: float = 1.0) -> str:
        """``n_tokens`` characters drawn from the table at ``temperature`` (0 = greedy).
        No model calls counted."""
        ids, prev = [], self.vocab_size
        for _ in range(n_tokens):
            row = self.table[prev]
            if temperature == 0:
                nxt = int(np.argmax(row))
            else:
                p = np.exp((row - row.max()) / temperature)
                nxt = int(rng.choice(self.vocab_size, p=p / p.sum()))
            ids.append(nxt)
            prev = nxt
        return "".join(self.token_strings(ids))


def toy_machine_text_task(
    text: str = TOY_MACHINE_TEXT,
    model: Any = None,
    reference: Any = None,
    units: str = "tokens",
) -> Any:
    """A :class:`~attribkit.tasks.machine_text.MachineTextTask` on two toy character bigram
    models (:class:`ToyNextToken` seeds 0 and 1: scoring and reference). No real model behind
    it."""
    from attribkit.tasks.machine_text import MachineTextTask

    model = model if model is not None else ToyNextToken(0)
    reference = reference if reference is not None else ToyNextToken(1)
    return MachineTextTask(text, model, reference=reference, units=units)


class _CountingModel:
    """Counts, with a forward hook on the torch model, the sequences it runs."""

    def __init__(self, model: Any) -> None:
        self.rows, self.grad_rows = 0, 0

        def hook(module: Any, args: tuple, kwargs: dict) -> None:
            x = kwargs.get("input_ids")
            x = kwargs.get("inputs_embeds") if x is None else x
            self.rows += int(x.shape[0])

        model.register_forward_pre_hook(hook, with_kwargs=True)


def toy_image_task(size: int = 32, seed: int = 0) -> Any:
    """An :class:`~attribkit.tasks.image.ImageTask` on a tiny random CNN (3 classes) and a
    random ``size`` × ``size`` image (default units: 2-px patches at 32 px)."""
    from attribkit.models.image import ImageClassifier
    from attribkit.tasks.image import ImageTask

    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 6, 3, padding=1, stride=2),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(6, 3),
    )
    image = np.random.default_rng(seed).random((size, size, 3)).astype(np.float32)
    model = ImageClassifier(net, input_size=None, normalize=None, batch_size=8, name="toy-cnn")
    model.default_layers = {"middle": "1", "final": "3"}
    return ImageTask(model, image)


class _CountingModule:
    """Counts, with hooks on a torch module, the inputs it ran forward and backward."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.rows, self.grad_rows = 0, 0

        def forward_hook(_m: Any, args: tuple) -> None:
            self.rows += int(args[0].shape[0])
            if torch.is_grad_enabled():
                self.grad_rows += int(args[0].shape[0])

        module.register_forward_pre_hook(forward_hook)


def _nan_embeddings(task: Any) -> Any:
    with torch.no_grad():  # a broken model: every weight of its embedding is NaN
        task.lm.model.get_input_embeddings().weight.fill_(float("nan"))
    return task


def _nan_head(task: Any) -> Any:
    with torch.no_grad():  # the model breaks after the task was built
        task.model.module[-1].bias.fill_(float("nan"))
    return task


def _counted_scorer() -> tuple[Scorer, _Counted]:
    counted = _Counted(_toy_function)
    return toy_scorer(fn=counted), counted


def _counted_gradient_scorer() -> tuple[GradientScorer, _Counted]:
    base = toy_gradient_scorer()
    counted = _Counted(base.forward_fn)
    base.forward_fn = counted
    return base, counted


def _counted_context_task() -> tuple[Any, Any]:
    counting = _CountingLM(tiny_language_model())
    return toy_context_task(lm=counting), counting


def _counted_reasoning_task() -> tuple[Any, Any]:
    # counted at the torch model: reasoning methods score through the LM or run it directly
    lm = tiny_language_model()
    return toy_reasoning_task(lm=lm), _CountingModel(lm.model)


def _counted_agents_task() -> tuple[Any, Any]:
    lm = _tiny_long_lm()
    return toy_agents_task(lm=lm), _CountingModel(lm.model)


def _counted_generation_task() -> tuple[Any, Any]:
    task = toy_generation_task()
    return task, _CountingModel(task.lm.model)


def _counted_image_task() -> tuple[Any, Any]:
    task = toy_image_task()
    return task, _CountingModule(task.model.module)


def toy_tabular_task(n_features: int = 6, seed: int = 0) -> Any:
    """A TabularTask on a tiny random torch MLP (2 classes) and a random row; every feature but
    the last can move within [-3, 3] (continuous), the last is immutable; target class 1."""
    from attribkit.models.actions import ActionSet, FeatureRule
    from attribkit.tasks.tabular import TabularTask

    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(n_features, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)
    )
    rows = np.clip(np.random.default_rng(seed).normal(size=(32, n_features)), -2.5, 2.5)
    names = [f"f{i}" for i in range(n_features)]
    rules = {n: FeatureRule(n, True, "both", -3.0, 3.0) for n in names[: max(1, n_features - 1)]}
    return TabularTask(
        net,
        rows[0],
        feature_names=names,
        background=rows,
        target=1,
        actions=ActionSet(names, rules),
    )


def _counted_tabular_task() -> tuple[Any, Any]:
    task = toy_tabular_task()
    return task, _CountingModule(task.model.module)


def toy_timeseries_task(units: str = "cells", width: int | None = None) -> Any:
    """A TimeSeriesTask on a tiny random 1-D CNN (2 channels, 3 classes), a 12-step series and
    8 background series (TimeX trains on them)."""
    from attribkit.models.timeseries import SeriesCNN
    from attribkit.tasks.timeseries import TimeSeriesTask

    torch.manual_seed(0)
    net = SeriesCNN(2, 3, width=4, dilations=(1, 2))
    rng = np.random.default_rng(0)
    x, background = rng.normal(size=(12, 2)), rng.normal(size=(8, 12, 2))
    return TimeSeriesTask(net, x, units=units, width=width, background=background)


def _counted_timeseries_task() -> tuple[Any, Any]:
    task = toy_timeseries_task()
    return task, _CountingModule(task.model)  # its hook is copied into TimeX's surrogate


def _nan_timeseries_task() -> Any:
    task = toy_timeseries_task()
    with torch.no_grad():
        task.model.head.bias.fill_(float("nan"))
    return task


def toy_detection_task(nan: bool = False) -> Any:
    """A DetectionTask on a toy detector that scores the kept share of a red 16-px square in a
    32 × 32 noise image (candidates: the square's box and a shifted one; classes 'square' and
    'other'); units: a 4 × 4 grid of 8-px cells. The target is the top detection (one forward
    pass to build), or with ``nan=True`` (a detector returning NaN) the given square box (no
    pass until a method runs). ``task.toy_counter.rows`` counts the detector's images."""
    from attribkit.tasks.detection import CallableDetector, DetectionTask

    counter = _Rows()

    def square(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        counter.rows += len(images)
        red = (images[..., 0] > 0.9) & (images[..., 1] < 0.1) & (images[..., 2] < 0.1)
        share = red[:, 8:24, 8:24].mean(axis=(1, 2))
        boxes = np.broadcast_to(np.array([[8.0, 8, 24, 24], [16, 16, 32, 32]]), (len(images), 2, 4))
        scores = np.stack([np.stack([share, share / 2], 1), np.full((len(images), 2), 0.1)], 2)
        return boxes.copy(), scores * np.nan if nan else scores

    image = np.random.default_rng(0).uniform(0.2, 0.6, (32, 32, 3)).astype(np.float32)
    image[8:24, 8:24] = (1.0, 0.0, 0.0)
    detector = CallableDetector(square, ["square", "other"], batch_size=64, name="toy-square")
    grid = np.arange(16).reshape(4, 4).repeat(8, 0).repeat(8, 1)
    target: dict[str, Any] = {"box": (8, 8, 24, 24), "label": 0} if nan else {}
    task = DetectionTask(detector, image, units=grid, **target)
    task.toy_counter = counter  # type: ignore[attr-defined]
    return task


def _counted_detection_task() -> tuple[Any, Any]:
    task = toy_detection_task()
    counter = task.toy_counter
    counter.rows = 0  # the pass that found the detections is not the method's
    return task, counter


def _counted_machine_text_task() -> tuple[Any, Any]:
    counter = _Rows()  # both models of the pair count here
    model, reference = ToyNextToken(0, counter=counter), ToyNextToken(1, counter=counter)
    return toy_machine_text_task(model=model, reference=reference), counter


class _CountingMatcher:
    """A MatchingSegmenter wrapper counting query images through ``match`` and decoder passes
    into ``counter.rows`` (``nan=True``: the logits are NaN)."""

    def __init__(self, model: Any, counter: _Rows, nan: bool = False) -> None:
        self.model, self.counter, self.nan = model, counter, nan

    def match(self, query: Any, support: Any, support_mask: Any) -> Any:
        self.counter.rows += len(query)
        result = self.model.match(query, support, support_mask)
        if self.nan:
            result.logits = result.logits * float("nan")
        return result

    def decode(self, result: Any, ablate: Any = ()) -> Any:
        self.counter.rows += 1
        return self.model.decode(result, ablate=ablate)


def toy_few_shot_task(size: int = 16, nan: bool = False) -> Any:
    """A one-shot SupportTask on an untrained (seeded) DigitMatcher: a bright square on a dark
    16 × 16 support, its mask, a query holding the same square shifted; the explanation region
    is the query's square (given, so building costs no pass). ``size=1`` gives a one-pixel
    support (one unit). ``task.toy_counter.rows`` counts query images and decoder passes."""
    from attribkit.by_design.affinity import DigitMatcher, SupportTask

    counter = _Rows()
    torch.manual_seed(0)
    model = _CountingMatcher(DigitMatcher(width=8).eval(), counter, nan=nan)
    support = np.zeros((size, size), np.float32)
    mask = np.zeros((size, size), np.float32)
    lo, hi = (size // 4, size // 4 + size // 2) if size > 1 else (0, 1)
    support[lo:hi, lo:hi], mask[lo:hi, lo:hi] = 1.0, 1.0
    query = np.zeros((16, 16), np.float32)
    query[6:14, 6:14] = 1.0
    region = np.zeros((16, 16), bool)
    region[6:14, 6:14] = True
    task = SupportTask(model, support, mask, query, explanation_mask=region)
    task.toy_counter = counter  # type: ignore[attr-defined]
    return task


def _counted_few_shot_task() -> tuple[Any, Any]:
    task = toy_few_shot_task()
    return task, task.toy_counter


def _nan_gradient_scorer() -> GradientScorer:
    def forward(xb: torch.Tensor) -> torch.Tensor:
        return xb.sum(dim=-1) * float("nan")

    return toy_gradient_scorer(forward=forward)


@dataclass(frozen=True)
class ToyKind:
    """How the conformance suite builds inputs for the methods of one kind.

    ``make()`` returns a fresh toy (Scorer, GradientScorer or task) and an independent counter of
    what its model ran (``.rows``, ``.grad_rows``); ``one_unit(params)`` a toy with a single unit
    and the params to run it with; ``broken()`` a toy whose model returns NaN. A new task kind
    adds its entry to :data:`TOY_KINDS`.
    """

    make: Callable[[], tuple[Any, Any]]
    one_unit: Callable[[dict[str, Any]], tuple[Any, dict[str, Any]]]
    broken: Callable[[], Any]


TOY_KINDS: dict[str, ToyKind] = {
    "perturbation": ToyKind(
        _counted_scorer,
        lambda p: (toy_scorer(1, fn=lambda z: np.asarray(z, dtype=float)[:, 0] * 2.0), p),
        lambda: toy_scorer(fn=lambda z: np.full(len(z), np.nan)),
    ),
    "gradient": ToyKind(
        _counted_gradient_scorer,
        lambda p: (toy_gradient_scorer(unit_index=[0] * 8), p),
        _nan_gradient_scorer,
    ),
    "context": ToyKind(
        _counted_context_task,
        lambda p: (toy_context_task(n_units=1), p),
        lambda: _nan_embeddings(toy_context_task()),
    ),
    "generation": ToyKind(
        _counted_generation_task,
        lambda p: (toy_generation_task(prompt="a", response="a"), p),
        lambda: _nan_embeddings(toy_generation_task()),
    ),
    "reasoning": ToyKind(
        _counted_reasoning_task,
        lambda p: (toy_reasoning_task(text="I need to add 2 and 3."), p),  # one sentence
        lambda: _nan_embeddings(toy_reasoning_task()),
    ),
    "agents": ToyKind(
        _counted_agents_task,
        lambda p: (toy_agents_task(turns=TOY_LOG[:2]), p),  # one turn before the outcome
        lambda: _nan_embeddings(toy_agents_task()),
    ),
    "machine_text": ToyKind(
        _counted_machine_text_task,
        # one sentence unit (the text has many tokens: building the task succeeds)
        lambda p: (toy_machine_text_task("The cat sat on the mat.", units="sentences"), p),
        lambda: toy_machine_text_task(model=ToyNextToken(0, nan=True)),
    ),
    "tabular": ToyKind(
        _counted_tabular_task,
        lambda p: (toy_tabular_task(n_features=1), p),
        lambda: _nan_head(toy_tabular_task()),
    ),
    "timeseries": ToyKind(
        _counted_timeseries_task,
        lambda p: (toy_timeseries_task(units="windows", width=12), p),  # one window = one unit
        _nan_timeseries_task,
    ),
    "detection": ToyKind(
        _counted_detection_task,
        lambda p: (toy_detection_task(), {**p, "units": np.zeros((32, 32), dtype=int)}),
        lambda: toy_detection_task(nan=True),
    ),
    "few_shot": ToyKind(
        _counted_few_shot_task,
        lambda p: (toy_few_shot_task(size=1), p),
        lambda: toy_few_shot_task(nan=True),
    ),
    "image": ToyKind(
        _counted_image_task,
        lambda p: (toy_image_task(), {**p, "units": np.zeros((32, 32), dtype=int)}),  # one region
        lambda: _nan_head(toy_image_task()),
    ),
}


def _toy_kind(kind: str) -> ToyKind:
    if kind not in TOY_KINDS:
        raise AssertionError(
            f"no toy inputs for methods of kind {kind!r}: add a ToyKind to "
            "attribkit.testing.TOY_KINDS"
        )
    return TOY_KINDS[kind]


def _make(kind: str) -> tuple[ToyScorer, Any]:
    """A fresh toy of the method's kind and an independent counter of what its model ran."""
    return _toy_kind(kind).make()


def _run(spec: MethodSpec, scorer: ToyScorer, params: dict[str, Any]) -> Attribution:
    return run(spec, scorer, **params)  # type: ignore[no-any-return]


def _with_seed(spec: MethodSpec, params: dict[str, Any]) -> dict[str, Any]:
    if "seed" in inspect.signature(spec.fn).parameters and "seed" not in params:
        return {**params, "seed": 0}
    return dict(params)


def _fail(spec: MethodSpec, check: str, message: str) -> AssertionError:
    return AssertionError(f"method {spec.name!r} fails check {check!r}: {message}")


@contextmanager
def _expect(spec: MethodSpec, check: str, error: type[Exception], why: str) -> Iterator[None]:
    try:
        yield
    except error:
        return
    except Exception as e:  # a different exception is a failure with a useful message
        raise _fail(
            spec, check, f"{why}: expected {error.__name__}, got {type(e).__name__}: {e}"
        ) from e
    raise _fail(spec, check, f"{why}: expected {error.__name__}, but nothing was raised")


def task_kinds() -> list[str]:
    """The ``kind`` of every Task class defined so far (the known method name spaces)."""
    from attribkit.core.task import Task

    found, todo = set(), list(Task.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if isinstance(getattr(cls, "kind", None), str):
            found.add(cls.kind)
    return sorted(found)


# --- the checks ------------------------------------------------------------------------------
def check_spec(spec: MethodSpec, params: dict[str, Any]) -> None:
    """The registration is complete: known kind, a cost formula, a citation, a docstring."""
    kinds = (*SCORER_KINDS, *task_kinds())
    if spec.kind not in kinds:
        raise _fail(spec, "spec", f"kind {spec.kind!r} is not one of {', '.join(kinds)}")
    if not spec.cost.strip():
        raise _fail(spec, "spec", "the registration gives no cost formula")
    if not spec.cite.strip():
        raise _fail(spec, "spec", "the registration cites no paper")
    if not (spec.fn.__doc__ or "").strip():
        raise _fail(spec, "spec", "the method has no docstring")


def check_output(spec: MethodSpec, params: dict[str, Any]) -> None:
    """One finite score per unit (NaN = unscored, but not all), named after the method."""
    scorer, _ = _make(spec.kind)
    a = _run(spec, scorer, _with_seed(spec, params))
    if not isinstance(a, Attribution):
        raise _fail(spec, "output", f"returned {type(a).__name__}, not an Attribution")
    if spec.own_units:  # e.g. residual components: one score per unit of its own
        n = len(a.units)
    elif spec.kind == "image":  # the units given, else the method's default split
        given = params.get("units")
        n = len(scorer.make_units(spec.defaults.get("units") if given is None else given))
    else:
        n = scorer.n_units
    if spec.kind == "image" and a.heatmap.shape != scorer.shape:
        raise _fail(spec, "output", f"heatmap {a.heatmap.shape}, image {scorer.shape}")
    if a.scores.ndim not in (1, 2) or a.scores.shape[-1] != n:
        raise _fail(spec, "output", f"scores have shape {a.scores.shape}, expected ({n},)")
    if len(a.units) != n:
        raise _fail(spec, "output", f"{len(a.units)} units in the result, the scorer has {n}")
    scored = ~np.isnan(a.scores)
    if not scored.any():
        raise _fail(spec, "output", "every score is NaN: no unit was scored")
    if not np.isfinite(a.scores[scored]).all():
        raise _fail(spec, "output", f"scores contain infinities: {a.scores}")
    if a.method != spec.name:
        raise _fail(
            spec, "output", f"result names its method {a.method!r}, registered {spec.name!r}"
        )


def check_deterministic(spec: MethodSpec, params: dict[str, Any]) -> None:
    """The same seed on two fresh scorers gives identical scores."""
    p = _with_seed(spec, params)
    first = _run(spec, _make(spec.kind)[0], p).scores
    second = _run(spec, _make(spec.kind)[0], p).scores
    if first.shape != second.shape or not np.array_equal(first, second, equal_nan=True):
        raise _fail(
            spec,
            "deterministic",
            f"two runs with the same parameters {p} differ: {first} vs {second}; draw randomness "
            "only from np.random.default_rng(seed) / torch.Generator().manual_seed(seed)",
        )


def check_cost(spec: MethodSpec, params: dict[str, Any]) -> None:
    """Reported cost = what the scorer spent = inputs the model received; cache hits are free."""
    scorer, counted = _make(spec.kind)
    p = _with_seed(spec, params)
    a = _run(spec, scorer, p)
    if spec.kind not in SCORER_KINDS:  # a task: compare with what its model ran
        if a.cost.forward_passes != counted.rows or counted.rows <= 0 or not a.cost.seconds > 0:
            raise _fail(
                spec,
                "cost",
                f"reports {a.cost.forward_passes} forward passes in {a.cost.seconds}s but the "
                f"model ran {counted.rows} inputs",
            )
        if spec.kind == "image" and a.cost.backward_passes > counted.grad_rows:
            raise _fail(
                spec,
                "cost",
                f"reports {a.cost.backward_passes} backward passes but only {counted.grad_rows} "
                "inputs ran with gradients",
            )
        return
    _check_cost_matches(spec, a, scorer.cost, counted, "first run")
    if a.cost.forward_passes <= 0:
        raise _fail(spec, "cost", "reports 0 forward passes: every method must query the model")
    if spec.kind != "perturbation":
        return
    # a rerun with the same seed on the warm scorer is answered from the cache
    before, rows_before = scorer.cost.copy(), counted.rows
    again = _run(spec, scorer, p)
    spent = scorer.cost - before
    if again.cost.forward_passes != counted.rows - rows_before:
        raise _fail(
            spec,
            "cost",
            f"on a warm cache it reports {again.cost.forward_passes} forward passes but the model "
            f"received {counted.rows - rows_before} inputs; cache hits must not count as passes",
        )
    if counted.rows != rows_before:
        raise _fail(
            spec,
            "cost",
            f"a rerun with the same parameters evaluated {counted.rows - rows_before} new inputs; "
            "it should ask for the same masks and be answered from the cache",
        )
    if again.cost.cache_hits != spent.cache_hits or spent.cache_hits <= 0:
        raise _fail(
            spec,
            "cost",
            f"on a warm cache it reports {again.cost.cache_hits} cache hits, the scorer counted "
            f"{spent.cache_hits}; measure the run with `with measure(scorer) as cost:`",
        )
    if not np.array_equal(a.scores, again.scores, equal_nan=True):
        raise _fail(spec, "cost", "scores change when the answers come from the cache")


def _check_cost_matches(
    spec: MethodSpec, a: Attribution, spent: Cost, counted: _Counted, when: str
) -> None:
    if not isinstance(a.cost, Cost):
        raise _fail(spec, "cost", f"cost is {type(a.cost).__name__}, not a Cost")
    for f in fields(Cost):
        if f.name == "seconds":
            continue
        mine, true = getattr(a.cost, f.name), getattr(spent, f.name)
        if mine != true:
            raise _fail(
                spec,
                "cost",
                f"{when}: reports {f.name}={mine} but the scorer spent {true}; do all model work "
                "inside `with measure(scorer) as cost:` and pass that cost to the Attribution",
            )
    if a.cost.forward_passes != counted.rows:
        raise _fail(
            spec,
            "cost",
            f"{when}: reports {a.cost.forward_passes} forward passes but the model received "
            f"{counted.rows} inputs",
        )
    if spec.kind == "gradient" and a.cost.backward_passes != counted.grad_rows:
        raise _fail(
            spec,
            "cost",
            f"{when}: reports {a.cost.backward_passes} backward passes but gradients were taken "
            f"for {counted.grad_rows} inputs",
        )
    if not a.cost.seconds > 0:
        raise _fail(spec, "cost", f"{when}: reports {a.cost.seconds} seconds; time the run")
    if a.cost.seconds + 1e-9 < spent.seconds:
        raise _fail(
            spec,
            "cost",
            f"{when}: reports {a.cost.seconds:.6f}s, less than the {spent.seconds:.6f}s the model took",
        )


def check_round_trip(spec: MethodSpec, params: dict[str, Any]) -> None:
    """The result survives to_dict → strict JSON → from_dict unchanged."""
    a = _run(spec, _make(spec.kind)[0], _with_seed(spec, params))
    d = a.to_dict()
    try:
        text = json.dumps(d, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise _fail(
            spec, "round_trip", f"to_dict() is not strict JSON ({e}); check params/extras"
        ) from e
    b = Attribution.from_dict(json.loads(text))
    if not np.array_equal(a.scores, b.scores, equal_nan=True):
        raise _fail(spec, "round_trip", f"scores change: {a.scores} -> {b.scores}")
    d2 = b.to_dict()
    for key in ("created", "attribkit"):
        d.pop(key, None)
        d2.pop(key, None)
    for key in d:
        if d[key] != d2.get(key):
            raise _fail(spec, "round_trip", f"field {key!r} changes: {d[key]!r} -> {d2.get(key)!r}")


def check_one_unit(spec: MethodSpec, params: dict[str, Any]) -> None:
    """A scorer with a single unit is refused with InputError (nothing to rank it against);
    methods with units of their own skip this check."""
    if spec.own_units:
        return
    scorer, params = _toy_kind(spec.kind).one_unit(params)
    with _expect(spec, "one_unit", InputError, "a 1-unit scorer"):
        _run(spec, scorer, _with_seed(spec, params))


def check_nan_scorer(spec: MethodSpec, params: dict[str, Any]) -> None:
    """A value function returning NaN surfaces as ScorerError, not as NaN scores."""
    scorer = _toy_kind(spec.kind).broken()
    with _expect(spec, "nan_scorer", ScorerError, "a value function that returns NaN"):
        _run(spec, scorer, _with_seed(spec, params))


_CHECKS: list[Callable[[MethodSpec, dict[str, Any]], None]] = [
    check_spec,
    check_output,
    check_deterministic,
    check_cost,
    check_round_trip,
    check_one_unit,
    check_nan_scorer,
]


def iter_checks(
    method: str | MethodSpec, kind: str | None = None, **params: Any
) -> Iterator[tuple[str, Callable[[], None]]]:
    """Yield ``(check name, zero-argument callable)`` for every check, to run them one by one
    (``kind`` picks among methods of the same name, e.g. ``integrated_gradients``)."""
    spec = method if isinstance(method, MethodSpec) else get_method(method, kind=kind)
    for check in _CHECKS:
        name = check.__name__.removeprefix("check_")
        yield name, (lambda c=check, name=name: _guarded(c, name, spec, params))


def _guarded(
    check: Callable[[MethodSpec, dict[str, Any]], None],
    name: str,
    spec: MethodSpec,
    params: dict[str, Any],
) -> None:
    """Run one check; an unexpected exception becomes an AssertionError naming method and check."""
    try:
        check(spec, params)
    except AssertionError:
        raise
    except Exception as e:
        raise _fail(spec, name, f"raised {type(e).__name__}: {e}") from e


def check_method(method: str | MethodSpec, kind: str | None = None, **params: Any) -> None:
    """Run every conformance check on ``method`` (a registered name — with ``kind`` where
    several kinds share it, e.g. ``check_method("integrated_gradients", kind="image")`` — or a
    MethodSpec).

    ``params`` are passed to every call of the method (``seed=0`` is added when the method takes
    a seed). Checks: the registration is complete; one finite score per unit; identical scores
    for the same seed; reported cost equals what the scorer spent and what the model received,
    with cache hits not counted and positive time; the result round-trips through strict JSON;
    a 1-unit scorer raises InputError; a NaN-returning value function raises ScorerError.
    Raises AssertionError naming the method and the failed check. Cost: a few dozen runs of the
    method on toy scorers (no real model).
    """
    for _, check in iter_checks(method, kind, **params):
        check()
