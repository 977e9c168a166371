"""Distributed training (engine.distributed): environment and device plumbing (CUDA mocked), the CPU SyncBatchNorm,
DDP on gloo equal to one process on the same global batch, resume on another world size, the launcher and its
start/status/stop, and a failed or hung rank making the others exit instead of hanging."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import tiny_params, wait_for, write_params
from engine import distributed as D
from engine.dist_env import process_count
from engine.checkpoint import load_checkpoint
from engine.errors import UserError
from engine.params import parse_params
from engine.run_dir import RunDir, pid_alive

ROOT = Path(__file__).resolve().parent.parent
TRAIN = str(ROOT / "train.py")


# ---------------------------------------------------------------------------------------------------------------------
# plumbing (fast)


def test_env_single_process_and_torchrun_variables():
    assert D.DistEnv.from_environ({}) == D.DistEnv(0, 1, 0, 1)
    env = D.DistEnv.from_environ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                                  "MASTER_ADDR": "node0", "MASTER_PORT": "29500"})
    assert (env.rank, env.world_size, env.local_rank, env.local_world_size) == (3, 4, 1, 2)
    assert env.is_distributed and not env.is_main


@pytest.mark.parametrize("environ, message", [
    ({"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "a", "MASTER_PORT": "1"}, "RANK=2 is not in"),
    ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x' is not an integer"),
    ({"RANK": "0", "WORLD_SIZE": "2"}, "MASTER_ADDR/MASTER_PORT are not set"),
    ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "a",
      "MASTER_PORT": "1"}, "LOCAL_RANK=2"),
])
def test_env_rejects_inconsistent_variables(environ, message):
    with pytest.raises(UserError, match=message):
        D.DistEnv.from_environ(environ)


def test_device_placement_with_mocked_cuda(monkeypatch):
    single, worker1 = D.DistEnv(), D.DistEnv(rank=3, world_size=4, local_rank=1, local_world_size=2)
    assert D.device_for([], worker1) == torch.device("cpu")
    assert D.device_for([2], single, cuda_available=True, device_count=4) == torch.device("cuda", 2)
    assert D.device_for([2, 3], worker1, cuda_available=True, device_count=4) == torch.device("cuda", 3)
    with pytest.raises(UserError, match="CUDA is not available"):
        D.device_for([0], single, cuda_available=False)
    with pytest.raises(UserError, match="one device id per process"):
        D.device_for([0, 1, 2], worker1, cuda_available=True, device_count=4)
    with pytest.raises(UserError, match="one process trains on one device"):
        D.device_for([0, 1], single, cuda_available=True, device_count=4)
    with pytest.raises(UserError, match="device 5 does not exist"):
        D.device_for([4, 5], worker1, cuda_available=True, device_count=4)

    # the trainer's entry point reads torch.cuda and the torchrun variables
    from engine.trainer import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    params = parse_params({"batches_dir": "x", "parallels": [0, 1]})
    assert resolve_device(params, D.DistEnv(rank=1, world_size=2, local_rank=1, local_world_size=2)) == \
        torch.device("cuda", 1)


def test_backend_and_ddp_arguments():
    assert D.backend_for(torch.device("cpu")) == "gloo"
    assert D.backend_for(torch.device("cuda", 1)) == "nccl"
    cuda = D.ddp_kwargs(torch.device("cuda", 1), find_unused_parameters=True)
    assert cuda["device_ids"] == [1] and cuda["output_device"] == 1 and cuda["find_unused_parameters"]
    cpu = D.ddp_kwargs(torch.device("cpu"), find_unused_parameters=False)
    assert "device_ids" not in cpu and not cpu["find_unused_parameters"]
    assert cpu.get("forward_sync_buffers", cpu.get("broadcast_buffers")) is False


def test_process_count_from_nproc_and_parallels():
    assert process_count([], None) == 1
    assert process_count([], 3) == 3
    assert process_count([0, 1], None) == 2
    assert process_count([4], None) == 1
    with pytest.raises(UserError, match="contradicts parallels"):
        process_count([0, 1], 3)
    with pytest.raises(UserError, match="one process per GPU"):
        process_count([0], 2)
    with pytest.raises(UserError, match="--nproc must be"):
        process_count([], 0)


def test_worker_environment():
    env = D.worker_env({"PATH": "/bin"}, rank=1, world_size=2, port=1234, launcher_pid=99, cpu_threads=1)
    assert {k: env[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                                "MASTER_PORT", D.LAUNCHER_PID_ENV, "OMP_NUM_THREADS")} == {
        "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "1234", D.LAUNCHER_PID_ENV: "99", "OMP_NUM_THREADS": "1"}
    assert D.worker_env({"OMP_NUM_THREADS": "4"}, 0, 2, 1, 1, cpu_threads=1)["OMP_NUM_THREADS"] == "4"
    assert "OMP_NUM_THREADS" not in D.worker_env({}, 0, 2, 1, 1, cpu_threads=None)  # GPU workers


class FakeWorker:
    """Stands in for a worker process: exits with `code` at its second poll."""

    def __init__(self, args, env, code):
        self.args, self.env, self.code, self.polls = args, env, code, 0
        self.pid = 1000 + int(env["RANK"])
        self.signals = []

    def poll(self):
        self.polls += 1
        return self.code if self.polls > 1 else None

    def send_signal(self, sig):
        self.signals.append(sig)

    def terminate(self):
        self.code = -15

    def kill(self):
        self.code = -9

    def wait(self, timeout=None):
        return self.code


def fake_popen(monkeypatch, codes):
    started = []

    def popen(args, env, **kwargs):
        started.append(FakeWorker(args, env, codes[len(started)]))
        return started[-1]

    monkeypatch.setattr(D.subprocess, "Popen", popen)
    return started


def test_launcher_starts_one_worker_per_gpu_with_the_torchrun_variables(monkeypatch):
    started = fake_popen(monkeypatch, [0, 0])
    code, message = D.launch_workers(["--operation", "train", "--worker"], 2, cpu=False, script="train.py",
                                     poll_s=0.01)
    assert (code, message) == (0, "")
    assert [w.args[1:] for w in started] == [["train.py", "--operation", "train", "--worker"]] * 2
    assert [(w.env["RANK"], w.env["LOCAL_RANK"], w.env["WORLD_SIZE"]) for w in started] == [("0", "0", "2"),
                                                                                          ("1", "1", "2")]
    assert started[0].env["MASTER_PORT"] == started[1].env["MASTER_PORT"]
    assert all(w.env[D.LAUNCHER_PID_ENV] == str(os.getpid()) for w in started)


def test_launcher_reports_the_failed_rank_and_stops_the_others(monkeypatch):
    started = fake_popen(monkeypatch, [None, 3])  # rank 0 never exits by itself
    code, message = D.launch_workers(["x"], 2, cpu=True, script="train.py", grace_s=0.05, poll_s=0.01)
    assert code == 3 and message == "worker rank 1 exited with code 3"
    assert started[0].code == -15  # terminated after the grace period


def test_several_gpu_ids_make_train_py_a_launcher(monkeypatch, tiny_market, tmp_path):
    """parallels [0, 1] in a plain `python train.py`: one worker per id (CUDA mocked; the launcher itself is
    replaced, the devices it would give its workers are checked)."""
    import train
    from engine import service

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    calls = []
    monkeypatch.setattr(service, "train_launcher", lambda launch, nproc, attached, console: calls.append(nproc) or 0)
    config = write_params(tmp_path / "p.json", tiny_params(tiny_market, tmp_path / "runs", parallels=[0, 1]))
    assert train.main(["--operation", "train", "--config_path", str(config), "--sub_working_dir", "g"]) == 0
    assert calls == [2]
    assert D.check_local_devices([0, 1], 2) == [torch.device("cuda", 0), torch.device("cuda", 1)]
    with pytest.raises(UserError, match="contradicts parallels"):
        train.main(["--operation", "train", "--config_path", str(config), "--sub_working_dir", "h", "--nproc", "3"])
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match="device 1 does not exist"):
        train.main(["--operation", "train", "--config_path", str(config), "--sub_working_dir", "i"])


def test_lr_scaling_rule_and_step_remap():
    assert D.scaled_lr(0.01, "none", 4) == 0.01
    assert D.scaled_lr(0.01, "linear", 4) == pytest.approx(0.04)
    assert D.remap_step(0, 6, 3) == 0
    assert D.remap_step(3, 6, 3) == 1  # half an epoch of 6 steps = 1.5 steps of 3: rounded down
    assert D.remap_step(1, 3, 6) == 2
    assert D.remap_step(5, 5, 5) == 5


@pytest.mark.parametrize("overrides, unused", [
    ({}, False),
    ({"tri_loss_params": {"lambda_cls": 0.0}}, True),  # the classifier gets no gradient
    ({"model_params": {"pcb_n_parts": 2, "feature_dim": 32, "random_drop_branchs": 1}}, True),
    ({"model_params": {"spectral_trans": 0.3}}, False),  # the spectral head is in every step's loss
    ({"model_params": {"spectral_trans": 0.3, "spectral_start_accuracy": 0.9}}, True),
])
def test_ddp_is_told_when_a_step_can_leave_parameters_unused(tmp_path, overrides, unused):
    from networks.reid_task import may_leave_parameters_unused

    params = parse_params(tiny_params(tmp_path, tmp_path / "runs", **overrides))
    assert may_leave_parameters_unused(params) is unused


def test_single_process_context_is_a_no_op():
    ctx = D.DistContext.single(torch.device("cpu"))
    assert ctx.any(True) and not ctx.any(False)
    ctx.wait_for_main()
    ctx.barrier()
    ctx.shutdown()
    model = nn.Linear(2, 2)
    assert D.wrap_model(model, ctx, find_unused_parameters=False) is model


def _bn_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5),
                         nn.BatchNorm1d(5))


def test_cpu_sync_batchnorm_is_batchnorm_outside_a_process_group():
    plain, synced = _bn_net(), _bn_net()
    params_before = [id(p) for p in synced.parameters()]
    synced = D.CpuSyncBatchNorm.convert(synced)
    assert [id(p) for p in synced.parameters()] == params_before  # an optimizer built before still applies
    assert isinstance(synced[1], D.CpuSyncBatchNorm) and isinstance(synced[5], D.CpuSyncBatchNorm)
    assert list(synced.state_dict()) == list(plain.state_dict())
    x = torch.randn(6, 3, 8, 8)
    plain(x).sum().backward()
    synced(x).sum().backward()
    for (name, a), b in zip(plain.named_parameters(), synced.parameters()):
        assert torch.allclose(a.grad, b.grad), name
    for key, value in plain.state_dict().items():
        assert torch.equal(value, synced.state_dict()[key]), key


SYNC_BN_WORKER = """
import os, sys, torch, torch.distributed as dist
from torch import nn
from engine.distributed import CpuSyncBatchNorm
rank = int(os.environ["RANK"])
dist.init_process_group("gloo")
torch.manual_seed(0)
net = CpuSyncBatchNorm.convert(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                                             nn.Linear(4 * 6 * 6, 5), nn.BatchNorm1d(5)))
x = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(1))
(net(x[rank * 4:(rank + 1) * 4]) ** 2).sum().backward()
torch.save({"grads": {k: p.grad for k, p in net.named_parameters()}, "state": net.state_dict()},
           os.path.join(sys.argv[1], f"rank{rank}.pt"))
dist.destroy_process_group()
"""


def test_cpu_sync_batchnorm_on_two_processes_equals_batchnorm_on_the_global_batch(tmp_path):
    """Two ranks with half a batch each: the statistics are those of the whole batch, and the sum of the ranks'
    gradients (what DDP all-reduces) is the gradient of the loss summed over the whole batch."""
    port = D.free_port()
    workers = [subprocess.Popen([sys.executable, "-c", SYNC_BN_WORKER, str(tmp_path)], cwd=ROOT,
                                env={**os.environ, "RANK": str(r), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                                     "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}) for r in range(2)]
    assert [w.wait(timeout=120) for w in workers] == [0, 0]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    plain = _bn_net()
    x = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    (plain(x) ** 2).sum().backward()
    for key, value in plain.state_dict().items():
        for r in range(2):
            assert torch.allclose(ranks[r]["state"][key].float(), value.float(), rtol=1e-5, atol=1e-6), (r, key)
    for name, param in plain.named_parameters():
        total = ranks[0]["grads"][name] + ranks[1]["grads"][name]
        assert torch.allclose(total, param.grad, rtol=1e-4, atol=1e-5), name


def test_resume_check_accepts_new_keys_and_runtime_changes(tmp_path):
    from engine.params import params_to_json
    from engine.service import check_resumable

    params = parse_params({"batches_dir": "x"})
    stored = json.loads(params_to_json(params))
    for key in ("sync_bn", "lr_scaling", "channels_last", "compile", "dist_timeout_s", "dist_eval_timeout_s",
                "cpu_threads"):
        stored.pop(key)  # a checkpoint written before these keys existed
    check_resumable(params, stored, "p.json")
    check_resumable(parse_params({"batches_dir": "x", "channels_last": True, "compile": True, "parallels": [],
                                  "dist_timeout_s": 30}), stored, "p.json")
    with pytest.raises(UserError, match="cannot resume with different lr_scaling"):
        check_resumable(parse_params({"batches_dir": "x", "lr_scaling": "linear"}), stored, "p.json")


# ---------------------------------------------------------------------------------------------------------------------
# multi-process runs (slow: each process imports torch and builds the model)


def train_cli(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=env)


def update_norms(run_a: Path, run_b: Path, init: dict) -> float:
    """‖Δa − Δb‖ / ‖Δa‖ over all floating-point weights and buffers, Δ = final − initial state."""
    a, b = load_checkpoint(run_a)["model"], load_checkpoint(run_b)["model"]
    num = den = 0.0
    for key, start in init.items():
        if not start.dtype.is_floating_point:
            assert torch.equal(a[key], b[key]), key
            continue
        da, db = a[key].double() - start.double(), b[key].double() - start.double()
        num += float(((da - db) ** 2).sum())
        den += float((da ** 2).sum())
    return (num / den) ** 0.5


@pytest.mark.slow
def test_two_process_ddp_equals_one_process_on_the_global_batch_then_resumes_in_one(tiny_market, tmp_path):
    """P·K·2 images in one process vs P·K per rank in two (torchrun, gloo): the samplers give the same global batch
    (TINY has 8 identities: P·world = 8 each step), sync_bn makes the BatchNorm statistics global, the cross-entropy
    mean is averaged by DDP; no triplet (it is mined within each rank's P×K), no flip (augmentation is seeded by the
    position in the rank's batch), dropout 0, no evaluation.

    Tolerance: fp32 sums in a different order (convolutions on 8 instead of 16 images, gradients averaged across
    ranks) differ by ~1e-7 relative per operation; the BatchNorm backward of this tiny net cancels heavily (its fp32
    gradients differ from fp64 ones by up to 2% per tensor), so the difference grows over the 3 SGD steps.
    Measured: ‖Δ₁ − Δ₂‖/‖Δ₁‖ ≈ 1e-3 of the weight update with sync_bn and ≈ 0.35 without it; 1e-2 separates the
    two."""
    common = dict(epochs=1, deterministic=True, sync_bn=True, evaluation_params={"type": None},
                  tri_loss_params={"margin": 0}, data_augmentation={"mirror": False})
    one = tiny_params(tiny_market, tmp_path / "runs", batch_sampling_params={"P": 8, "K": 2}, **common)
    two = tiny_params(tiny_market, tmp_path / "runs", batch_sampling_params={"P": 4, "K": 2}, **common)
    config_one = write_params(tmp_path / "one.json", one)
    config_two = write_params(tmp_path / "two.json", two)
    result = train_cli(TRAIN, "--operation", "train", "--config_path", str(config_one), "--sub_working_dir", "one")
    assert result.returncode == 0, result.stderr[-3000:]
    result = train_cli("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", TRAIN,
                       "--operation", "train", "--config_path", str(config_two), "--sub_working_dir", "two")
    assert result.returncode == 0, result.stderr[-3000:]

    run_one, run_two = RunDir(tmp_path / "runs" / "one"), RunDir(tmp_path / "runs" / "two")
    ckpt_two = load_checkpoint(run_two.latest)
    assert (ckpt_two["world_size"], ckpt_two["global_step"]) == (2, load_checkpoint(run_one.latest)["global_step"])
    from engine.trainer import seed_everything
    from networks.reid_task import build

    seed_everything(0, False)
    init = build(parse_params(one)).model.state_dict()
    assert update_norms(run_one.latest, run_two.latest, init) < 1e-2

    # rank 0 alone writes: one TensorBoard file, INFO lines only from rank 0
    assert len(list(run_two.path.glob("events.out.tfevents.*"))) == 1
    log_text = run_two.log.read_text()
    assert "[rank 0/2] run directory" in log_text and "INFO [rank 1/2]" not in log_text
    assert run_two.read_state().state == "finished"

    # the 2-process run continues in one process (twice the steps per epoch, same fraction of the epoch)
    resumed = write_params(tmp_path / "resume.json", {**two, "epochs": 2})
    result = train_cli(TRAIN, "--operation", "train", "--config_path", str(resumed), "--sub_working_dir", "two",
                       "--resume", "latest")
    assert result.returncode == 0, result.stderr[-3000:]
    final = load_checkpoint(run_two.latest)
    assert (final["epoch"], final["world_size"]) == (2, 1)
    assert final["global_step"] == ckpt_two["global_step"] + final["steps_per_epoch"]
    assert run_two.read_state().state == "finished"


@pytest.mark.slow
def test_two_process_triplet_only_training_with_idle_classifiers(tiny_market, tmp_path):
    """lambda_cls 0 leaves the classifier without gradients: DDP must be told, or its second step fails."""
    params = tiny_params(tiny_market, tmp_path / "runs", epochs=1, evaluation_params={"type": None},
                         tri_loss_params={"lambda_cls": 0.0})
    config = write_params(tmp_path / "params.json", params)
    result = train_cli("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", TRAIN,
                       "--operation", "train", "--config_path", str(config), "--sub_working_dir", "tri")
    assert result.returncode == 0, result.stderr[-3000:]
    run = RunDir(tmp_path / "runs" / "tri")
    assert run.read_state().state == "finished"
    assert load_checkpoint(run.latest)["global_step"] >= 2


def start_workers(config: Path, name: str, world: int = 2, **extra_env):
    """The workers of a run started by hand (the torchrun variables, no launcher): what the collectives do when a
    peer fails is then up to our code alone (torchrun would kill the survivors itself)."""
    port = D.free_port()
    procs = []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
               "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "OMP_NUM_THREADS": "1", **extra_env}
        procs.append(subprocess.Popen([sys.executable, TRAIN, "--operation", "train", "--config_path", str(config),
                                       "--sub_working_dir", name], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True))
    return procs


@pytest.mark.slow
def test_a_rank_that_dies_makes_the_others_fail_fast(tiny_market, tmp_path):
    params = tiny_params(tiny_market, tmp_path / "runs", epochs=50, evaluation_params={"type": None},
                         dist_timeout_s=600)  # a dead peer is noticed at once, not after the timeout
    config = write_params(tmp_path / "params.json", params)
    rank0, rank1 = start_workers(config, "dies", **{D.FAULT_ENV: "1:2"})
    try:
        assert rank1.wait(timeout=300) == D.FAULT_EXIT_CODE
        died = time.monotonic()
        code = rank0.wait(timeout=60)
        assert code != 0 and time.monotonic() - died < 60
    finally:
        for proc in (rank0, rank1):
            if proc.poll() is None:
                proc.kill()
    state = RunDir(tmp_path / "runs" / "dies").read_state()
    assert state.state == "failed" and "another process of this run died or stopped answering" in state.message


@pytest.mark.slow
def test_a_hung_rank_makes_the_others_fail_after_the_timeout(tiny_market, tmp_path):
    params = tiny_params(tiny_market, tmp_path / "runs", epochs=50, evaluation_params={"type": None},
                         dist_timeout_s=5)
    config = write_params(tmp_path / "params.json", params)
    rank0, rank1 = start_workers(config, "hangs")
    run = RunDir(tmp_path / "runs" / "hangs")
    try:
        wait_for(lambda: (getattr(run.read_state(), "global_step", 0) or 0) >= 2, 300, "two steps")
        os.kill(rank1.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        assert rank0.wait(timeout=60) != 0
        assert time.monotonic() - stopped < 60
    finally:
        for proc in (rank0, rank1):
            if proc.poll() is None:
                proc.kill()
    state = run.read_state()
    assert state.state == "failed" and "timed out" in state.message.lower() and "rank 0" in state.message


@pytest.mark.slow
def test_start_train_nproc_evaluates_on_rank_0_and_stops_all_ranks_together(tiny_market, tmp_path):
    params = tiny_params(tiny_market, tmp_path / "runs", epochs=500, lr_scaling="linear",
                         evaluation_params={"type": "market_evaluate", "epoch": 1, "visualize_queries": 0})
    config = write_params(tmp_path / "params.json", params)
    result = train_cli(TRAIN, "--operation", "start_train", "--config_path", str(config), "--sub_working_dir", "bg",
                       "--nproc", "2")
    assert result.returncode == 0, result.stderr
    run = RunDir(tmp_path / "runs" / "bg")
    launcher = int(run.pid_file.read_text())
    workers = []
    try:
        # past the first end-of-epoch evaluation (3 steps per epoch): rank 1 waited for it at the barrier
        wait_for(lambda: run.eval_results.is_file() and (run.read_state().global_step or 0) >= 4, 300,
                 "training past the first evaluation")
        workers = [int(p) for p in subprocess.run(["pgrep", "-P", str(launcher)], capture_output=True,
                                                  text=True).stdout.split()]
        assert len(workers) == 2
        status = train_cli(TRAIN, "--operation", "status", "--config_path", str(config))
        line = next(l for l in status.stdout.splitlines() if l.startswith("bg "))
        assert "running" in line and str(launcher) in line
        stop = train_cli(TRAIN, "--operation", "stop_train", "--config_path", str(config), "--sub_working_dir", "bg")
        assert stop.returncode == 0, stop.stdout + stop.stderr
        wait_for(lambda: not any(pid_alive(p) for p in [launcher, *workers]), 60, "the launcher and the workers")
    finally:
        for pid in [launcher, *workers]:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
    state = run.read_state()
    assert state.state == "stopped"
    ckpt = load_checkpoint(run.latest)
    assert ckpt["world_size"] == 2 and ckpt["global_step"] == state.global_step
    log_text = run.log.read_text()
    assert "Traceback" not in log_text
    assert "lr=2.00e-02,1.00e-01" in log_text  # lr_scaling linear: base_lr 0.01 and fc_lr 0.05 × 2 processes

    # continue in one process, mid-epoch when it stopped there: same fraction of the epoch, LR of one process
    resumed = write_params(tmp_path / "resume.json", {**params, "epochs": ckpt["epoch"] + 2})
    result = train_cli(TRAIN, "--operation", "train", "--config_path", str(resumed), "--sub_working_dir", "bg",
                       "--resume", "latest")
    assert result.returncode == 0, result.stderr[-3000:]
    final = load_checkpoint(run.latest)
    assert (final["epoch"], final["world_size"]) == (ckpt["epoch"] + 2, 1)
    tail = run.log.read_text()[len(log_text):]
    if ckpt["step"]:
        assert f"continuing at step {D.remap_step(ckpt['step'], 3, 6)} of epoch {ckpt['epoch']}" in tail
    assert "lr=1.00e-02,5.00e-02" in tail
    assert run.read_state().state == "finished"


@pytest.mark.slow
def test_launcher_fails_the_run_when_a_worker_dies(tiny_market, tmp_path):
    params = tiny_params(tiny_market, tmp_path / "runs", epochs=50, evaluation_params={"type": None})
    config = write_params(tmp_path / "params.json", params)
    started = time.monotonic()
    result = train_cli(TRAIN, "--operation", "train", "--config_path", str(config), "--sub_working_dir", "w",
                       "--nproc", "2", env={**os.environ, D.FAULT_ENV: "1:2"}, timeout=300)
    assert result.returncode != 0
    assert time.monotonic() - started < 240
    state = RunDir(tmp_path / "runs" / "w").read_state()
    assert state.state == "failed"
