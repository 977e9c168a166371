"""Ranking metrics for person re-identification (Market-1501 single-query protocol).

Protocol, for every query q (pid p, camera c) against the gallery; ``dist`` is Q x G, smaller = closer:

* **Junk.** Gallery items with pid ``-1`` are junk for every query; gallery items with pid ``p`` *and* camera ``c``
  are junk for q. Junk items are removed from q's ranking before anything is counted. pid ``0`` (Market-1501
  "distractors") is not special: it is an ordinary identity, i.e. a negative for every query with another pid.
  A query whose own pid is ``-1`` therefore never has a positive.
* **Tie-stable ranking.** Gallery items are ordered by ``(distance, gallery index)`` ascending, which is exactly the
  order of ``np.argsort(row, kind="stable")``: of two items at the same distance the lower gallery index ranks first.
  ``-0.0`` and ``0.0`` are equal distances; ``+inf``/``-inf`` are allowed; NaN is rejected.
* **Positives** are gallery items with pid ``p`` and a camera other than ``c``. A query with no positive left is
  *skipped* (``num_skipped_queries``); every average below is over the valid queries only. If no query is valid,
  :class:`NoValidQueryError` is raised.
* With ``r_1 < ... < r_n`` the 1-based ranks of the ``n`` positives in the junk-free ranking:

  - ``cmc[k]`` (k = 0 .. max_rank-1) = fraction of valid queries with ``r_1 <= k + 1``. It is never truncated: a
    gallery shorter than ``max_rank`` simply yields a tail of 1.0, so the curve is monotone.
    ``rank1``/``rank5``/``rank10`` = fraction of valid queries with ``r_1 <= 1/5/10`` (independent of max_rank).
  - ``mAP`` - plain (non-interpolated) AP as in fast-reid / torchreid: ``AP = (1/n) * sum_i i / r_i``.
  - ``mAP_trapezoid`` - the official Market-1501 devkit ``compute_AP``:
    ``AP = (1/n) * sum_i ((i-1)/(r_i-1) + i/r_i) / 2``, the first term being 1.0 when ``r_i = 1``.
  - ``mINP`` - fast-reid / ReID-Survey inverse negative penalty: ``INP = n / r_n``.

  All accumulation is in float64.

How it is computed without sorting rows (a full sort of a Market-sized matrix alone costs ~1 s): the rank of a
positive is ``1 + #(non-junk items before it in (distance, index) order)``, and a query has only a few same-pid
gallery items. For each query row the positives' distances t are compared with every item of the row in one
broadcast comparison per slab of rows: ``#{d < t}`` plus, where ``#{d <= t}`` shows that other items share the
value t, those tied items with a lower gallery index (:func:`_count_items_before`). Items with pid -1 are dropped
as columns first; same-pid same-camera junk ranked before a positive is known exactly from the small same-pid set
and subtracted. A row with very many positives is ranked by a stable argsort instead. Queries are processed in
chunks (threads over chunks; NumPy releases the GIL in the heavy loops), so memory stays bounded; per-query results
are produced per chunk and merged (:func:`_summarise`).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = [
    "NoValidQueryError",
    "rank_metrics",
    "rank_metrics_from_features",
    "pairwise_distances",
    "per_query_metrics",
    "topk_filtered",
    "smallest_k_stable",
]

JUNK_PID = -1
_SLAB_BYTES = 2 << 20        # comparison flags per slab of rows: about an L2 cache
_SORT_ABOVE = 96             # a row with more positives than this is ranked by a stable argsort instead
_DEFAULT_CHUNK = 128         # query rows per unit of work


class NoValidQueryError(ValueError):
    """No query has a positive left after junk removal, so no metric can be averaged."""


# --------------------------------------------------------------------------------------------------------------------
# input handling


def _to_numpy(x, name: str) -> np.ndarray:
    """NumPy view of an array-like or torch tensor (torch is only touched when `x` is a tensor)."""
    if type(x).__module__.startswith("torch"):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as err:  # pragma: no cover - exotic inputs
        raise ValueError(f"{name}: cannot convert {type(x).__name__} to an array: {err}") from None


def _as_labels(x, name: str, expected_len: int | None = None) -> np.ndarray:
    arr = _to_numpy(x, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if expected_len is not None and len(arr) != expected_len:
        raise ValueError(f"{name} has length {len(arr)}, expected {expected_len}")
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "b" or (arr.dtype.kind == "f" and len(arr) and not np.all(np.isfinite(arr))):
        raise ValueError(f"{name} must hold integer labels, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and np.all(arr == np.round(arr)):
        return arr.astype(np.int64)
    if len(arr) == 0:
        return arr.astype(np.int64)
    raise ValueError(f"{name} must hold integer labels, got dtype {arr.dtype}")


def _as_distances(dist) -> np.ndarray:
    arr = _to_numpy(dist, "dist")
    if arr.ndim != 2:
        raise ValueError(f"dist must be a 2-D (num_query x num_gallery) array, got shape {arr.shape}")
    if arr.dtype not in (np.float32, np.float64):
        if arr.dtype.kind not in "fiub":
            raise ValueError(f"dist must be numeric, got dtype {arr.dtype}")
        arr = arr.astype(np.float64)
    return arr


def _check_max_rank(max_rank) -> int:
    if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise ValueError(f"max_rank must be a positive integer, got {max_rank!r}")
    return int(max_rank)


def _num_workers(num_threads: int | None) -> int:
    if num_threads is not None:
        return max(1, int(num_threads))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


# --------------------------------------------------------------------------------------------------------------------
# gallery index: built once, answers "which gallery items share this query's pid"


class _Gallery:
    """Gallery labels grouped by pid; pid -1 items are dropped (junk for every query).

    Columns are reported in *kept* coordinates (index among non-junk items, order preserved), which is what the
    distance block handed to the counting code uses.
    """

    def __init__(self, g_pids: np.ndarray, g_camids: np.ndarray):
        self.size = len(g_pids)
        keep = g_pids != JUNK_PID
        self.kept_cols = np.flatnonzero(keep)
        self.all_kept = len(self.kept_cols) == self.size
        kept_pids = g_pids[keep]
        order = np.argsort(kept_pids, kind="stable")          # members of a pid stay in gallery order
        sorted_pids = kept_pids[order]
        self.pids, self.starts, self.counts = np.unique(sorted_pids, return_index=True, return_counts=True)
        self.member_cols = order                              # kept coordinates, grouped by pid
        self.member_cams = g_camids[keep][order]

    def same_pid_pairs(self, q_pids: np.ndarray, q_camids: np.ndarray):
        """(query row, kept column, is_positive) for every same-pid gallery item of every query, grouped by row."""
        if len(self.pids) == 0:
            empty = np.zeros(0, np.int64)
            return empty, empty, np.zeros(0, bool)
        slot = np.minimum(np.searchsorted(self.pids, q_pids), len(self.pids) - 1)
        found = self.pids[slot] == q_pids
        counts = np.where(found, self.counts[slot], 0)
        rows = np.repeat(np.arange(len(q_pids)), counts)
        # member index = group start + position within the group
        member = np.repeat(self.starts[slot] - (np.cumsum(counts) - counts), counts) + np.arange(len(rows))
        cols = self.member_cols[member]
        positive = self.member_cams[member] != q_camids[rows]
        return rows, cols, positive


# --------------------------------------------------------------------------------------------------------------------
# exact counting of the items ranked before a given item, without sorting rows


def _count_items_before(block: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """For each (row, col): ``#{j : (block[row, j], j) < (block[row, col], col)}``, its 0-based tie-stable rank.

    `rows` must be sorted. Rows with few queried items are counted with vectorised comparisons; rows with more than
    ``_SORT_ABOVE`` of them (where comparing would cost more than a sort) with a stable argsort.
    """
    result = np.empty(len(rows), dtype=np.int64)
    many = (np.bincount(rows, minlength=block.shape[0]) > _SORT_ABOVE)[rows]
    if many.any():
        result[many] = _count_by_sorting(block, rows[many], cols[many])
    if not many.all():
        few = ~many
        result[few] = _count_by_comparing(block, rows[few], cols[few])
    return result


def _count_by_sorting(block: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    result = np.empty(len(rows), dtype=np.int64)
    position = np.empty(block.shape[1], dtype=np.int64)
    bounds = np.flatnonzero(np.diff(rows, prepend=-1, append=-1))
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        position[np.argsort(block[rows[lo]], kind="stable")] = np.arange(block.shape[1])
        result[lo:hi] = position[cols[lo:hi]]
    return result


def _count_by_comparing(block: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Counts by comparing every item of a row with all of that row's thresholds t = block[row, col].

    ``#{d < t}`` and ``#{d <= t}`` come from two broadcast comparisons per slab of rows; where they differ by more
    than one (t itself), other items tie with t and those with a lower index are added explicitly (rare with
    real-valued distances). Rows are taken in order of their number of thresholds so that padding the slab to a
    rectangle wastes little.
    """
    values = block[rows, cols]
    width = block.shape[1]
    row_ids, first, per_row = np.unique(rows, return_index=True, return_counts=True)
    by_count = np.argsort(per_row, kind="stable")
    counts = per_row[by_count]
    offsets = np.concatenate(([0], np.cumsum(counts)))
    # thresholds regrouped in the order of their rows; `within`: column in the slab's threshold matrix
    take = np.repeat(first[by_count] - offsets[:-1], counts) + np.arange(offsets[-1])
    row_pos = np.repeat(np.arange(len(counts)), counts)
    within = np.arange(offsets[-1]) - offsets[row_pos]
    cols, values = cols[take], values[take]
    words = _WordCounter(width)
    budget = max(_SLAB_BYTES, 2 * int(counts[-1]) * words.padded)      # two flag arrays: less, equal
    scratch = np.empty(budget, dtype=bool)
    before = np.empty(len(rows), dtype=np.int64)
    start = 0
    while start < len(counts):
        stop = min(len(counts), start + max(1, budget // (2 * int(counts[start]) * words.padded)))
        stop = min(stop, start + max(1, budget // (2 * int(counts[stop - 1]) * words.padded)))
        part = slice(offsets[start], offsets[stop])
        before[part] = _count_slab(block[row_ids[by_count[start:stop]]], row_pos[part] - start, within[part],
                                   cols[part], values[part], int(counts[stop - 1]), words, scratch)
        start = stop
    result = np.empty(len(rows), dtype=np.int64)
    result[take] = before
    return result


class _WordCounter:
    """Counts True entries along the last axis of a padded bool array, 8 at a time.

    Bools are summed as uint64 words in groups of at most 255 words, so each byte lane holds a count <= 255 and
    never carries into its neighbour; the lanes are added at the end. Much faster than summing bools one by one.
    """

    def __init__(self, width: int):
        self.width = width
        self.group = max(1, min(255, -(-width // 8)))
        self.padded = -(-width // (8 * self.group)) * 8 * self.group

    def count(self, flags: np.ndarray) -> np.ndarray:
        lead = flags.shape[:-1]
        lanes = np.add.reduce(flags.view(np.uint64).reshape(*lead, -1, self.group), axis=-1)
        return lanes.view(np.uint8).reshape(*lead, -1).sum(axis=-1, dtype=np.int64)


def _count_slab(x: np.ndarray, slab_row, within, cols, values, num_thresholds: int, words: _WordCounter,
                scratch: np.ndarray) -> np.ndarray:
    num_rows, width = x.shape
    thresholds = np.empty((num_rows, num_thresholds, 1), dtype=x.dtype)
    thresholds.fill(np.nan)                                  # NaN padding compares False
    thresholds[slab_row, within, 0] = values
    flags = scratch[:num_rows * 2 * num_thresholds * words.padded].reshape(num_rows, 2 * num_thresholds,
                                                                             words.padded)
    flags[:, :, width:] = False
    np.less(x[:, None, :], thresholds, out=flags[:, :num_thresholds, :width])
    np.less_equal(x[:, None, :], thresholds, out=flags[:, num_thresholds:, :width])
    counts = words.count(flags)
    before = counts[slab_row, within]
    tied = np.flatnonzero(counts[slab_row, num_thresholds + within] - before > 1)   # t occurs more than once
    if len(tied):
        equal = x[slab_row[tied]] == values[tied, None]
        equal &= np.arange(width) < cols[tied, None]
        before[tied] += np.count_nonzero(equal, axis=1)
    return before


# --------------------------------------------------------------------------------------------------------------------
# per-query results of one chunk


@dataclass
class _QueryStats:
    """Per-query results; ranks are 1-based in the junk-free, tie-stable ranking (0 where invalid)."""

    valid: np.ndarray            # bool: at least one positive
    num_positives: np.ndarray    # int64
    first_rank: np.ndarray       # int64, r_1
    last_rank: np.ndarray        # int64, r_n
    ap: np.ndarray               # float64, plain AP
    ap_trapezoid: np.ndarray     # float64, devkit compute_AP
    inp: np.ndarray              # float64, n / r_n
    no_same_pid: np.ndarray      # bool: no non-junk same-pid gallery item at all (for the error message)

    @staticmethod
    def concat(parts: list["_QueryStats"]) -> "_QueryStats":
        fields = _QueryStats.__dataclass_fields__
        return _QueryStats(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in fields})


def _chunk_stats(dist_chunk: np.ndarray, q_pids: np.ndarray, q_camids: np.ndarray, gallery: _Gallery,
                 columns_kept: bool = False) -> _QueryStats:
    """Per-query metrics for a chunk of query rows. `columns_kept`: the chunk already excludes pid -1 columns."""
    num_q = len(q_pids)
    if dist_chunk.size and np.isnan(np.min(dist_chunk)):
        raise ValueError("dist contains NaN")
    rows, cols, positive = gallery.same_pid_pairs(q_pids, q_camids)
    num_pos = np.bincount(rows[positive], minlength=num_q)
    stats = _QueryStats(valid=num_pos > 0, num_positives=num_pos,
                        first_rank=np.zeros(num_q, np.int64), last_rank=np.zeros(num_q, np.int64),
                        ap=np.zeros(num_q), ap_trapezoid=np.zeros(num_q), inp=np.zeros(num_q),
                        no_same_pid=np.bincount(rows, minlength=num_q) == 0)
    keep = stats.valid[rows]
    if not keep.any():
        return stats
    block = dist_chunk if columns_kept or gallery.all_kept else dist_chunk[:, gallery.kept_cols]
    rows, cols, positive = rows[keep], cols[keep], positive[keep]
    order = np.lexsort((cols, block[rows, cols], rows))    # tie-stable order of each query's same-pid items
    rows, cols, positive = rows[order], cols[order], positive[order]

    # Same-camera junk ranked before a positive is among the same-pid items, so it is counted here exactly.
    row_first = np.searchsorted(rows, rows, side="left")
    junk_before = _exclusive_cumsum(~positive)
    junk_before -= junk_before[row_first]
    pos_before = _exclusive_cumsum(positive)
    pos_before -= pos_before[row_first]

    rows, cols = rows[positive], cols[positive]
    rank = _count_items_before(block, rows, cols) - junk_before[positive] + 1
    _fill_stats(stats, rows, rank, pos_before[positive] + 1)
    return stats


def _exclusive_cumsum(flags: np.ndarray) -> np.ndarray:
    out = np.cumsum(flags, dtype=np.int64)
    out -= flags
    return out


def _fill_stats(stats: _QueryStats, rows: np.ndarray, rank: np.ndarray, i: np.ndarray) -> None:
    """AP (plain, trapezoid), INP and first/last rank per query from its positives' 1-based ranks.

    `rows`: the query of each positive (sorted), `rank`: its rank r_i, `i`: its 1-based index among the query's
    positives (ranks increase with i).
    """
    num_q = len(stats.valid)
    n = stats.num_positives[rows]
    rank_f = rank.astype(np.float64)
    i_f = i.astype(np.float64)
    precision = i_f / rank_f
    with np.errstate(divide="ignore", invalid="ignore"):
        before_hit = np.where(rank > 1, (i_f - 1.0) / (rank_f - 1.0), 1.0)   # devkit: 1.0 at rank 1
    valid = stats.valid
    n_q = stats.num_positives[valid].astype(np.float64)
    stats.ap[valid] = np.bincount(rows, weights=precision, minlength=num_q)[valid] / n_q
    trapezoid = np.bincount(rows, weights=(before_hit + precision) / 2.0, minlength=num_q)
    stats.ap_trapezoid[valid] = trapezoid[valid] / n_q
    stats.first_rank[rows[i == 1]] = rank[i == 1]
    stats.last_rank[rows[i == n]] = rank[i == n]
    stats.inp[valid] = n_q / stats.last_rank[valid]


# --------------------------------------------------------------------------------------------------------------------
# drivers: chunking, threads, summary


def _run_chunks(num_queries: int, chunk_size: int, work: Callable[[int, int], _QueryStats],
                num_threads: int | None) -> _QueryStats:
    bounds = [(s, min(s + chunk_size, num_queries)) for s in range(0, num_queries, chunk_size)]
    workers = min(_num_workers(num_threads), len(bounds))
    if workers <= 1:
        parts = [work(a, b) for a, b in bounds]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(lambda ab: work(*ab), bounds))
    if not parts:
        return _chunk_stats(np.zeros((0, 0)), np.zeros(0, np.int64), np.zeros(0, np.int64),
                            _Gallery(np.zeros(0, np.int64), np.zeros(0, np.int64)))
    return _QueryStats.concat(parts)


def _summarise(stats: _QueryStats, q_pids: np.ndarray, max_rank: int) -> dict:
    num_q = len(stats.valid)
    num_valid = int(stats.valid.sum())
    if num_valid == 0:
        raise NoValidQueryError(_no_valid_message(stats, q_pids))
    first = stats.first_rank[stats.valid]
    ranks_hit = np.bincount(np.minimum(first, max_rank + 1), minlength=max_rank + 2)[1:max_rank + 1]
    cmc = np.cumsum(ranks_hit, dtype=np.float64) / num_valid
    return {
        "rank1": float(np.mean(first <= 1)),
        "rank5": float(np.mean(first <= 5)),
        "rank10": float(np.mean(first <= 10)),
        "mAP": float(np.mean(stats.ap[stats.valid])),
        "mAP_trapezoid": float(np.mean(stats.ap_trapezoid[stats.valid])),
        "mINP": float(np.mean(stats.inp[stats.valid])),
        "num_valid_queries": num_valid,
        "num_skipped_queries": num_q - num_valid,
        "cmc": cmc,
    }


def _no_valid_message(stats: _QueryStats, q_pids: np.ndarray) -> str:
    num_q = len(stats.valid)
    if num_q == 0:
        return "no valid query: 0 queries were given"
    junk_q = int(np.sum(q_pids == JUNK_PID))
    absent = int(np.sum(stats.no_same_pid & (q_pids != JUNK_PID)))
    same_cam = num_q - junk_q - absent
    return (f"no valid query among the {num_q} queries given: a query needs a gallery item of its identity seen by "
            f"another camera; {absent} queries' identities are absent from the gallery (ignoring pid -1 junk), "
            f"{same_cam} are only seen by the query's own camera, {junk_q} queries have pid -1 (junk)")


def _per_query_dict(stats: _QueryStats) -> dict:
    return {
        "valid": stats.valid, "num_positives": stats.num_positives, "first_rank": stats.first_rank,
        "last_rank": stats.last_rank, "ap": stats.ap, "ap_trapezoid": stats.ap_trapezoid, "inp": stats.inp,
    }


# --------------------------------------------------------------------------------------------------------------------
# public API


def rank_metrics(dist, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50, *, per_query: bool = False,
                 chunk_size: int = _DEFAULT_CHUNK, num_threads: int | None = None) -> dict:
    """CMC, mAP (plain), mAP_trapezoid (devkit) and mINP of a Q x G distance matrix (see the module docstring).

    Accepts NumPy arrays or torch tensors. Returns ``rank1, rank5, rank10, mAP, mAP_trapezoid, mINP`` (float),
    ``num_valid_queries, num_skipped_queries`` (int) and ``cmc`` (float64 array of length max_rank). With
    ``per_query=True`` the dict also holds ``per_query`` (see :func:`per_query_metrics`). Raises ValueError on bad
    shapes or NaN and :class:`NoValidQueryError` when no query has a positive.
    """
    max_rank = _check_max_rank(max_rank)
    stats, q_pids = _stats_from_distances(dist, q_pids, g_pids, q_camids, g_camids, chunk_size, num_threads)
    out = _summarise(stats, q_pids, max_rank)
    if per_query:
        out["per_query"] = _per_query_dict(stats)
    return out


def per_query_metrics(dist, q_pids, g_pids, q_camids, g_camids) -> dict:
    """Per-query arrays of length Q, same protocol as :func:`rank_metrics`, nothing averaged.

    Keys: ``valid`` (bool), ``num_positives``, ``first_rank`` (r_1), ``last_rank`` (r_n) (int64, 1-based, 0 where
    invalid), ``ap`` (plain), ``ap_trapezoid`` (devkit), ``inp`` (float64, 0 where invalid). Never raises
    NoValidQueryError.
    """
    stats, _ = _stats_from_distances(dist, q_pids, g_pids, q_camids, g_camids, _DEFAULT_CHUNK, None)
    return _per_query_dict(stats)


def _stats_from_distances(dist, q_pids, g_pids, q_camids, g_camids, chunk_size, num_threads):
    dist = _as_distances(dist)
    num_q, num_g = dist.shape
    q_pids = _as_labels(q_pids, "q_pids", num_q)
    q_camids = _as_labels(q_camids, "q_camids", num_q)
    gallery = _Gallery(_as_labels(g_pids, "g_pids", num_g), _as_labels(g_camids, "g_camids", num_g))

    def work(a: int, b: int) -> _QueryStats:
        return _chunk_stats(dist[a:b], q_pids[a:b], q_camids[a:b], gallery)

    return _run_chunks(num_q, max(1, int(chunk_size)), work, num_threads), q_pids


def pairwise_distances(q_feats, g_feats, metric: str = "cosine") -> np.ndarray:
    """Query x gallery distances, in float32 unless a feature array is float64.

    ``"cosine"``: ``1 - <q/|q|, g/|g|>`` (zero vectors stay zero, so their distance is 1). ``"euclidean"``: the
    *squared* Euclidean distance ``|q|^2 + |g|^2 - 2<q, g>``, clipped at 0 against rounding.
    """
    q = _features(q_feats, "q_feats")
    g = _features(g_feats, "g_feats")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"feature dimensions differ: q_feats {q.shape}, g_feats {g.shape}")
    q, g = _common_float(q, g)
    return _chunk_distance_fn(q, g, metric)(0, len(q))


def _features(x, name) -> np.ndarray:
    arr = _to_numpy(x, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (num x dim), got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    return arr


def _common_float(q, g):
    dtype = np.float64 if np.float64 in (q.dtype, g.dtype) else np.float32
    return q.astype(dtype, copy=False), g.astype(dtype, copy=False)


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    norm = np.sqrt(np.einsum("ij,ij->i", x, x))
    norm[norm == 0] = 1
    return x / norm[:, None]


def _cosine(qn: np.ndarray, gn: np.ndarray) -> np.ndarray:
    d = qn @ gn.T
    np.subtract(1, d, out=d)
    return d


def _sq_euclidean(q: np.ndarray, g: np.ndarray, g_sq: np.ndarray) -> np.ndarray:
    d = q @ g.T
    d *= -2
    d += np.einsum("ij,ij->i", q, q)[:, None]
    d += g_sq[None, :]
    np.maximum(d, 0, out=d)
    return d


def rank_metrics_from_features(q_feats, g_feats, q_pids, g_pids, q_camids, g_camids, metric: str = "cosine",
                               max_rank: int = 50, chunk_size: int = 64, *, per_query: bool = False,
                               num_threads: int | None = None) -> dict:
    """:func:`rank_metrics` on distances computed chunk by chunk from features (never the full Q x G matrix).

    Distances are those of :func:`pairwise_distances` (``"cosine"``: 1 - cosine similarity; ``"euclidean"``:
    squared Euclidean), computed for `chunk_size` queries at a time and only against non-junk gallery items.
    Extra memory: about ``threads * chunk_size * G * 4`` bytes (float32 features) plus a few MB per thread.
    """
    q = _features(q_feats, "q_feats")
    g = _features(g_feats, "g_feats")
    num_q, num_g = len(q), len(g)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"feature dimensions differ: q_feats {q.shape}, g_feats {g.shape}")
    q_pids = _as_labels(q_pids, "q_pids", num_q)
    q_camids = _as_labels(q_camids, "q_camids", num_q)
    g_pids = _as_labels(g_pids, "g_pids", num_g)
    g_camids = _as_labels(g_camids, "g_camids", num_g)
    max_rank = _check_max_rank(max_rank)
    gallery = _Gallery(g_pids, g_camids)
    q, g = _common_float(q, g)
    g = g[gallery.kept_cols] if not gallery.all_kept else g
    distances = _chunk_distance_fn(q, g, metric)

    def work(a: int, b: int) -> _QueryStats:
        return _chunk_stats(distances(a, b), q_pids[a:b], q_camids[a:b], gallery, columns_kept=True)

    stats = _run_chunks(num_q, max(1, int(chunk_size)), work, num_threads)
    out = _summarise(stats, q_pids, max_rank)
    if per_query:
        out["per_query"] = _per_query_dict(stats)
    return out


def _chunk_distance_fn(q: np.ndarray, g: np.ndarray, metric: str) -> Callable[[int, int], np.ndarray]:
    """Row-chunk distance function: rows a:b of pairwise_distances, computed identically for any chunking."""
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    if metric == "cosine":
        gn = _l2_normalise(g)
        return lambda a, b: _cosine(_l2_normalise(q[a:b]), gn)
    g_sq = np.einsum("ij,ij->i", g, g)
    return lambda a, b: _sq_euclidean(q[a:b], g, g_sq)


def topk_filtered(dist_row, q_pid, q_camid, g_pids, g_camids, k: int) -> np.ndarray:
    """Gallery indices of the first `k` items of one query's junk-free, tie-stable ranking (fewer if short).

    Junk as in :func:`rank_metrics`: pid -1 items and same-pid same-camera items are removed; the rest is ordered by
    (distance, gallery index).
    """
    row = _to_numpy(dist_row, "dist_row")
    if row.ndim != 1:
        raise ValueError(f"dist_row must be 1-D, got shape {row.shape}")
    g_pids = _as_labels(g_pids, "g_pids", len(row))
    g_camids = _as_labels(g_camids, "g_camids", len(row))
    if np.isnan(row).any():
        raise ValueError("dist_row contains NaN")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    junk = (g_pids == JUNK_PID) | ((g_pids == int(q_pid)) & (g_camids == int(q_camid)))
    kept = np.flatnonzero(~junk)
    order = np.argsort(row[kept], kind="stable")
    return kept[order[:k]]


def smallest_k_stable(block, k: int) -> np.ndarray:
    """Indices of the `k` smallest entries of each row in tie-stable order ``(value, index)`` (rows x min(k, cols)).

    Equal to ``np.argsort(block, axis=1, kind="stable")[:, :k]`` without sorting whole rows.
    """
    return _smallest_k(_as_distances(block), k)[0]


def _smallest_k(block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(tie-stable indices of the k smallest per row, the (k+1)-th smallest value per row or +inf if none)."""
    rows, width = block.shape
    k = max(0, min(int(k), width))
    if block.size and np.isnan(np.min(block)):
        raise ValueError("distances contain NaN")
    if k == width:
        return np.argsort(block, axis=1, kind="stable"), np.full(rows, np.inf, dtype=block.dtype)
    if k == 0:
        return np.zeros((rows, 0), dtype=np.int64), np.min(block, axis=1)
    part = np.partition(block, k, axis=1)
    boundary = np.stack([part[:, :k].max(axis=1), part[:, k]], axis=1)   # k-th and (k+1)-th smallest values
    tied = boundary[:, 0] == boundary[:, 1]      # the k-th value continues past k: equal ones go by index
    top = np.empty((rows, k), dtype=np.int64)
    if not tied.all():
        clear = ~tied
        top[clear] = np.nonzero(block[clear] <= boundary[clear, :1])[1].reshape(-1, k)
    if tied.any():
        top[tied] = _smallest_k_by_mask(block[tied], k, boundary[tied, :1])
    order = np.argsort(np.take_along_axis(block, top, axis=1), axis=1, kind="stable")   # top is in index order
    return np.take_along_axis(top, order, axis=1), boundary[:, 1]


def _smallest_k_by_mask(block: np.ndarray, k: int, kth: np.ndarray) -> np.ndarray:
    """Index-ordered set of the k tie-stable smallest: all entries below the k-th value, then equal ones by index."""
    chosen = block < kth
    equal = block == kth
    room = k - np.count_nonzero(chosen, axis=1)
    chosen |= equal & (np.cumsum(equal, axis=1) <= room[:, None])
    return np.nonzero(chosen)[1].reshape(len(block), k)
