"""The Ray backend of :func:`attribkit.dataset.run_dataset`: records attributed on an actor pool.

Each actor loads the model once (by name or path: a language model for context and generation
records, an image classifier for image records) with one torch thread and attributes batches
of records (of any dataset task); results come back as plain dicts (``Attribution.to_dict()``) and the driver writes
each to the run store as it arrives, so a killed driver loses only the batches in flight. Without
an ``address`` a local Ray instance is started (``num_cpus = workers or 2``, files in a temporary
folder) and shut down at the end; a cluster joined by ``address`` is only disconnected from.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from attribkit.core.errors import AttribkitError, InputError
from attribkit.dataset.records import Record
from attribkit.dataset.runner import Outcome, Reporter, check_model, process_record

__all__ = ["RecordWorker", "require_ray", "run_ray"]


def require_ray() -> Any:
    """The ``ray`` module; InputError saying how to install it when it is missing."""
    try:
        import ray
    except ImportError:
        raise InputError(
            "backend='ray' needs Ray, which is not installed; pip install 'attribkit[ray]' "
            "(or use backend='local')"
        ) from None
    return ray


class RecordWorker:
    """A Ray actor body: loads the model once (a language model, or an image classifier for
    image records), then attributes batches of records. Costs the method's model calls per
    record."""

    def __init__(self, model: str, options: Mapping[str, Any], threads: int = 1) -> None:
        import torch

        torch.set_num_threads(threads)
        self.options = dict(options)
        self.error: str | None = None
        self.lm: Any = None
        try:
            from attribkit.models.loading import load

            self.lm = load(model)
            check_model(self.options.get("task", "context"), self.lm, model)
        except AttribkitError as e:
            self.error = f"cannot use model {model!r} in a Ray worker: {e}"

    def ready(self) -> str | None:
        """None when the model is loaded, else why not."""
        return self.error

    def run(self, records: Sequence[Record]) -> list[dict[str, Any]]:
        """Outcomes (as :meth:`Outcome.to_wire` dicts) of ``records``, in order."""
        return [process_record(self.lm, r, **self.options).to_wire() for r in records]


def _model_ref(model: Any) -> str:
    """An existing local path made absolute (Ray workers may run in another folder)."""
    text = os.fspath(model)
    path = Path(text).expanduser()
    return str(path.resolve()) if path.exists() else text


def run_ray(
    records: Sequence[Record],
    *,
    model: Any,
    address: str | None,
    workers: int | None,
    batch_size: int,
    reporter: Reporter,
    on_outcome: Callable[[Record, Outcome], None],
    **options: Any,
) -> None:
    """Attribute ``records`` on a pool of Ray actors, calling ``on_outcome(record, outcome)``
    in the driver as each batch finishes. Costs the method's model calls per record, plus one
    model load per actor."""
    if address is None:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # no token for a private instance
    ray = require_ray()
    from ray.util import ActorPool

    model_ref = _model_ref(model)
    temp_dir: str | None = None
    connected = False
    actors: list[Any] = []
    try:
        if not ray.is_initialized():
            with reporter.stage(
                f"Connecting to Ray at {address}" if address else "Starting a local Ray instance"
            ):
                if address is not None:
                    ray.init(address=address, log_to_driver=False, logging_level="ERROR")
                else:
                    temp_dir = tempfile.mkdtemp(prefix="attribkit-ray-")
                    ray.init(
                        num_cpus=workers or 2,
                        include_dashboard=False,
                        _temp_dir=temp_dir,
                        log_to_driver=False,
                        logging_level="ERROR",
                    )
            connected = True
        n = workers or max(1, int(ray.cluster_resources().get("CPU", 2)))
        n = min(n, -(-len(records) // batch_size))
        actor_class = ray.remote(num_cpus=1)(RecordWorker)
        with reporter.stage(f"Loading model {os.fspath(model)} in {n} Ray worker(s)"):
            actors = [actor_class.remote(model_ref, options) for _ in range(n)]
            errors = [e for e in ray.get([a.ready.remote() for a in actors]) if e]
        if errors:
            raise InputError(errors[0])
        reporter.start()
        by_key = {r.key: r for r in records}
        pool = ActorPool(actors)
        for i in range(0, len(records), batch_size):
            pool.submit(lambda actor, batch: actor.run.remote(batch), records[i : i + batch_size])
        while pool.has_next():
            for wire in pool.get_next_unordered():
                outcome = Outcome.from_wire(wire)
                on_outcome(by_key[outcome.key], outcome)
    finally:
        for actor in actors:
            with contextlib.suppress(Exception):  # already gone with its node
                ray.kill(actor)
        if connected:
            ray.shutdown()  # stops the instance we started; only disconnects from a cluster
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)
