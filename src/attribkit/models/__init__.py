"""Model adapters: a local HF language model, any torch classifier, any Python callable, and a
language model behind an OpenAI-compatible HTTP endpoint."""

from attribkit.models.blackbox import CallableModel
from attribkit.models.classifier import TorchClassifier
from attribkit.models.http_lm import OpenAICompatibleLM
from attribkit.models.image import ImageClassifier, imagenet_labels, prepare_image
from attribkit.models.lm import LanguageModel
from attribkit.models.loading import LOADERS, cache_root, load, register_loader

__all__ = [
    "LOADERS",
    "CallableModel",
    "ImageClassifier",
    "LanguageModel",
    "OpenAICompatibleLM",
    "TorchClassifier",
    "cache_root",
    "imagenet_labels",
    "load",
    "prepare_image",
    "register_loader",
]
