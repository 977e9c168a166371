"""Synthetic datasets generated on the fly (no downloads, no external assets).

Three on-disk formats, each a faithful copy of the real dataset's layout:

* :func:`generate_market` -- Market-1501 person re-identification
  (``bounding_box_train/``, ``bounding_box_test/``, ``query/``; files named
  ``PPPP_cXsY_FFFFFF_NN.jpg``; gallery distractors ``0000_*`` and junk ``-1_*``).
* :func:`generate_classes` -- class-folder classification
  (``train/<class>/*.jpg``, ``val/<class>/*.jpg``).
* :func:`generate_got10k` -- GOT-10k single-object tracking
  (``train/`` and ``val/`` with ``list.txt`` and per-sequence folders holding
  frames, ``groundtruth.txt``, ``absence.label``, ``cover.label``,
  ``cut_by_image.label`` and ``meta_info.ini``).

Output is a pure function of the spec: every image draws from its own
``numpy.random.Generator`` seeded by ``(seed, split, index)``, JPEGs are encoded
with fixed settings, so the bytes do not depend on the number of worker
processes or on the order in which images are produced.

Writing is crash-safe: the dataset is built in a sibling ``ROOT.tmp-*`` folder,
``synthetic_manifest.json`` is written last and the folder is moved into place
with :func:`os.replace`.  ``ensure_*`` reuses an existing folder only if its
manifest matches the spec and never deletes or overwrites user data.

CLI::

    python -m data.synthetic market --out DIR [--seed S] [--num-train-ids N] [--style figures|street] ...
    python -m data.synthetic classes --out DIR ...
    python -m data.synthetic got10k --out DIR ...
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from data import _render, _render_street

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_NAME = "synthetic_manifest.json"
MARKET_NAME_RE = r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$"

# split codes used in the per-image seeds; never renumber (changes the data)
_SPLIT_TRAIN, _SPLIT_QUERY, _SPLIT_GALLERY, _SPLIT_DISTRACTOR, _SPLIT_JUNK = 1, 2, 3, 4, 5
_SPLIT_CLS_TRAIN, _SPLIT_CLS_VAL = 11, 12
_SPLIT_TRK_TRAIN, _SPLIT_TRK_VAL = 21, 22
_KEY_IDENTITY, _KEY_CAMERA, _KEY_PLAN = 100, 200, 300
# Market rendering styles: same layout and identities' file plan, other drawings (defaults are compared on both)
MARKET_STYLES = {"figures": _render, "street": _render_street}


# --------------------------------------------------------------------------- #
# specs
# --------------------------------------------------------------------------- #
def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@dataclass(frozen=True)
class MarketSpec:
    """Market-1501-style re-ID dataset; the defaults are the small demo."""

    num_train_ids: int = 150
    num_test_ids: int = 100
    cameras: int = 6
    train_images_per_id: int = 12     # mean; each id gets this +- 2
    min_cams_per_id: int = 2          # every identity is seen by min..max cameras
    max_cams_per_id: int = 4          # (capped at `cameras`)
    min_gallery_per_id: int = 6
    max_gallery_per_id: int = 12
    num_distractors: int = 100
    num_junk: int = 50
    img_h: int = 128
    img_w: int = 64
    seed: int = 0
    style: str = "figures"            # a key of MARKET_STYLES

    def __post_init__(self) -> None:
        _check(self.style in MARKET_STYLES, f"style must be one of {', '.join(MARKET_STYLES)}")
        _check(self.num_train_ids >= 1 and self.num_test_ids >= 1, "need at least one train and one test identity")
        _check(self.num_train_ids + self.num_test_ids <= 9999, "at most 9999 identities (4-digit ids)")
        _check(2 <= self.cameras <= 9, "cameras must be in 2..9 (one digit in the file name)")
        _check(2 <= self.min_cams_per_id <= self.max_cams_per_id,
               "need 2 <= min_cams_per_id <= max_cams_per_id")
        _check(self.min_cams_per_id <= self.cameras, "min_cams_per_id cannot exceed cameras")
        _check(self.min_gallery_per_id >= self.cams_per_id_range[1],
               "min_gallery_per_id must be >= min(max_cams_per_id, cameras) (one gallery image per camera)")
        _check(self.max_gallery_per_id >= self.min_gallery_per_id, "max_gallery_per_id < min_gallery_per_id")
        _check(self.train_images_per_id >= 1, "train_images_per_id must be >= 1")
        _check(self.num_distractors >= 0 and self.num_junk >= 0, "negative distractor/junk count")
        _check(16 <= self.img_h <= 1024 and 8 <= self.img_w <= 1024, "img_h/img_w out of range")
        _check(self.seed >= 0, "seed must be >= 0")

    @property
    def cams_per_id_range(self) -> tuple[int, int]:
        """Inclusive range of cameras an identity is seen by (``max_cams_per_id`` capped at ``cameras``)."""
        return self.min_cams_per_id, min(self.max_cams_per_id, self.cameras)


@dataclass(frozen=True)
class ClassesSpec:
    """Class-folder dataset of synthetic shapes (colour is not a class cue)."""

    num_classes: int = 6
    train_per_class: int = 80
    val_per_class: int = 20
    img_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        _check(2 <= self.num_classes <= len(_render.SHAPES), f"num_classes must be in 2..{len(_render.SHAPES)}")
        _check(self.train_per_class >= 1 and self.val_per_class >= 1, "need >= 1 image per class and split")
        _check(16 <= self.img_size <= 1024, "img_size out of range")
        _check(self.seed >= 0, "seed must be >= 0")

    @property
    def class_names(self) -> list[str]:
        return list(_render.SHAPES[: self.num_classes])


@dataclass(frozen=True)
class Got10kSpec:
    """GOT-10k-style tracking dataset (train and val subsets)."""

    num_train_seqs: int = 8
    num_val_seqs: int = 4
    min_frames: int = 30
    max_frames: int = 50
    img_w: int = 320
    img_h: int = 240
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.num_train_seqs >= 1 and self.num_val_seqs >= 1, "need >= 1 sequence per subset")
        _check(self.num_train_seqs <= 999999 and self.num_val_seqs <= 999999, "too many sequences")
        _check(8 <= self.min_frames <= self.max_frames <= 99999999, "need 8 <= min_frames <= max_frames")
        _check(64 <= self.img_w <= 4096 and 64 <= self.img_h <= 4096, "img_w/img_h out of range")
        _check(self.seed >= 0, "seed must be >= 0")


# --------------------------------------------------------------------------- #
# crash-safe writing
# --------------------------------------------------------------------------- #
def _write_image(path: str, data: bytes) -> None:
    """Write one encoded image (module-level so tests can make it fail)."""
    with open(path, "wb") as fh:
        fh.write(data)


def _spec_dict(spec) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(spec)))


def _read_manifest(root: Path) -> dict | None:
    try:
        with open(root / MANIFEST_NAME, encoding="utf-8") as fh:
            return json.load(fh)
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None


def is_generated(root: str | Path) -> bool:
    """Whether `root` holds a dataset written by this module (its manifest is there)."""
    return _read_manifest(Path(root)) is not None


def _summary(root: Path, manifest: dict, generated: bool, seconds: float) -> dict:
    return {"root": str(root), "format": manifest["format"], "counts": dict(manifest["counts"]),
            "spec": dict(manifest["spec"]), "generated": generated, "seconds": round(seconds, 3)}


def _build(root, fmt: str, spec, build: Callable[[Path], dict]) -> dict:
    """Run ``build(tmp_dir) -> counts`` in a sibling temp dir and move it to ``root``."""
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} already exists and is not empty; refusing to overwrite it")
    root.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=root.name + ".tmp-", dir=root.parent))
    try:
        counts = build(tmp)
        manifest = {"generator": "data.synthetic", "format": fmt, "format_version": FORMAT_VERSION,
                    "spec": _spec_dict(spec), "counts": counts}
        with open(tmp / MANIFEST_NAME, "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=2, sort_keys=True)
            fh.write("\n")
        try:
            os.replace(tmp, root)
        except OSError as exc:  # someone created a non-empty ROOT meanwhile
            raise FileExistsError(f"{root} appeared while generating; not overwriting it") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _summary(root, manifest, True, time.perf_counter() - t0)


def _ensure(root, fmt: str, spec, generate: Callable) -> dict:
    root = Path(root)
    want = _spec_dict(spec)

    def check_existing() -> dict | None:
        if not root.exists() or (root.is_dir() and not any(root.iterdir())):
            return None  # absent or an empty folder: generate
        manifest = _read_manifest(root)
        if manifest is None:
            raise FileExistsError(f"{root} exists but has no {MANIFEST_NAME}; it was not made by data.synthetic "
                                  f"(or generation did not finish). Refusing to touch it: pick another path.")
        # a spec field added later (MarketSpec.style) defaults to the old output: older manifests lack it
        recorded = {**_spec_dict(type(spec)()), **manifest.get("spec", {})}
        if (manifest.get("format") != fmt or manifest.get("format_version") != FORMAT_VERSION
                or recorded != want):
            raise FileExistsError(
                f"{root} holds a different synthetic dataset (format={manifest.get('format')!r}, "
                f"format_version={manifest.get('format_version')!r}, spec={manifest.get('spec')!r}); "
                f"wanted format={fmt!r}, format_version={FORMAT_VERSION}, spec={want!r}. "
                f"Use another path or remove it yourself.")
        return _summary(root, manifest, False, 0.0)

    found = check_existing()
    if found is not None:
        return found
    try:
        return generate(root, spec)
    except FileExistsError:
        found = check_existing()  # a concurrent ensure_* may have finished first
        if found is not None:
            return found
        raise


def _run_jobs(fn: Callable, jobs: list, workers: int | None) -> list:
    """Map ``fn`` over ``jobs`` (in a process pool when worthwhile); results in job order."""
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if len(jobs) >= 200 else 1
    if workers <= 1:
        return [fn(j) for j in jobs]
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    pool = ctx.Pool(workers, initializer=_default_signal_handlers)
    try:
        results = pool.map(fn, jobs, chunksize=max(1, len(jobs) // (workers * 8)))
    except BaseException:
        pool.terminate()
        raise
    # close + join lets the workers finish and exit; terminate() (what `with Pool` does) kills them with SIGTERM
    pool.close()
    pool.join()
    return results


def _default_signal_handlers() -> None:
    """Pool workers forked from a process with a Python SIGTERM handler (a training run's graceful stop) inherit
    it, so Pool.terminate() could not end them and would wait forever: give them the default dispositions back."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which terminates the pool


# --------------------------------------------------------------------------- #
# Market-1501
# --------------------------------------------------------------------------- #
_CACHE: dict = {}


def _identity(style: str, seed: int, pid: int):
    key = ("id", style, seed, pid)
    if key not in _CACHE:
        _CACHE[key] = MARKET_STYLES[style].make_identity(np.random.default_rng([seed, _KEY_IDENTITY, pid]))
    return _CACHE[key]


def _camera(style: str, seed: int, cam: int):
    key = ("cam", style, seed, cam)
    if key not in _CACHE:
        _CACHE[key] = MARKET_STYLES[style].make_camera(np.random.default_rng([seed, _KEY_CAMERA, cam]), cam)
    return _CACHE[key]


def market_name(pid: int, cam: int, frame: int, box: int = 0, seq: int = 1) -> str:
    """Market-1501 file name, e.g. ``market_name(2, 3, 451) == '0002_c3s1_000451_00.jpg'``."""
    p = "-1" if pid < 0 else f"{pid:04d}"
    return f"{p}_c{cam}s{seq}_{frame:06d}_{box:02d}.jpg"


def _plan_market(spec: MarketSpec) -> list[tuple]:
    """All images to render: ``(kind, relpath, pid, cam, rng_key)``, deterministic."""
    rng = np.random.default_rng([spec.seed, _KEY_PLAN])
    jobs: list[tuple] = []
    used: set[str] = set()

    def track(n: int) -> list[int]:  # n increasing frame numbers of one pass in front of a camera
        start = int(rng.integers(0, 900000))
        return [start + int(v) for v in np.cumsum(rng.integers(4, 40, n))]

    def add(kind: str, folder: str, pid: int, cam: int, frame: int, split: int, index: int) -> None:
        box = 0 if rng.random() < 0.85 else int(rng.integers(1, 4))
        name = market_name(pid, cam, frame, box)
        while name in used:  # only possible for distractor/junk draws
            frame = (frame + 1) % 1000000
            name = market_name(pid, cam, frame, box)
        used.add(name)
        jobs.append((kind, f"{folder}/{name}", pid, cam, (spec.seed, split, index)))

    lo, hi = spec.cams_per_id_range

    def pick_cams(max_n: int) -> list[int]:
        n = int(rng.integers(lo, min(max_n, hi) + 1))
        return sorted(int(c) + 1 for c in rng.choice(spec.cameras, size=n, replace=False))

    n_train = 0
    for pid in range(1, spec.num_train_ids + 1):
        n_img = max(1, spec.train_images_per_id + int(rng.integers(-2, 3)))
        cams = pick_cams(max(lo, n_img))
        per_cam = [1] * len(cams) if n_img >= len(cams) else [0] * len(cams)
        for _ in range(n_img - sum(per_cam)):
            per_cam[int(rng.integers(len(cams)))] += 1
        for cam, k in zip(cams, per_cam):
            for frame in track(k):
                add("person", "bounding_box_train", pid, cam, frame, _SPLIT_TRAIN, n_train)
                n_train += 1

    n_query = n_gallery = 0
    first_test = spec.num_train_ids + 1
    for pid in range(first_test, first_test + spec.num_test_ids):
        cams = pick_cams(hi)
        n_gal = int(rng.integers(spec.min_gallery_per_id, spec.max_gallery_per_id + 1))
        per_cam = [1] * len(cams)  # >= 1 gallery image per camera: cross-camera positives and same-camera ones
        for _ in range(n_gal - len(cams)):
            per_cam[int(rng.integers(len(cams)))] += 1
        for cam, k in zip(cams, per_cam):
            frames = track(k + 1)
            q = int(rng.integers(len(frames)))
            for i, frame in enumerate(frames):
                if i == q:
                    add("person", "query", pid, cam, frame, _SPLIT_QUERY, n_query)
                    n_query += 1
                else:
                    add("person", "bounding_box_test", pid, cam, frame, _SPLIT_GALLERY, n_gallery)
                    n_gallery += 1

    for i in range(spec.num_distractors):
        cam = int(rng.integers(spec.cameras)) + 1
        add("distractor", "bounding_box_test", 0, cam, int(rng.integers(0, 1000000)), _SPLIT_DISTRACTOR, i)
    for i in range(spec.num_junk):
        cam = int(rng.integers(spec.cameras)) + 1
        add("junk", "bounding_box_test", -1, cam, int(rng.integers(0, 1000000)), _SPLIT_JUNK, i)
    return jobs


def _render_market_job(args) -> str:
    root, spec_d, (kind, rel, pid, cam, key) = args
    seed, h, w, style = spec_d["seed"], spec_d["img_h"], spec_d["img_w"], spec_d["style"]
    render = MARKET_STYLES[style]
    rng = np.random.default_rng(list(key))
    camera = _camera(style, seed, cam - 1)
    if kind == "person":
        img = render.render_reid(_identity(style, seed, pid), camera, rng, h, w)
    elif kind == "distractor":
        img = render.render_distractor(camera, rng, h, w)
    else:
        img = render.render_junk(camera, rng, h, w)
    _write_image(os.path.join(root, rel), _render.encode_jpeg(img))
    return rel


def generate_market(root, spec: MarketSpec = MarketSpec(), *, workers: int | None = None) -> dict:
    """Generate a Market-1501-format dataset at ``root`` (must be absent or empty).

    Returns a summary ``{"root", "format", "counts", "spec", "generated", "seconds"}``
    where ``counts`` has ``train_images, train_ids, query_images, test_ids,
    gallery_images`` (all files in ``bounding_box_test``), ``distractors``,
    ``junk`` and ``cameras``.  ``workers`` only affects speed, never the bytes.
    """
    if not isinstance(spec, MarketSpec):
        raise TypeError("spec must be a MarketSpec")

    def build(tmp: Path) -> dict:
        for sub in ("bounding_box_train", "bounding_box_test", "query"):
            (tmp / sub).mkdir()
        jobs = _plan_market(spec)
        spec_d = dataclasses.asdict(spec)
        _run_jobs(_render_market_job, [(str(tmp), spec_d, j) for j in jobs], workers)
        kinds = [(j[0], j[1].split("/")[0]) for j in jobs]
        return {
            "train_images": sum(1 for _, f in kinds if f == "bounding_box_train"),
            "train_ids": spec.num_train_ids,
            "query_images": sum(1 for _, f in kinds if f == "query"),
            "test_ids": spec.num_test_ids,
            "gallery_images": sum(1 for _, f in kinds if f == "bounding_box_test"),
            "distractors": spec.num_distractors,
            "junk": spec.num_junk,
            "cameras": spec.cameras,
        }

    return _build(root, "market1501", spec, build)


def ensure_market(root, spec: MarketSpec = MarketSpec(), *, workers: int | None = None) -> dict:
    """Return at once if ``root`` holds this spec's dataset, generate it if absent.

    Raises ``FileExistsError`` if ``root`` exists with another spec or without a manifest.
    """
    return _ensure(root, "market1501", spec, lambda r, s: generate_market(r, s, workers=workers))


# --------------------------------------------------------------------------- #
# class folders
# --------------------------------------------------------------------------- #
def _render_class_job(args) -> str:
    root, size, (cls, rel, key) = args
    img = _render.render_shape(cls, np.random.default_rng(list(key)), size)
    _write_image(os.path.join(root, rel), _render.encode_jpeg(img))
    return rel


def generate_classes(root, spec: ClassesSpec = ClassesSpec(), *, workers: int | None = None) -> dict:
    """Generate ``root/{train,val}/<class_name>/NNNNN.jpg`` (one folder per class)."""
    if not isinstance(spec, ClassesSpec):
        raise TypeError("spec must be a ClassesSpec")

    def build(tmp: Path) -> dict:
        jobs = []
        counts = {"classes": spec.num_classes}
        for split, code, per in (("train", _SPLIT_CLS_TRAIN, spec.train_per_class),
                                 ("val", _SPLIT_CLS_VAL, spec.val_per_class)):
            for ci, cls in enumerate(spec.class_names):
                (tmp / split / cls).mkdir(parents=True)
                for i in range(per):
                    jobs.append((cls, f"{split}/{cls}/{i:05d}.jpg", (spec.seed, code, ci, i)))
            counts[f"{split}_images"] = per * spec.num_classes
        _run_jobs(_render_class_job, [(str(tmp), spec.img_size, j) for j in jobs], workers)
        counts["class_names"] = spec.class_names
        return counts

    return _build(root, "classes", spec, build)


def ensure_classes(root, spec: ClassesSpec = ClassesSpec(), *, workers: int | None = None) -> dict:
    """Like :func:`ensure_market` for the class-folder dataset."""
    return _ensure(root, "classes", spec, lambda r, s: generate_classes(r, s, workers=workers))


# --------------------------------------------------------------------------- #
# GOT-10k
# --------------------------------------------------------------------------- #
def _render_got10k_job(args) -> int:
    root, spec_d, (subset, name, key, n) = args
    rng = np.random.default_rng(list(key))
    W, H = spec_d["img_w"], spec_d["img_h"]
    frames, boxes, absence, cover, cut, meta = _render.render_sequence(rng, n, W, H)
    seq_dir = os.path.join(root, subset, name)
    os.makedirs(seq_dir)
    for i, frame in enumerate(frames, start=1):
        _write_image(os.path.join(seq_dir, f"{i:08d}.jpg"), _render.encode_jpeg(frame))
    with open(os.path.join(seq_dir, "groundtruth.txt"), "w") as fh:
        fh.writelines(f"{x:.4f},{y:.4f},{w:.4f},{h:.4f}\n" for x, y, w, h in boxes)
    for fname, values in (("absence.label", absence), ("cover.label", cover), ("cut_by_image.label", cut)):
        with open(os.path.join(seq_dir, fname), "w") as fh:
            fh.writelines(f"{int(v)}\n" for v in values)
    # Same line order as the real files: pytracking reads lines 5-9 by position,
    # the got10k toolkit splits every line after the first on ': '.
    lines = ["[METAINFO]", f"url: synthetic://data.synthetic/got10k/{subset}/{name}", "begin: 00:00:00",
             f"end: 00:00:{n // 10:02d}", "anno_fps: 10Hz"]
    lines += [f"{k}: {meta[k]}" for k in ("object_class", "motion_class", "major_class", "root_class",
                                           "motion_adverb")]
    lines.append(f"resolution: ({W}, {H})")
    with open(os.path.join(seq_dir, "meta_info.ini"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return n


def generate_got10k(root, spec: Got10kSpec = Got10kSpec(), *, workers: int | None = None) -> dict:
    """Generate a GOT-10k-format dataset with ``train/`` and ``val/`` subsets."""
    if not isinstance(spec, Got10kSpec):
        raise TypeError("spec must be a Got10kSpec")

    def build(tmp: Path) -> dict:
        rng = np.random.default_rng([spec.seed, _KEY_PLAN])
        jobs, counts = [], {}
        for subset, code, label, num in (("train", _SPLIT_TRK_TRAIN, "Train", spec.num_train_seqs),
                                         ("val", _SPLIT_TRK_VAL, "Val", spec.num_val_seqs)):
            (tmp / subset).mkdir()
            names = [f"GOT-10k_{label}_{i:06d}" for i in range(1, num + 1)]
            lengths = [int(rng.integers(spec.min_frames, spec.max_frames + 1)) for _ in names]
            jobs += [(subset, nm, (spec.seed, code, i), n) for i, (nm, n) in enumerate(zip(names, lengths))]
            with open(tmp / subset / "list.txt", "w") as fh:
                fh.write("\n".join(names) + "\n")
            counts[f"{subset}_sequences"] = num
            counts[f"{subset}_frames"] = sum(lengths)
        _run_jobs(_render_got10k_job, [(str(tmp), dataclasses.asdict(spec), j) for j in jobs],
                  workers if workers is not None else (1 if len(jobs) < 8 else None))
        return counts

    return _build(root, "got10k", spec, build)


def ensure_got10k(root, spec: Got10kSpec = Got10kSpec(), *, workers: int | None = None) -> dict:
    """Like :func:`ensure_market` for the GOT-10k dataset."""
    return _ensure(root, "got10k", spec, lambda r, s: generate_got10k(r, s, workers=workers))


# --------------------------------------------------------------------------- #
# From params (``synthetic_data``)
# --------------------------------------------------------------------------- #
GENERATORS = {"market": (ensure_market, MarketSpec), "classes": (ensure_classes, ClassesSpec),
              "got10k": (ensure_got10k, Got10kSpec)}


def check_target(root, dataset_type: str, key: str = "batches_dir") -> None:
    """Refuse to generate into a folder holding data this module did not make: a params file that still asks for
    synthetic data while pointing at a real dataset gets a message saying what to change."""
    from engine.errors import UserError

    if Path(root).exists() and not is_generated(root):
        raise UserError(f"{key}: {root} holds data that `python -m data.synthetic` did not make, while "
                        f"synthetic_data asks to generate the synthetic {dataset_type!r} set there; to train on "
                        f"{root}, remove \"synthetic_data\" from the params file (to get the synthetic set, point "
                        f"{key} at a folder that does not exist)")


def ensure_from_params(root, spec, key: str = "batches_dir") -> None:
    """Generate the synthetic dataset that a params file's ``synthetic_data`` section (`data.options.
    SyntheticDataParams`: type, seed, options) names into `root` unless it is already there."""
    from engine.errors import UserError

    ensure, spec_class = GENERATORS[spec.type]
    try:
        generator_spec = spec_class(seed=spec.seed, **spec.options)
    except (TypeError, ValueError) as err:
        raise UserError(f"synthetic_data.options: {err}") from None
    if not Path(root).exists():
        log.info("generating synthetic %s dataset into %s", spec.type, root)
    try:
        ensure(Path(root), generator_spec)
    except FileExistsError as err:
        raise UserError(f"{key}: {err}") from None


# --------------------------------------------------------------------------- #
# CLI
# --------------------------------------------------------------------------- #
def _build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m data.synthetic",
                                 description="Generate synthetic datasets in real on-disk formats. An existing "
                                             "OUT with the same spec is reused; any other existing OUT is refused.")
    sub = ap.add_subparsers(dest="kind", required=True, metavar="{market,classes,got10k}")

    def common(p, default_spec):
        p.add_argument("--out", required=True, help="output dataset root (must not exist, or hold the same spec)")
        p.add_argument("--seed", type=int, default=default_spec.seed, help="random seed (default %(default)s)")
        p.add_argument("--workers", type=int, default=None, help="worker processes (default: auto, max 2); "
                                                                 "does not change the output")

    m, d = sub.add_parser("market", help="Market-1501 person re-ID dataset"), MarketSpec()
    common(m, d)
    m.add_argument("--num-train-ids", type=int, default=d.num_train_ids, help="training identities (%(default)s)")
    m.add_argument("--num-test-ids", type=int, default=d.num_test_ids, help="query/gallery identities (%(default)s)")
    m.add_argument("--cameras", type=int, default=d.cameras, help="number of cameras, 2..9 (%(default)s)")
    m.add_argument("--train-images-per-id", type=int, default=d.train_images_per_id,
                   help="mean training images per identity (%(default)s)")
    m.add_argument("--distractors", type=int, default=d.num_distractors, help="gallery distractors (%(default)s)")
    m.add_argument("--junk", type=int, default=d.num_junk, help="gallery junk images (%(default)s)")
    m.add_argument("--img-h", type=int, default=d.img_h, help="image height (%(default)s)")
    m.add_argument("--img-w", type=int, default=d.img_w, help="image width (%(default)s)")
    m.add_argument("--style", choices=list(MARKET_STYLES), default=d.style,
                   help="rendering style: figures (flat pedestrians) or street (capsule walkers in street scenes, "
                        "harsher cameras) (%(default)s)")

    c, d = sub.add_parser("classes", help="class-folder shape classification dataset"), ClassesSpec()
    common(c, d)
    c.add_argument("--num-classes", type=int, default=d.num_classes,
                   help=f"number of classes, 2..{len(_render.SHAPES)} (%(default)s)")
    c.add_argument("--train-per-class", type=int, default=d.train_per_class, help="(%(default)s)")
    c.add_argument("--val-per-class", type=int, default=d.val_per_class, help="(%(default)s)")
    c.add_argument("--img-size", type=int, default=d.img_size, help="square image size (%(default)s)")

    g, d = sub.add_parser("got10k", help="GOT-10k single-object tracking dataset"), Got10kSpec()
    common(g, d)
    g.add_argument("--num-train-seqs", type=int, default=d.num_train_seqs, help="(%(default)s)")
    g.add_argument("--num-val-seqs", type=int, default=d.num_val_seqs, help="(%(default)s)")
    g.add_argument("--min-frames", type=int, default=d.min_frames, help="(%(default)s)")
    g.add_argument("--max-frames", type=int, default=d.max_frames, help="(%(default)s)")
    g.add_argument("--img-w", type=int, default=d.img_w, help="frame width (%(default)s)")
    g.add_argument("--img-h", type=int, default=d.img_h, help="frame height (%(default)s)")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = _build_parser()
    a = ap.parse_args(argv)
    if a.workers is not None and a.workers < 1:
        ap.error("--workers must be >= 1")
    try:
        if a.kind == "market":
            spec = MarketSpec(num_train_ids=a.num_train_ids, num_test_ids=a.num_test_ids, cameras=a.cameras,
                              train_images_per_id=a.train_images_per_id, num_distractors=a.distractors,
                              num_junk=a.junk, img_h=a.img_h, img_w=a.img_w, seed=a.seed, style=a.style)
            fn = ensure_market
        elif a.kind == "classes":
            spec = ClassesSpec(num_classes=a.num_classes, train_per_class=a.train_per_class,
                               val_per_class=a.val_per_class, img_size=a.img_size, seed=a.seed)
            fn = ensure_classes
        else:
            spec = Got10kSpec(num_train_seqs=a.num_train_seqs, num_val_seqs=a.num_val_seqs,
                              min_frames=a.min_frames, max_frames=a.max_frames, img_w=a.img_w, img_h=a.img_h,
                              seed=a.seed)
            fn = ensure_got10k
    except ValueError as exc:
        ap.error(str(exc))
    try:
        s = fn(a.out, spec, workers=a.workers)
    except FileExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    counts = " ".join(f"{k}={v}" for k, v in s["counts"].items() if not isinstance(v, list))
    state = f"generated in {s['seconds']:.1f}s" if s["generated"] else "already present"
    print(f"{s['format']}: {counts} -> {s['root']} ({state})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
