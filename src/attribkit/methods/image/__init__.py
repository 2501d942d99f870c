"""Image attribution methods (kind ``image``): each takes an
:class:`~attribkit.tasks.image.ImageTask` and returns a map over the image, one file per method
(or per family of variants); the generic perturbation methods run on an ImageTask too."""
