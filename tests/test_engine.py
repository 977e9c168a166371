"""The training engine on tiny synthetic data: learning, TensorBoard scalars, evaluation hook, exact resume."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import tiny_params, write_params
from engine.checkpoint import load_checkpoint
from engine.params import parse_params
from engine.run_dir import RunDir
from engine.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, cwd=ROOT, env=None, timeout=300):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def make_trainer(params: dict, run_path: Path) -> Trainer:
    run_path.mkdir(parents=True, exist_ok=True)
    return Trainer(parse_params(params), RunDir(run_path))


def test_foreground_training_logs_evaluates_and_keeps_best(tiny_market, tmp_path):
    params = tiny_params(tiny_market, tmp_path / "runs", epochs=4)
    config = write_params(tmp_path / "params.json", params)
    result = run_cli(str(ROOT / "train.py"), "--operation", "train", "--config_path", str(config),
                     "--sub_working_dir", "fg")
    assert result.returncode == 0, result.stderr[-3000:]
    run = RunDir(tmp_path / "runs" / "fg")
    assert run.read_state().state == "finished"
    for name in ("params.json", "train_log", "latest.pth", "model_best.pth", "eval_results.jsonl"):
        assert (run.path / name).is_file(), name

    events = EventAccumulator(str(run.path), size_guidance={"scalars": 0, "images": 0}).Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("train/loss", "train/loss_cls", "train/loss_triplet", "train/lr_backbone", "train/lr_head",
                "train/batch_accuracy", "train/images_per_s", "eval/rank1", "eval/mAP", "eval/mAP_trapezoid",
                "eval/mINP"):
        assert tag in tags, tag
    assert {"eval/cmc_curve", "eval/ranked_results"} <= set(events.Tags()["images"])
    losses = [e.value for e in events.Scalars("train/loss")]
    assert len(losses) >= 12
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4, losses

    records = [json.loads(line) for line in run.eval_results.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    best = max(r["metrics"]["rank1"] for r in records)
    ckpt = load_checkpoint(run.best)
    assert ckpt["best"]["value"] == pytest.approx(best)
    best_record = next(r for r in records if r["is_best"] and r["metrics"]["rank1"] == best)
    assert ckpt["epoch"] == best_record["epoch"]

    # evaluator.py on model_best.pth reproduces the numbers recorded at that evaluation
    eval_params = tmp_path / "eval_params.json"
    eval_params.write_text(json.dumps({"model_path": str(run.best), "num_preprocess_workers": 0,
                                       "result_log_file": str(tmp_path / "result.json")}))
    result = run_cli(str(ROOT / "evaluator.py"), str(eval_params))
    assert result.returncode == 0, result.stderr[-3000:]
    offline = json.loads((tmp_path / "result.json").read_text())["metrics"]
    for key in ("rank1", "rank5", "mAP", "mAP_trapezoid", "mINP", "num_valid_queries"):
        assert offline[key] == pytest.approx(best_record["metrics"][key], abs=1e-9), key


def test_resume_between_epochs_is_exact(tiny_market, tmp_path):
    base = tiny_params(tiny_market, tmp_path, deterministic=True, evaluation_params={"type": None})
    straight = make_trainer(base, tmp_path / "straight")
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    assert straight.run() == "finished"
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers  # the run gives the process its handlers back

    first = make_trainer({**base, "epochs": 1}, tmp_path / "split")
    first.run()
    resumed = make_trainer(base, tmp_path / "split")
    resumed.restore(tmp_path / "split" / "latest.pth")
    assert resumed.progress.epoch == 1
    resumed.run()
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_stop_mid_epoch_then_resume_is_exact(tiny_market, tmp_path, monkeypatch):
    base = tiny_params(tiny_market, tmp_path, deterministic=True, evaluation_params={"type": None})
    straight = make_trainer(base, tmp_path / "straight")
    straight.run()

    stopped = make_trainer(base, tmp_path / "stopped")
    steps = stopped.parts.loader.steps_per_epoch
    monkeypatch.setattr(stopped.stop, "requested", lambda: stopped.progress.global_step == steps + 2)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    assert stopped.run() == "stopped"
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers
    assert RunDir(tmp_path / "stopped").read_state().state == "stopped"
    ckpt = load_checkpoint(tmp_path / "stopped" / "latest.pth")
    assert (ckpt["epoch"], ckpt["step"], ckpt["global_step"]) == (1, 2, steps + 2)

    resumed = make_trainer(base, tmp_path / "stopped")
    resumed.restore(tmp_path / "stopped" / "latest.pth")
    resumed.run()
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def readme_example_plugin() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Writing an evaluator"):]
    return section[section.index("```python") + len("```python"):section.index("```\n", section.index("```python") + 9)]


def test_plugin_dropped_into_evaluate_is_used_by_name(tiny_market, tmp_path):
    """The README's example evaluator, saved as a new file in evaluate/, is picked up by its name."""
    plugin = ROOT / "evaluate" / "zz_test_plugin_evaluate.py"
    plugin.write_text(readme_example_plugin())
    try:
        params = tiny_params(tiny_market, tmp_path / "runs", epochs=1,
                             evaluation_params={"type": "zz_test_plugin_evaluate"})
        config = write_params(tmp_path / "params.json", params)
        result = run_cli(str(ROOT / "train.py"), "--operation", "train", "--config_path", str(config),
                         "--sub_working_dir", "plug")
        assert result.returncode == 0, result.stderr[-3000:]
    finally:
        plugin.unlink()
    record = json.loads((tmp_path / "runs" / "plug" / "eval_results.jsonl").read_text())
    assert record["primary"] == "loo_accuracy" and 0.0 <= record["metrics"]["loo_accuracy"] <= 1.0
    assert (tmp_path / "runs" / "plug" / "model_best.pth").is_file()


def test_dotted_plugin_outside_the_repo(tiny_market, tmp_path):
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "my_eval.py").write_text(
        "def run_eval(params, model, device, **context):\n    return {'ok': 1.0}, 'ok'\n")
    params = tiny_params(tiny_market, tmp_path / "runs", epochs=1, evaluation_params={"type": "mypkg.my_eval"})
    config = write_params(tmp_path / "params.json", params)
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    result = run_cli(str(ROOT / "train.py"), "--operation", "train", "--config_path", str(config),
                     "--sub_working_dir", "dotted", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "runs" / "dotted" / "eval_results.jsonl").read_text())["metrics"] == {"ok": 1.0}


def test_unknown_evaluator_lists_the_available_ones(tiny_market, tmp_path):
    params = tiny_params(tiny_market, tmp_path / "runs", evaluation_params={"type": "lfw_evaluate"})
    config = write_params(tmp_path / "params.json", params)
    result = run_cli(str(ROOT / "train.py"), "--operation", "train", "--config_path", str(config))
    assert result.returncode == 2
    assert "unknown evaluator 'lfw_evaluate'; available: classification_evaluate" in result.stderr
    assert "market_evaluate" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_part_model_with_every_method_trains_through_the_engine(tiny_market, tmp_path):
    """PCB + global branch + spectral transform + AM-softmax schedule + feature mask + triplet, then a distilled
    student taught by that checkpoint: both train through the same loop and write their components to the log."""
    teacher_params = tiny_params(
        tiny_market, tmp_path, epochs=1, evaluation_params={"type": None},
        model_params={"pcb_n_parts": 2, "feature_dim": 32, "feature_global_dim": 16, "spectral_trans": 0.5,
                      "feature_mask": True, "random_drop_branchs": 1},
        asoftmax_params={"margin": [0.1, 0.2], "step": 3, "scale": 16.0})
    teacher = make_trainer(teacher_params, tmp_path / "teacher")
    assert teacher.run() == "finished"
    assert teacher.parts.criterion.criterion.margin == 0.2  # the schedule advanced with the global step
    student_params = tiny_params(tiny_market, tmp_path, epochs=1, evaluation_params={"type": None},
                                 distillation_params={"teacher_checkpoint": str(tmp_path / "teacher" / "latest.pth"),
                                                      "logit_weight": 1.0, "feature_weight": 1.0})
    student = make_trainer(student_params, tmp_path / "student")
    before = {k: v.clone() for k, v in student.parts.criterion.criterion.distiller.teacher.state_dict().items()}
    assert student.run() == "finished"
    log = (tmp_path / "student" / "train_log").read_text() if (tmp_path / "student" / "train_log").exists() else ""
    events = EventAccumulator(str(tmp_path / "student")).Reload()
    assert {"train/loss_kd_logits", "train/loss_kd_features"} <= set(events.Tags()["scalars"]), log
    for key, value in student.parts.criterion.criterion.distiller.teacher.state_dict().items():
        assert torch.equal(value, before[key]), f"the teacher changed: {key}"


def test_offline_evaluation_sees_the_features_of_the_on_the_fly_evaluation(tiny_market, tmp_path,
                                                                            restore_process_state):
    """bf16 training with channels-last: evaluator.py (given the run directory) rebuilds the model in the precision
    and memory format of the on-the-fly evaluation, so the features, and hence every metric, are the recorded ones
    (channels-last convolutions round differently from contiguous ones)."""
    import evaluator
    from data.formats import open_reid_eval
    from evaluate.market_evaluate import compute_features

    params = tiny_params(tiny_market, tmp_path, epochs=1, amp="bf16", channels_last=True)
    trainer = make_trainer(params, tmp_path / "bf16")
    assert trainer.run() == "finished"
    trainer.model.eval()
    query, gallery = open_reid_eval(tiny_market)
    with torch.no_grad():
        on_the_fly = compute_features(trainer.params, trainer.model, trainer.device, query, gallery)

    cache, result = tmp_path / "features.npz", tmp_path / "result.json"
    eval_params = write_params(tmp_path / "eval_params.json", {
        "model_path": str(tmp_path / "bf16"), "num_preprocess_workers": 0, "feature_path": str(cache),
        "result_log_file": str(result)})
    assert evaluator.main([str(eval_params)]) == 0
    offline = np.load(cache)
    assert np.array_equal(offline["query"], on_the_fly[0]) and np.array_equal(offline["gallery"], on_the_fly[1])
    recorded = RunDir(tmp_path / "bf16").read_eval_results()[-1]["metrics"]
    assert json.loads(result.read_text())["metrics"] == recorded


def test_amp_auto_uses_bf16_only_where_the_hardware_computes_it(monkeypatch):
    from engine.trainer import native_bf16, resolve_amp

    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) == ("bf16" if native_bf16(cpu) else "none")
    assert resolve_amp("bf16", cpu) == "bf16" and resolve_amp("none", cpu) == "none"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert resolve_amp("auto", cpu) == "bf16"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert resolve_amp("auto", cpu) == "none"
