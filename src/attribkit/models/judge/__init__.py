"""Judges: a model asked to choose among given options, for one or more named fields.

Failure attribution over multi-agent logs (Who&When, Zhang et al., ICML 2025; A2P, West et al.,
2025) asks a *judge* questions such as "which agent made the mistake, and at which step?", "is
there a mistake at this step? Yes/No" or "is the mistake in the upper or the lower half?". A
method writes the whole prompt (its instructions and the reply format it wants) and names the
fields of the reply with their allowed options::

    j = judge.ask(prompt, {"Agent Name": ["WebSurfer", "Orchestrator"], "Step Number": ["0", "1"]})
    j.fields["Agent Name"].choice      # "WebSurfer", or None when the reply did not say
    j.ranking("Step Number")           # options best first (for MRR)

Two judges answer the same :meth:`Judge.ask`:

- :class:`ChatJudge` — any OpenAI-compatible ``/v1/chat/completions`` server (OpenAI, vLLM,
  llama.cpp server, Ollama). It parses ``"{Field}: value"`` lines of the free-text reply; a reply
  that does not name an option is *unparsed* (``choice=None``), never an error. The API key is
  read from an environment variable the user names, at request time; it is never stored, shown or
  logged.
- :class:`LocalJudge` — a local :class:`~attribkit.models.lm.LanguageModel` by *constrained
  choice*: every option is scored as the reply line ``"{Field}: {option}"`` after the
  chat-formatted prompt, and the most probable one is chosen. It never fails to parse and gives a
  log-probability for every option (a ranking).

Both count one ``judge_calls`` per :meth:`~Judge.ask` on their meter (``judge.cost``).
"""

from attribkit.models.judge.base import (
    Judge,
    Judgement,
    Verdict,
    check_fields,
    match_option,
    parse_reply,
)
from attribkit.models.judge.chat import ChatJudge, judge_from_env
from attribkit.models.judge.local import LocalJudge

__all__ = [
    "ChatJudge",
    "Judge",
    "Judgement",
    "LocalJudge",
    "Verdict",
    "check_fields",
    "judge_from_env",
    "match_option",
    "parse_reply",
]
