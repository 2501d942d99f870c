"""Image attribution on the bundled EfficientNet-Lite0: methods × faithfulness metrics, and
attribkit side by side with Captum.

Images: 8 photos bundled with scikit-image and scikit-learn (chelsea, coffee, rocket,
astronaut, camera, logo, china, flower) and a 70 % crop of each (left half of the photos for
even indices, right half for odd) — 16 real images; the target is the predicted class.

Table 1 (``attribkit.evaluation.study.image_study``): for every method, insertion AUC (RISE
protocol: 16-px patches pasted onto a blurred image), MoRF deletion AUC (to a zero image), SRG
(LeRF − MoRF), DiFull localisation on 2×2 grids of the images (112-px cells, the backbone run
on each cell alone; corner heads), forward/backward passes and seconds per image — and a
random-order row.

Table 2: the same maps from attribkit and Captum 0.9 on the same model, images and targets —
integrated gradients (zero model-input baseline, 32 Gauss-Legendre steps, batch 16; both
compute f(x) and f(x') for the completeness error: Captum with ``return_convergence_delta``), occlusion
(32-px windows, stride 16, baseline = the model's zero input, i.e. grey) and LayerGradCam at
``_bn1`` — seconds per image (median of repeats, alternating the libraries) and the largest
difference between the two maps relative to the map's largest value.

Run: ``.venv/bin/python benchmarks/vision.py [--quick] [--threads 2]`` (``--quick``: 4 images,
cheap settings). No timed assertions: these are measurements.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import environment, markdown_table

PHOTOS = ["chelsea", "coffee", "rocket", "astronaut", "camera", "logo", "china.jpg", "flower.jpg"]


def bench_images(n_photos: int = 8) -> list[tuple[str, np.ndarray]]:
    """The photos and a 70 % crop of each (left or right half alternately)."""
    from skimage import data
    from sklearn.datasets import load_sample_image

    out = []
    for i, name in enumerate(PHOTOS[:n_photos]):
        img = load_sample_image(name) if name.endswith(".jpg") else getattr(data, name)()
        out.append((name, img))
        h, w = img.shape[:2]
        ch, cw = int(h * 0.7), int(w * 0.7)
        top, left = (h - ch) // 2, (0 if i % 2 == 0 else w - cw)
        out.append((f"{name} crop", img[top : top + ch, left : left + cw]))
    return out


def study_table(
    model: Any,
    images: list[np.ndarray],
    quick: bool,
    out: Path,
    only: list[str] | None = None,
    segments: int = 12,
    metrics: tuple[str, ...] = ("insertion", "deletion", "srg", "difull"),
) -> str:
    from attribkit.evaluation.study import image_study

    methods: dict[str, dict[str, Any]] = {
        "saliency": {},
        "input_x_gradient": {},
        "integrated_gradients": {"n_steps": 16},
        "smoothgrad": {"n_samples": 8 if quick else 10},
        "grad_cam": {},
        "grad_cam_plus_plus": {},
        "layer_cam": {},
        "occlusion": {},
        "rise": {"n_masks": 200 if quick else 500},
        "lima": {"n_segments": segments},
        "smdl": {"n_segments": segments},
    }
    if only:
        methods = {k: v for k, v in methods.items() if k in only}
    result = image_study(
        model,
        images,
        methods,
        list(metrics),
        steps=10,
        grids=2 if quick else 4,
        out=out,
        progress=True,
    )
    header = [
        "method",
        "insertion ↑",
        "deletion ↓",
        "SRG ↑",
        "DiFull ↑",
        "fwd/img",
        "bwd/img",
        "s/img",
    ]
    rows = [
        [
            r["method"],
            *(
                f"{r[k]:.3f}" if r.get(k) is not None else "—"
                for k in ("insertion", "deletion", "srg", "difull")
            ),
            f"{r['forward/img']:.0f}",
            f"{r['backward/img']:.0f}",
            f"{r['s/img']:.2f}",
        ]
        for r in result.rows
    ]
    notes = "\n".join(f"- {k}: {v}" for k, v in result.protocol.items())
    return markdown_table(header, rows) + "\n\n" + notes + f"\n- AggAtt figures: {out}/"


def _timed(fn: Any, repeats: int) -> tuple[float, Any]:
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), value


def _captum_maps(net: torch.nn.Module, x: torch.Tensor, t: int, steps: int) -> dict[str, Any]:
    """Captum's three maps for one image, as (H, W) arrays on attribkit's conventions."""
    from captum.attr import IntegratedGradients, LayerGradCam, Occlusion

    def ig() -> np.ndarray:
        a, _delta = IntegratedGradients(net).attribute(
            x, target=t, n_steps=steps, method="gausslegendre", internal_batch_size=16,
            return_convergence_delta=True,
        )  # fmt: skip
        return a.sum(1)[0].detach().numpy()  # channels summed

    def occlusion() -> np.ndarray:
        a = Occlusion(net).attribute(
            x, target=t, sliding_window_shapes=(3, 32, 32), strides=(3, 16, 16),
            perturbations_per_eval=16,
        )  # fmt: skip
        return a.mean(1)[0].numpy()  # every channel holds the same per-pixel value

    def grad_cam() -> np.ndarray:
        cam = LayerGradCam(net, net._bn1).attribute(x, target=t, relu_attributions=True)
        up = torch.nn.functional.interpolate(cam, size=(224, 224), mode="bilinear")
        return up[0, 0].detach().numpy()

    return {"integrated_gradients": ig, "occlusion": occlusion, "grad_cam (_bn1)": grad_cam}


def captum_table(
    model: Any, images: list[np.ndarray], repeats: int, steps: int, only: str | None = None
) -> str:
    """attribkit vs Captum on the same maps: seconds per image and the largest relative gap."""
    from attribkit.tasks.image import ImageTask, attribute_image

    grey = np.full((224, 224, 3), 127 / 255, dtype=np.float32)  # the model's zero input
    ours_params = {
        "integrated_gradients": ("integrated_gradients", {"n_steps": steps}),
        "occlusion": (
            "occlusion",
            {"kernel": 32, "stride": 16, "baseline": grey, "output": "logit"},
        ),
        "grad_cam (_bn1)": ("grad_cam", {"layer": "_bn1"}),
    }
    stats: dict[str, list[tuple[float, float, float]]] = {}
    for img in images:
        task = ImageTask(model, img)
        theirs = _captum_maps(model.module, task.tensor(task.image[None]), task.target, steps)
        for name, (method, params) in ours_params.items():
            if only and not name.startswith(only):
                continue

            def mine(method: str = method, params: dict = params, task: Any = task) -> np.ndarray:
                return attribute_image(model, task.image, task.target, method, **params).heatmap

            mine(), theirs[name]()  # warm-up
            s_ours, m1 = _timed(mine, repeats)
            s_peer, m2 = _timed(theirs[name], repeats)
            gap = float(np.abs(m1 - m2).max() / max(np.abs(m2).max(), 1e-12))
            stats.setdefault(name, []).append((s_ours, s_peer, gap))
    rows = []
    for name, v in stats.items():
        a = np.array(v)
        rows.append(
            [name, f"{a[:, 0].mean():.3f}", f"{a[:, 1].mean():.3f}", f"{a[:, 2].max():.1e}"]
        )
    return markdown_table(
        ["method", "attribkit s/img", "Captum s/img", "max |Δmap| / max |map|"], rows
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/vision"))
    parser.add_argument("--skip-study", action="store_true")
    parser.add_argument("--skip-captum", action="store_true")
    parser.add_argument("--only", help="time one method against Captum (e.g. grad_cam)")
    parser.add_argument("--methods", help="comma-separated study methods (default: all)")
    parser.add_argument(
        "--metrics",
        default=None,
        help="comma-separated (default insertion,deletion,srg,difull; --quick leaves out difull: "
        "its 2x2 grids need 4 distinct confident classes, which --quick's 2 photos lack)",
    )
    parser.add_argument("--segments", type=int, default=12, help="SLIC regions for LiMA/SMDL")
    parser.add_argument("--photos", type=int, default=8, help="photos used (each + a crop)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import attribkit as ak

    model = ak.load("efficientnet-lite0")
    named = bench_images(2 if args.quick else args.photos)
    images = [img for _, img in named]
    print(environment(["attribkit", "torch", "captum"], args.threads))
    print(f"{len(images)} images: " + ", ".join(n for n, _ in named))
    print()
    if not args.skip_captum:
        print(captum_table(model, images, 1 if args.quick else args.repeats, 32, args.only))
        print()
    if not args.skip_study:
        only = args.methods.split(",") if args.methods else None
        default = "insertion,deletion,srg" if args.quick else "insertion,deletion,srg,difull"
        metrics = tuple((args.metrics or default).split(","))
        print(study_table(model, images, args.quick, args.out, only, args.segments, metrics))


if __name__ == "__main__":
    main()
