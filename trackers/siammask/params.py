"""params.json of the SiamMask task (``"task": "siammask"``): the engine's keys plus the network, the training pairs
(with the search frames' masks), the losses, the two-stage recipe (``stage`` base / sharp), the backbone's unfreezing
and the online tracker's hyper-parameters. Defaults are the reference's (SiamMask, ``trackers-and-got10k.md`` §3)
unless a description says otherwise.

Not available here (said where it matters): gradient-norm clipping (the reference clips at 10; the engine has no
clipping), the reference's template augmentation (shift ±4 px, scale ±5 %: the shared crops keep the template
unaugmented), motion blur, PCA colour noise and grey conversion, and the sharp stage's 143-pixel search crops (the
sharp stage trains on 255 crops here; the refine module handles both)."""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import Field, model_validator

from data.options import PairDataset, SyntheticDataParams
from engine.params import EngineParams, EvaluationParams
from engine.sections import Fraction, NonNegInt, PositiveInt, Section
from evaluate.davis_evaluate import DavisOptions
from evaluate.got10k_evaluate import Got10kOptions
from trackers.siammask.tracker import SiamMaskTrackerParams

PositiveFloat = Annotated[float, Field(gt=0.0)]
NonNegFloat = Annotated[float, Field(ge=0.0)]


class SiamMaskModelParams(Section):
    backbone: Literal["resnet18_siammask", "resnet50_siammask"] = Field(
        "resnet50_siammask", description="SiamMask's adjusted ResNet (stride 8, layer3 dilated): resnet50_siammask "
        "(the reference) or resnet18_siammask (a CPU-sized variant).")
    imagenet_pretrain: Union[bool, str] = Field(False, description="true = torchvision's ImageNet weights from the "
                                                "torch cache, a string = a path to them; a missing file stops the run "
                                                "naming the path. The reference starts from ImageNet weights.")
    adjust_channels: PositiveInt = Field(256, description="Channels of the adjust layer (the heads' input).")
    hidden: PositiveInt = Field(256, description="Width of the depth-wise correlation heads (RPN and mask).")
    refine: bool = Field(False, description="Build the refine module (the sharp variant). Required by stage sharp; "
                         "in stage base it gets no gradient (the base checkpoint of the reference lacks it).")


class SiamMaskPairSamplingParams(Section):
    batch_size: PositiveInt = Field(64, description="Pairs per step per process.")
    pairs_per_epoch: PositiveInt = Field(600_000, description="Pairs per epoch over all processes.")
    negative_ratio: Fraction = Field(0.2, description="Share of pairs whose search frame comes from another "
                                     "sequence (the sharp stage of the reference uses 0).")
    max_distance: PositiveInt = Field(20, description="Largest frame distance |search − template| of a positive pair "
                                      "(the reference's YouTube-VOS frame_range 20; ImageNet-VID 100).")
    train_subset: str = Field("train", description="Subset of `batches_dir` to train on (DAVIS list, YouTube-VOS "
                              "folder, GOT-10k subset).")
    extra_datasets: list[PairDataset] = Field([], description="Further training sets drawn with their ratio "
                                              "(batches_dir has ratio 1). Sequence sets in the DAVIS and YouTube-VOS "
                                              "layouts bring masks; the other sets train the RPN only.")
    template_size: PositiveInt = Field(127, description="Template crop side.")
    search_size: PositiveInt = Field(255, description="Search crop side (255: 25 × 25 score map).")
    context: PositiveFloat = Field(0.5, description="Context margin of the crops.")
    max_scale: NonNegFloat = Field(0.18, description="Search crop scale jitter: side × U(1/(1 + s), 1 + s) (the "
                                   "reference's ±18 %).")
    max_shift: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.5, description="Search crop shift: up to this × half the side per axis (0.5 ≈ the reference's ±64 px of a "
        "255 crop); shifts that push the box out of the crop are redrawn (data.crops.sample_search_window).")


class SiamMaskLossParams(Section):
    cls_weight: NonNegFloat = Field(1.0, description="Weight of the anchor classification loss (stage sharp: "
                                    "ignored, 0).")
    loc_weight: NonNegFloat = Field(1.2, description="Weight of the box-delta L1 loss (stage sharp: ignored, 0).")
    mask_weight: NonNegFloat = Field(36.0, description="Weight of the mask soft-margin loss.")
    positive_iou: Fraction = Field(0.6, description="Anchor IoU above which an anchor is a positive candidate.")
    negative_iou: Fraction = Field(0.3, description="Anchor IoU below which an anchor is a negative candidate.")
    max_positives: PositiveInt = Field(16, description="Positive anchors drawn per pair at most.")
    total_anchors: PositiveInt = Field(64, description="Labelled anchors per positive pair (positives + negatives).")

    @model_validator(mode="after")
    def _ordered(self) -> "SiamMaskLossParams":
        if self.negative_iou > self.positive_iou:
            raise ValueError(f"negative_iou {self.negative_iou} must not exceed positive_iou {self.positive_iou}")
        if self.max_positives > self.total_anchors:
            raise ValueError(f"max_positives {self.max_positives} must not exceed total_anchors {self.total_anchors}")
        return self


class SiamMaskEvaluationParams(EvaluationParams, DavisOptions, Got10kOptions):
    """On-the-fly evaluation: the engine's schedule keys and the options of davis_evaluate and got10k_evaluate."""

    type: Optional[str] = Field("davis_evaluate", description="Evaluator run on the fly (davis_evaluate on mask "
                                "sets, got10k_evaluate on box sets, or a tracking evaluator of your own); null = none.")


class SiamMaskParams(EngineParams):
    task: Literal["siammask"] = Field("siammask", description="SiamMask: single-object tracking with masks.")
    batches_dir: str = Field(description="Training sequences: a DAVIS or YouTube-VOS root (masks and boxes), or any "
                             "tracking set (GOT-10k, LaSOT/OTB-style, a pack): a set without masks trains without "
                             "the mask loss.")
    synthetic_data: Optional[SyntheticDataParams] = Field(None, description="Generate a synthetic dataset (type "
                                                          "davis) into `batches_dir` on first use; null = use "
                                                          "existing data.")
    evaluation_params: SiamMaskEvaluationParams = Field(default_factory=SiamMaskEvaluationParams,
                                                        description="On-the-fly evaluation (data_dir null = "
                                                        "batches_dir, subset val).")
    model_params: SiamMaskModelParams = Field(default_factory=SiamMaskModelParams, description="Network.")
    pair_sampling: SiamMaskPairSamplingParams = Field(default_factory=SiamMaskPairSamplingParams,
                                                      description="Training pairs.")
    loss_params: SiamMaskLossParams = Field(default_factory=SiamMaskLossParams, description="Losses.")
    stage: Literal["base", "sharp"] = Field("base", description="base: backbone (on schedule), adjust, RPN and mask "
                                            "branch with the weighted cls + loc + mask loss; sharp: starts from "
                                            "`base_checkpoint` and trains only the mask branch and the refine module "
                                            "on the refined masks (loss weights 0, 0, mask_weight); the rest is frozen "
                                            "(its BatchNorm statistics too).")
    base_checkpoint: Optional[str] = Field(None, description="Stage sharp: the stage-1 (base) checkpoint, e.g. "
                                           "runs/siammask_demo/model_best.pth. Loaded strictly except the refine "
                                           "module, which a base checkpoint lacks (it is loaded too when present).")
    unfreeze_epoch: NonNegInt = Field(10, description="Stage base: epoch (0-based) from which backbone layer2 and "
                                      "layer3 train at lr.base_lr (until then only the adjust layer and the heads "
                                      "train, at lr.fc_lr); with ImageNet weights the stem and layer1 never train "
                                      "(requires_grad false, BatchNorm frozen); from scratch they train with "
                                      "layer2 and layer3. The reference unfreezes at epoch 10 of 20 with the backbone "
                                      "at 0.1 × the LR: set base_lr = 0.1 × fc_lr.")
    tracker_params: SiamMaskTrackerParams = Field(default_factory=SiamMaskTrackerParams, description="Online "
                                                  "tracker.")

    @model_validator(mode="after")
    def _consistent(self) -> "SiamMaskParams":
        if self.synthetic_data is not None and self.synthetic_data.type != "davis":
            raise ValueError(f"synthetic_data.type must be 'davis' for the siammask task (found "
                             f"{self.synthetic_data.type!r})")
        sampling = self.pair_sampling
        if sampling.search_size < sampling.template_size or (sampling.search_size - sampling.template_size) % 8:
            raise ValueError(f"pair_sampling: search_size {sampling.search_size} and template_size "
                             f"{sampling.template_size} must differ by a non-negative multiple of 8 (the stride)")
        if self.tracker_params.mask_source == "refine" and not self.model_params.refine:
            raise ValueError("tracker_params.mask_source 'refine' needs model_params.refine true (or use 'base')")
        if self.stage == "sharp":
            if not self.model_params.refine:
                raise ValueError("stage sharp trains the refine module: set model_params.refine to true")
            if not self.base_checkpoint:
                raise ValueError("stage sharp needs base_checkpoint: the stage-1 (base) checkpoint to start from")
        return self
