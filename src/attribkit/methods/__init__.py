"""Attribution methods, one file per method (``catalog.py`` lists them all).

Importing this package imports no method: ``attribkit.attribute(obj, name, **params)`` imports
the one it runs. ``attribkit methods [--kind K] [--json]`` prints every method with its kind,
cost, paper and source file.
"""
