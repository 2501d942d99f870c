"""Time-series data with a known truth, and real series from the UCR archive.

**Synthetic sets with ground-truth masks** (TimeX: Queen, Hussain, Zitnik et al., 'Encoding
Time-Series Explanations through Self-Supervised Model Behavior Consistency', NeurIPS 2023). Each
generator follows the authors' published generators (``txai/synth_data`` of their TimeX
repository: ``freq_shapes.py``, ``seq_comb_better.py``, ``seq_comb_mv.py``, ``lowvardetect.py``),
rewritten with one seeded ``np.random.Generator`` so that a seed gives the same set everywhere:

- :func:`freq_shapes` (T = 50, 1 channel, 4 classes): upward or downward 3-step spikes repeated
  every 10 or 17 steps on Gaussian noise; the class is (shape, period); the truth is the spikes.
- :func:`seqcomb_uv` (T = 200, 1 channel, 4 classes): two 10–19-step subsequences, each a line
  plus a fast sine, injected into NARMA(2) background; class 0 has none, 1 = both decreasing,
  2 = both increasing, 3 = increasing then decreasing; the truth is the two subsequences.
- :func:`seqcomb_mv` (T = 200, 4 channels, 4 classes): the same with 15–29-step subsequences on
  two distinct random channels.
- :func:`low_var_detect` (T = 200, 2 channels, 4 classes): a 10–19-step low-variance stretch
  (N(±1.5, 0.1)) in noisy NARMA(2) (noise std 1); the channel (0 or 1) and the sign (−/+) make the
  class; every class has a truth.

NARMA(2) is computed as the authors' ``timesynth`` library computes it (:func:`narma2`). Classes
are balanced as in the authors' code (N // 4 each, the remainder to the last class) and then
shuffled with the same generator. The authors evaluate the SeqComb sets on the classes that have a
truth; every evaluator here excludes samples without one.

**UCR archive** (GunPoint, BasicMotions: no truth, for deletion curves only): read from the
``.ts`` files shipped inside the ``sktime`` wheel without installing sktime (its dependencies
would replace parts of this environment): ``pip download sktime --no-deps -d DIR`` and pass the
wheel (or set ``$ATTRIBKIT_SKTIME_WHEEL``, or put it under ``cache_root()/data``). No network here.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attribkit.core.errors import InputError

__all__ = [
    "SYNTHETIC_SETS",
    "SeriesSet",
    "find_sktime_wheel",
    "freq_shapes",
    "load_ucr",
    "low_var_detect",
    "narma2",
    "read_series",
    "read_ts",
    "seqcomb_mv",
    "seqcomb_uv",
    "synthetic_set",
    "synthetic_splits",
]


@dataclass
class SeriesSet:
    """A labelled set of equal-length series.

    ``X`` has shape (N, T, C) (float64), ``y`` (N,) integer class indices, ``masks`` (N, T, C)
    booleans (True = a step that carries the class signal; ``None`` for real data without a
    truth), ``classes`` the class names, ``name`` the set's name and ``info`` the generator's
    parameters.
    """

    X: np.ndarray
    y: np.ndarray
    masks: np.ndarray | None
    classes: list[str]
    name: str
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def subset(self, index: Any) -> SeriesSet:
        """The samples at ``index`` (an index array or a boolean mask)."""
        return SeriesSet(
            self.X[index],
            self.y[index],
            None if self.masks is None else self.masks[index],
            list(self.classes),
            self.name,
            dict(self.info),
        )


def _check_n(n: int) -> int:
    if int(n) != n or n < 1:
        raise InputError(f"the number of series must be a positive integer, got {n}")
    return int(n)


def _balanced_labels(rng: np.random.Generator, n: int, n_classes: int = 4) -> np.ndarray:
    """N // k samples of each class (the remainder to the last), shuffled (the authors' split)."""
    counts = [n // n_classes] * (n_classes - 1)
    counts.append(n - sum(counts))
    y = np.repeat(np.arange(n_classes), counts)
    return rng.permutation(y)


def narma2(rng: np.random.Generator, n: int, length: int, noise: float = 0.0) -> np.ndarray:
    """``n`` NARMA(2) series of ``length`` steps, shape (n, length), as ``timesynth`` computes
    them (its ``NARMA(order=2)`` used by the TimeX generators) plus Gaussian noise of std ``noise``.

    timesynth's recurrence is y[k] = 0.3 y[k-1] + 0.05 y[k-1] s_k + 1.5 u[k-2] u[k] + 0.1 with
    u ~ U(0, 0.5) (two extra initial draws) and zero initial values; its sum term s_k reads the
    slice ``y[k-2:2]``, which is empty or zero at every step, so the series is the driven AR(1)
    y[k] = 0.3 y[k-1] + 1.5 u[k-2] u[k] + 0.1 — computed here exactly so (mean about 0.28)."""
    u = rng.uniform(0.0, 0.5, size=(n, length + 2))
    y = np.zeros((n, length + 2))
    for k in range(2, length + 2):
        y[:, k] = 0.3 * y[:, k - 1] + 1.5 * u[:, k - 2] * u[:, k] + 0.1
    out = y[:, 2:]
    if noise:
        out = out + rng.normal(0.0, noise, size=out.shape)
    return out


def freq_shapes(n: int, *, seed: int = 0, length: int = 50, noise: float = 0.25) -> SeriesSet:
    """FreqShapes: ``n`` univariate series of ``length`` steps (paper: 50).

    Class k has a spike shape (0, 2: downward, values −1.75, −2, −1.75; 1, 3: upward, +1.75, +2,
    +1.75) repeated with a period (0, 1: every 10 steps; 2, 3: every 17), starting at a uniform
    step in [0, length − period); spikes cut by the borders are dropped. Gaussian noise of std
    ``noise`` (paper: 0.25) is added everywhere. Truth: the spikes' steps. No model calls."""
    n = _check_n(n)
    if length < 20:
        raise InputError(f"FreqShapes needs at least 20 steps (the 17-step period), got {length}")
    rng = np.random.default_rng(seed)
    y = _balanced_labels(rng, n)
    X = np.zeros((n, length, 1))
    masks = np.zeros((n, length, 1), dtype=bool)
    up = -0.25 * np.arange(-1, 2) ** 2 + 2.0
    for i, label in enumerate(y):
        shape, period = (label % 2, 10 if label < 2 else 17)
        start = int(rng.integers(0, length - period))
        for c in range(start, length, period):
            lo, hi = c - 1, c + 2
            if lo >= 0 and hi <= length:
                X[i, lo:hi, 0] = up if shape == 1 else -up
                masks[i, lo:hi, 0] = True
        X[i, :, 0] += rng.normal(0.0, noise, size=length)
    classes = ["down/10", "up/10", "down/17", "up/17"]
    info = {"seed": seed, "length": length, "noise": noise}
    return SeriesSet(X, y, masks, classes, "FreqShapes", info)


def _seqcomb(
    n: int,
    seed: int,
    length: int,
    channels: int,
    seq_len: tuple[int, int],
    poisson: float,
    noise: float,
    name: str,
) -> SeriesSet:
    """The SeqComb generators (univariate and multivariate differ only in their parameters)."""
    n = _check_n(n)
    if length < 4 * seq_len[1]:
        raise InputError(f"{name} needs at least {4 * seq_len[1]} steps, got {length}")
    rng = np.random.default_rng(seed)
    y = _balanced_labels(rng, n)
    X = np.stack([narma2(rng, n, length, noise) for _ in range(channels)], axis=-1)
    masks = np.zeros(X.shape, dtype=bool)
    for i, label in enumerate(y):
        if label == 0:  # the null class: no subsequence
            continue
        sensors = rng.choice(channels, size=2, replace=False) if channels > 1 else [0, 0]
        lo, hi = X[i].min(), X[i].max()
        rising = (-5.0 * abs(lo), 5.0 * abs(hi))
        falling = (rising[1], rising[0])
        ends = {1: (falling, falling), 2: (rising, rising), 3: (rising, falling)}[int(label)]
        first_end = 0
        for j, ch in enumerate(sensors):
            size = int(rng.integers(seq_len[0], seq_len[1]))
            if j == 0:
                start = int(rng.integers(0, length // 2))
                first_end = start + size
            else:  # the second subsequence starts after the first one ends
                start = int(rng.integers(first_end, length - size))
            amp = int(rng.poisson(poisson))
            t = np.arange(-(size // 2), size // 2 + size % 2)
            (y1, y2) = ends[j]
            slope = (y2 - y1) / (t[-1] + 1 - t[0])
            X[i, start : start + size, ch] = slope * t + np.sin(amp * t)
            masks[i, start : start + size, ch] = True
    return SeriesSet(
        X,
        y,
        masks,
        ["none", "decreasing+decreasing", "increasing+increasing", "increasing+decreasing"],
        name,
        {"seed": seed, "length": length, "channels": channels, "seq_len": list(seq_len)},
    )


def seqcomb_uv(n: int, *, seed: int = 0, length: int = 200, noise: float = 0.01) -> SeriesSet:
    """SeqComb-UV: ``n`` univariate series of ``length`` steps (paper: 200) of NARMA(2) plus
    Gaussian noise (std ``noise``, paper 0.01). Classes 1–3 get two subsequences of 10–19 steps
    (the first starting in [0, length/2), the second after the first ends), each
    ``slope · t + sin(a · t)`` for t centred on 0, a ~ Poisson(10), the line running between
    −5|min x| and 5|max x| (decreasing, increasing, or one of each by class); class 0 has none.
    Truth: the subsequences' steps (empty for class 0). No model calls."""
    return _seqcomb(n, seed, length, 1, (10, 20), 10.0, noise, "SeqComb-UV")


def seqcomb_mv(
    n: int, *, seed: int = 0, length: int = 200, channels: int = 4, noise: float = 0.01
) -> SeriesSet:
    """SeqComb-MV: as :func:`seqcomb_uv` on ``channels`` channels (paper: 4) with 15–29-step
    subsequences on two distinct random channels and a ~ Poisson(5). No model calls."""
    if channels < 2:
        raise InputError("SeqComb-MV needs at least 2 channels; use seqcomb_uv for one")
    return _seqcomb(n, seed, length, channels, (15, 30), 5.0, noise, "SeqComb-MV")


def low_var_detect(
    n: int, *, seed: int = 0, length: int = 200, channels: int = 2, noise: float = 1.0
) -> SeriesSet:
    """LowVarDetect: ``n`` series of ``length`` steps (paper: 200) on ``channels`` channels
    (paper: 2) of NARMA(2) plus Gaussian noise of std ``noise`` (paper: 1). Every series gets one
    stretch of 10–19 steps starting in [20, length − 40) whose values are N(loc, 0.1): on
    channel 0 for classes 0 and 1, channel 1 for classes 2 and 3; loc = −1.5 for classes 0 and 2,
    +1.5 for 1 and 3. Truth: the stretch. No model calls."""
    n = _check_n(n)
    if channels < 2 or length < 80:
        raise InputError("LowVarDetect needs at least 2 channels and 80 steps")
    rng = np.random.default_rng(seed)
    y = _balanced_labels(rng, n)
    X = np.stack([narma2(rng, n, length, noise) for _ in range(channels)], axis=-1)
    masks = np.zeros(X.shape, dtype=bool)
    for i, label in enumerate(y):
        ch = 0 if label in (0, 1) else 1
        size = int(rng.integers(10, 20))
        start = int(rng.integers(20, length - 40))
        loc = -1.5 if label in (0, 2) else 1.5
        X[i, start : start + size, ch] = rng.normal(loc, 0.1, size=size)
        masks[i, start : start + size, ch] = True
    classes = ["ch0/low", "ch0/high", "ch1/low", "ch1/high"]
    info = {"seed": seed, "length": length, "channels": channels, "noise": noise}
    return SeriesSet(X, y, masks, classes, "LowVarDetect", info)


#: the four TimeX synthetic sets by name
SYNTHETIC_SETS = {
    "freqshapes": freq_shapes,
    "seqcomb-uv": seqcomb_uv,
    "seqcomb-mv": seqcomb_mv,
    "lowvardetect": low_var_detect,
}


def synthetic_set(name: str, n: int, *, seed: int = 0, **kw: Any) -> SeriesSet:
    """The synthetic set ``name`` (freqshapes, seqcomb-uv, seqcomb-mv, lowvardetect; case and
    underscores ignored) with ``n`` series. No model calls."""
    key = name.lower().replace("_", "-")
    if key not in SYNTHETIC_SETS:
        raise InputError(f"unknown synthetic set {name!r}; choose one of {sorted(SYNTHETIC_SETS)}")
    return SYNTHETIC_SETS[key](n, seed=seed, **kw)  # type: ignore[operator]


def synthetic_splits(
    name: str, n_train: int = 2000, n_test: int = 200, *, seed: int = 0, **kw: Any
) -> tuple[SeriesSet, SeriesSet]:
    """Independent train and test sets (seeds ``seed`` and ``seed + 1``) of a synthetic set."""
    return (
        synthetic_set(name, n_train, seed=seed, **kw),
        synthetic_set(name, n_test, seed=seed + 1, **kw),
    )


# --- the UCR archive, read from the sktime wheel --------------------------------------------------
def read_ts(source: str | os.PathLike[str] | bytes) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read a ``.ts`` file of the UCR/UEA archive (sktime's format): returns X of shape
    (N, T, C), y (N,) class indices and the class names (in the ``@classLabel`` order).

    Supports equal-length series without time stamps (GunPoint, BasicMotions...); missing values
    (``?``) are refused. ``source`` is a path or the file's bytes."""
    if isinstance(source, bytes):
        text = source.decode("utf-8")
    else:
        text = Path(source).read_text(encoding="utf-8")
    labels: list[str] | None = None
    rows: list[list[list[float]]] = []
    targets: list[str] = []
    in_data = False
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            key, _, value = line.partition(" ")
            key = key.lower()
            if key == "@timestamps" and value.strip().lower() == "true":
                raise InputError("series with time stamps are not supported by this reader")
            if key == "@classlabel":
                parts = value.split()
                if not parts or parts[0].lower() != "true":
                    raise InputError("the .ts file has no class labels")
                labels = parts[1:]
            if key == "@data":
                in_data = True
            continue
        fields = line.split(":")
        if len(fields) < 2:
            raise InputError(f".ts line {number}: expected 'values:...:label'")
        if "?" in line:
            raise InputError(f".ts line {number} has missing values ('?'); they are not supported")
        try:
            rows.append([[float(v) for v in f.split(",")] for f in fields[:-1]])
        except ValueError as e:
            raise InputError(f".ts line {number}: {e}") from e
        targets.append(fields[-1].strip())
    if labels is None or not rows:
        raise InputError("not a labelled .ts file (no @classLabel header or no @data rows)")
    lengths = {len(ch) for r in rows for ch in r}
    dims = {len(r) for r in rows}
    if len(lengths) != 1 or len(dims) != 1:
        raise InputError("the .ts file has unequal lengths or dimensions; not supported")
    X = np.asarray(rows, dtype=float).transpose(0, 2, 1)  # (N, C, T) -> (N, T, C)
    unknown = sorted(set(targets) - set(labels))
    if unknown:
        raise InputError(f"labels {unknown} are not declared in @classLabel {labels}")
    y = np.array([labels.index(t) for t in targets])
    return X, y, labels


def find_sktime_wheel(path: str | os.PathLike[str] | None = None) -> Path | None:
    """The sktime wheel to read UCR sets from: ``path`` (a wheel, or a folder holding one), else
    ``$ATTRIBKIT_SKTIME_WHEEL``, else a ``sktime-*.whl`` under ``cache_root()/data``; None when
    there is none. No network."""
    from attribkit.models.loading import cache_root

    candidates: list[Path] = []
    for p in (path, os.environ.get("ATTRIBKIT_SKTIME_WHEEL"), cache_root() / "data"):
        if p:
            candidates.append(Path(p).expanduser())
    for c in candidates:
        if c.is_file() and c.name.endswith(".whl"):
            return c
        if c.is_dir():
            found = sorted(c.glob("sktime-*.whl"))
            if found:
                return found[-1]
    return None


def load_ucr(
    name: str, split: str = "train", wheel: str | os.PathLike[str] | None = None
) -> SeriesSet:
    """The UCR/UEA set ``name`` (e.g. ``"GunPoint"``, ``"BasicMotions"``) and ``split``
    (``"train"`` or ``"test"``) read from the sktime wheel (:func:`find_sktime_wheel`) or, if
    sktime is installed, from its data folder. InputError saying how to get the wheel otherwise.
    No truth masks (``masks`` is None)."""
    if split.lower() not in ("train", "test"):
        raise InputError(f"split must be 'train' or 'test', got {split!r}")
    member = f"sktime/datasets/data/{name}/{name}_{split.upper()}.ts"
    found = find_sktime_wheel(wheel)
    data: bytes | None = None
    if found is not None:
        with zipfile.ZipFile(found) as z:
            try:
                data = z.read(member)
            except KeyError as e:
                raise InputError(f"{found.name} has no {member}; is {name!r} spelled right?") from e
    else:
        import importlib.util

        spec = importlib.util.find_spec("sktime")
        if spec is not None and spec.origin:
            file = Path(spec.origin).parent / "datasets" / "data" / name / Path(member).name
            if file.is_file():
                data = file.read_bytes()
    if data is None:
        raise InputError(
            f"the UCR set {name!r} ships in the sktime wheel, which was not found: run "
            "`pip download sktime --no-deps -d DIR` and pass the wheel (or set "
            "ATTRIBKIT_SKTIME_WHEEL to it)"
        )
    X, y, labels = read_ts(io.BytesIO(data).getvalue())
    return SeriesSet(X, y, None, labels, name, {"split": split.lower(), "source": "UCR/UEA"})


def read_series(path: str | os.PathLike[str], index: int = 0) -> np.ndarray:
    """One series from a file, as a (T, C) array: ``.npy`` ((T,) or (T, C)), ``.csv`` / ``.txt``
    (one row per step, one column per channel; a non-numeric first line is a header) or ``.ts``
    (series number ``index``). InputError for other formats, empty or non-finite data."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"no such file: {p}")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        x = np.load(p, allow_pickle=False)
    elif suffix in (".csv", ".txt"):
        lines = [ln for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
        sep = "," if suffix == ".csv" else None
        rows = []
        for i, line in enumerate(lines):
            try:
                rows.append([float(v) for v in line.split(sep)])
            except ValueError as e:
                if i == 0:
                    continue  # a header
                raise InputError(f"{p.name} line {i + 1} is not numeric: {e}") from e
        if len({len(r) for r in rows}) > 1:
            raise InputError(f"{p.name}: rows have different numbers of columns")
        x = np.asarray(rows, dtype=float)
    elif suffix == ".ts":
        X, _, _ = read_ts(p)
        if not 0 <= index < len(X):
            raise InputError(f"{p.name} has {len(X)} series; index {index} is out of range")
        x = X[index]
    else:
        raise InputError(f"unknown series format {suffix!r}: use .npy, .csv, .txt or .ts")
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.size == 0:
        raise InputError(f"{p.name}: expected one series (T,) or (T, C), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise InputError(f"{p.name} has missing or infinite values; fill them first")
    return x
