"""Dataset runs: attribute every record of a JSONL file into a run store, resumably, locally or
on a Ray actor pool.

Every task kind has a record schema (:mod:`attribkit.dataset.records`): ``context``
(``context``, ``query``, ``response``?), ``generation`` (``prompt``, ``response``?), ``image``
(``image``: a file path or ``skimage:NAME``; ``target``?), ``reasoning`` (``problem``, ``text``,
``answer``? or ``folder``) and ``agents`` (``log``: a log file, or ``turns``; ``outcome``?,
``max_turn_chars``?, ``with_answer``?), each with an optional ``id``.

>>> from attribkit.dataset import run_dataset
>>> summary = run_dataset("records.jsonl", "runs.db", method="loo")  # doctest: +SKIP
>>> run_dataset("images.jsonl", "runs.db", task="image")  # grad_cam, efficientnet-lite0  # doctest: +SKIP
>>> print(summary.describe())  # doctest: +SKIP
"""

from attribkit.dataset.records import Record, read_records
from attribkit.dataset.runner import DatasetSummary, run_dataset

__all__ = ["DatasetSummary", "Record", "read_records", "run_dataset"]
