"""Attribution that acts: each module turns an attribution into an action on what goes into a
language model, measured against a baseline that spends the same budget.

- :mod:`attribkit.applied.programs` — GenerationPrograms: cite through an executable plan of
  text operations;
- :mod:`attribkit.applied.ograg` — OG-RAG: fact-cluster (hyperedge) units and their retrieval;
- :mod:`attribkit.applied.pruning` — TAPruning, PromptQuine and attribution-guided pruning of
  an in-context prompt;
- :mod:`attribkit.applied.amplify` — AMPLIFY: few-shot rationales written from a proxy's
  attribution.
"""

from attribkit.applied.amplify import (
    AmplifyResult,
    LinearProxy,
    SelfProxy,
    amplify,
    random_shots,
    random_word_prompts,
)
from attribkit.applied.ograg import (
    HyperedgeRetrieval,
    HyperedgeUnits,
    flatten_jsonld,
    greedy_set_cover,
    ograg_retrieve,
)
from attribkit.applied.programs import (
    ExtractiveTextOps,
    LMTextOps,
    Program,
    ProgramCitation,
    ProgramRun,
    TextOps,
    cite_with_program,
    execute,
    parse_program,
    plan_post_hoc,
    program_attribution,
    verify,
)
from attribkit.applied.pruning import (
    PruneResult,
    attribution_prune,
    promptquine,
    random_prune,
    tapruning,
)

__all__ = [
    "AmplifyResult",
    "ExtractiveTextOps",
    "HyperedgeRetrieval",
    "HyperedgeUnits",
    "LMTextOps",
    "LinearProxy",
    "Program",
    "ProgramCitation",
    "ProgramRun",
    "PruneResult",
    "SelfProxy",
    "TextOps",
    "amplify",
    "attribution_prune",
    "cite_with_program",
    "execute",
    "flatten_jsonld",
    "greedy_set_cover",
    "ograg_retrieve",
    "parse_program",
    "plan_post_hoc",
    "program_attribution",
    "promptquine",
    "random_prune",
    "random_shots",
    "random_word_prompts",
    "tapruning",
    "verify",
]
