"""Tests for data.synthetic (Market-1501, class folders, GOT-10k generators)."""

from __future__ import annotations

import configparser
import json
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from data import synthetic as syn  # noqa: E402
from data.synthetic import ClassesSpec, Got10kSpec, MarketSpec  # noqa: E402

NAME_RE = re.compile(r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$")

TINY_MARKET = MarketSpec(num_train_ids=8, num_test_ids=8, cameras=4, train_images_per_id=5,
                         min_gallery_per_id=4, max_gallery_per_id=6, num_distractors=6, num_junk=4,
                         img_h=64, img_w=32, seed=3)
TINY_CLASSES = ClassesSpec(num_classes=4, train_per_class=5, val_per_class=3, img_size=32, seed=1)
TINY_GOT = Got10kSpec(num_train_seqs=2, num_val_seqs=2, min_frames=10, max_frames=14, img_w=96, img_h=72, seed=2)


def parse_dir(d: Path):
    """(pid, cam, seq, frame, box) for every file of a Market folder; fails on a bad name."""
    out = []
    for f in sorted(d.iterdir()):
        m = NAME_RE.match(f.name)
        assert m, f"bad Market file name {f.name}"
        out.append((int(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(4)), int(m.group(5))))
    return out


def tree_bytes(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    root = tmp_path_factory.mktemp("mk") / "market"
    summary = syn.generate_market(root, TINY_MARKET)
    return root, summary


# --------------------------------------------------------------------------- #
# Market-1501
# --------------------------------------------------------------------------- #
def test_market_layout_and_counts(market):
    root, summary = market
    assert summary["generated"] is True and summary["format"] == "market1501"
    c = summary["counts"]
    train = parse_dir(root / "bounding_box_train")
    query = parse_dir(root / "query")
    gallery = parse_dir(root / "bounding_box_test")
    assert len(train) == c["train_images"] and len(query) == c["query_images"]
    assert len(gallery) == c["gallery_images"]
    assert sorted(p.name for p in root.iterdir()) == ["bounding_box_test", "bounding_box_train", "query",
                                                      syn.MANIFEST_NAME]
    spec = TINY_MARKET
    for pid, cam, seq, frame, box in train + query + gallery:
        assert 1 <= cam <= spec.cameras and seq == 1
    train_ids = {t[0] for t in train}
    test_ids = {q[0] for q in query}
    assert train_ids == set(range(1, spec.num_train_ids + 1)) and c["train_ids"] == len(train_ids)
    assert len(test_ids) == spec.num_test_ids and not (train_ids & test_ids)
    assert min(test_ids) > max(train_ids)
    gal_ids = {g[0] for g in gallery}
    assert gal_ids - {0, -1} == test_ids and not (gal_ids & train_ids)
    # distractors and junk
    assert sum(g[0] == 0 for g in gallery) == spec.num_distractors == c["distractors"]
    assert sum(g[0] == -1 for g in gallery) == spec.num_junk == c["junk"]
    assert any(f.name.startswith("-1_c") for f in (root / "bounding_box_test").iterdir())
    assert any(f.name.startswith("0000_c") for f in (root / "bounding_box_test").iterdir())
    # every test identity: 2..max cameras, one query per camera, gallery size in range
    gal_by_id = defaultdict(list)
    for g in gallery:
        gal_by_id[g[0]].append(g[1])
    q_by_id = defaultdict(list)
    for q in query:
        q_by_id[q[0]].append(q[1])
    same_cam_seen = False
    for pid, cams in q_by_id.items():
        assert len(cams) == len(set(cams)) and spec.min_cams_per_id <= len(cams) <= spec.cams_per_id_range[1]
        assert spec.min_gallery_per_id <= len(gal_by_id[pid]) <= spec.max_gallery_per_id
        for cam in cams:
            assert any(gc != cam for gc in gal_by_id[pid]), "query without a cross-camera positive"
            same_cam_seen |= cam in gal_by_id[pid]
    assert same_cam_seen, "no same-camera gallery images: the junk rule would never matter"
    # unique names across query and gallery (as in the real dataset)
    assert len(set(query) | set(gallery)) == len(query) + len(gallery)


def test_market_images_decode_to_size(market):
    root, _ = market
    files = sorted(root.rglob("*.jpg"))
    for f in files[:: max(1, len(files) // 25)]:
        with Image.open(f) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            assert im.size == (TINY_MARKET.img_w, TINY_MARKET.img_h)
            assert np.asarray(im).std() > 3  # not blank


def test_market_manifest(market):
    root, summary = market
    man = json.loads((root / syn.MANIFEST_NAME).read_text())
    assert man["format"] == "market1501" and man["format_version"] == syn.FORMAT_VERSION
    assert man["spec"] == json.loads(json.dumps(TINY_MARKET.__dict__))
    assert man["counts"] == summary["counts"]


def test_market_deterministic_and_worker_independent(market, tmp_path):
    root, _ = market
    again = tmp_path / "again"
    syn.generate_market(again, TINY_MARKET, workers=2)
    assert tree_bytes(root) == tree_bytes(again)
    other = tmp_path / "other_seed"
    syn.generate_market(other, MarketSpec(**{**TINY_MARKET.__dict__, "seed": 4}), workers=1)
    assert tree_bytes(root) != tree_bytes(other)


def test_market_few_cameras_caps_cams_per_id(tmp_path):
    spec = MarketSpec(num_train_ids=3, num_test_ids=3, cameras=2, train_images_per_id=3, num_distractors=1,
                      num_junk=1, img_h=32, img_w=16)
    assert spec.cams_per_id_range == (2, 2)
    syn.generate_market(tmp_path / "m", spec)
    assert {q[1] for q in parse_dir(tmp_path / "m" / "query")} == {1, 2}


def test_market_name_helper():
    assert syn.market_name(2, 3, 451) == "0002_c3s1_000451_00.jpg"
    assert syn.market_name(-1, 2, 123) == "-1_c2s1_000123_00.jpg"
    assert re.fullmatch(syn.MARKET_NAME_RE, syn.market_name(0, 6, 999999, 3))


@pytest.mark.parametrize("kwargs", [dict(cameras=1), dict(cameras=10), dict(num_train_ids=0),
                                    dict(min_cams_per_id=5, cameras=4), dict(min_gallery_per_id=2),
                                    dict(min_cams_per_id=5, max_cams_per_id=4),
                                    dict(num_train_ids=9000, num_test_ids=1000), dict(img_h=4)])
def test_market_spec_validation(kwargs):
    with pytest.raises(ValueError):
        MarketSpec(**kwargs)


# --------------------------------------------------------------------------- #
# ensure_* and crash safety
# --------------------------------------------------------------------------- #
def test_ensure_idempotent_and_refuses_mismatch(tmp_path):
    root = tmp_path / "ds"
    first = syn.ensure_classes(root, TINY_CLASSES)
    assert first["generated"] is True
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    t0 = time.perf_counter()
    second = syn.ensure_classes(root, TINY_CLASSES)
    assert time.perf_counter() - t0 < 1.0
    assert second["generated"] is False and second["counts"] == first["counts"]
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before
    with pytest.raises(FileExistsError, match="different"):
        syn.ensure_classes(root, ClassesSpec(**{**TINY_CLASSES.__dict__, "seed": 9}))
    with pytest.raises(FileExistsError):  # other dataset kind in the same folder
        syn.ensure_market(root, TINY_MARKET)
    with pytest.raises(FileExistsError):  # generate_* never writes into a non-empty root
        syn.generate_classes(root, TINY_CLASSES)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


def test_ensure_refuses_folder_without_manifest(tmp_path):
    root = tmp_path / "user_data"
    root.mkdir()
    (root / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="manifest"):
        syn.ensure_got10k(root, TINY_GOT)
    assert (root / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in root.iterdir()) == ["precious.txt"]


def test_ensure_generates_into_empty_existing_dir(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    (tmp_path / "unrelated").mkdir()
    s = syn.ensure_classes(root, TINY_CLASSES)  # an empty folder holds no user data: fill it
    assert s["generated"] and (root / syn.MANIFEST_NAME).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "unrelated"]


@pytest.mark.parametrize("which", ["market", "classes", "got10k"])
def test_crash_leaves_nothing_behind(tmp_path, monkeypatch, which):
    calls = {"n": 0}
    real = syn._write_image

    def flaky(path, data):
        calls["n"] += 1
        if calls["n"] == 7:
            raise OSError("disk on fire")
        real(path, data)

    monkeypatch.setattr(syn, "_write_image", flaky)
    root = tmp_path / "ds"
    gen, spec = {"market": (syn.ensure_market, TINY_MARKET), "classes": (syn.ensure_classes, TINY_CLASSES),
                 "got10k": (syn.ensure_got10k, TINY_GOT)}[which]
    with pytest.raises(OSError, match="disk on fire"):
        gen(root, spec, workers=1)
    assert calls["n"] == 7
    assert list(tmp_path.iterdir()) == []  # neither ROOT nor ROOT.tmp-* remains
    monkeypatch.setattr(syn, "_write_image", real)
    assert gen(root, spec, workers=1)["generated"] is True
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


# --------------------------------------------------------------------------- #
# class folders
# --------------------------------------------------------------------------- #
def test_classes_layout(tmp_path):
    root = tmp_path / "cls"
    s = syn.generate_classes(root, TINY_CLASSES)
    names = TINY_CLASSES.class_names
    assert s["counts"]["class_names"] == names
    for split, per in (("train", TINY_CLASSES.train_per_class), ("val", TINY_CLASSES.val_per_class)):
        assert sorted(p.name for p in (root / split).iterdir()) == sorted(names)
        for cls in names:
            files = sorted((root / split / cls).glob("*.jpg"))
            assert len(files) == per
            with Image.open(files[0]) as im:
                assert im.size == (TINY_CLASSES.img_size, TINY_CLASSES.img_size) and im.mode == "RGB"
        assert s["counts"][f"{split}_images"] == per * len(names)
    again = tmp_path / "cls2"
    syn.generate_classes(again, TINY_CLASSES, workers=2)
    assert tree_bytes(root) == tree_bytes(again)


# --------------------------------------------------------------------------- #
# GOT-10k
# --------------------------------------------------------------------------- #
def test_got10k_layout(tmp_path):
    root = tmp_path / "got"
    s = syn.generate_got10k(root, TINY_GOT)
    W, H = TINY_GOT.img_w, TINY_GOT.img_h
    occluded = 0
    for subset, label, num in (("train", "Train", TINY_GOT.num_train_seqs), ("val", "Val", TINY_GOT.num_val_seqs)):
        seqs = (root / subset / "list.txt").read_text().strip().split("\n")
        assert seqs == [f"GOT-10k_{label}_{i:06d}" for i in range(1, num + 1)]
        assert s["counts"][f"{subset}_sequences"] == num
        total = 0
        for name in seqs:
            d = root / subset / name
            frames = sorted(d.glob("*.jpg"))
            n = len(frames)
            total += n
            assert TINY_GOT.min_frames <= n <= TINY_GOT.max_frames
            assert [f.name for f in frames] == [f"{i:08d}.jpg" for i in range(1, n + 1)]
            with Image.open(frames[0]) as im:
                assert im.size == (W, H)
            gt = np.loadtxt(d / "groundtruth.txt", delimiter=",", ndmin=2)
            assert gt.shape == (n, 4)
            assert (gt[:, 2:] > 0).all()
            assert (gt[:, 0] >= 0).all() and (gt[:, 1] >= 0).all()
            assert (gt[:, 0] + gt[:, 2] <= W + 1e-6).all() and (gt[:, 1] + gt[:, 3] <= H + 1e-6).all()
            # smooth motion: centres move little between frames
            centres = gt[:, :2] + gt[:, 2:] / 2
            assert np.abs(np.diff(centres, axis=0)).max() < 0.25 * max(W, H)
            labels = {}
            for fname in ("absence.label", "cover.label", "cut_by_image.label"):
                lines = (d / fname).read_text().strip().split("\n")
                assert len(lines) == n
                labels[fname] = np.array([int(v) for v in lines])
            cover, absence = labels["cover.label"], labels["absence.label"]
            assert ((cover >= 0) & (cover <= 8)).all() and set(absence) <= {0, 1}
            assert set(labels["cut_by_image.label"]) <= {0, 1}
            assert (absence == (cover == 0)).all()
            assert cover[0] > 0  # the first (init) frame shows the target
            occluded += int((cover < 8).sum())
            meta_lines = (d / "meta_info.ini").read_text().split("\n")
            assert meta_lines[0] == "[METAINFO]"
            cp = configparser.ConfigParser()
            cp.read(d / "meta_info.ini")
            meta = cp["METAINFO"]
            for key in ("object_class", "motion_class", "major_class", "root_class", "motion_adverb"):
                assert meta[key]
            # pytracking reads the class fields by line position 5..9
            assert meta_lines[5].startswith("object_class: ") and meta_lines[9].startswith("motion_adverb: ")
            assert eval(meta["resolution"]) == (W, H)
        assert s["counts"][f"{subset}_frames"] == total
    assert occluded > 0


# --------------------------------------------------------------------------- #
# CLI
# --------------------------------------------------------------------------- #
def test_cli_market_and_reuse(tmp_path, capsys):
    out = tmp_path / "cli_market"
    args = ["market", "--out", str(out), "--seed", "5", "--num-train-ids", "3", "--num-test-ids", "3",
            "--cameras", "3", "--img-h", "32", "--img-w", "16", "--distractors", "2", "--junk", "1",
            "--train-images-per-id", "4"]
    assert syn.main(args) == 0
    line = capsys.readouterr().out.strip()
    assert "market1501" in line and str(out) in line and "query_images=" in line and "\n" not in line
    assert syn.main(args) == 0
    assert "already present" in capsys.readouterr().out
    assert syn.main(args[:4] + ["7"] + args[5:]) == 1  # different seed, same folder -> refused


def test_cli_bad_arguments_exit_2(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for extra in (["market", "--out", str(tmp_path / "x"), "--cameras", "12"],
                  ["market", "--out", str(tmp_path / "x"), "--num-train-ids", "abc"],
                  ["market"], ["nonsense", "--out", str(tmp_path / "x")]):
        r = subprocess.run([sys.executable, "-m", "data.synthetic", *extra], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, (extra, r.stderr)
        assert "usage" in r.stderr
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- #
# difficulty of the default demo spec (slow)
# --------------------------------------------------------------------------- #
def _load_market_dir(d: Path):
    X, P, C = [], [], []
    for f in sorted(d.iterdir()):
        m = NAME_RE.match(f.name)
        with Image.open(f) as im:
            X.append(np.asarray(im.convert("RGB")))
        P.append(int(m.group(1)))
        C.append(int(m.group(2)))
    return np.stack(X), np.array(P), np.array(C)


def market_rank1(qf, qp, qc, gf, gp, gc) -> float:
    """Market protocol: drop junk (-1) and same-id-same-camera gallery items; positives =
    same id, other camera; rank-1 over queries that have a positive (cosine similarity)."""
    qf = qf / np.linalg.norm(qf, axis=1, keepdims=True)
    gf = gf / np.linalg.norm(gf, axis=1, keepdims=True)
    sim = qf @ gf.T
    hits = valid = 0
    for i in range(len(qp)):
        keep = (gp != -1) & ~((gp == qp[i]) & (gc == qc[i]))
        pos = keep & (gp == qp[i])
        if not pos.any():
            continue
        valid += 1
        hits += bool(pos[np.argmax(np.where(keep, sim[i], -np.inf))])
    assert valid > 0
    return hits / valid


def colour_hist(x: np.ndarray) -> np.ndarray:
    b = (x // 32).astype(np.int64)
    idx = (b[..., 0] * 64 + b[..., 1] * 8 + b[..., 2]).reshape(len(x), -1)
    return np.stack([np.bincount(row, minlength=512) for row in idx]).astype(np.float64)


def test_market_protocol_helper_sanity():
    # identical features for a query and its cross-camera positive -> rank-1 = 1
    qf = np.eye(3)
    gf = np.eye(3)
    assert market_rank1(qf, np.array([1, 2, 3]), np.array([1, 1, 1]), gf, np.array([1, 2, 3]),
                        np.array([2, 2, 2])) == 1.0
    # the same-camera copy is removed, leaving a wrong top match
    gf2 = np.array([[1.0, 0, 0], [0.9, 0.1, 0], [0, 0, 1.0]])
    r = market_rank1(np.array([[1.0, 0, 0]]), np.array([1]), np.array([1]), gf2, np.array([1, 5, 1]),
                     np.array([1, 2, 3]))
    assert r == 0.0


@pytest.mark.slow
def test_default_demo_difficulty(tmp_path):
    t0 = time.perf_counter()
    s = syn.generate_market(tmp_path / "demo", MarketSpec())
    gen_s = time.perf_counter() - t0
    root = tmp_path / "demo"
    qx, qp, qc = _load_market_dir(root / "query")
    gx, gp, gc = _load_market_dir(root / "bounding_box_test")
    raw = market_rank1(qx.reshape(len(qx), -1).astype(np.float64), qp, qc,
                       gx.reshape(len(gx), -1).astype(np.float64), gp, gc)
    hist = market_rank1(colour_hist(qx), qp, qc, colour_hist(gx), gp, gc)
    print(f"\ndefault demo: {s['counts']} generated in {gen_s:.1f}s; "
          f"raw-pixel rank-1={raw:.3f} colour-histogram rank-1={hist:.3f}")
    assert raw < 0.35
    assert hist < 0.5
    assert gen_s < 120  # ~10 s on an idle 2-core machine


def test_pool_workers_can_be_terminated_when_the_parent_handles_sigterm():
    """A training process handles SIGTERM itself (graceful stop) and may generate the demo data with a process pool:
    its forked workers must not inherit that handler, or Pool.terminate() cannot end them and waits forever (this
    hung the test suite once). The pool ends on success and on a failing job."""
    code = """
import signal
signal.signal(signal.SIGTERM, lambda *a: None)
from data.synthetic import _run_jobs

def default_sigterm(_):
    return signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

assert all(_run_jobs(default_sigterm, [0] * 300, 2))
try:
    _run_jobs(int, ["1"] * 300 + ["not a number"], 2)
except ValueError:
    print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
