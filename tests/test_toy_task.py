"""A third task defined only in tests/plugins/toy_box (box regression from a synthetic image) trains through
train.py, resumes exactly, evaluates through a plugin evaluator and exports to ONNX through ``python -m
deploy.export``: no edit to engine/, evaluate/__init__.py or deploy/ was needed, which is the proof that the trackers
can plug in the same way."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import train
from conftest import write_params
from engine.checkpoint import load_checkpoint
from engine.params import load_params
from engine.run_dir import RunDir
from engine.tasks import task_module

PLUGINS = Path(__file__).resolve().parent / "plugins"


@pytest.fixture(autouse=True)
def _plugins_on_path(monkeypatch, restore_process_state):
    monkeypatch.syspath_prepend(str(PLUGINS))


def toy_params(working_dir: Path, **overrides) -> dict:
    return {"task": "toy_box.task", "working_dir": str(working_dir), "epochs": 4, "deterministic": True,
            "num_images": 64, "batch_size": 16, "lr": {"base_lr": 0.05, "decay_step": [], "warmup_epoch": 0},
            "num_preprocess_workers": 0, "log_every_steps": 1,
            "evaluation_params": {"type": "toy_box.evaluate", "epoch": 1}, **overrides}


def run(config: Path, name: str, *extra: str) -> RunDir:
    assert train.main(["--operation", "train", "--config_path", str(config), "--sub_working_dir", name, *extra]) == 0
    return RunDir(config.parent / "runs" / name)


def test_toy_task_trains_evaluates_through_its_plugin_and_keeps_the_best(tmp_path):
    config = write_params(tmp_path / "params.json", toy_params(tmp_path / "runs"))
    assert type(load_params(config)).__name__ == "ToyBoxParams"
    trained = run(config, "toy")
    scores = [r["metrics"]["mean_iou"] for r in trained.read_eval_results()]
    assert len(scores) == 4
    checkpoint = load_checkpoint(trained.best)
    assert checkpoint["task"] == "toy_box.task" and checkpoint["task_state"] == {"img_size": 24}
    assert checkpoint["best"]["value"] == max(scores)

    toy = task_module("toy_box.task")
    params = load_params(config)
    untrained = toy.build(params).model.eval()
    from toy_box.evaluate import run_eval

    before = run_eval(params, toy.evaluator_input(untrained, params), torch.device("cpu"))[0]["mean_iou"]
    assert max(scores) > before + 0.1, (before, scores)  # it learned to find the square

    # offline: evaluator.py rebuilds the model through the task and hands the evaluator the task's predictor
    import evaluator

    write_params(tmp_path / "eval_params.json", {"model_path": str(trained.path), "benchmark_type": "toy_box.evaluate",
                                                 "num_preprocess_workers": 0,
                                                 "result_log_file": str(tmp_path / "result.json")})
    assert evaluator.main([str(tmp_path / "eval_params.json")]) == 0
    offline = json.loads((tmp_path / "result.json").read_text())["metrics"]["mean_iou"]
    assert offline == pytest.approx(checkpoint["best"]["value"], abs=1e-6)


def test_toy_task_resumes_exactly(tmp_path):
    config = write_params(tmp_path / "params.json", toy_params(tmp_path / "runs", epochs=3))
    straight = run(config, "straight")
    write_params(config, toy_params(tmp_path / "runs", epochs=1))
    split = run(config, "split")
    write_params(config, toy_params(tmp_path / "runs", epochs=3))
    split = run(config, "split", "--resume", "latest")
    a, b = load_checkpoint(straight.latest)["model"], load_checkpoint(split.latest)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_toy_task_exports_to_onnx_with_deploy_export(tmp_path, capsys):
    import onnxruntime

    from deploy import export

    config = write_params(tmp_path / "params.json", toy_params(tmp_path / "runs", epochs=1))
    trained = run(config, "toy")
    assert export.main(["--checkpoint", str(trained.path), "--out", str(tmp_path / "toy.onnx"),
                        "--batch-check", "1,5"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["task"] == "toy_box.task" and report["passed"] and report["outputs"] == ["boxes"]
    assert [r["batch_size"] for r in report["parity"]] == [1, 5]

    session = onnxruntime.InferenceSession(str(tmp_path / "toy.onnx"), providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    assert metadata["task"] == "toy_box.task" and metadata["exported_by"] == export.EXPORTED_BY
    toy, params = task_module("toy_box.task"), load_params(config)
    model = toy.rebuild_model(params, load_checkpoint(trained.best), trained.best).eval()
    images = toy.square_images(7, params.img_size, seed=5)[0]  # another batch size than the check's
    with torch.no_grad():
        expected = model(torch.from_numpy(images)).numpy()
    got = session.run(None, {"images": images})[0]
    assert got.shape == (7, 4) and np.abs(got - expected).max() < 1e-4
