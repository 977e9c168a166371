"""The data options a task composes into its params: batch composition, training augmentation and the synthetic
dataset to generate. Typed sections (`engine.sections`), no heavy imports (``start_train`` parses params without
loading torch)."""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import AliasChoices, Field, model_validator

from engine.sections import Fraction, NonNegInt, PositiveInt, Section

# A random crop smaller than this share of the resized image trains on parts of the person while evaluation sees the
# whole person; resize-then-crop recipes (torchreid's Random2DTranslation: 1/1.125 = 89 %) stay above it.
MIN_CROP_FRACTION = 0.8
PositiveFloat = Annotated[float, Field(gt=0.0)]


class BatchSamplingParams(Section):
    class_balanced: bool = Field(True, description="true: P×K identity-balanced batches (P identities × K images); "
                                 "false: plain shuffled batches of `batch_size`.")
    P: PositiveInt = Field(16, description="Identities per batch when `class_balanced` is true.")
    K: PositiveInt = Field(4, description="Images per identity when `class_balanced` is true; identities with fewer "
                           "than K images are drawn with replacement.")
    batch_size: PositiveInt = Field(64, description="Batch size per process when `class_balanced` is false; also the "
                                    "default evaluation batch size.")
    softmax_only: bool = Field(False, description="Accepted for compatibility with the original params.json, where it "
                               "had no effect; it has none here either.")


class DataAugmentationParams(Section):
    padding_h: NonNegInt = Field(0, description="Zero padding added above and below before the random crop (pixels).")
    padding_w: NonNegInt = Field(0, description="Zero padding added left and right before the random crop (pixels).")
    crop_h: NonNegInt = Field(0, description="Random crop height, at least 80 % of img_h (the network sees the crop in "
                              "training and whole images resized to it in evaluation); 0 = img_h when padding is set "
                              "(pad + random crop, the translation augmentation), else no crop.")
    crop_w: NonNegInt = Field(0, description="Random crop width, at least 80 % of img_w; 0 = img_w when padding is set, "
                              "else no crop.")
    mirror: bool = Field(True, description="Random horizontal flip with probability 0.5.")
    rotation: Annotated[float, Field(ge=0.0, le=180.0)] = Field(
        0.0, description="Random rotation in ±`rotation` degrees; 0 = off.")
    random_erasing: bool = Field(False, description="Random erasing (Zhong et al.) of one rectangle per image.")
    random_erasing_prob: Fraction = Field(0.5, description="Probability that an image is erased.")
    random_erasing_fill: Literal["mean", "random"] = Field(
        "random", description="Fill of the erased rectangle: the normalisation mean (a 0 after normalisation) or "
        "per-pixel random values. The original filled black by accident; neither choice here does.")
    colour_jittering: bool = Field(False, validation_alias=AliasChoices("colour_jittering", "colour_jitering",
                                                                        "colour_jiterring"),
                                   description="Colour jitter (brightness, contrast, saturation, hue). Accepted under "
                                   "the original spellings `colour_jitering` and `colour_jiterring` too.")
    brightness: Annotated[float, Field(ge=0.0)] = Field(0.1, description="Colour jitter brightness factor range.")
    contrast: Annotated[float, Field(ge=0.0)] = Field(0.1, description="Colour jitter contrast factor range.")
    saturation: Annotated[float, Field(ge=0.0)] = Field(0.1, description="Colour jitter saturation factor range.")
    hue: Annotated[float, Field(ge=0.0, le=0.5)] = Field(0.0, description="Colour jitter hue shift range (≤ 0.5).")
    gaussian_noise: bool = Field(False, description="Add Gaussian pixel noise. Off by default (the original turned a "
                                 "broken no-op version on when the key was missing).")
    gaussian_noise_std: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.02, description="Standard deviation of the Gaussian noise, in units of the [0, 1] pixel range.")
    imagenet_static: bool = Field(True, description="Normalise with ImageNet mean/std; false: mean = std = 0.5. "
                                  "Training and evaluation always share this normalisation and the resize.")

    @model_validator(mode="after")
    def _crop_pairs(self) -> "DataAugmentationParams":
        if (self.crop_h == 0) != (self.crop_w == 0):
            raise ValueError(f"crop_h and crop_w must both be 0 (no crop) or both > 0; found crop_h={self.crop_h}, "
                             f"crop_w={self.crop_w}")
        return self


class SyntheticDataParams(Section):
    type: Literal["market", "classes", "got10k", "alov", "imagenet_det", "davis", "vot"] = Field(
        description="Which synthetic dataset to generate into `batches_dir` if it does not exist yet: market "
        "(re-ID), classes (classification), got10k (tracking: train/ and val/ subsets), alov (tracking: "
        "ALOV300++ videos, images/ and gt/*.ann), imagenet_det (still images: ImageNet DET, images/ and "
        "gt/*.xml), davis (segmentation: DAVIS 2017 videos with palette PNG masks, ImageSets/2017/train.txt and "
        "val.txt) or vot (tracking: VOT sequences with rotated-rectangle ground truth).")
    seed: NonNegInt = Field(0, description="Generator seed; the same seed gives byte-identical files.")
    options: dict[str, Union[int, float, str, bool]] = Field(
        default_factory=dict, description="Overrides of the generator spec (see `python -m data.synthetic --help`).")


class PairDataset(Section):
    """A further training set of a tracking task (`data.tracking_sets`)."""

    path: str = Field(description="Sequences (GOT-10k root, LaSOT/OTB-style root, ALOV300++ root or a pack), a "
                      "COCO-style detection set (type coco) or an ImageNet DET root (type imagenet_det: images/ and "
                      "gt/ with VOC XML).")
    type: Literal["sequences", "coco", "imagenet_det"] = Field("sequences", description="sequences: video pairs; "
                                                               "coco, imagenet_det: still images as same-frame "
                                                               "pairs.")
    subset: Optional[str] = Field(None, description="GOT-10k subset / LaSOT list / COCO split (unused by ALOV and "
                                  "ImageNet DET).")
    ratio: PositiveFloat = Field(1.0, description="Relative share of the pairs drawn from this set.")
