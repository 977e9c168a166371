"""got10k_evaluate end to end: reference trackers through evaluator.py and through the scoring command give identical
numbers; bounded on-the-fly runs; OPE on a LaSOT-layout folder; TensorBoard output; refusals."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboardX import SummaryWriter

from data.synthetic import Got10kSpec, generate_got10k
from engine.params import evaluation_params_class
from evaluate.got10k_evaluate import Got10kOptions, run_eval
from trackers.reference import reference_factory

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def got10k(tmp_path_factory):
    root = tmp_path_factory.mktemp("g10") / "got10k"
    generate_got10k(root, Got10kSpec(num_train_seqs=1, num_val_seqs=3, min_frames=12, max_frames=16), workers=1)
    return root


class Params:
    """What got10k_evaluate reads of a run's params: its evaluation section."""

    def __init__(self, **keys):
        self.evaluation_params = evaluation_params_class(Got10kOptions)(**keys)


def run(args, cwd=ROOT):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_evaluator_and_scoring_command_agree_and_oracles_bound_the_scale(got10k, tmp_path):
    metrics = {}
    for name in ("first_box", "noisy_truth"):
        eval_params = tmp_path / f"{name}.json"
        log = tmp_path / f"{name}_result.json"
        eval_params.write_text(json.dumps({"model_path": f"reference:{name}", "benchmark_type": "got10k_evaluate",
                                           "data_dir": str(got10k), "subset": "val",
                                           "result_dir": str(tmp_path / "results"), "result_log_file": str(log)}))
        done = run(["evaluator.py", str(eval_params)])
        assert done.returncode == 0, done.stderr
        metrics[name] = json.loads(log.read_text())["metrics"]
        scored = run(["-m", "evaluate.got10k_evaluate", "--data", str(got10k), "--subset", "val", "--results",
                      str(tmp_path / "results" / f"reference_{name}")])
        assert scored.returncode == 0, scored.stderr
        table, last = scored.stdout.strip().rsplit("\n", 1)
        assert "GOT-10k_Val_000003" in table
        from_command = json.loads(last)
        assert from_command.pop("primary") == "ao"
        assert from_command == metrics[name], "the command scores the written folder to the same numbers"
        result = tmp_path / "results" / f"reference_{name}" / "GOT-10k_Val_000001" / "GOT-10k_Val_000001_001.txt"
        rows = result.read_text().splitlines()
        first_box = (got10k / "val" / "GOT-10k_Val_000001" / "groundtruth.txt").read_text().splitlines()[0]
        assert [float(v) for v in rows[0].split(",")] == [float(v) for v in first_box.split(",")]
        assert all(len(row.split(",")) == 4 and row.split(",")[0].count(".") == 1 for row in rows)
    assert metrics["first_box"]["ao"] < 0.35 < 0.6 < metrics["noisy_truth"]["ao"], metrics
    assert metrics["noisy_truth"]["sr50"] > 0.8 and metrics["first_box"]["sr50"] < 0.35
    assert set(metrics["first_box"]) >= {"ao", "sr50", "sr75", "fps"} and metrics["first_box"]["fps"] > 0


def test_bounded_on_the_fly_run_writes_into_the_run_and_logs_to_tensorboard(got10k, tmp_path):
    params = Params(data_dir=str(got10k), max_sequences=2, max_frames=6, visualize_sequences=2)
    writer = SummaryWriter(str(tmp_path / "run"))
    metrics, primary = run_eval(params, reference_factory("noisy_truth"), None, writer=writer, global_step=7,
                                run_dir=str(tmp_path / "run"))
    writer.close()
    assert primary == "ao" and metrics["sequences"] == 2 and metrics["frames"] <= 2 * 5
    folders = sorted(p.name for p in (tmp_path / "run" / "tracking_results" / "step_00000007").iterdir())
    assert folders == ["GOT-10k_Val_000001", "GOT-10k_Val_000003"], "evenly spread over the list"
    rows = (tmp_path / "run/tracking_results/step_00000007/GOT-10k_Val_000003/GOT-10k_Val_000003_001.txt")
    assert len(rows.read_text().splitlines()) == 6
    events = EventAccumulator(str(tmp_path / "run"), size_guidance={"images": 0, "tensors": 0}).Reload()
    assert {"eval/success_curve", "eval/tracked_frames"} <= set(events.Tags()["images"])
    strip = events.Images("eval/tracked_frames")[0]
    assert strip.step == 7 and strip.height > 200  # two rows of frames


def test_ope_metrics_on_a_lasot_layout(tmp_path):
    from PIL import Image

    for name, shift in (("cat-1", 0), ("cat-2", 3)):
        seq = tmp_path / "lasot" / "cat" / name
        (seq / "img").mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (64, 48), (i * 30, 0, 0)).save(seq / "img" / f"{i + 1:08d}.jpg")
        (seq / "groundtruth.txt").write_text("".join(f"{10 + i * shift},{10},12,9\n" for i in range(6)))
        (seq / "full_occlusion.txt").write_text("0,0,0,0,0,0")
        (seq / "out_of_view.txt").write_text("0,0,0,0,0,0")
    params = Params(data_dir=str(tmp_path / "lasot"), result_dir=str(tmp_path / "results"), tracker_name="still")
    metrics, primary = run_eval(params, reference_factory("first_box"), None)
    assert primary == "success_score"
    # by hand: IoU of the kept first box with the box shifted by 3·i px (width 12, height 9), 21 thresholds
    # (strictly above), curves averaged over the two sequences
    thresholds = np.linspace(0, 1, 21)
    ious = {0: np.ones(6), 3: np.array([(12 - 3 * i) * 9 / (2 * 12 * 9 - (12 - 3 * i) * 9) for i in range(6)])}
    expected = np.mean([np.mean([np.mean(ious[shift] > t) for t in thresholds]) for shift in (0, 3)])
    assert metrics["success_score"] == pytest.approx(expected, abs=1e-12)
    assert {"precision_score", "normalized_precision_score", "fps"} <= set(metrics)
    assert (tmp_path / "results" / "still" / "cat-1.txt").is_file()


def test_refusals_name_the_file(got10k, tmp_path):
    results = tmp_path / "results"
    params = Params(data_dir=str(got10k), result_dir=str(results), tracker_name="t")
    run_eval(params, reference_factory("first_box"), None)
    (results / "t" / "GOT-10k_Val_000002" / "GOT-10k_Val_000002_time.txt").unlink()
    done = run(["-m", "evaluate.got10k_evaluate", "--data", str(got10k), "--results", str(results / "t")])
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "GOT-10k_Val_000002_time.txt: missing" in done.stderr
    missing = run(["-m", "evaluate.got10k_evaluate", "--data", str(got10k), "--results", str(tmp_path / "none")])
    assert missing.returncode == 2 and "is not a directory" in missing.stderr
    test_root = tmp_path / "with_test"
    shutil.copytree(got10k, test_root)
    gt = test_root / "val" / "GOT-10k_Val_000001" / "groundtruth.txt"
    gt.write_text(gt.read_text().splitlines()[0] + "\n")
    for label in ("absence.label", "cover.label", "cut_by_image.label"):
        (gt.parent / label).unlink()
    done = run(["-m", "evaluate.got10k_evaluate", "--data", str(test_root), "--results", str(results / "t")])
    assert done.returncode == 2 and "only the first frame is annotated" in done.stderr


def test_reference_tracker_needs_data_dir(tmp_path):
    eval_params = tmp_path / "e.json"
    eval_params.write_text(json.dumps({"model_path": "reference:first_box", "result_log_file": str(tmp_path / "r")}))
    done = run(["evaluator.py", str(eval_params)])
    assert done.returncode == 2 and "data_dir: required when model_path is a reference tracker" in done.stderr
