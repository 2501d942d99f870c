"""attribkit: which parts of the input made a model produce this output, and how sure can we be?"""

__version__ = "0.1.0"

from attribkit.core import *  # noqa: E402,F403
from attribkit.core import __all__ as _core_all  # noqa: E402

__all__ = ["__version__", *_core_all]
