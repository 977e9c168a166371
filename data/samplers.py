"""Batch samplers: each epoch's batches are a pure function of (seed, epoch) — no hidden RNG state, so a run resumed
mid-epoch sees exactly the batches it would have seen, and every rank of a distributed run computes the same global
draw and keeps its own slice."""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

from data.records import DataError

_PK_STREAM = 0x504B  # distinguishes the samplers' random streams for the same (seed, epoch)
_SHUFFLE_STREAM = 0x5348


def _rng(seed: int, epoch: int, stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(epoch), stream])))


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")


class PKBatchSampler:
    """P identities × K images per batch (per rank).

    Identities are visited in a random permutation per epoch; when it runs out a new permutation starts (identities
    already drawn for the current step are moved to its end, so a step never repeats an identity), so all identities
    are covered evenly. An identity with at least K images contributes K distinct images; one with fewer is drawn with
    replacement. With ``world_size > 1`` every step draws ``P × world_size`` distinct identities and rank ``r`` takes
    the r-th group of P.
    """

    def __init__(self, labels: Sequence[int], P: int, K: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if P < 1 or K < 1:
            raise ValueError(f"P and K must be positive, found P={P}, K={K}")
        _check_rank(rank, world_size)
        by_label: dict[int, list[int]] = defaultdict(list)
        for index, label in enumerate(labels):
            by_label[int(label)].append(index)
        self.identities = sorted(by_label)
        self._indices = [np.asarray(by_label[i], dtype=np.int64) for i in self.identities]
        self.num_images = len(labels)
        self.P, self.K, self.seed, self.rank, self.world_size = P, K, int(seed), rank, world_size
        need = P * world_size
        if len(self.identities) < need:
            raise DataError(f"P×K sampling with P={P} identities per batch on world size {world_size} needs at least "
                            f"{need} identities per step, but the training set has {len(self.identities)}; lower "
                            f"batch_sampling_params.P (or use fewer processes)")

    @property
    def steps_per_epoch(self) -> int:
        return max(1, self.num_images // (self.P * self.K * self.world_size))

    def __len__(self) -> int:
        return self.steps_per_epoch

    def batches(self, epoch: int) -> list[list[int]]:
        rng = _rng(self.seed, epoch, _PK_STREAM)
        n_ids, need = len(self.identities), self.P * self.world_size
        order = rng.permutation(n_ids)
        pos = 0
        out: list[list[int]] = []
        for _ in range(self.steps_per_epoch):
            chosen: list[int] = []
            while len(chosen) < need:
                if pos == n_ids:
                    fresh = rng.permutation(n_ids)
                    drawn = np.isin(fresh, chosen)  # already in this step: visit them last in the new cycle
                    order = np.concatenate([fresh[~drawn], fresh[drawn]])
                    pos = 0
                take = min(need - len(chosen), n_ids - pos)
                chosen.extend(int(i) for i in order[pos:pos + take])
                pos += take
            draws = []
            for ident in chosen:
                pool = self._indices[ident]
                picks = rng.choice(pool, size=self.K, replace=len(pool) < self.K)
                draws.append([int(i) for i in picks])
            mine = draws[self.rank * self.P:(self.rank + 1) * self.P]
            out.append([i for group in mine for i in group])
        return out

    def __iter__(self):
        raise TypeError("PKBatchSampler has no implicit epoch; call batches(epoch)")


class ShuffledBatchSampler:
    """Plain shuffled batches of `batch_size` per rank; the last incomplete batch is dropped (a batch of 1 would break
    BatchNorm). With ``world_size > 1`` each step takes ``batch_size × world_size`` images of one permutation and rank
    ``r`` takes the r-th slice."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, found {batch_size}")
        _check_rank(rank, world_size)
        self.n, self.batch_size, self.seed, self.rank, self.world_size = int(n), batch_size, int(seed), rank, world_size
        if self.n < batch_size * world_size:
            raise DataError(f"batch size {batch_size} on world size {world_size} needs at least "
                            f"{batch_size * world_size} training images per step, but the training set has {self.n}; "
                            f"lower batch_sampling_params.batch_size")

    @property
    def steps_per_epoch(self) -> int:
        return self.n // (self.batch_size * self.world_size)

    def __len__(self) -> int:
        return self.steps_per_epoch

    def batches(self, epoch: int) -> list[list[int]]:
        perm = _rng(self.seed, epoch, _SHUFFLE_STREAM).permutation(self.n)
        step = self.batch_size * self.world_size
        start = self.rank * self.batch_size
        return [[int(i) for i in perm[s * step + start:s * step + start + self.batch_size]]
                for s in range(self.steps_per_epoch)]

    def __iter__(self):
        raise TypeError("ShuffledBatchSampler has no implicit epoch; call batches(epoch)")
