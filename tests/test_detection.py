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


# -- VPS ---------------------------------------------------------------------------------------------


def test_vps_ranks_the_square_first_with_the_exact_call_count_and_closed_form_curves() -> None:
    from attribkit.methods.detection.vps import greedy_passes, vps

    task, fn = toy_task()
    rows = fn.rows
    a = vps(task)
    assert a.method == "vps" and a.task == "detection" and a.extras["order"][:4] == SQUARE_UNITS
    assert a.extras["order"][4:] == [u for u in range(16) if u not in SQUARE_UNITS]  # ties: index
    # m(m + 1) = 272 images less the 4 of the second-to-last step and the known full image
    assert a.cost.forward_passes == greedy_passes(16) == 16 * 17 - 5 == fn.rows - rows
    assert a.cost.forward_passes + a.cost.cache_hits == 16 * 17 + 2 * 17  # search + curves
    assert a.extras["curve_forward_passes"] == 0 and a.extras["evaluations"] == 16 * 17 // 2
    ins, dele = a.extras["insertion_curve"], a.extras["deletion_curve"]
    steps = np.minimum(np.arange(17), 4) / 4  # share of the square kept after k regions
    assert ins["area"] == pytest.approx(np.arange(17) / 16)
    assert ins["object"] == pytest.approx(steps) and ins["cls"] == pytest.approx(steps)
    assert dele["object"] == pytest.approx(1 - steps) and ins["iou"] == pytest.approx([1.0] * 17)
    assert a.extras["insertion_auc"] == pytest.approx(0.875)  # 4 ramps of 1/16, then 1
    assert a.extras["deletion_auc"] == pytest.approx(0.125)
    assert a.extras["highest_confidence_50"] == a.extras["highest_confidence_75"] == 1.0
    # F(S) = 2·share(S): gains 0.5 four times, then 0 — the authors' map
    assert a.extras["values_along_order"] == pytest.approx([0, 0.5, 1, 1.5, 2] + [2] * 12)
    expected = np.zeros(16)
    expected[[5, 6, 9]] = [1, 2 / 3, 1 / 3]  # the 4th square region ties with the rest at 0
    assert a.scores == pytest.approx(expected) and a.heatmap[12, 12] == pytest.approx(1.0)
    assert a.target["box"] == list(SQUARE) and a.params["mode"] == "object"
    again = vps(task)  # everything cached on the task
    assert again.cost.forward_passes == 0 and again.scores == pytest.approx(a.scores)
    ranked = vps(toy_task()[0], values="rank")
    assert sorted(ranked.ranking[:4].tolist()) == SQUARE_UNITS and ranked.scores.max() == 1.0


def test_vps_bidirectional_search_and_options() -> None:
    from attribkit.methods.detection.vps import greedy_passes, vps
    from attribkit.methods.image.submodular import bidirectional_evaluations

    task, _ = toy_task(mode="cls")
    b = vps(task, search="bidirectional", pending=4)
    assert b.extras["order"][:4] == SQUARE_UNITS and b.params["search"] == "bidirectional"
    assert b.cost.forward_passes <= 2 * bidirectional_evaluations(16, 4) < greedy_passes(16)
    assert b.extras["insertion_auc"] == pytest.approx(0.875)  # cls mode: IoU 1 > 0.5 here
    coarse = vps(task, units=task.make_units("patches", patch=16))  # quadrants: 1/4 square each
    assert len(coarse.units) == 4 and coarse.extras["insertion_auc"] == pytest.approx(0.5)
    for bad, match in (
        ({"search": "beam"}, "unknown search"),
        ({"values": "shap"}, "unknown values"),
        ({"lambda1": 0.0, "lambda2": 0.0}, "not both 0"),
        ({"units": np.zeros((SIZE, SIZE), int)}, "only 1 region"),
    ):
        with pytest.raises(InputError, match=match):
            vps(task, **bad)


def test_gain_based_map_on_a_fixed_gain_sequence() -> None:
    from attribkit.methods.detection.vps import greedy_passes, vps_gain_values

    # gains 0.7, 0.3, -0.1, 0.5 -> values -0.7, -1.0, -1.1, -1.6 -> min-max normalised
    got = vps_gain_values([0.5, 1.2, 1.5, 1.4, 1.9])
    assert got == pytest.approx([1.0, 0.6 / 0.9, 0.5 / 0.9, 0.0])
    assert vps_gain_values([1.0, 1.0, 1.0]).tolist() == [1.0, 1.0]
    with pytest.raises(InputError, match="F along the order"):
        vps_gain_values([1.0, 2.0])
    assert greedy_passes(32) == 1051 and greedy_passes(32, full_known=False) == 1052
    assert greedy_passes(2) == 3


# -- D-RISE ------------------------------------------------------------------------------------------


def test_drise_finds_the_square_with_n_masks_calls() -> None:
    from attribkit.methods.detection.drise import drise

    task, fn = toy_task()
    rows = fn.rows
    a = drise(task, seed=0)
    assert a.method == "drise" and a.cost.forward_passes == 1000 == fn.rows - rows
    assert sorted(np.argsort(-a.scores)[:4].tolist()) == SQUARE_UNITS
    r, c = np.unravel_index(int(np.argmax(a.heatmap)), a.heatmap.shape)
    assert 8 <= r < 24 and 8 <= c < 24
    assert a.params["similarity"] == "vps" and 0 < a.extras["mean_weight"] < 1
    again = drise(task, seed=0, n_masks=64)
    assert np.array_equal(again.heatmap, drise(task, seed=0, n_masks=64).heatmap)
    for sim in ("drise", "object"):
        other = drise(task, n_masks=64, similarity=sim)
        assert other.heatmap.shape == (SIZE, SIZE) and other.params["similarity"] == sim
    before = fn.rows
    for bad, match in (
        ({"similarity": "cosine"}, "unknown similarity"),
        ({"keep_prob": 1.0}, "keep_prob"),
        ({"grid_size": 64}, "finer than"),
        ({"units": np.zeros((SIZE, SIZE), int)}, "only 1 region"),
    ):
        with pytest.raises(InputError, match=match):
            drise(task, **bad)
    assert fn.rows == before  # refused before any detector call


# -- evaluators --------------------------------------------------------------------------------------


def test_detection_curves_both_protocols_in_closed_form() -> None:
    from attribkit.evaluation.detection import (
        debug_success_rate,
        detection_curves,
        energy_pointing_game,
    )
    from attribkit.methods.detection.vps import vps

    task, fn = toy_task()
    a = vps(task)
    rows = fn.rows
    regions = detection_curves(task, a)  # VPS's own order on its regions: all cached
    assert regions.cost.forward_passes == 0 and fn.rows == rows
    assert regions.order.tolist() == a.extras["order"]
    assert regions.insertion_auc == pytest.approx(a.extras["insertion_auc"]) == 0.875
    assert regions.auc["deletion"] == pytest.approx(0.125) and regions.auc["insertion_iou"] == 1.0
    square_map = np.zeros((SIZE, SIZE))
    square_map[8:24, 8:24] = 1.0
    by_map = detection_curves(task, square_map)  # ranked by mean map value per region
    assert by_map.insertion_auc == pytest.approx(0.875) and by_map.cost.forward_passes == 0
    pixels = detection_curves(task, square_map, "pixels")
    n = SIZE * SIZE
    k = np.array([int(n * i / 49) for i in range(1, 50)])
    x = np.concatenate([[0], k / n])
    share = np.concatenate([[0], np.minimum(k, 256) / 256])  # the square's pixels come first
    assert pixels.area == pytest.approx(x) and pixels.insertion["object"] == pytest.approx(share)
    assert pixels.deletion["object"] == pytest.approx(1 - share)
    trapezoid = float(np.sum(np.diff(x) * (share[1:] + share[:-1]) / 2))
    assert pixels.insertion_auc == pytest.approx(trapezoid)
    assert pixels.cost.forward_passes == 2 * 49 - 1  # the full image is known
    assert pixels.highest_confidence == {"50": 1.0, "75": 1.0} and pixels.debug_success()
    missed, _ = toy_task(box=(0, 0, 8, 8), label=0)  # nothing ever covers the corner
    corner = detection_curves(missed, square_map, "pixels", steps=4)
    assert corner.highest_confidence["50"] == 0.0 and corner.cost.forward_passes == 2 * 4
    assert debug_success_rate([pixels, corner]) == 0.5
    assert pixels.to_dict()["auc"]["insertion"] == pytest.approx(trapezoid)
    with pytest.raises(InputError, match="protocol"):
        detection_curves(task, square_map, "boxes")
    # energy pointing game: all of VPS's map lies in the square; chance = its area share
    pg = energy_pointing_game(a)
    assert pg.energy == pytest.approx(1.0) and pg.chance == 0.25 and pg.hit
    assert energy_pointing_game(np.ones((SIZE, SIZE)), (0, 0, 16, 16)).energy == 0.0
    half = energy_pointing_game(square_map + 1.0, (0, 0, 16, 32))
    assert half.energy == pytest.approx(0.5) and half.box == (0, 0, 16, 32)
    with pytest.raises(InputError, match="give box="):
        energy_pointing_game(square_map)


def test_attribute_detection_runs_vps_and_drise() -> None:
    det = CallableDetector(SquareFn(), ["square", "other"], batch_size=64)
    a = attribute_detection(det, toy_image(), method="vps", units=GRID)
    assert a.extras["order"][:4] == SQUARE_UNITS and a.target["class"] == "square"
    b = attribute_detection(det, toy_image(), method="drise", units=GRID, n_masks=32)
    assert b.cost.forward_passes == 32 and len(b.units) == 16
    c = attribute_detection(det, toy_image(), method="vps", division_number=25)
    assert c.params["division_number"] == 25 and len(c.units) >= 2
