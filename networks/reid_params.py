"""params.json of the re-ID and classification tasks: the engine's keys (`engine.params.EngineParams`) plus the
data, model, loss and method sections, with the checks that refuse combinations that cannot train. No heavy
imports: ``start_train`` parses params without loading torch."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Optional, Union

from pydantic import AliasChoices, Field, field_validator, model_validator

from data.options import MIN_CROP_FRACTION, BatchSamplingParams, DataAugmentationParams, SyntheticDataParams
from engine.params import EngineParams, EvaluationParams
from evaluate.market_evaluate import MarketOptions
from engine.sections import Fraction, NonNegInt, PositiveInt, Section

RESNET_NAMES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


class ModelParams(Section):
    model: str = Field("resnet50", description="Backbone: resnet18, resnet34, resnet50, resnet101 or resnet152 (the "
                       "seed spelling resnet_50 is accepted).")
    feature_dim: PositiveInt = Field(256, description="Width of the embedding (re-ID descriptor without PCB). With PCB "
                                     "it is the total width of all parts: each of the `pcb_n_parts` parts gets "
                                     "feature_dim / pcb_n_parts channels, so it must be divisible by pcb_n_parts.")
    last_conv_stride: Literal[1, 2] = Field(1, description="Stride of the last ResNet stage (1 doubles the final map).")
    dropout: Fraction = Field(0.5, description="Dropout before every classifier (after the embedding BN; training "
                              "only).")
    pooling: Literal["avg", "max"] = Field("avg", description="Pooling of the last feature map (global embedding, PCB "
                                           "stripes and the PCB global branch alike).")
    pcb_n_parts: NonNegInt = Field(
        0, description="PCB: number of horizontal stripes of the last feature map; 0 = single global embedding. "
        "Stripe i covers rows [round(i·H/n), round((i+1)·H/n)) (rounding half up) of the H-row map, so uneven heights "
        "differ by at most one row and every stripe has ≥ 1 row; H = ceil(input height / (16·last_conv_stride)) must "
        "be ≥ pcb_n_parts (refused at load time otherwise). Each stripe: pool → 1×1 conv (feature_dim / n channels) → "
        "BN → dropout → its own classifier. Test descriptor = the parts' BN outputs concatenated (then the global "
        "branch's, if any): feature_dim + feature_global_dim values.")
    pcb_triplet_features: Literal["parts", "global", "both"] = Field(
        "both", description="PCB: which pre-BN features the triplet loss sees: the concatenated parts, the global "
        "branch, or both (two triplet terms summed; as the original code). \"both\" without a global branch means the "
        "parts only; \"global\" needs feature_global_dim > 0. Without PCB the triplet loss always sees the embedding.")
    random_drop_branchs: NonNegInt = Field(
        0, description="PCB 'update each branch randomly': each step draws this many head indices uniformly with "
        "replacement from the part heads and the global head, and leaves the drawn heads out of the classification "
        "sum (one random head is kept if all were drawn; uses torch's global RNG, so it is seeded and resumes "
        "exactly). Spectral heads are not dropped. 0 = off; needs pcb_n_parts > 0.")
    spectral_trans: Annotated[float, Field(ge=0.0)] = Field(
        0.0, description="Training-time spectral feature transform (arXiv 1811.11405), temperature T; 0 = off. Within "
        "the batch, A = row-softmax(F̂F̂ᵀ/T) of the L2-normalised classifier inputs of all heads concatenated (the "
        "same row normalisation as the test-time refinement); every head's classifier also scores its A·F features "
        "and that cross-entropy is added (one extra head per head). Works with and without PCB.")
    spectral_start_accuracy: Fraction = Field(
        0.0, description="Gate of the spectral heads' loss: it is added only in steps whose batch accuracy (mean "
        "top-1 over the ordinary heads, computed in the same step) is ≥ this value; 0 = always (the original used a "
        "hidden 0.9 on a stale logged accuracy). A pure function of the current batch: nothing to save or resume.")
    feature_mask: bool = Field(
        False, description="Learned channel mask sigmoid(BN(Linear(avg-pooled trunk map))) multiplying the pre-BN "
        "embedding (the concatenated parts with PCB; not the PCB global branch), in training and evaluation alike, so "
        "the triplet features, the classifiers and the test descriptor all see the masked embedding (the original "
        "masked only the PCB triplet features).")
    feature_erasing_ratio: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        0.0, description="Feature erasing (training only): per sample, zero one random horizontal band of "
        "int(ratio·H) rows of the last feature map before pooling; 0 = off.")
    feature_global_dim: NonNegInt = Field(0, validation_alias=AliasChoices("feature_global_dim", "feature_gobal_dim"),
                                          description="PCB global branch at stage 4: pool → Linear → BN → dropout → "
                                          "its own classifier, this wide (seed spelling `feature_gobal_dim` "
                                          "accepted); 0 = none. Only with pcb_n_parts > 0.")

    @field_validator("model", mode="before")
    @classmethod
    def _model_name(cls, name: Any) -> Any:
        if isinstance(name, str):
            canonical = name.lower().replace("_", "").replace("-", "")
            if canonical not in RESNET_NAMES:
                raise ValueError(f"expected one of {', '.join(RESNET_NAMES)} (resnet_50 style accepted); found {name!r}")
            return canonical
        return name

    @property
    def methods_on(self) -> list[str]:
        """The re-ID method switches that are on, as 'key=value' (empty for a plain embedding network)."""
        switches = {"pcb_n_parts": self.pcb_n_parts, "feature_global_dim": self.feature_global_dim,
                    "random_drop_branchs": self.random_drop_branchs, "spectral_trans": self.spectral_trans,
                    "feature_mask": self.feature_mask, "feature_erasing_ratio": self.feature_erasing_ratio}
        return [f"{key}={value!r}" for key, value in switches.items() if value]


class TriLossParams(Section):
    margin: Union[Annotated[float, Field(ge=0.0)], Literal["soft_margin"]] = Field(
        0.0, description="Batch-hard triplet margin; \"soft_margin\" for the soft-margin form; 0 = triplet off.")
    use_adaptive_weight: bool = Field(False, description="Softmax-weighted positives / softmin-weighted negatives "
                                      "instead of the hardest ones.")
    lambda_tri: Annotated[float, Field(ge=0.0)] = Field(1.0, description="Weight of the triplet term.")
    lambda_cls: Annotated[float, Field(ge=0.0)] = Field(1.0, description="Weight of the classification term; 0 trains "
                                                        "with the triplet loss alone.")

    @property
    def enabled(self) -> bool:
        return self.lambda_tri > 0 and (self.margin == "soft_margin" or self.margin > 0)


class AsoftmaxParams(Section):
    margin: Union[Annotated[float, Field(ge=0.0, lt=1.0)], list[Annotated[float, Field(ge=0.0, lt=1.0)]]] = Field(
        0.0, description="AM-softmax margin m, or a schedule [m0, m1, …]: m_k is used from global iteration k·`step` "
        "on (the last entry stays). 0 (or all zeros) = plain linear classifiers. When on, every classifier (PCB parts, "
        "global branch and spectral heads alike) gives logits s·(cosθ_j − m·[j = y]) with L2-normalised weights and "
        "features (the standard form; the margin is applied by the loss, so the accuracy is measured on s·cosθ). The "
        "original's variant s·‖x‖·((1+m)cosθ − m) is not offered. Evaluation and ONNX export do not use the "
        "classifier.")
    step: PositiveInt = Field(30000, description="Global iterations per entry of a margin schedule.")
    scale: Annotated[float, Field(ge=0.0)] = Field(30.0, description="AM-softmax scale s; must be > 0 when the margin "
                                                   "is on (the original's unscaled s = 0 variant is not offered).")
    unlabel_fold: NonNegInt = Field(0, description="GAN-only key of the original; must stay 0.")
    unlabel_update: NonNegInt = Field(0, description="GAN-only key of the original; must stay 0.")

    @field_validator("margin")
    @classmethod
    def _schedule_not_empty(cls, margin: Any) -> Any:
        if isinstance(margin, list) and not margin:
            raise ValueError("a margin schedule needs at least one entry; found []")
        return margin

    @model_validator(mode="after")
    def _scale_when_on(self) -> "AsoftmaxParams":
        if self.enabled and self.scale <= 0:
            raise ValueError("the AM-softmax margin is on, so scale must be > 0; the original's unscaled scale-0 variant is not "
                             "offered")
        return self

    @property
    def enabled(self) -> bool:
        return any(m > 0 for m in self.margin) if isinstance(self.margin, list) else self.margin > 0

    def margin_at(self, global_step: int) -> float:
        """The margin in force at `global_step` (0-based global iteration)."""
        if not isinstance(self.margin, list):
            return float(self.margin)
        return float(self.margin[min(max(int(global_step), 0) // self.step, len(self.margin) - 1)])


class DistillationParams(Section):
    teacher_checkpoint: str = Field(
        "", description="Knowledge distillation: a checkpoint of this tool (e.g. RUN/model_best.pth of a resnet101 "
        "run trained with a params file of this format) whose model teaches this one; empty = off. The teacher is "
        "rebuilt from the params stored in the checkpoint, loaded strictly, kept in eval mode without gradients and is "
        "not saved in this run's checkpoints. Recipe: train the teacher, then point the student's params here.")
    temperature: Annotated[float, Field(gt=0.0)] = Field(
        4.0, description="Softmax temperature T of the logit loss (the loss is multiplied by T²).")
    logit_weight: Annotated[float, Field(ge=0.0)] = Field(
        1.0, description="Weight of the logit loss between the teacher's and the student's class distributions, each "
        "network's heads' logits averaged (PCB parts and global branch; spectral heads excluded), so any two "
        "architectures compare and the loss is 0 when student = teacher. Needs the teacher trained on the same "
        "identities (same number and names of classes). 0 = off.")
    logit_loss: Literal["kl", "js"] = Field(
        "kl", description="kl: T²·KL(teacher ‖ student); js: T²·Jensen-Shannon divergence (symmetric, bounded).")
    feature_weight: Annotated[float, Field(ge=0.0)] = Field(
        0.0, description="Weight of the feature loss between the student's and the teacher's full pre-BN features "
        "(the triplet-form features; with PCB all parts and the global branch). 0 = off.")
    feature_loss: Literal["similarity", "cosine"] = Field(
        "similarity", description="similarity: mean squared difference of the batch cosine-similarity matrices "
        "(any widths: no projection needed); cosine: mean (1 − cos) between each image's student and teacher features "
        "(the widths must be equal).")

    @property
    def enabled(self) -> bool:
        return bool(self.teacher_checkpoint)


class GanParams(Section):
    input_dim: Literal[0] = Field(0, description="The GAN person generator (seed: 'unstable') is not supported; "
                                  "must be 0.")
    batch_size: PositiveInt = Field(128, description="Ignored (GAN unsupported).")
    adv_train: Literal[False] = Field(False, description="Must be false (GAN unsupported).")
    alone_train: Literal[False] = Field(False, description="Must be false (GAN unsupported).")
    lr: Annotated[float, Field(gt=0.0)] = Field(2e-4, description="Ignored (GAN unsupported).")
    beta1: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(0.0, description="Ignored (GAN unsupported).")
    ngf: PositiveInt = Field(64, description="Ignored (GAN unsupported).")
    ndf: PositiveInt = Field(32, description="Ignored (GAN unsupported).")
    preheating: Literal[0] = Field(0, description="Must be 0 (GAN unsupported).")
    pretrain_snapshot_g: Literal[""] = Field("", description="Must be empty (GAN unsupported).")
    pretrain_snapshot_d: Literal[""] = Field("", description="Must be empty (GAN unsupported).")
    d_update_freq: Fraction = Field(1.0, description="Ignored (GAN unsupported).")


class ReidEvaluationParams(EvaluationParams, MarketOptions):
    """The re-ID task's evaluation section: the engine's schedule keys and market_evaluate's options
    (classification_evaluate has none)."""


class ReidParams(EngineParams):
    """params.json of the re-ID and classification tasks."""

    # the seed README's top-level spellings, folded into tri_loss_params when parsed (not written back out)
    LEGACY_KEYS: ClassVar[tuple[str, ...]] = ("tri_loss_margin", "tri_loss_lambda_cls")

    task: Literal["reid", "classification"] = Field("reid", description="What is trained: re-ID (identity classes, "
                                                    "P×K sampling, triplet) or plain image classification.")
    evaluation_params: ReidEvaluationParams = Field(default_factory=ReidEvaluationParams,
                                                    description="On-the-fly evaluation.")
    batches_dir: str = Field(description="Training data: a Market-1501 root (its bounding_box_train/ is used), one "
                             "folder per identity/class, or an LMDB pack made by `python -m data.pack`.")
    synthetic_data: Optional[SyntheticDataParams] = Field(None, description="Generate a synthetic dataset into "
                                                          "`batches_dir` on first use; null = use existing data.")
    img_h: PositiveInt = Field(256, description="Input height after resize (training and evaluation).")
    img_w: PositiveInt = Field(128, description="Input width after resize (training and evaluation).")
    batch_sampling_params: BatchSamplingParams = Field(default_factory=BatchSamplingParams,
                                                       description="Batch composition.")
    data_augmentation: DataAugmentationParams = Field(default_factory=DataAugmentationParams,
                                                      description="Training augmentations.")
    model_params: ModelParams = Field(default_factory=ModelParams, description="Network structure.")
    tri_loss_params: TriLossParams = Field(default_factory=TriLossParams, description="Triplet loss.")
    asoftmax_params: AsoftmaxParams = Field(default_factory=AsoftmaxParams, description="AM-softmax classifier.")
    distillation_params: DistillationParams = Field(default_factory=DistillationParams,
                                                    description="Knowledge distillation from a teacher checkpoint.")
    gan_params: GanParams = Field(default_factory=GanParams, description="Accepted for compatibility; the GAN "
                                  "generator is not supported.")
    focal_loss: bool = Field(False, description="Focal loss (γ = `focal_gamma`) instead of cross-entropy.")
    focal_gamma: Annotated[float, Field(ge=0.0)] = Field(2.0, description="Focal loss γ.")
    label_smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(0.0, description="Cross-entropy label smoothing ε.")
    imagenet_pretrain: Union[bool, str] = Field(
        False, description="true: load torchvision's ImageNet weights from the torch cache "
        "($TORCH_HOME/hub/checkpoints); a string: path to such a .pth file. Missing weights stop the run with an "
        "error saying where to put the file (never a silent random init).")
    pretrain_snapshot: str = Field("", description="Checkpoint of this tool (or a bare state dict) to initialise the "
                                   "model from; empty = none. A missing file is an error.")
    fine_tune: bool = Field(False, description="Freeze the backbone's weights and its BatchNorm statistics; train the "
                            "rest.")
    tri_loss_margin: Optional[Union[Annotated[float, Field(ge=0.0)], Literal["soft_margin"]]] = Field(
        None, description="Seed README spelling of tri_loss_params.margin (both given and different is an error).")
    tri_loss_lambda_cls: Optional[Annotated[float, Field(ge=0.0)]] = Field(
        None, description="Seed README spelling of tri_loss_params.lambda_cls.")

    @model_validator(mode="after")
    def _consistent(self) -> "ReidParams":
        tri = self.tri_loss_params
        updates = {}
        for legacy, field in (("tri_loss_margin", "margin"), ("tri_loss_lambda_cls", "lambda_cls")):
            value = getattr(self, legacy)
            if value is None:
                continue
            if field in tri.model_fields_set and getattr(tri, field) != value:
                raise ValueError(f"{legacy}={value!r} contradicts tri_loss_params.{field}={getattr(tri, field)!r}")
            updates[field] = value
        if updates:
            object.__setattr__(self, "tri_loss_params", tri.model_copy(update=updates))
        _check_combinations(self)
        return self


def _check_combinations(p: ReidParams) -> None:
    """Refuse option combinations that cannot train, or switches that would silently do nothing, at load time, with
    the reason."""
    tri = p.tri_loss_params
    if tri.enabled and not p.batch_sampling_params.class_balanced:
        raise ValueError("the triplet loss needs identity-balanced batches: set batch_sampling_params.class_balanced "
                         "to true or tri_loss_params.margin to 0")
    if tri.enabled and p.batch_sampling_params.K < 2:
        raise ValueError("the triplet loss needs at least 2 images per identity: batch_sampling_params.K must be ≥ 2")
    if tri.lambda_cls == 0 and not tri.enabled:
        raise ValueError("tri_loss_params.lambda_cls is 0 and the triplet loss is off: nothing would be trained")
    if p.task == "classification" and tri.enabled:
        raise ValueError("task 'classification' trains with cross-entropy only; set tri_loss_params.margin to 0")
    _check_methods(p)
    if p.fine_tune and p.imagenet_pretrain is False and not p.pretrain_snapshot:
        raise ValueError("fine_tune freezes the backbone, but neither imagenet_pretrain nor pretrain_snapshot gives "
                         "it trained weights")
    crop = p.data_augmentation
    if crop.crop_h and (crop.crop_h > p.img_h + 2 * crop.padding_h or crop.crop_w > p.img_w + 2 * crop.padding_w):
        raise ValueError(f"data_augmentation crop {crop.crop_h}×{crop.crop_w} is larger than the padded image "
                         f"{p.img_h + 2 * crop.padding_h}×{p.img_w + 2 * crop.padding_w}")
    if crop.crop_h and (crop.crop_h < MIN_CROP_FRACTION * p.img_h or crop.crop_w < MIN_CROP_FRACTION * p.img_w):
        raise ValueError(f"data_augmentation crop {crop.crop_h}×{crop.crop_w} is a small piece of the "
                         f"{p.img_h}×{p.img_w} image (img_h×img_w): the network would train on pieces of each person "
                         f"and be evaluated on whole people resized to {crop.crop_h}×{crop.crop_w}; a crop covers at "
                         f"least {MIN_CROP_FRACTION:.0%} of img_h and of img_w. For pad + random crop set crop_h/crop_w "
                         f"to {p.img_h}/{p.img_w} (or 0: with padding the crop is the image size); to train at another "
                         "size change img_h/img_w")


def _check_methods(p: ReidParams) -> None:
    """The re-ID method switches (PCB, spectral, mask, erasing, AM-softmax, distillation): refuse what cannot work."""
    m, tri, asoftmax, kd = p.model_params, p.tri_loss_params, p.asoftmax_params, p.distillation_params
    if p.task == "classification":
        on = m.methods_on + (["asoftmax_params.margin>0"] if asoftmax.enabled else [])
        if on:
            raise ValueError(f"task 'classification' uses a plain classifier network; {', '.join(on)} need task "
                             "'reid' (set them to 0/false)")
    n = m.pcb_n_parts
    if n:
        if m.feature_dim % n:
            raise ValueError(f"model_params.feature_dim={m.feature_dim} is not divisible by pcb_n_parts={n}: each "
                             f"part gets feature_dim / pcb_n_parts channels (e.g. feature_dim={n * max(1, round(m.feature_dim / n))})")
        crop = p.data_augmentation
        input_h = crop.crop_h or p.img_h  # the network sees the crop when cropping, else the resized image
        map_h = -(-input_h // (16 * m.last_conv_stride))  # each of the 4 (or 5) stride-2 stages rounds up
        if map_h < n:
            stride_hint = ", last_conv_stride 1" if m.last_conv_stride == 2 else ""
            raise ValueError(f"the PCB stripes need at least one feature-map row per part: an input height of "
                             f"{input_h} with last_conv_stride={m.last_conv_stride} gives a {map_h}-row map "
                             f"(ceil({input_h} / {16 * m.last_conv_stride})), fewer than pcb_n_parts={n}; use a "
                             f"larger img_h{stride_hint} or fewer parts")
    else:
        for key, value in (("feature_global_dim", m.feature_global_dim),
                           ("random_drop_branchs", m.random_drop_branchs)):
            if value:
                raise ValueError(f"model_params.{key}={value} applies to PCB heads, but pcb_n_parts is 0 (a single "
                                 f"embedding of feature_dim={m.feature_dim}); set pcb_n_parts > 0 or {key} to 0")
    if m.pcb_triplet_features == "global" and not m.feature_global_dim:
        raise ValueError("model_params.pcb_triplet_features='global' needs the PCB global branch: set "
                         "feature_global_dim > 0 (and pcb_n_parts > 0), or use 'parts'/'both'")
    if m.spectral_start_accuracy and not m.spectral_trans:
        raise ValueError("model_params.spectral_start_accuracy gates the spectral transform, which is off "
                         "(spectral_trans is 0)")
    if tri.lambda_cls == 0:
        heads = [f"model_params.{o}" for o in m.methods_on if o.startswith(("spectral_trans", "random_drop_branchs"))]
        heads += ["asoftmax_params.margin"] if asoftmax.enabled else []
        if heads:
            raise ValueError(f"tri_loss_params.lambda_cls is 0, so there is no classification loss, but "
                             f"{', '.join(heads)} only change that loss; set lambda_cls > 0 or turn them off")
    if kd.enabled and kd.logit_weight == 0 and kd.feature_weight == 0:
        raise ValueError("distillation_params.teacher_checkpoint is set but logit_weight and feature_weight are both "
                         "0: the teacher would teach nothing")
