"""What a user of the service sees: the commands it prints run as printed, a stop sent to the whole process group
(as `timeout`, systemd and job schedulers send it) is a graceful stop, start_train returns without loading torch and
refuses unusable evaluation data before anything runs, and status says why a run failed."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import tiny_params, wait_for, write_params
from engine.checkpoint import load_checkpoint
from engine.run_dir import RunDir, RunState, pid_alive
from engine.service import status_table

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run_printed(command: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a command line exactly as the tool printed it."""
    return subprocess.run(command, shell=True, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=ENV)


def printed(output: str, label: str) -> str:
    match = re.search(rf"(?:^\s*|INFO ){label}:\s+(.+)$", output, re.MULTILINE)
    assert match, f"no '{label}:' line in {output!r}"
    return match.group(1).strip()


def test_start_train_hints_run_as_printed_and_torch_is_not_loaded(tiny_market, tmp_path):
    params = tiny_params(tiny_market, Path("runs"), epochs=1, num_preprocess_workers=0)
    write_params(tmp_path / "params.json", params)
    # start_train in a process that reports whether it imported torch: validation and the launch must not need it
    code = ("import sys, train; code = train.main(['--operation', 'start_train', '--config_path', 'params.json', "
            "'--sub_working_dir', 'hinted']); print('torch loaded:', 'torch' in sys.modules); sys.exit(code)")
    started = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                             env={**ENV, "PYTHONPATH": str(ROOT)})
    assert started.returncode == 0, started.stderr
    assert "torch loaded: False" in started.stdout
    assert "<" not in started.stdout  # no placeholders

    status = run_printed(printed(started.stdout, "status"), tmp_path)
    assert status.returncode == 0 and "hinted" in status.stdout, status.stderr
    stop = run_printed(printed(started.stdout, "stop"), tmp_path)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    run = RunDir(tmp_path / "runs" / "hinted")
    assert run.read_state().state == "stopped"

    resumed = run_printed(printed(stop.stdout, "resume"), tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    wait_for(lambda: run.read_state().state in ("finished", "failed"), 240, "the resumed run to finish")
    assert run.read_state().state == "finished", run.log.read_text()[-3000:]


def test_group_sigterm_stops_gracefully_and_the_logged_resume_command_runs(tiny_market, tmp_path):
    """SIGTERM to every process of the group, DataLoader workers included (before: the workers died first and the
    run failed with 'DataLoader worker ... is killed by signal: Terminated')."""
    params = tiny_params(tiny_market, Path("runs"), epochs=20, num_preprocess_workers=2,
                         evaluation_params={"type": None})
    write_params(tmp_path / "params.json", params)
    run = RunDir(tmp_path / "runs" / "group")
    process = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--operation", "train", "--config_path",
                                "params.json", "--sub_working_dir", "group"], cwd=tmp_path, env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_for(lambda: run.log.is_file() and "(global step 2)" in run.log.read_text(), 180, "training steps")
        os.killpg(process.pid, signal.SIGTERM)
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, output[-3000:]
    assert "Traceback" not in output and "killed by signal" not in output
    state = run.read_state()
    assert state.state == "stopped", state
    saved = load_checkpoint(run.latest)
    assert saved["global_step"] == state.global_step >= 3

    # the logged command continues the run; make it short
    write_params(tmp_path / "params.json", {**params, "epochs": saved["epoch"] + 1})
    resumed = run_printed(printed(run.log.read_text(), "resume with"), tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert run.read_state().state == "finished"
    assert load_checkpoint(run.latest)["epoch"] == saved["epoch"] + 1


def test_start_train_refuses_missing_or_packed_evaluation_data_up_front(tiny_market, tmp_path):
    def start(params: dict) -> subprocess.CompletedProcess:
        write_params(tmp_path / "params.json", params)
        return subprocess.run([sys.executable, str(ROOT / "train.py"), "--operation", "start_train",
                               "--config_path", "params.json", "--sub_working_dir", "r"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120, env=ENV)

    missing = start(tiny_params(tiny_market, Path("runs"), evaluation_params={"data_dir": "nowhere"}))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "evaluation_params.data_dir: nowhere does not exist" in missing.stderr
    assert not (tmp_path / "runs").exists()

    subprocess.run([sys.executable, "-m", "data.pack", str(tiny_market), str(tmp_path / "packed")], check=True,
                   cwd=ROOT, capture_output=True, timeout=120)
    packed = start(tiny_params(tmp_path / "packed", Path("runs")))
    assert packed.returncode == 2 and "Traceback" not in packed.stderr
    message = packed.stderr
    assert "is an LMDB pack of training images" in message and "evaluation_params.data_dir" in message
    assert json.dumps(str(tiny_market.resolve())) in message  # the pack's source is suggested
    assert not (tmp_path / "runs").exists()

    # the shipped params.json (synthetic_data set) pointed at a real dataset: say to remove synthetic_data
    shutil.copytree(tiny_market, tmp_path / "real", ignore=shutil.ignore_patterns("synthetic_manifest.json"))
    real = start(tiny_params(tmp_path / "real", Path("runs"), synthetic_data={"type": "market"}))
    assert real.returncode == 2 and "Traceback" not in real.stderr
    assert 'to train on ' in real.stderr and 'remove "synthetic_data" from the params file' in real.stderr
    assert not (tmp_path / "runs").exists()


def test_status_says_why_a_run_failed(tmp_path):
    failed = RunDir(tmp_path / "failed")
    failed.path.mkdir()
    failed.write_state(RunState(state="failed", pid=None, epochs=3, message="data: x.jpg is not an image\n"))
    vanished = RunDir(tmp_path / "vanished")
    vanished.path.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    vanished.write_state(RunState(state="running", pid=dead.pid, epochs=3))
    vanished.log.write_text("2026-01-01 00:00:00,000 INFO epoch 1/3 step 1/9\n"
                            "2026-01-01 00:00:01,000 ERROR CUDA out of memory\n")
    assert not pid_alive(dead.pid)
    table = status_table(tmp_path)
    assert re.search(r"^failed\s+failed\s+.*data: x.jpg is not an image$", table, re.MULTILINE), table
    assert re.search(rf"^vanished\s+failed\s+.*process {dead.pid} ended without recording why \(killed\?\); last "
                     r"error in train_log: CUDA out of memory$", table, re.MULTILINE), table


def test_log_lines_and_progress_bars_share_the_terminal(tiny_market, tmp_path):
    """Under a terminal (progress bars on) each log line is printed above the bar, never glued to it; epochs are
    counted from 1 in the log as in the bar."""
    import pty

    write_params(tmp_path / "params.json", tiny_params(tiny_market, Path("runs"), epochs=1, num_preprocess_workers=0,
                                                        evaluation_params={"type": None}))
    main, child = pty.openpty()
    process = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--operation", "train", "--config_path",
                                "params.json", "--sub_working_dir", "tty"], cwd=tmp_path, env=ENV, stdin=child,
                               stdout=child, stderr=child)
    os.close(child)
    chunks = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=60)
    os.close(main)
    screen = b"".join(chunks).decode("utf-8", errors="replace")
    assert process.returncode == 0, screen[-3000:]
    step_lines = [line for line in re.split(r"[\r\n]", screen) if " INFO epoch " in line]
    assert step_lines, screen[-3000:]
    for line in step_lines:  # a log line that starts where the bar was drawn would carry the bar's text before it
        assert re.match(r"^\s*\d{4}-\d\d-\d\d [\d:,]+ INFO epoch 1/1 step \d+/\d+ ", line), line
