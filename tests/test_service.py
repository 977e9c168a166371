"""train.py as a service: a detached run that status and stop_train really reach, then --resume latest."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import tiny_params, wait_for, write_params
from engine.checkpoint import load_checkpoint
from engine.run_dir import RunDir, pid_alive

ROOT = Path(__file__).resolve().parent.parent
TRAIN = str(ROOT / "train.py")


def train_cli(*args, timeout=300):
    return subprocess.run([sys.executable, TRAIN, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_start_status_stop_resume(tiny_market, tmp_path):
    params = tiny_params(tiny_market, tmp_path / "runs", epochs=500, evaluation_params={"type": None})
    config = write_params(tmp_path / "params.json", params)
    started = time.monotonic()
    result = train_cli("--operation", "start_train", "--config_path", str(config), "--sub_working_dir", "bg")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 30, "start_train must return at once"
    run = RunDir(tmp_path / "runs" / "bg")
    assert "tensorboard --logdir" in result.stdout and str(run.log) in result.stdout
    pid = int(run.pid_file.read_text())
    try:
        assert pid_alive(pid)
        wait_for(lambda: (run.read_state().global_step or 0) >= 3, 240, "the run to make progress")
        status = train_cli("--operation", "status", "--config_path", str(config))
        assert status.returncode == 0
        line = next(l for l in status.stdout.splitlines() if l.startswith("bg "))
        assert "running" in line and str(pid) in line

        stop = train_cli("--operation", "stop_train", "--config_path", str(config), "--sub_working_dir", "bg")
        assert stop.returncode == 0, stop.stdout + stop.stderr
        wait_for(lambda: not pid_alive(pid), 60, "the process to exit")
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    state = run.read_state()
    assert state.state == "stopped"
    ckpt = load_checkpoint(run.latest)
    assert ckpt["global_step"] >= 3
    status = train_cli("--operation", "status", "--config_path", str(config))
    assert "stopped" in next(l for l in status.stdout.splitlines() if l.startswith("bg "))
    assert "Traceback" not in run.log.read_text()

    # A resumed run may change its length: finish the epoch it was stopped in and one more. (The stop may land on
    # the last step of an epoch, leaving nothing of that epoch to train.)
    resume_params = write_params(tmp_path / "resume.json", {**params, "epochs": ckpt["epoch"] + 2})
    resumed = train_cli("--operation", "train", "--config_path", str(resume_params), "--sub_working_dir", "bg",
                        "--resume", "latest")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = load_checkpoint(run.latest)
    assert final["epoch"] == ckpt["epoch"] + 2
    assert final["global_step"] == ckpt["global_step"] - ckpt["step"] + 2 * final["steps_per_epoch"]
    assert run.read_state().state == "finished"
    assert f"resumed from {run.latest}" in run.log.read_text()


def test_kill_9_is_reported_as_failed_and_resumable(tiny_market, tmp_path):
    params = tiny_params(tiny_market, tmp_path / "runs", epochs=500, evaluation_params={"type": None})
    config = write_params(tmp_path / "params.json", params)
    assert train_cli("--operation", "start_train", "--config_path", str(config), "--sub_working_dir",
                     "k").returncode == 0
    run = RunDir(tmp_path / "runs" / "k")
    pid = int(run.pid_file.read_text())
    try:
        wait_for(lambda: run.latest.is_file(), 240, "the first epoch checkpoint")
    finally:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid), 30, "the process to die")
    status = train_cli("--operation", "status", "--config_path", str(config))
    assert "failed" in next(l for l in status.stdout.splitlines() if l.startswith("k "))
    assert load_checkpoint(run.latest)["epoch"] >= 1


def test_refuses_to_overwrite_an_existing_run(tiny_market, tmp_path):
    params = tiny_params(tiny_market, tmp_path / "runs")
    config = write_params(tmp_path / "params.json", params)
    run_path = tmp_path / "runs" / "taken"
    run_path.mkdir(parents=True)
    (run_path / "precious.txt").write_text("keep me")
    result = train_cli("--operation", "start_train", "--config_path", str(config), "--sub_working_dir", "taken")
    assert result.returncode == 2
    assert "already exists" in result.stderr and "--resume latest" in result.stderr
    assert (run_path / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in run_path.iterdir()) == ["precious.txt"]


def test_sub_working_dir_cannot_escape_working_dir(tiny_market, tmp_path):
    config = write_params(tmp_path / "params.json", tiny_params(tiny_market, tmp_path / "runs"))
    result = train_cli("--operation", "start_train", "--config_path", str(config), "--sub_working_dir", "../evil")
    assert result.returncode == 2 and "plain directory name" in result.stderr
    assert not (tmp_path / "evil").exists()


def test_resume_with_changed_model_is_refused(tiny_market, tmp_path):
    params = tiny_params(tiny_market, tmp_path / "runs", epochs=1, evaluation_params={"type": None})
    config = write_params(tmp_path / "params.json", params)
    assert train_cli("--operation", "train", "--config_path", str(config), "--sub_working_dir", "r").returncode == 0
    changed = write_params(tmp_path / "changed.json",
                           {**params, "epochs": 2, "model_params": {**params["model_params"], "feature_dim": 64}})
    result = train_cli("--operation", "train", "--config_path", str(changed), "--sub_working_dir", "r",
                       "--resume", "latest")
    assert result.returncode == 2 and "cannot resume with different model_params" in result.stderr
    missing = train_cli("--operation", "train", "--config_path", str(config), "--sub_working_dir", "r",
                        "--resume", "7")
    assert missing.returncode == 2 and "epoch_007.pth does not exist" in missing.stderr
    assert json.loads((tmp_path / "runs" / "r" / "run_state.json").read_text())["state"] == "finished"


def test_readme_lists_exactly_the_keys_a_resumed_run_may_change():
    import re

    from engine.service import RESUMABLE_CHANGES

    readme = (ROOT / "README.md").read_text()
    start = readme.index("A resumed run may change")
    passage = readme[start:readme.index("anything else is refused", start)]
    assert set(re.findall(r"`(\w+)`", passage)) == RESUMABLE_CHANGES
