"""Tests of evaluate.postprocess.spectral_refine and evaluate.rerank.k_reciprocal_rerank."""

from __future__ import annotations

import numpy as np
import pytest

from evaluate.metrics import _l2_normalise, pairwise_distances, rank_metrics
from evaluate.postprocess import spectral_refine
from evaluate.rerank import estimate_rerank_memory, k_reciprocal_rerank


def clustered(rng, num_ids=40, per_id=6, dim=24, noise=1.0):
    """One query per identity, the rest gallery; cameras cycle so every query has cross-camera positives."""
    centers = rng.normal(size=(num_ids, dim))
    pids = np.repeat(np.arange(num_ids), per_id)
    feats = (centers[pids] + noise * rng.normal(size=(len(pids), dim))).astype(np.float32)
    cams = np.tile(np.arange(per_id), num_ids) % 4
    is_query = np.zeros(len(pids), bool)
    is_query[::per_id] = True
    return (feats[is_query], feats[~is_query], pids[is_query], pids[~is_query], cams[is_query], cams[~is_query])


# ---------------------------------------------------------------------------------------------------------------
# spectral refinement


def reference_refined_ranking(dist, q_feats, g_feats, temperature, top_k):
    """Per query: stable ranking, top_k re-ordered by descending refined score, the rest untouched."""
    rankings = []
    for q in range(dist.shape[0]):
        ranking = np.argsort(dist[q], kind="stable")
        top = ranking[:top_k]
        g_top = g_feats[top] / np.linalg.norm(g_feats[top], axis=1, keepdims=True)
        q_hat = q_feats[q] / np.linalg.norm(q_feats[q])
        logits = g_top @ g_top.T / temperature
        affinity = np.exp(logits - logits.max(axis=1, keepdims=True))
        affinity /= affinity.sum(axis=1, keepdims=True)
        scores = (affinity @ g_top) @ q_hat
        rankings.append(np.concatenate([top[np.argsort(-scores, kind="stable")], ranking[top_k:]]))
    return np.array(rankings)


def test_spectral_refine_matches_reference_and_keeps_the_tail():
    rng = np.random.default_rng(1)
    for trial in range(40):
        num_q, num_g, dim = int(rng.integers(1, 12)), int(rng.integers(1, 90)), int(rng.integers(1, 12))
        q_feats, g_feats = rng.normal(size=(num_q, dim)), rng.normal(size=(num_g, dim))
        levels = int(rng.choice([3, 40, 10**6]))
        dist = (rng.integers(0, levels, (num_q, num_g)) / levels).astype(rng.choice([np.float32, np.float64]))
        top_k = int(rng.integers(1, 60))
        temperature = float(rng.choice([0.1, 0.5, 3.0]))
        refined = spectral_refine(dist, q_feats, g_feats, temperature, top_k)
        assert refined.dtype == dist.dtype and refined.shape == dist.shape
        new_ranking = np.argsort(refined, axis=1, kind="stable")
        np.testing.assert_array_equal(new_ranking, reference_refined_ranking(dist, q_feats, g_feats,
                                                                             temperature, top_k), err_msg=str(trial))
        old_ranking = np.argsort(dist, axis=1, kind="stable")
        k = min(top_k, num_g)
        np.testing.assert_array_equal(new_ranking[:, k:], old_ranking[:, k:])             # tail keeps its place
        np.testing.assert_array_equal(np.sort(new_ranking[:, :k], axis=1), np.sort(old_ranking[:, :k], axis=1))
        untouched = np.ones(dist.shape, bool)
        np.put_along_axis(untouched, old_ranking[:, :k], False, axis=1)
        np.testing.assert_array_equal(refined[untouched], dist[untouched])                # tail distances kept


def test_spectral_refine_keeps_distinct_top_values():
    # Without ties the refined top-k reuses the original top-k distances, only permuted.
    rng = np.random.default_rng(2)
    dist = rng.random((5, 30))
    refined = spectral_refine(dist, rng.normal(size=(5, 4)), rng.normal(size=(30, 4)), 0.5, top_k=10)
    np.testing.assert_array_equal(np.sort(refined, axis=1), np.sort(dist, axis=1))


def test_spectral_refine_validation():
    dist = np.zeros((2, 3))
    q, g = np.ones((2, 4)), np.ones((3, 4))
    with pytest.raises(ValueError, match="temperature"):
        spectral_refine(dist, q, g, 0.0)
    with pytest.raises(ValueError, match="do not match"):
        spectral_refine(dist, q, np.ones((4, 4)), 1.0)
    with pytest.raises(ValueError, match="top_k"):
        spectral_refine(dist, q, g, 1.0, top_k=0)
    with pytest.raises(ValueError, match="NaN"):
        spectral_refine(np.full((2, 3), np.nan), q, g, 1.0)


# ---------------------------------------------------------------------------------------------------------------
# k-reciprocal re-ranking


def reference_rerank(q_feats, g_feats, k1, k2, lam):
    """Dense, loop-based reading of the module's definitions (small problems only)."""
    feats = _l2_normalise(np.concatenate([q_feats, g_feats]).astype(np.float32))
    num_q, num = len(q_feats), len(feats)
    dist = pairwise_distances(feats, feats, "euclidean").astype(np.float64)
    ranking = np.argsort(pairwise_distances(feats, feats, "euclidean"), axis=1, kind="stable")

    def reciprocal(p, k):
        return {x for x in ranking[p, :k + 1] if p in ranking[x, :k + 1]}

    half = int(round(k1 / 2))
    vectors = np.zeros((num, num))
    for p in range(num):
        base = reciprocal(p, k1)
        expanded = set(base)
        for q in base:
            candidate = reciprocal(q, half)
            if 3 * len(base & candidate) >= 2 * len(candidate):
                expanded |= candidate
        members = sorted(expanded)
        weights = np.exp(-dist[p, members])
        vectors[p, members] = weights / weights.sum()
    vectors = np.array([vectors[ranking[p, :k2]].mean(axis=0) for p in range(num)])
    jaccard = np.empty((num_q, num - num_q))
    for p in range(num_q):
        for g in range(num_q, num):
            jaccard[p, g - num_q] = 1 - (np.minimum(vectors[p], vectors[g]).sum()
                                         / np.maximum(vectors[p], vectors[g]).sum())
    return (1 - lam) * jaccard + lam * dist[:num_q, num_q:]


@pytest.mark.parametrize("k1, k2, lam", [(20, 6, 0.3), (5, 1, 0.0), (7, 3, 0.5)])
def test_rerank_matches_dense_reference(k1, k2, lam):
    rng = np.random.default_rng(k1)
    q_feats, g_feats, *_ = clustered(rng, num_ids=12, per_id=5, dim=8, noise=1.2)
    ours = k_reciprocal_rerank(q_feats, g_feats, k1=k1, k2=k2, lambda_value=lam)
    np.testing.assert_allclose(ours, reference_rerank(q_feats, g_feats, k1, k2, lam), atol=2e-6)


def test_rerank_improves_map_on_clustered_problem():
    rng = np.random.default_rng(0)
    q_feats, g_feats, q_pids, g_pids, q_cams, g_cams = clustered(rng, num_ids=60, per_id=8, dim=32, noise=0.9)
    before = rank_metrics(pairwise_distances(q_feats, g_feats, "euclidean"), q_pids, g_pids, q_cams, g_cams)
    reranked = k_reciprocal_rerank(q_feats, g_feats)
    after = rank_metrics(reranked, q_pids, g_pids, q_cams, g_cams)
    assert reranked.shape == (len(q_feats), len(g_feats)) and reranked.dtype == np.float32
    assert np.isfinite(reranked).all()
    assert after["mAP"] > before["mAP"] + 0.05, (before["mAP"], after["mAP"])


def test_rerank_lambda_one_is_the_original_distance():
    rng = np.random.default_rng(4)
    q_feats, g_feats, *_ = clustered(rng, num_ids=15, per_id=4)
    original = pairwise_distances(*np.split(_l2_normalise(np.concatenate([q_feats, g_feats])), [len(q_feats)]),
                                  "euclidean")
    reranked = k_reciprocal_rerank(q_feats, g_feats, lambda_value=1.0)
    np.testing.assert_array_equal(reranked, original)
    np.testing.assert_array_equal(np.argsort(reranked, axis=1, kind="stable"),
                                  np.argsort(original, axis=1, kind="stable"))


def test_rerank_memory_guard_and_validation():
    q_feats, g_feats = np.ones((3, 4)), np.ones((5, 4))
    with pytest.raises(ValueError, match=r"Q=3 queries, G=5 gallery items \(N=8\), D=4"):
        k_reciprocal_rerank(q_feats, g_feats, max_memory_gb=1e-6)
    assert estimate_rerank_memory(3368, 15913, 2048) < 8 * 2**30          # Market-1501 fits the default
    with pytest.raises(ValueError, match="exceeds max_memory_gb"):
        k_reciprocal_rerank(np.ones((3368, 4)), np.ones((400_000, 4)))     # 5 GiB result alone, plus the rest
    with pytest.raises(ValueError, match="lambda_value"):
        k_reciprocal_rerank(q_feats, g_feats, lambda_value=1.5)
    with pytest.raises(ValueError, match="k1"):
        k_reciprocal_rerank(q_feats, g_feats, k1=0)
    with pytest.raises(ValueError, match="dimensions"):
        k_reciprocal_rerank(q_feats, np.ones((5, 3)))
