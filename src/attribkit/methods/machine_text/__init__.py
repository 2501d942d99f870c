"""Zero-shot machine-text detectors on a MachineTextTask, one file per method: ``log_perplexity``,
``fast_detectgpt``, ``binoculars`` and ``detectgpt``. Each returns an Attribution whose
``extras["statistic"]`` is the detector statistic (higher = more likely machine-generated) and
whose per-token terms (``extras["token_terms"]``) add up to it; the scores are those terms
summed per unit (tokens or sentences)."""
