"""SiamFC++ score-map geometry, dense-box targets and losses on hand-computed values (continuous convention)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision

from trackers.siamfcpp.geometry import (decode_boxes, location_grid, location_grid_tensor, score_offset,
                                        score_size)
from trackers.siamfcpp.losses import MIN_IOU, SiamFCppLoss, centerness_loss, iou_loss, sigmoid_focal_loss
from trackers.siamfcpp.targets import dense_box_targets

# Small grid for hand cases: stride 8, 5×5, offset 0 → pixel indices 0, 8, 16, 24, 32 → locations 0.5 ... 32.5.
SMALL_GRID = location_grid_tensor(5, 0, 8)


def _targets(box: list[float], negative: bool = False, grid: torch.Tensor = SMALL_GRID):
    return dense_box_targets(torch.tensor([box]), torch.tensor([negative]), grid)


def _flat(i: int, j: int, size: int = 5) -> int:
    return i * size + j


# ---------------------------------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("x_size, convs, size, offset", [
    (303, 3, 17, 87),   # AlexNet / ShuffleNet / TinyConv, train and test
    (289, 2, 17, 80),   # GoogLeNet, trained at 289
    (303, 2, 19, 79),   # GoogLeNet, tested at 303
    (289, 3, 15, 88),   # the AlexNet head at 289: a smaller map, so a larger margin
])
def test_score_size_and_offset_match_the_reference(x_size, convs, size, offset):
    assert score_size(x_size, 127, 8, convs) == size
    assert score_offset(x_size, size, 8) == offset


def test_score_size_rejects_an_empty_map():
    with pytest.raises(ValueError):
        score_size(127, 127, 8, 3)


def test_location_grid_is_row_major_pixel_centres_centred_on_the_crop():
    grid = location_grid(17, 87, 8)
    assert grid.shape == (289, 2)
    np.testing.assert_array_equal(grid[0], [87.5, 87.5])
    np.testing.assert_array_equal(grid[1], [95.5, 87.5])       # j (column, x) varies fastest
    np.testing.assert_array_equal(grid[17], [87.5, 95.5])      # next row: y + stride
    np.testing.assert_array_equal(grid[-1], [215.5, 215.5])
    np.testing.assert_array_equal(grid[144], [151.5, 151.5])   # the middle location is the crop centre 303 / 2
    np.testing.assert_array_equal(location_grid(19, 79, 8)[180], [151.5, 151.5])
    np.testing.assert_array_equal(location_grid(17, 80, 8)[144], [144.5, 144.5])
    tensor = location_grid_tensor(17, 87, 8)
    assert tensor.dtype == torch.float32
    np.testing.assert_array_equal(tensor.numpy(), grid)


def test_decode_boxes_measures_distances_from_the_locations():
    grid = location_grid_tensor(2, 3, 8)                         # (3.5, 3.5), (11.5, 3.5), (3.5, 11.5), (11.5, 11.5)
    offsets = torch.tensor([1.0, 2.0, 3.0, 4.0]).expand(1, 4, 4)
    boxes = decode_boxes(offsets, grid)
    torch.testing.assert_close(boxes[0, 1], torch.tensor([10.5, 1.5, 14.5, 7.5]))
    torch.testing.assert_close(boxes[0, 2], torch.tensor([2.5, 9.5, 6.5, 15.5]))


def test_decoding_the_target_distances_gives_back_the_gt_box():
    grid = location_grid_tensor(17, 87, 8)
    cls, _, box = dense_box_targets(torch.tensor([[120.0, 110.0, 190.0, 200.0]]), torch.tensor([False]), grid)
    ltrb = torch.cat([grid - box[..., :2], box[..., 2:] - grid], dim=-1)
    positive = cls == 1
    torch.testing.assert_close(decode_boxes(ltrb, grid)[positive], box[positive])


# ---------------------------------------------------------------------------------------------------- targets


def test_positives_are_the_locations_strictly_inside_the_box():
    # x, y ∈ (5, 20): locations 8.5 and 16.5 (pixel indices 8, 16) on both axes; 0.5 and 24.5 are outside.
    cls, ctr, box = _targets([5.0, 5.0, 20.0, 20.0])
    assert cls.shape == ctr.shape == (1, 25) and box.shape == (1, 25, 4)
    assert cls.dtype == ctr.dtype == box.dtype == torch.float32
    expected = {_flat(i, j) for i in (1, 2) for j in (1, 2)}
    assert set(torch.nonzero(cls[0] == 1).flatten().tolist()) == expected
    assert set(cls[0].unique().tolist()) == {0.0, 1.0}
    assert cls[0, 0] == 0 and cls[0, 24] == 0
    assert set(torch.nonzero(ctr[0]).flatten().tolist()) == expected
    torch.testing.assert_close(box[0], torch.tensor([5.0, 5.0, 20.0, 20.0]).expand(25, 4))


@pytest.mark.parametrize("box, positives", [
    ([8.5, 8.5, 20.0, 20.0], {_flat(2, 2)}),      # left and top edges through locations 8.5: not positive
    ([5.0, 5.0, 16.5, 16.5], {_flat(1, 1)}),      # right and bottom edges through locations 16.5
])
def test_a_location_on_an_edge_is_not_positive(box, positives):
    cls, _, _ = _targets(box)
    assert set(torch.nonzero(cls[0] == 1).flatten().tolist()) == positives


def test_centerness_by_hand():
    # The box centred on location (8.5, 8.5): centre-ness exactly 1 there (no epsilon in the denominator).
    _, ctr, _ = _targets([0.5, 0.5, 16.5, 16.5])
    assert ctr[0, _flat(1, 1)].item() == 1.0
    assert ctr.max().item() == 1.0
    # Box [4, 2, 20, 12]: positives x ∈ {8.5, 16.5}, y = 8.5. At (8.5, 8.5): l = 4.5, r = 11.5, t = 6.5, b = 3.5.
    cls, ctr, _ = _targets([4.0, 2.0, 20.0, 12.0])
    assert set(torch.nonzero(cls[0] == 1).flatten().tolist()) == {_flat(1, 1), _flat(1, 2)}
    assert ctr[0, _flat(1, 1)].item() == pytest.approx(math.sqrt(4.5 / 11.5 * 3.5 / 6.5), rel=1e-6)
    # At (16.5, 8.5): l = 12.5, r = 3.5.
    assert ctr[0, _flat(1, 2)].item() == pytest.approx(math.sqrt(3.5 / 12.5 * 3.5 / 6.5), rel=1e-6)
    assert (ctr[cls != 1] == 0).all()


def test_reference_measured_example():
    """video_analyst measured gt [120, 110, 190, 200] in a 303 crop: 96 positives of 289, max centre-ness 0.816.

    Its locations are the pixel indices 87 + 8k; ours are those pixels' centres, 0.5 px right and down. The positive
    set is the same (x 127..183 and y 111..199: 8 columns × 12 rows), but the best location (151.5, 151.5) is 3.5 px
    from the box centre (155, 155) on each axis instead of 4 (151 or 159): centre-ness 0.837 instead of 0.816.
    """
    box = torch.tensor([[120.0, 110.0, 190.0, 200.0]])
    grid = location_grid_tensor(17, 87, 8)
    for locations, max_ctr in ((grid - 0.5, math.sqrt(31 / 39 * 41 / 49)),        # the reference's locations
                               (grid, math.sqrt(31.5 / 38.5 * 41.5 / 48.5))):     # ours
        cls, ctr, _ = dense_box_targets(box, torch.tensor([False]), locations)
        assert int((cls == 1).sum()) == 96 and cls.numel() == 289
        assert ctr.max().item() == pytest.approx(max_ctr, rel=1e-6)
    assert round(math.sqrt(31 / 39 * 41 / 49), 3) == 0.816
    assert round(math.sqrt(31.5 / 38.5 * 41.5 / 48.5), 3) == 0.837


def test_negative_pairs_train_the_inside_as_background_and_ignore_the_rest():
    boxes = torch.tensor([[5.0, 5.0, 20.0, 20.0], [5.0, 5.0, 20.0, 20.0]])
    cls, ctr, box = dense_box_targets(boxes, torch.tensor([False, True]), SMALL_GRID)
    inside = cls[0] == 1
    assert (cls[1][inside] == 0).all() and (cls[1][~inside] == -1).all()
    assert (ctr[1] == 0).all()                                   # no centre-ness target in a negative pair
    assert (ctr[0][inside] > 0).all()
    torch.testing.assert_close(box[1], box[0])


def test_batch_matches_a_per_location_loop():
    rng = np.random.default_rng(0)
    corners = rng.uniform(60, 240, size=(6, 2, 2))
    boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
    negative = np.array([False, True, False, False, True, False])
    grid = location_grid(17, 87, 8)
    cls, ctr, box = dense_box_targets(torch.tensor(boxes), torch.tensor(negative), grid)
    for n, (x1, y1, x2, y2) in enumerate(boxes):
        for k, (x, y) in enumerate(grid):
            l, t, r, b = x - x1, y - y1, x2 - x, y2 - y
            inside = min(l, t, r, b) > 0
            expected_cls = (0.0 if inside else -1.0) if negative[n] else float(inside)
            expected_ctr = math.sqrt(min(l, r) * min(t, b) / (max(l, r) * max(t, b))) if inside and not negative[n] \
                else 0.0
            assert cls[n, k].item() == expected_cls
            assert ctr[n, k].item() == pytest.approx(expected_ctr, rel=1e-5, abs=1e-7)
    np.testing.assert_allclose(box.numpy(), np.broadcast_to(boxes[:, None, :], (6, 289, 4)), rtol=1e-6)


# ---------------------------------------------------------------------------------------------------- losses


def test_focal_loss_by_hand():
    # p = 0.5 for both: positive 0.25 * 0.5² * ln 2, negative 0.75 * 0.5² * ln 2; one positive → divide by 1.
    logits = torch.tensor([[0.0, 0.0, 7.0, -3.0]])
    target = torch.tensor([[1.0, 0.0, -1.0, -1.0]])                # the two ignored entries contribute nothing
    loss = sigmoid_focal_loss(logits, target, alpha=0.25, gamma=2.0)
    assert loss.item() == pytest.approx(0.25 * math.log(2), rel=1e-6)
    # Two positives with logit ln 3 (p = 0.75): 2 * 0.25 * 0.25² * -ln 0.75, divided by 2 positives.
    logits = torch.tensor([[math.log(3), math.log(3)]])
    loss = sigmoid_focal_loss(logits, torch.tensor([[1.0, 1.0]]), alpha=0.5, gamma=1.0)
    assert loss.item() == pytest.approx(0.5 * 0.25 * -math.log(0.75), rel=1e-6)
    # No positives: the sum is divided by 1.
    loss = sigmoid_focal_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, -1.0]]))
    assert loss.item() == pytest.approx(0.75 * 0.25 * math.log(2), rel=1e-6)


def test_focal_loss_matches_torchvision_and_stays_finite_for_saturated_logits():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 289, generator=generator) * 4
    target = torch.randint(-1, 2, (3, 289), generator=generator).float()
    valid = target != -1
    expected = torchvision.ops.sigmoid_focal_loss(logits[valid], target[valid], alpha=0.25, gamma=2.0,
                                                  reduction="sum") / (target == 1).sum()
    torch.testing.assert_close(sigmoid_focal_loss(logits, target), expected)
    logits = torch.tensor([[-200.0, 200.0, 200.0, -200.0]], requires_grad=True)
    loss = sigmoid_focal_loss(logits, torch.tensor([[1.0, 0.0, 1.0, 0.0]]), gamma=0.5)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_centerness_loss_is_zero_at_the_target_and_kl_elsewhere():
    target = torch.tensor([[0.3, 0.8, 0.5, 0.0]])
    mask = torch.tensor([[True, True, True, False]])
    logits = torch.log(target / (1 - target))                      # logit(target); -inf for the masked 0
    assert centerness_loss(logits, target, mask).item() == pytest.approx(0.0, abs=1e-6)
    # target 0.5, sigmoid(ln 3) = 0.75: KL = 0.5 ln(0.5 / 0.75) + 0.5 ln(0.5 / 0.25) = 0.143841...; the mean over the
    # two masked-in entries (the other is at its optimum), the masked-out entry ignored.
    logits = torch.tensor([[math.log(3), 0.0, 9.0]])
    loss = centerness_loss(logits, torch.tensor([[0.5, 0.5, 0.2]]), torch.tensor([[True, True, False]]))
    assert loss.item() == pytest.approx((0.5 * math.log(2 / 3) + 0.5 * math.log(2)) / 2, rel=1e-6)
    empty = centerness_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2, dtype=torch.bool))
    assert empty.item() == 0.0


def test_iou_loss_by_hand():
    gt = torch.tensor([[[0.0, 0.0, 10.0, 10.0]] * 4])
    pred = torch.tensor([[[0.0, 0.0, 10.0, 10.0],      # identical: 0
                          [0.0, 0.0, 20.0, 20.0],      # 2× scaled, shared corner: IoU 100 / 400 → ln 4
                          [5.0, 0.0, 15.0, 10.0],      # half shifted: IoU 50 / 150 → ln 3
                          [30.0, 30.0, 40.0, 40.0]]])  # disjoint: IoU clamped at MIN_IOU
    mask = torch.ones(1, 4, dtype=torch.bool)
    expected = (0 + math.log(4) + math.log(3) - math.log(MIN_IOU)) / 4
    assert iou_loss(pred, gt, mask).item() == pytest.approx(expected, rel=1e-6)
    mask = torch.tensor([[True, True, False, False]])
    assert iou_loss(pred, gt, mask).item() == pytest.approx(math.log(4) / 2, rel=1e-6)


def _batch(dtype: torch.dtype):
    """Targets for a positive pair, a negative pair and a negative pair with a degenerate box, and network outputs."""
    grid = location_grid_tensor(17, 87, 8)
    boxes = torch.tensor([[120.0, 110.0, 190.0, 200.0], [100.0, 100.0, 160.0, 140.0], [0.0, 0.0, 0.0, 0.0]])
    targets = dense_box_targets(boxes, torch.tensor([False, True, True]), grid)
    generator = torch.Generator().manual_seed(1)
    raw = [torch.randn(3, 289, *shape, generator=generator).to(dtype).requires_grad_() for shape in ((), (), (4,))]
    return raw, targets, grid


def test_total_is_the_weighted_sum():
    (cls_logits, ctr_logits, raw_offsets), targets, grid = _batch(torch.float32)
    outputs = (cls_logits, ctr_logits, decode_boxes(torch.exp(raw_offsets) * 8, grid))
    total, terms = SiamFCppLoss()(outputs, targets)
    assert set(terms) == {"cls", "ctr", "iou"}
    torch.testing.assert_close(total, terms["cls"] + terms["ctr"] + 3 * terms["iou"])
    cls_target, ctr_target, box_target = targets
    positive = cls_target == 1
    torch.testing.assert_close(terms["cls"], sigmoid_focal_loss(cls_logits, cls_target))
    torch.testing.assert_close(terms["ctr"], centerness_loss(ctr_logits, ctr_target, positive))
    torch.testing.assert_close(terms["iou"], iou_loss(outputs[2], box_target, positive))
    total, _ = SiamFCppLoss(alpha=0.5, gamma=1.0, weights=(2.0, 0.5, 1.0))(outputs, targets)
    torch.testing.assert_close(total, 2 * sigmoid_focal_loss(cls_logits, cls_target, 0.5, 1.0)
                               + 0.5 * terms["ctr"] + terms["iou"])
    # the reference's (B, S*S, 1) logits are accepted
    total_3d, _ = SiamFCppLoss()((cls_logits[..., None], ctr_logits[..., None], outputs[2]), targets)
    torch.testing.assert_close(total_3d, SiamFCppLoss()(outputs, targets)[0])


def test_only_positives_train_centerness_and_boxes():
    (cls_logits, ctr_logits, raw_offsets), (cls, ctr, box), grid = _batch(torch.float32)
    outputs = (cls_logits, ctr_logits, decode_boxes(torch.exp(raw_offsets) * 8, grid))
    SiamFCppLoss()(outputs, (cls, ctr, box))[0].backward()
    negative_pairs = slice(1, 3)
    assert (ctr_logits.grad[negative_pairs] == 0).all() and (raw_offsets.grad[negative_pairs] == 0).all()
    assert (cls_logits.grad[cls == -1] == 0).all() and (cls_logits.grad[cls != -1] != 0).all()
    assert (ctr_logits.grad[0][cls[0] == 1] != 0).all()


def test_bf16_outputs_give_float32_losses_and_finite_gradients():
    (cls_logits, ctr_logits, raw_offsets), targets, grid = _batch(torch.bfloat16)
    outputs = (cls_logits, ctr_logits, decode_boxes(torch.exp(raw_offsets) * 8, grid))
    assert outputs[2].dtype == torch.bfloat16
    total, terms = SiamFCppLoss()(outputs, targets)
    assert total.dtype == torch.float32 and all(term.dtype == torch.float32 for term in terms.values())
    assert torch.isfinite(total)
    total.backward()
    for tensor in (cls_logits, ctr_logits, raw_offsets):
        assert tensor.grad.dtype == torch.bfloat16 and torch.isfinite(tensor.grad.float()).all()
