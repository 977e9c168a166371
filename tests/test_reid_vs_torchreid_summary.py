"""bench/reid_vs_torchreid.py's configuration and summary logic, on hand-made results (torchreid not needed)."""

import pytest

from bench.reid_vs_torchreid import (compare, comparison_table, eval_every, market_items, parse_override,
                                     set_dotted, side_result, timing_summary)


def side(*per_seed, epoch=12):
    """{seed: result} with (rank1, mAP) at `epoch` for seeds 0, 1, ..."""
    return {seed: side_result({str(epoch): {"rank1": r, "mAP": m}}, 100.0, 1000, 20.0)
            for seed, (r, m) in enumerate(per_seed)}


def test_compare_pairs_seeds_and_counts_ties_as_ours_at_least():
    runs = {"torchreid": side((0.5, 0.4), (0.3, 0.3), (0.6, 0.5)), "ours": side((0.6, 0.4), (0.2, 0.35), (0.6, 0.4))}
    out = compare(runs, 12)
    assert out["seeds"] == 3 and [r["seed"] for r in out["per_seed"]] == [0, 1, 2]
    assert out["per_seed"][0]["delta"]["rank1"] == pytest.approx(0.1)
    assert out["mean_delta"]["rank1"] == pytest.approx((0.1 - 0.1 + 0.0) / 3)
    assert out["mean_ours"]["mAP"] == pytest.approx((0.4 + 0.35 + 0.4) / 3)
    assert out["ours_at_least"] == {"rank1": 2, "mAP": 2}  # seed 2 ties on rank-1, seed 0 on mAP


def test_compare_only_uses_seeds_both_sides_evaluated_at_that_epoch():
    runs = {"torchreid": side((0.5, 0.4), (0.3, 0.3)), "ours": side((0.6, 0.4))}
    runs["ours"][1] = side_result({"24": {"rank1": 0.9, "mAP": 0.9}}, 100.0, 1000, 20.0)  # no epoch-12 evaluation
    assert compare(runs, 12)["seeds"] == 1
    empty = compare({"torchreid": {}, "ours": {}}, 12)
    assert empty["seeds"] == 0 and "mean_ours" not in empty
    assert comparison_table("street", empty)[-1].strip() == "no seed finished on both sides"


def test_table_shows_every_seed_the_means_and_the_win_count():
    runs = {"torchreid": side((0.5, 0.4), (0.3, 0.3)), "ours": side((0.6, 0.45), (0.2, 0.3))}
    lines = comparison_table("figures", compare(runs, 12))
    assert lines[0] == "figures, epoch 12 (rank-1 / mAP)"
    assert "+0.100 / +0.050" in lines[2] and "-0.100 / +0.000" in lines[3]
    assert lines[4].split()[0] == "mean"
    assert lines[5].strip() == "ours >= torchreid: rank-1 on 1/2 seeds, mAP on 2/2 seeds"


def test_timing_excludes_evaluation_and_survives_reused_runs():
    assert side_result({}, 100.0, 1600, 20.0)["images_per_s"] == pytest.approx(20.0)
    reused = side_result({}, None, 1600, 20.0)
    assert reused["wall_s"] is None and reused["images_per_s"] is None
    summary = timing_summary({"torchreid": {0: side_result({}, 100.0, 1600, 20.0), 1: reused}, "ours": {}})
    assert summary["torchreid"] == {"runs": 1, "mean_wall_s": 100.0, "mean_images_per_s": 20.0,
                                    "mean_images": 1600.0}
    assert summary["ours"] == {"runs": 0}


def test_overrides_are_dotted_keys_with_json_values():
    assert parse_override("model_params.feature_dim=512") == ("model_params.feature_dim", 512)
    assert parse_override('amp="none"') == ("amp", "none")
    for bad in ("amp=none", "no_equals", "=1"):
        with pytest.raises(ValueError):
            parse_override(bad)
    params = {"lr": {"base_lr": 0.05, "fc_lr": 0.05}, "epochs": 20}
    out = set_dotted(set_dotted(params, "lr.base_lr", 0.1), "model_params.dropout", 0.5)
    assert out == {"lr": {"base_lr": 0.1, "fc_lr": 0.05}, "epochs": 20, "model_params": {"dropout": 0.5}}
    assert params["lr"]["base_lr"] == 0.05  # the root params are not modified


def test_evaluation_interval_hits_every_requested_epoch():
    assert eval_every([12, 24]) == 12
    assert eval_every([8, 20]) == 4
    assert eval_every([24]) == 24


def test_market_items_for_torchreid(tmp_path):
    for name in ("0003_c2s1_000100_00.jpg", "0001_c1s1_000010_00.jpg", "-1_c3s1_000005_00.jpg",
                 "0000_c6s1_000001_01.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    items = market_items(tmp_path)
    assert [(p.split("/")[-1][:4], pid, cam) for p, pid, cam in items] == [
        ("0000", 0, 5), ("0001", 1, 0), ("0003", 3, 1)]  # junk and non-images left out, camid 0-based
    assert [pid for _, pid, _ in market_items(tmp_path, relabel=True)] == [0, 1, 2]
