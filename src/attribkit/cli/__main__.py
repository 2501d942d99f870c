"""``python -m attribkit.cli``."""

from attribkit.cli import app

app()
