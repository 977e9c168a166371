"""Box conventions (data.boxes) and crop geometry (data.crops) on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data.boxes import (clip_xywh, cxcywh_to_xywh, cxcywh_to_xyxy, is_valid_xywh, xywh_to_cxcywh, xywh_to_xyxy,
                        xyxy_to_cxcywh, xyxy_to_xywh)
from data.crops import (CropWindow, channel_mean, context_side, crop_image, crop_to_frame, frame_to_crop,
                        sample_search_window, template_window)

BOX = [10.0, 20.0, 30.0, 40.0]  # xywh: right edge 40, bottom 60, centre (25, 40)


# ----------------------------------------------------------------------------------------------------- boxes

def test_conversions_on_a_hand_box():
    assert xywh_to_xyxy(BOX).tolist() == [10, 20, 40, 60]
    assert xyxy_to_xywh([10, 20, 40, 60]).tolist() == BOX
    assert xywh_to_cxcywh(BOX).tolist() == [25, 40, 30, 40]
    assert cxcywh_to_xywh([25, 40, 30, 40]).tolist() == BOX
    assert xyxy_to_cxcywh([10, 20, 40, 60]).tolist() == [25, 40, 30, 40]
    assert cxcywh_to_xyxy([25, 40, 30, 40]).tolist() == [10, 20, 40, 60]


def test_conversions_are_vectorised_float64_and_reject_bad_shapes():
    boxes = np.array([[BOX, [0, 0, 1, 1]]], dtype=np.int32)  # shape (1, 2, 4)
    out = xywh_to_xyxy(boxes)
    assert out.shape == (1, 2, 4) and out.dtype == np.float64
    assert out[0, 1].tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError):
        xywh_to_xyxy([1, 2, 3])


finite = st.floats(-1e4, 1e4, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(finite, min_size=4, max_size=4))
def test_round_trips(box):
    np.testing.assert_allclose(xyxy_to_xywh(xywh_to_xyxy(box)), box, rtol=0, atol=1e-8)
    np.testing.assert_allclose(cxcywh_to_xywh(xywh_to_cxcywh(box)), box, rtol=0, atol=1e-8)
    np.testing.assert_allclose(xyxy_to_cxcywh(cxcywh_to_xyxy(box)), box, rtol=0, atol=1e-8)
    np.testing.assert_allclose(cxcywh_to_xyxy(xywh_to_cxcywh(box)), xywh_to_xyxy(box), rtol=0, atol=1e-8)


def test_is_valid_xywh():
    boxes = [BOX, [0, 0, 0, 5], [0, 0, 5, -1], [np.nan, 0, 1, 1], [0, 0, np.inf, 1]]
    assert is_valid_xywh(boxes).tolist() == [True, False, False, False, False]


def test_clip_hand_cases():
    boxes = [
        [10, 10, 20, 20],     # inside: unchanged
        [-10, 90, 30, 30],    # partly outside (left, bottom): the visible part
        [150, -50, 10, 10],   # entirely outside (right, top): min_size box at the nearest border
        [50.0, 50.0, 0.2, 0.0],  # too small: grown to min_size about its centre (50.1, 50)
        [99.8, 0.1, 0.1, 0.1],   # too small at the border: grown, then slid inside
    ]
    out = clip_xywh(boxes, width=100, height=100, min_size=1.0)
    np.testing.assert_allclose(out, [[10, 10, 20, 20], [0, 90, 20, 10], [99, 0, 1, 1], [49.6, 49.5, 1, 1],
                                     [99, 0, 1, 1]], rtol=0, atol=1e-12)


def test_clip_non_finite_and_min_size_larger_than_the_frame():
    out = clip_xywh([[np.nan, 0, 5, 5], [0, 0, np.inf, 5], [-np.inf, 0, np.inf, 5]], width=64, height=48)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, [[0, 0, 64, 48]] * 3)
    np.testing.assert_array_equal(clip_xywh([1, 1, 2, 2], width=8, height=4, min_size=10), [0, 0, 8, 4])
    with pytest.raises(ValueError):
        clip_xywh(BOX, width=0, height=10)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(-500, 500), min_size=4, max_size=4), st.floats(1, 300), st.floats(1, 300),
       st.floats(0.5, 20))
def test_clip_always_gives_a_valid_box_inside(box, width, height, min_size):
    x, y, w, h = clip_xywh(box, width, height, min_size)
    assert is_valid_xywh([x, y, w, h])
    eps = 1e-9 * max(width, height)
    assert x >= 0 and y >= 0 and x + w <= width + eps and y + h <= height + eps
    assert w >= min(min_size, width) - eps and h >= min(min_size, height) - eps


# ----------------------------------------------------------------------------------------------------- windows

def test_context_side():
    assert context_side(10, 20) == pytest.approx(math.sqrt(25 * 35))
    np.testing.assert_allclose(context_side([10, 4], [20, 4], context=0.0), [math.sqrt(200), 4])


def test_window_properties_and_validation():
    window = CropWindow(cx=50, cy=40, side=20, out_size=10)
    assert (window.scale, window.x0, window.y0) == (0.5, 40, 30)
    with pytest.raises(ValueError):
        CropWindow(0, 0, 0, 10)
    with pytest.raises(ValueError):
        CropWindow(0, 0, 1, 0)


def test_frame_to_crop_hand_case_and_inverse():
    window = CropWindow(cx=50, cy=40, side=20, out_size=10)
    assert frame_to_crop([45, 35, 10, 10], window).tolist() == [2.5, 2.5, 5, 5]
    assert crop_to_frame([2.5, 2.5, 5, 5], window).tolist() == [45, 35, 10, 10]
    boxes = np.random.default_rng(0).uniform(-100, 100, size=(3, 5, 4))
    odd = CropWindow(cx=17.3, cy=-4.1, side=33.7, out_size=127)
    np.testing.assert_allclose(crop_to_frame(frame_to_crop(boxes, odd), odd), boxes, rtol=0, atol=1e-10)


# ----------------------------------------------------------------------------------------------------- crop_image

def coordinate_image(height: int = 40, width: int = 50) -> np.ndarray:
    """uint8 image with channel 0 = column index, channel 1 = row index, channel 2 = 7."""
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([xs, ys, np.full_like(xs, 7)], axis=-1).astype(np.uint8)


def test_crop_scale_one_integer_offset_is_a_slice():
    image = coordinate_image()
    window = CropWindow(cx=20 + 8, cy=5 + 8, side=16, out_size=16)  # x0 = 20, y0 = 5
    out = crop_image(image, window)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, image[5:21, 20:36])


def test_crop_scale_two_matches_bilinear_at_pixel_centres():
    image = coordinate_image().astype(np.float32)
    window = CropWindow(cx=14, cy=13, side=8, out_size=16)  # x0 = 10, y0 = 9, scale 2
    out = crop_image(image, window)
    assert out.shape == (16, 16, 3) and out.dtype == np.float32
    # output pixel j has centre j + 0.5 -> frame x = 10 + (j + 0.5)/2 -> pixel-index value x - 0.5 (linear image)
    j = np.arange(16)
    np.testing.assert_allclose(out[0, :, 0], 10 + (j + 0.5) / 2 - 0.5, atol=1e-4)
    np.testing.assert_allclose(out[:, 0, 1], 9 + (j + 0.5) / 2 - 0.5, atol=1e-4)
    np.testing.assert_allclose(out[..., 2], 7, atol=1e-4)


@pytest.mark.parametrize("border, expected", [("zero", (0, 0, 0)), ((1, 2, 3), (1, 2, 3)), ("mean", None)])
def test_out_of_frame_area_has_the_border_colour(border, expected):
    image = coordinate_image()
    if expected is None:
        expected = channel_mean(image)
        assert channel_mean(image) == pytest.approx((24.5, 19.5, 7))
    window = CropWindow(cx=0, cy=0, side=40, out_size=40)  # frame [-20, 20]²: the top-left quarter is outside
    out = crop_image(image, window, border=border)
    assert out.dtype == np.uint8
    outside = out[:20, :20].astype(np.float64)  # output pixel j samples source index j - 20: border only for j < 20
    assert np.abs(outside - np.asarray(expected, np.float64)).max() <= 0.5  # uint8 rounding of the mean
    np.testing.assert_array_equal(out[20:, 20:], image[:20, :20])


def test_crop_image_rejects_bad_inputs():
    window = CropWindow(0, 0, 4, 4)
    with pytest.raises(ValueError):
        crop_image(np.zeros((4, 4), np.uint8), window)
    with pytest.raises(ValueError):
        crop_image(np.zeros((4, 4, 3), np.uint8), window, border="edge")


# ----------------------------------------------------------------------------------------------------- sampling

def test_template_window_is_centred_context_square():
    window = template_window([10, 20, 10, 20])
    assert (window.cx, window.cy, window.out_size) == (15, 30, 127)
    assert window.side == pytest.approx(math.sqrt(25 * 35))
    np.testing.assert_allclose(xywh_to_cxcywh(frame_to_crop([10, 20, 10, 20], window))[:2], [63.5, 63.5])


def test_search_window_box_is_inside_and_consistent():
    box = np.array([100.0, 80.0, 40.0, 30.0])
    base_side = context_side(40, 30) * 303 / 127
    scales, shifts = [], []
    for seed in range(300):
        window, in_crop = sample_search_window(np.random.default_rng(seed), box)
        np.testing.assert_array_equal(in_crop, frame_to_crop(box, window))
        assert (in_crop[:2] >= 0).all() and (in_crop[:2] + in_crop[2:] <= 303).all()
        scales.append(window.side / base_side)
        shifts.append((np.array([120.0, 95.0]) - [window.cx, window.cy]) / (window.side / 2))
    scales, shifts = np.array(scales), np.abs(np.array(shifts))
    assert scales.min() >= 1 / 1.3 - 1e-12 and scales.max() <= 1.3 + 1e-12
    assert scales.min() < 0.8 and scales.max() > 1.25  # the whole range is used
    assert shifts.max() <= 0.4 + 1e-12 and shifts.max() > 0.35


def test_search_window_is_deterministic_given_the_seed():
    box = [5.0, 6.0, 20.0, 10.0]
    first = sample_search_window(np.random.default_rng(7), box)
    second = sample_search_window(np.random.default_rng(7), box)
    assert first[0] == second[0]
    np.testing.assert_array_equal(first[1], second[1])
    assert sample_search_window(np.random.default_rng(8), box)[0] != first[0]


def test_search_window_falls_back_to_the_centred_base_window():
    # context 0, square box, search/template = 64/127: even at the largest crop (1.3 x base side) the box is
    # 127/1.3 > 64 crop pixels wide, so every try fails.
    box = [10.0, 20.0, 30.0, 30.0]
    window, in_crop = sample_search_window(np.random.default_rng(0), box, context=0.0, template_size=127,
                                           search_size=64)
    assert window == CropWindow(25.0, 35.0, 30.0 * 64 / 127, 64)
    np.testing.assert_allclose(in_crop, [-31.5, -31.5, 127, 127], rtol=0, atol=1e-9)
    no_tries, _ = sample_search_window(np.random.default_rng(0), BOX, tries=0)
    assert no_tries == CropWindow(25.0, 40.0, float(context_side(30, 40)) * 303 / 127, 303)
    with pytest.raises(ValueError):
        sample_search_window(np.random.default_rng(0), [0, 0, 0, 5])
