"""Attribution methods, one module per family. Importing this package registers them all."""

from attribkit.methods.occlusion import leave_one_out, occlusion

__all__ = ["leave_one_out", "occlusion"]
