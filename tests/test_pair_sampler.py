"""Tracking pair sampler: distance rule, visibility, negatives, weights, determinism per (seed, epoch, step), rank
slices, errors."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from data.pair_sampler import Pair, PairSampler, SequenceSource
from data.records import DataError


def _frames(n: int, visible: list[int]) -> SequenceSource:
    flags = np.zeros(n, dtype=bool)
    flags[visible] = True
    return SequenceSource(flags)


DENSE = SequenceSource(np.ones(40, dtype=bool))
SPARSE = _frames(100, [0, 3, 4, 30, 31, 90])  # with max_distance 5: 90 is isolated, 0 sees 3 and 4, 30 sees 31 only
SINGLE = _frames(20, [7])
STILL = SequenceSource(np.ones(1, dtype=bool), still=True)
HIDDEN = SequenceSource(np.zeros(10, dtype=bool))


def _pairs(sampler: PairSampler, epochs: int = 1) -> list[Pair]:
    return [p for e in range(epochs) for batch in sampler.batches(e) for p in batch]


def test_positive_pairs_follow_the_distance_rule():
    sources = [DENSE, SPARSE, SINGLE, STILL, HIDDEN]
    visible = [np.flatnonzero(s.visible) for s in sources]
    sampler = PairSampler(sources, pairs_per_epoch=4000, batch_size=50, max_distance=5, seed=1)
    pairs = _pairs(sampler)
    assert len(pairs) == 4000 and not any(p.negative for p in pairs)
    offsets: dict[tuple[int, int], set[int]] = {}
    for p in pairs:
        (seq, t), (seq_s, s) = p.template, p.search
        assert seq == seq_s, "a positive pair comes from one sequence"
        assert sources[seq].visible[t] and sources[seq].visible[s], "both frames visible"
        has_neighbour = any(1 <= abs(v - t) <= 5 for v in visible[seq])
        if has_neighbour:
            assert 1 <= abs(s - t) <= 5
        else:
            assert s == t
        offsets.setdefault((seq, t), set()).add(s - t)
    assert 4 not in {seq for seq, _ in offsets}, "a sequence without visible frames is never chosen"
    assert offsets[(1, 0)] == {3, 4} and offsets[(1, 30)] == {1} and offsets[(1, 90)] == {0}
    assert offsets[(2, 7)] == {0} and offsets[(3, 0)] == {0}
    assert offsets[(0, 20)] == {-5, -4, -3, -2, -1, 1, 2, 3, 4, 5}, "uniform window, limited both ways"
    assert offsets[(0, 0)] == {1, 2, 3, 4, 5}


def test_negative_pairs_and_ratio():
    sources = [DENSE, SPARSE, SINGLE, HIDDEN]
    n = 4000
    pairs = _pairs(PairSampler(sources, pairs_per_epoch=n, batch_size=40, negative_ratio=0.3, seed=2))
    negatives = [p for p in pairs if p.negative]
    assert abs(len(negatives) - 0.3 * n) < 5 * np.sqrt(n * 0.3 * 0.7)
    for p in negatives:
        assert p.template[0] != p.search[0], "a negative pair comes from two sequences"
        assert all(sources[seq].visible[frame] for seq, frame in (p.template, p.search))
    assert {p.search[0] for p in negatives} == {0, 1, 2}
    all_negative = _pairs(PairSampler(sources, pairs_per_epoch=200, batch_size=20, negative_ratio=1.0))
    assert all(p.negative and p.template[0] != p.search[0] for p in all_negative)


def test_weights():
    sources = [DENSE, SPARSE, SINGLE]
    n = 4000
    sampler = PairSampler(sources, pairs_per_epoch=n, batch_size=40, negative_ratio=0.5, weights=[3, 1, 0], seed=3)
    pairs = _pairs(sampler)
    chosen = Counter(seq for p in pairs for seq in (p.template[0], p.search[0]))
    assert chosen[2] == 0, "a zero-weight source is never chosen, neither as template nor as negative search"
    templates = Counter(p.template[0] for p in pairs)
    assert abs(templates[0] - 0.75 * n) < 5 * np.sqrt(n * 0.75 * 0.25)
    # with only two chosen sequences, every negative pairs one with the other (the template's own is excluded)
    assert all({p.template[0], p.search[0]} == {0, 1} for p in pairs if p.negative)


def test_determinism_and_random_access():
    sources = [DENSE, SPARSE, SINGLE, STILL]

    def make(**kw) -> PairSampler:
        return PairSampler(sources, pairs_per_epoch=96, batch_size=8, negative_ratio=0.2, seed=5, **kw)

    a, b = make(), make()
    assert a.steps_per_epoch == len(a) == 12
    assert a.batches(3) == b.batches(3)
    assert all(a.batch(3, s) == a.batches(3)[s] for s in (0, 7, 11))
    assert a.batches(3) != a.batches(4), "another epoch draws other pairs"
    assert a.batch(3, 0) != a.batch(3, 1), "another step draws other pairs"
    other_seed = PairSampler(sources, pairs_per_epoch=96, batch_size=8, negative_ratio=0.2, seed=6)
    assert other_seed.batches(3) != a.batches(3)


def test_ranks_take_slices_of_one_global_draw():
    sources = [DENSE, SPARSE, SINGLE, STILL]
    kw = dict(pairs_per_epoch=128, negative_ratio=0.3, seed=7)
    rank0 = PairSampler(sources, batch_size=8, rank=0, world_size=2, **kw)
    rank1 = PairSampler(sources, batch_size=8, rank=1, world_size=2, **kw)
    single = PairSampler(sources, batch_size=16, **kw)
    assert rank0.steps_per_epoch == rank1.steps_per_epoch == single.steps_per_epoch == 8
    for step in range(8):
        b0, b1 = rank0.batch(2, step), rank1.batch(2, step)
        assert len(b0) == len(b1) == 8
        assert b0 != b1
        assert b0 + b1 == single.batch(2, step), "rank r holds the r-th slice of the global draw"


def test_argument_errors():
    ok = dict(pairs_per_epoch=16, batch_size=4)
    bad = [
        (dict(pairs_per_epoch=7, world_size=2), "pairs_per_epoch"),
        (dict(batch_size=0), "batch_size"),
        (dict(max_distance=0), "max_distance"),
        (dict(negative_ratio=1.5), "negative_ratio"),
        (dict(negative_ratio=-0.1), "negative_ratio"),
        (dict(weights=[1.0]), "weights"),
        (dict(weights=[1.0, -1.0]), "weights"),
        (dict(weights=[0.0, 0.0]), "weights"),
        (dict(rank=2, world_size=2), "rank"),
    ]
    for overrides, name in bad:
        with pytest.raises(ValueError, match=name):
            PairSampler([DENSE, SPARSE], **{**ok, **overrides})
    with pytest.raises(ValueError, match="step"):
        PairSampler([DENSE], **ok).batch(0, 4)
    with pytest.raises(ValueError, match="still"):
        SequenceSource(np.ones(2, dtype=bool), still=True)


def test_data_errors():
    with pytest.raises(DataError, match="visible frame"):
        PairSampler([HIDDEN, HIDDEN], pairs_per_epoch=4, batch_size=2)
    with pytest.raises(DataError, match="negative_ratio"):
        PairSampler([DENSE, HIDDEN], pairs_per_epoch=4, batch_size=2, negative_ratio=0.1)
    with pytest.raises(DataError, match="negative_ratio"):
        PairSampler([DENSE, SPARSE], pairs_per_epoch=4, batch_size=2, negative_ratio=0.1, weights=[1, 0])
