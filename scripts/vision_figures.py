"""Figures of image attribution for the docs, on the bundled EfficientNet-Lite0:

- ``docs/img/vision-overlays.png``: one photo per row (coffee, chelsea, rocket), one method per
  column (Grad-CAM, integrated gradients smoothed as in Rao et al., occlusion, centred RISE, LiMA),
  each heat map drawn over the photo;
- ``docs/img/aggatt-<method>.png``: AggAtt strips of DiFull maps on 2×2 grids of the bundled
  photos (Grad-CAM leaks out of the target cell, the gradient stays inside).

    .venv/bin/python scripts/vision_figures.py [--out docs/img] [--grids 8]

A few minutes on a CPU (LiMA and RISE dominate).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw
from skimage import data
from sklearn.datasets import load_sample_image

import attribkit as ak
from attribkit.evaluation.study import image_study
from attribkit.viz.image import overlay

METHODS: dict[str, dict] = {
    "Grad-CAM": {"method": "grad_cam"},
    "IG, smoothed": {"method": "integrated_gradients", "n_steps": 16},
    "occlusion": {"method": "occlusion"},
    "RISE (centred)": {"method": "rise", "n_masks": 500, "center": True},
    "LiMA": {"method": "lima", "n_segments": 25},
}


def overlays(model: ak.ImageClassifier, out: Path) -> Path:
    photos = [data.coffee(), data.chelsea(), data.rocket()]
    tile, pad, head = 224, 6, 22
    sheet = Image.new(
        "RGB", (len(METHODS) * (tile + pad), head + len(photos) * (tile + pad)), "white"
    )
    draw = ImageDraw.Draw(sheet)
    for j, label in enumerate(METHODS):
        draw.text((j * (tile + pad) + 4, 4), label, fill="black")
    for i, photo in enumerate(photos):
        for j, (label, params) in enumerate(METHODS.items()):
            p = dict(params)
            a = ak.attribute_image(model, photo, method=p.pop("method"), **p)
            if label.endswith("smoothed"):
                a = ak.smooth_attribution(a, sigma=4.0)
            image = model.prepare(photo)
            sheet.paste(
                Image.fromarray(overlay(image, a.heatmap, alpha=0.55)),
                (j * (tile + pad), head + i * (tile + pad)),
            )
    path = out / "vision-overlays.png"
    sheet.save(path)
    return path


def aggatt_strips(model: ak.ImageClassifier, out: Path, grids: int) -> list[str]:
    photos = [
        data.chelsea(), data.coffee(), data.rocket(), data.astronaut(), data.camera(),
        load_sample_image("china.jpg"), load_sample_image("flower.jpg"),
    ]  # fmt: skip
    result = image_study(
        model, photos, ["grad_cam", "input_x_gradient"], ["difull"], grids=grids, out=out
    )
    return result.figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    parser.add_argument("--grids", type=int, default=12)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model = ak.load("efficientnet-lite0")
    print(overlays(model, args.out))
    for f in aggatt_strips(model, args.out, args.grids):
        print(f)
    for extra in ("table.md", "results.json"):  # the study's own files are not docs
        (args.out / extra).unlink(missing_ok=True)
    print("done")


if __name__ == "__main__":
    main()
