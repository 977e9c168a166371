"""The SiamMask task (trackers/siammask/task.py, params.py, samples.py): its params files, the mask-aware crops, the
parameter groups and freezing of both stages, the criterion on a real batch, stage sharp's base checkpoint, and a
short train.py run (stage base, then stage sharp from it) evaluated on the fly with davis_evaluate and reproduced by
evaluator.py from the checkpoint and from its ONNX export (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.errors import UserError
from engine.params import load_params

ROOT = Path(__file__).resolve().parent.parent
TINY_DAVIS = {"type": "davis", "seed": 0, "options": {"num_train_videos": 2, "num_val_videos": 1, "min_frames": 8,
                                                      "max_frames": 10, "img_w": 160, "img_h": 120}}
EVAL_BOUNDS = {"max_sequences": 1, "max_frames": 4}


def run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def tiny_params(base: Path, **changes) -> dict:
    """params_siammask.json shrunk to a 2-video synthetic DAVIS set under `base`, batches of 2, 2 steps."""
    data = json.loads((ROOT / "params_siammask.json").read_text())
    data.update(working_dir=str(base / "runs"), batches_dir=str(base / "davis"), synthetic_data=TINY_DAVIS, epochs=1,
                num_preprocess_workers=0, log_every_steps=1)
    data["pair_sampling"].update(batch_size=2, pairs_per_epoch=4)
    data["evaluation_params"].update(epoch=1, **EVAL_BOUNDS)
    for key, value in changes.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    return data


def parse(data: dict):
    from trackers.siammask.params import SiamMaskParams

    return SiamMaskParams.model_validate(data)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("siammask")


@pytest.fixture(scope="module")
def base_parts(base_dir):
    from trackers.siammask import task

    torch.manual_seed(0)
    return task.build(parse(tiny_params(base_dir)))


# ---------------------------------------------------------------------------------------------------------------------
# params files


@pytest.mark.parametrize("name", ["params_siammask.json", "params_siammask_sharp.json",
                                  "configs/siammask_resnet50_base.json", "configs/siammask_resnet50_sharp.json"])
def test_params_files_validate(name):
    params = load_params(ROOT / name)
    assert params.task == "siammask"
    assert params.evaluation_params.type == "davis_evaluate"
    if params.stage == "sharp":
        assert params.model_params.refine and params.base_checkpoint and params.tracker_params.mask_source == "refine"


def test_eval_params_file_validates():
    from engine.params import parse_eval_params
    from evaluate.davis_evaluate import DavisOptions

    data = json.loads((ROOT / "eval_params_siammask.json").read_text())
    assert parse_eval_params(data, "eval_params_siammask.json", DavisOptions).benchmark_type == "davis_evaluate"


def test_params_refuse_inconsistent_stages():
    from engine.params import ParamsError, parse_params

    with pytest.raises(ParamsError, match="base_checkpoint"):
        parse_params({"task": "siammask", "batches_dir": "x", "stage": "sharp", "model_params": {"refine": True}})
    with pytest.raises(ParamsError, match="refine"):
        parse_params({"task": "siammask", "batches_dir": "x", "stage": "sharp", "base_checkpoint": "b.pth"})
    with pytest.raises(ParamsError, match="davis"):
        parse_params({"task": "siammask", "batches_dir": "x", "synthetic_data": {"type": "got10k"}})


# ---------------------------------------------------------------------------------------------------------------------
# crops


def test_siammask_crops_match_the_siamese_crops_and_cut_the_mask_with_the_same_window():
    from data.pair_loader import CropConfig, LoadedPair
    from trackers.siammask.samples import SiamMaskCrops

    frame = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    mask = np.zeros((120, 160), bool)
    mask[30:70, 50:110] = True
    box = np.array([50.0, 30.0, 60.0, 40.0])
    pairs = [LoadedPair(frame, box, frame, box, False, mask), LoadedPair(frame, box, frame, box, True)]
    crops = SiamMaskCrops()
    batch = crops.batch(pairs, [np.random.default_rng(i) for i in range(2)])
    plain = CropConfig(127, 255, 0.5, crops.max_scale, crops.max_shift).batch(
        pairs, [np.random.default_rng(i) for i in range(2)])
    for key in plain:
        assert torch.equal(batch[key], plain[key]), key
    assert batch["has_mask"].tolist() == [True, False]
    assert batch["search_mask"].shape == (2, 255, 255) and not batch["search_mask"][1].any()
    rows, cols = np.nonzero(batch["search_mask"][0].numpy())
    x, y, w, h = batch["search_box"][0].tolist()
    assert abs(cols.min() - x) <= 1 and abs(cols.max() + 1 - (x + w)) <= 1
    assert abs(rows.min() - y) <= 1 and abs(rows.max() + 1 - (y + h)) <= 1
    assert set(np.unique(batch["search_mask"].numpy())) <= {0.0, 1.0}
    assert batch["mask_weight"][0].sum() > 0 and batch["mask_weight"][1].sum() == 0   # negative pair: no mask
    assert (batch["anchor_cls"][1] == 1).sum() == 0


def test_loader_batches_carry_masks_only_for_siammask(base_parts):
    batch = next(iter(base_parts.loader.epoch(0)))
    assert batch["search_mask"].shape == (2, 255, 255)
    assert batch["has_mask"].tolist() == (~batch["negative"]).tolist()   # DAVIS: every positive pair has its mask
    for pair in range(2):
        assert bool(batch["search_mask"][pair].any()) == bool(batch["has_mask"][pair])


# ---------------------------------------------------------------------------------------------------------------------
# parameter groups, freezing, criterion


def test_base_stage_groups_unfreeze_layer2_and_layer3_on_schedule(base_dir):
    from trackers.siammask import task

    params = parse(tiny_params(base_dir, unfreeze_epoch=3, lr={"base_lr": 0.0005, "fc_lr": 0.005},
                               model_params={"refine": True}))
    model = task.build_model(params)
    pretrained = params.model_copy(update={"model_params": params.model_params.model_copy(
        update={"imagenet_pretrain": True})})  # only read by the grouping: nothing is downloaded
    task._freeze(pretrained, model)
    groups = {group.name: group for group in task.param_groups(pretrained, model)}
    assert (groups["heads"].lr, groups["heads"].start_epoch) == (0.005, 0)
    assert (groups["backbone"].lr, groups["backbone"].start_epoch) == (0.0005, 3)
    children = dict(model.backbone.named_children())
    backbone_ids = {id(p) for p in groups["backbone"].params}
    assert backbone_ids == {id(p) for name in ("layer2", "layer3") for p in children[name].parameters()}
    head_ids = {id(p) for p in groups["heads"].params}
    assert {id(p) for p in children["adjust"].parameters()} <= head_ids
    assert {id(p) for p in model.rpn.parameters()} | {id(p) for p in model.refinement.parameters()} <= head_ids
    for name in ("conv1", "bn1", "layer1"):   # never trained with ImageNet weights, BatchNorm statistics frozen
        assert not any(p.requires_grad for p in children[name].parameters())
    model.train()
    assert not children["bn1"].training and children["layer2"].training and model.rpn.training
    # from scratch the stem and layer1 train with layer2 and layer3
    scratch = task.param_groups(params, task.build_model(params))
    assert len(scratch[1].params) > len(groups["backbone"].params)


def test_sharp_stage_trains_only_mask_and_refine(base_dir, tmp_path):
    from trackers.siammask import task

    base_model = task.build_model(parse(tiny_params(base_dir)))
    checkpoint = tmp_path / "base.pth"
    torch.save({"model": base_model.state_dict()}, checkpoint)
    params = parse(tiny_params(base_dir, stage="sharp", base_checkpoint=str(checkpoint),
                               model_params={"refine": True}, tracker_params={"mask_source": "refine"}))
    model = task.build_model(params)
    kept = task.load_base_checkpoint(params, model)
    assert kept and all(key.startswith("refinement.") for key in kept)
    for key, value in base_model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    task._freeze(params, model)
    groups = task.param_groups(params, model)
    assert [g.name for g in groups] == ["mask", "refine"]
    trained = {id(p) for g in groups for p in g.params}
    assert trained == {id(p) for p in model.parameters() if p.requires_grad}
    model.train()
    assert not any(m.training for m in model.backbone.modules()) and not model.rpn.training
    # a checkpoint of another model is refused, naming the keys
    from engine.checkpoint import CheckpointError

    wide = parse(tiny_params(base_dir, model_params={"hidden": 32}))
    torch.save({"model": task.build_model(wide).state_dict()}, tmp_path / "wide.pth")
    with pytest.raises(CheckpointError, match="shape mismatch"):
        task.load_base_checkpoint(params.model_copy(update={"base_checkpoint": str(tmp_path / "wide.pth")}), model)


def test_sharp_stage_refuses_a_missing_base_checkpoint(base_dir):
    from trackers.siammask import task

    missing = base_dir / "nowhere" / "model_best.pth"
    params = parse(tiny_params(base_dir, stage="sharp", base_checkpoint=str(missing), model_params={"refine": True}))
    for call in (task.check_inputs, task.build):
        with pytest.raises(UserError) as caught:
            call(params)
        message = str(caught.value)
        assert str(missing) in message and "base_checkpoint" in message and "\n" not in message


def test_criterion_on_a_real_batch(base_parts):
    batch = next(iter(base_parts.loader.epoch(0)))
    model = base_parts.model.train()
    outputs = model(*base_parts.inputs(batch))
    total, terms, scalars = base_parts.criterion(outputs, batch, 0)
    assert set(terms) == {"cls", "loc", "mask"}
    assert torch.isfinite(total) and all(torch.isfinite(v) for v in terms.values())
    assert terms["mask"].item() > 0 and "mask_iou" in scalars
    total.backward()
    assert model.rpn.cls.head[-1].weight.grad is not None
    assert model.mask_branch.head[-1].weight.grad.abs().sum() > 0
    assert base_parts.may_leave_parameters_unused is False   # base stage without refine: every parameter is used


# ---------------------------------------------------------------------------------------------------------------------
# entry points


@pytest.mark.slow  # about 60 s on an idle 2-core CPU (three processes: two train.py runs and evaluator.py)
def test_a_short_run_of_both_stages_evaluates_on_the_fly_and_offline_alike(base_dir):
    from engine.checkpoint import load_checkpoint

    config = base_dir / "base.json"
    config.write_text(json.dumps(tiny_params(base_dir)))
    done = run("train.py", "--operation", "train", "--config_path", str(config), "--sub_working_dir", "base")
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = base_dir / "runs" / "base"
    record = json.loads((run_dir / "eval_results.jsonl").read_text().splitlines()[-1])
    assert record["primary"] == "jf_mean" and record["global_step"] == 2
    assert record["metrics"]["sequences"] == 1 and record["metrics"]["mask_frames"] > 0
    assert list((run_dir / "tracking_results").glob("step_*/results.json"))

    eval_config = base_dir / "eval.json"
    eval_config.write_text(json.dumps({"model_path": str(run_dir / "model_best.pth"), "benchmark_type":
                                       "davis_evaluate", "subset": "val", "result_log_file":
                                       str(base_dir / "eval_result.json"), **EVAL_BOUNDS}))
    done = run("evaluator.py", str(eval_config))
    assert done.returncode == 0, done.stderr[-3000:]
    offline = json.loads((base_dir / "eval_result.json").read_text())["metrics"]
    for key, value in record["metrics"].items():
        if key != "fps":
            assert offline[key] == pytest.approx(value, abs=1e-9), key

    # the exported graphs (trackers/siammask/export.py) on ONNX Runtime give the same numbers
    done = run("-m", "deploy.export", "--checkpoint", str(run_dir / "model_best.pth"), "--out",
               str(base_dir / "export" / "base.onnx"))
    assert done.returncode == 0, done.stderr[-3000:]
    eval_config.write_text(json.dumps({"model_path": str(base_dir / "export" / "base.onnx"), "benchmark_type":
                                       "davis_evaluate", "data_dir": str(base_dir / "davis"), "subset": "val",
                                       "result_log_file": str(base_dir / "onnx_result.json"), **EVAL_BOUNDS}))
    done = run("evaluator.py", str(eval_config))
    assert done.returncode == 0, done.stderr[-3000:]
    onnx = json.loads((base_dir / "onnx_result.json").read_text())["metrics"]
    assert onnx["jf_mean"] == pytest.approx(record["metrics"]["jf_mean"], abs=0.02)

    sharp = tiny_params(base_dir, stage="sharp", base_checkpoint=str(run_dir / "model_best.pth"),
                        model_params={"refine": True}, tracker_params={"mask_source": "refine"})
    config = base_dir / "sharp.json"
    config.write_text(json.dumps(sharp))
    done = run("train.py", "--operation", "train", "--config_path", str(config), "--sub_working_dir", "sharp")
    assert done.returncode == 0, done.stderr[-3000:]
    sharp_dir = base_dir / "runs" / "sharp"
    assert json.loads((sharp_dir / "eval_results.jsonl").read_text().splitlines()[-1])["primary"] == "jf_mean"
    before = load_checkpoint(run_dir / "model_best.pth")["model"]
    after = load_checkpoint(sharp_dir / "latest.pth")["model"]
    frozen = [key for key in before if not key.startswith("mask_branch.")]
    assert frozen and all(torch.equal(before[key], after[key]) for key in frozen)   # BatchNorm statistics too
    assert any(not torch.equal(before[key], after[key]) for key in before if key.startswith("mask_branch."))
    assert any(key.startswith("refinement.") for key in after)
