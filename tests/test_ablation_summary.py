"""The ablation's seed-by-seed comparison (bench/ablation.py), on hand-made results."""

import pytest

from bench.ablation import REFERENCE, ROWS, paired_comparison


def row(*values):
    return {"per_seed": [{"seed": seed, "rank1": r, "mAP": m, "mINP": i} for seed, (r, m, i) in enumerate(values)]}


def test_paired_comparison_counts_seeds_and_averages_differences():
    ours = row((0.5, 0.4, 0.2), (0.3, 0.4, 0.1), (0.6, 0.5, 0.3))
    ref = row((0.4, 0.4, 0.1), (0.35, 0.3, 0.1), (0.5, 0.5, 0.2))
    out = paired_comparison(ours, ref)
    assert out["seeds"] == 3
    assert out["delta_rank1"] == pytest.approx((0.1 - 0.05 + 0.1) / 3)
    assert (out["higher_rank1"], out["higher_mAP"], out["higher_mINP"]) == (2, 1, 2)  # ties are not "higher"


def test_only_seeds_both_rows_ran_are_compared():
    ours = row((0.5, 0.4, 0.2), (0.3, 0.4, 0.1))
    ref = {"per_seed": row((0.4, 0.4, 0.1)).get("per_seed")}
    assert paired_comparison(ours, ref)["seeds"] == 1
    assert paired_comparison(ours, {"per_seed": []}) == {}


def test_every_compared_row_has_a_reference_row():
    assert set(REFERENCE) <= set(ROWS) and set(REFERENCE.values()) <= set(ROWS)
