"""P×K and shuffled batch samplers: invariants, determinism per (seed, epoch), rank splits, errors."""

from __future__ import annotations

from collections import Counter

import pytest

from data.records import DataError
from data.samplers import PKBatchSampler, ShuffledBatchSampler

# 10 identities with 1..10 images each (identity i has i+1 images), interleaved so indices ≠ identity blocks
COUNTS = [i + 1 for i in range(10)]
LABELS = [label for round_ in range(10) for label in range(10) if round_ < COUNTS[label]]


def _identity_of(labels, batch, K):
    groups = [batch[i:i + K] for i in range(0, len(batch), K)]
    ids = []
    for group in groups:
        group_ids = {labels[i] for i in group}
        assert len(group_ids) == 1, "each group of K indices belongs to one identity"
        ids.append(group_ids.pop())
    return ids, groups


@pytest.mark.parametrize("P, K", [(4, 3), (3, 4), (10, 2), (2, 1)])
def test_pk_invariants(P, K):
    sampler = PKBatchSampler(LABELS, P, K, seed=3)
    assert sampler.steps_per_epoch == max(1, len(LABELS) // (P * K))
    per_label = Counter(LABELS)
    visits = Counter()
    for epoch in range(5):
        batches = sampler.batches(epoch)
        assert len(batches) == sampler.steps_per_epoch
        for batch in batches:
            assert len(batch) == P * K
            assert all(0 <= i < len(LABELS) for i in batch)
            ids, groups = _identity_of(LABELS, batch, K)
            assert len(set(ids)) == P, "P distinct identities"
            visits.update(ids)
            for ident, group in zip(ids, groups):
                if per_label[ident] >= K:
                    assert len(set(group)) == K, "without replacement when the identity has ≥ K images"
                else:
                    assert set(group) <= {i for i, lab in enumerate(LABELS) if lab == ident}
    # even coverage: every identity visited, visit counts differ by at most one full cycle per epoch
    assert set(visits) == set(range(10))
    assert max(visits.values()) - min(visits.values()) <= 5


def test_pk_with_replacement_only_when_needed():
    labels = [0] * 2 + [1] * 8 + [2] * 8
    sampler = PKBatchSampler(labels, P=3, K=4, seed=0)
    saw_repeat = False
    for epoch in range(20):
        for batch in sampler.batches(epoch):
            ids, groups = _identity_of(labels, batch, 4)
            for ident, group in zip(ids, groups):
                if ident == 0:
                    assert set(group) <= {0, 1}
                    saw_repeat = True  # 4 picks out of 2 images must repeat
                else:
                    assert len(set(group)) == 4
    assert saw_repeat


def test_pk_cycles_cover_identities_evenly_within_an_epoch():
    labels = [i % 7 for i in range(7 * 40)]  # 7 identities, 40 images each → many cycles per epoch
    sampler = PKBatchSampler(labels, P=3, K=2, seed=11)
    batches = sampler.batches(0)
    visits = Counter(labels[b[k]] for b in batches for k in range(0, len(b), 2))
    assert max(visits.values()) - min(visits.values()) <= 1


def test_pk_deterministic_per_seed_and_epoch():
    a = PKBatchSampler(LABELS, 4, 3, seed=5)
    b = PKBatchSampler(LABELS, 4, 3, seed=5)
    assert a.batches(2) == b.batches(2) == a.batches(2)
    assert a.batches(2) != a.batches(3)
    assert a.batches(2) != PKBatchSampler(LABELS, 4, 3, seed=6).batches(2)
    a.batches(7)  # calling other epochs in between changes nothing: no hidden state
    assert a.batches(2) == b.batches(2)


@pytest.mark.parametrize("world", [2, 3])
def test_pk_rank_splits(world):
    P, K = 3, 2
    samplers = [PKBatchSampler(LABELS, P, K, seed=1, rank=r, world_size=world) for r in range(world)]
    steps = samplers[0].steps_per_epoch
    assert steps == max(1, len(LABELS) // (P * K * world))
    assert all(s.steps_per_epoch == steps for s in samplers)
    for epoch in range(3):
        per_rank = [s.batches(epoch) for s in samplers]
        for step in range(steps):
            ids = [_identity_of(LABELS, per_rank[r][step], K)[0] for r in range(world)]
            flat = [i for rank_ids in ids for i in rank_ids]
            assert len(flat) == P * world and len(set(flat)) == P * world, "no identity on two ranks in one step"
            assert all(len(set(rank_ids)) == P for rank_ids in ids)


def test_pk_too_few_identities():
    with pytest.raises(DataError, match=r"P=4.*world size 1.*needs at least 4 identities.*has 3"):
        PKBatchSampler([0, 1, 2, 0, 1, 2], P=4, K=2, seed=0)
    with pytest.raises(DataError, match=r"P=2.*world size 2.*needs at least 4 identities.*has 3"):
        PKBatchSampler([0, 1, 2], P=2, K=2, seed=0, rank=1, world_size=2)
    PKBatchSampler([0, 1, 2], P=3, K=2, seed=0)  # exactly enough: fine, one step
    with pytest.raises(ValueError):
        PKBatchSampler([0, 1, 2], P=1, K=1, seed=0, rank=2, world_size=2)


def test_pk_exactly_enough_identities_never_hangs():
    sampler = PKBatchSampler([0, 1, 2] * 30, P=3, K=2, seed=0)
    for epoch in range(3):
        for batch in sampler.batches(epoch):
            assert sorted({[0, 1, 2][i % 3] for i in batch}) == [0, 1, 2]


def test_shuffled_drop_last_and_cover():
    sampler = ShuffledBatchSampler(23, 5, seed=0)
    assert sampler.steps_per_epoch == 4
    batches = sampler.batches(0)
    assert [len(b) for b in batches] == [5] * 4  # the last 3 images are dropped, never a short batch
    flat = [i for b in batches for i in b]
    assert len(set(flat)) == 20 and all(0 <= i < 23 for i in flat)


def test_shuffled_deterministic():
    a, b = ShuffledBatchSampler(50, 8, seed=2), ShuffledBatchSampler(50, 8, seed=2)
    assert a.batches(1) == b.batches(1)
    assert a.batches(1) != a.batches(2)
    assert a.batches(1) != ShuffledBatchSampler(50, 8, seed=3).batches(1)


def test_shuffled_rank_splits():
    world = 3
    parts = [ShuffledBatchSampler(50, 4, seed=0, rank=r, world_size=world).batches(0) for r in range(world)]
    assert all(len(p) == 50 // 12 for p in parts)
    flat = [i for p in parts for b in p for i in b]
    assert len(flat) == len(set(flat)) == 4 * 3 * 4


def test_shuffled_too_small():
    with pytest.raises(DataError, match=r"batch size 8 on world size 1 needs at least 8 training images.*has 5"):
        ShuffledBatchSampler(5, 8, seed=0)
    with pytest.raises(DataError, match="needs at least 16"):
        ShuffledBatchSampler(10, 8, seed=0, world_size=2)
