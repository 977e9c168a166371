"""k-reciprocal re-ranking (Zhong, Zheng, Cao, Li: "Re-ranking Person Re-identification with k-reciprocal
Encoding", CVPR 2017), on the CPU with NumPy.

Definitions used (probe set = queries and gallery together, N = Q + G items, as in the common implementation):

* original distance ``d(a, b) = |a^ - b^|^2``: squared Euclidean distance of L2-normalised features (float32),
  used unscaled in the final mix;
* ``N(p, k)``: the k nearest items of p among all N, p itself included, ordered by (distance, index);
* k-reciprocal set ``R(p, k) = {x in N(p, k+1) : p in N(x, k+1)}``;
* expanded set ``R*(p) = R(p, k1) U R(q, h)`` over every ``q in R(p, k1)`` with
  ``|R(p, k1) & R(q, h)| >= 2/3 |R(q, h)|`` (the paper's inequality), ``h = round(k1 / 2)``;
* ``V_p[x] = exp(-d(p, x)) / sum_{y in R*(p)} exp(-d(p, y))`` for x in R*(p), else 0;
* local query expansion ``V_p <- mean of V_x over x in N(p, k2)`` (k2 = 1: no expansion);
* Jaccard distance ``d_J(p, g) = 1 - sum_x min(V_p[x], V_g[x]) / sum_x max(V_p[x], V_g[x])``;
* final distance ``(1 - lambda) d_J + lambda d`` for every query x gallery pair (Q x G, float32).

The vectors V are sparse (about k2 * |R*| non-zeros per row), so they are kept as sorted (row, column, value)
arrays and the (Q+G)^2 distance matrix is never materialised: neighbours come from row chunks of it, and the
Jaccard sums from a column index of the gallery vectors. Peak memory is estimated before anything large is
allocated; it is dominated by the Q x G output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evaluate.metrics import _features, _l2_normalise, _sq_euclidean, smallest_k_stable

__all__ = ["k_reciprocal_rerank", "estimate_rerank_memory"]

_CHUNK_BYTES = 128 << 20          # working set of one chunk (distance rows, Jaccard accumulators)
_PAIRS_PER_CHUNK = 4_000_000      # min-contributions accumulated at once in the Jaccard step


@dataclass
class _SparseRows:
    """Row-sorted sparse matrix: row r holds cols[ptr[r]:ptr[r+1]] (ascending) with values vals[...]."""

    ptr: np.ndarray
    cols: np.ndarray
    vals: np.ndarray | None = None

    @staticmethod
    def from_keys(keys: np.ndarray, num: int, vals: np.ndarray | None = None) -> "_SparseRows":
        """From sorted, unique keys ``row * num + col``."""
        rows, cols = np.divmod(keys, num)
        return _SparseRows(np.searchsorted(rows, np.arange(num + 1)), cols, vals)

    def row_ids(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.ptr) - 1), np.diff(self.ptr))

    def keys(self, num: int) -> np.ndarray:
        return self.row_ids() * num + self.cols

    def gather(self, which: np.ndarray):
        """Entries of rows `which` (with repeats): (index into `which`, entry position)."""
        start = self.ptr[which]
        count = self.ptr[which + 1] - start
        owner = np.repeat(np.arange(len(which)), count)
        offset = np.arange(len(owner)) - np.repeat(np.cumsum(count) - count, count)
        return owner, start[owner] + offset


def estimate_rerank_memory(num_query: int, num_gallery: int, dim: int, k1: int = 20, k2: int = 6) -> int:
    """Upper-bound estimate (bytes) of the peak memory of :func:`k_reciprocal_rerank`."""
    n = num_query + num_gallery
    half = int(round(k1 / 2))
    per_row_star = min(n, (k1 + 1) * (half + 2))          # |R*| <= |R| + |R| * |R(q, h)|
    per_row_qe = min(n, k2 * per_row_star)
    output = 2 * num_query * num_gallery * 4                 # result + original distances of a chunk, float32
    features = 2 * n * dim * 4
    neighbours = n * (k1 + 1) * 8 * 4
    sparse = n * per_row_qe * 8 * 5                           # keys, inverse, values during de-duplication
    return output + features + neighbours + sparse + 4 * _CHUNK_BYTES + _PAIRS_PER_CHUNK * 8 * 6


def k_reciprocal_rerank(q_feats, g_feats, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
                        max_memory_gb: float = 8.0) -> np.ndarray:
    """Re-ranked Q x G distances (float32, smaller = closer); see the module docstring for the definitions.

    Raises ValueError on bad arguments or when the estimated peak memory exceeds `max_memory_gb` GiB.
    """
    q = _features(q_feats, "q_feats")
    g = _features(g_feats, "g_feats")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"feature dimensions differ: q_feats {q.shape}, g_feats {g.shape}")
    for name, value in (("k1", k1), ("k2", k2)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"lambda_value must be in [0, 1], got {lambda_value!r}")
    num_q, num_g, dim = len(q), len(g), q.shape[1]
    need = estimate_rerank_memory(num_q, num_g, dim, int(k1), int(k2))
    if need > max_memory_gb * 2**30:
        raise ValueError(f"k_reciprocal_rerank needs about {need / 2**30:.1f} GiB for Q={num_q} queries, G={num_g} "
                         f"gallery items (N={num_q + num_g}), D={dim}, k1={k1}, k2={k2}, of which "
                         f"{num_q * num_g * 4 / 2**30:.2f} GiB is the Q x G float32 result; that exceeds "
                         f"max_memory_gb={max_memory_gb}")
    if num_q == 0 or num_g == 0:
        return np.zeros((num_q, num_g), dtype=np.float32)

    feats = _l2_normalise(np.concatenate([q, g]).astype(np.float32))
    if not np.isfinite(feats).all():
        raise ValueError("features contain NaN or inf")
    sq_norms = np.einsum("ij,ij->i", feats, feats)
    num = len(feats)
    k1, k2 = int(k1), int(k2)
    half = int(round(k1 / 2))
    neighbours = _nearest(feats, sq_norms, min(k1 + 1, num))
    expanded = _expand(_reciprocal(neighbours, num), _reciprocal(neighbours[:, :half + 1], num), num)
    vectors = _local_expansion(_weights(expanded, feats, sq_norms), neighbours[:, :min(k2, num)], num)
    return _final_distances(vectors, feats, sq_norms, num_q, float(lambda_value))


def _nearest(feats: np.ndarray, sq_norms: np.ndarray, k: int) -> np.ndarray:
    """N x k nearest-neighbour indices (self included), tie-stable, from row chunks of the distance matrix."""
    num = len(feats)
    rows = max(1, _CHUNK_BYTES // (num * 16))
    out = np.empty((num, k), dtype=np.int64)
    for start in range(0, num, rows):
        stop = min(start + rows, num)
        out[start:stop] = smallest_k_stable(_sq_euclidean(feats[start:stop], feats, sq_norms), k)
    return out


def _reciprocal(neighbours: np.ndarray, num: int) -> _SparseRows:
    """R(p, k) for every p: the mutual pairs of the k-nearest lists `neighbours` (N x k, self included)."""
    rows = np.repeat(np.arange(num), neighbours.shape[1])
    cols = neighbours.ravel()
    forward = np.sort(rows * num + cols)
    backward = cols * num + rows
    at = np.minimum(np.searchsorted(forward, backward), len(forward) - 1)
    mutual = forward[at] == backward
    return _SparseRows.from_keys(np.sort(rows[mutual] * num + cols[mutual]), num)


def _expand(recip: _SparseRows, recip_half: _SparseRows, num: int) -> _SparseRows:
    """R*(p): R(p, k1) plus each R(q, h), q in R(p, k1), that shares at least 2/3 of its items with R(p, k1)."""
    p = recip.row_ids()
    q = recip.cols
    owner, entry = recip_half.gather(q)
    candidate = recip_half.cols[entry]
    recip_keys = recip.keys(num)
    probe = p[owner] * num + candidate
    at = np.minimum(np.searchsorted(recip_keys, probe), len(recip_keys) - 1)
    overlap = np.bincount(owner, weights=recip_keys[at] == probe, minlength=len(q))
    size = np.diff(recip_half.ptr)[q]
    accepted = 3 * overlap >= 2 * size                      # |R & R_h| >= 2/3 |R_h|, in integers
    added = probe[accepted[owner]]
    return _SparseRows.from_keys(np.unique(np.concatenate([recip_keys, added])), num)


def _weights(expanded: _SparseRows, feats: np.ndarray, sq_norms: np.ndarray) -> _SparseRows:
    """V: exp(-d(p, x)) on R*(p), normalised to sum 1 per row."""
    rows = expanded.row_ids()
    cols = expanded.cols
    dist = np.empty(len(cols), dtype=np.float64)
    step = max(1, _CHUNK_BYTES // (feats.shape[1] * 8))
    for start in range(0, len(cols), step):
        a, b = rows[start:start + step], cols[start:start + step]
        dot = np.einsum("ij,ij->i", feats[a], feats[b])
        dist[start:start + step] = np.maximum(sq_norms[a] + sq_norms[b] - 2.0 * dot, 0.0)
    weight = np.exp(-dist)
    weight /= np.bincount(rows, weights=weight, minlength=len(expanded.ptr) - 1)[rows]
    return _SparseRows(expanded.ptr, cols, weight)


def _local_expansion(vectors: _SparseRows, neighbours: np.ndarray, num: int) -> _SparseRows:
    """V_p <- mean of V_x over the k2 nearest x of p (self included)."""
    if neighbours.shape[1] == 1 and np.array_equal(neighbours[:, 0], np.arange(num)):
        return vectors
    owner, entry = vectors.gather(neighbours.ravel())
    keys = (owner // neighbours.shape[1]) * num + vectors.cols[entry]
    unique, inverse = np.unique(keys, return_inverse=True)
    vals = np.bincount(inverse, weights=vectors.vals[entry]) / neighbours.shape[1]
    return _SparseRows.from_keys(unique, num, vals)


def _final_distances(vectors: _SparseRows, feats, sq_norms, num_q: int, lam: float) -> np.ndarray:
    """(1 - lambda) * Jaccard + lambda * original, for query rows against gallery rows, chunk by chunk."""
    num = len(feats)
    num_g = num - num_q
    entry_row = vectors.row_ids()
    row_sum = np.bincount(entry_row, weights=vectors.vals, minlength=num)
    col_index = _gallery_columns(vectors, entry_row, num_q, num)
    query_entries = slice(0, vectors.ptr[num_q])
    cost = np.bincount(entry_row[query_entries], weights=np.diff(col_index.ptr)[vectors.cols[query_entries]],
                       minlength=num_q)
    out = np.empty((num_q, num_g), dtype=np.float32)
    max_rows = max(1, _CHUNK_BYTES // (num_g * 8 * 2))
    start = 0
    while start < num_q:
        stop = _chunk_end(cost, start, max_rows)
        overlap = _min_sums(vectors, entry_row, col_index, start, stop, num_g)
        union = row_sum[start:stop, None] + row_sum[None, num_q:] - overlap
        jaccard = 1.0 - overlap / union
        original = _sq_euclidean(feats[start:stop], feats[num_q:], sq_norms[num_q:])
        out[start:stop] = (1.0 - lam) * jaccard + lam * original.astype(np.float64)
        start = stop
    return out


def _chunk_end(cost: np.ndarray, start: int, max_rows: int) -> int:
    """Largest stop <= start + max_rows whose queries stay within _PAIRS_PER_CHUNK contributions (>= 1 row)."""
    stop = min(len(cost), start + max_rows)
    cumulative = np.cumsum(cost[start:stop])
    return start + max(1, int(np.searchsorted(cumulative, _PAIRS_PER_CHUNK, side="right")))


def _gallery_columns(vectors: _SparseRows, entry_row: np.ndarray, num_q: int, num: int) -> _SparseRows:
    """Column index of the gallery rows of V: for column x, the (gallery row, value) pairs with V_g[x] > 0."""
    lo = vectors.ptr[num_q]
    rows = entry_row[lo:] - num_q
    cols = vectors.cols[lo:]
    order = np.argsort(cols, kind="stable")
    ptr = np.searchsorted(cols[order], np.arange(num + 1))
    return _SparseRows(ptr, rows[order], vectors.vals[lo:][order])


def _min_sums(vectors: _SparseRows, entry_row, col_index: _SparseRows, start: int, stop: int,
              num_g: int) -> np.ndarray:
    """sum_x min(V_p[x], V_g[x]) for queries start:stop against every gallery row (dense, float64)."""
    lo, hi = vectors.ptr[start], vectors.ptr[stop]
    query = entry_row[lo:hi] - start
    owner, entry = col_index.gather(vectors.cols[lo:hi])
    contribution = np.minimum(vectors.vals[lo:hi][owner], col_index.vals[entry])
    flat = query[owner] * num_g + col_index.cols[entry]
    return np.bincount(flat, weights=contribution, minlength=(stop - start) * num_g).reshape(stop - start, num_g)
