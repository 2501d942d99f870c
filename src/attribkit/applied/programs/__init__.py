"""GenerationPrograms in attribkit (Wan, Hirsch, Stengel-Eskin, Dagan, Bansal,
"GenerationPrograms: Fine-grained Attribution with Executable Programs", COLM 2025): a plan of
``paraphrase`` / ``compression`` / ``fusion`` calls over source sentences, executed by a text
back end, whose citations follow from its structure.

- :mod:`~attribkit.applied.programs.grammar`: :class:`Program`, :func:`parse_program`;
- :mod:`~attribkit.applied.programs.execute`: :class:`TextOps`, :class:`LMTextOps`,
  :class:`ExtractiveTextOps`, :func:`execute`;
- :mod:`~attribkit.applied.programs.planning`: :func:`plan_post_hoc`,
  :func:`program_attribution`, :func:`verify`, :func:`cite_with_program`;
- :mod:`~attribkit.applied.programs.evaluate`: :func:`citation_counts`.
"""

from attribkit.applied.programs.evaluate import CitationCounts, citation_counts
from attribkit.applied.programs.execute import (
    MODULE_PROMPTS,
    ExtractiveTextOps,
    LMTextOps,
    NodeRun,
    ProgramRun,
    TextOps,
    execute,
    module_prompt,
)
from attribkit.applied.programs.grammar import (
    ARITY,
    Call,
    Node,
    Program,
    Repair,
    Source,
    parse_bullet,
    parse_program,
)
from attribkit.applied.programs.planning import (
    NodeCheck,
    ProgramCitation,
    Verification,
    cite_with_program,
    plan_post_hoc,
    program_attribution,
    select_sources,
    source_node,
    verify,
)

__all__ = [
    "ARITY",
    "MODULE_PROMPTS",
    "Call",
    "CitationCounts",
    "ExtractiveTextOps",
    "LMTextOps",
    "Node",
    "NodeCheck",
    "NodeRun",
    "Program",
    "ProgramCitation",
    "ProgramRun",
    "Repair",
    "Source",
    "TextOps",
    "Verification",
    "citation_counts",
    "cite_with_program",
    "execute",
    "module_prompt",
    "parse_bullet",
    "parse_program",
    "plan_post_hoc",
    "program_attribution",
    "select_sources",
    "source_node",
    "verify",
]
