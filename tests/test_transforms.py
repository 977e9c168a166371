"""Training/evaluation transforms: shapes, normalisation, erasing fill, noise, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from data.transforms import (IMAGENET_MEAN, IMAGENET_STD, build_eval_transform, build_train_transform,
                             network_input_size, normalization)
from data.options import DataAugmentationParams

H, W = 32, 16
COLOUR = (200, 100, 50)


def aug(**kw) -> DataAugmentationParams:
    base = dict(mirror=False)
    base.update(kw)
    return DataAugmentationParams(**base)


def solid(colour=COLOUR, size=(24, 48)) -> Image.Image:
    return Image.new("RGB", size, colour)


def gradient(size=(24, 48)) -> Image.Image:
    w, h = size
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None, None]
    arr = np.concatenate([np.broadcast_to(x, (h, w, 1)), np.broadcast_to(y, (h, w, 1)),
                          np.full((h, w, 1), 128, np.float32)], axis=2)
    return Image.fromarray(arr.astype(np.uint8))


def normalised(colour, a: DataAugmentationParams) -> torch.Tensor:
    mean, std = normalization(a)
    return torch.tensor([(c / 255 - m) / s for c, m, s in zip(colour, mean, std)])


def test_network_input_size():
    assert network_input_size(256, 128, aug()) == (256, 128)
    assert network_input_size(256, 128, aug(crop_h=224, crop_w=112)) == (224, 112)


@pytest.mark.parametrize("kw, shape", [
    ({}, (3, H, W)),
    ({"padding_h": 4, "padding_w": 2, "crop_h": H, "crop_w": W}, (3, H, W)),
    ({"crop_h": 24, "crop_w": 12}, (3, 24, 12)),
    ({"mirror": True, "rotation": 10.0, "colour_jittering": True, "hue": 0.1, "gaussian_noise": True,
      "random_erasing": True, "padding_h": 3, "padding_w": 3, "crop_h": 30, "crop_w": 14}, (3, 30, 14)),
])
def test_output_shapes(kw, shape):
    a = aug(**kw)
    torch.manual_seed(0)
    out = build_train_transform(a, H, W)(gradient())
    assert type(out) is torch.Tensor and out.dtype == torch.float32 and tuple(out.shape) == shape
    ev = build_eval_transform(H, W, a)(gradient())
    assert tuple(ev.shape) == shape == (3, *network_input_size(H, W, a))


@pytest.mark.parametrize("imagenet", [True, False])
def test_value_range_and_eval_normalisation_match(imagenet):
    a = aug(imagenet_static=imagenet)
    mean, std = normalization(a)
    assert (mean, std) == ((IMAGENET_MEAN, IMAGENET_STD) if imagenet else ((0.5,) * 3, (0.5,) * 3))
    train = build_train_transform(a, H, W)(gradient())
    ev = build_eval_transform(H, W, a)(gradient())
    assert torch.equal(train, ev), "with no augmentation, training and evaluation preprocessing are identical"
    lo = torch.tensor([(0 - m) / s for m, s in zip(mean, std)])[:, None, None]
    hi = torch.tensor([(1 - m) / s for m, s in zip(mean, std)])[:, None, None]
    assert bool(((ev >= lo - 1e-6) & (ev <= hi + 1e-6)).all())
    white = build_eval_transform(H, W, a)(solid((255, 255, 255)))
    assert torch.allclose(white, hi.expand_as(white), atol=1e-6)
    colour = build_eval_transform(H, W, a)(solid())
    assert torch.allclose(colour, normalised(COLOUR, a)[:, None, None].expand_as(colour), atol=1e-5)


def _erased_mask(out: torch.Tensor, colour_value: torch.Tensor) -> torch.Tensor:
    return ~torch.isclose(out, colour_value[:, None, None].expand_as(out), atol=1e-5).all(dim=0)


def test_erasing_mean_fill_is_zero_not_black():
    a = aug(random_erasing=True, random_erasing_prob=1.0, random_erasing_fill="mean")
    t = build_train_transform(a, H, W)
    colour = normalised(COLOUR, a)
    for seed in range(5):
        torch.manual_seed(seed)
        out = t(solid())
        mask = _erased_mask(out, colour)
        assert mask.any(), "probability 1: something is erased"
        assert torch.equal(out[:, mask], torch.zeros_like(out[:, mask])), "mean fill = exactly 0 after normalisation"
        black = normalised((0, 0, 0), a)
        assert not torch.isclose(out[:, mask][:, 0], black, atol=1e-3).any(), "not black"
        rows, cols = mask.nonzero(as_tuple=True)
        box = mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert bool(box.all()), "the erased region is one rectangle"
        assert 0.02 * H * W * 0.5 <= mask.sum() <= 0.4 * H * W * 1.5


def test_erasing_random_fill_has_variance():
    a = aug(random_erasing=True, random_erasing_prob=1.0, random_erasing_fill="random")
    torch.manual_seed(1)
    out = build_train_transform(a, H, W)(solid())
    mask = _erased_mask(out, normalised(COLOUR, a))
    values = out[:, mask]
    assert values.numel() >= 3 * 8
    assert values.var() > 0.3  # ~N(0, 1)
    assert values.abs().mean() > 0.3


def test_erasing_probability_zero_and_off():
    for a in (aug(random_erasing=True, random_erasing_prob=0.0), aug(random_erasing=False)):
        assert torch.equal(build_train_transform(a, H, W)(solid()), build_eval_transform(H, W, a)(solid()))


def test_gaussian_noise_is_real_and_clamped():
    a = aug(gaussian_noise=True, gaussian_noise_std=0.05)
    torch.manual_seed(0)
    noisy = build_train_transform(a, H, W)(solid())
    clean = build_eval_transform(H, W, a)(solid())
    mean, std = normalization(a)
    diff_pixels = (noisy - clean) * torch.tensor(std)[:, None, None]
    assert 0.03 < float(diff_pixels.std()) < 0.07, "noise std is in [0, 1] pixel units"
    loud = aug(gaussian_noise=True, gaussian_noise_std=1.0)
    out = build_train_transform(loud, H, W)(solid((250, 5, 128)))
    lo = torch.tensor([(0 - m) / s for m, s in zip(mean, std)])[:, None, None]
    hi = torch.tensor([(1 - m) / s for m, s in zip(mean, std)])[:, None, None]
    assert bool(((out >= lo - 1e-5) & (out <= hi + 1e-5)).all()), "clamped to [0, 1] before normalisation"


def test_pad_and_crop_translate_with_zero_fill():
    a = aug(padding_h=6, padding_w=6, crop_h=H, crop_w=W)
    t = build_train_transform(a, H, W)
    black = normalised((0, 0, 0), a)
    saw_border = False
    for seed in range(10):
        torch.manual_seed(seed)
        out = t(solid())
        border = torch.isclose(out, black[:, None, None].expand_as(out), atol=1e-5).all(dim=0)
        saw_border |= bool(border.any())
    assert saw_border


def test_mirror_and_colour_jitter_change_the_image():
    img = gradient()
    a = aug(mirror=True)
    t = build_train_transform(a, H, W)
    outs = set()
    for seed in range(8):
        torch.manual_seed(seed)
        outs.add(t(img)[0, 0, 0].item())
    assert len(outs) == 2, "flipped or not"
    j = aug(colour_jittering=True, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2)
    torch.manual_seed(0)
    assert not torch.equal(build_train_transform(j, H, W)(img), build_eval_transform(H, W, j)(img))


def test_deterministic_under_fixed_seed():
    a = aug(mirror=True, rotation=15.0, colour_jittering=True, hue=0.1, gaussian_noise=True, random_erasing=True,
            random_erasing_prob=1.0, padding_h=4, padding_w=4, crop_h=H, crop_w=W)
    t = build_train_transform(a, H, W)
    torch.manual_seed(123)
    first = t(gradient())
    torch.manual_seed(123)
    again = t(gradient())
    torch.manual_seed(124)
    other = t(gradient())
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_transforms_are_picklable():
    import pickle

    a = aug(mirror=True, random_erasing=True, gaussian_noise=True, colour_jittering=True)
    t = pickle.loads(pickle.dumps(build_train_transform(a, H, W)))
    torch.manual_seed(0)
    x = t(gradient())
    torch.manual_seed(0)
    assert torch.equal(x, build_train_transform(a, H, W)(gradient()))
    pickle.dumps(build_eval_transform(H, W, a))
