"""Model adapters: a local HF language model, any torch classifier, any Python callable, a
language model behind an OpenAI-compatible HTTP endpoint, and judges (an OpenAI-compatible chat
endpoint, or a local language model by constrained choice)."""

from attribkit.models.actions import ActionSet
from attribkit.models.audio import WaveformClassifier, audio_features, read_wav
from attribkit.models.authorship import (
    AuthorshipModel,
    BurrowsDelta,
    CharNgramSVM,
    FederalistPapers,
    MFWLogistic,
    authorship_model,
    load_federalist,
    open_set_authorship,
    read_author_folders,
)
from attribkit.models.blackbox import CallableModel
from attribkit.models.blazeface import (
    BlazeFace,
    FaceDetection,
    blazeface_available,
    blazeface_model_path,
)
from attribkit.models.classifier import TorchClassifier
from attribkit.models.forensics import max_softmax_baseline, residual_features
from attribkit.models.generators import ToyGenerator, toy_source_dataset
from attribkit.models.german_credit import german_credit_actions, load_german_credit
from attribkit.models.http_lm import OpenAICompatibleLM
from attribkit.models.image import ImageClassifier, imagenet_labels, prepare_image
from attribkit.models.judge import (
    ChatJudge,
    Judge,
    Judgement,
    LocalJudge,
    Verdict,
    judge_from_env,
)
from attribkit.models.lm import LanguageModel
from attribkit.models.loading import LOADERS, cache_root, load, register_loader
from attribkit.models.next_token import HFNextToken, NextTokenModel, same_vocabulary
from attribkit.models.ngram import NGramLM
from attribkit.models.open_set import (
    Hierarchy,
    RejectingClassifier,
    SourceDecision,
    threshold_at_tpr,
)
from attribkit.models.pose_lite import PoseLite
from attribkit.models.tabular import TabularModel
from attribkit.models.voices import Voice, available_voices, synthesize, voice_corpus

__all__ = [
    "LOADERS",
    "ActionSet",
    "AuthorshipModel",
    "BlazeFace",
    "BurrowsDelta",
    "CallableModel",
    "CharNgramSVM",
    "ChatJudge",
    "FaceDetection",
    "FederalistPapers",
    "HFNextToken",
    "Hierarchy",
    "ImageClassifier",
    "Judge",
    "Judgement",
    "LanguageModel",
    "LocalJudge",
    "MFWLogistic",
    "NGramLM",
    "NextTokenModel",
    "OpenAICompatibleLM",
    "PoseLite",
    "RejectingClassifier",
    "SourceDecision",
    "TabularModel",
    "TorchClassifier",
    "ToyGenerator",
    "Verdict",
    "Voice",
    "WaveformClassifier",
    "audio_features",
    "authorship_model",
    "available_voices",
    "blazeface_available",
    "blazeface_model_path",
    "cache_root",
    "german_credit_actions",
    "imagenet_labels",
    "judge_from_env",
    "load",
    "load_federalist",
    "load_german_credit",
    "max_softmax_baseline",
    "open_set_authorship",
    "prepare_image",
    "read_author_folders",
    "read_wav",
    "register_loader",
    "residual_features",
    "same_vocabulary",
    "synthesize",
    "threshold_at_tpr",
    "toy_source_dataset",
    "voice_corpus",
]
