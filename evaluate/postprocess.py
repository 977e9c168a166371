"""Test-time spectral refinement of the top of each ranking (pytorch-reid-lite evaluation post-processing).

For every query q (arXiv 1811.11405, as applied at evaluation time by the seed code):

1. take the `top_k` gallery items of q's current ranking, tie-stable: ordered by ``(distance, gallery index)``;
2. ``G_k``: their L2-normalised features (k x D); ``R = row_softmax(G_k G_k^T / T)``, the row maximum subtracted
   before ``exp`` for stability;
3. refined features ``G' = R G_k`` (not re-normalised, as in the seed); new scores ``s' = G' q^`` with ``q^`` the
   L2-normalised query feature;
4. re-order only those top_k positions by descending ``s'`` (equal scores keep their current order); every item
   beyond top_k keeps its place.

Decisions: the query itself is *not* part of the affinity set (only the k gallery items are); junk items (pid -1,
same-pid same-camera) are not known here and take part in the refinement like any other item, as in the seed,
and are removed later by the metric.
"""

from __future__ import annotations

import numpy as np

from evaluate.metrics import _as_distances, _features, _l2_normalise, _smallest_k

__all__ = ["spectral_refine"]

_CHUNK_BYTES = 64 << 20     # working set of one chunk of queries (gathered features and refined features)


def spectral_refine(dist, q_feats, g_feats, temperature: float, top_k: int = 50) -> np.ndarray:
    """New Q x G distances whose tie-stable ranking is the spectrally refined ranking (see module docstring).

    Only the top_k items of each row get new distances: the refined order is encoded by giving them the row's
    original top_k distances in ascending order, each lowered just enough (``np.nextafter``) to be strictly
    increasing and strictly below every untouched distance of the row; untouched distances are unchanged. The
    result has the dtype of `dist` (float32 or float64) and is a NumPy array (torch tensors are accepted).
    """
    dist = _as_distances(dist)
    if dist.size and np.isnan(np.min(dist)):
        raise ValueError("dist contains NaN")
    num_q, num_g = dist.shape
    q = _features(q_feats, "q_feats")
    g = _features(g_feats, "g_feats")
    if q.shape[0] != num_q or g.shape[0] != num_g:
        raise ValueError(f"q_feats {q.shape} / g_feats {g.shape} do not match dist {dist.shape}")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"feature dimensions differ: q_feats {q.shape}, g_feats {g.shape}")
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    if isinstance(top_k, bool) or int(top_k) != top_k or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    work_dtype = np.float64 if np.float64 in (q.dtype, g.dtype) else np.float32
    qn = _l2_normalise(q.astype(work_dtype, copy=False))
    gn = _l2_normalise(g.astype(work_dtype, copy=False))
    if not (np.isfinite(qn).all() and np.isfinite(gn).all()):
        raise ValueError("features contain NaN or inf")

    k = min(int(top_k), num_g)
    out = dist.copy()
    if k == 0:
        return out
    rows_per_chunk = max(1, _CHUNK_BYTES // (2 * k * g.shape[1] * np.dtype(work_dtype).itemsize))
    for start in range(0, num_q, rows_per_chunk):
        stop = min(start + rows_per_chunk, num_q)
        top, untouched_min = _smallest_k(dist[start:stop], k)
        refined = np.take_along_axis(top, _refined_order(qn[start:stop], gn[top], temperature), axis=1)
        out[start:stop] = _encode_order(dist[start:stop], top, refined, untouched_min)
    return out


def _refined_order(qn: np.ndarray, g_top: np.ndarray, temperature: float) -> np.ndarray:
    """Positions 0..k-1 of each row re-ordered by descending refined score s' (batched over rows)."""
    affinity = g_top @ g_top.transpose(0, 2, 1)
    affinity /= temperature
    affinity -= affinity.max(axis=2, keepdims=True)
    np.exp(affinity, out=affinity)
    affinity /= affinity.sum(axis=2, keepdims=True)
    scores = np.einsum("rkd,rd->rk", affinity @ g_top, qn)
    return np.argsort(-scores, axis=1, kind="stable")


def _encode_order(block: np.ndarray, top: np.ndarray, refined: np.ndarray, untouched_min: np.ndarray) -> np.ndarray:
    """A copy of `block` in which the items `refined` (per row, in order) rank first under (distance, index).

    `untouched_min`: the smallest distance outside `top` per row (+inf if none).
    """
    out = block.copy()
    k = top.shape[1]
    values = np.take_along_axis(block, top, axis=1)        # ascending: top is in tie-stable order
    new = np.empty_like(values)
    ceiling = untouched_min
    for pos in range(k - 1, -1, -1):
        ceiling = np.minimum(values[:, pos], np.nextafter(ceiling, -np.inf).astype(block.dtype))
        new[:, pos] = ceiling
    if not (np.all(np.diff(new, axis=1) > 0) and np.all(new[:, -1] < untouched_min)):
        raise ValueError("cannot encode the refined order: distances too close to -inf")
    np.put_along_axis(out, refined, new, axis=1)
    return out
