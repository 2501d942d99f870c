"""Attributing every record of a JSONL dataset into a run store, resumably.

:func:`run_dataset` validates the whole file first, skips the records the store already holds for
the method (so a restarted run resumes where it stopped), and writes each finished record, with
its span results, in one transaction as soon as it is done: a crash loses only the records in
flight. Records run here (``backend="local"``) or on a Ray actor pool (``backend="ray"``, see
:mod:`attribkit.dataset.ray_backend`).

A *task* turns one record into ``(Attribution, inputs, span Attributions)`` on a loaded model;
adding one is one function plus an entry in :data:`TASKS`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attribkit.core.attribution import Attribution
from attribkit.core.errors import AttribkitError, InputError
from attribkit.dataset.records import Record, read_records
from attribkit.tasks.context import DEFAULT_METHOD

__all__ = [
    "BACKENDS",
    "TASKS",
    "DatasetSummary",
    "DatasetTask",
    "Outcome",
    "process_record",
    "run_dataset",
]

BACKENDS = ("local", "ray")
UNITS = ("sentences", "passages")

TaskFn = Callable[..., tuple[Attribution, dict[str, Any], list[Attribution]]]


@dataclass(frozen=True)
class DatasetTask:
    """What a dataset run attributes: ``run(lm, record, *, method, units, spans, params)``
    returns ``(attribution, inputs, span_attributions)``; ``default_method`` is used when no
    method is given."""

    name: str
    run: TaskFn
    default_method: str


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

    context = record.context if isinstance(record.context, str) else list(record.context)
    task = ContextTask(lm, context, record.query, record.response, units=units)
    attribution = task.attribute(method, **params)
    span_results = task.attribute_spans(method, **params) if spans else []
    inputs = record.inputs()
    inputs["response"] = task.response  # the response attributed (generated when not given)
    return attribution, inputs, span_results


#: Dataset tasks by name.
TASKS: dict[str, DatasetTask] = {
    "context": DatasetTask("context", _context_record, DEFAULT_METHOD),
}


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
    units: str = "sentences",
    spans: bool = True,
    params: Mapping[str, Any] | None = None,
) -> Outcome:
    """Run ``task`` on one record with the loaded model ``lm``. An :class:`AttribkitError` (an
    input the validation could not see, e.g. a context longer than the model's window) becomes
    ``Outcome.error``; any other exception propagates. Costs the method's model calls (plus one
    generation when the record has no response)."""
    spec = TASKS[task]
    before, t0 = _spent(lm), time.perf_counter()
    try:
        attribution, inputs, span_results = spec.run(
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
    if not hasattr(lm, "cost"):
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

    @property
    def done(self) -> int:
        """Records finished so far (stored, skipped or failed)."""
        return self.stored + self.skipped + len(self.failed)

    def describe(self) -> str:
        """A one-paragraph human summary."""
        text = (
            f"Dataset {self.dataset!r}, method {self.method} ({self.backend} backend): "
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
    reporter.start()
    for record in records:
        on_outcome(record, process_record(lm, record, **options))


def run_dataset(
    input: str | os.PathLike[str],
    store: Any,
    *,
    task: str = "context",
    method: str | None = None,
    model: Any = "smollm2",
    units: str = "sentences",
    spans: bool = True,
    dataset: str | None = None,
    backend: str = "local",
    address: str | None = None,
    workers: int | None = None,
    batch_size: int = 4,
    params: Mapping[str, Any] | None = None,
    progress: bool | Callable[[DatasetSummary], Any] = True,
) -> DatasetSummary:
    """Attribute every record of the JSONL file ``input`` into ``store`` (a path or an open
    :class:`~attribkit.store.RunStore`); returns a :class:`DatasetSummary`.

    The whole file is validated first (:func:`read_records`). Records already stored for
    ``(dataset, key, method)`` are skipped, so running again resumes an interrupted run; each
    finished record is written at once with its span results (``spans=True``: one per response
    sentence). ``dataset`` defaults to the file name, ``method`` to the task's default,
    ``params`` go to the method. ``model`` is a name or path (``backend="local"`` also takes a
    loaded model). ``backend="ray"`` runs batches of ``batch_size`` records on ``workers`` Ray
    actors (a local Ray instance, or the cluster at ``address``). A record that raises an
    :class:`AttribkitError` is reported in ``failed`` and the run goes on. ``progress``: a bar
    on stderr (True), none (False), or a callable receiving the summary after each record.

    Costs, per record not yet stored, the method's model calls (plus one generation when the
    record has no response); span results reuse the task's cache (no extra passes for
    perturbation methods).
    """
    from attribkit.core.registry import get_method
    from attribkit.store.runs import RunStore
    from attribkit.store.runs import open as open_store

    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; choose one of: {', '.join(sorted(TASKS))}")
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    spec = TASKS[task]
    method = method or spec.default_method
    get_method(method)  # InputError listing the methods when unknown
    if units not in UNITS:
        raise InputError(f"unknown units {units!r}; choose one of: {', '.join(UNITS)}")
    if int(batch_size) < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    if workers is not None and int(workers) < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    if backend == "ray" and _is_loaded(model):
        raise InputError(
            "backend='ray' loads the model in every worker by name or path; pass a model name "
            f"(e.g. 'smollm2') or a model directory instead of a loaded {type(model).__name__}"
        )
    records = read_records(input)
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
