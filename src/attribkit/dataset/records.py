"""Reading a JSONL dataset of records to attribute, validated in full before any model work.

One record per line; blank lines are ignored. The fields depend on the task
(``run-dataset --task``):

- ``context``: ``{"context": str | list[str], "query": str, "response": str (optional),
  "id": str | int (optional)}``;
- ``generation``: ``{"prompt": str, "response": str (optional), "id": ... (optional)}``;
- ``image``: ``{"image": str, "target": int | str (optional), "id": ... (optional)}`` where
  ``image`` is a file path (a relative path is read from the JSONL file's folder) or
  ``skimage:NAME`` (a photo bundled with scikit-image, e.g. ``skimage:chelsea``) and
  ``target`` a class index or label (left out: the predicted class);
- ``reasoning``: ``{"problem": str, "text": str, "answer": str (optional), "chunks": [str]
  (optional), "id": ... (optional)}`` (a chain of thought ``text`` and the final ``answer`` it
  leads to), or ``{"folder": str, "answer": ... (optional), "id": ... (optional)}`` naming a
  Thought Anchors problem folder (a relative path is read from the JSONL file's folder; its
  ``gt_answer`` is the answer unless the record gives one);
- ``agents``: ``{"log": str, "outcome": "final" | "gold" (optional), "max_turn_chars": int
  (optional), "max_tokens": int | "window" (optional), "with_answer": bool (optional),
  "id": ... (optional)}`` where ``log`` is a multi-agent log file (a Who&When log, a JSON list
  of turns or ``{"turns": [...]}``; a relative path is read from the JSONL file's folder), or
  the turns inline: ``{"turns": [{"agent": str, "content": str}, ...], "question",
  "ground_truth", "mistake_agent", "mistake_step" (optional), ...}``. ``outcome`` is what judge-free methods score (default ``final``: the last
  substantive turn; ``gold``: the ground truth), ``max_turn_chars`` cuts every turn,
  ``max_tokens`` cuts the turns of a log over that many tokens (or the window) to fit, and
  ``with_answer`` shows judge methods the gold answer. The log is read and checked (turns,
  gold step in range, an outcome it can score) while validating. The inputs stored with an
  agents run hold ids, agents and steps only, never a turn's text, the question or an answer;
- ``machine_text``: ``{"text": str, "id": ... (optional)}``, a text to test for machine
  generation;
- ``provenance``: ``{"text": str, "source": str (optional), "id": ... (optional)}``, a text
  whose source (author) is asked; ``source`` is its true source when known (a known author, or
  any other name for a text by none of them), stored in the run's inputs for later evaluation
  and never shown to the model.

Every record gets a *key* that identifies it in a run store: ``str(id)`` when the line has an
id, else a hash of the record's content as written (so it does not change when lines are
inserted, removed or reordered; an image record hashes its image reference, not its pixels),
with ``#2``, ``#3``... appended for the second, third... identical copy. A provenance
record's content key hashes its text only, so adding or correcting its ``source`` later keeps
its stored results.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attribkit.core.errors import InputError

__all__ = [
    "FIELDS",
    "SCHEMAS",
    "Record",
    "RecordSchema",
    "agent_log",
    "content_key",
    "read_records",
    "reasoning_trace",
    "record_key",
    "skimage_loader",
]

SKIMAGE = "skimage:"


@dataclass(frozen=True)
class Record:
    """One validated line of a dataset: what to attribute, its store key and where it came from.

    ``task`` says which fields are set: ``context``/``query``/``response`` (context),
    ``prompt``/``response`` (generation), ``image``/``image_path``/``target`` (image;
    ``image`` as written, ``image_path`` the absolute file path or ``skimage:NAME``),
    ``problem``/``text``/``answer``/``chunks`` or ``folder``/``folder_path`` (reasoning;
    ``folder`` as written, ``folder_path`` absolute), ``log``/``log_path`` or
    ``turns``/``question``/``ground_truth``/``mistake_agent``/``mistake_step``, with
    ``outcome``/``max_turn_chars``/``max_tokens``/``with_answer`` (agents; ``log`` as written,
    ``log_path`` absolute), ``text`` (machine_text), ``text``/``true_source`` (provenance: its
    ``source`` field, the true source when known).
    """

    key: str
    line: int
    context: str | tuple[str, ...] | None = None
    query: str | None = None
    response: str | None = None
    id: str | int | None = None
    source: str = ""
    task: str = "context"
    prompt: str | None = None
    image: str | None = None
    image_path: str | None = None
    target: int | str | None = None
    problem: str | None = None
    text: str | None = None
    answer: str | None = None
    chunks: tuple[str, ...] | None = None
    folder: str | None = None
    folder_path: str | None = None
    log: str | None = None
    log_path: str | None = None
    turns: tuple[dict[str, Any], ...] | None = None
    question: str | None = None
    ground_truth: str | None = None
    mistake_agent: str | None = None
    mistake_step: int | str | None = None
    outcome: str | None = None
    max_turn_chars: int | None = None
    max_tokens: int | str | None = None
    with_answer: bool | None = None
    true_source: str | None = None

    @property
    def where(self) -> str:
        """``file:line`` of the record, for messages."""
        return f"{self.source}:{self.line}"

    def inputs(self) -> dict[str, Any]:
        """The inputs stored with the record's run."""
        if self.task == "generation":
            return {"prompt": self.prompt, "response": self.response, "id": self.id}
        if self.task == "image":
            return {"image": self.image, "target": self.target, "id": self.id}
        if self.task == "machine_text":
            return {"text": self.text, "id": self.id}
        if self.task == "provenance":
            return {"text": self.text, "source": self.true_source, "id": self.id}
        if self.task == "agents":  # ids, agents and steps only: no turn text
            return {
                "log": self.log,
                "outcome": self.outcome or "final",
                "max_turn_chars": self.max_turn_chars,
                "max_tokens": self.max_tokens,
                "with_answer": bool(self.with_answer),
                "mistake_agent": self.mistake_agent,
                "mistake_step": self.mistake_step,
                "id": self.id,
            }
        if self.task == "reasoning":
            out: dict[str, Any] = {"problem": self.problem, "text": self.text}
            out.update(answer=self.answer, id=self.id)
            if self.chunks is not None:
                out["chunks"] = list(self.chunks)
            if self.folder is not None:
                out["folder"] = self.folder
            return out
        context = self.context if isinstance(self.context, str) else list(self.context or ())
        return {"context": context, "query": self.query, "response": self.response, "id": self.id}


def record_key(body: dict[str, Any]) -> str:
    """A stable key for a record without an id: the first 16 hex digits of the SHA-256 of its
    fields' canonical JSON (sorted keys, no whitespace; a missing optional field and ``null``
    are the same)."""
    body = {k: v for k, v in body.items() if v is not None}
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def content_key(
    context: str | list[str] | tuple[str, ...], query: str, response: str | None
) -> str:
    """The key of a context record without an id (see :func:`record_key`)."""
    return record_key(
        {
            "context": context if isinstance(context, str) else list(context),
            "query": query,
            "response": response,
        }
    )


def _fail(where: str, what: str) -> InputError:
    return InputError(f"{where}: {what}")


# ------------------------------------------------------------------------------------ fields


def _text(obj: dict[str, Any], name: str, where: str, what: str, required: bool) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise _fail(where, f'missing "{name}" ({what})')
        return None
    if not isinstance(value, str) or not value.strip():
        if required:
            raise _fail(where, f'"{name}" must be a non-empty string ({what})')
        raise _fail(where, f'"{name}" must be a non-empty string, or left out {what}')
    return value


def _response(obj: dict[str, Any], where: str) -> str | None:
    return _text(obj, "response", where, "to have the model generate it", required=False)


def _context_fields(obj: dict[str, Any], where: str, folder: Path) -> dict[str, Any]:
    context = obj.get("context")
    if isinstance(context, str):
        if not context.strip():
            raise _fail(where, '"context" is empty; give the text the response should be traced to')
    elif isinstance(context, list):
        if not context or not all(isinstance(p, str) for p in context):
            raise _fail(where, '"context" must be a string or a non-empty list of strings')
        if not any(p.strip() for p in context):
            raise _fail(where, '"context" has only empty passages; give at least one with text')
        context = tuple(context)
    elif context is None:
        raise _fail(where, 'missing "context" (a string, or a list of passage strings)')
    else:
        raise _fail(
            where, f'"context" must be a string or a list of strings, got {type(context).__name__}'
        )
    query = _text(obj, "query", where, "the question the response answers", required=True)
    return {"context": context, "query": query, "response": _response(obj, where)}


def _generation_fields(obj: dict[str, Any], where: str, folder: Path) -> dict[str, Any]:
    prompt = _text(obj, "prompt", where, "the text whose tokens to attribute", required=True)
    return {"prompt": prompt, "response": _response(obj, where)}


def skimage_loader(name: str) -> Callable[[], Any] | None:
    """The scikit-image function returning the sample photo ``name`` (e.g. ``chelsea``), or
    None when there is no such sample. Loads nothing."""
    try:
        from skimage import data
    except ImportError:  # pragma: no cover - scikit-image is a dependency
        return None
    loader = getattr(data, name, None)
    if not name or name.startswith("_") or not callable(loader) or isinstance(loader, type):
        return None
    return loader  # type: ignore[no-any-return]


def _image_fields(obj: dict[str, Any], where: str, folder: Path) -> dict[str, Any]:
    image = _text(
        obj,
        "image",
        where,
        "a file path, relative to the dataset's folder, or skimage:NAME such as skimage:chelsea",
        required=True,
    )
    assert image is not None
    if image.startswith(SKIMAGE):
        name = image[len(SKIMAGE) :]
        if skimage_loader(name) is None:
            raise _fail(
                where,
                f"scikit-image has no sample image {name!r}; use e.g. skimage:chelsea, "
                "skimage:coffee or skimage:astronaut, or a file path",
            )
        path = image
    else:
        resolved = (folder / Path(image).expanduser()).resolve()
        if not resolved.is_file():
            raise _fail(
                where,
                f"no image file at {resolved} (a relative path is read from the dataset's folder "
                f"{folder}); fix the path or use skimage:NAME",
            )
        path = str(resolved)
    target = obj.get("target")
    if target is not None:
        if isinstance(target, bool) or not isinstance(target, int | str):
            raise _fail(
                where,
                f'"target" must be a class index (an integer) or a class label (a string), got '
                f"{type(target).__name__}; leave it out to explain the predicted class",
            )
        if isinstance(target, int) and target < 0:
            raise _fail(where, f'"target" must be a class index >= 0, got {target}')
        if isinstance(target, str) and not target.strip():
            raise _fail(where, '"target" is empty; give a class label or index, or leave it out')
    return {"image": image, "image_path": path, "target": target}


def _dataset_path(name: str, folder: Path, where: str, kind: str, expect: str) -> Path:
    """``name`` resolved against the dataset's ``folder``: a folder when ``kind`` is "folder",
    else a file; an InputError naming ``where`` and what to ``expect`` when it is missing."""
    resolved = (folder / Path(name).expanduser()).resolve()
    if not (resolved.is_dir() if kind == "folder" else resolved.is_file()):
        raise _fail(
            where,
            f"no {kind} at {resolved} (a relative path is read from the dataset's folder "
            f"{folder}); give {expect}",
        )
    return resolved


def reasoning_trace(record: Record) -> Any:
    """The :class:`~attribkit.tasks.reasoning.ReasoningTrace` of a reasoning record (read
    from its folder, or built from its fields). InputError when it is not valid. No model
    calls."""
    from attribkit.tasks.reasoning import ReasoningTrace

    if record.folder_path is not None:
        return ReasoningTrace.from_folder(record.folder_path, answer=record.answer)
    chunks = list(record.chunks) if record.chunks is not None else None
    return ReasoningTrace(str(record.problem), str(record.text), record.answer, chunks=chunks)


def _reasoning_fields(obj: dict[str, Any], where: str, folder: Path) -> dict[str, Any]:
    answer = _text(obj, "answer", where, "to use the folder's gt_answer", required=False)
    fields: dict[str, Any] = {"answer": answer}
    if "folder" in obj:
        clash = sorted({"problem", "text", "chunks"} & set(obj))
        if clash:
            raise _fail(
                where,
                f'give either "folder" or "problem" and "text", not both (also {clash[0]!r})',
            )
        name = _text(obj, "folder", where, "a Thought Anchors problem folder", required=True)
        assert name is not None
        resolved = _dataset_path(name, folder, where, "folder", "a Thought Anchors problem folder")
        fields.update(folder=name, folder_path=str(resolved))
    else:
        what = 'the problem the reasoning solves (or give "folder")'
        fields["problem"] = _text(obj, "problem", where, what, required=True)
        fields["text"] = _text(obj, "text", where, "the chain of thought", required=True)
        chunks = obj.get("chunks")
        if chunks is not None:
            if not isinstance(chunks, list) or not all(isinstance(c, str) for c in chunks):
                raise _fail(where, '"chunks" must be a list of strings (the sentences, in order)')
            fields["chunks"] = tuple(chunks)
    try:
        trace = reasoning_trace(Record(key="", line=0, task="reasoning", **fields))
    except InputError as e:
        raise _fail(where, str(e)) from None
    if trace.answer is None:
        raise _fail(where, 'no answer: give "answer" (the final answer the reasoning leads to)')
    return fields


def agent_log(record: Record) -> Any:
    """The :class:`~attribkit.tasks.agents.AgentLog` of an agents record (read from its log
    file, or built from its turns). InputError when it is not valid. No model calls."""
    from attribkit.tasks.agents import AgentLog

    if record.log_path is not None:
        return AgentLog.from_file(record.log_path)
    return AgentLog(
        list(record.turns or ()),
        question=record.question,
        ground_truth=record.ground_truth,
        mistake_agent=record.mistake_agent,
        mistake_step=record.mistake_step,
        meta={} if record.id is None else {"id": str(record.id)},
    )


_LOG_FIELDS = ("question", "ground_truth", "mistake_agent", "mistake_step")
_OUTCOMES = ("final", "gold")


def _agents_fields(obj: dict[str, Any], where: str, folder: Path) -> dict[str, Any]:
    from attribkit.tasks.agents import AgentTask, check_max_tokens

    fields: dict[str, Any] = {}
    if "log" in obj and "turns" in obj:
        raise _fail(where, 'give either "log" (a log file) or "turns" (the turns inline), not both')
    if "log" in obj:
        clash = [k for k in _LOG_FIELDS if k in obj]
        if clash:
            raise _fail(
                where,
                f'"{clash[0]}" goes with inline "turns"; a "log" file carries its own question, '
                "ground truth and mistake: remove the field",
            )
        name = _text(obj, "log", where, "a multi-agent log file", required=True)
        assert name is not None
        resolved = _dataset_path(
            name, folder, where, "log file", "a Who&When log or a JSON list of turns"
        )
        fields.update(log=name, log_path=str(resolved))
    elif "turns" in obj:
        turns = obj["turns"]
        if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
            raise _fail(
                where, '"turns" must be a list of objects {"agent": "...", "content": "..."}'
            )
        if not turns:
            raise _fail(where, '"turns" is empty: give at least one turn {"agent", "content"}')
        fields["turns"] = tuple(turns)
        for key in ("question", "ground_truth", "mistake_agent"):
            value = obj.get(key)
            if value is not None and not isinstance(value, str):
                raise _fail(where, f'"{key}" must be a string, got {type(value).__name__}')
            fields[key] = value
        step = obj.get("mistake_step")
        if step is not None and (isinstance(step, bool) or not isinstance(step, int | str)):
            raise _fail(
                where, f'"mistake_step" must be a 0-based step number, got {type(step).__name__}'
            )
        fields["mistake_step"] = step
    else:
        raise _fail(
            where,
            'missing "log" (a multi-agent log file) or "turns" (a list of {"agent", "content"})',
        )
    outcome = obj.get("outcome")
    if outcome is not None and outcome not in _OUTCOMES:
        raise _fail(
            where,
            f'"outcome" must be "final" (the last turn) or "gold" (the ground truth), got '
            f"{outcome!r}",
        )
    chars = obj.get("max_turn_chars")
    if chars is not None and (isinstance(chars, bool) or not isinstance(chars, int) or chars < 1):
        raise _fail(
            where, f'"max_turn_chars" must be a positive number of characters, got {chars!r}'
        )
    budget = obj.get("max_tokens")
    try:
        check_max_tokens(budget)
    except InputError:
        raise _fail(
            where, f'"max_tokens" must be a positive number of tokens or "window", got {budget!r}'
        ) from None
    with_answer = obj.get("with_answer")
    if with_answer is not None and not isinstance(with_answer, bool):
        raise _fail(where, f'"with_answer" must be true or false, got {with_answer!r}')
    fields.update(outcome=outcome, max_turn_chars=chars, max_tokens=budget, with_answer=with_answer)
    try:  # the log and the outcome it can score, without a model
        AgentTask(
            agent_log(Record(key="", line=0, task="agents", **fields)),
            outcome=outcome or "final",
            max_turn_chars=chars,
        )
    except InputError as e:
        raise _fail(where, str(e)) from None
    return fields


def _machine_text_fields(obj: dict[str, Any], where: str, folder: Path) -> dict[str, Any]:
    return {"text": _text(obj, "text", where, "the text to test for machine generation", True)}


def _provenance_fields(obj: dict[str, Any], where: str, folder: Path) -> dict[str, Any]:
    text = _text(obj, "text", where, "the text whose source is asked", required=True)
    what = "(the true source, when known, kept for evaluation)"
    source = _text(obj, "source", where, what, required=False)
    return {"text": text, "true_source": source}


@dataclass(frozen=True)
class RecordSchema:
    """The fields of one task's records: ``parse(obj, where, folder)`` validates a JSON object
    and returns the Record fields; ``key_fields`` are hashed into the content key."""

    task: str
    fields: tuple[str, ...]
    example: str
    parse: Callable[[dict[str, Any], str, Path], dict[str, Any]]
    key_fields: tuple[str, ...]
    #: a record with any of these fields (and only this schema's) looks like one of this task's
    markers: tuple[str, ...] = ()


#: The record schema of each dataset task.
SCHEMAS: dict[str, RecordSchema] = {
    "context": RecordSchema(
        "context",
        ("context", "query", "response", "id"),
        '{"context": "...", "query": "...", "response": "..." (optional), "id": ... (optional)}',
        _context_fields,
        ("context", "query", "response"),
    ),
    "generation": RecordSchema(
        "generation",
        ("prompt", "response", "id"),
        '{"prompt": "...", "response": "..." (optional), "id": ... (optional)}',
        _generation_fields,
        ("prompt", "response"),
    ),
    "image": RecordSchema(
        "image",
        ("image", "target", "id"),
        '{"image": "photo.jpg" or "skimage:chelsea", "target": class index or label (optional), '
        '"id": ... (optional)}',
        _image_fields,
        ("image", "target"),
    ),
    "reasoning": RecordSchema(
        "reasoning",
        ("problem", "text", "answer", "chunks", "folder", "id"),
        '{"problem": "...", "text": "...", "answer": "..." (optional), "id": ... (optional)} '
        'or {"folder": "path/to/problem_2238", "id": ... (optional)}',
        _reasoning_fields,
        ("problem", "text", "answer", "chunks", "folder"),
    ),
    "agents": RecordSchema(
        "agents",
        (
            "log",
            "turns",
            "question",
            "ground_truth",
            "mistake_agent",
            "mistake_step",
            "outcome",
            "max_turn_chars",
            "max_tokens",
            "with_answer",
            "id",
        ),
        '{"log": "logs/1.json", "outcome": "final" (optional), "id": ... (optional)} or '
        '{"turns": [{"agent": "...", "content": "..."}, ...], "id": ... (optional)}',
        _agents_fields,
        (
            "log",
            "turns",
            "question",
            "ground_truth",
            "mistake_agent",
            "mistake_step",
            "outcome",
            "max_turn_chars",
            "max_tokens",
            "with_answer",
        ),
        markers=("log", "turns"),
    ),
    "machine_text": RecordSchema(
        "machine_text",
        ("text", "id"),
        '{"text": "...", "id": ... (optional)}',
        _machine_text_fields,
        ("text",),
    ),
    "provenance": RecordSchema(
        "provenance",
        ("text", "source", "id"),
        '{"text": "...", "source": "the true author" (optional), "id": ... (optional)}',
        _provenance_fields,
        ("text",),
    ),
}

#: The keys a context record may have (the other tasks: ``SCHEMAS[task].fields``).
FIELDS = SCHEMAS["context"].fields


def _other_task(keys: set[str], task: str) -> str:
    """`` (... run with --task X)`` when the record's fields are those of another task (or of
    several: ``--task X or --task Y``)."""
    found = []
    for other, schema in SCHEMAS.items():
        main = set(schema.fields) - {"id", "response", "target", "source"}
        looks = main <= keys if not schema.markers else bool(keys & set(schema.markers))
        if other != task and looks and keys <= set(schema.fields):
            found.append(other)
    if not found:
        return ""
    article = "an" if found[0][0] in "aeiou" else "a"
    run = " or ".join(f"--task {t}" for t in found)
    return f"; this looks like {article} {' or '.join(found)} record: run with {run}"


def _parse_line(text: str, where: str, schema: RecordSchema, folder: Path) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise _fail(
            where,
            f"not valid JSON ({e.msg} at column {e.colno}); write one JSON object per line, "
            f"e.g. {schema.example}",
        ) from None
    if not isinstance(obj, dict):
        raise _fail(
            where,
            f"a record must be a JSON object, got {type(obj).__name__}; write {schema.example}",
        )
    unknown = sorted(set(obj) - set(schema.fields))
    if unknown:
        raise _fail(
            where,
            f"unknown field(s) {', '.join(map(repr, unknown))}; a {schema.task} record has only "
            f"{', '.join(schema.fields)} (check the spelling, or remove the field)"
            + _other_task(set(obj), schema.task),
        )
    fields = schema.parse(obj, where, folder)
    rid = obj.get("id")
    if rid is not None and (isinstance(rid, bool) or not isinstance(rid, str | int)):
        raise _fail(where, f'"id" must be a string or an integer, got {type(rid).__name__}')
    if isinstance(rid, str) and not rid.strip():
        raise _fail(where, '"id" is empty; give a unique id or leave the field out')
    fields["id"] = rid
    return fields


def read_records(path: str | os.PathLike[str], task: str = "context") -> list[Record]:
    """Read and validate every line of the JSONL file ``path`` as ``task`` records (see the
    module docstring); returns its records in file order.

    Raises :class:`InputError` naming ``file:line`` and what to fix for the first bad line
    (invalid JSON, a missing or empty field, a wrong type, an unknown field, a duplicate id, an
    image file that does not exist). Costs no model calls.
    """
    if task not in SCHEMAS:
        raise InputError(f"unknown task {task!r}; choose one of: {', '.join(SCHEMAS)}")
    schema = SCHEMAS[task]
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"no such dataset file: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read the dataset file {path}: {e}") from None
    folder = path.resolve().parent
    records: list[Record] = []
    ids: dict[str, int] = {}
    copies: dict[str, int] = {}
    for number, text in enumerate(raw.splitlines(), start=1):
        if not text.strip():
            continue
        where = f"{path}:{number}"
        fields = _parse_line(text, where, schema, folder)
        rid = fields["id"]
        if rid is not None:
            key = str(rid)
            if key in ids:
                raise _fail(
                    where,
                    f"duplicate id {rid!r} (already used on line {ids[key]}); ids must be unique",
                )
            ids[key] = number
        else:
            body = {name: fields.get(name) for name in schema.key_fields}
            for name in ("context", "chunks"):
                if isinstance(body.get(name), tuple):
                    body[name] = list(body[name])
            base = record_key(body)
            copies[base] = copies.get(base, 0) + 1
            key = base if copies[base] == 1 else f"{base}#{copies[base]}"
        records.append(Record(key=key, line=number, source=path.name, task=task, **fields))
    if not records:
        raise InputError(f"{path} holds no records; write one JSON object per line")
    clash = {r.key for r in records if r.id is None} & set(ids)
    if clash:
        key = sorted(clash)[0]
        raise _fail(
            f"{path}:{ids[key]}",
            f"id {key!r} equals the content key of another record; choose another id",
        )
    return records
