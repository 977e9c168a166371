"""Distributed training on ``torch.distributed``: process environment, device placement, process groups, DDP
wrapping, a CPU SyncBatchNorm, and the launcher that ``train.py`` uses when it starts the workers itself.

How a run becomes distributed
-----------------------------
* ``torchrun --nproc_per_node N train.py --operation train …`` (one node) or ``torchrun --nnodes M --node_rank R
  --rdzv_backend c10d --rdzv_endpoint HOST:PORT --nproc_per_node N train.py …`` (several nodes): torchrun sets
  ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; every worker
  joins with ``init_process_group(init_method="env://")``.
* ``python train.py --operation train|start_train --nproc N …`` on the CPU, or ``parallels`` with several CUDA ids:
  the ``train.py`` process becomes a *launcher* (:func:`launch_workers`) that starts the N workers with the same
  variables on a free local port, forwards SIGTERM/SIGINT to them, and, when one of them fails, gives the others
  ``LAUNCHER_GRACE_S`` to fail on their own before terminating them.

Backend: ``gloo`` on the CPU, ``nccl`` on CUDA. Each worker's device is ``cuda:parallels[LOCAL_RANK]``
(``parallels`` must list one id per process of the node) or the CPU when ``parallels`` is empty.

Failure of one rank: gloo notices a peer that died at once (its sockets close) and raises in the collective that
is waiting; a peer that hangs is noticed after ``dist_timeout_s`` (the timeout given to ``init_process_group``).
Either way the surviving ranks raise, the run is marked failed, and the process exits non-zero. Rank 0's
evaluation is waited for at a barrier of a separate gloo group whose timeout is ``dist_eval_timeout_s``.

What a run of W processes is: each step draws P×K×W images of P×W distinct identities (``data.samplers``), rank r
trains on its P×K, DDP averages the gradients (= the gradient of the mean loss over the global batch); the batch-hard
triplet is mined within each rank's P×K (as fast-reid); BatchNorm uses per-rank statistics unless ``sync_bn``; the
LR is multiplied by W with ``lr_scaling: "linear"``. Rank 0 alone writes checkpoints (of the unwrapped model),
TensorBoard scalars, the run state and INFO logs, and evaluates; the others log warnings and errors only.

Resume on another world size: a checkpoint holds the unwrapped model, the optimizer, (epoch, step) and the world size
and steps per epoch it was written with. Batches are a pure function of (seed, epoch, step, world size), so a run
resumed with W' processes continues at the same epoch and at the same fraction of it (step rounded down) on batches
re-derived for W' (global batch P×K×W'); between epochs (step 0) nothing is lost or repeated. It is a faithful
continuation, not a bit-identical replay of an uninterrupted W-process run. Multi-node: every node reads the params,
the data and (on resume) the checkpoint at the same paths — use a shared filesystem; only node 0's rank 0 writes.

Test hook (tests only): ``REID_TEST_FAULT=RANK:STEP`` makes rank RANK leave with ``os._exit(FAULT_EXIT_CODE)`` right
after global step STEP, as a crashed worker would (no cleanup, no exception). Nothing else reads it.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from typing import Mapping, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn

from engine.dist_env import LAUNCHER_PID_ENV, DistEnv
from engine.errors import UserError

log = logging.getLogger(__name__)

FAULT_ENV = "REID_TEST_FAULT"
FAULT_EXIT_CODE = 71
LAUNCHER_GRACE_S = 30.0


# ---------------------------------------------------------------------------------------------------------------------
# environment and placement


def device_for(parallels: Sequence[int], env: DistEnv, cuda_available: Optional[bool] = None,
               device_count: Optional[int] = None, key: str = "parallels") -> torch.device:
    """The device of this process: the CPU for ``parallels == []``, else ``cuda:parallels[LOCAL_RANK]``.

    One process uses one device: a plain process takes a one-element ``parallels`` (train.py launches one worker
    per id when it lists several); a distributed worker needs one id per process of its node."""
    if not parallels:
        return torch.device("cpu")
    cuda_available = torch.cuda.is_available() if cuda_available is None else cuda_available
    if not cuda_available:
        raise UserError(f"{key}: {list(parallels)} asks for CUDA devices, but CUDA is not available on this "
                        f"machine; set \"{key}\": [] to run on the CPU")
    if env.is_distributed:
        if len(parallels) != env.local_world_size:
            raise UserError(f"parallels: {list(parallels)} lists {len(parallels)} device(s), but this node runs "
                            f"{env.local_world_size} process(es); give one device id per process (torchrun "
                            f"--nproc_per_node {len(parallels)})")
        index = parallels[env.local_rank]
    else:
        if len(parallels) != 1:
            raise UserError(f"parallels: {list(parallels)}: one process trains on one device (train.py starts one "
                            "worker per listed id by itself)")
        index = parallels[0]
    count = torch.cuda.device_count() if device_count is None else device_count
    if index >= count:
        raise UserError(f"{key}: device {index} does not exist (this machine has {count})")
    return torch.device("cuda", index)


def check_local_devices(parallels: Sequence[int], nproc: int) -> list[torch.device]:
    """The devices of the `nproc` local workers a launcher is about to start (errors surface before any start)."""
    if nproc == 1:
        return [device_for(parallels, DistEnv())]
    return [device_for(parallels, DistEnv(rank, nproc, rank, nproc)) for rank in range(nproc)]


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def scaled_lr(lr: float, rule: str, world_size: int) -> float:
    """The learning rate a run of `world_size` processes uses: ``linear`` multiplies by the world size."""
    if rule == "none":
        return lr
    if rule == "linear":
        return lr * world_size
    raise ValueError(f"unknown lr_scaling rule {rule!r}")


def remap_step(step: int, old_steps_per_epoch: int, new_steps_per_epoch: int) -> int:
    """Where to continue in an epoch when the steps per epoch changed (resume on another world size): at the same
    fraction of the epoch, rounded down; the batches are re-derived for the new world size."""
    if step <= 0 or old_steps_per_epoch == new_steps_per_epoch:
        return step
    return min(new_steps_per_epoch, step * new_steps_per_epoch // max(1, old_steps_per_epoch))


# ---------------------------------------------------------------------------------------------------------------------
# the process group of a run


class DistContext:
    """This process's place in the run. ``DistContext.single(device)`` is a one-process run whose collectives are
    no-ops, so the trainer calls them unconditionally."""

    def __init__(self, env: DistEnv, device: torch.device, eval_group=None) -> None:
        self.env = env
        self.device = device
        self._eval_group = eval_group

    rank = property(lambda self: self.env.rank)
    world_size = property(lambda self: self.env.world_size)
    is_main = property(lambda self: self.env.is_main)
    is_distributed = property(lambda self: self.env.is_distributed)

    @classmethod
    def single(cls, device: torch.device) -> "DistContext":
        return cls(DistEnv(), device)

    @classmethod
    def initialize(cls, env: DistEnv, device: torch.device, timeout_s: float, eval_timeout_s: float) -> "DistContext":
        """Join the job (env://). Collectives of the default group time out after `timeout_s`; the barrier that
        waits for rank 0's evaluation uses a separate gloo group with `eval_timeout_s`."""
        if not env.is_distributed:
            return cls.single(device)
        backend = backend_for(device)
        kwargs = {}
        if device.type == "cuda":
            torch.cuda.set_device(device)
            kwargs["device_id"] = device
        dist.init_process_group(backend=backend, init_method="env://", rank=env.rank, world_size=env.world_size,
                                timeout=timedelta(seconds=timeout_s), **kwargs)
        eval_group = dist.new_group(backend="gloo", timeout=timedelta(seconds=eval_timeout_s))
        log.info("joined the process group: rank %d of %d (local rank %d), backend %s, device %s", env.rank,
                 env.world_size, env.local_rank, backend, device)
        return cls(env, device, eval_group)

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on any rank (the stop agreement: all ranks stop at the same
        step). One tiny all-reduce of the default group, so a dead or hung peer is noticed here too."""
        if not self.is_distributed:
            return bool(flag)
        value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def wait_for_main(self) -> None:
        """Barrier that lets rank 0 evaluate or write checkpoints while the others wait (up to the eval timeout)."""
        if self.is_distributed:
            dist.barrier(group=self._eval_group)

    def barrier(self) -> None:
        """Barrier of the default group (``dist_timeout_s``)."""
        if self.is_distributed:
            dist.barrier()

    def shutdown(self) -> None:
        if self.is_distributed and dist.is_initialized():
            dist.destroy_process_group()


class PeerFailedError(UserError):
    """A collective operation failed: another process of the run died or stopped answering."""


def peer_failure(err: BaseException, rank: int) -> Optional[PeerFailedError]:
    """The readable error for an exception raised by a collective (gloo/NCCL transport errors and timeouts), or
    None when `err` is something else."""
    text = str(err)
    if not (isinstance(err, dist.DistError) or (isinstance(err, RuntimeError) and any(
            marker in text for marker in ("gloo", "nccl", "NCCL", "Timed out", "timed out", "Connection")))):
        return None
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return PeerFailedError(f"rank {rank}: a collective operation failed: another process of this run died or stopped "
                           f"answering (see its own error above/in train_log) [{first[:300]}]")


def fault_hook(rank: int, global_step: int) -> None:
    """Tests only: ``REID_TEST_FAULT=RANK:STEP`` kills rank RANK after global step STEP (see the module doc)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    want_rank, want_step = (int(part) for part in spec.split(":"))
    if rank == want_rank and global_step == want_step:
        sys.stderr.write(f"{FAULT_ENV}: rank {rank} exits abruptly after global step {global_step}\n")
        sys.stderr.flush()
        os._exit(FAULT_EXIT_CODE)


# ---------------------------------------------------------------------------------------------------------------------
# SyncBatchNorm on the CPU, and the DDP wrapper


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient of each rank's input is the sum over ranks of the output gradients."""

    @staticmethod
    def forward(ctx, tensor, group):
        ctx.group = group
        out = tensor.detach().clone().contiguous()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.detach().clone().contiguous()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch of a gloo run (``torch.nn.SyncBatchNorm`` is CUDA-only).

    In training mode inside a process group of more than one rank, the mean and the (biased) variance are computed
    over the images of all ranks in two passes (sum, then sum of squared deviations: all-reduced in fp32), the running
    statistics are updated with the unbiased variance (as ``BatchNorm``), and autograd carries the gradient through
    the all-reduces. Otherwise (eval mode, one process) it is exactly ``BatchNorm``. Same parameters, buffers and
    state-dict keys as the BatchNorm it replaces."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 process_group=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.process_group = process_group

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input):
        group = self.process_group
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size(group) > 1):
            return super().forward(input)
        self._check_input_dim(input)
        channels = input.size(1)
        dims = [0] + list(range(2, input.dim()))
        shape = [1, channels] + [1] * (input.dim() - 2)
        x = input.float()
        local_count = x.numel() // channels
        sums = _AllReduceSum.apply(torch.cat([x.sum(dims), x.new_tensor([float(local_count)])]), group)
        count = sums[channels]
        mean = sums[:channels] / count
        centred = x - mean.view(shape)
        var = _AllReduceSum.apply((centred * centred).sum(dims), group) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum)
                n = float(count)
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(var.detach() * (n / max(n - 1, 1.0)), alpha=factor)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(input.dtype)

    @classmethod
    def convert(cls, module: nn.Module, process_group=None) -> nn.Module:
        """Replace every BatchNorm of `module` (recursively) by a CpuSyncBatchNorm sharing its parameters and
        buffers (an optimizer built before still points to the same tensors)."""
        out = module
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, cls):
            out = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats,
                      process_group)
            if module.affine:
                out.weight = module.weight
                out.bias = module.bias
            if module.track_running_stats:
                out.running_mean = module.running_mean
                out.running_var = module.running_var
                out.num_batches_tracked = module.num_batches_tracked
            out.training = module.training
        for name, child in module.named_children():
            out.add_module(name, cls.convert(child, process_group))
        return out


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return CpuSyncBatchNorm.convert(model)


def ddp_kwargs(device: torch.device, find_unused_parameters: bool) -> dict:
    """DistributedDataParallel arguments: the device ids on CUDA, none on the CPU. Buffers are not broadcast each
    step (rank 0 writes the checkpoints, so its BatchNorm statistics are the ones kept; use sync_bn for global ones)."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    # newer torch renamed the per-forward buffer broadcast (buffers are still synced once at construction)
    no_sync = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
               else "broadcast_buffers")
    kwargs = {no_sync: False, "find_unused_parameters": find_unused_parameters, "gradient_as_bucket_view": True}
    if device.type == "cuda":
        kwargs.update(device_ids=[device.index], output_device=device.index)
    return kwargs


def wrap_model(model: nn.Module, ctx: DistContext, find_unused_parameters: bool) -> nn.Module:
    """DistributedDataParallel around `model` in a distributed run; the model itself otherwise."""
    if not ctx.is_distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, **ddp_kwargs(ctx.device, find_unused_parameters))


# ---------------------------------------------------------------------------------------------------------------------
# the launcher used by a plain `python train.py` with --nproc N or several parallels ids


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker_env(base: Mapping[str, str], rank: int, world_size: int, port: int, launcher_pid: int,
               cpu_threads: Optional[int]) -> dict[str, str]:
    """The environment of local worker `rank` of a one-node job started by :func:`launch_workers` (the variables
    torchrun would set). `cpu_threads`: OMP_NUM_THREADS for CPU workers, unless the caller set it."""
    env = dict(base)
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size), RANK=str(rank),
               LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world_size), GROUP_RANK="0")
    env[LAUNCHER_PID_ENV] = str(launcher_pid)
    if cpu_threads is not None and "OMP_NUM_THREADS" not in base:
        env["OMP_NUM_THREADS"] = str(cpu_threads)
    return env


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Linux: the worker gets SIGKILL when the launcher dies (kill -9 of a run kills all of it)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def launch_workers(worker_args: Sequence[str], nproc: int, cpu: bool, script: str,
                   grace_s: float = LAUNCHER_GRACE_S, poll_s: float = 0.2) -> tuple[int, str]:
    """Run `script` with `worker_args` in `nproc` local worker processes and wait for them.

    SIGTERM/SIGINT received by the launcher are forwarded to the workers as SIGTERM (their graceful stop: all ranks
    agree on the step, rank 0 saves). When a worker exits non-zero the others get `grace_s` to exit on their own
    (they notice the dead peer in their next collective), then SIGTERM, then SIGKILL. Returns (exit code, a message
    naming the first failed rank, or "")."""
    port = free_port()
    threads = max(1, (os.cpu_count() or 1) // nproc) if cpu else None
    procs: list[subprocess.Popen] = []
    forwarded = {"signal": None}

    def forward(signum, frame):
        forwarded["signal"] = signum
        for proc in procs:
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for rank in range(nproc):
            env = worker_env(os.environ, rank, nproc, port, os.getpid(), threads)
            procs.append(subprocess.Popen([sys.executable, script, *worker_args], env=env,
                                          preexec_fn=_die_with_parent if sys.platform == "linux" else None))
        log.info("launched %d workers (pids %s) on 127.0.0.1:%d", nproc, ", ".join(str(p.pid) for p in procs), port)
        failed: Optional[tuple[int, int]] = None
        failed_at = 0.0
        while True:
            codes = [proc.poll() for proc in procs]
            if failed is None:
                bad = [(rank, code) for rank, code in enumerate(codes) if code not in (None, 0)]
                if bad:
                    failed, failed_at = bad[0], time.monotonic()
                    log.error("worker rank %d exited with code %d; waiting up to %.0fs for the others", bad[0][0],
                              bad[0][1], grace_s)
            if all(code is not None for code in codes):
                break
            if failed is not None and time.monotonic() - failed_at > grace_s:
                _terminate([p for p in procs if p.poll() is None])
                break
            time.sleep(poll_s)
        if failed is not None:
            return failed[1] if failed[1] > 0 else 1, f"worker rank {failed[0]} exited with code {failed[1]}"
        return 0, ""
    finally:
        _terminate([p for p in procs if p.poll() is None])
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _terminate(procs: list[subprocess.Popen], wait_s: float = 10.0) -> None:
    for proc in procs:
        try:
            proc.terminate()
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + wait_s
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
