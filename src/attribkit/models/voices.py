"""Real speech synthesisers as attribution sources: Debian's ``espeak-ng`` (formant synthesis;
voice variants such as ``en-us``, ``en+f3``, ``en+m3``) and ``flite`` (CMU Flite; voices ``slt``,
``rms``, ``awb``, ``kal``...), two synthesiser *families* with several *voices* (model instances)
each: the two levels of LAVA's hierarchy ("Towards Reliable Audio Deepfake
Attribution and Model Recognition: A Multi-Level Autoencoder-Based Framework", 2025).

Install them with ``apt-get install espeak-ng flite`` (``make test`` does it when run as root).
Sentences come from a small seeded template grammar in this file (no external text); WAVs and
their features are cached so that a repeated corpus costs no synthesiser run.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from attribkit.core.errors import AttribkitError, InputError
from attribkit.models.audio import FEATURE_NAMES, audio_features, read_wav

#: the synthesiser families and the program each one runs
FAMILIES: dict[str, str] = {"espeak": "espeak-ng", "flite": "flite"}
INSTALL_HINT = "install it with `apt-get install espeak-ng flite` (or run `make test` as root)"
#: bump when the features or the grammar change, so cached entries are not reused
CACHE_VERSION = "1"


class SynthesizerError(AttribkitError, RuntimeError):
    """A speech synthesiser is not installed, timed out or failed; the message says what to do."""


@dataclass(frozen=True)
class Voice:
    """One synthetic voice: ``family`` is ``"espeak"`` or ``"flite"``; ``name`` is an espeak-ng
    voice or variant (``en-us``, ``en+f3``) or a flite voice (``slt``, ``awb``; see ``flite -lv``)."""

    family: str
    name: str

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise InputError(
                f"unknown synthesiser family {self.family!r}; choose one of {sorted(FAMILIES)}"
            )
        if not isinstance(self.name, str) or not self.name.strip():
            raise InputError("give the voice a name, e.g. Voice('flite', 'slt')")

    @property
    def label(self) -> str:
        """``family/name``, the voice's class label."""
        return f"{self.family}/{self.name}"

    def __str__(self) -> str:
        return self.label


def _program(family: str) -> str:
    if family not in FAMILIES:
        raise InputError(f"unknown synthesiser family {family!r}; choose one of {sorted(FAMILIES)}")
    exe = shutil.which(FAMILIES[family])
    if exe is None:
        raise SynthesizerError(f"`{FAMILIES[family]}` is not installed: {INSTALL_HINT}")
    return exe


def have_synthesizers(*families: str) -> bool:
    """Whether the programs of ``families`` (default: all) are on the PATH. Cost: none."""
    return all(f in FAMILIES and shutil.which(FAMILIES[f]) for f in (families or tuple(FAMILIES)))


def _run(args: list[str], timeout: float, stdin: str | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            args, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise SynthesizerError(
            f"`{args[0]}` took longer than {timeout:g} s; try a shorter text"
        ) from e


@lru_cache(maxsize=1)
def _flite_voices() -> tuple[str, ...]:
    out = _run([_program("flite"), "-lv"], 30.0).stdout
    return tuple(out.split(":", 1)[-1].split())


@lru_cache(maxsize=1)
def _espeak_voices() -> tuple[str, ...]:
    exe = _program("espeak")
    names: list[str] = ["en"]
    for line in _run([exe, "--voices=en"], 30.0).stdout.splitlines()[1:]:
        cols = line.split()
        # mbrola voices (files mb/...) need the separate mbrola program and its databases
        if len(cols) >= 5 and not cols[4].startswith("mb/") and cols[1] not in names:
            names.append(cols[1])
    for line in _run([exe, "--voices=variant"], 30.0).stdout.splitlines()[1:]:
        cols = line.split()
        if cols and cols[-1].startswith("!v/"):
            names.append("en+" + cols[-1][3:])
    return tuple(names)


def available_voices(family: str | None = None) -> list[Voice]:
    """The installed voices: every flite voice (``flite -lv``) and espeak-ng's English voices
    (``en``, ``en-us``, ...; mbrola ones left out) plus ``en+<variant>`` for each espeak-ng
    variant. A family whose program is missing contributes nothing. Returns a list of
    :class:`Voice`. Cost: one or two synthesiser listings (cached)."""
    fams = [family] if family is not None else list(FAMILIES)
    out: list[Voice] = []
    for f in fams:
        if family is not None:
            _program(f)  # a named family must be installed: say how
        elif not shutil.which(FAMILIES[f]):
            continue
        names = _flite_voices() if f == "flite" else _espeak_voices()
        out += [Voice(f, n) for n in names]
    return out


def synthesize(
    voice: Voice, text: str, path: str | Path | None = None, *, timeout: float = 60.0
) -> tuple[np.ndarray, int]:
    """Speak ``text`` with ``voice``: runs ``espeak-ng -v <name> -w <wav> --stdin`` or
    ``flite -voice <name> -t <text> -o <wav>``, writing the WAV to ``path`` (kept) or to a
    temporary file (deleted).

    Returns ``(samples, rate)`` as :func:`~attribkit.models.audio.read_wav` decodes them
    (float32 mono at the synthesiser's own rate: 22,050 Hz for espeak-ng, 16 kHz for most flite
    voices, 8 kHz for flite ``kal``). Raises :class:`SynthesizerError` when the program is
    missing (saying how to install it), times out or fails, and :class:`InputError` for an
    empty text or an unknown voice (flite would silently fall back to its default voice, so its
    names are checked against ``flite -lv``). Cost: one synthesiser run (about 0.02-0.05 s for a
    short sentence); no model calls.
    """
    if not isinstance(text, str) or not text.strip():
        raise InputError("give a non-empty text to synthesise")
    exe = _program(voice.family)
    if voice.family == "flite" and voice.name not in _flite_voices():
        raise InputError(
            f"unknown flite voice {voice.name!r}; installed: {', '.join(_flite_voices())}"
        )
    with contextlib.ExitStack() as stack:
        if path is None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="attribkit-tts-"))
            out = Path(tmp) / "out.wav"
        else:
            out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        line = " ".join(text.split())
        if voice.family == "espeak":  # the text on stdin: one starting with "-" is no option
            proc = _run([exe, "-v", voice.name, "-w", str(out), "--stdin"], timeout, line)
        else:
            proc = _run([exe, "-voice", voice.name, "-t", line, "-o", str(out)], timeout)
        if proc.returncode != 0 or not out.is_file():
            msg = (proc.stderr or proc.stdout).strip() or f"exit status {proc.returncode}"
            if voice.family == "espeak" and "voice" in msg.lower():
                raise InputError(
                    f"espeak-ng has no voice {voice.name!r} ({msg}); see `espeak-ng --voices=en` "
                    "and `espeak-ng --voices=variant` (use en+<variant>)"
                )
            raise SynthesizerError(f"`{FAMILIES[voice.family]}` failed for {voice}: {msg}")
        return read_wav(out)


# --- seeded sentences ---------------------------------------------------------------------------

_VOCABULARY = {
    "det": "the a every one this that no some",
    "adj": "small quiet green heavy bright old young careful lazy sudden gentle narrow distant "
    "golden silver empty crowded patient curious hidden",
    "noun": "river teacher engine garden window harbour letter soldier market painter village "
    "machine morning doctor island kitchen station blanket farmer mountain tower question "
    "picture orange",
    "verb": "found followed carried watched painted opened built visited answered counted "
    "remembered pushed cleaned measured borrowed described",
    "iverb": "slept waited arrived wandered listened laughed returned vanished",
    "adv": "slowly quickly often never quietly early always rarely happily twice",
    "prep": "near behind under beside across through before after",
    "num": "two three four seven eleven twenty forty ninety",
}
_WORDS = {slot: words.split() for slot, words in _VOCABULARY.items()}
_TEMPLATES = [
    "det adj noun verb det noun .",
    "det noun adv verb det adj noun .",
    "det adj noun iverb prep det noun .",
    "num adj nouns iverb adv .",
    "was det adj noun prep det noun ?",
    "det noun verb num nouns , then iverb .",
    "adv , det noun verb det adj noun .",
]


def sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` short English sentences (5 to 8 words) from a fixed template grammar over a small word
    list, drawn with ``np.random.default_rng(seed)``; the first ``k`` of ``sentences(n, seed)``
    do not depend on ``n``. Cost: none."""
    if n < 0:
        raise InputError(f"n must be >= 0 (got {n})")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        words = []
        for slot in _TEMPLATES[rng.integers(len(_TEMPLATES))].split():
            base = slot.removesuffix("s") if slot == "nouns" else slot
            if base in _WORDS:
                word = _WORDS[base][rng.integers(len(_WORDS[base]))]
                words.append(word + "s" if slot == "nouns" else word)
            else:
                words.append(slot)
        s = " ".join(words).replace(" ,", ",").replace(" .", ".").replace(" ?", "?")
        out.append(s[0].upper() + s[1:])
    return out


# --- corpora with a cache -----------------------------------------------------------------------


def default_cache_dir() -> Path:
    """Where :func:`voice_corpus` caches WAVs and features when no ``cache_dir`` is given:
    ``$ATTRIBKIT_CACHE/voices`` or ``~/.cache/attribkit/voices``. Cost: none."""
    from attribkit.models.loading import cache_root

    return cache_root() / "voices"


def _atomic_save(path: Path, arr: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npy")
    os.close(fd)
    try:
        np.save(tmp, arr)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def utterance_features(
    voice: Voice, text: str, cache_dir: str | Path | None = None
) -> tuple[np.ndarray, bool]:
    """The :func:`~attribkit.models.audio.audio_features` vector of ``voice`` speaking
    ``text``, from the cache when there (``cache_dir/<family>/<name>/<hash>.wav`` and ``.npy``;
    the key hashes the voice, the text and :data:`CACHE_VERSION`). Returns ``(features,
    synthesised)``, the second True when the synthesiser had to run. Cost: at most one
    synthesiser run; no model calls."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = hashlib.sha1(f"{CACHE_VERSION}\0{voice.label}\0{text}".encode()).hexdigest()[:20]
    folder = root / voice.family / voice.name.replace("/", "_")
    folder.mkdir(parents=True, exist_ok=True)
    feat_path, wav_path = folder / f"{key}.npy", folder / f"{key}.wav"
    if feat_path.is_file():
        try:
            f = np.load(feat_path)
            if f.shape == (len(FEATURE_NAMES),):
                return f, False
        except (OSError, ValueError):
            pass  # a damaged entry: synthesise again
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp.wav")
    os.close(fd)
    try:
        samples, rate = synthesize(voice, text, tmp)
        os.replace(tmp, wav_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    f = audio_features(samples, rate)
    _atomic_save(feat_path, f)
    return f, True


def voice_corpus(
    voices: list[Voice],
    n_per_voice: int,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    *,
    workers: int = 1,
    stats: dict | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every voice speaking the same ``n_per_voice`` seeded sentences (:func:`sentences`), as
    features: the labelled corpus of a LAVA-style study ("Towards Reliable Audio Deepfake
    Attribution and Model Recognition: A Multi-Level Autoencoder-Based Framework", 2025).

    Returns ``(features, labels, families)``: an array ``(len(voices) * n_per_voice, 128)``
    (voice-major: rows ``i * n_per_voice + j`` are voice ``i`` on sentence ``j``) and two string
    arrays, each row's ``Voice.label`` and family. Because all voices say the same sentences,
    splitting by sentence index keeps the words of test utterances out of training. WAVs and
    features are cached under ``cache_dir`` (default :func:`default_cache_dir`), so a repeated
    call runs no synthesiser. ``workers`` > 1 runs that many synthesiser processes at once
    (threads; the result does not depend on it). ``stats``, when given, receives
    ``synthesised`` (runs made), ``cached`` and ``seconds``. Cost: up to ``len(voices) *
    n_per_voice`` synthesiser runs (about 0.05 s of CPU each with its features: espeak-ng
    0.01 s, flite 0.05 s, features 0.01-0.02 s for a 2-3 s sentence); no model calls.
    """
    if n_per_voice < 1:
        raise InputError(f"n_per_voice must be >= 1 (got {n_per_voice})")
    if not voices:
        raise InputError("give at least one Voice")
    for v in voices:
        _program(v.family)
    if workers < 1:
        raise InputError(f"workers must be >= 1 (got {workers})")
    texts = sentences(n_per_voice, seed)
    jobs = [(v, text) for v in voices for text in texts]
    t0 = time.perf_counter()
    if workers == 1:
        done = [utterance_features(v, text, cache_dir) for v, text in jobs]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            done = list(pool.map(lambda job: utterance_features(*job, cache_dir), jobs))
    feats = [f for f, _ in done]
    made = sum(new for _, new in done)
    if stats is not None:
        stats.update(
            synthesised=made,
            cached=len(feats) - made,
            seconds=time.perf_counter() - t0,
        )
    labels = np.array([v.label for v in voices for _ in texts])
    families = np.array([v.family for v in voices for _ in texts])
    return np.stack(feats), labels, families
