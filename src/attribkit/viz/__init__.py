"""Rendering: self-contained, escaped HTML pages and console tables."""

from attribkit.viz.console import print_attribution
from attribkit.viz.explain import explain
from attribkit.viz.html import attribution_html, save_html
from attribkit.viz.notebook import notebook_html
from attribkit.viz.token_table import print_token_attribution, token_attribution_json

__all__ = [
    "attribution_html",
    "explain",
    "notebook_html",
    "print_attribution",
    "print_token_attribution",
    "save_html",
    "token_attribution_json",
]
