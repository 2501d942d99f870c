"""A causal language model with the few operations attribution needs.

:class:`LanguageModel` wraps a Hugging Face causal LM and its tokenizer. It formats chat prompts,
generates greedily, scores responses (per-token and summed log-probabilities, batched with left
padding) and builds a :class:`~attribkit.core.gradient.GradientScorer` over input embeddings.
It is a :class:`~attribkit.core.cost.CostMeter`: ``lm.cost`` counts every sequence it evaluated,
and ``lm.tokens_processed`` every token the model ran on.

For context attribution it also offers: prefix key-value reuse (:meth:`LanguageModel.set_reference`
and ``token_logprobs(..., reuse_prefix=True)``: many prompts sharing a long prefix, e.g.
leave-one-out over context sentences, only recompute what follows the shared prefix), token
character spans (:meth:`~LanguageModel.prompt_token_spans`,
:meth:`~LanguageModel.response_token_spans`), the context window
(:attr:`~LanguageModel.max_positions`, :meth:`~LanguageModel.count_tokens`) and attention rows
recomputed from the attention inputs without a T×T matrix (:meth:`~LanguageModel.attention_rows`).

One job per module:

- :mod:`~attribkit.models.lm.adapter` — the :class:`LanguageModel` class: construction, chat
  formatting, token ids, character offsets and token units, ``generate``, ``save``;
- :mod:`~attribkit.models.lm.scoring` — ``token_logprobs``/``logprob``, batching with left
  padding, the reference key-value cache and prefix reuse;
- :mod:`~attribkit.models.lm.attention` — ``attention_rows`` (rows recomputed from the attention
  inputs for the Llama family, eager ``output_attentions`` otherwise);
- :mod:`~attribkit.models.lm.gradients` — ``gradient_scorer`` over input embeddings, its
  baselines and the mapping of prompt tokens to units.
"""

from attribkit.models.lm.adapter import LanguageModel
from attribkit.models.lm.attention import ROW_FAMILIES

__all__ = ["ROW_FAMILIES", "LanguageModel"]
