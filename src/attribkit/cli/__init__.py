"""The ``attribkit`` command line: one module per kind of input, all on one Typer app.

``attribkit.cli:app`` is the console entry point; importing this package registers every
command, in the order ``attribkit --help`` lists them.
"""

# isort: off
from attribkit.cli import context, store, image, reasoning, agents  # noqa: F401
from attribkit.cli import provenance, recourse, series, prompts, internals  # noqa: F401

# isort: on
from attribkit.cli._app import app
from attribkit.cli.context import read_context_file
from attribkit.cli.recourse import read_recourse_csv, recourse_actions

__all__ = ["app", "read_context_file", "read_recourse_csv", "recourse_actions"]
