"""Keep attributions: an embedded SQLite run store with JSONL export and import.

>>> from attribkit import store
>>> with store.open("runs.db") as runs:          # doctest: +SKIP
...     run_id = runs.put(attribution, inputs={"context": context, "query": query})
...     runs.query(method="loo", since="2026-11-01")
"""

from attribkit.store.runs import (
    SCHEMA_VERSION,
    RunStore,
    StoredRun,
    infer_model,
    infer_task,
    open,
)

__all__ = ["SCHEMA_VERSION", "RunStore", "StoredRun", "infer_model", "infer_task", "open"]
