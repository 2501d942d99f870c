"""Reading a JSONL dataset of records to attribute, validated in full before any model work.

One record per line: ``{"context": str | list[str], "query": str, "response": str (optional),
"id": str | int (optional)}``. Blank lines are ignored. Every record gets a *key* that identifies
it in a run store: ``str(id)`` when the line has an id, else a hash of the record's content (so it
does not change when lines are inserted, removed or reordered), with ``#2``, ``#3``... appended
for the second, third... identical copy.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attribkit.core.errors import InputError

__all__ = ["FIELDS", "Record", "content_key", "read_records"]

#: The keys a record line may have.
FIELDS = ("context", "query", "response", "id")


@dataclass(frozen=True)
class Record:
    """One validated line of a dataset: what to attribute, its store key and where it came from."""

    key: str
    line: int
    context: str | tuple[str, ...]
    query: str
    response: str | None = None
    id: str | int | None = None
    source: str = ""

    @property
    def where(self) -> str:
        """``file:line`` of the record, for messages."""
        return f"{self.source}:{self.line}"

    def inputs(self) -> dict[str, Any]:
        """The inputs stored with the record's run."""
        context = self.context if isinstance(self.context, str) else list(self.context)
        return {"context": context, "query": self.query, "response": self.response, "id": self.id}


def content_key(
    context: str | list[str] | tuple[str, ...], query: str, response: str | None
) -> str:
    """A stable key for a record without an id: the first 16 hex digits of the SHA-256 of its
    canonical JSON (sorted keys, no whitespace; a missing response and ``null`` are the same)."""
    body: dict[str, Any] = {
        "context": context if isinstance(context, str) else list(context),
        "query": query,
    }
    if response is not None:
        body["response"] = response
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def _fail(where: str, what: str) -> InputError:
    return InputError(f"{where}: {what}")


def _parse_line(text: str, where: str) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise _fail(
            where,
            f"not valid JSON ({e.msg} at column {e.colno}); write one JSON object per line, "
            'e.g. {"context": "...", "query": "..."}',
        ) from None
    if not isinstance(obj, dict):
        raise _fail(
            where,
            f"a record must be a JSON object, got {type(obj).__name__}; write "
            '{"context": ..., "query": ..., "response": ... (optional), "id": ... (optional)}',
        )
    unknown = sorted(set(obj) - set(FIELDS))
    if unknown:
        raise _fail(
            where,
            f"unknown field(s) {', '.join(map(repr, unknown))}; a record has only "
            f"{', '.join(FIELDS)} (check the spelling, or remove the field)",
        )
    context = obj.get("context")
    if isinstance(context, str):
        if not context.strip():
            raise _fail(where, '"context" is empty; give the text the response should be traced to')
    elif isinstance(context, list):
        if not context or not all(isinstance(p, str) for p in context):
            raise _fail(where, '"context" must be a string or a non-empty list of strings')
        if not any(p.strip() for p in context):
            raise _fail(where, '"context" has only empty passages; give at least one with text')
    elif context is None:
        raise _fail(where, 'missing "context" (a string, or a list of passage strings)')
    else:
        raise _fail(
            where, f'"context" must be a string or a list of strings, got {type(context).__name__}'
        )
    query = obj.get("query")
    if query is None:
        raise _fail(where, 'missing "query" (the question the response answers)')
    if not isinstance(query, str) or not query.strip():
        raise _fail(where, '"query" must be a non-empty string (the question the response answers)')
    response = obj.get("response")
    if response is not None and (not isinstance(response, str) or not response.strip()):
        raise _fail(
            where,
            '"response" must be a non-empty string, or left out to have the model generate it',
        )
    rid = obj.get("id")
    if rid is not None and (isinstance(rid, bool) or not isinstance(rid, str | int)):
        raise _fail(where, f'"id" must be a string or an integer, got {type(rid).__name__}')
    if isinstance(rid, str) and not rid.strip():
        raise _fail(where, '"id" is empty; give a unique id or leave the field out')
    return obj


def read_records(path: str | os.PathLike[str]) -> list[Record]:
    """Read and validate every line of the JSONL file ``path``; returns its records in file order.

    Raises :class:`InputError` naming ``file:line`` and what to fix for the first bad line
    (invalid JSON, a missing or empty field, a wrong type, an unknown field, a duplicate id).
    Costs no model calls.
    """
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"no such dataset file: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read the dataset file {path}: {e}") from None
    records: list[Record] = []
    ids: dict[str, int] = {}
    copies: dict[str, int] = {}
    for number, text in enumerate(raw.splitlines(), start=1):
        if not text.strip():
            continue
        where = f"{path}:{number}"
        obj = _parse_line(text, where)
        context = obj["context"]
        context = context if isinstance(context, str) else tuple(context)
        rid = obj.get("id")
        if rid is not None:
            key = str(rid)
            if key in ids:
                raise _fail(
                    where,
                    f"duplicate id {rid!r} (already used on line {ids[key]}); ids must be unique",
                )
            ids[key] = number
        else:
            base = content_key(context, obj["query"], obj.get("response"))
            copies[base] = copies.get(base, 0) + 1
            key = base if copies[base] == 1 else f"{base}#{copies[base]}"
        records.append(
            Record(
                key=key,
                line=number,
                context=context,
                query=obj["query"],
                response=obj.get("response"),
                id=rid,
                source=path.name,
            )
        )
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
