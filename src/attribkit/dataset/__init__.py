"""Dataset runs: attribute every record of a JSONL file into a run store, resumably, locally or
on a Ray actor pool.

Every task kind has a record schema (:mod:`attribkit.dataset.records`): ``context``
(``context``, ``query``, ``response``?), ``generation`` (``prompt``, ``response``?), ``image``
(``image``: a file path or ``skimage:NAME``; ``target``?), ``reasoning`` (``problem``, ``text``,
``answer``? or ``folder``), ``agents`` (``log``: a log file, or ``turns``; ``outcome``?,
``max_turn_chars``?, ``max_tokens``?, ``with_answer``?), ``machine_text`` (``text``) and
``provenance`` (``text``, ``source``?: the true author when known, kept for evaluation), each
with an optional ``id``. A provenance run fits its source model once from a folder of known
authors (``known=``).

>>> from attribkit.dataset import run_dataset
>>> summary = run_dataset("records.jsonl", "runs.db", method="loo")  # doctest: +SKIP
>>> run_dataset("images.jsonl", "runs.db", task="image")  # grad_cam, efficientnet-lite0  # doctest: +SKIP
>>> run_dataset("texts.jsonl", "runs.db", task="provenance", known="authors/")  # doctest: +SKIP
>>> print(summary.describe())  # doctest: +SKIP
"""

from attribkit.dataset.records import Record, read_records
from attribkit.dataset.runner import DatasetSummary, run_dataset

__all__ = ["DatasetSummary", "Record", "read_records", "run_dataset"]
