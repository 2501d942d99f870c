"""A run store: Attributions kept in an embedded SQLite database with what produced them.

One *run* is one stored :class:`~attribkit.core.attribution.Attribution` together with its inputs,
the model, method, parameters and cost. A run may carry *span results* — runs for one span of
its response (``parent`` = the run, ``span`` = a character range) — written in the same
transaction, so a record is either stored whole or not at all. Dataset runs are keyed by
``(dataset, key, method)``, which is unique: a resumed job can never store a record twice.

The schema has a version (table ``meta``); a store written by another schema version is refused
with a message that says what to do. Writers take SQLite's write lock up front (``BEGIN
IMMEDIATE``) and wait for each other, so several processes can write to one store at once.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from attribkit.core.attribution import Attribution, task_kind
from attribkit.core.cost import Cost
from attribkit.core.errors import InputError, StoreError
from attribkit.core.jsonio import jsonl_lines, to_json

SCHEMA_VERSION = 1
RUN_FORMAT = "attribkit.run"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    task TEXT NOT NULL,
    model TEXT NOT NULL,
    method TEXT NOT NULL,
    dataset TEXT,
    record_key TEXT,
    parent TEXT REFERENCES runs(id) ON DELETE CASCADE,
    span_start INTEGER,
    span_end INTEGER,
    params TEXT NOT NULL,
    inputs TEXT NOT NULL,
    cost TEXT NOT NULL,
    tags TEXT NOT NULL,
    attribution TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS runs_record ON runs(dataset, record_key, method)
    WHERE parent IS NULL AND dataset IS NOT NULL AND record_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS runs_parent ON runs(parent);
CREATE INDEX IF NOT EXISTS runs_lookup ON runs(model, method, task, created);
"""

_COLUMNS = (
    "id, created, task, model, method, dataset, record_key, parent, span_start, span_end, "
    "params, inputs, cost, tags, attribution"
)

_INSERT = f"INTO runs ({_COLUMNS}) VALUES ({', '.join('?' * len(_COLUMNS.split(',')))})"

IfExists = Literal["error", "skip"]


@dataclass
class StoredRun:
    """One stored attribution and what produced it. ``attribution`` rebuilds the result."""

    id: str
    created: float
    task: str
    model: str
    method: str
    data: dict[str, Any] = field(repr=False)
    params: dict[str, Any] = field(default_factory=dict, repr=False)
    inputs: dict[str, Any] = field(default_factory=dict, repr=False)
    cost: Cost = field(default_factory=Cost)
    tags: dict[str, Any] = field(default_factory=dict, repr=False)
    dataset: str | None = None
    key: str | None = None
    parent: str | None = None
    span: tuple[int, int] | None = None

    @property
    def attribution(self) -> Attribution:
        """The stored :class:`Attribution` (rebuilt from its versioned dict)."""
        return Attribution.from_dict(self.data)

    @property
    def task_kind(self) -> str | None:
        """The task kind the stored Attribution records (``context``, ``generation``,
        ``image``...; inferred for a format-1 result; None for a bare Scorer's result), read
        without rebuilding it. ``task`` is the run's task name (for a bare Scorer's result, the
        kind of its units)."""
        return task_kind(self.data)

    @property
    def created_iso(self) -> str:
        return _dt.datetime.fromtimestamp(self.created, _dt.UTC).isoformat(timespec="seconds")

    def summary(self) -> dict[str, Any]:
        """The run without its scores and inputs (what a listing shows)."""
        return {
            "id": self.id,
            "created": self.created_iso,
            "task": self.task,
            "model": self.model,
            "method": self.method,
            "dataset": self.dataset,
            "key": self.key,
            "parent": self.parent,
            "span": None if self.span is None else list(self.span),
            "units": len(self.data.get("units", [])),
            "cost": self.cost.to_dict(),
            "target": _short_target(self.data.get("target")),
        }

    def to_record(self) -> dict[str, Any]:
        """The JSONL export line of this run (format ``attribkit.run``)."""
        return {
            "format": RUN_FORMAT,
            "version": SCHEMA_VERSION,
            "id": self.id,
            "created": self.created,
            "task": self.task,
            "model": self.model,
            "method": self.method,
            "dataset": self.dataset,
            "key": self.key,
            "parent": self.parent,
            "span": None if self.span is None else list(self.span),
            "params": self.params,
            "inputs": self.inputs,
            "cost": self.cost.to_dict(),
            "tags": self.tags,
            "attribution": self.data,
        }


def _short_target(target: Any) -> str:
    if isinstance(target, dict):
        text = target.get("span_text") or target.get("response") or target.get("description")
        if text is None and "class" in target:  # an image class
            label = target.get("label")
            text = f"class {target['class']}" + (f" ({label})" if label is not None else "")
    else:
        text = target
    text = "" if text is None else str(text)
    return text if len(text) <= 120 else text[:117] + "..."


def infer_task(attribution: Attribution) -> str:
    """The task name of a run: the task kind the Attribution records (``context``,
    ``generation``, ``image``...; inferred when it was read from format 1), else, for a bare
    Scorer's result, the kind of its units (``features``, ``image``, ``text``, ``array``)."""
    if attribution.task:
        return str(attribution.task)
    return str(attribution.input.get("kind") or "unknown")


def infer_model(attribution: Attribution) -> str:
    """The model name recorded in an Attribution's target (``unknown`` when it has none)."""
    target = attribution.target
    if isinstance(target, dict) and target.get("model"):
        return str(target["model"])
    return str(attribution.params.get("model", "unknown"))


def _encode_inputs(inputs: Mapping[str, Any] | None) -> dict[str, Any]:
    """JSON-ready inputs; an ``image`` array becomes a PNG data URL under ``image_png``."""
    out: dict[str, Any] = {}
    for name, value in (inputs or {}).items():
        if name == "image" and isinstance(value, np.ndarray):
            from attribkit.core.png import png_data_url

            out["image_png"] = png_data_url(value)
            out["image_shape"] = list(value.shape)
        else:
            out[str(name)] = to_json(value)
    return out


def _timestamp(t: float | str | _dt.datetime | None) -> float | None:
    if t is None or isinstance(t, (int, float)):
        return t
    if isinstance(t, str):
        t = _dt.datetime.fromisoformat(t)
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    return t.timestamp()


class RunStore:
    """Attributions kept in a SQLite file. Open with :func:`attribkit.store.open`.

    Thread-safe (one connection behind a lock); several processes may write at once. Use as a
    context manager or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike[str], timeout: float = 60.0) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a directory; give a file path such as runs.db")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._timeout = timeout
        try:
            self._db = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA foreign_keys = ON")
            self._init_schema()
        except sqlite3.DatabaseError as e:
            raise StoreError(
                f"{self.path} is not an attribkit run store ({e}); give a new file name or a "
                "store written by attribkit.store"
            ) from e

    # --- schema ---------------------------------------------------------------------------------
    def _init_schema(self) -> None:
        tables = {
            r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        if tables and "meta" not in tables:
            raise StoreError(
                f"{self.path} is a SQLite database but not an attribkit run store (it has tables "
                f"{sorted(tables)} and no 'meta'); give a new file name"
            )
        if not tables:
            # Readers and a writer work at once under WAL; it persists in the file.
            self._wal()
            with self._write() as db:
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(statement)
                self._db.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?), ('created', ?)",
                    (str(SCHEMA_VERSION), _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")),
                )
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = None if row is None else int(row[0])
        if version != SCHEMA_VERSION:
            hint = (
                "upgrade attribkit to read it"
                if version is not None and version > SCHEMA_VERSION
                else "export it to JSONL with the attribkit version that wrote it, then import it"
            )
            raise StoreError(
                f"{self.path} has run store schema version {version}, but this attribkit "
                f"({_version()}) reads version {SCHEMA_VERSION}; {hint}"
            )
        self._db.execute("PRAGMA synchronous = NORMAL")

    def _wal(self) -> None:
        """Switch a new file to WAL. SQLite answers "locked" at once, without waiting, while
        another process creates the same store, so wait here (up to the store's timeout)."""
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                self._db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @property
    def schema_version(self) -> int:
        return SCHEMA_VERSION

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it is stored, or (on any error or crash) none of it."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # --- writing --------------------------------------------------------------------------------
    def put(
        self,
        attribution: Attribution,
        *,
        inputs: Mapping[str, Any] | None = None,
        model: str | None = None,
        task: str | None = None,
        dataset: str | None = None,
        key: str | None = None,
        tags: Mapping[str, Any] | None = None,
        spans: Sequence[Attribution] = (),
        if_exists: IfExists = "error",
    ) -> str:
        """Store ``attribution`` (and its span results ``spans``) in one transaction; returns the
        new run id. ``model`` and ``task`` default to what the attribution records. With
        ``dataset`` and ``key`` the record is unique per method: storing it again raises
        :class:`StoreError`, or returns the stored id with ``if_exists="skip"``."""
        if not isinstance(attribution, Attribution):
            raise InputError(f"put() stores an Attribution, got {type(attribution).__name__}")
        if (dataset is None) != (key is None):
            raise InputError("give both dataset= and key= (a record of a dataset), or neither")
        rows = [self._row(attribution, inputs, model, task, dataset, key, tags, None)]
        for child in spans:
            span = (child.target or {}).get("span") if isinstance(child.target, dict) else None
            if not span:
                raise InputError(
                    "a span result must be an Attribution of a ContextTask with a span "
                    "(its target has no 'span')"
                )
            rows.append(self._row(child, None, model, task, None, None, None, rows[0][0]))
        with self._write() as db:
            if dataset is not None:
                found = db.execute(
                    "SELECT id FROM runs WHERE dataset = ? AND record_key = ? AND method = ? "
                    "AND parent IS NULL",
                    (dataset, key, rows[0][4]),
                ).fetchone()
                if found is not None:
                    if if_exists == "skip":
                        return str(found[0])
                    raise StoreError(
                        f"record {key!r} of dataset {dataset!r} is already stored for method "
                        f"{rows[0][4]!r} (run {found[0]}); pass if_exists='skip' to keep it"
                    )
            db.executemany(f"INSERT {_INSERT}", rows)
        return rows[0][0]

    def _row(
        self,
        a: Attribution,
        inputs: Mapping[str, Any] | None,
        model: str | None,
        task: str | None,
        dataset: str | None,
        key: str | None,
        tags: Mapping[str, Any] | None,
        parent: str | None,
    ) -> tuple[Any, ...]:
        data = a.to_dict()
        span = (a.target or {}).get("span") if isinstance(a.target, dict) and parent else None
        return (
            uuid.uuid4().hex,
            time.time(),
            task or infer_task(a),
            model or infer_model(a),
            a.method,
            dataset,
            key,
            parent,
            None if span is None else int(span[0]),
            None if span is None else int(span[1]),
            json.dumps(data["params"], ensure_ascii=False),
            json.dumps(_encode_inputs(inputs), ensure_ascii=False),
            json.dumps(data["cost"]),
            json.dumps(to_json(dict(tags or {})), ensure_ascii=False),
            json.dumps(data, ensure_ascii=False),
        )

    def add_spans(self, run_id: str, spans: Sequence[Attribution]) -> list[str]:
        """Store more span results of run ``run_id`` (one transaction); returns their ids."""
        parent = self.get(run_id)
        rows = []
        for child in spans:
            if not (isinstance(child.target, dict) and child.target.get("span")):
                raise InputError("a span result must be an Attribution with a span in its target")
            rows.append(
                self._row(child, None, parent.model, parent.task, None, None, None, parent.id)
            )
        with self._write() as db:
            db.executemany(f"INSERT {_INSERT}", rows)
        return [r[0] for r in rows]

    def delete(self, run_id: str) -> None:
        """Remove a run and its span results."""
        with self._write() as db:
            if db.execute("DELETE FROM runs WHERE id = ?", (run_id,)).rowcount == 0:
                raise StoreError(f"no run {run_id!r} in {self.path}")

    # --- reading --------------------------------------------------------------------------------
    def _select(self, where: str = "", args: Sequence[Any] = (), tail: str = "") -> list[StoredRun]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM runs {where} {tail}", args).fetchall()
        return [_run_from_row(r) for r in rows]

    def get(self, run_id: str) -> StoredRun:
        """The run with id ``run_id`` (a unique prefix of it is enough)."""
        runs = self._select("WHERE id LIKE ?", (f"{run_id}%",), "LIMIT 2") if run_id else []
        if len(runs) != 1:
            what = "no run" if not runs else "more than one run"
            raise StoreError(f"{what} with id {run_id!r} in {self.path}; list them with query()")
        return runs[0]

    def query(
        self,
        *,
        model: str | None = None,
        method: str | None = None,
        task: str | None = None,
        dataset: str | None = None,
        since: float | str | _dt.datetime | None = None,
        until: float | str | _dt.datetime | None = None,
        spans: bool = False,
        limit: int | None = None,
    ) -> list[StoredRun]:
        """Stored runs matching every given filter, newest first. ``since``/``until`` take a
        datetime, an ISO date string or a Unix time; span results are left out unless
        ``spans=True``."""
        conds: list[str] = [] if spans else ["parent IS NULL"]
        args: list[Any] = []
        for column, value in (
            ("model", model),
            ("method", method),
            ("task", task),
            ("dataset", dataset),
        ):
            if value is not None:
                conds.append(f"{column} = ?")
                args.append(value)
        if since is not None:
            conds.append("created >= ?")
            args.append(_timestamp(since))
        if until is not None:
            conds.append("created <= ?")
            args.append(_timestamp(until))
        where = ("WHERE " + " AND ".join(conds)) if conds else ""
        tail = "ORDER BY created DESC, rowid DESC" + (f" LIMIT {int(limit)}" if limit else "")
        return self._select(where, args, tail)

    def spans(self, run_id: str) -> list[StoredRun]:
        """The span results stored for run ``run_id``, in response order."""
        return self._select("WHERE parent = ?", (run_id,), "ORDER BY span_start, span_end, created")

    def find_span(self, run_id: str, start: int, end: int) -> StoredRun | None:
        """The newest stored span result of run ``run_id`` for characters ``[start, end)``."""
        found = self._select(
            "WHERE parent = ? AND span_start = ? AND span_end = ?",
            (run_id, int(start), int(end)),
            "ORDER BY created DESC LIMIT 1",
        )
        return found[0] if found else None

    def done_keys(self, dataset: str, method: str) -> set[str]:
        """Keys of the records of ``dataset`` already stored for ``method`` (for resuming)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT record_key FROM runs WHERE dataset = ? AND method = ? AND parent IS NULL",
                (dataset, method),
            ).fetchall()
        return {r[0] for r in rows}

    def __len__(self) -> int:
        with self._lock:
            return int(
                self._db.execute("SELECT COUNT(*) FROM runs WHERE parent IS NULL").fetchone()[0]
            )

    # --- JSONL ----------------------------------------------------------------------------------
    def export_jsonl(self, path: str | os.PathLike[str], **filters: Any) -> int:
        """Write the runs matching ``filters`` (as in :meth:`query`) and their span results to a
        JSONL file, one run per line, parents first; atomic. Returns the number of lines."""
        runs = self.query(**filters)
        lines = []
        for run in reversed(runs):  # oldest first
            lines.append(run.to_record())
            lines.extend(child.to_record() for child in self.spans(run.id))
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with tmp.open("w", encoding="utf-8") as f:
                for line in lines:
                    f.write(json.dumps(line, ensure_ascii=False) + "\n")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return len(lines)

    def import_jsonl(self, path: str | os.PathLike[str]) -> int:
        """Add the runs of a JSONL export (one transaction); runs already present (same id, or
        same dataset record and method) are skipped. Returns the number added."""
        rows = []
        for n, rec in jsonl_lines(Path(path).read_text(encoding="utf-8"), path):
            if not isinstance(rec, dict) or rec.get("format") != RUN_FORMAT:
                raise InputError(f"{path}:{n} is not an attribkit run (format {RUN_FORMAT!r})")
            if rec.get("version") != SCHEMA_VERSION:
                raise StoreError(
                    f"{path}:{n} was exported with run schema version {rec.get('version')}; "
                    f"this attribkit reads version {SCHEMA_VERSION}"
                )
            Attribution.from_dict(rec["attribution"])  # validates the stored result
            span = rec.get("span")
            rows.append(
                (
                    rec["id"],
                    float(rec["created"]),
                    rec["task"],
                    rec["model"],
                    rec["method"],
                    rec.get("dataset"),
                    rec.get("key"),
                    rec.get("parent"),
                    None if not span else int(span[0]),
                    None if not span else int(span[1]),
                    json.dumps(rec.get("params") or {}, ensure_ascii=False),
                    json.dumps(rec.get("inputs") or {}, ensure_ascii=False),
                    json.dumps(rec.get("cost") or {}),
                    json.dumps(rec.get("tags") or {}, ensure_ascii=False),
                    json.dumps(rec["attribution"], ensure_ascii=False),
                )
            )
        with self._write() as db:
            before = db.total_changes
            db.executemany(f"INSERT OR IGNORE {_INSERT}", rows)
            return db.total_changes - before

    # --- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r}, {len(self)} runs)"


def _run_from_row(r: Sequence[Any]) -> StoredRun:
    return StoredRun(
        id=r[0],
        created=r[1],
        task=r[2],
        model=r[3],
        method=r[4],
        dataset=r[5],
        key=r[6],
        parent=r[7],
        span=None if r[8] is None else (int(r[8]), int(r[9])),
        params=json.loads(r[10]),
        inputs=json.loads(r[11]),
        cost=Cost.from_dict(json.loads(r[12])),
        tags=json.loads(r[13]),
        data=json.loads(r[14]),
    )


def _version() -> str:
    from attribkit import __version__

    return f"attribkit {__version__}"


def open(path: str | os.PathLike[str], timeout: float = 60.0) -> RunStore:
    """Open (or create) the run store at ``path``; waits up to ``timeout`` seconds for other
    writers. Raises :class:`StoreError` for a file that is not a store or has another schema
    version. Costs no model calls."""
    return RunStore(path, timeout=timeout)


__all__ = ["SCHEMA_VERSION", "RunStore", "StoredRun", "infer_model", "infer_task", "open"]
