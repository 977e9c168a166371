"""A resumed run keeps the best model and the evaluation history of the run it continues, and runs every evaluation
its schedule owes exactly once (real processes that die abruptly: os._exit after a step, SIGKILL mid-evaluation).

The evaluator is `tests/plugins/scripted_eval`, whose score at each global step the test dictates, so "better" and
"worse" do not depend on what a tiny network happens to learn.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import tiny_params, write_params
from engine.checkpoint import load_checkpoint
from engine.distributed import FAULT_ENV, FAULT_EXIT_CODE
from engine.run_dir import RunDir

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = Path(__file__).resolve().parent / "plugins"
STEPS = 2  # per epoch: small_data (4 identities × 2 images) with P=2, K=2


def setup_run(tmp_path: Path, data: Path, epochs: int, scores: dict[int, float], kill_at_step=None) -> Path:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"score_by_step": {str(k): v for k, v in scores.items()},
                                  "kill_at_step": kill_at_step}))
    params = tiny_params(data, tmp_path / "runs", epochs=epochs, img_h=32, img_w=16, num_preprocess_workers=0,
                         batch_sampling_params={"P": 2, "K": 2},
                         evaluation_params={"type": "scripted_eval.evaluator", "epoch": 1, "visualize_queries": 0})
    return write_params(tmp_path / "params.json", params)


def train(config: Path, *extra: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(PLUGINS), str(ROOT)]),
           "REID_SCRIPTED_EVAL": str(config.parent / "script.json")}
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    return subprocess.run([sys.executable, str(ROOT / "train.py"), "--operation", "train", "--config_path",
                           str(config), "--sub_working_dir", "run", *extra], capture_output=True, text=True,
                          timeout=300, env=env)


def history(run: RunDir) -> list[tuple[int, float, bool]]:
    return [(r["epoch"], r["metrics"]["score"], r["is_best"]) for r in run.read_eval_results()]


def test_resume_from_an_epoch_snapshot_keeps_the_better_best(small_data, tmp_path):
    # epoch 1 scores 0.5; the process dies during epoch 2 (after its first step)
    config = setup_run(tmp_path, small_data, epochs=3, scores={2: 0.5, 4: 0.3, 6: 0.4})
    died = train(config, fault=f"0:{STEPS + 1}")
    assert died.returncode == FAULT_EXIT_CODE, died.stderr[-2000:]
    run = RunDir(tmp_path / "runs" / "run")
    assert load_checkpoint(run.epoch_checkpoint(1))["best"]["value"] == 0.5  # the snapshot knows its evaluation

    resumed = train(config, "--resume", "1")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert history(run) == [(1, 0.5, True), (2, 0.3, False), (3, 0.4, False)]
    best = load_checkpoint(run.best)
    assert (best["best"]["value"], best["epoch"]) == (0.5, 1)
    final = load_checkpoint(run.latest)
    assert final["best"]["value"] == 0.5 and [r["epoch"] for r in final["eval_history"]] == [1, 2, 3]
    assert run.read_state().best_value == 0.5


def test_resume_never_replaces_a_better_model_best_from_the_abandoned_continuation(small_data, tmp_path):
    config = setup_run(tmp_path, small_data, epochs=3, scores={2: 0.5, 4: 0.3, 6: 0.9})
    assert train(config).returncode == 0
    run = RunDir(tmp_path / "runs" / "run")
    assert load_checkpoint(run.best)["epoch"] == 3
    # go back to epoch 1; this time epoch 3 scores 0.6, worse than the kept 0.9
    setup_run(tmp_path, small_data, epochs=3, scores={2: 0.5, 4: 0.3, 6: 0.6})
    resumed = train(config, "--resume", "1")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    best = load_checkpoint(run.best)
    assert (best["best"]["value"], best["epoch"]) == (0.9, 3)
    assert history(run)[3:] == [(2, 0.3, False), (3, 0.6, False)]
    assert "made after this checkpoint" in run.log.read_text()


def test_a_run_killed_during_its_final_evaluation_evaluates_once_on_resume(small_data, tmp_path):
    config = setup_run(tmp_path, small_data, epochs=2, scores={2: 0.2, 4: 0.7}, kill_at_step=2 * STEPS)
    died = train(config)
    assert died.returncode == -9, died.stderr[-2000:]  # SIGKILL in the middle of the last evaluation
    run = RunDir(tmp_path / "runs" / "run")
    assert history(run) == [(1, 0.2, True)]
    assert load_checkpoint(run.latest)["eval_pending"] is True

    resumed = train(config, "--resume", "latest")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert history(run) == [(1, 0.2, True), (2, 0.7, True)]
    assert load_checkpoint(run.best)["epoch"] == 2 and run.read_state().state == "finished"
    assert load_checkpoint(run.latest)["eval_pending"] is False
    again = train(config, "--resume", "latest")  # nothing is owed any more: nothing runs twice
    assert again.returncode == 0 and len(history(run)) == 2
