"""Rendering: self-contained, escaped HTML pages and console tables."""

from attribkit.viz.console import print_attribution
from attribkit.viz.html import attribution_html, save_html

__all__ = ["attribution_html", "print_attribution", "save_html"]
