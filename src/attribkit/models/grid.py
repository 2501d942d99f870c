"""Grid classifiers built from an image classifier by model surgery, for the DiFull, DiPart and
GridPG settings of Rao, Böhle & Schiele ('Towards Better Understanding Attribution Methods',
CVPR 2022). The evaluation on them is :mod:`attribkit.evaluation.grid`.

A grid model answers, for each cell k (row-major) of an n×n grid image, "which class is in cell
k?", from a backbone (→ spatial features) and a head (pooled features → class logits):

- **DiFull** — the backbone runs on every cell separately (its stages are wrapped so each cell is
  split off, processed alone and the outputs stitched back into a grid) and head k pools only
  cell k's features, so nothing outside cell k can influence head k.
- **DiPart** — the backbone runs on the whole grid and head k pools only cell k's region of the
  feature map.
- **GridPG** — the plain model on the whole grid, one head pooled over everything.

For DiFull and DiPart the model outputs (B, n²·C) logits: head k's logits for cell k, so the
target for class c in cell k is ``k * C + c`` (:meth:`GridModel.target`). EfficientNet-style
classifiers (``extract_features``, ``_fc``) are split automatically into stem, blocks and head
conv stages; others with a ``features`` backbone and a linear head too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attribkit.core.errors import InputError
from attribkit.models.image import ImageClassifier

__all__ = ["SETTINGS", "GridClassifier", "GridModel"]

SETTINGS = ("difull", "dipart", "gridpg")


def _split_cells(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, C, n·h, n·w) → (B·n², C, h, w), cells in row-major order."""
    b, c, hh, ww = x.shape
    if hh % n or ww % n:
        raise InputError(
            f"a {hh}x{ww} map cannot be split into {n}x{n} equal cells; use a grid whose sides "
            f"are multiples of {n} (and cells whose size the backbone keeps divisible)"
        )
    h, w = hh // n, ww // n
    return x.reshape(b, c, n, h, n, w).permute(0, 2, 4, 1, 3, 5).reshape(b * n * n, c, h, w)


def _stitch(y: torch.Tensor, n: int) -> torch.Tensor:
    """(B·n², C, h, w) → (B, C, n·h, n·w), the inverse of :func:`_split_cells`."""
    bn, c, h, w = y.shape
    b = bn // (n * n)
    return y.reshape(b, n, n, c, h, w).permute(0, 3, 1, 4, 2, 5).reshape(b, c, n * h, n * w)


class _PerCell(nn.Module):
    """Runs ``stage`` on every cell separately and stitches the outputs back into a grid."""

    def __init__(self, stage: nn.Module, n: int) -> None:
        super().__init__()
        self.stage, self.n = stage, n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _stitch(self.stage(_split_cells(x, self.n)), self.n)


class _LiteStem(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.conv, self.bn, self.act = net._conv_stem, net._bn0, net._swish

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class _LiteHead(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.conv, self.bn, self.act = net._conv_head, net._bn1, net._swish

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


def _n_outputs(head: nn.Module) -> int | None:
    last = None
    for m in head.modules():
        if isinstance(m, nn.Linear):
            last = m.out_features
    return last


class GridModel(nn.Module):
    """An n×n grid classifier built from a backbone (→ spatial features) and a head (pooled
    features → class logits), in one of the settings ``"difull"``, ``"dipart"``, ``"gridpg"``.

    Args:
        backbone: an ``nn.Module`` ``(B, 3, H, W) → (B, C, h, w)``, or a sequence of stages
            applied in order. In DiFull every stage runs on each cell separately and its output
            is the stitched grid, so the stages (``"backbone.<i>"``) are the layers methods can
            be applied at; give the backbone as stages to get more than the last one.
        head: pooled features (B, C) → (B, n_classes) logits (e.g. ``nn.Linear``).
        n: cells per side.
        setting: ``"difull"``, ``"dipart"`` or ``"gridpg"`` (see the module docstring).
        n_classes: the head's number of classes (default: the last ``nn.Linear``'s outputs).

    ``forward(x)`` returns (B, n²·C) logits (head k's for cell k) in DiFull/DiPart and (B, C)
    in GridPG; head k pools its cell's region with ``adaptive_avg_pool2d`` (on a feature map
    whose side is not a multiple of n, e.g. Lite0's 7×7 over 2×2 cells, neighbouring regions
    share the middle row/column). Build one from a classifier with :meth:`from_classifier`
    and wrap it for ``attribute_image`` with :meth:`as_classifier`.
    """

    def __init__(
        self,
        backbone: nn.Module | Sequence[nn.Module],
        head: nn.Module,
        n: int = 2,
        setting: str = "difull",
        n_classes: int | None = None,
    ) -> None:
        super().__init__()
        if setting not in SETTINGS:
            raise InputError(f"unknown setting {setting!r}: use 'difull', 'dipart' or 'gridpg'")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InputError(f"n (cells per side) must be a positive integer, got {n!r}")
        stages = (
            list(backbone) if isinstance(backbone, (list, tuple, nn.Sequential)) else [backbone]
        )
        if not stages or not all(isinstance(s, nn.Module) for s in stages):
            raise InputError("the backbone must be an nn.Module or a non-empty list of them")
        self.n, self.setting = n, setting
        wrap = (lambda s: _PerCell(s, n)) if setting == "difull" else (lambda s: s)
        self.backbone = nn.Sequential(*[wrap(s) for s in stages])
        self.head = head
        self.n_classes = n_classes or _n_outputs(head)
        if self.n_classes is None:
            raise InputError("cannot tell the head's number of classes; pass n_classes=")
        self._stages = stages
        #: grid-model layer names for "middle"/"final" (set by from_classifier).
        self.default_layers: dict[str, str] = {"final": f"backbone.{len(stages) - 1}"}
        if len(stages) > 2:
            self.default_layers["middle"] = f"backbone.{(len(stages) - 1) // 2}"
        self._normalize: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._labels: list[str] | None = None
        self._name = "grid"

    @property
    def stage_names(self) -> list[str]:
        """The layer names whose outputs are grid-shaped in every setting (``backbone.<i>``)."""
        return [f"backbone.{i}" for i in range(len(self.backbone))]

    @property
    def n_heads(self) -> int:
        """n² (DiFull/DiPart) or 1 (GridPG)."""
        return 1 if self.setting == "gridpg" else self.n * self.n

    def target(self, head: int, cls: int) -> int:
        """The output index explaining class ``cls`` in cell ``head``: ``head·C + cls``
        (DiFull/DiPart) or ``cls`` (GridPG, one head for all cells)."""
        if not 0 <= head < self.n * self.n:
            raise InputError(f"head must be a cell index in 0..{self.n * self.n - 1}, got {head}")
        if not 0 <= cls < self.n_classes:
            raise InputError(f"class {cls} is out of range (0..{self.n_classes - 1})")
        return cls if self.setting == "gridpg" else head * self.n_classes + cls

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's (B, C, h, w) feature grid (stitched per-cell features in DiFull)."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        if feats.ndim != 4:
            raise InputError(
                f"the backbone must return (B, C, h, w) features, got shape {tuple(feats.shape)}"
            )
        if self.setting == "gridpg":
            return self.head(feats.mean(dim=(2, 3)))
        b, c = feats.shape[:2]
        pooled = F.adaptive_avg_pool2d(feats, self.n).permute(0, 2, 3, 1).reshape(-1, c)
        return self.head(pooled).reshape(b, -1)

    @classmethod
    def from_classifier(
        cls,
        model: ImageClassifier,
        n: int = 2,
        setting: str = "difull",
        *,
        backbone: nn.Module | Sequence[nn.Module] | None = None,
        head: nn.Module | None = None,
        check: bool = True,
        probe_size: int | None = None,
    ) -> GridModel:
        """Split ``model`` (an :class:`ImageClassifier` whose module is
        ``head(GAP(backbone(x)))``) into a grid model.

        Recognised without arguments: EfficientNet-style modules (``extract_features``, ``_fc``:
        stages = stem, each block, head conv; head = dropout + ``_fc``; Lite0's middle layer
        ``_blocks.5`` is stage ``backbone.6``, its final ``_bn1`` the last stage) and modules with
        a ``features`` backbone (an ``nn.Sequential`` becomes one stage per child) and a
        ``head``/``classifier``/``fc`` linear head. Otherwise pass ``backbone=`` and ``head=``.

        With ``check`` the split is verified on a random ``probe_size`` image (default: the
        model's input size, else 32 px): 2 forward passes; InputError when
        ``head(GAP(backbone(x)))`` differs from the model's logits.
        """
        if not isinstance(model, ImageClassifier):
            raise InputError(
                f"from_classifier takes an ImageClassifier, got {type(model).__name__}; for a bare "
                "module use GridModel(backbone, head, n, setting)"
            )
        net = model.module
        if (backbone is None) != (head is None):
            raise InputError("give both backbone= and head=, or neither")
        if backbone is None:
            if hasattr(net, "extract_features") and hasattr(net, "_fc"):
                backbone = [_LiteStem(net), *net._blocks, _LiteHead(net)]
                head = nn.Sequential(net._dropout, net._fc) if hasattr(net, "_dropout") else net._fc
            elif isinstance(getattr(net, "features", None), nn.Module):
                backbone = net.features
                for attr in ("head", "classifier", "fc"):
                    if isinstance(getattr(net, attr, None), nn.Module):
                        head = getattr(net, attr)
                        break
            if backbone is None or head is None:
                raise InputError(
                    f"cannot split {model.name} into a backbone and a head automatically; pass "
                    "backbone= (module or list of stages, -> (B, C, h, w)) and head= (pooled "
                    "(B, C) -> logits)"
                )
        grid = cls(backbone, head, n=n, setting=setting)
        grid._normalize, grid._labels, grid._name = model.normalize, model.labels, model.name
        grid.default_layers.update(grid._map_layers(model))
        if check:
            grid._check_split(model, probe_size or model.input_size or 32)
        return grid

    def _map_layers(self, model: ImageClassifier) -> dict[str, str]:
        """The grid names of ``model``'s middle/final layers: the stage that is (or contains)
        the layer in DiFull; the same module's grid name otherwise."""
        names = {id(m): name for name, m in self.named_modules() if name}
        out = {}
        for which in ("middle", "final"):
            try:
                layer = model.resolve_layer(which)
            except InputError:
                continue
            module = model.get_layer(layer) if layer else None
            if module is None:
                continue
            for i, stage in enumerate(self._stages):
                if stage is module or any(m is module for m in stage.modules()):
                    if self.setting == "difull" or stage is module:
                        out[which] = f"backbone.{i}"
                    else:
                        out[which] = names.get(id(module), f"backbone.{i}")
                    break
        return out

    @torch.no_grad()
    def _check_split(self, model: ImageClassifier, size: int) -> None:
        g = torch.Generator().manual_seed(0)
        img = torch.rand(1, size, size, 3, generator=g)
        x = model._prepare(model.to_tensor(img))
        want = model._logits(x)
        feats = x
        for stage in self._stages:
            feats = stage(feats)
        got = self.head(feats.mean(dim=(2, 3)))
        if got.shape != want.shape or not torch.allclose(
            got, want, atol=1e-3 * (1 + want.abs().max().item())
        ):
            raise InputError(
                f"head(mean over positions of backbone(x)) does not reproduce {model.name}'s "
                "logits; the backbone/head split is wrong — pass backbone= and head= explicitly"
            )

    def as_classifier(
        self,
        normalize: Any = "same",
        labels: Sequence[str] | str | None = "same",
        batch_size: int = 16,
        name: str | None = None,
    ) -> GridClassifier:
        """This grid model as an :class:`ImageClassifier` (any input size, no resizing) so
        ``attribute_image(clf, grid_image, target=grid.target(head, cls), method=...)`` works.
        ``normalize``/``labels`` default to the source classifier's (labels become
        ``"cell k: label"`` per head). No model call."""
        norm = self._normalize if normalize == "same" else normalize
        base = self._labels if labels == "same" else labels
        if base is not None and self.setting != "gridpg":
            base = [f"cell {k}: {lab}" for k in range(self.n * self.n) for lab in base]
        return GridClassifier(
            self,
            normalize=norm,
            labels=base,
            batch_size=batch_size,
            name=name or f"{self._name}-{self.setting}-{self.n}x{self.n}",
        )


class GridClassifier(ImageClassifier):
    """An :class:`ImageClassifier` over a :class:`GridModel` (``.grid``); in DiFull it accepts
    only the stage outputs (``"backbone.<i>"``, ``"middle"``, ``"final"``) as layers, because
    inside a stage the activations are per cell, not a grid."""

    def __init__(self, grid: GridModel, **kw: Any) -> None:
        super().__init__(grid, input_size=None, **kw)
        self.grid = grid
        self.default_layers = dict(grid.default_layers)

    def resolve_layer(self, layer: str | None) -> str | None:
        name = super().resolve_layer(layer)
        if name is not None and self.grid.setting == "difull" and name not in self.grid.stage_names:
            raise InputError(
                f"in the DiFull setting only the backbone's stage outputs are grid-shaped; use "
                f"'input', 'middle', 'final' or one of {', '.join(self.grid.stage_names)} "
                f"(not {name!r})"
            )
        return name
