"""Training and evaluation image transforms (PIL image → normalised float tensor C×H×W).

Training order: Resize((img_h, img_w)) → zero Pad(padding_w, padding_h) → RandomCrop(crop) → horizontal flip (p=.5)
→ rotation (±deg) → colour jitter → ToTensor → Gaussian noise (std in [0, 1] units, clamped to [0, 1]) → Normalize →
random erasing (after normalisation, so a 'mean' fill is exactly 0 and 'random' fills N(0, 1) values — never black by
accident as in the original). Evaluation: resize straight to the network input size, ToTensor, the same Normalize.

All randomness comes from torch's global RNG (the training loader seeds it per sample).
"""

from __future__ import annotations

from typing import Callable

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

from data.imaging import IMAGENET_MEAN, IMAGENET_STD
from data.options import DataAugmentationParams

ERASING_SCALE = (0.02, 0.4)
ERASING_RATIO = (0.3, 3.3)


def normalization(aug: DataAugmentationParams) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(mean, std) per RGB channel, in [0, 1] pixel units."""
    if aug.imagenet_static:
        return IMAGENET_MEAN, IMAGENET_STD
    return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def network_input_size(img_h: int, img_w: int, aug: DataAugmentationParams) -> tuple[int, int]:
    """(height, width) of the tensors the network sees: the crop if cropping, else the resize."""
    if aug.crop_h > 0 and aug.crop_w > 0:
        return aug.crop_h, aug.crop_w
    return img_h, img_w


class _PlainTensor:
    """Unwrap torchvision's tv_tensors.Image into a plain Tensor (batches are stacked and pinned as plain tensors)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.as_subclass(torch.Tensor)

    def __repr__(self) -> str:
        return "PlainTensor()"


def _to_float() -> list:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]


def build_train_transform(aug: DataAugmentationParams, img_h: int, img_w: int) -> Callable[[Image.Image], torch.Tensor]:
    steps: list = [v2.Resize((img_h, img_w), interpolation=InterpolationMode.BILINEAR, antialias=True)]
    if aug.padding_h > 0 or aug.padding_w > 0:
        steps.append(v2.Pad([aug.padding_w, aug.padding_h], fill=0, padding_mode="constant"))
    if aug.crop_h > 0 and aug.crop_w > 0:
        steps.append(v2.RandomCrop((aug.crop_h, aug.crop_w)))
    elif aug.padding_h > 0 or aug.padding_w > 0:  # padding alone: crop back to the size the network is evaluated at
        steps.append(v2.RandomCrop((img_h, img_w)))
    if aug.mirror:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    if aug.rotation > 0:
        steps.append(v2.RandomRotation(aug.rotation, interpolation=InterpolationMode.BILINEAR, fill=0))
    if aug.colour_jittering and (aug.brightness or aug.contrast or aug.saturation or aug.hue):
        steps.append(v2.ColorJitter(brightness=aug.brightness, contrast=aug.contrast, saturation=aug.saturation,
                                    hue=aug.hue))
    steps += _to_float()
    if aug.gaussian_noise and aug.gaussian_noise_std > 0:
        steps.append(v2.GaussianNoise(mean=0.0, sigma=aug.gaussian_noise_std, clip=True))
    mean, std = normalization(aug)
    steps.append(v2.Normalize(mean=list(mean), std=list(std)))
    if aug.random_erasing and aug.random_erasing_prob > 0:
        value = 0.0 if aug.random_erasing_fill == "mean" else "random"
        steps.append(v2.RandomErasing(p=aug.random_erasing_prob, scale=ERASING_SCALE, ratio=ERASING_RATIO,
                                      value=value))
    steps.append(_PlainTensor())
    return v2.Compose(steps)


def build_eval_transform(img_h: int, img_w: int, aug: DataAugmentationParams) -> Callable[[Image.Image], torch.Tensor]:
    """Deterministic: resize to the network input size, ToTensor, the training normalisation."""
    mean, std = normalization(aug)
    return v2.Compose([v2.Resize(network_input_size(img_h, img_w, aug), interpolation=InterpolationMode.BILINEAR,
                                 antialias=True),
                       *_to_float(),
                       v2.Normalize(mean=list(mean), std=list(std)),
                       _PlainTensor()])
