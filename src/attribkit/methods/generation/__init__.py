"""Token-attribution methods for generated text (kind ``generation``): each takes a
:class:`~attribkit.tasks.generation.GenerationTask` and returns a rows × columns Attribution, one
file per method."""
