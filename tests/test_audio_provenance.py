"""Audio source attribution (LAVA, "Towards Reliable Audio Deepfake Attribution and Model
Recognition: A Multi-Level Autoencoder-Based Framework", 2025) on two real synthesiser families,
espeak-ng and flite: five known voices told apart, a held-out flite voice routed to its family,
its model-level AUROC reported; the WAV reader's errors and the features' known answers."""

from __future__ import annotations

import json
import math
import os
import wave
from pathlib import Path

import numpy as np
import pytest

from attribkit.core.errors import InputError
from attribkit.models.audio import FEATURE_NAMES, RATE, audio_features, read_wav, resample
from attribkit.models.voices import (
    SynthesizerError,
    Voice,
    available_voices,
    have_synthesizers,
    sentences,
    synthesize,
    voice_corpus,
)

SKIP_REASON = (
    "espeak-ng/flite not installed: run make test as root or apt-get install espeak-ng flite"
)
#: 40 sentences a voice: 20 train, 8 validation (thresholds), 12 test
N_PER_VOICE = 40
HELD_OUT = Voice("flite", "awb")


@pytest.fixture
def voices_installed() -> None:
    if not have_synthesizers():
        pytest.skip(SKIP_REASON)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("voices")


@pytest.fixture(scope="module")
def study(cache) -> dict:
    if not have_synthesizers():
        pytest.skip(SKIP_REASON)
    from attribkit.evaluation.audio_provenance import audio_hierarchy_study

    workers = int(os.environ.get("ATTRIBKIT_TEST_THREADS", "2"))  # as conftest's torch threads
    result = audio_hierarchy_study(
        N_PER_VOICE, seed=0, held_out=[HELD_OUT], cache_dir=cache, workers=workers
    )
    print("\naudio hierarchy study:", json.dumps(result, indent=1))
    return result


def _write_wav(path: Path, data: np.ndarray, rate: int, width: int = 2) -> None:
    """``data``: (frames, channels) floats in [-1, 1]."""
    scale = float(1 << (8 * width - 1)) - 1
    ints = np.round(data * scale).astype("<i2" if width == 2 else "<i4")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(data.shape[1])
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(ints.tobytes())


# --- the protocol on real synthesisers ----------------------------------------------------------


def test_five_known_voices_are_told_apart(study) -> None:
    closed = study["closed_set"]
    assert study["known"] == [
        "espeak/en-us",
        "espeak/en+f3",
        "espeak/en+m3",
        "flite/slt",
        "flite/rms",
    ]
    assert closed["n_test"] == 5 * study["split"]["test"] == 60
    assert closed["macro_f1"] >= 0.85, closed  # the bar
    assert study["hierarchy"]["family_accuracy"] >= 0.9, study["hierarchy"]


def test_held_out_voice_is_routed_to_its_family_and_its_auroc_reported(study) -> None:
    held = study["held_out"][HELD_OUT.label]
    assert held["family"] == "flite" and held["n_test"] == 12
    assert held["routing_rate"] >= 0.9, held  # level 1's most probable family is flite
    for key in ("accepted_family_rate", "model_unknown_rate"):
        assert 0.0 <= held[key] <= 1.0
    auroc = held["model_auroc"]
    assert isinstance(auroc, float) and math.isfinite(auroc) and 0.0 <= auroc <= 1.0
    assert study["seconds"]["total"] > 0 and study["n_features"] == len(FEATURE_NAMES)


def test_corpus_is_cached_deterministic_and_seeded(study, cache, tmp_path) -> None:
    voices = [Voice("espeak", "en-us"), HELD_OUT]
    stats: dict = {}
    X, labels, fams = voice_corpus(voices, 5, seed=0, cache_dir=cache, stats=stats)
    assert stats["synthesised"] == 0 and stats["cached"] == 10  # the study made them
    assert X.shape == (10, len(FEATURE_NAMES)) and np.all(np.isfinite(X))
    assert list(labels[:5]) == ["espeak/en-us"] * 5 and list(fams[5:]) == ["flite"] * 5
    # synthesised afresh, two processes at once: the same features (the synthesisers are
    # deterministic and the order does not depend on the workers)
    fresh, _, _ = voice_corpus(voices, 5, seed=0, cache_dir=tmp_path, workers=2, stats=stats)
    assert stats["synthesised"] == 10
    np.testing.assert_allclose(fresh, X, rtol=1e-9, atol=1e-12)
    assert sentences(5, seed=0) == sentences(N_PER_VOICE, seed=0)[:5]
    assert sentences(5, seed=1) != sentences(5, seed=0)


def test_synthesize_writes_a_wav_and_checks_voices(voices_installed, tmp_path) -> None:
    path = tmp_path / "slt.wav"
    x, rate = synthesize(Voice("flite", "slt"), "Seven green rivers.", path)
    assert path.is_file() and rate == 16000 and x.dtype == np.float32 and len(x) > rate // 4
    assert read_wav(path)[1] == 16000
    assert synthesize(Voice("espeak", "en+f3"), "Seven green rivers.")[1] == 22050
    labels = {v.label for v in available_voices()}
    assert {"flite/slt", "flite/awb", "espeak/en-us", "espeak/en+f3"} <= labels
    with pytest.raises(InputError, match="unknown flite voice 'nobody'"):
        synthesize(Voice("flite", "nobody"), "hello")  # flite would fall back silently
    with pytest.raises(InputError, match="espeak-ng has no voice"):
        synthesize(Voice("espeak", "xx-nobody"), "hello")
    with pytest.raises(InputError, match="non-empty text"):
        synthesize(Voice("flite", "slt"), "  ")
    with pytest.raises(InputError, match="unknown synthesiser family"):
        synthesize(Voice("festival", "kal"), "hello")


def test_a_missing_synthesiser_says_how_to_install_it(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no program on the PATH
    assert not have_synthesizers()
    with pytest.raises(SynthesizerError, match=r"`flite` is not installed.*apt-get install"):
        synthesize(Voice("flite", "slt"), "hello")
    with pytest.raises(SynthesizerError, match=r"`espeak-ng` is not installed"):
        voice_corpus([Voice("espeak", "en-us")], 2, cache_dir=tmp_path)
    assert available_voices() == []


# --- reading WAV files and the features (no synthesiser needed) ---------------------------------


def test_read_wav_decodes_pcm_and_averages_channels(tmp_path) -> None:
    t = np.arange(8000) / 8000
    left, right = 0.5 * np.sin(2 * np.pi * 440 * t), 0.25 * np.ones_like(t)
    _write_wav(tmp_path / "st.wav", np.stack([left, right], axis=1), 8000)
    x, rate = read_wav(tmp_path / "st.wav")
    assert rate == 8000 and x.dtype == np.float32 and x.shape == (8000,)
    np.testing.assert_allclose(x, (left + right) / 2, atol=1e-4)
    _write_wav(tmp_path / "m32.wav", left[:, None], 8000, width=4)
    np.testing.assert_allclose(read_wav(tmp_path / "m32.wav")[0], left, atol=1e-6)
    y = resample(x, 8000)  # to 16 kHz
    assert y.shape == (16000,) and abs(np.abs(y).max() - np.abs(x).max()) < 0.05


def test_undecodable_audio_gives_a_clear_error(tmp_path) -> None:
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    text = tmp_path / "notes.txt"
    text.write_text("this is not audio\n")
    for bad in (garbage, text):
        with pytest.raises(InputError, match=rf"{bad.name}: cannot decode.*uncompressed PCM WAV"):
            read_wav(bad)
    # a WAVE file in a compressed format (IEEE float, format tag 3) is named as unsupported
    ok = tmp_path / "ok.wav"
    _write_wav(ok, np.zeros((100, 1)), 16000)
    raw = bytearray(ok.read_bytes())
    raw[20:22] = (3).to_bytes(2, "little")
    (tmp_path / "float.wav").write_bytes(bytes(raw))
    with pytest.raises(InputError, match=r"float\.wav: cannot decode.*supported"):
        read_wav(tmp_path / "float.wav")
    # truncated: the header promises 100 frames, 10 are there
    (tmp_path / "cut.wav").write_bytes(ok.read_bytes()[:64])
    with pytest.raises(InputError, match=r"cut\.wav: truncated WAV file"):
        read_wav(tmp_path / "cut.wav")
    _write_wav(tmp_path / "empty.wav", np.zeros((0, 1)), 16000)
    with pytest.raises(InputError, match=r"empty\.wav: the WAV file holds no samples"):
        read_wav(tmp_path / "empty.wav")
    (tmp_path / "zero.wav").write_bytes(b"")
    with pytest.raises(InputError, match=r"zero\.wav: cannot decode"):
        read_wav(tmp_path / "zero.wav")
    with pytest.raises(InputError, match="no such audio file"):
        read_wav(tmp_path / "absent.wav")
    with pytest.raises(InputError, match="too short"):
        audio_features(np.zeros(100, np.float32), 16000)
    with pytest.raises(InputError, match="silent"):
        audio_features(np.zeros(16000, np.float32), 16000)


def test_spectral_statistics_have_their_known_values() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(RATE) / RATE
    names = {n: i for i, n in enumerate(FEATURE_NAMES)}
    tone = audio_features(0.5 * np.sin(2 * np.pi * 1000 * t), RATE)
    noise = audio_features(0.1 * rng.standard_normal(RATE), RATE)
    assert tone.shape == (len(FEATURE_NAMES),) == (128,)
    assert abs(tone[names["centroid_mean"]] * 8000 - 1000) < 60
    assert tone[names["hf_ratio_mean"]] < 1e-3 and tone[names["flatness_mean"]] < 0.01
    # white noise: half the energy above 4 kHz, centroid at 4 kHz, flatness of exponential
    # power values exp(-Euler's gamma) = 0.56 (a little lower through the Hann window)
    assert abs(noise[names["hf_ratio_mean"]] - 0.5) < 0.02
    assert abs(noise[names["centroid_mean"]] - 0.5) < 0.02
    assert 0.45 < noise[names["flatness_mean"]] < 0.6
    # the same tone recorded at 22,050 Hz gives nearly the same features after resampling
    t2 = np.arange(22050) / 22050
    tone2 = audio_features(0.5 * np.sin(2 * np.pi * 1000 * t2), 22050)
    assert abs(tone2[names["centroid_mean"]] - tone[names["centroid_mean"]]) < 0.01


def test_time_windows_explain_which_voice_spoke(cache) -> None:
    """A spliced utterance (flite/slt, then espeak en-us) explained by LOO over 0.25 s windows:
    the windows of the decided voice's half support it, the other half's do not."""
    if not have_synthesizers():
        pytest.skip(SKIP_REASON)
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import attribkit as ak
    from attribkit.models.audio import WaveformClassifier

    slt, en = Voice("flite", "slt"), Voice("espeak", "en-us")
    x, y, _ = voice_corpus([slt, en], 20, seed=0, cache_dir=cache)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, y)
    model = WaveformClassifier(clf, RATE)
    text = sentences(25, seed=0)[-1]  # a sentence not in training
    a, ra = synthesize(slt, text)
    b, rb = synthesize(en, text)
    a, b = resample(a, ra), resample(b, rb)
    wave_ = np.concatenate([a, np.zeros(RATE // 10, np.float32), b])
    task = ak.ProvenanceTask(wave_, model)
    assert task.units.kind == "array" and len(task.units) == math.ceil(len(wave_) / (RATE / 4))
    att = ak.attribute(task, "loo")
    assert att.task == "provenance" and att.cost.forward_passes == len(task.units) + 1
    half = len(a) // (RATE // 4)  # windows wholly inside the first voice
    first, second = att.scores[:half].mean(), att.scores[half + 1 :].mean()
    decided = task.prediction
    assert decided in ("flite/slt", "espeak/en-us")
    assert (first > second) == (decided == "flite/slt")
    silent = np.zeros(RATE, np.float32)
    with pytest.raises(InputError, match="waveform"):
        ak.ProvenanceTask(np.zeros((2, 2)), model)
    assert ak.ProvenanceTask(np.r_[a, silent], model).scorer()(
        np.zeros((1, math.ceil((len(a) + RATE) / (RATE / 4))), bool)
    )[0] == pytest.approx(-np.log(2))
