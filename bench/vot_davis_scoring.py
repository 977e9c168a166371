"""What scoring costs per frame in vot_evaluate and davis_evaluate, against the reference implementations in this
process.

``python bench/vot_davis_scoring.py [--frames 2000 --repeats 3]``

* VOT: `evaluate.vot_metrics.polygon_iou` (rotated 8-number polygon against a box, bounded by a 854×480 image) vs the
  GOT-10k toolkit's ``poly_iou`` (``got10k==0.1.3``, the same Shapely geometry; skipped when it is not installed), and
  the EAO of 60 runs of 350 frames with failures (`expected_average_overlap`, vectorised over fragments).
* DAVIS: `evaluate.davis_metrics.jaccard` and `boundary_f` on 854×480 masks (two discs), and DAVIS's own
  ``f_measure`` from ``davisinteractive`` when it is installed (it needs scikit-image and NumPy's removed ``np.int`` /
  ``np.float`` aliases, which are restored for it here).

Medians of ``--repeats`` runs, in microseconds per frame; the numbers must agree with the references (1e-9 / 1e-12).
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from evaluate.davis_metrics import boundary_f, jaccard  # noqa: E402
from evaluate.vot_metrics import (FAILURE, INIT, SKIPPED, TRACKED, expected_average_overlap, polygon_iou,  # noqa: E402
                                  run_from_codes)

WIDTH, HEIGHT = 854, 480


def timed(fn, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def polygons_and_boxes(count: int, rng) -> tuple[np.ndarray, np.ndarray]:
    centres, sizes = rng.uniform(-20, 870, (count, 2)), rng.uniform(10, 200, (count, 2))
    angles = rng.uniform(0, np.pi, count)
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)
    polygons = []
    for centre, size, angle in zip(centres, sizes, angles):
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        polygons.append((corners * size / 2 @ rotation.T + centre).reshape(-1))
    boxes = np.concatenate([centres - sizes / 2 + rng.normal(0, 10, (count, 2)), sizes], axis=1)
    return np.asarray(polygons), boxes


def random_runs(rng, count: int = 60, length: int = 350) -> list:
    runs = []
    for _ in range(count):
        codes, overlaps, i = [], [], 0
        while i < length:
            codes.append(INIT)
            overlaps.append(np.nan)
            i += 1
            while i < length:
                if rng.random() < 0.01:
                    codes += [FAILURE] + [SKIPPED] * 4
                    overlaps += [0.0] * 5
                    i += 5
                    break
                codes.append(TRACKED)
                overlaps.append(rng.uniform(0.3, 0.9))
                i += 1
        runs.append(run_from_codes(codes[:length], overlaps[:length]))
    return runs


def disc(cx: float, cy: float, radius: float) -> np.ndarray:
    rows, cols = np.ogrid[0:HEIGHT, 0:WIDTH]
    return (cols + 0.5 - cx) ** 2 + (rows + 0.5 - cy) ** 2 <= radius ** 2


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    result: dict = {}

    polygons, boxes = polygons_and_boxes(args.frames, rng)
    ours = [polygon_iou(p, b, (WIDTH, HEIGHT)) for p, b in zip(polygons, boxes)]
    seconds = timed(lambda: [polygon_iou(p, b, (WIDTH, HEIGHT)) for p, b in zip(polygons, boxes)], args.repeats)
    result["polygon_iou_us"] = 1e6 * seconds / args.frames
    try:
        from got10k.utils.metrics import poly_iou
    except ImportError:
        print("got10k not installed: no toolkit comparison")
    else:
        theirs = poly_iou(polygons, boxes, bound=(WIDTH, HEIGHT))
        ours_zeroed = np.nan_to_num(np.asarray(ours), nan=0.0)  # the toolkit gives 0 where both are empty
        assert np.allclose(ours_zeroed, theirs, rtol=0, atol=1e-9), "polygon IoU differs from the toolkit"
        seconds = timed(lambda: poly_iou(polygons, boxes, bound=(WIDTH, HEIGHT)), args.repeats)
        result["got10k_poly_iou_us"] = 1e6 * seconds / args.frames

    runs = random_runs(rng)
    result["eao_60x350_ms"] = 1e3 * timed(lambda: expected_average_overlap(runs, 100, 356), args.repeats)
    result["eao"] = expected_average_overlap(runs, 100, 356)[0]

    pairs = [(disc(rng.uniform(100, 750), rng.uniform(100, 380), rng.uniform(20, 120)),
              disc(rng.uniform(100, 750), rng.uniform(100, 380), rng.uniform(20, 120))) for _ in range(20)]
    result["jaccard_us"] = 1e6 * timed(lambda: [jaccard(p, t) for p, t in pairs], args.repeats) / len(pairs)
    result["boundary_f_us"] = 1e6 * timed(lambda: [boundary_f(p, t) for p, t in pairs], args.repeats) / len(pairs)
    try:
        from davisinteractive.metrics import jaccard as official
    except ImportError:
        print("davisinteractive not installed: no DAVIS comparison")
    else:
        for alias, kind in (("int", int), ("float", float)):
            if alias not in np.__dict__:
                setattr(np, alias, kind)
        for p, t in pairs:
            assert abs(boundary_f(p, t) - official.f_measure(t, p)) < 1e-12, "F differs from davisinteractive"
        result["davisinteractive_f_measure_us"] = 1e6 * timed(lambda: [official.f_measure(t, p) for p, t in pairs],
                                                               args.repeats) / len(pairs)
    for key, value in result.items():
        print(f"{key:32s} {value:12.3f}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
