"""params.json of the SiamFC++ task (``"task": "siamfcpp"``): the engine's keys plus the network, the training pairs,
the losses, the backbone's unfreezing schedule and the online tracker's hyper-parameters. Defaults are the reference's
(video_analyst, `../shared/reference/trackers-and-got10k.md` §1) unless a description says otherwise."""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import Field, model_validator

from data.options import PairDataset, SyntheticDataParams
from engine.params import EngineParams, EvaluationParams
from engine.sections import Fraction, NonNegInt, PositiveInt, Section
from evaluate.got10k_evaluate import Got10kOptions

BACKBONE_NAMES = ("tinyconv", "alexnet_bn", "googlenet", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0")
PositiveFloat = Annotated[float, Field(gt=0.0)]


class SiamFCppModelParams(Section):
    backbone: Literal[BACKBONE_NAMES] = Field("tinyconv", description="Backbone (total stride 8): tinyconv and "
                                              "alexnet_bn train from scratch; googlenet (pruned Inception-v3) and the "
                                              "ShuffleNetV2s can start from ImageNet weights.")
    imagenet_pretrain: Union[bool, str] = Field(False, description="googlenet / shufflenet: true = torchvision's "
                                                "ImageNet weights from the torch cache, a string = a path to them; a "
                                                "missing file stops the run naming the path.")
    head_width: PositiveInt = Field(256, description="Channels of the neck and head towers (the reference uses 64 "
                                    "with tinyconv).")
    head_conv_bn: list[bool] = Field([False, False, True], min_length=1, description="One entry per unpadded 3×3 "
                                     "tower convolution: whether it has BatchNorm (googlenet: [false, false]).")
    z_size: PositiveInt = Field(127, description="Template crop side.")
    x_size: PositiveInt = Field(303, description="Search crop side in training (googlenet: 289).")


class PairSamplingParams(Section):
    batch_size: PositiveInt = Field(32, description="Pairs per step per process.")
    pairs_per_epoch: PositiveInt = Field(400_000, description="Pairs per epoch over all processes (an epoch is a "
                                         "number of pairs, not a pass over the data).")
    negative_ratio: Fraction = Field(0.1, description="Share of pairs whose search frame comes from another "
                                     "sequence (trained as background inside its box).")
    max_distance: PositiveInt = Field(100, description="Largest frame distance |search - template| of a positive "
                                      "pair (both directions: the reference limits only the backward one).")
    train_subset: str = Field("train", description="Subset of `batches_dir` to train on.")
    extra_datasets: list[PairDataset] = Field([], description="Further training sets drawn with their ratio "
                                              "(batches_dir has ratio 1).")
    context: PositiveFloat = Field(0.5, description="Context margin of the crops (side = sqrt((w + c(w+h))(h + "
                                   "c(w+h)))).")
    max_scale: Annotated[float, Field(ge=0.0)] = Field(0.3, description="Search crop scale jitter: side × U(1/(1 + "
                                                       "s), 1 + s).")
    max_shift: Annotated[float, Field(ge=0.0, le=1.0)] = Field(0.4, description="Search crop shift: up to this × "
                                                               "half the side, per axis.")


class SiamFCppLossParams(Section):
    focal_alpha: Fraction = Field(0.25, description="Focal loss α of the classification (googlenet 0.75, "
                                  "shufflenet x1.0 0.5).")
    focal_gamma: Annotated[float, Field(ge=0.0)] = Field(2.0, description="Focal loss γ.")
    ctr_weight: Annotated[float, Field(ge=0.0)] = Field(1.0, description="Weight of the centre-ness loss.")
    iou_weight: Annotated[float, Field(ge=0.0)] = Field(3.0, description="Weight of the IoU loss.")


class UnfreezeStep(Section):
    epoch: NonNegInt = Field(description="Epoch (0-based) from which these backbone stages train.")
    stages: list[str] = Field(min_length=1, description="Backbone stage names (alexnet_bn: conv3, conv4, conv5; "
                              "googlenet: Mixed_5, Mixed_6; shufflenet: stage2, stage3, stage4).")


class SiamFCppTrackerParams(Section):
    """The online tracker (reference GOT-10k test configs)."""

    context_amount: PositiveFloat = Field(0.5, description="Context margin of the template and search crops.")
    test_lr: Fraction = Field(0.52, description="Size smoothing: new size = old·(1 − lr) + predicted·lr with lr = "
                              "penalty · score · test_lr.")
    penalty_k: Annotated[float, Field(ge=0.0)] = Field(0.04, description="Scale/ratio change penalty "
                                                       "exp(−(r·s − 1)·k).")
    window_influence: Fraction = Field(0.21, description="Weight of the cosine window in the final score.")
    x_size: PositiveInt = Field(303, description="Search crop side when tracking (googlenet tests at 303 after "
                                "training at 289).")
    min_size: PositiveFloat = Field(10.0, description="Smallest tracked width/height in pixels.")


class SiamFCppEvaluationParams(EvaluationParams, Got10kOptions):
    """On-the-fly evaluation: the engine's schedule keys and got10k_evaluate's options."""

    type: Optional[str] = Field("got10k_evaluate", description="Evaluator run on the fly (got10k_evaluate, or a "
                                "tracking evaluator of your own); null = none.")


class SiamFCppParams(EngineParams):
    task: Literal["siamfcpp"] = Field("siamfcpp", description="SiamFC++ single-object tracking.")
    batches_dir: str = Field(description="Training sequences: a GOT-10k root (its `train_subset` is used), a "
                             "LaSOT/OTB-style root, or a pack made by `python -m data.pack`.")
    synthetic_data: Optional[SyntheticDataParams] = Field(None, description="Generate a synthetic dataset (type "
                                                          "got10k) into `batches_dir` on first use; null = use "
                                                          "existing data.")
    evaluation_params: SiamFCppEvaluationParams = Field(default_factory=SiamFCppEvaluationParams,
                                                        description="On-the-fly evaluation (data_dir null = "
                                                        "batches_dir, subset val).")
    model_params: SiamFCppModelParams = Field(default_factory=SiamFCppModelParams, description="Network.")
    pair_sampling: PairSamplingParams = Field(default_factory=PairSamplingParams, description="Training pairs.")
    loss_params: SiamFCppLossParams = Field(default_factory=SiamFCppLossParams, description="Losses.")
    unfreeze: list[UnfreezeStep] = Field([], description="Scheduled unfreezing: each listed backbone stage trains "
                                         "from its epoch (LR 0 before); unlisted parameters train from the start.")
    tracker_params: SiamFCppTrackerParams = Field(default_factory=SiamFCppTrackerParams, description="Online "
                                                  "tracker.")

    @model_validator(mode="after")
    def _consistent(self) -> "SiamFCppParams":
        if self.synthetic_data is not None and self.synthetic_data.type != "got10k":
            raise ValueError(f"synthetic_data.type must be 'got10k' for the siamfcpp task (found "
                             f"{self.synthetic_data.type!r})")
        model = self.model_params
        if model.x_size < model.z_size or self.tracker_params.x_size < model.z_size:
            raise ValueError(f"search crops (model_params.x_size {model.x_size}, tracker_params.x_size "
                             f"{self.tracker_params.x_size}) must not be smaller than the template (z_size "
                             f"{model.z_size})")
        return self
