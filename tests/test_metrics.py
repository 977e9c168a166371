"""Tests of evaluate.metrics: hand-computed cases, and agreement with a plain per-query implementation."""

from __future__ import annotations

import numpy as np
import pytest

import evaluate.metrics as metrics
from evaluate.metrics import (
    NoValidQueryError,
    pairwise_distances,
    per_query_metrics,
    rank_metrics,
    rank_metrics_from_features,
    smallest_k_stable,
    topk_filtered,
)

SCALARS = ("rank1", "rank5", "rank10", "mAP", "mAP_trapezoid", "mINP")


# ---------------------------------------------------------------------------------------------------------------
# an independent, straightforward implementation: stable argsort per row, explicit masks


def reference_metrics(dist, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    firsts, aps, traps, inps = [], [], [], []
    for q in range(dist.shape[0]):
        junk = (g_pids == -1) | ((g_pids == q_pids[q]) & (g_camids == q_camids[q]))
        kept = np.flatnonzero(~junk)
        ranking = kept[np.argsort(dist[q, kept], kind="stable")]
        hits = np.flatnonzero(g_pids[ranking] == q_pids[q]) + 1          # 1-based ranks r_1 < ... < r_n
        if len(hits) == 0:
            continue
        i = np.arange(1, len(hits) + 1)
        previous = np.where(hits > 1, (i - 1) / np.maximum(hits - 1, 1), 1.0)
        firsts.append(hits[0])
        aps.append(np.mean(i / hits))
        traps.append(np.mean((previous + i / hits) / 2))
        inps.append(len(hits) / hits[-1])
    firsts = np.array(firsts)
    if len(firsts) == 0:
        return {"num_valid_queries": 0}
    return {
        "rank1": np.mean(firsts <= 1), "rank5": np.mean(firsts <= 5), "rank10": np.mean(firsts <= 10),
        "mAP": np.mean(aps), "mAP_trapezoid": np.mean(traps), "mINP": np.mean(inps),
        "num_valid_queries": len(firsts), "num_skipped_queries": dist.shape[0] - len(firsts),
        "cmc": np.array([np.mean(firsts <= k + 1) for k in range(max_rank)]),
        "first_rank": firsts,
    }


def assert_same(ours, ref, tol=1e-12):
    for key in SCALARS:
        assert abs(ours[key] - ref[key]) <= tol, (key, ours[key], ref[key])
    assert ours["num_valid_queries"] == ref["num_valid_queries"]
    assert ours["num_skipped_queries"] == ref["num_skipped_queries"]
    assert np.max(np.abs(ours["cmc"] - ref["cmc"])) <= tol


def random_problem(rng):
    num_q = int(rng.integers(1, 30))
    num_g = int(rng.choice([1, 2, 5, int(rng.integers(1, 400))]))
    num_ids = int(rng.integers(1, 15))
    q_pids = rng.integers(-1, num_ids, num_q)
    g_pids = rng.integers(-1, num_ids, num_g)
    q_cams = rng.integers(0, 4, num_q)
    g_cams = rng.integers(0, 4, num_g)
    levels = int(rng.choice([2, 4, 30, 10**6]))                        # few levels: many exact ties
    dist = (rng.integers(0, levels, (num_q, num_g)) / levels).astype(rng.choice([np.float32, np.float64]))
    if rng.random() < 0.2:
        dist[rng.random(dist.shape) < 0.1] = np.inf
    return dist, q_pids, g_pids, q_cams, g_cams


# ---------------------------------------------------------------------------------------------------------------
# hand-computed cases


def test_exact_values_hand_computed():
    # One query (pid 1, camera 0). Gallery (index: pid, camera, distance):
    #   0: pid 2, cam 1, 0.10  negative                 -> filtered rank 1
    #   1: pid 1, cam 1, 0.20  positive                 -> rank 2
    #   2: pid 1, cam 0, 0.05  same pid + same camera: junk, removed
    #   3: pid 0, cam 2, 0.30  distractor = negative    -> rank 3
    #   4: pid 1, cam 2, 0.40  positive                 -> rank 4
    #   5: pid -1, cam 1, 0.01 junk, removed
    #   6: pid 3, cam 1, 0.50  negative                 -> rank 5
    #   7: pid 1, cam 3, 0.60  positive                 -> rank 6
    # Positive ranks r = (2, 4, 6), n = 3.
    #   plain AP     = (1/2 + 2/4 + 3/6) / 3                               = 1/2
    #   trapezoid AP = ((0/1 + 1/2)/2 + (1/3 + 2/4)/2 + (2/5 + 3/6)/2) / 3 = (1/4 + 5/12 + 9/20) / 3 = 67/180
    #   INP          = 3 / 6                                               = 1/2
    dist = np.array([[0.10, 0.20, 0.05, 0.30, 0.40, 0.01, 0.50, 0.60]])
    g_pids = np.array([2, 1, 1, 0, 1, -1, 3, 1])
    g_cams = np.array([1, 1, 0, 2, 2, 1, 1, 3])
    out = rank_metrics(dist, np.array([1]), g_pids, np.array([0]), g_cams, max_rank=8)
    assert out["mAP"] == pytest.approx(0.5, abs=1e-15)
    assert out["mAP_trapezoid"] == pytest.approx(67 / 180, abs=1e-15)
    assert out["mINP"] == pytest.approx(0.5, abs=1e-15)
    assert out["rank1"] == 0.0 and out["rank5"] == 1.0 and out["rank10"] == 1.0
    np.testing.assert_array_equal(out["cmc"], [0, 1, 1, 1, 1, 1, 1, 1])
    assert out["cmc"].dtype == np.float64
    assert (out["num_valid_queries"], out["num_skipped_queries"]) == (1, 0)
    assert all(type(out[k]) is float for k in SCALARS)
    assert type(out["num_valid_queries"]) is int and type(out["num_skipped_queries"]) is int


def test_ties_are_broken_by_gallery_index():
    # All ten distances equal: the filtered order is the gallery index order.
    g_pids = np.array([5, 6, 7, 8, 9, 10, 11, 12, 13, 1])
    g_cams = np.ones(10, int)
    dist = np.zeros((1, 10), np.float32)
    late = rank_metrics(dist, [1], g_pids, [0], g_cams)
    assert late["rank1"] == 0.0 and late["mAP"] == pytest.approx(0.1) and late["cmc"][9] == 1.0
    early = rank_metrics(dist, [1], g_pids[::-1].copy(), [0], g_cams)
    assert early["rank1"] == 1.0 and early["mAP"] == 1.0
    # A negative tied with the positive ranks first only if its index is lower.
    tie = np.array([[0.5, 0.5, 0.9]])
    assert rank_metrics(tie, [1], [2, 1, 3], [0], [1, 1, 1])["mAP"] == 0.5     # negative at index 0 first
    assert rank_metrics(tie, [1], [1, 2, 3], [0], [1, 1, 1])["mAP"] == 1.0


def test_skipped_queries_and_averages_over_valid_only():
    g_pids = np.array([1, 1, 2, 3])
    g_cams = np.array([0, 1, 0, 0])
    q_pids = np.array([1, 2, 4, 3])      # 2: only same camera; 4: absent; 3: only same camera
    q_cams = np.array([0, 0, 0, 0])
    dist = np.array([[0.3, 0.2, 0.1, 0.4]] * 4)
    out = rank_metrics(dist, q_pids, g_pids, q_cams, g_cams)
    # query 0: junk item 0 removed; ranking 2 (0.1), 1 (0.2, positive) -> r = 2
    assert (out["num_valid_queries"], out["num_skipped_queries"]) == (1, 3)
    assert out["mAP"] == 0.5 and out["rank1"] == 0.0 and out["rank5"] == 1.0


def test_pid_minus_one_and_same_camera_junk_removed():
    # Junk items are closest; removing them puts the positive first.
    dist = np.array([[0.0, 0.1, 0.2, 0.3]])
    out = rank_metrics(dist, [4], [-1, 4, 4, 7], [2], [5, 2, 3, 2])
    assert out["rank1"] == 1.0 and out["mAP"] == 1.0 and out["mINP"] == 1.0
    # A query with pid -1 never has a positive (its "identity" is junk everywhere).
    out = rank_metrics(np.zeros((2, 3)), [-1, 4], [-1, -1, 4], [0, 0], [1, 1, 1])
    assert (out["num_valid_queries"], out["num_skipped_queries"]) == (1, 1)


def test_distractors_pid_zero_are_negatives():
    dist = np.array([[0.1, 0.2, 0.3]])
    out = rank_metrics(dist, [1], [0, 0, 1], [0], [1, 2, 3])
    assert out["rank1"] == 0.0 and out["mAP"] == pytest.approx(1 / 3) and out["mINP"] == pytest.approx(1 / 3)


def test_all_junk_query_is_skipped():
    g_pids = np.array([-1, 3, 3, 5])
    g_cams = np.array([1, 0, 0, 1])
    dist = np.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]])
    # query 0 (pid 3, cam 0): every pid-3 item shares its camera -> skipped; query 1 (pid 5): valid, rank 1
    out = rank_metrics(dist, [3, 5], g_pids, [0, 0], g_cams)
    assert (out["num_valid_queries"], out["num_skipped_queries"]) == (1, 1)
    assert out["rank1"] == 1.0 and out["mAP"] == 1.0


def test_short_gallery_gives_full_monotone_cmc():
    dist = np.array([[0.3, 0.1, 0.2], [0.1, 0.2, 0.3]])
    out = rank_metrics(dist, [1, 2], [2, 3, 1], [0, 0], [1, 1, 1], max_rank=50)
    # query 0 (pid 1): order 1, 2, 0 -> its positive (index 2) at rank 2; query 1 (pid 2): index 0 at rank 1
    assert out["cmc"].shape == (50,)
    np.testing.assert_array_equal(out["cmc"][:2], [0.5, 1.0])
    assert np.all(out["cmc"][1:] == 1.0) and np.all(np.diff(out["cmc"]) >= 0)
    assert out["rank1"] == 0.5 and out["mAP"] == pytest.approx((0.5 + 1.0) / 2)


def test_rank_k_does_not_depend_on_max_rank():
    dist = np.arange(20, dtype=float)[None, :]
    g_pids = np.full(20, 9)
    g_pids[7] = 1
    out = rank_metrics(dist, [1], g_pids, [0], np.ones(20, int), max_rank=3)
    assert out["rank10"] == 1.0 and out["rank5"] == 0.0
    np.testing.assert_array_equal(out["cmc"], [0, 0, 0])


def test_no_valid_query_error_message():
    with pytest.raises(NoValidQueryError) as info:
        rank_metrics(np.zeros((3, 2)), [1, 2, -1], [1, 3], [0, 0, 0], [0, 1])
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "3 queries" in message and "absent from the gallery" in message and "own camera" in message
    assert "1 queries have pid -1" in message
    with pytest.raises(NoValidQueryError, match="0 queries"):
        rank_metrics(np.zeros((0, 2)), [], [1, 3], [], [0, 1])


@pytest.mark.parametrize("bad, pattern", [
    (dict(dist=np.zeros((2, 3, 1))), "2-D"),
    (dict(q_pids=[1, 2, 3]), "q_pids has length 3"),
    (dict(g_camids=[0, 0]), "g_camids has length 2"),
    (dict(dist=np.array([[0.1, np.nan, 0.2], [0.1, 0.2, 0.3]])), "NaN"),
    (dict(max_rank=0), "max_rank"),
    (dict(g_pids=[0.5, 1, 2]), "integer labels"),
])
def test_validation_errors(bad, pattern):
    args = dict(dist=np.zeros((2, 3)), q_pids=[1, 2], g_pids=[1, 2, 2], q_camids=[0, 0], g_camids=[1, 1, 1])
    args.update(bad)
    max_rank = args.pop("max_rank", 50)
    with pytest.raises(ValueError, match=pattern):
        rank_metrics(**args, max_rank=max_rank)


# ---------------------------------------------------------------------------------------------------------------
# agreement with the straightforward implementation


def test_matches_reference_on_random_problems():
    rng = np.random.default_rng(2024)
    checked = 0
    for _ in range(80):
        problem = random_problem(rng)
        ref = reference_metrics(*problem)
        if ref["num_valid_queries"] == 0:
            with pytest.raises(NoValidQueryError):
                rank_metrics(*problem)
            continue
        out = rank_metrics(*problem, chunk_size=int(rng.integers(1, 12)), per_query=True)
        assert_same(out, ref)
        per_query = out["per_query"]
        np.testing.assert_array_equal(per_query["first_rank"][per_query["valid"]], ref["first_rank"])
        checked += 1
    assert checked >= 50


@pytest.mark.parametrize("sort_above, slab_bytes", [(0, 1 << 20), (96, 1)])
def test_sorting_path_and_tiny_slabs_match_reference(monkeypatch, sort_above, slab_bytes):
    # sort_above=0 ranks every row by argsort; slab_bytes=1 compares one row per slab.
    monkeypatch.setattr(metrics, "_SORT_ABOVE", sort_above)
    monkeypatch.setattr(metrics, "_SLAB_BYTES", slab_bytes)
    rng = np.random.default_rng(7)
    for _ in range(25):
        problem = random_problem(rng)
        ref = reference_metrics(*problem)
        if ref["num_valid_queries"]:
            assert_same(rank_metrics(*problem), ref)


def test_large_identity_and_threads_agree():
    rng = np.random.default_rng(3)
    num_q, num_g = 40, 3000
    g_pids = rng.integers(0, 5, num_g)          # ~600 items per identity: exercises the argsort path
    q_pids = rng.integers(0, 5, num_q)
    dist = rng.random((num_q, num_g)).astype(np.float32)
    args = (dist, q_pids, g_pids, rng.integers(0, 6, num_q), rng.integers(0, 6, num_g))
    ref = reference_metrics(*args)
    one = rank_metrics(*args, num_threads=1, chunk_size=7)
    two = rank_metrics(*args, num_threads=2, chunk_size=7)
    assert_same(one, ref)
    assert_same(two, ref, tol=0.0)


def test_torch_tensors_give_the_same_result():
    # importing torch the first time may take a few seconds
    torch = pytest.importorskip("torch", reason="torch is not installed")
    rng = np.random.default_rng(5)
    dist, q_pids, g_pids, q_cams, g_cams = random_problem(rng)
    while reference_metrics(dist, q_pids, g_pids, q_cams, g_cams)["num_valid_queries"] == 0:
        dist, q_pids, g_pids, q_cams, g_cams = random_problem(rng)
    ours = rank_metrics(dist, q_pids, g_pids, q_cams, g_cams)
    theirs = rank_metrics(torch.from_numpy(dist), torch.from_numpy(q_pids), torch.from_numpy(g_pids),
                          torch.from_numpy(q_cams), torch.from_numpy(g_cams))
    assert_same(theirs, ours, tol=0.0)


def test_module_imports_without_torch():
    import subprocess
    import sys
    code = ("import sys; sys.modules['torch'] = None; import importlib.util as u; "
            "s = u.spec_from_file_location('m', 'evaluate/metrics.py'); m = u.module_from_spec(s); "
            "s.loader.exec_module(m); import numpy as np; "
            "print(m.rank_metrics(np.zeros((1, 2)), [1], [1, 2], [0], [1, 1])['mAP'])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            cwd=str(__import__("pathlib").Path(metrics.__file__).resolve().parents[1]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1.0"


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_from_features_equals_explicit_matrix(metric, dtype):
    rng = np.random.default_rng(11)
    num_q, num_g, dim = 37, 211, 16
    centers = rng.normal(size=(12, dim))
    q_pids = rng.integers(0, 12, num_q)
    g_pids = rng.integers(0, 12, num_g)
    g_pids[rng.random(num_g) < 0.1] = -1
    q_feats = (centers[q_pids] + rng.normal(size=(num_q, dim))).astype(dtype)
    g_feats = (centers[np.maximum(g_pids, 0)] + rng.normal(size=(num_g, dim))).astype(dtype)
    q_cams, g_cams = rng.integers(0, 3, num_q), rng.integers(0, 3, num_g)
    dist = pairwise_distances(q_feats, g_feats, metric)
    assert dist.dtype == dtype
    expected = rank_metrics(dist, q_pids, g_pids, q_cams, g_cams)
    assert_same(expected, reference_metrics(dist, q_pids, g_pids, q_cams, g_cams))
    for chunk in (1, 5, 64):
        got = rank_metrics_from_features(q_feats, g_feats, q_pids, g_pids, q_cams, g_cams, metric=metric,
                                         chunk_size=chunk)
        assert_same(got, expected, tol=0.0)


def test_distance_definitions():
    q = np.array([[3.0, 4.0]])
    g = np.array([[3.0, 4.0], [0.0, 2.0], [0.0, 0.0]])
    np.testing.assert_allclose(pairwise_distances(q, g, "cosine"), [[0.0, 0.2, 1.0]], atol=1e-12)
    np.testing.assert_allclose(pairwise_distances(q, g, "euclidean"), [[0.0, 13.0, 25.0]], atol=1e-12)
    with pytest.raises(ValueError, match="metric"):
        pairwise_distances(q, g, "manhattan")


def test_per_query_metrics_never_raise():
    out = per_query_metrics(np.zeros((2, 2)), [1, 2], [3, 4], [0, 0], [1, 1])
    assert not out["valid"].any() and np.all(out["ap"] == 0)


def test_topk_filtered_and_smallest_k_stable():
    rng = np.random.default_rng(9)
    for _ in range(30):
        num_g = int(rng.integers(1, 60))
        row = (rng.integers(0, 5, num_g) / 5).astype(np.float32)
        g_pids, g_cams = rng.integers(-1, 4, num_g), rng.integers(0, 3, num_g)
        junk = (g_pids == -1) | ((g_pids == 2) & (g_cams == 1))
        kept = np.flatnonzero(~junk)
        expected = kept[np.argsort(row[kept], kind="stable")]
        for k in (0, 1, 5, 100):
            np.testing.assert_array_equal(topk_filtered(row, 2, 1, g_pids, g_cams, k), expected[:k])
        block = (rng.integers(0, 4, (3, num_g))).astype(np.float64)
        for k in (0, 1, 3, num_g, num_g + 2):
            np.testing.assert_array_equal(smallest_k_stable(block, k),
                                          np.argsort(block, axis=1, kind="stable")[:, :k])
