"""Audio input for source attribution: a standard-library WAV reader and a fixed, model-free
feature vector (MFCC-like statistics plus spectral statistics) on which a linear classifier can
tell speech synthesisers apart.

The features stand in for LAVA's learned autoencoder latents ("Towards Reliable
Audio Deepfake Attribution and Model Recognition: A Multi-Level Autoencoder-Based Framework",
2025): the hierarchy and its rejection thresholds are the paper's; the representation here is a
classical one that needs no training. Everything is numpy/scipy; no audio library is needed.
"""

from __future__ import annotations

import wave
from functools import lru_cache
from math import gcd
from pathlib import Path

import numpy as np

from attribkit.core.errors import InputError

#: every signal is resampled to this rate before its features are computed
RATE = 16_000
#: STFT: 25 ms Hann frames every 10 ms, 512-point FFT (at 16 kHz)
FRAME, HOP, NFFT = 400, 160, 512
N_MELS, N_MFCC = 40, 20
#: frames more than this many dB below the loudest frame are silence and left out
SILENCE_DB = 40.0
#: the boundary (Hz) of the high-frequency energy ratio
HF_HZ = 4_000.0

_SUPPORTED = "uncompressed PCM WAV (RIFF/WAVE, 8-, 16-, 24- or 32-bit integer samples, any rate)"

#: names of the entries of :func:`audio_features`, in order
FEATURE_NAMES: list[str] = (
    [f"mfcc{i}_mean" for i in range(N_MFCC)]
    + [f"mfcc{i}_std" for i in range(N_MFCC)]
    + [f"dmfcc{i}_mean" for i in range(N_MFCC)]
    + [f"dmfcc{i}_std" for i in range(N_MFCC)]
    + [f"logmel{i}_mean" for i in range(N_MELS)]
    + [f"{s}_{m}" for s in ("centroid", "flatness", "hf_ratio", "rolloff") for m in ("mean", "std")]
)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode an uncompressed PCM WAV file with the standard library.

    Returns ``(samples, rate)``: float32 mono samples in [-1, 1] (channels averaged) and the
    file's sample rate in Hz. Raises :class:`InputError` naming the file and the supported format
    when the file is missing, is not RIFF/WAVE, is compressed (e.g. A-law, float, ADPCM), holds
    no samples or is truncated. Cost: no model calls.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such audio file (expected {_SUPPORTED})")
    try:
        with wave.open(str(p), "rb") as w:
            channels, width, rate, n = (
                w.getnchannels(),
                w.getsampwidth(),
                w.getframerate(),
                w.getnframes(),
            )
            raw = w.readframes(n)
    except (wave.Error, EOFError) as e:
        raise InputError(
            f"{p}: cannot decode this audio file ({e}); supported: {_SUPPORTED}"
        ) from e
    if channels < 1 or rate <= 0 or width not in (1, 2, 3, 4):
        raise InputError(
            f"{p}: unsupported WAV header ({channels} channels, {width}-byte samples, {rate} Hz); "
            f"supported: {_SUPPORTED}"
        )
    frame_bytes = channels * width
    got = len(raw) // frame_bytes
    if got == 0:
        raise InputError(f"{p}: the WAV file holds no samples; supported: {_SUPPORTED}")
    if got < n:
        raise InputError(
            f"{p}: truncated WAV file (header promises {n} frames, {got} present); "
            f"re-export it as {_SUPPORTED}"
        )
    raw = raw[: got * frame_bytes]
    if width == 1:  # 8-bit WAV is unsigned
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        x = v.astype(np.float32) / float(1 << 23)
    else:
        dt = np.dtype("<i2") if width == 2 else np.dtype("<i4")
        x = np.frombuffer(raw, dt).astype(np.float32) / float(1 << (8 * width - 1))
    x = x.reshape(-1, channels).mean(axis=1)
    return x.astype(np.float32), int(rate)


@lru_cache(maxsize=16)
def _lowpass(up: int, down: int) -> np.ndarray:
    """resample_poly's default filter (Kaiser beta 5, 20 zero crossings a side), designed once
    per ratio (designing it costs more than filtering a few seconds of speech)."""
    from scipy.signal import firwin  # imported here: scipy.signal takes ~0.5 s to load

    m = max(up, down)
    return firwin(2 * 10 * m + 1, 1.0 / m, window=("kaiser", 5.0))


def resample(samples: np.ndarray, rate: int, target: int = RATE) -> np.ndarray:
    """``samples`` at ``rate`` Hz resampled to ``target`` Hz by polyphase filtering
    (``scipy.signal.resample_poly`` with the exact ratio ``target/rate`` reduced by their gcd,
    and its default Kaiser-windowed low-pass, which removes what lies above the lower Nyquist
    frequency). Returns float32 samples. Cost: no model calls."""
    from scipy.signal import resample_poly

    if rate <= 0 or target <= 0:
        raise InputError(f"sample rates must be positive (got {rate} -> {target})")
    x = np.asarray(samples, dtype=np.float64)
    if rate == target:
        return x.astype(np.float32)
    g = gcd(int(rate), int(target))
    up, down = target // g, rate // g
    return resample_poly(x, up, down, window=_lowpass(up, down)).astype(np.float32)


def mel_filterbank(n_mels: int = N_MELS, nfft: int = NFFT, rate: int = RATE) -> np.ndarray:
    """Triangular mel filters (HTK mel scale, ``2595 log10(1 + f/700)``, 0 Hz to Nyquist), shape
    ``(n_mels, nfft // 2 + 1)``, each filter peaking at 1. Cost: no model calls."""
    mel = np.linspace(0.0, 2595.0 * np.log10(1.0 + (rate / 2) / 700.0), n_mels + 2)
    hz = 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    bins = np.fft.rfftfreq(nfft, 1.0 / rate)
    fb = np.zeros((n_mels, bins.size))
    for i in range(n_mels):
        lo, mid, hi = hz[i], hz[i + 1], hz[i + 2]
        up = (bins - lo) / (mid - lo)
        down = (hi - bins) / (hi - mid)
        fb[i] = np.clip(np.minimum(up, down), 0.0, None)
    return fb


_FB = mel_filterbank()
_WINDOW = np.hanning(FRAME + 1)[:-1]  # periodic Hann window
_FREQS = np.fft.rfftfreq(NFFT, 1.0 / RATE)


def power_spectrogram(samples: np.ndarray, rate: int) -> np.ndarray:
    """The short-time power spectrum of ``samples`` after resampling to 16 kHz: 25 ms periodic
    Hann frames every 10 ms, 512-point FFT; shape ``(frames, 257)``. Raises :class:`InputError`
    for a signal shorter than one frame. Cost: no model calls."""
    x = resample(samples, rate).astype(np.float64)
    if x.size < FRAME:
        raise InputError(
            f"audio too short: {x.size} samples at {RATE} Hz, need at least {FRAME} (25 ms)"
        )
    n = 1 + (x.size - FRAME) // HOP
    idx = np.arange(FRAME)[None, :] + HOP * np.arange(n)[:, None]
    frames = x[idx] * _WINDOW
    return np.abs(np.fft.rfft(frames, NFFT, axis=1)) ** 2


def _deltas(c: np.ndarray, width: int = 2) -> np.ndarray:
    """Regression deltas over ``±width`` frames (edge frames repeated)."""
    pad = np.pad(c, ((width, width), (0, 0)), mode="edge")
    num = sum(
        k * (pad[width + k : width + k + len(c)] - pad[width - k : width - k + len(c)])
        for k in range(1, width + 1)
    )
    return num / (2.0 * sum(k * k for k in range(1, width + 1)))


def audio_features(samples: np.ndarray, rate: int) -> np.ndarray:
    """A fixed-length description of one utterance (float64, ``len(FEATURE_NAMES)`` = 128).

    The signal is resampled to 16 kHz (:func:`resample`) and cut into 25 ms Hann frames every
    10 ms (:func:`power_spectrogram`); frames more than 40 dB below the loudest are silence and
    dropped (synthesisers pad with digital silence of different lengths). On the others:

    - log-mel energies (40 HTK-mel triangles, 0-8 kHz) and 20 MFCC-like coefficients (their
      orthonormal DCT-II): mean and standard deviation over frames of the MFCCs and of their
      regression deltas (±2 frames), and the mean log-mel spectrum (the long-term envelope);
    - spectral statistics, mean and standard deviation over frames: centroid (Hz / 8000),
      flatness (geometric over arithmetic mean of the power spectrum: noise-like excitation
      is flat, a clean harmonic one is not), the share of energy above 4 kHz, and the 85 %
      roll-off frequency (Hz / 8000). Synthesiser families differ in this fine structure
      (formant synthesis vs a mixed-excitation vocoder), not only in the voice's envelope.

    These stand in for LAVA's learned latents ("Towards Reliable Audio Deepfake Attribution and
    Model Recognition: A Multi-Level Autoencoder-Based Framework", 2025). Raises
    :class:`InputError` for audio shorter than 25 ms, non-finite or silent.
    Cost: no model calls (about 2 ms of CPU per second of audio).
    """
    from scipy.fft import dct

    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(x)):
        raise InputError("audio samples contain NaN or infinity")
    spec = power_spectrogram(x, rate)
    energy = spec.sum(axis=1)
    if energy.max() <= 0.0:
        raise InputError("the audio is silent: no frame has any energy")
    keep = energy >= energy.max() * 10.0 ** (-SILENCE_DB / 10.0)
    spec, energy = spec[keep], energy[keep]
    eps = 1e-10
    logmel = np.log(spec @ _FB.T + eps)
    mfcc = dct(logmel, type=2, norm="ortho", axis=1)[:, :N_MFCC]
    d = _deltas(mfcc) if len(mfcc) > 1 else np.zeros_like(mfcc)
    p = spec + eps
    centroid = (p @ _FREQS) / p.sum(axis=1) / (RATE / 2)
    flatness = np.exp(np.log(p).mean(axis=1)) / p.mean(axis=1)
    hf = spec[:, _FREQS >= HF_HZ].sum(axis=1) / energy
    cum = np.cumsum(spec, axis=1) / energy[:, None]
    rolloff = _FREQS[np.argmax(cum >= 0.85, axis=1)] / (RATE / 2)
    stats = np.stack([centroid, flatness, hf, rolloff], axis=1)
    out = np.concatenate(
        [
            mfcc.mean(0),
            mfcc.std(0),
            d.mean(0),
            d.std(0),
            logmel.mean(0),
            np.stack([stats.mean(0), stats.std(0)], axis=1).reshape(-1),
        ]
    )
    return out


class WaveformClassifier:
    """A fitted feature classifier (e.g. ``StandardScaler + LogisticRegression`` on
    :func:`audio_features`) that takes raw waveforms at ``rate`` Hz, so that a
    :class:`~attribkit.tasks.provenance.ProvenanceTask` can mask time windows of an utterance and
    ask which ones made the classifier name its source.

    ``predict_proba(waves)`` / ``decision_function(waves)`` / ``predict(waves)``: one feature
    extraction and one classifier row per waveform (one forward pass each).
    """

    def __init__(self, classifier: object, rate: int = RATE) -> None:
        if not hasattr(classifier, "predict_proba") or not hasattr(classifier, "classes_"):
            raise InputError("the classifier must be fitted (classes_ and predict_proba)")
        self.classifier = classifier
        self.rate = int(rate)
        self.classes_ = classifier.classes_  # type: ignore[attr-defined]

    def features(self, waves: list[np.ndarray] | np.ndarray) -> np.ndarray:
        """:func:`audio_features` of each waveform, stacked (n, 128)."""
        return np.stack([audio_features(np.asarray(w), self.rate) for w in waves])

    def predict_proba(self, waves: list[np.ndarray] | np.ndarray) -> np.ndarray:
        return np.asarray(self.classifier.predict_proba(self.features(waves)))  # type: ignore[attr-defined]

    def decision_function(self, waves: list[np.ndarray] | np.ndarray) -> np.ndarray:
        return np.asarray(self.classifier.decision_function(self.features(waves)))  # type: ignore[attr-defined]

    def predict(self, waves: list[np.ndarray] | np.ndarray) -> np.ndarray:
        return np.asarray(self.classes_)[self.predict_proba(waves).argmax(axis=1)]
