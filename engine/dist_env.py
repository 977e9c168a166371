"""Where a process sits in a distributed job, and how many processes a run needs: what the launching process must
know before it starts anything, kept free of torch so that ``start_train`` validates and returns quickly."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from engine.errors import UserError

LAUNCHER_PID_ENV = "REID_LAUNCHER_PID"


def _env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"environment variable {name}={raw!r} is not an integer (set by torchrun or the "
                        "launcher)") from None


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job (torchrun's variables; a single process without them)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environ(cls, environ: Optional[Mapping[str, str]] = None) -> "DistEnv":
        environ = os.environ if environ is None else environ
        world = _env_int(environ, "WORLD_SIZE", 1)
        rank = _env_int(environ, "RANK", 0)
        local_rank = _env_int(environ, "LOCAL_RANK", rank if world > 1 else 0)
        local_world = _env_int(environ, "LOCAL_WORLD_SIZE", world)
        if world < 1 or not 0 <= rank < world:
            raise UserError(f"RANK={rank} is not in [0, WORLD_SIZE={world})")
        if local_world < 1 or not 0 <= local_rank < local_world:
            raise UserError(f"LOCAL_RANK={local_rank} is not in [0, LOCAL_WORLD_SIZE={local_world})")
        if world > 1 and ("MASTER_ADDR" not in environ or "MASTER_PORT" not in environ):
            raise UserError(f"WORLD_SIZE={world} but MASTER_ADDR/MASTER_PORT are not set; start distributed runs "
                            "with torchrun or with train.py --nproc N")
        return cls(rank, world, local_rank, local_world)


def process_count(parallels: Sequence[int], nproc: Optional[int]) -> int:
    """How many worker processes a plain ``python train.py`` run needs: one per CUDA id in ``parallels`` when it
    lists several, else ``--nproc`` (CPU processes, or 1)."""
    if nproc is not None and nproc < 1:
        raise UserError(f"--nproc must be ≥ 1, found {nproc}")
    if len(parallels) > 1:
        if nproc is not None and nproc != len(parallels):
            raise UserError(f"--nproc {nproc} contradicts parallels {list(parallels)} (one process per listed GPU); "
                            "leave --nproc out")
        return len(parallels)
    if parallels and nproc not in (None, 1):
        raise UserError(f"--nproc {nproc} with parallels {list(parallels)}: one process per GPU; list {nproc} "
                        "device ids in parallels instead")
    return nproc or 1
