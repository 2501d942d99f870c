"""Methods of task kind ``"detection"`` (a :class:`~attribkit.tasks.detection.DetectionTask`):
VPS (:mod:`.vps`, Chen et al., CVPR 2025) and D-RISE (:mod:`.drise`, Petsiuk et al., CVPR 2021).
Every perturbation method also runs on a detection task, over its image regions."""
