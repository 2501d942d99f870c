"""Reasoning-attribution methods that need the ReasoningTask itself (prefix sweeps over the
trace's sentences), one file per method; the generic perturbation methods run on a ReasoningTask
too (its value: log p(answer | problem, kept sentences, answer cue))."""
