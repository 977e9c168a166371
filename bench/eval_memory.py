"""Memory of evaluate.metrics.rank_metrics_from_features on a large gallery.

Q=3368 queries against 100,000 gallery images with 256-d random-but-clustered float32 features (seeded). Reports
wall time and the process's peak RSS (resource.getrusage ru_maxrss), next to the peak RSS of a separate Python
process that merely holds the full Q x G float32 distance matrix. Ends with one JSON line.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from evaluate.metrics import rank_metrics_from_features  # noqa: E402

Q, G, DIM, NUM_IDS, NUM_CAMS, SEED = 3368, 100_000, 256, 5000, 6, 0
CENTER_SCALE, NOISE = 0.5, 1.0                     # identity signal vs per-image noise

BASELINE = f"""
import resource, numpy as np
matrix = np.empty(({Q}, {G}), dtype=np.float32)
matrix.fill(1.0)                                    # touch every page
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024       # Linux reports KiB


def make_features(rng, pids, centers):
    feats = np.empty((len(pids), DIM), dtype=np.float32)
    for start in range(0, len(pids), 10_000):          # no large float64 temporaries
        block = pids[start:start + 10_000]
        feats[start:start + len(block)] = centers[block] + NOISE * rng.standard_normal((len(block), DIM),
                                                                                        dtype=np.float32)
    return feats


def main() -> None:
    rng = np.random.default_rng(SEED)
    centers = rng.standard_normal((NUM_IDS, DIM), dtype=np.float32) * CENTER_SCALE
    q_pids, g_pids = rng.integers(0, NUM_IDS, Q), rng.integers(0, NUM_IDS, G)
    q_cams, g_cams = rng.integers(0, NUM_CAMS, Q), rng.integers(0, NUM_CAMS, G)
    q_feats, g_feats = make_features(rng, q_pids, centers), make_features(rng, g_pids, centers)
    before = peak_rss_mib()

    start = time.perf_counter()
    out = rank_metrics_from_features(q_feats, g_feats, q_pids, g_pids, q_cams, g_cams, metric="cosine")
    wall = time.perf_counter() - start
    peak = peak_rss_mib()

    baseline = subprocess.run([sys.executable, "-c", BASELINE], capture_output=True, text=True, check=True)
    baseline_peak = int(baseline.stdout.strip()) / 1024
    matrix_mib = Q * G * 4 / 2**20
    print(f"rank_metrics_from_features: {wall:.2f} s wall, peak RSS {peak:.0f} MiB "
          f"({before:.0f} MiB before the call: interpreter + features); mAP={out['mAP']:.4f} "
          f"R1={out['rank1']:.4f} valid={out['num_valid_queries']}")
    print(f"baseline process holding the full {Q}x{G} float32 matrix ({matrix_mib:.0f} MiB): "
          f"peak RSS {baseline_peak:.0f} MiB")
    print(json.dumps({"bench": "eval_memory", "Q": Q, "G": G, "D": DIM, "wall_s": round(wall, 2),
                      "peak_rss_mib": round(peak), "rss_before_call_mib": round(before),
                      "baseline_full_matrix_peak_rss_mib": round(baseline_peak),
                      "full_matrix_mib": round(matrix_mib), "mAP": round(out["mAP"], 4),
                      "num_valid_queries": out["num_valid_queries"]}))


if __name__ == "__main__":
    main()
