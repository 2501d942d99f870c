"""Interventions on hidden channels: a causal graph of a class (Ahmad et al., 'Causal Analysis for
Robust Interpretability of Neural Networks', 2023).

The paper has no public code; what follows is **our reconstruction** of its steps (design notes
``vision_detection_causal.md`` §5), for an image classifier and named convolutional layers
l_1 < ... < l_L (ordered as the forward pass runs them):

1. **Probe set.** The images of class c (``labels == c`` when labels are given), kept only where
   the model classifies them as c (``correct_only``). p_c(x) is the softmax probability of c.
2. **Average causal effect** of channel j at any listed layer:
   ACE_j = mean_{x∈P} [p_c(x) − p_c(x | do(a_j := v_j))], with v_j = 0 (``ablation="zero"``) or
   the channel's mean activation over the probe images and positions (``"mean"``, a scalar per
   channel). It is the total effect of the channel, along every path to the output.
3. **Kept channels.** At the last listed layer the top ``k`` channels by ACE are kept.
4. **Path effect** at an earlier layer l: do(a_{l,j} := v_j), and let the change reach the output
   only through the kept channels of every later listed layer: each later layer is recomputed,
   its kept channels take the recomputed values and all its other channels keep their clean
   values (a splice at the layer's output). PE_j = mean_{x∈P} [p_c(x) − p_c(x | path do)]. The
   top ``k`` channels by PE are kept at l, and so on down the layers; an edge j → k' (k' kept at
   the next listed layer) weighs mean |Δa_{next,k'}| (over probe images and positions) under
   do(a_{l,j} := v_j).
5. **Causal CAM** of an image at a layer: Σ_{k kept} w_k · a_k(x), w = ACE at the last layer and
   PE at earlier ones, ReLU, upsampled bilinearly to the image (Grad-CAM with causal weights).

Every intervention is a full forward pass of one probe image with forward hooks on the listed
layers (a module that runs several times in a pass is edited at its last call), batched over
(channel, image) rows, and counted on the model's meter (``model.cost``): a graph costs
B + N · (Σ_l C_l + Σ_{l < L} C_l) forward passes, B for the clean pass over the given images (of
the class, when labels are given) and N per channel for the N probe images.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from attribkit.core.attribution import Attribution
from attribkit.core.cost import Cost, measure
from attribkit.core.errors import InputError, ScorerError
from attribkit.core.units import ImageUnits
from attribkit.models import layers as layer_hooks
from attribkit.models.image import ImageClassifier

__all__ = [
    "CausalGraph",
    "ChannelReport",
    "causal_graph",
    "channel_report",
    "channel_scores",
]

Ablation = Literal["zero", "mean"]
ABLATIONS = ("zero", "mean")
SCORE_METHODS = ("causal", "ace", "taylor", "activation")
Edit = Callable[[torch.Tensor], torch.Tensor | None]


# --- inputs ---------------------------------------------------------------------------------------


def _as_model(model: Any) -> ImageClassifier:
    if isinstance(model, ImageClassifier):
        return model
    if isinstance(model, torch.nn.Module):
        return ImageClassifier(
            model.eval(), input_size=None, normalize=None, batch_size=64,
            name=type(model).__name__,
        )  # fmt: skip
    raise InputError(
        f"causal graphs need an ImageClassifier or a torch.nn.Module, got {type(model).__name__}"
    )


def _display(images: Any, what: str = "images") -> np.ndarray:
    """(B, H, W, 3) float32 display images from (B, H, W, 3), (B, H, W, 1) or greyscale
    (B, H, W) arrays (three equal channels)."""
    a = np.asarray(images.detach().cpu() if isinstance(images, torch.Tensor) else images)
    if a.ndim == 4 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 3:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 4 or a.shape[-1] != 3 or a.shape[0] == 0:
        raise InputError(
            f"{what} must be a non-empty batch of display images (B, H, W, 3) or greyscale "
            f"(B, H, W) in [0, 1], got shape {np.shape(images)}"
        )
    return a.astype(np.float32)


def _one_image(image: Any) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim not in (2, 3):
        raise InputError(
            f"image must be one (H, W, 3) or greyscale (H, W) image, got shape {a.shape}"
        )
    return _display(a[None], "image")[0]


# --- hooks ----------------------------------------------------------------------------------------


@dataclass
class _Layer:
    name: str
    module: torch.nn.Module
    calls: int  # calls per forward pass; edits and reads act on the last one
    channels: int


def _tensor_of(out: Any, name: str) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise InputError(f"layer {name!r} returns {type(out).__name__}, not a tensor")


@contextmanager
def _edits(layers: Sequence[_Layer], fns: dict[str, Edit]) -> Iterator[None]:
    """Within the block, the last call of each layer in ``fns`` in a forward pass returns
    ``fn(output)`` instead of its output (``None``: unchanged)."""
    handles = []
    for layer in layers:
        fn = fns.get(layer.name)
        if fn is None:
            continue
        seen = {"n": 0}

        def hook(
            _m: Any, _i: Any, out: Any, fn: Edit = fn, L: _Layer = layer, s: dict = seen
        ) -> Any:
            s["n"] += 1
            if s["n"] % L.calls:
                return None
            new = fn(_tensor_of(out, L.name))
            if new is None:
                return None
            return new if isinstance(out, torch.Tensor) else type(out)([new, *out[1:]])

        handles.append(layer.module.register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _probs(model: ImageClassifier, x: torch.Tensor) -> torch.Tensor:
    """(B, n_classes) float64 probabilities of one counted batch (under the caller's hooks)."""
    with model.timed(), torch.inference_mode():
        p = torch.softmax(model.module_logits(x).double(), dim=-1).cpu()
    model.cost.forward_passes += int(x.shape[0])
    model.cost.batches += 1
    if not torch.isfinite(p).all():
        raise ScorerError("the model returned NaN or infinite logits under the intervention")
    return p


def _read(
    model: ImageClassifier, x: torch.Tensor, names: Sequence[str]
) -> tuple[list[_Layer], dict[str, torch.Tensor], torch.Tensor]:
    """One clean pass over ``x`` (counted): the layers in forward order (calls per pass,
    channels), their activations (N, C, h, w) at their last call, and the probabilities."""
    modules = {n: model.get_layer(n) for n in names}
    store: dict[str, Any] = {n: {"calls": 0, "out": None, "tick": -1} for n in names}
    clock = itertools.count()

    def make(n: str) -> Callable[..., None]:
        def hook(_m: Any, _i: Any, out: Any) -> None:
            store[n]["calls"] += 1
            store[n]["tick"] = next(clock)
            store[n]["out"] = _tensor_of(out, n).detach().clone()

        return hook

    acts: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    probs, calls = [], {}
    handles = [modules[n].register_forward_hook(make(n)) for n in names]
    try:
        for s in range(0, len(x), model.batch_size):
            for n in names:
                store[n].update(calls=0, out=None)
            probs.append(_probs(model, x[s : s + model.batch_size]))
            for n in names:
                if store[n]["calls"] == 0:
                    raise InputError(
                        f"layer {n!r} never ran during the forward pass; pick a layer the model "
                        "uses (see model.layer_names())"
                    )
                calls.setdefault(n, store[n]["calls"])
                acts[n].append(store[n]["out"])
    finally:
        for h in handles:
            h.remove()
    out = {n: torch.cat(a) for n, a in acts.items()}
    for n, a in out.items():
        if a.ndim != 4:
            convs = [
                m for m, mod in model.module.named_modules() if isinstance(mod, torch.nn.Conv2d)
            ]
            raise InputError(
                f"layer {n!r} outputs shape {tuple(a.shape)}: it has no channels to intervene on "
                "(interventions need a layer with (batch, channels, height, width) output); "
                f"convolutional layers of {model.name}: {', '.join(convs[:20]) or 'none'}"
            )
    order = sorted(names, key=lambda n: store[n]["tick"])
    layers = [_Layer(n, modules[n], calls[n], int(out[n].shape[1])) for n in order]
    return layers, out, torch.cat(probs)


# --- the graph ------------------------------------------------------------------------------------


class _Probe:
    """The probe images of one class, their clean activations and probabilities, and the
    batched interventions on them."""

    def __init__(
        self,
        model: ImageClassifier,
        x: torch.Tensor,
        layers: list[_Layer],
        clean: dict[str, torch.Tensor],
        p: np.ndarray,
        label: int,
        fill: dict[str, torch.Tensor],
    ) -> None:
        self.model, self.x, self.layers, self.clean = model, x, layers, clean
        self.p, self.label, self.fill = p, label, fill
        self.by_name = {layer.name: layer for layer in layers}

    def effects(
        self,
        name: str,
        subset: np.ndarray,
        through: dict[str, list[int]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Mean drop of p(label) over the probe images ``subset`` when each channel of layer
        ``name`` in turn takes its fill value: the total effect (``through=None``), or the path
        effect when the later layers in ``through`` pass on only their kept channels. With
        ``through``, also the (C, |kept at the next layer|) edge weights mean |Δa|. Costs
        C · len(subset) forward passes."""
        layer = self.by_name[name]
        C, N = layer.channels, len(subset)
        fill = self.fill[name].view(1, C, 1, 1)
        later = [L for L in self.layers if through and L.name in through]
        nxt = later[0] if later else None
        sums = np.zeros(C)
        edges = np.zeros((C, len(through[nxt.name]))) if nxt is not None and through else None
        for start in range(0, C * N, self.model.batch_size):
            r = np.arange(start, min(start + self.model.batch_size, C * N))
            j, n = r // N, subset[r % N]
            m = torch.zeros(len(r), C, 1, 1, dtype=fill.dtype)
            m[np.arange(len(r)), j] = 1.0
            m = m.to(self.x.device)
            fns: dict[str, Edit] = {
                name: lambda t, m=m: t * (1 - m) + fill.to(t) * m,
            }
            record: dict[str, torch.Tensor] = {}
            for L in later:
                assert through is not None
                keep = torch.zeros(L.channels, dtype=torch.bool)
                keep[through[L.name]] = True
                clean = self.clean[L.name][n]

                def splice(
                    t: torch.Tensor, keep: torch.Tensor = keep, clean: torch.Tensor = clean,
                    first: bool = L is nxt, kept: list[int] = through[L.name],
                    record: dict[str, torch.Tensor] = record,
                ) -> torch.Tensor:  # fmt: skip
                    c = clean.to(t)
                    if first:
                        record["delta"] = (t[:, kept] - c[:, kept]).abs().mean(dim=(2, 3))
                    return torch.where(keep.to(t.device).view(1, -1, 1, 1), t, c)

                fns[L.name] = splice
            with _edits(self.layers, fns):
                p = _probs(self.model, self.x[n])[:, self.label].numpy()
            np.add.at(sums, j, self.p[n] - p)
            if edges is not None:
                np.add.at(edges, j, record["delta"].double().cpu().numpy())
        return sums / N, (edges / N if edges is not None else None)


@dataclass
class CausalGraph:
    """A class's causal graph of channels (see the module docstring for the reconstruction).

    ``layers``: the listed layers in forward order; ``ace[layer]``: each channel's average causal
    effect (total effect; drop of p(label)); ``path_effect[layer]``: each channel's effect only
    through the kept channels of the later layers (every layer but the last); ``kept[layer]``:
    the top ``k`` channels (by ACE at the last layer, by path effect before it), best first;
    ``edges``: (layer, channel, next layer, channel, mean |Δa|) for kept → kept; ``fill``: the
    value each channel takes when ablated. ``cost``: the forward passes it took."""

    model: ImageClassifier
    label: int
    layers: list[str]
    ablation: str
    k: int
    ace: dict[str, np.ndarray]
    path_effect: dict[str, np.ndarray]
    kept: dict[str, list[int]]
    edges: list[tuple[str, int, str, int, float]]
    fill: dict[str, np.ndarray]
    n_probe: int
    p_probe: float
    cost: Cost
    _probe: _Probe = field(repr=False)

    @property
    def label_name(self) -> str:
        return self.model.label(self.label)

    def weights(self, layer: str | None = None) -> np.ndarray:
        """The causal weight of each channel at ``layer`` (default: the last): its ACE at the
        last layer, its path effect at earlier ones. No model call."""
        name = self._layer(layer)
        return self.ace[name] if name == self.layers[-1] else self.path_effect[name]

    def _layer(self, layer: str | None) -> str:
        if layer is None:
            return self.layers[-1]
        if layer in ("middle", "final") and layer not in self.layers:
            layer = self.model.resolve_layer(layer) or layer
        if layer not in self.layers:
            raise InputError(f"layer {layer!r} is not in this graph; its layers: {self.layers}")
        return layer

    @property
    def nodes(self) -> list[dict[str, Any]]:
        """One record per channel: layer, channel, ace, path_effect (None at the last layer),
        kept. No model call."""
        out = []
        for name in self.layers:
            kept = set(self.kept[name])
            pe = self.path_effect.get(name)
            for c, a in enumerate(self.ace[name]):
                out.append(
                    {
                        "layer": name, "channel": c, "ace": float(a),
                        "path_effect": None if pe is None else float(pe[c]), "kept": c in kept,
                    }
                )  # fmt: skip
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary (nodes, kept channels, edges, cost). No model call."""
        return {
            "label": self.label,
            "label_name": self.label_name,
            "model": self.model.name,
            "layers": self.layers,
            "ablation": self.ablation,
            "k": self.k,
            "n_probe": self.n_probe,
            "p_probe": self.p_probe,
            "kept": {n: [int(c) for c in v] for n, v in self.kept.items()},
            "nodes": self.nodes,
            "edges": [
                {"from": [a, int(j)], "to": [b, int(kk)], "weight": float(w)}
                for a, j, b, kk, w in self.edges
            ],
            "cost": self.cost.to_dict(),
        }

    def __repr__(self) -> str:
        lines = [
            f"CausalGraph(class {self.label_name!r}, {self.n_probe} probe images, "
            f"ablation={self.ablation!r}, k={self.k}, cost={self.cost})"
        ]
        for name in self.layers:
            w = self.weights(name)
            what = "ACE" if name == self.layers[-1] else "path"
            kept = ", ".join(f"{c} ({w[c]:+.3f})" for c in self.kept[name])
            lines.append(f"  {name}: {what} {kept}")
        return "\n".join(lines)

    def attribution(
        self,
        image: Any,
        *,
        layer: str | None = None,
        relu: bool = True,
        units: ImageUnits | None = None,
    ) -> Attribution:
        """Causal CAM of ``image`` at ``layer`` (default: the last): Σ_{k kept} w_k · a_k(x) with
        the graph's causal weights (:meth:`weights`), ReLU unless ``relu=False``, upsampled
        bilinearly to the image. Returns an image Attribution (``heatmap``; unit scores = the map
        summed over ``units``, default patches of min(H, W) // 14 px, pixels for small images);
        ``extras`` hold the layer, channels, weights, ``layer_map`` and p(label). Costs one
        forward pass, counted on the model's meter."""
        name = self._layer(layer)
        img = _one_image(image)
        L = self._probe.by_name[name]
        read: dict[str, torch.Tensor] = {}

        def keep(t: torch.Tensor) -> None:
            read["a"] = t.detach()

        with measure(self.model) as cost:
            x = self.model.input_batch(img[None])
            with _edits([L], {name: keep}):
                p = _probs(self.model, x)[0]
        channels = list(self.kept[name])
        w = torch.as_tensor(self.weights(name)[channels], dtype=torch.float64)
        a = read["a"][0, channels].to("cpu", torch.float64)
        cam = torch.einsum("k,khw->hw", w, a)
        if relu:
            cam = cam.clamp(min=0.0)
        H, W = img.shape[:2]
        hm = cam if tuple(cam.shape) == (H, W) else F.interpolate(
            cam[None, None], size=(H, W), mode="bilinear", align_corners=False
        )[0, 0]  # fmt: skip
        hm_np = hm.numpy()
        u = units if units is not None else ImageUnits.grid(img, max(1, min(H, W) // 14))
        scores = np.bincount(u.segments.ravel(), weights=hm_np.ravel(), minlength=len(u))
        predicted = int(p.argmax()) == self.label
        return Attribution(
            units=list(u.units),
            scores=scores,
            method="causal_cam",
            target=self.model.target_info(self.label, "prob", predicted),
            params={"layer": name, "k": self.k, "ablation": self.ablation, "relu": relu},
            cost=cost,
            input=dict(u.to_dict(), image=img),
            extras={
                "layer_name": name,
                "channels": [int(c) for c in channels],
                "weights": w.tolist(),
                "map_shape": list(cam.shape),
                "layer_map": cam.numpy().astype(np.float32),
                "value": float(p[self.label]),
                "n_probe": self.n_probe,
            },
            task="image",
            image_map=hm_np,
        )


def _class_index(m: ImageClassifier, label: Any) -> int:
    """The class index of ``label`` (an index or one of the model's labels); its range is
    checked against the model's output once it has run."""
    if isinstance(label, str):
        if m.labels is None or label not in m.labels:
            known = f"one of {m.labels}" if m.labels is not None else "an integer class index"
            raise InputError(f"unknown class {label!r}: use {known}")
        return m.labels.index(label)
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
        raise InputError(f"label must be a class index (int) or a label name, got {label!r}")
    return int(label)


def _label_indices(m: ImageClassifier, labels: Any, n: int) -> np.ndarray:
    """Per-image class indices from ``labels`` (indices or label names; -1 for unknown names)."""
    y = np.asarray(labels)
    if y.shape != (n,):
        raise InputError(f"labels must have one entry per image ({n}), got shape {y.shape}")
    if y.dtype.kind in "US":
        names = m.labels or []
        return np.array([names.index(v) if v in names else -1 for v in y.tolist()])
    return y.astype(int)


def _top(weights: np.ndarray, k: int) -> list[int]:
    return [int(c) for c in np.argsort(-weights, kind="stable")[: min(k, len(weights))]]


def causal_graph(
    model: Any,
    images: Any,
    label: int | str,
    layers: Sequence[str] = ("middle", "final"),
    *,
    ablation: Ablation = "zero",
    k: int = 4,
    labels: Any = None,
    correct_only: bool = True,
) -> CausalGraph:
    """The causal graph of class ``label`` at ``layers`` (names in ``model.layer_names()``,
    ``"middle"``/``"final"``; any order — they are sorted as the forward pass runs them) from the
    probe ``images`` (display images (B, H, W, 3) or greyscale (B, H, W) in [0, 1]; with
    ``labels``, only those of the class; with ``correct_only``, only those the model classifies
    as the class). ``ablation``: a channel takes 0 (``"zero"``) or its probe mean (``"mean"``).
    ``model``: an :class:`ImageClassifier` or a torch module taking (B, 3, H, W).

    Returns a :class:`CausalGraph` (ACE of every channel, path effects at every layer but the
    last, the top ``k`` kept per layer, edges; see the module docstring, our reconstruction of
    Ahmad et al., 2023). Costs B + N · (Σ_l C_l + Σ_{l < last} C_l) forward passes (B given
    images, only those of the class when ``labels`` are given; N probe images; C_l channels),
    counted on the model's meter and in ``graph.cost``."""
    m = _as_model(model)
    if ablation not in ABLATIONS:
        raise InputError(f"unknown ablation {ablation!r}: use 'zero' or 'mean'")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k must be a positive number of channels to keep, got {k!r}")
    if isinstance(layers, str):
        layers = (layers,)
    names: list[str] = []
    for layer in layers:
        name = m.resolve_layer(layer)
        if name is None:
            raise InputError(
                "interventions act on hidden layers, not on the input; name a layer with channels "
                "(e.g. 'final', 'middle' or a module name from model.layer_names())"
            )
        if name not in names:
            names.append(name)
    if not names:
        raise InputError("give at least one layer")
    imgs = _display(images)
    c0 = _class_index(m, label)
    if labels is not None:
        y = _label_indices(m, labels, len(imgs))
        if not (y == c0).any():
            present = sorted({str(v) for v in np.asarray(labels).tolist()})
            raise InputError(
                f"the probe set has no image of class {m.label(c0)!r} (labels present: "
                f"{', '.join(present)}); give probe images of the class you explain"
            )
        imgs = imgs[y == c0]  # the other classes' images cost nothing
    with measure(m) as cost:
        x = m.input_batch(imgs)
        found, clean, probs = _read(m, x, names)
        p_all = probs.numpy()
        c = m.target_class(c0, p_all[0])  # checks the range
        mask = np.ones(len(imgs), dtype=bool)
        if correct_only:
            pred = p_all.argmax(1)
            if not (mask & (pred == c)).any():
                counts = np.bincount(pred[mask], minlength=p_all.shape[1])
                seen = ", ".join(f"{m.label(i)}: {n}" for i, n in enumerate(counts) if n)
                raise InputError(
                    f"no probe image is classified as {m.label(c)!r} (predicted classes of the "
                    f"{int(mask.sum())} probe images: {seen}); give images of the class, or "
                    "correct_only=False"
                )
            mask &= pred == c
        idx = np.flatnonzero(mask)
        fill = {
            n: (
                clean[n][idx].mean(dim=(0, 2, 3))
                if ablation == "mean"
                else torch.zeros(clean[n].shape[1], dtype=clean[n].dtype)
            )
            for n in names
        }
        probe = _Probe(
            m, x[idx], found, {n: a[idx] for n, a in clean.items()}, p_all[idx, c], c, fill
        )
        order = [L.name for L in found]
        every = np.arange(len(idx))
        ace: dict[str, np.ndarray] = {}
        path: dict[str, np.ndarray] = {}
        kept: dict[str, list[int]] = {}
        edges: list[tuple[str, int, str, int, float]] = []
        for i in range(len(order) - 1, -1, -1):
            name = order[i]
            ace[name] = probe.effects(name, every)[0]
            if i == len(order) - 1:
                kept[name] = _top(ace[name], k)
                continue
            through = {n: kept[n] for n in order[i + 1 :]}
            path[name], e = probe.effects(name, every, through)
            kept[name] = _top(path[name], k)
            assert e is not None
            nxt = order[i + 1]
            for j in kept[name]:
                for col, kk in enumerate(kept[nxt]):
                    edges.append((name, j, nxt, kk, float(e[j, col])))
    return CausalGraph(
        model=m, label=c, layers=order, ablation=ablation, k=int(k), ace=ace,
        path_effect=path, kept=kept, edges=edges,
        fill={n: v.double().cpu().numpy() for n, v in fill.items()}, n_probe=len(idx),
        p_probe=float(p_all[idx, c].mean()), cost=cost, _probe=probe,
    )  # fmt: skip


# --- channel scores and reports -------------------------------------------------------------------


def channel_scores(
    graph: CausalGraph,
    method: str = "causal",
    layer: str | None = None,
    subset: Any = None,
) -> np.ndarray:
    """One score per channel of ``layer`` (default: the graph's last) on the graph's probe
    images (``subset``: indices into them), higher = more important for the class:

    - ``"causal"``: the graph's causal weight (ACE at the last layer, path effect through the
      kept later channels before it), recomputed on the subset: C · |S| forward passes;
    - ``"ace"``: the total effect (ACE) at any layer: C · |S| forward passes;
    - ``"taylor"``: gradient × activation, the first-order estimate of the ACE,
      mean_x Σ_pos ∂p/∂a · (a − v): |S| forward + |S| backward passes;
    - ``"activation"``: mean |a| over images and positions: no model call (the clean pass).

    With ``subset=None`` the graph's stored ACE / path effects are returned (no model call)."""
    if method not in SCORE_METHODS:
        raise InputError(f"unknown method {method!r}: use one of {', '.join(SCORE_METHODS)}")
    name = graph._layer(layer)
    probe = graph._probe
    s = np.arange(graph.n_probe) if subset is None else np.asarray(subset, dtype=int)
    if s.ndim != 1 or len(s) == 0 or s.min() < 0 or s.max() >= graph.n_probe:
        raise InputError(
            f"subset must be a non-empty list of probe indices in [0, {graph.n_probe})"
        )
    if method == "activation":
        return probe.clean[name][s].abs().mean(dim=(0, 2, 3)).double().cpu().numpy()
    if method in ("causal", "ace") and subset is None:
        return (graph.weights(name) if method == "causal" else graph.ace[name]).copy()
    if method == "taylor":
        return _taylor(graph, name, s)
    if method == "ace" or name == graph.layers[-1]:
        return probe.effects(name, s)[0]
    later = graph.layers[graph.layers.index(name) + 1 :]
    return probe.effects(name, s, {n: graph.kept[n] for n in later})[0]


def _taylor(graph: CausalGraph, name: str, s: np.ndarray) -> np.ndarray:
    probe, model = graph._probe, graph.model
    L = probe.by_name[name]
    fill = probe.fill[name].view(1, -1, 1, 1)
    total = np.zeros(L.channels)
    for start in range(0, len(s), model.batch_size):
        n = s[start : start + model.batch_size]
        with model.timed(), layer_hooks.capture(L.module, cut_from=model.module) as store:
            logits = model.module_logits(probe.x[n])
            value = torch.softmax(logits.double(), dim=-1)[:, graph.label].sum()
            (g,) = torch.autograd.grad(value, store["out"])
        a = store["out"].detach()
        total += (g * (a - fill.to(a))).sum(dim=(2, 3)).double().sum(0).cpu().numpy()
        model.cost.forward_passes += len(n)
        model.cost.backward_passes += len(n)
        model.cost.batches += 1
    return total / len(s)


@dataclass
class ChannelReport:
    """Necessity, sufficiency and stability of a channel set at one layer on evaluation images.

    ``p_*`` are mean p(label) and ``acc_*`` the share of images classified as the label: clean,
    with the channels ablated (``*_ablated``), with only them kept (``*_kept_only``: every other
    channel of the layer ablated). ``stability``: mean pairwise top-k Jaccard of the graph's
    causal ranking between disjoint probe subsets (NaN for a given channel set or too few
    probe images). ``cost``: the forward passes it took."""

    layer: str
    channels: list[int]
    n_eval: int
    p_clean: float
    p_ablated: float
    p_kept_only: float
    acc_clean: float
    acc_ablated: float
    acc_kept_only: float
    stability: float
    subset_channels: list[list[int]]
    cost: Cost

    @property
    def p_drop(self) -> float:
        """Necessity: mean drop of p(label) when the channels are ablated."""
        return self.p_clean - self.p_ablated

    @property
    def acc_drop(self) -> float:
        """Necessity: drop of the class accuracy when the channels are ablated."""
        return self.acc_clean - self.acc_ablated

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "cost"}
        d.update(p_drop=self.p_drop, acc_drop=self.acc_drop, cost=self.cost.to_dict())
        return d


def channel_report(
    graph: CausalGraph,
    eval_images: Any,
    labels: Any = None,
    *,
    layer: str | None = None,
    channels: Sequence[int] | None = None,
    n_subsets: int = 2,
    seed: int | None = 0,
) -> ChannelReport:
    """Necessity (drop of p(label) and of class accuracy when ``channels`` — default: the
    graph's kept channels at ``layer``, the last by default — take their fill value),
    sufficiency (p(label) and accuracy when only they are kept) on ``eval_images`` (with
    ``labels``: only those of the graph's class; keep them apart from the probe set), and
    stability (mean pairwise top-k Jaccard of the causal ranking recomputed on ``n_subsets``
    disjoint random subsets of the probe images; only for the graph's own channels).

    Costs 3 · E forward passes for E evaluation images, plus C · N (C · N more before the last
    layer, where the path effects are recomputed) for the stability of a layer of C channels
    over N probe images; counted on the model's meter and in ``report.cost``."""
    name = graph._layer(layer)
    m, probe = graph.model, graph._probe
    L = probe.by_name[name]
    given = channels is not None
    chans = [int(c) for c in (channels if given else graph.kept[name])]  # type: ignore[union-attr]
    if not chans or len(set(chans)) != len(chans) or min(chans) < 0 or max(chans) >= L.channels:
        raise InputError(
            f"channels must be distinct indices in [0, {L.channels}) of layer {name!r}, got {chans}"
        )
    imgs = _display(eval_images, "eval_images")
    if labels is not None:
        imgs = imgs[_label_indices(m, labels, len(imgs)) == graph.label]
        if len(imgs) == 0:
            raise InputError(
                f"the evaluation set has no image of class {graph.label_name!r}; give images of "
                "the graph's class"
            )
    sel = torch.zeros(L.channels, 1, 1)
    sel[chans] = 1.0
    fill = probe.fill[name].view(1, -1, 1, 1)
    variants: dict[str, Edit | None] = {
        "clean": None,
        "ablated": lambda t: t * (1 - sel.to(t)) + fill.to(t) * sel.to(t),
        "kept_only": lambda t: t * sel.to(t) + fill.to(t) * (1 - sel.to(t)),
    }
    out: dict[str, np.ndarray] = {}
    with measure(m) as cost:
        x = m.input_batch(imgs)
        for key, fn in variants.items():
            parts = []
            for s in range(0, len(x), m.batch_size):
                with _edits([L], {name: fn} if fn is not None else {}):
                    parts.append(_probs(m, x[s : s + m.batch_size]))
            out[key] = torch.cat(parts).numpy()
        subsets: list[list[int]] = []
        stability = float("nan")
        if not given and n_subsets >= 2 and graph.n_probe >= n_subsets:
            perm = np.random.default_rng(seed).permutation(graph.n_probe)
            for part in np.array_split(perm, n_subsets):
                w = channel_scores(graph, "causal", name, np.sort(part))
                subsets.append(_top(w, len(chans)))
            pairs = list(itertools.combinations(subsets, 2))
            stability = float(
                np.mean([len(set(a) & set(b)) / len(set(a) | set(b)) for a, b in pairs])
            )
    c = graph.label
    p = {key: float(v[:, c].mean()) for key, v in out.items()}
    acc = {key: float((v.argmax(1) == c).mean()) for key, v in out.items()}
    return ChannelReport(
        layer=name, channels=chans, n_eval=len(imgs), p_clean=p["clean"],
        p_ablated=p["ablated"], p_kept_only=p["kept_only"], acc_clean=acc["clean"],
        acc_ablated=acc["ablated"], acc_kept_only=acc["kept_only"], stability=stability,
        subset_channels=subsets, cost=cost,
    )  # fmt: skip
