"""Detection: the detector protocol, DetectionTask's object score and targets, VPS, D-RISE and the
detection evaluators, on a toy detector that scores the kept share of a red square."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attribkit.core.errors import InputError, ScorerError
from attribkit.tasks.detection import (
    CallableDetector,
    DetectionTask,
    TorchDetector,
    attribute_detection,
    box_iou,
    nms,
    object_scores,
)

SIZE = 32
SQUARE = (8.0, 8.0, 24.0, 24.0)  # x1, y1, x2, y2: 4 cells of the 8-px grid
SQUARE_UNITS = [5, 6, 9, 10]
GRID = np.arange(16).reshape(4, 4).repeat(8, 0).repeat(8, 1)


def toy_image() -> np.ndarray:
    img = np.random.default_rng(0).uniform(0.2, 0.6, (SIZE, SIZE, 3)).astype(np.float32)
    img[8:24, 8:24] = (1.0, 0.0, 0.0)
    return img


class SquareFn:
    """Two candidates: the square's box scored by the share of its pixels still red, and a
    box shifted by 8 px at half that score; a second class 'other' at 0.1. Counts rows."""

    def __init__(self, nan: bool = False) -> None:
        self.rows, self.nan = 0, nan

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.rows += len(images)
        red = (images[..., 0] > 0.9) & (images[..., 1] < 0.1) & (images[..., 2] < 0.1)
        share = red[:, 8:24, 8:24].mean(axis=(1, 2))
        b = len(images)
        boxes = np.broadcast_to(np.array([SQUARE, (16, 16, 32, 32)]), (b, 2, 4)).copy()
        square = np.stack([share, 0.5 * share], 1)
        scores = np.stack([square, np.full((b, 2), 0.1)], 2)
        return boxes, scores * np.nan if self.nan else scores


def toy_task(**kw) -> tuple[DetectionTask, SquareFn]:
    fn = SquareFn()
    det = CallableDetector(fn, ["square", "other"], batch_size=64, name="square")
    kw.setdefault("units", GRID)
    return DetectionTask(det, toy_image(), **kw), fn


# -- boxes, NMS and the object score ---------------------------------------------------------------


def test_box_iou_and_object_score_on_hand_made_boxes() -> None:
    target = (0, 0, 10, 10)
    boxes = np.array([[[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]]], float)
    assert box_iou(boxes[0], target) == pytest.approx([1.0, 50 / 150, 0.0, 0.0])
    scores = np.array([[[0.2, 0.9], [0.9, 0.1], [1.0, 1.0], [1.0, 1.0]]])
    t = object_scores(boxes, scores, target, label=0, mode="object")
    assert t["object"][0] == pytest.approx(max(1.0 * 0.2, (1 / 3) * 0.9))  # 0.3 from box 1
    assert t["index"][0] == 1 and t["iou"][0] == pytest.approx(1 / 3) and t["cls"][0] == 0.9
    cls = object_scores(boxes, scores, target, label=0, mode="cls")
    assert cls["object"][0] == pytest.approx(0.2)  # only box 0 has IoU > 0.5
    assert object_scores(boxes, scores, target, 1, "cls")["object"][0] == pytest.approx(0.9)
    none = object_scores(np.zeros((2, 0, 4)), np.zeros((2, 0, 2)), target, 0, "cls")
    assert none["object"].tolist() == [0.0, 0.0] and none["index"].tolist() == [-1, -1]
    with pytest.raises(InputError, match="mode"):
        object_scores(boxes, scores, target, 0, mode="iou")


def test_weighted_nms_averages_overlapping_boxes_by_score() -> None:
    boxes = np.array([[0, 0, 10, 10], [2, 0, 12, 10], [50, 50, 60, 60], [0, 0, 10, 10]], float)
    scores = np.array([[0.9], [0.6], [0.7], [0.3]])
    dets = nms(boxes, scores, score_threshold=0.5, iou_threshold=0.3, classes=["face"])
    assert [round(d.score, 2) for d in dets] == [0.9, 0.7]
    assert dets[0].box[0] == pytest.approx(0.6 * 2 / 1.5) and dets[0].box[2] == pytest.approx(
        10 + 0.6 * 2 / 1.5
    )
    assert dets[1].box == pytest.approx((50, 50, 60, 60)) and dets[0].name == "face"
    hard = nms(boxes, scores, score_threshold=0.5, method="hard")
    assert hard[0].box == (0.0, 0.0, 10.0, 10.0)


# -- the detector protocol ---------------------------------------------------------------------------


def test_callable_detector_counts_checks_and_predicts() -> None:
    task, fn = toy_task()
    det = task.detector
    assert fn.rows == 1 and task.cost.forward_passes == 1  # the detections of the whole image
    assert [d.to_dict()["name"] for d in det.predict(toy_image())] == ["square", "square"]
    assert det.cost.forward_passes == 2 and det.cost.batches == 2
    boxes, scores = det(np.zeros((70, SIZE, SIZE, 3)))  # two batches of at most 64
    assert boxes.shape == (70, 2, 4) and scores.shape == (70, 2, 2) and det.cost.batches == 4
    with pytest.raises(InputError, match=r"\(B, H, W, 3\)"):
        det(np.zeros((SIZE, SIZE)))

    def wrong(images):
        return np.zeros((len(images), 3, 4)), np.zeros((len(images), 2, 2))

    with pytest.raises(ScorerError, match="scores of shape"):
        CallableDetector(wrong, ["a", "b"])(np.zeros((1, 4, 4, 3)))
    with pytest.raises(ScorerError, match="non-finite"):
        CallableDetector(SquareFn(nan=True), ["square", "other"])(np.zeros((1, SIZE, SIZE, 3)))
    with pytest.raises(InputError, match="class names"):
        CallableDetector(fn, "square")


def test_torch_detector_resizes_normalises_and_scales_boxes_back() -> None:
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x: torch.Tensor):
            b, _, h, w = x.shape
            boxes = torch.tensor([0.0, 0.0, w / 2, h / 2]).expand(b, 1, 4)
            return boxes, x.mean(dim=(1, 2, 3))[:, None, None] * self.w

    det = TorchDetector(Net(), ["thing"], input_size=16, normalize="symmetric", batch_size=2)
    boxes, scores = det(np.ones((3, 32, 64, 3), np.float32))
    assert boxes[0, 0].tolist() == [0.0, 0.0, 32.0, 16.0]  # display pixels of the 64 x 32 image
    assert scores.shape == (3, 1, 1) and scores[0, 0, 0] == pytest.approx(1.0)  # (1 - .5) / .5
    assert det.cost.forward_passes == 3 and det.cost.batches == 2
    with pytest.raises(InputError, match="CallableDetector"):
        TorchDetector(lambda x: x, ["thing"])  # type: ignore[arg-type]


def test_any_object_with_the_protocol_is_a_detector() -> None:
    class Duck:  # as models.blazeface.BlazeFace: no base class, no cost meter needed
        name = "duck"

        def __init__(self, fn: SquareFn) -> None:
            self.fn, self.classes = fn, ["square", "other"]

        def __call__(self, images: np.ndarray):
            return self.fn(images)

        def postprocess(self, boxes, scores, score_threshold=0.5):
            return [nms(b, s, score_threshold=score_threshold, classes=self.classes)
                    for b, s in zip(boxes, scores, strict=True)]  # fmt: skip

    fn = SquareFn()
    task = DetectionTask(Duck(fn), toy_image(), units=GRID)
    assert task.box == SQUARE and task.cost.forward_passes == 1 and task.batch_size == 16
    assert task.scorer()(np.ones(16, bool))[0] == 1.0 and task.cost.forward_passes == fn.rows
    bad = DetectionTask(Duck(SquareFn(nan=True)), toy_image(), box=SQUARE, label=0, units=GRID)
    with pytest.raises(ScorerError, match="duck returned non-finite"):
        bad.values(toy_image()[None])


# -- the task ----------------------------------------------------------------------------------------


def test_task_targets_the_top_detection_and_scores_masks() -> None:
    task, fn = toy_task()
    assert task.kind == "detection" and task.box == SQUARE and task.label == 0
    info = task.target_info
    assert info["source"] == "prediction" and info["class"] == "square" and info["score"] == 1.0
    assert task.n_units == 16 and task.full_terms == (1.0, 1.0, 1.0)
    keep = np.zeros(16, bool)
    keep[[5, 6]] = True
    scorer = task.scorer()
    assert scorer(np.stack([keep, ~keep])).tolist() == [0.5, 0.5]
    assert task.cost.forward_passes == 3 and fn.rows == 3
    second = DetectionTask(task.detector, toy_image(), 1, units=GRID)  # the shifted box
    assert second.box == (16.0, 16.0, 32.0, 32.0) and second.target_info["score"] == 0.5
    cls = DetectionTask(task.detector, toy_image(), 1, units=GRID, mode="cls")
    assert cls.full_terms[0] == pytest.approx(0.5)  # its own candidate, IoU 1
    given = DetectionTask(task.detector, toy_image(), box=(0, 0, 8, 8), label="square")
    assert given.cost.forward_passes == 0 and given.target_info["source"] == "given"
    assert given.full_terms[0] == 0.0  # no candidate overlaps the empty corner


def test_perturbation_methods_run_on_the_task_with_a_heatmap() -> None:
    from attribkit.core.registry import attribute

    task, fn = toy_task()
    a = attribute(task, "loo")
    assert a.task == "detection" and a.heatmap.shape == (SIZE, SIZE)
    assert sorted(np.argsort(-a.scores)[:4].tolist()) == SQUARE_UNITS
    assert a.scores[SQUARE_UNITS] == pytest.approx([0.25] * 4)
    assert a.target["box"] == list(SQUARE) and a.cost.forward_passes == fn.rows - 1
    patches = attribute(task, "loo", patch=16)
    assert len(patches.units) == 4 and patches.heatmap.shape == (SIZE, SIZE)


def test_bad_input_is_refused_with_what_to_fix() -> None:
    task, _ = toy_task()
    det = task.detector
    with pytest.raises(InputError, match="not inside the 32x32 image"):
        DetectionTask(det, toy_image(), box=(20, 20, 40, 30), label=0)
    with pytest.raises(InputError, match="zero area"):
        DetectionTask(det, toy_image(), box=(5, 5, 5, 9), label=0)
    with pytest.raises(InputError, match=r"no class 'dog'.*square"):
        DetectionTask(det, toy_image(), box=SQUARE, label="dog")
    with pytest.raises(InputError, match="label 7 is not a class"):
        DetectionTask(det, toy_image(), box=SQUARE, label=7)
    with pytest.raises(InputError, match="give label="):
        DetectionTask(det, toy_image(), box=SQUARE)
    with pytest.raises(InputError, match=r"target 5 is not a detection index.*0: square 1.00"):
        DetectionTask(det, toy_image(), 5)
    blank = np.full((SIZE, SIZE, 3), 0.3, np.float32)
    with pytest.raises(InputError, match=r"no detection to explain.*top candidate scores: 0.100"):
        DetectionTask(det, blank)
    with pytest.raises(InputError, match="CallableDetector"):
        DetectionTask(SquareFn(), toy_image())  # type: ignore[arg-type]
    with pytest.raises(InputError, match="mode"):
        DetectionTask(det, toy_image(), mode="iou")
    broken = CallableDetector(SquareFn(nan=True), ["square", "other"])
    with pytest.raises(ScorerError, match="non-finite"):
        DetectionTask(broken, toy_image())
    lazy = DetectionTask(broken, toy_image(), box=SQUARE, label=0, units=GRID)  # no pass yet
    with pytest.raises(ScorerError, match="non-finite"):
        lazy.scorer().full()


def test_attribute_detection_builds_the_task_from_its_options() -> None:
    fn = SquareFn()
    det = CallableDetector(fn, ["square", "other"], batch_size=64)
    a = attribute_detection(det, toy_image(), method="loo", units=GRID, mode="cls")
    assert a.target["mode"] == "cls" and a.target["box"] == list(SQUARE) and len(a.units) == 16
    b = attribute_detection(det, toy_image(), method="loo", box=(0, 0, 16, 16), label=0, patch=16)
    assert b.target["source"] == "given" and len(b.units) == 4 and b.heatmap.shape == (32, 32)
