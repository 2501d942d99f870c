"""Dataset runs: attribute every record of a JSONL file into a run store, resumably, locally or
on a Ray actor pool.

>>> from attribkit.dataset import run_dataset
>>> summary = run_dataset("records.jsonl", "runs.db", method="loo")  # doctest: +SKIP
>>> print(summary.describe())  # doctest: +SKIP
"""

from attribkit.dataset.records import Record, read_records
from attribkit.dataset.runner import DatasetSummary, run_dataset

__all__ = ["DatasetSummary", "Record", "read_records", "run_dataset"]
