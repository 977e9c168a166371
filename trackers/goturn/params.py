"""params.json of the GOTURN task (``"task": "goturn"``): the engine's keys plus the network, the training samples
(pairs of nearby frames, the motion model that makes further samples from each) and the tower freezing. Defaults are
the reference's (nrupatunga/goturn-pytorch, `../shared/reference/trackers-and-got10k.md` §2) unless a description
says otherwise."""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import Field, model_validator

from data.options import PairDataset, SyntheticDataParams
from engine.params import EngineParams, EvaluationParams
from engine.sections import NonNegInt, PositiveInt, Section
from evaluate.got10k_evaluate import Got10kOptions

PositiveFloat = Annotated[float, Field(gt=0.0)]


class GoturnModelParams(Section):
    backbone: Literal["caffenet"] = Field("caffenet", description="Tower of both branches, from the backbone "
                                          "registry: CaffeNet (227 → 256×6×6 at width 1).")
    tower_width: PositiveFloat = Field(1.0, description="Channel multiplier of the CaffeNet towers (1 = CaffeNet; "
                                       "0.5 quarters their cost).")
    tied_towers: bool = Field(False, description="One tower for both crops (shared weights); the reference has two "
                              "tower modules, kept identical only because its convolutions are frozen.")
    fc_width: PositiveInt = Field(1024, description="Width of the hidden fully connected layers. The reference's "
                                  "4096 makes a 455 MB model (113.7 M parameters, 109 M of them in the FC layers); "
                                  "1024 makes it 103 MB (25.6 M; 51 MB with tower_width 0.5), and the CPU training "
                                  "step much faster.")
    fc_layers: PositiveInt = Field(3, description="Hidden fully connected layers (FC + ReLU + dropout each) before the "
                                   "4-output layer.")
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(0.5, description="Dropout after each hidden FC layer "
                                                             "(the demo uses 0: it slows a short from-scratch run).")
    input_size: PositiveInt = Field(227, description="Side of the network's square input crops.")


class GoturnSamplingParams(Section):
    batch_size: PositiveInt = Field(5, description="Real pairs per step per process; each gives 1 + "
                                    "`examples_per_pair` samples, so a step trains on exactly batch_size × (1 + "
                                    "examples_per_pair) samples (reference: 50 samples; no carry-over between steps).")
    pairs_per_epoch: PositiveInt = Field(10_000, description="Real pairs per epoch over all processes (an epoch is a "
                                         "number of pairs, not a pass over the data).")
    examples_per_pair: NonNegInt = Field(10, description="Synthetic samples per real pair (kGenExPerImage): the search "
                                         "crop around a randomly moved copy of the current box.")
    max_distance: PositiveInt = Field(1, description="Largest frame distance between the previous and the current "
                                      "frame of a pair, in both directions among the visible frames (1 = consecutive "
                                      "frames; use the annotation interval for sparsely annotated sets such as ALOV).")
    train_subset: str = Field("train", description="Subset of `batches_dir` to train on.")
    extra_datasets: list[PairDataset] = Field([], description="Further training sets drawn with their ratio "
                                              "(batches_dir has ratio 1); still images (coco) give same-frame pairs.")
    context: PositiveFloat = Field(2.0, description="Crop side per box side (kContextFactor): the crops cover "
                                   "context·w × context·h around the box centre.")
    lambda_shift: PositiveFloat = Field(5.0, description="Motion model: centre shift / box side ~ Laplace(0, "
                                        "1/lambda_shift).")
    lambda_scale: PositiveFloat = Field(15.0, description="Motion model: relative size change ~ Laplace(0, "
                                        "1/lambda_scale), clipped to [min_scale, max_scale].")
    min_scale: Annotated[float, Field(gt=-1.0, le=0.0)] = Field(-0.4, description="Motion model: smallest relative "
                                                                "size change.")
    max_scale: Annotated[float, Field(ge=0.0)] = Field(0.4, description="Motion model: largest relative size change.")


class GoturnEvaluationParams(EvaluationParams, Got10kOptions):
    """On-the-fly evaluation: the engine's schedule keys and got10k_evaluate's options."""

    type: Optional[str] = Field("got10k_evaluate", description="Evaluator run on the fly (got10k_evaluate, or a "
                                "tracking evaluator of your own); null = none.")


class GoturnParams(EngineParams):
    task: Literal["goturn"] = Field("goturn", description="GOTURN regression tracking.")
    batches_dir: str = Field(description="Training sequences: a GOT-10k root (its `train_subset` is used), a "
                             "LaSOT/OTB-style root, an ALOV300++ root or a pack made by `python -m data.pack`.")
    synthetic_data: Optional[SyntheticDataParams] = Field(None, description="Generate a synthetic dataset (type "
                                                          "got10k) into `batches_dir` on first use; null = use "
                                                          "existing data.")
    evaluation_params: GoturnEvaluationParams = Field(default_factory=GoturnEvaluationParams,
                                                      description="On-the-fly evaluation (data_dir null = "
                                                      "batches_dir, subset val).")
    model_params: GoturnModelParams = Field(default_factory=GoturnModelParams, description="Network.")
    pair_sampling: GoturnSamplingParams = Field(default_factory=GoturnSamplingParams, description="Training "
                                                "samples.")
    fc_bias_lr_factor: PositiveFloat = Field(2.0, description="FC biases train at this × `lr.fc_lr` (reference: FC "
                                             "weights ×10 and biases ×20 the base LR, i.e. 2).")
    freeze_towers: bool = Field(False, description="Do not train the towers (the reference freezes its ImageNet "
                                "CaffeNet towers; here they start from scratch, so they must train).")

    @model_validator(mode="after")
    def _consistent(self) -> "GoturnParams":
        if self.synthetic_data is not None and self.synthetic_data.type != "got10k":
            raise ValueError(f"synthetic_data.type must be 'got10k' for the goturn task (found "
                             f"{self.synthetic_data.type!r})")
        sampling = self.pair_sampling
        if sampling.min_scale > sampling.max_scale:
            raise ValueError(f"pair_sampling.min_scale ({sampling.min_scale}) must not exceed max_scale "
                             f"({sampling.max_scale})")
        return self
