"""Attributing every record of a JSONL dataset into a run store, resumably.

:func:`run_dataset` validates the whole file first, skips the records the store already holds for
the method (so a restarted run resumes where it stopped), and writes each finished record, with
its span results, in one transaction as soon as it is done: a crash loses only the records in
flight. Records run here (``backend="local"``) or on a Ray actor pool (``backend="ray"``, see
:mod:`attribkit.dataset.ray_backend`).

A *dataset task* turns one record into ``(Attribution, inputs, span Attributions)`` (optionally
followed by the model calls it spent) on a loaded model: ``context`` (a response traced to its
context), ``generation`` (each generated token to the input tokens), ``image`` (a class to the
regions of an image), ``reasoning`` (a final answer to the sentences of a chain of thought),
``agents`` (a multi-agent failure to the turns and agents of its log), ``machine_text`` (a
zero-shot detector's statistic to the tokens or sentences of a text) and ``provenance`` (an
open-set source decision, a known author or "unknown", to the sentences or words of a text);
adding one is one function plus an entry in :data:`TASKS` (and a record schema in
:data:`attribkit.dataset.records.SCHEMAS`).

A provenance run needs no language model: its source model is fitted once per run, before any
record runs, from a folder of known texts (``known=``, :func:`~attribkit.models.authorship.
open_set_authorship`), or given fitted (``model=``); it runs on the local backend only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.errors import AttribkitError, InputError
from attribkit.dataset.records import (
    SKIMAGE,
    Record,
    agent_log,
    read_records,
    reasoning_trace,
    skimage_loader,
)
from attribkit.tasks.agents import DEFAULT_METHOD as AGENTS_METHOD
from attribkit.tasks.context import DEFAULT_METHOD
from attribkit.tasks.generation import DEFAULT_METHOD as GENERATION_METHOD
from attribkit.tasks.machine_text import DEFAULT_METHOD as MACHINE_TEXT_METHOD
from attribkit.tasks.provenance import DEFAULT_METHOD as PROVENANCE_METHOD
from attribkit.tasks.reasoning import DEFAULT_METHOD as REASONING_METHOD

__all__ = [
    "BACKENDS",
    "TASKS",
    "DatasetSummary",
    "DatasetTask",
    "FittedSource",
    "Outcome",
    "check_model",
    "load_image",
    "process_record",
    "run_dataset",
]

BACKENDS = ("local", "ray")
UNITS = ("sentences", "passages")

TaskFn = Callable[..., tuple[Any, ...]]


@dataclass(frozen=True)
class DatasetTask:
    """What a dataset run attributes: ``run(model, record, *, method, units, spans, params)``
    returns ``(attribution, inputs, span_attributions)``, optionally followed by the model
    calls it spent (when the model does not count them itself).

    ``default_method`` is used when no method is given, ``default_model`` when no model is;
    ``method_kinds`` are the registry kinds whose methods run on it, ``units`` the unit choices
    (the first is the default), ``schema`` the record schema it reads
    (:data:`attribkit.dataset.records.SCHEMAS`), ``image`` whether it needs an image
    classifier rather than a language model and ``fitted`` whether it needs a fitted source
    model (``classes_``, ``predict_proba``: provenance) rather than a model loaded by name.
    """

    name: str
    run: TaskFn
    default_method: str
    default_model: str = "smollm2"
    method_kinds: tuple[str, ...] = ("context", "perturbation")
    units: tuple[str, ...] = UNITS
    schema: str = "context"
    image: bool = False
    fitted: bool = False


def _context_record(
    lm: Any,
    record: Record,
    *,
    method: str,
    units: str,
    spans: bool,
    params: Mapping[str, Any],
) -> tuple[Attribution, dict[str, Any], list[Attribution]]:
    """The ``context`` task: attribute the record's response (generated when it has none) to
    the units of its context, plus one result per response sentence when ``spans``."""
    from attribkit.tasks.context import ContextTask

    context = record.context if isinstance(record.context, str) else list(record.context or ())
    task = ContextTask(lm, context, record.query, record.response, units=units)
    attribution = task.attribute(method, **params)
    span_results = task.attribute_spans(method, **params) if spans else []
    inputs = record.inputs()
    inputs["response"] = task.response  # the response attributed (generated when not given)
    return attribution, inputs, span_results


def _generation_record(
    lm: Any,
    record: Record,
    *,
    method: str,
    units: str,
    spans: bool,
    params: Mapping[str, Any],
) -> tuple[Attribution, dict[str, Any], list[Attribution]]:
    """The ``generation`` task: attribute each token of the record's response (generated when
    it has none) to the prompt's tokens and the response tokens before it. No span results."""
    from attribkit.tasks.generation import GenerationTask

    task = GenerationTask(lm, str(record.prompt), record.response)
    attribution = task.attribute(method, **params)
    inputs = record.inputs()
    inputs["response"] = task.response
    return attribution, inputs, []


def load_image(record: Record) -> np.ndarray:
    """The pixels of an image record (its file, or the scikit-image sample it names) as an
    array; InputError saying what is wrong when it cannot be read. No model calls."""
    ref = record.image_path or record.image or ""
    if ref.startswith(SKIMAGE):
        name = ref[len(SKIMAGE) :]
        loader = skimage_loader(name)
        if loader is None:
            raise InputError(f"scikit-image has no sample image {name!r}")
        try:
            return np.asarray(loader())
        except Exception as e:  # e.g. a sample that must be downloaded
            raise InputError(f"cannot load the scikit-image sample {name!r}: {e}") from None
    try:
        from PIL import Image

        with Image.open(ref) as im:
            alpha = im.mode in ("P", "LA", "RGBA", "PA")
            return np.asarray(im.convert("RGBA" if alpha else "RGB"))
    except (OSError, ValueError) as e:  # missing, unreadable or not an image
        raise InputError(f"cannot read the image {record.image!r} ({ref}): {e}") from None


def _image_record(
    model: Any,
    record: Record,
    *,
    method: str,
    units: str | None,
    spans: bool,
    params: Mapping[str, Any],
) -> tuple[Attribution, dict[str, Any], list[Attribution], int]:
    """The ``image`` task: attribute the record's target class (the predicted one when it has
    none) to the regions of its image. Costs the method's passes, plus one forward pass to find
    the predicted class (or the class count of a model without labels)."""
    from attribkit.tasks.image import ImageTask, default_output, method_for_images

    spec = method_for_images(method)
    task = ImageTask(model, load_image(record), record.target, output=default_output(spec))
    p = dict(params)
    if units is not None and "units" not in p:
        p["units"] = units
    attribution = task.attribute(method, **p)
    return attribution, record.inputs(), [], task.cost.model_calls


def _reasoning_record(
    lm: Any,
    record: Record,
    *,
    method: str,
    units: str,
    spans: bool,
    params: Mapping[str, Any],
) -> tuple[Attribution, dict[str, Any], list[Attribution]]:
    """The ``reasoning`` task: attribute the record's answer to the sentences of its chain of
    thought (its text, or its Thought Anchors folder's). No span results."""
    from attribkit.tasks.reasoning import ReasoningTask

    trace = reasoning_trace(record)
    task = ReasoningTask(lm, trace)
    attribution = task.attribute(method, **params)
    inputs = record.inputs()
    inputs.update(problem=trace.problem, text=trace.text, answer=task.answer)
    return attribution, inputs, []


def _agents_record(
    lm: Any,
    record: Record,
    *,
    method: str,
    units: str,
    spans: bool,
    params: Mapping[str, Any],
) -> tuple[Attribution, dict[str, Any], list[Attribution]]:
    """The ``agents`` task: attribute the failure of the record's multi-agent log to its turns
    and agents (judge-free methods read it with ``lm``; judge methods ask ``params["judge"]``
    when given, else a :class:`~attribkit.models.judge.LocalJudge` on ``lm``). The stored inputs
    hold the log's id, its size and its gold mistake (agent, step), never its text. No span
    results."""
    from attribkit.tasks.agents import AgentTask

    p = dict(params)
    judge = p.pop("judge", None)
    if judge is None:
        from attribkit.models.judge import LocalJudge

        try:
            judge = LocalJudge(lm)
        except InputError:  # not a local language model: judge-free methods only
            judge = None
    log = agent_log(record)
    task = AgentTask(
        log,
        lm=lm,
        judge=judge,
        outcome=record.outcome or "final",
        with_answer=bool(record.with_answer),
        max_turn_chars=record.max_turn_chars,
        max_tokens=record.max_tokens,
    )
    attribution = task.attribute(method, **p)
    inputs = record.inputs()
    inputs.update(
        log_id=log.id,
        n_turns=len(log),
        agents=log.agents,
        mistake_agent=log.mistake_agent,
        mistake_step=log.mistake_step,
    )
    return attribution, inputs, []


def _machine_text_record(
    lm: Any,
    record: Record,
    *,
    method: str,
    units: str,
    spans: bool,
    params: Mapping[str, Any],
) -> tuple[Attribution, dict[str, Any], list[Attribution], int]:
    """The ``machine_text`` task: a zero-shot detector's statistic on the record's text
    (``extras["statistic"]``, higher = more likely machine-generated) as per-token terms summed
    per unit (tokens or sentences). No span results. Costs the detector's passes (counted on
    the task's meter, returned)."""
    from attribkit.tasks.machine_text import MachineTextTask

    task = MachineTextTask(str(record.text), lm, units=units)
    attribution = task.attribute(method, **params)
    return attribution, record.inputs(), [], task.meter.cost.model_calls


@dataclass(frozen=True)
class FittedSource:
    """The source model of a provenance run, fitted once per run: ``classifier`` (a fitted
    source model or a :class:`~attribkit.models.open_set.RejectingClassifier` around one),
    ``rule`` (where its threshold comes from, in words; None when the model was given) and
    ``known`` (the folder of known texts it was fitted on, or None)."""

    classifier: Any
    rule: str | None = None
    known: str | None = None

    @property
    def threshold_rule(self) -> str:
        """:attr:`rule`, or for a given model "given with the model" (a rejecting classifier with
        a threshold) or "closed set"."""
        if self.rule is not None:
            return self.rule
        tau = getattr(self.classifier, "tau", None)
        return "given with the model" if tau is not None else "closed set"


def _provenance_record(
    source: Any,
    record: Record,
    *,
    method: str,
    units: str,
    spans: bool,
    params: Mapping[str, Any],
) -> tuple[Attribution, dict[str, Any], list[Attribution], int]:
    """The ``provenance`` task: the open-set decision on the record's text (a known source or
    "unknown") explained by its units (a text of one sentence is explained word by word, as
    ``attribkit authorship`` does). The result's ``extras["threshold_rule"]`` says where the
    threshold comes from; the stored inputs keep the record's true ``source`` (when given) for
    evaluation. No span results. Costs the decision (1 or 2 predictions) plus the method's."""
    from attribkit.core.units import TextUnits
    from attribkit.tasks.provenance import ProvenanceTask

    fitted = source if isinstance(source, FittedSource) else FittedSource(source)
    text = str(record.text)
    if units == "sentences" and len(TextUnits.sentences(text)) < 2:
        units = "words"
    task = ProvenanceTask(text, fitted.classifier, units=units)
    attribution = task.attribute(method, **params)
    attribution.extras["threshold_rule"] = fitted.threshold_rule
    inputs = record.inputs()
    inputs.update(units=units, prediction=task.prediction)
    if fitted.known is not None:
        inputs["known"] = fitted.known
    return attribution, inputs, [], task.meter.cost.model_calls


#: Dataset tasks by name.
TASKS: dict[str, DatasetTask] = {
    "context": DatasetTask("context", _context_record, DEFAULT_METHOD),
    "generation": DatasetTask(
        "generation",
        _generation_record,
        GENERATION_METHOD,
        method_kinds=("generation",),
        units=("tokens",),
        schema="generation",
    ),
    "image": DatasetTask(
        "image",
        _image_record,
        "grad_cam",
        default_model="efficientnet-lite0",
        method_kinds=("image", "perturbation"),
        units=("patches", "superpixels", "pixels"),
        schema="image",
        image=True,
    ),
    "reasoning": DatasetTask(
        "reasoning",
        _reasoning_record,
        REASONING_METHOD,
        method_kinds=("reasoning", "perturbation"),
        units=("sentences",),
        schema="reasoning",
    ),
    "agents": DatasetTask(
        "agents",
        _agents_record,
        AGENTS_METHOD,
        method_kinds=("agents", "perturbation"),
        units=("turns",),
        schema="agents",
    ),
    "machine_text": DatasetTask(
        "machine_text",
        _machine_text_record,
        MACHINE_TEXT_METHOD,
        method_kinds=("machine_text",),
        units=("tokens", "sentences"),
        schema="machine_text",
    ),
    "provenance": DatasetTask(
        "provenance",
        _provenance_record,
        PROVENANCE_METHOD,
        default_model="",
        method_kinds=("perturbation",),
        units=("sentences", "words", "paragraphs"),
        schema="provenance",
        fitted=True,
    ),
}


def check_method(task: str, method: str) -> None:
    """InputError listing the methods of dataset task ``task`` when ``method`` is not one of
    them. No model calls."""
    from attribkit.core.registry import get_method, list_methods

    spec = TASKS[task]
    for kind in spec.method_kinds:
        try:
            get_method(method, kind=kind)
            return
        except InputError:
            continue
    names = sorted({s.name for kind in spec.method_kinds for s in list_methods(kind)})
    raise InputError(
        f"unknown method {method!r} for --task {task}; choose one of: {', '.join(names)} "
        f"(attribkit methods --kind {spec.method_kinds[0]})"
    )


def check_model(task: str, model: Any, name: Any = None) -> None:
    """InputError when the loaded ``model`` cannot run dataset task ``task`` (an image task
    needs an image classifier, provenance a fitted source model, machine_text a next-token
    model, the other text tasks a language model). No model calls."""
    from attribkit.models import ImageClassifier

    spec = TASKS[task]
    shown = f"{os.fspath(name)!r} ({type(model).__name__})" if name else type(model).__name__
    if spec.fitted:
        inner = model.classifier if isinstance(model, FittedSource) else model
        if hasattr(inner, "tau") and hasattr(inner, "confidence"):  # a rejecting classifier
            inner = getattr(inner, "base", inner)
        classes = getattr(inner, "classes_", None)
        if classes is None or not hasattr(inner, "predict_proba"):
            raise InputError(
                f"--task {task} needs a fitted source model (classes_ and predict_proba(texts), "
                f"e.g. attribkit.models.authorship.open_set_authorship(DIR)[0]), but the model "
                f"is {shown}; or give known= (run-dataset --known DIR), a folder holding one "
                "folder of .txt texts per author"
            )
        return
    if task == "machine_text":
        from attribkit.models.next_token import as_next_token

        try:
            as_next_token(model)
        except InputError as e:
            raise InputError(
                f"--task {task} needs a language model, but the model is {shown}: {e}"
            ) from None
        return
    if spec.image and not isinstance(model, ImageClassifier):
        raise InputError(
            f"--task {task} needs an image classifier, but the model is {shown}; use "
            "--model efficientnet-lite0 (the default for images)"
        )
    if not spec.image and isinstance(model, ImageClassifier):
        raise InputError(
            f"--task {task} needs a language model, but the model is the image classifier "
            f"{shown}; use --model smollm2 or a language model's name or path"
        )


@dataclass
class Outcome:
    """What running one record gave: its results, or the error message of an
    :class:`AttribkitError` it raised."""

    key: str
    attribution: Attribution | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    spans: list[Attribution] = field(default_factory=list)
    error: str | None = None
    model_calls: int = 0
    seconds: float = 0.0

    def to_wire(self) -> dict[str, Any]:
        """Plain data (results as ``Attribution.to_dict()``) to ship between processes."""
        return {
            "key": self.key,
            "attribution": None if self.attribution is None else self.attribution.to_dict(),
            "inputs": self.inputs,
            "spans": [s.to_dict() for s in self.spans],
            "error": self.error,
            "model_calls": self.model_calls,
            "seconds": self.seconds,
        }

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Outcome:
        """The Outcome :meth:`to_wire` wrote."""
        a = d.get("attribution")
        return cls(
            key=d["key"],
            attribution=None if a is None else Attribution.from_dict(a),
            inputs=dict(d.get("inputs") or {}),
            spans=[Attribution.from_dict(s) for s in d.get("spans") or []],
            error=d.get("error"),
            model_calls=int(d.get("model_calls", 0)),
            seconds=float(d.get("seconds", 0.0)),
        )


def _spent(lm: Any) -> int:
    cost = getattr(lm, "cost", None)
    return int(getattr(cost, "model_calls", 0)) if cost is not None else 0


def process_record(
    lm: Any,
    record: Record,
    *,
    task: str = "context",
    method: str,
    units: str | None = "sentences",
    spans: bool = True,
    params: Mapping[str, Any] | None = None,
) -> Outcome:
    """Run ``task`` on one record with the loaded model ``lm``. An :class:`AttribkitError` (an
    input the validation could not see, e.g. a context longer than the model's window or an
    unreadable image) becomes ``Outcome.error``; any other exception propagates. Costs the
    method's model calls (plus one generation when a text record has no response, or one
    forward pass to find an image's predicted class)."""
    spec = TASKS[task]
    before, t0 = _spent(lm), time.perf_counter()
    try:
        attribution, inputs, span_results, *counted = spec.run(
            lm, record, method=method, units=units, spans=spans, params=dict(params or {})
        )
    except AttribkitError as e:
        return Outcome(
            record.key,
            error=f"line {record.line}: {e}",
            model_calls=_spent(lm) - before,
            seconds=time.perf_counter() - t0,
        )
    calls = _spent(lm) - before
    if counted:  # the task counted its own model calls
        calls = int(counted[0])
    elif not hasattr(lm, "cost"):
        calls = sum(a.cost.model_calls for a in [attribution, *span_results])
    return Outcome(
        record.key,
        attribution=attribution,
        inputs=inputs,
        spans=list(span_results),
        model_calls=calls,
        seconds=time.perf_counter() - t0,
    )


@dataclass
class DatasetSummary:
    """How a dataset run went: ``total`` records, ``stored`` (new in the store), ``skipped``
    (already stored for the method), ``failed`` ``(key, message)`` pairs, wall ``seconds`` and
    the ``model_calls`` spent."""

    dataset: str
    total: int
    stored: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    model_calls: int = 0
    method: str = ""
    backend: str = "local"
    store: str = ""
    task: str = "context"

    @property
    def done(self) -> int:
        """Records finished so far (stored, skipped or failed)."""
        return self.stored + self.skipped + len(self.failed)

    def describe(self) -> str:
        """A one-paragraph human summary."""
        text = (
            f"Dataset {self.dataset!r} ({self.task} task), method {self.method} "
            f"({self.backend} backend): "
            f"{self.total} records: {self.stored} stored, {self.skipped} skipped (already in the "
            f"store), {len(self.failed)} failed; {self.model_calls} model calls in "
            f"{self.seconds:.1f}s."
        )
        if self.store:
            text += f" Results are in {self.store}."
        if self.failed:
            shown = "; ".join(f"{k}: {m}" for k, m in self.failed[:5])
            more = f"; and {len(self.failed) - 5} more" if len(self.failed) > 5 else ""
            text += (
                f" Failed records (fix them and run again; stored records are skipped): "
                f"{shown}{more}."
            )
        return text


# ----------------------------------------------------------------------------------- progress


class Reporter:
    """Progress of a dataset run: a rich bar on stderr (``True``), nothing (``False``), or a
    callable that receives the running :class:`DatasetSummary` after every record."""

    def __init__(self, progress: bool | Callable[[DatasetSummary], Any], summary: DatasetSummary):
        self.summary = summary
        self.callback = progress if callable(progress) else None
        self.bar: Any = None
        self.task: Any = None
        if progress is True:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[counts]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )

    def __enter__(self) -> Reporter:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    @contextmanager
    def stage(self, description: str) -> Iterator[None]:
        """Show ``description`` (e.g. loading the model) while the block runs."""
        if self.bar is None:
            yield
            return
        t = self.bar.add_task(description, total=None, counts="")
        yield
        self.bar.update(t, total=1, completed=1)

    def _counts(self) -> str:
        s = self.summary
        return f"stored {s.stored} · skipped {s.skipped} · failed {len(s.failed)}"

    def start(self) -> None:
        """Show the bar over the records (the skipped ones already counted)."""
        if self.bar is not None:
            s = self.summary
            self.task = self.bar.add_task(
                f"{s.dataset} ({s.method})", total=s.total, completed=s.done, counts=self._counts()
            )

    def update(self) -> None:
        """One more record finished."""
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, completed=self.summary.done, counts=self._counts())
        if self.callback is not None:
            self.callback(self.summary)


# ----------------------------------------------------------------------------------- running


def _is_loaded(model: Any) -> bool:
    return not isinstance(model, str | os.PathLike)


def _write(store: Any, dataset: str, record: Record, outcome: Outcome, summary: DatasetSummary):
    summary.model_calls += outcome.model_calls
    if outcome.error is not None or outcome.attribution is None:
        summary.failed.append((record.key, outcome.error or "no result"))
        return
    store.put(
        outcome.attribution,
        inputs=outcome.inputs,
        dataset=dataset,
        key=record.key,
        spans=outcome.spans,
        tags={"line": record.line, "source": record.source},
        if_exists="skip",
    )
    summary.stored += 1


def _run_local(
    records: Sequence[Record],
    *,
    model: Any,
    reporter: Reporter,
    on_outcome: Callable[[Record, Outcome], None],
    **options: Any,
) -> None:
    if _is_loaded(model):
        lm = model
    else:
        from attribkit.models.loading import load

        with reporter.stage(f"Loading model {os.fspath(model)}"):
            lm = load(model)
    check_model(options["task"], lm, None if _is_loaded(model) else model)
    reporter.start()
    for record in records:
        on_outcome(record, process_record(lm, record, **options))


def _source_model(task: str, model: Any, known: Any, authorship: str | None, backend: str) -> Any:
    """The checked source-model arguments of a provenance run: the given fitted ``model``, or
    None when it is to be fitted from ``known`` (a folder that exists; ``authorship`` a known
    method). InputError saying what to give otherwise. Reads and fits nothing."""
    from attribkit.models.authorship import authorship_model

    if backend == "ray":
        raise InputError(
            f"--task {task} runs on the local backend only: its source model is fitted in this "
            "process (from --known) and is not shipped to Ray workers; its fits and predictions "
            "are light CPU work: use --backend local"
        )
    if model is not None and known is not None:
        raise InputError(
            f"--task {task}: give known= (--known DIR, the model is fitted on it) or a fitted "
            "source model as model=, not both"
        )
    if model is None and known is None:
        raise InputError(
            f"--task {task} needs the known texts: --known DIR (known=), a folder holding one "
            "folder of .txt texts per author; or, in Python, a fitted source model as model="
        )
    if model is not None:
        if authorship is not None:
            raise InputError(
                f"--task {task}: authorship= chooses the model fitted on known=; a given model "
                "is used as it is"
            )
        if not _is_loaded(model):
            raise InputError(
                f"--task {task} fits its source model from --known DIR; --model {model!r} does "
                "not apply (in Python, pass a fitted source model object as model=)"
            )
        check_model(task, model)
        return model
    authorship_model(authorship or "delta")  # InputError naming the methods when unknown
    folder = Path(os.fspath(known)).expanduser()
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is not a folder"
        raise InputError(
            f"the folder of known texts {folder} {what}: give --known DIR, a folder holding one "
            "folder of .txt texts per author"
        )
    return None


def run_dataset(
    input: str | os.PathLike[str],
    store: Any,
    *,
    task: str = "context",
    method: str | None = None,
    model: Any = None,
    units: str | None = None,
    spans: bool = True,
    dataset: str | None = None,
    known: str | os.PathLike[str] | None = None,
    authorship: str | None = None,
    backend: str = "local",
    address: str | None = None,
    workers: int | None = None,
    batch_size: int = 4,
    params: Mapping[str, Any] | None = None,
    progress: bool | Callable[[DatasetSummary], Any] = True,
) -> DatasetSummary:
    """Attribute every record of the JSONL file ``input`` into ``store`` (a path or an open
    :class:`~attribkit.store.RunStore`); returns a :class:`DatasetSummary`.

    ``task`` is what a record is (see :mod:`attribkit.dataset.records` for each schema):
    ``"context"`` (a response traced to the sentences or passages of its context; default
    method ``auto``), ``"generation"`` (each generated token traced to the input tokens;
    default ``integrated_gradients``), ``"image"`` (an image class traced to image regions;
    default ``grad_cam``), ``"reasoning"`` (a final answer traced to the sentences of its
    chain of thought; default ``forced_answer``), ``"agents"`` (a multi-agent failure traced to
    the turns and agents of its log; default ``turn_loo``; judge methods use
    ``params["judge"]``, else a local judge on the model), ``"machine_text"`` (a zero-shot
    detector's statistic traced to the tokens or sentences of a text; default
    ``fast_detectgpt``) or ``"provenance"`` (who wrote a text: a known author or "unknown",
    explained by its sentences, words or paragraphs; default ``loo``). The whole file is
    validated first (:func:`read_records`). Records
    already stored for ``(dataset, key, method)`` are skipped, so running again resumes an
    interrupted run; each finished record is written at once with its span results (context
    only, ``spans=True``: one per response sentence). ``dataset`` defaults to the file name,
    ``method`` to the task's default, ``units`` to the task's first choice (context:
    ``sentences``/``passages``; generation: ``tokens``; image: the method's default, or
    ``patches``/``superpixels``/``pixels``; machine_text: ``tokens``/``sentences``;
    provenance: ``sentences``/``words``/``paragraphs``, a one-sentence text by words),
    ``params`` go to the method. ``model`` is a name
    or path (default ``smollm2`` for text, ``efficientnet-lite0`` for images;
    ``backend="local"`` also takes a loaded model, for machine_text also an
    :class:`~attribkit.models.ngram.NGramLM`). A provenance run takes ``known``, a folder
    holding one folder of ``.txt`` texts per author, on which the ``authorship`` model
    (``delta`` (default), ``mfw`` or ``ngram``) is fitted once with a cross-validated rejection
    threshold (:func:`~attribkit.models.authorship.open_set_authorship`), or a fitted source
    model as ``model`` (e.g. a :class:`~attribkit.models.open_set.RejectingClassifier`); the
    resume key does not include the folder or the authorship model: give another ``dataset``
    name to store a run with other known texts beside the first. ``backend="ray"`` runs batches of
    ``batch_size`` records on ``workers`` Ray actors (a local Ray instance, or the cluster at
    ``address``), each loading the model once. A record that raises an
    :class:`AttribkitError` is reported in ``failed`` and the run goes on. ``progress``: a bar
    on stderr (True), none (False), or a callable receiving the summary after each record.

    Costs, per record not yet stored, the method's model calls (plus one generation when a text
    record has no response, one forward pass to find an image's predicted class, the one or two
    source-model predictions of a provenance decision); span results reuse the task's cache (no
    extra passes for perturbation methods). A provenance run with ``known`` also fits its
    source model once (plus the fits of the cross-validated threshold; no neural model calls).
    """
    from attribkit.store.runs import RunStore
    from attribkit.store.runs import open as open_store

    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    spec = TASKS[task]
    method = method or spec.default_method
    check_method(task, method)  # InputError listing the task's methods when unknown
    if units is None and not spec.image:
        units = spec.units[0]
    if units is not None and units not in spec.units:
        raise InputError(
            f"unknown units {units!r} for --task {task}; choose one of: {', '.join(spec.units)}"
        )
    if spec.fitted:
        model = _source_model(task, model, known, authorship, backend)
    else:
        for given, flag in ((known, "known"), (authorship, "authorship")):
            if given is not None:
                raise InputError(
                    f"{flag}= (--{flag}) applies to --task provenance only, not --task {task}"
                )
        model = spec.default_model if model is None else model
    if int(batch_size) < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    if workers is not None and int(workers) < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    if backend == "ray" and _is_loaded(model):
        raise InputError(
            "backend='ray' loads the model in every worker by name or path; pass a model name "
            f"(e.g. {spec.default_model!r}) or a model directory instead of a loaded "
            f"{type(model).__name__}"
        )
    if _is_loaded(model) and not spec.fitted:  # a given source model was checked above
        check_model(task, model)
    records = read_records(input, spec.schema)
    if spec.fitted and known is not None:  # all checked: read the known texts and fit, once
        from attribkit.models.authorship import open_set_authorship

        classifier, rule = open_set_authorship(known, authorship or "delta")
        model = FittedSource(classifier, rule, str(known))
    dataset = dataset or Path(input).name
    ray_backend = None
    if backend == "ray":
        from attribkit.dataset import ray_backend

        ray_backend.require_ray()

    t0 = time.perf_counter()
    own_store = not isinstance(store, RunStore)
    runs = open_store(store) if own_store else store
    try:
        done = runs.done_keys(dataset, method)
        todo = [r for r in records if r.key not in done]
        summary = DatasetSummary(
            dataset=dataset,
            total=len(records),
            skipped=len(records) - len(todo),
            method=method,
            backend=backend,
            store=str(runs.path),
            task=task,
        )
        options = dict(task=task, method=method, units=units, spans=spans, params=params or {})
        with Reporter(progress, summary) as reporter:

            def on_outcome(record: Record, outcome: Outcome) -> None:
                _write(runs, dataset, record, outcome, summary)
                reporter.update()

            if not todo:
                reporter.start()
            elif ray_backend is not None:
                ray_backend.run_ray(
                    todo,
                    model=model,
                    address=address,
                    workers=workers,
                    batch_size=int(batch_size),
                    reporter=reporter,
                    on_outcome=on_outcome,
                    **options,
                )
            else:
                _run_local(todo, model=model, reporter=reporter, on_outcome=on_outcome, **options)
    finally:
        if own_store:
            runs.close()
    summary.seconds = time.perf_counter() - t0
    return summary
