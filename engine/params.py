"""The training params file: one typed schema, parsed once at the edge.

Every key of ``params.json`` is declared here with its type, range, default and a one-line description. The same
declarations generate the JSON Schema (``python train.py --print-schema``) and the key reference in
``docs/params.md`` (``python -m engine.params --markdown``), so the three cannot drift apart.

Keys of the seed README and of the original code's params.json are accepted under their original names (including
the misspellings ``feature_gobal_dim`` and ``colour_jitering``); where the original behaviour was a bug, the field
description says what this tool does instead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.errors import UserError


class ParamsError(UserError):
    """A params file that cannot be used; the message names the file, the key, what was expected and what was found."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)


PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
# A random crop smaller than this share of the resized image trains on parts of the person while evaluation sees the
# whole person; resize-then-crop recipes (torchreid's Random2DTranslation: 1/1.125 = 89 %) stay above it.
MIN_CROP_FRACTION = 0.8

RESNET_NAMES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


class BatchSamplingParams(_Section):
    class_balanced: bool = Field(True, description="true: P×K identity-balanced batches (P identities × K images); "
                                 "false: plain shuffled batches of `batch_size`.")
    P: PositiveInt = Field(16, description="Identities per batch when `class_balanced` is true.")
    K: PositiveInt = Field(4, description="Images per identity when `class_balanced` is true; identities with fewer "
                           "than K images are drawn with replacement.")
    batch_size: PositiveInt = Field(64, description="Batch size per process when `class_balanced` is false; also the "
                                    "default evaluation batch size.")
    softmax_only: bool = Field(False, description="Accepted for compatibility with the original params.json, where it "
                               "had no effect; it has none here either.")


class DataAugmentationParams(_Section):
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


class LrParams(_Section):
    base_lr: Annotated[float, Field(gt=0.0)] = Field(0.01, description="Initial learning rate of the backbone.")
    fc_lr: Annotated[float, Field(gt=0.0)] = Field(0.1, description="Initial learning rate of everything that is not "
                                                   "the backbone (embedding, heads, classifiers).")
    decay_gamma: Annotated[float, Field(gt=0.0, le=1.0)] = Field(0.1, description="Factor applied at each decay step.")
    decay_step: list[NonNegInt] = Field([40, 80], description="Epochs (counted from the start of training, not from "
                                        "the end of warm-up as in the original) at which the LR is multiplied by "
                                        "`decay_gamma`.")
    warmup_epoch: Annotated[float, Field(ge=0.0)] = Field(
        0.0, description="Linear warm-up length in epochs, applied per iteration from lr/(warm-up iterations) up to "
        "the initial lr; 0 = off.")

    @field_validator("decay_step")
    @classmethod
    def _sorted(cls, steps: list[int]) -> list[int]:
        if steps != sorted(set(steps)):
            raise ValueError(f"decay_step must be strictly increasing; found {steps}")
        return steps


class ModelParams(_Section):
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


class TriLossParams(_Section):
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


class AsoftmaxParams(_Section):
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


class DistillationParams(_Section):
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


class GanParams(_Section):
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


class EvaluationParams(_Section):
    type: Optional[str] = Field(None, description="Evaluator run on the fly: market_evaluate, classification_evaluate, "
                                "any file NAME.py in evaluate/ exposing run_eval, or a dotted module path. null = no "
                                "evaluation (the string \"None\" is read as null too).")
    epoch: PositiveInt = Field(1, description="Evaluate every `epoch` epochs and after the last epoch.")
    step: Optional[PositiveInt] = Field(None, description="Also evaluate every `step` global iterations; null = off.")
    data_dir: Optional[str] = Field(None, description="Evaluation data: a Market-1501 root (query/, "
                                    "bounding_box_test/), a root with query/ and gallery/ folders per identity, or a "
                                    "class-folder validation set. null = `batches_dir` when that is a dataset root.")
    best_metric: Optional[str] = Field(None, description="Metric that decides model_best.pth (higher is better); "
                                       "null = the evaluator's primary metric (rank1 for market, top1 for "
                                       "classification).")
    batch_size: Optional[PositiveInt] = Field(None, description="Feature-extraction batch size; null = "
                                              "batch_sampling_params.batch_size.")
    distance: Literal["cosine", "euclidean"] = Field("cosine", description="Re-ID distance: cosine on L2-normalised "
                                                     "features, or squared Euclidean on raw features.")
    flip_test: bool = Field(False, description="Average the features of each image and its mirror.")
    spectral_transform: Annotated[float, Field(ge=0.0)] = Field(
        0.0, description="Temperature of the test-time spectral top-k refinement (seed post-processing); 0 = off. "
        "Reported as a separate metric set with the prefix `st_`.")
    spectral_top_k: PositiveInt = Field(50, description="Gallery items refined by the spectral post-processing.")
    rerank: bool = Field(False, description="Also report k-reciprocal re-ranked metrics (prefix `rr_`).")
    rerank_k1: PositiveInt = Field(20, description="k-reciprocal re-ranking k1.")
    rerank_k2: PositiveInt = Field(6, description="k-reciprocal re-ranking k2 (query expansion).")
    rerank_lambda: Fraction = Field(0.3, description="Weight of the original distance in re-ranking.")
    max_rank: PositiveInt = Field(50, description="Length of the reported CMC curve.")
    visualize_queries: NonNegInt = Field(4, description="Queries drawn with their top-10 in TensorBoard; 0 = none.")

    @field_validator("type", mode="before")
    @classmethod
    def _none_string(cls, value: Any) -> Any:
        return None if value in ("None", "none", "") else value


class SyntheticDataParams(_Section):
    type: Literal["market", "classes"] = Field(description="Which synthetic dataset to generate into `batches_dir` "
                                               "if it does not exist yet.")
    seed: NonNegInt = Field(0, description="Generator seed; the same seed gives byte-identical files.")
    options: dict[str, Union[int, float, str, bool]] = Field(
        default_factory=dict, description="Overrides of the generator spec (see `python -m data.synthetic --help`).")


class TrainParams(_Section):
    task: Literal["reid", "classification"] = Field("reid", description="What is trained: re-ID (identity classes, "
                                                    "P×K sampling, triplet) or plain image classification.")
    working_dir: str = Field("runs", description="Parent directory of the run directories.")
    batches_dir: str = Field(description="Training data: a Market-1501 root (its bounding_box_train/ is used), one "
                             "folder per identity/class, or an LMDB pack made by `python -m data.pack`.")
    synthetic_data: Optional[SyntheticDataParams] = Field(None, description="Generate a synthetic dataset into "
                                                          "`batches_dir` on first use; null = use existing data.")
    img_h: PositiveInt = Field(256, description="Input height after resize (training and evaluation).")
    img_w: PositiveInt = Field(128, description="Input width after resize (training and evaluation).")
    epochs: PositiveInt = Field(60, validation_alias=AliasChoices("epochs", "epoch"),
                                description="Training epochs (`epoch` in the seed README). The loop ends after them "
                                "(the original never ended).")
    batch_sampling_params: BatchSamplingParams = Field(default_factory=BatchSamplingParams,
                                                       description="Batch composition.")
    data_augmentation: DataAugmentationParams = Field(default_factory=DataAugmentationParams,
                                                      description="Training augmentations.")
    lr: LrParams = Field(default_factory=LrParams, description="Learning-rate schedule.")
    optimizer: Literal["sgd", "nesterov", "adam", "amsgrad", "rmsprop"] = Field(
        "sgd", description="sgd and nesterov use momentum 0.9; rmsprop momentum 0.9; adam/amsgrad default betas.")
    weight_decay: Annotated[float, Field(ge=0.0)] = Field(5e-4, description="L2 weight decay (all parameters).")
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
    num_preprocess_workers: NonNegInt = Field(2, description="Data-loading worker processes (0 = load in the training "
                                              "process).")
    parallels: list[NonNegInt] = Field([], description="CUDA device ids to train on; [] = CPU. A non-empty list on a "
                                       "machine without CUDA is an error.")
    amp: Literal["none", "bf16", "fp16", "auto"] = Field(
        "none", description="Mixed precision: bf16 autocast (CPU or GPU), fp16 with gradient scaling (GPU only), "
        "none = fp32, or auto = bf16 where the device computes it natively (a GPU with bf16; a CPU with AVX512-BF16 "
        "or AMX) and fp32 elsewhere, where emulated bf16 is several times slower (the shipped params.json uses auto). "
        "Measured with bench/train_throughput.py (ResNet-50, 256×128, 64 images per step) on a 2-core CPU with AMX: "
        "bf16 + channels_last 13.6 img/s, fp32 + channels_last 6.5 img/s; on a 2-core AVX2 CPU bf16 was about 5× "
        "slower than fp32.")
    channels_last: bool = Field(True, description="Keep the model's weights and the input batches in channels-last "
                                "(NHWC) memory format, the fast layout for convolutions on the CPU (oneDNN) and for "
                                "tensor cores on the GPU. Checkpoints are unaffected. Default on by measurement "
                                "(bench/train_throughput.py on the 2-core CPU: 13.6 vs 12.3 img/s with bf16; fp32 "
                                "6.5 img/s against 4.4 for a contiguous fp32 torchvision step).")
    compile: bool = Field(False, description="Run the training forward/backward through torch.compile (the first "
                          "steps compile for minutes; evaluation stays eager). On the 2-core CPU it measured no faster "
                          "than eager bf16 + channels_last after a ~6 min compile, hence off by default.")
    sync_bn: bool = Field(False, description="Distributed runs: BatchNorm normalises with the statistics of the "
                          "global batch (all processes; SyncBatchNorm on CUDA, an all-reduce implementation on the "
                          "CPU), as one process with the whole global batch would. false: each process uses its own "
                          "P×K. No effect in a single process.")
    lr_scaling: Literal["none", "linear"] = Field(
        "none", description="Learning rate of a run of W processes (global batch = W × the per-process batch): "
        "none = base_lr and fc_lr as given; linear = base_lr × W and fc_lr × W (Goyal et al.). W = 1 changes nothing.")
    dist_timeout_s: PositiveInt = Field(600, description="Distributed runs: timeout of the collectives of training "
                                        "(and of joining the job). A process that died is noticed at once; one that "
                                        "hangs makes the others fail after this long instead of waiting forever.")
    dist_eval_timeout_s: PositiveInt = Field(7200, description="Distributed runs: how long the other processes wait "
                                             "for rank 0's evaluation (rank 0 evaluates alone) before failing.")
    cpu_threads: NonNegInt = Field(0, description="Threads of the training process's CPU operations "
                                   "(torch.set_num_threads); 0 = PyTorch's default (one per core; a run started "
                                   "with --nproc N gives each process cores / N). On a CPU shared with the loader "
                                   "workers or other jobs fewer threads can be faster (see bench/train_throughput.py "
                                   "--threads).")
    seed: NonNegInt = Field(0, description="Seed of every random choice (init, sampling, augmentation).")
    deterministic: bool = Field(False, description="Use deterministic algorithms (bit-identical resume).")
    nonfinite_loss: Literal["stop", "skip"] = Field(
        "stop", description="A NaN/Inf loss: stop = the run fails with a message naming the step and the loss "
        "component, keeping the last good checkpoint; skip = that step changes nothing (no weight or optimizer "
        "update) and a warning naming the step and component is logged.")
    nonfinite_max_consecutive_skips: PositiveInt = Field(
        10, description="With nonfinite_loss 'skip': at most this many steps in a row are skipped; the next "
        "non-finite loss in a row stops the run as 'stop' does. The count restarts when a run is resumed.")
    log_every_steps: PositiveInt = Field(10, description="Steps between text-log and TensorBoard training scalars.")
    keep_epoch_checkpoints: NonNegInt = Field(3, description="How many end-of-epoch snapshots epoch_NNN.pth to keep "
                                              "for `--resume N` (hard links to latest.pth: no extra disk).")
    evaluation_params: EvaluationParams = Field(default_factory=EvaluationParams,
                                                description="On-the-fly evaluation.")
    tri_loss_margin: Optional[Union[Annotated[float, Field(ge=0.0)], Literal["soft_margin"]]] = Field(
        None, description="Seed README spelling of tri_loss_params.margin (both given and different is an error).")
    tri_loss_lambda_cls: Optional[Annotated[float, Field(ge=0.0)]] = Field(
        None, description="Seed README spelling of tri_loss_params.lambda_cls.")

    @model_validator(mode="before")
    @classmethod
    def _one_spelling(cls, data: Any) -> Any:
        if isinstance(data, dict) and "epoch" in data and "epochs" in data:
            raise ValueError("give either 'epochs' or its seed spelling 'epoch', not both")
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "TrainParams":
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


def _check_combinations(p: TrainParams) -> None:
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


def _check_methods(p: TrainParams) -> None:
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


# ---------------------------------------------------------------------------------------------------------------------
# Loading with readable errors


def _closest(word: str, choices: list[str]) -> Optional[str]:
    import difflib

    found = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    return found[0] if found else None


def _section_at(model: type[BaseModel], loc: tuple) -> Optional[type[BaseModel]]:
    """The model class that owns the key at `loc` (ignoring the last element)."""
    current: Any = model
    for part in loc[:-1]:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(part)
        if field is None:
            return None
        current = _section_class(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _section_class(annotation: Any) -> Any:
    for candidate in getattr(annotation, "__args__", ()) or (annotation,):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return annotation


def _valid_keys(model: type[BaseModel]) -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        keys.append(name)
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            keys.extend(str(c) for c in alias.choices)
    return sorted(set(keys))


def _describe(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, (set, tuple)) else repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _field_path(model: type[BaseModel], loc: tuple) -> tuple:
    """Drop pydantic's union/validator markers from an error location, keeping field names and list indexes."""
    path, current = [], model
    for part in loc:
        if isinstance(part, int):
            path.append(part)
            continue
        fields = current.model_fields if isinstance(current, type) and issubclass(current, BaseModel) else {}
        if part in fields:
            path.append(part)
            current = _section_class(fields[part].annotation)
        elif not fields and not path:
            path.append(part)
        elif fields and part not in _MARKERS and "[" not in part and "-" not in part:
            path.append(part)  # an unknown key
    return tuple(path)


_MARKERS = {"float", "int", "str", "bool", "list", "dict", "none", "function-after", "function-before"}


def format_validation_error(err: ValidationError, model: type[BaseModel], source: str) -> str:
    problems: dict[tuple, list[str]] = {}
    found_at: dict[tuple, Any] = {}
    for item in err.errors(include_url=False):
        if item["type"] in ("extra_forbidden", "missing") and item["loc"]:
            loc = _field_path(model, item["loc"][:-1]) + (item["loc"][-1],)  # the key itself, whatever its text
        else:
            loc = _field_path(model, item["loc"])
        if item["type"] == "extra_forbidden":
            section = _section_at(model, loc)
            hint = _closest(str(loc[-1]), _valid_keys(section)) if section else None
            parent = ".".join(str(p) for p in loc[:-1])
            where = f"{parent}." if parent else ""
            suggestion = f"; did you mean '{where}{hint}'?" if hint else ""
            problems.setdefault(("unknown",) + loc, []).append(suggestion)
            continue
        if item["type"] == "missing":
            problems.setdefault(("missing",) + loc, []).append("")
            continue
        msg = item["msg"].removeprefix("Value error, ")
        problems.setdefault(("value",) + loc, []).append(msg)
        if item["type"] != "value_error" and "input" in item:
            found_at[loc] = item["input"]
    lines = []
    for (kind, *loc), messages in problems.items():
        path = ".".join(str(p) for p in loc)
        if kind == "unknown":
            lines.append(f"{source}: unknown key '{path}'{messages[0]}")
        elif kind == "missing":
            lines.append(f"{source}: missing required key '{path}'")
        else:
            expected = " or ".join(dict.fromkeys(m[0].lower() + m[1:] for m in messages))
            found = f", found {_describe(found_at[tuple(loc)])}" if tuple(loc) in found_at else ""
            where = f"key '{path}': " if path else ""
            lines.append(f"{source}: {where}{expected}{found}")
    return "\n".join(lines)


def parse_params(data: Any, source: str = "params") -> TrainParams:
    """Validate an already-decoded JSON value; raises ParamsError with one line per problem."""
    if not isinstance(data, dict):
        raise ParamsError(f"{source}: expected a JSON object at the top level, found {type(data).__name__}")
    try:
        return TrainParams.model_validate(data)
    except ValidationError as err:
        raise ParamsError(format_validation_error(err, TrainParams, source)) from None


def read_json_file(path: str | Path) -> Any:
    """Decode a JSON file; malformed JSON becomes a UserError with line and column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ParamsError(f"{path}: cannot read: {err}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ParamsError(f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None


def load_params(path: str | Path) -> TrainParams:
    return parse_params(read_json_file(path), str(path))


def params_to_json(params: BaseModel) -> str:
    """The resolved params (every default filled in) as a params file that loads back to the same object."""
    return json.dumps(params.model_dump(mode="json", exclude={"tri_loss_margin", "tri_loss_lambda_cls"}), indent=2)


def json_schema(model: type[BaseModel] = TrainParams) -> dict:
    """The JSON Schema of a params file, for editors and validators. The older spellings that the loader accepts
    (``epoch``, ``colour_jitering``, …) are properties too, so the schema accepts every file the loader accepts."""
    schema = model.model_json_schema(by_alias=False)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    _add_alias_properties(model, schema, schema)
    return schema


def _add_alias_properties(model: type[BaseModel], node: dict, root: dict) -> None:
    properties = node.get("properties", {})
    for name, field in model.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices) and name in properties:
            for other in (str(c) for c in alias.choices if c != name):
                properties[other] = {**properties[name], "description": f"Accepted spelling of `{name}`."}
        nested = _section_class(field.annotation)
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            _add_alias_properties(nested, root.get("$defs", {}).get(nested.__name__, {}), root)


# ---------------------------------------------------------------------------------------------------------------------
# Markdown reference generated from the schema


def _type_text(field) -> str:
    return _annotation_text(field.annotation).replace("|", "\\|")


def _annotation_text(annotation: Any) -> str:
    """A reader's name for a field type: constraints dropped (the meaning column states them), unions spelt out."""
    import types
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return _annotation_text(args[0])
    if origin in (Union, types.UnionType):
        return " or ".join(_annotation_text(a) for a in args)
    if origin is Literal:
        values = ", ".join(json.dumps(a) for a in args)
        return values if len(args) == 1 else f"one of {values}"
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_annotation_text(a) for a in args)}]"
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def markdown_reference(model: type[BaseModel], prefix: str = "") -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        key = f"`{prefix}{name}`"
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            others = [c for c in alias.choices if c != name]
            if others:
                key += " (also " + ", ".join(f"`{o}`" for o in others) + ")"
        nested = _section_class(field.annotation)
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            default = "see below" if not field.is_required() else "required"
            rows.append(f"| `{prefix}{name}` | object | {default} | {field.description} |")
            rows.extend(markdown_reference(nested, f"{prefix}{name}."))
            continue
        if field.is_required():
            default = "**required**"
        else:
            value = field.get_default(call_default_factory=True)
            default = f"`{json.dumps(value)}`"
        rows.append(f"| {key} | {_type_text(field)} | {default} | {field.description} |")
    return rows


def markdown_table(model: type[BaseModel]) -> str:
    head = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    return "\n".join(head + markdown_reference(model)) + "\n"




# ---------------------------------------------------------------------------------------------------------------------
# eval_params.json (offline evaluation with evaluator.py)


class EvalParams(_Section):
    model_path: str = Field(description="Checkpoint of this tool (.pth, e.g. RUN/model_best.pth), a run directory "
                            "(its model_best.pth) or an ONNX model exported by `python -m deploy.export` (.onnx). A "
                            ".pth rebuilds the model from the params stored inside it and evaluates it as the run did "
                            "on the fly (fp32, the run's memory format).")
    benchmark_type: Optional[str] = Field(None, description="Evaluator (as evaluation_params.type); null = "
                                          "market_evaluate for re-ID checkpoints and ONNX models, "
                                          "classification_evaluate for classification checkpoints.")
    data_dir: Optional[str] = Field(None, description="Evaluation data (as evaluation_params.data_dir); null = the "
                                    "one the checkpoint was evaluated with. Required for ONNX models, which carry no "
                                    "training params (e.g. the Market-1501 root with query/ and bounding_box_test/).")
    img_h: Optional[PositiveInt] = Field(None, description="Input height; null = the checkpoint's (or the ONNX "
                                         "metadata's). Must match an ONNX model's fixed input size.")
    img_w: Optional[PositiveInt] = Field(None, description="Input width; null = as img_h.")
    batch_size: Optional[PositiveInt] = Field(None, description="Feature-extraction batch size; null = the one the "
                                              "run evaluated with (64 for ONNX models).")
    gpus: list[NonNegInt] = Field([], description="CUDA device ids (the first is used); [] = CPU.")
    num_preprocess_workers: NonNegInt = Field(2, description="Image-decoding worker processes.")
    feature_path: str = Field("", description="Feature cache (.npz, no pickle): reused when it was computed from the "
                              "same model file and images, else (re)written; empty = no cache.")
    spectral_transform: Annotated[float, Field(ge=0.0)] = Field(0.0, description="Test-time spectral top-k refinement "
                                                                "temperature; 0 = off (metrics prefixed st_).")
    spectral_top_k: PositiveInt = Field(50, description="Gallery items refined by the spectral post-processing.")
    distance: Literal["cosine", "euclidean"] = Field("cosine", description="As evaluation_params.distance.")
    flip_test: bool = Field(False, description="Average features of each image and its mirror.")
    rerank: bool = Field(False, description="Also report k-reciprocal re-ranked metrics (prefix rr_).")
    rerank_k1: PositiveInt = Field(20, description="Re-ranking k1.")
    rerank_k2: PositiveInt = Field(6, description="Re-ranking k2.")
    rerank_lambda: Fraction = Field(0.3, description="Re-ranking λ.")
    max_rank: PositiveInt = Field(50, description="Length of the CMC curve.")
    result_log_file: str = Field("result.json", description="Where the metrics are written as JSON.")
    model_params: Optional[dict[str, Any]] = Field(None, description="Accepted for compatibility with the original "
                                                   "eval_params.json; if given it must agree with the checkpoint's "
                                                   "model_params (it is never needed).")


def parse_eval_params(data: Any, source: str = "eval_params") -> EvalParams:
    if not isinstance(data, dict):
        raise ParamsError(f"{source}: expected a JSON object at the top level, found {type(data).__name__}")
    try:
        return EvalParams.model_validate(data)
    except ValidationError as err:
        raise ParamsError(format_validation_error(err, EvalParams, source)) from None


def load_eval_params(path: str | Path) -> EvalParams:
    return parse_eval_params(read_json_file(path), str(path))


if __name__ == "__main__":
    if sys.argv[1:] == ["--markdown"]:
        sys.stdout.write(markdown_table(TrainParams))
    elif sys.argv[1:] == ["--markdown-eval"]:
        sys.stdout.write(markdown_table(EvalParams))
    else:
        sys.exit("usage: python -m engine.params --markdown | --markdown-eval")
