"""A local web viewer for a run store: ``attribkit serve`` (needs the ``serve`` extra)."""

from attribkit.viewer.server import create_app, serve

__all__ = ["create_app", "serve"]
