"""Context-attribution methods that need the ContextTask itself (its value choices or the
language model's attention), one file per method; the generic perturbation methods run on a
ContextTask too."""
