"""Synthetic datasets generated on the fly (no downloads, no external assets).

Seven on-disk formats, each a faithful copy of the real dataset's layout:

* :func:`generate_market` -- Market-1501 person re-identification
  (``bounding_box_train/``, ``bounding_box_test/``, ``query/``; files named
  ``PPPP_cXsY_FFFFFF_NN.jpg``; gallery distractors ``0000_*`` and junk ``-1_*``).
* :func:`generate_classes` -- class-folder classification
  (``train/<class>/*.jpg``, ``val/<class>/*.jpg``).
* :func:`generate_got10k` -- GOT-10k single-object tracking
  (``train/`` and ``val/`` with ``list.txt`` and per-sequence folders holding
  frames, ``groundtruth.txt``, ``absence.label``, ``cover.label``,
  ``cut_by_image.label`` and ``meta_info.ini``).
* :func:`generate_alov` -- ALOV300++ videos as GOTURN trains on them
  (``images/<category>/<video>/00000001.jpg…`` and ``gt/<category>/<video>.ann``
  with the 4 corners of the box on every ``annotate_every``-th frame).
* :func:`generate_imagenet_det` -- ImageNet DET still images as GOTURN trains on
  them (``images/<synset>/<name>.JPEG`` and ``gt/<synset>/<name>.xml``, PASCAL
  VOC-style XML with 1-3 objects per image).
* :func:`generate_davis` -- DAVIS 2017 video object segmentation
  (``JPEGImages/480p/<video>/00000.jpg…``, palette PNG annotations
  ``Annotations/480p/<video>/00000.png…`` with object id 1 for the tracked
  object, optionally 2 and 3 for look-alike distractors, and
  ``ImageSets/2017/{train,val}.txt``).
* :func:`generate_vot` -- a VOT set (``list.txt``, ``<seq>/color/00000001.jpg…``
  or VOT2016-style frames next to ``groundtruth.txt``) whose ground truth is the
  rotated rectangle of each frame's object mask, or ``0`` where the object is
  hidden.

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
    python -m data.synthetic alov --out DIR ...
    python -m data.synthetic imagenet_det --out DIR ...
    python -m data.synthetic davis --out DIR ...
    python -m data.synthetic vot --out DIR ...
"""

from __future__ import annotations

import argparse
import dataclasses
import io
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

from PIL import Image, ImageDraw

from data import _render, _render_street

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_NAME = "synthetic_manifest.json"
MARKET_NAME_RE = r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$"

# split codes used in the per-image seeds; never renumber (changes the data)
_SPLIT_TRAIN, _SPLIT_QUERY, _SPLIT_GALLERY, _SPLIT_DISTRACTOR, _SPLIT_JUNK = 1, 2, 3, 4, 5
_SPLIT_CLS_TRAIN, _SPLIT_CLS_VAL = 11, 12
_SPLIT_TRK_TRAIN, _SPLIT_TRK_VAL = 21, 22
_SPLIT_ALOV, _SPLIT_DET = 31, 41
_SPLIT_DAVIS_TRAIN, _SPLIT_DAVIS_VAL, _SPLIT_VOT = 51, 52, 61
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


ALOV_CATEGORIES = ("01-Light", "02-SurfaceCover", "03-Specularity", "04-Transparency", "05-Shape",
                   "06-MotionSmoothness", "07-MotionCoherence", "08-Clutter", "09-Confusion", "10-LowContrast",
                   "11-Occlusion", "12-MovingCamera", "13-ZoomingCamera", "14-LongDuration")
"""ALOV300++'s 14 category folders, in order; a spec with ``num_categories`` uses the first ones."""


@dataclass(frozen=True)
class AlovSpec:
    """ALOV300++-style tracking videos: every frame rendered, the box written on frames 1, 1 + k, 1 + 2k, …
    (k = ``annotate_every``; ALOV annotates every fifth frame)."""

    num_categories: int = 3
    videos_per_category: int = 3
    min_frames: int = 30
    max_frames: int = 50
    annotate_every: int = 5
    img_w: int = 320
    img_h: int = 240
    seed: int = 0

    def __post_init__(self) -> None:
        _check(1 <= self.num_categories <= len(ALOV_CATEGORIES),
               f"num_categories must be in 1..{len(ALOV_CATEGORIES)} (ALOV's categories)")
        _check(1 <= self.videos_per_category <= 99999, "videos_per_category must be in 1..99999")
        _check(8 <= self.min_frames <= self.max_frames <= 99999999, "need 8 <= min_frames <= max_frames")
        _check(1 <= self.annotate_every <= self.min_frames, "need 1 <= annotate_every <= min_frames")
        _check(64 <= self.img_w <= 4096 and 64 <= self.img_h <= 4096, "img_w/img_h out of range")
        _check(self.seed >= 0, "seed must be >= 0")

    @property
    def categories(self) -> list[str]:
        return list(ALOV_CATEGORIES[: self.num_categories])


@dataclass(frozen=True)
class ImagenetDetSpec:
    """ImageNet DET-style still images: ``num_synsets`` class folders of ``images_per_synset`` images, each
    ``min_objects``..``max_objects`` textured objects (each side 15-50 % of the image's, so none is over GOTURN's
    0.66 limit) on a cluttered background. Image sizes vary: 75-100 % of ``img_w`` × ``img_h``."""

    num_synsets: int = 4
    images_per_synset: int = 20
    min_objects: int = 1
    max_objects: int = 3
    img_w: int = 320
    img_h: int = 240
    seed: int = 0

    def __post_init__(self) -> None:
        _check(1 <= self.num_synsets <= 9999, "num_synsets must be in 1..9999")
        _check(1 <= self.images_per_synset <= 999999, "images_per_synset must be in 1..999999")
        _check(1 <= self.min_objects <= self.max_objects <= 8, "need 1 <= min_objects <= max_objects <= 8")
        _check(64 <= self.img_w <= 4096 and 64 <= self.img_h <= 4096, "img_w/img_h out of range")
        _check(self.seed >= 0, "seed must be >= 0")

    @property
    def synsets(self) -> list[str]:
        """WordNet-id-like folder names, n00000001…"""
        return [f"n{k:08d}" for k in range(1, self.num_synsets + 1)]


@dataclass(frozen=True)
class DavisSpec:
    """DAVIS 2017-style segmentation videos (train and val lists). Every frame is annotated; ``objects_per_video``
    1 annotates the tracked object (id 1) only, 2 or 3 also the first one or two look-alike distractors (ids 2, 3;
    every video has at least two). The frames' folder is named ``480p`` whatever ``img_w`` × ``img_h`` is, as the
    readers expect it."""

    num_train_videos: int = 6
    num_val_videos: int = 3
    min_frames: int = 20
    max_frames: int = 40
    objects_per_video: int = 1
    img_w: int = 320
    img_h: int = 240
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.num_train_videos >= 1 and self.num_val_videos >= 1, "need >= 1 video per subset")
        _check(self.num_train_videos <= 9999 and self.num_val_videos <= 9999, "too many videos (at most 9999)")
        _check(8 <= self.min_frames <= self.max_frames <= 99999, "need 8 <= min_frames <= max_frames <= 99999")
        _check(1 <= self.objects_per_video <= 3, "objects_per_video must be in 1..3")
        _check(64 <= self.img_w <= 4096 and 64 <= self.img_h <= 4096, "img_w/img_h out of range")
        _check(self.seed >= 0, "seed must be >= 0")


@dataclass(frozen=True)
class VotSpec:
    """VOT-style sequences whose ground truth is each frame's rotated rectangle (8 numbers), made from the object's
    mask; ``color_folder`` True: VOT2020+ frames in ``<seq>/color/`` with a ``sequence`` file, False: VOT2016–2019
    frames next to ``groundtruth.txt``."""

    num_seqs: int = 6
    min_frames: int = 30
    max_frames: int = 50
    img_w: int = 320
    img_h: int = 240
    color_folder: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        _check(1 <= self.num_seqs <= 9999, "num_seqs must be in 1..9999")
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
# ALOV300++
# --------------------------------------------------------------------------- #
def alov_corner_line(frame: int, box) -> str:
    """One .ann line for 1-based `frame` and an axis-aligned x, y, w, h box: its 4 corners (top-left, bottom-left,
    bottom-right, top-right) in MATLAB spatial coordinates, our continuous coordinates + 0.5 (the inverse of
    :func:`data.sequences.open_alov`'s conversion)."""
    x, y, w, h = (float(v) for v in box)
    x1, y1, x2, y2 = x + 0.5, y + 0.5, x + w + 0.5, y + h + 0.5
    return f"{frame} {x1:.2f} {y1:.2f} {x1:.2f} {y2:.2f} {x2:.2f} {y2:.2f} {x2:.2f} {y1:.2f}"


def _render_alov_job(args) -> int:
    root, spec_d, (category, video, key, n) = args
    rng = np.random.default_rng(list(key))
    frames, boxes, *_ = _render.render_sequence(rng, n, spec_d["img_w"], spec_d["img_h"])
    video_dir = os.path.join(root, "images", category, video)
    os.makedirs(video_dir)
    for i, frame in enumerate(frames, start=1):
        _write_image(os.path.join(video_dir, f"{i:08d}.jpg"), _render.encode_jpeg(frame))
    annotated = range(0, n, spec_d["annotate_every"])
    with open(os.path.join(root, "gt", category, f"{video}.ann"), "w") as fh:
        fh.writelines(alov_corner_line(f + 1, boxes[f]) + "\n" for f in annotated)
    return len(annotated)


def generate_alov(root, spec: AlovSpec = AlovSpec(), *, workers: int | None = None) -> dict:
    """Generate an ALOV300++-format dataset (``images/`` and ``gt/``, see the module docstring) at ``root``.
    ``counts``: categories, videos, frames, annotated_frames."""
    if not isinstance(spec, AlovSpec):
        raise TypeError("spec must be an AlovSpec")

    def build(tmp: Path) -> dict:
        rng = np.random.default_rng([spec.seed, _KEY_PLAN])
        jobs = []
        for category in spec.categories:
            (tmp / "images" / category).mkdir(parents=True)
            (tmp / "gt" / category).mkdir(parents=True)
            for j in range(1, spec.videos_per_category + 1):
                n = int(rng.integers(spec.min_frames, spec.max_frames + 1))
                jobs.append((category, f"{category}_video{j:05d}", (spec.seed, _SPLIT_ALOV, len(jobs)), n))
        annotated = _run_jobs(_render_alov_job, [(str(tmp), dataclasses.asdict(spec), j) for j in jobs], workers)
        return {"categories": spec.num_categories, "videos": len(jobs), "frames": sum(j[3] for j in jobs),
                "annotated_frames": sum(annotated)}

    return _build(root, "alov", spec, build)


def ensure_alov(root, spec: AlovSpec = AlovSpec(), *, workers: int | None = None) -> dict:
    """Like :func:`ensure_market` for the ALOV300++ dataset."""
    return _ensure(root, "alov", spec, lambda r, s: generate_alov(r, s, workers=workers))


# --------------------------------------------------------------------------- #
# ImageNet DET
# --------------------------------------------------------------------------- #
def _render_still(rng: np.random.Generator, W: int, H: int, n_objects: int) -> tuple[Image.Image, list[tuple]]:
    """A cluttered background with `n_objects` textured objects pasted on it; their boxes x, y, w, h are whole
    pixels, inside the image, and tight (each object's mask touches all four sides of its box)."""
    cols = [np.array(_render._clothing_color(rng), np.float32) for _ in range(2)]
    t = _render.smooth_noise(rng, H, W, 6)[..., None]
    img = Image.fromarray((np.clip(cols[0] * (1 - t) + cols[1] * t, 0, 1) * 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(8, 16))):
        x, y = rng.uniform(0, W), rng.uniform(0, H)
        w, h = rng.uniform(0.03, 0.15) * W, rng.uniform(0.03, 0.15) * H
        [draw.rectangle, draw.ellipse][int(rng.integers(2))]([x, y, x + w, y + h],
                                                              fill=_render.rgb8(_render._clothing_color(rng)))
    boxes: list[tuple] = []
    for _ in range(n_objects):
        for _attempt in range(20):  # prefer a place where no earlier object is mostly covered
            tw, th = int(round(rng.uniform(0.15, 0.5) * W)), int(round(rng.uniform(0.15, 0.5) * H))
            x0, y0 = int(rng.integers(0, W - tw + 1)), int(rng.integers(0, H - th + 1))
            if all(_covered((x0, y0, tw, th), b) < 0.3 for b in boxes):
                break
        obj = _render._texture(rng, tw, th)
        img.paste(obj, (x0, y0), obj)
        boxes.append((x0, y0, tw, th))
    a = np.asarray(img, np.float32) * float(np.exp(rng.normal(0, 0.04))) + rng.normal(0, 4, (H, W, 3))
    return Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8), "RGB"), boxes


def _covered(new: tuple, old: tuple) -> float:
    """Share of box `old` that box `new` covers."""
    iw = min(new[0] + new[2], old[0] + old[2]) - max(new[0], old[0])
    ih = min(new[1] + new[3], old[1] + old[3]) - max(new[1], old[1])
    return max(iw, 0) * max(ih, 0) / (old[2] * old[3])


def voc_xml(folder: str, filename: str, width: int, height: int, objects) -> str:
    """An ILSVRC DET annotation file: `objects` are (name, (xmin, ymin, xmax, ymax)) in 0-based inclusive pixel
    indices, written in ILSVRC's element order (xmin, xmax, ymin, ymax)."""
    lines = ["<annotation>", f"\t<folder>{folder}</folder>", f"\t<filename>{filename}</filename>", "\t<source>",
             "\t\t<database>ILSVRC_2014</database>", "\t</source>", "\t<size>", f"\t\t<width>{width}</width>",
             f"\t\t<height>{height}</height>", "\t</size>"]
    for name, (xmin, ymin, xmax, ymax) in objects:
        lines += ["\t<object>", f"\t\t<name>{name}</name>", "\t\t<bndbox>", f"\t\t\t<xmin>{xmin}</xmin>",
                  f"\t\t\t<xmax>{xmax}</xmax>", f"\t\t\t<ymin>{ymin}</ymin>", f"\t\t\t<ymax>{ymax}</ymax>",
                  "\t\t</bndbox>", "\t</object>"]
    return "\n".join(lines + ["</annotation>"]) + "\n"


def _render_det_job(args) -> int:
    root, (synset, stem, key, W, H, n_objects) = args
    img, boxes = _render_still(np.random.default_rng(list(key)), W, H, n_objects)
    _write_image(os.path.join(root, "images", synset, f"{stem}.JPEG"), _render.encode_jpeg(img))
    # x, y, w, h in whole pixels → the first and last pixel index covered
    objects = [(synset, (x, y, x + w - 1, y + h - 1)) for x, y, w, h in boxes]
    with open(os.path.join(root, "gt", synset, f"{stem}.xml"), "w", encoding="utf-8") as fh:
        fh.write(voc_xml(synset, stem, W, H, objects))
    return len(objects)


def generate_imagenet_det(root, spec: ImagenetDetSpec = ImagenetDetSpec(), *, workers: int | None = None) -> dict:
    """Generate an ImageNet DET-format still-image set (``images/<synset>/<name>.JPEG`` and
    ``gt/<synset>/<name>.xml``) at ``root``. ``counts``: synsets, images, objects."""
    if not isinstance(spec, ImagenetDetSpec):
        raise TypeError("spec must be an ImagenetDetSpec")

    def build(tmp: Path) -> dict:
        rng = np.random.default_rng([spec.seed, _KEY_PLAN])
        jobs = []
        for synset in spec.synsets:
            (tmp / "images" / synset).mkdir(parents=True)
            (tmp / "gt" / synset).mkdir(parents=True)
            for i in range(1, spec.images_per_synset + 1):
                W = int(rng.integers(round(0.75 * spec.img_w), spec.img_w + 1))
                H = int(rng.integers(round(0.75 * spec.img_h), spec.img_h + 1))
                n_objects = int(rng.integers(spec.min_objects, spec.max_objects + 1))
                jobs.append((synset, f"{synset}_{i}", (spec.seed, _SPLIT_DET, len(jobs)), W, H, n_objects))
        objects = _run_jobs(_render_det_job, [(str(tmp), j) for j in jobs], workers)
        return {"synsets": spec.num_synsets, "images": len(jobs), "objects": sum(objects)}

    return _build(root, "imagenet_det", spec, build)


def ensure_imagenet_det(root, spec: ImagenetDetSpec = ImagenetDetSpec(), *, workers: int | None = None) -> dict:
    """Like :func:`ensure_market` for the ImageNet DET still-image set."""
    return _ensure(root, "imagenet_det", spec, lambda r, s: generate_imagenet_det(r, s, workers=workers))


# --------------------------------------------------------------------------- #
# DAVIS
# --------------------------------------------------------------------------- #
def davis_palette() -> list[int]:
    """DAVIS's (PASCAL VOC's) 256-colour palette, flat R, G, B: id 1 is (128, 0, 0), 2 (0, 128, 0), 3 (128, 128, 0)…"""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= (c & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette += [r, g, b]
    return palette


_PALETTE = davis_palette()


def encode_annotation(labels: np.ndarray) -> bytes:
    """An H×W uint8 array of object ids as a palette PNG (DAVIS's palette), encoded deterministically."""
    img = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8), "P")
    img.putpalette(_PALETTE)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _render_davis_job(args) -> tuple[int, int]:
    root, spec_d, (video, key, n) = args
    rng = np.random.default_rng(list(key))
    frames, *_, labels = _render.render_sequence(rng, n, spec_d["img_w"], spec_d["img_h"], masks=True)
    labels[labels > spec_d["objects_per_video"]] = 0
    frame_dir = os.path.join(root, "JPEGImages", "480p", video)
    ann_dir = os.path.join(root, "Annotations", "480p", video)
    os.makedirs(frame_dir)
    os.makedirs(ann_dir)
    for i, (frame, lab) in enumerate(zip(frames, labels)):
        _write_image(os.path.join(frame_dir, f"{i:05d}.jpg"), _render.encode_jpeg(frame))
        _write_image(os.path.join(ann_dir, f"{i:05d}.png"), encode_annotation(lab))
    present = [k for k in range(1, spec_d["objects_per_video"] + 1) if (labels == k).any()]
    return int((labels == 1).any(axis=(1, 2)).sum()), len(present)


def generate_davis(root, spec: DavisSpec = DavisSpec(), *, workers: int | None = None) -> dict:
    """Generate a DAVIS 2017-format set (module docstring) at ``root``: videos ``train-0001…`` listed in
    ``ImageSets/2017/train.txt`` and ``val-0001…`` in ``val.txt``. ``counts``: train_videos, val_videos, frames,
    objects (the annotated objects that appear on some frame; a distractor may stay hidden, and the reader then
    finds fewer), target_visible_frames (the frames where object 1 has at least one pixel)."""
    if not isinstance(spec, DavisSpec):
        raise TypeError("spec must be a DavisSpec")

    def build(tmp: Path) -> dict:
        rng = np.random.default_rng([spec.seed, _KEY_PLAN])
        jobs = []
        (tmp / "ImageSets" / "2017").mkdir(parents=True)
        for subset, code, num in (("train", _SPLIT_DAVIS_TRAIN, spec.num_train_videos),
                                  ("val", _SPLIT_DAVIS_VAL, spec.num_val_videos)):
            names = [f"{subset}-{i:04d}" for i in range(1, num + 1)]
            jobs += [(name, (spec.seed, code, i), int(rng.integers(spec.min_frames, spec.max_frames + 1)))
                     for i, name in enumerate(names)]
            (tmp / "ImageSets" / "2017" / f"{subset}.txt").write_text("\n".join(names) + "\n")
        done = _run_jobs(_render_davis_job, [(str(tmp), dataclasses.asdict(spec), j) for j in jobs],
                         workers if workers is not None else (1 if len(jobs) < 8 else None))
        return {"train_videos": spec.num_train_videos, "val_videos": spec.num_val_videos,
                "frames": sum(j[2] for j in jobs), "objects": sum(objects for _, objects in done),
                "target_visible_frames": sum(visible for visible, _ in done)}

    return _build(root, "davis", spec, build)


def ensure_davis(root, spec: DavisSpec = DavisSpec(), *, workers: int | None = None) -> dict:
    """Like :func:`ensure_market` for the DAVIS set."""
    return _ensure(root, "davis", spec, lambda r, s: generate_davis(r, s, workers=workers))


# --------------------------------------------------------------------------- #
# VOT
# --------------------------------------------------------------------------- #
def vot_polygon(mask: np.ndarray) -> np.ndarray | None:
    """The rotated rectangle of a bool mask as VOT writes it: ``cv2.boxPoints(cv2.minAreaRect(c))`` of the largest
    outer contour ``c`` (by area, then length), 8 float64 x1, y1, …, x4, y4 in the contour's pixel-index coordinates
    (VOT's: pixel centres at integers); None for an empty mask."""
    import cv2

    contours, _ = cv2.findContours(np.ascontiguousarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    largest = max(contours, key=lambda c: (cv2.contourArea(c), len(c)))
    return cv2.boxPoints(cv2.minAreaRect(largest)).astype(np.float64).reshape(8)


def vot_region_line(mask: np.ndarray) -> str:
    """One groundtruth.txt line for a frame's mask: its :func:`vot_polygon` with 4 decimals, or ``0`` (the VOT
    toolkit's special region "unknown", ``Special.UNKNOWN``) when the mask is empty."""
    polygon = vot_polygon(mask)
    if polygon is None:
        return "0"
    return ",".join(f"{round(float(v), 4) + 0.0:.4f}" for v in polygon)


def _render_vot_job(args) -> int:
    root, spec_d, (name, key, n) = args
    rng = np.random.default_rng(list(key))
    frames, *_, labels = _render.render_sequence(rng, n, spec_d["img_w"], spec_d["img_h"], masks=True)
    seq_dir = os.path.join(root, name)
    frame_dir = os.path.join(seq_dir, "color") if spec_d["color_folder"] else seq_dir
    os.makedirs(frame_dir)
    for i, frame in enumerate(frames, start=1):
        _write_image(os.path.join(frame_dir, f"{i:08d}.jpg"), _render.encode_jpeg(frame))
    lines = [vot_region_line(lab == 1) for lab in labels]
    with open(os.path.join(seq_dir, "groundtruth.txt"), "w") as fh:
        fh.writelines(line + "\n" for line in lines)
    if spec_d["color_folder"]:  # VOT2020+'s sequence description
        with open(os.path.join(seq_dir, "sequence"), "w") as fh:
            fh.write(f"channels.color=color/%08d.jpg\nformat=default\nfps=30\nname={name}\n")
    return sum(line != "0" for line in lines)


def generate_vot(root, spec: VotSpec = VotSpec(), *, workers: int | None = None) -> dict:
    """Generate a VOT-format set (module docstring) at ``root``: sequences ``synthetic-0001…`` in ``list.txt``.
    ``counts``: sequences, frames, regions (the frames with a polygon; the others have ``0``)."""
    if not isinstance(spec, VotSpec):
        raise TypeError("spec must be a VotSpec")

    def build(tmp: Path) -> dict:
        rng = np.random.default_rng([spec.seed, _KEY_PLAN])
        names = [f"synthetic-{i:04d}" for i in range(1, spec.num_seqs + 1)]
        jobs = [(name, (spec.seed, _SPLIT_VOT, i), int(rng.integers(spec.min_frames, spec.max_frames + 1)))
                for i, name in enumerate(names)]
        (tmp / "list.txt").write_text("\n".join(names) + "\n")
        regions = _run_jobs(_render_vot_job, [(str(tmp), dataclasses.asdict(spec), j) for j in jobs],
                            workers if workers is not None else (1 if len(jobs) < 8 else None))
        return {"sequences": spec.num_seqs, "frames": sum(j[2] for j in jobs), "regions": sum(regions)}

    return _build(root, "vot", spec, build)


def ensure_vot(root, spec: VotSpec = VotSpec(), *, workers: int | None = None) -> dict:
    """Like :func:`ensure_market` for the VOT set."""
    return _ensure(root, "vot", spec, lambda r, s: generate_vot(r, s, workers=workers))


# --------------------------------------------------------------------------- #
# From params (``synthetic_data``)
# --------------------------------------------------------------------------- #
GENERATORS = {"market": (ensure_market, MarketSpec), "classes": (ensure_classes, ClassesSpec),
              "got10k": (ensure_got10k, Got10kSpec), "alov": (ensure_alov, AlovSpec),
              "imagenet_det": (ensure_imagenet_det, ImagenetDetSpec), "davis": (ensure_davis, DavisSpec),
              "vot": (ensure_vot, VotSpec)}


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
    sub = ap.add_subparsers(dest="kind", required=True, metavar="{market,classes,got10k,alov,imagenet_det,davis,vot}")

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

    v, d = sub.add_parser("alov", help="ALOV300++ tracking videos (GOTURN's training layout)"), AlovSpec()
    common(v, d)
    v.add_argument("--num-categories", type=int, default=d.num_categories,
                   help=f"category folders, 1..{len(ALOV_CATEGORIES)} (%(default)s)")
    v.add_argument("--videos-per-category", type=int, default=d.videos_per_category, help="(%(default)s)")
    v.add_argument("--min-frames", type=int, default=d.min_frames, help="(%(default)s)")
    v.add_argument("--max-frames", type=int, default=d.max_frames, help="(%(default)s)")
    v.add_argument("--annotate-every", type=int, default=d.annotate_every,
                   help="write the box on every k-th frame, from the first (%(default)s)")
    v.add_argument("--img-w", type=int, default=d.img_w, help="frame width (%(default)s)")
    v.add_argument("--img-h", type=int, default=d.img_h, help="frame height (%(default)s)")

    i, d = sub.add_parser("imagenet_det", help="ImageNet DET still images (GOTURN's training layout)"), \
        ImagenetDetSpec()
    common(i, d)
    i.add_argument("--num-synsets", type=int, default=d.num_synsets, help="class folders (%(default)s)")
    i.add_argument("--images-per-synset", type=int, default=d.images_per_synset, help="(%(default)s)")
    i.add_argument("--min-objects", type=int, default=d.min_objects, help="objects per image, at least (%(default)s)")
    i.add_argument("--max-objects", type=int, default=d.max_objects, help="objects per image, at most (%(default)s)")
    i.add_argument("--img-w", type=int, default=d.img_w, help="largest image width (%(default)s)")
    i.add_argument("--img-h", type=int, default=d.img_h, help="largest image height (%(default)s)")

    s, d = sub.add_parser("davis", help="DAVIS 2017 video object segmentation (palette PNG masks)"), DavisSpec()
    common(s, d)
    s.add_argument("--num-train-videos", type=int, default=d.num_train_videos, help="(%(default)s)")
    s.add_argument("--num-val-videos", type=int, default=d.num_val_videos, help="(%(default)s)")
    s.add_argument("--min-frames", type=int, default=d.min_frames, help="(%(default)s)")
    s.add_argument("--max-frames", type=int, default=d.max_frames, help="(%(default)s)")
    s.add_argument("--objects-per-video", type=int, default=d.objects_per_video,
                   help="annotated objects per video, 1..3: the target (id 1), then distractors (%(default)s)")
    s.add_argument("--img-w", type=int, default=d.img_w, help="frame width (%(default)s)")
    s.add_argument("--img-h", type=int, default=d.img_h, help="frame height (%(default)s)")

    t, d = sub.add_parser("vot", help="VOT sequences with rotated-rectangle ground truth made from masks"), VotSpec()
    common(t, d)
    t.add_argument("--num-seqs", type=int, default=d.num_seqs, help="(%(default)s)")
    t.add_argument("--min-frames", type=int, default=d.min_frames, help="(%(default)s)")
    t.add_argument("--max-frames", type=int, default=d.max_frames, help="(%(default)s)")
    t.add_argument("--img-w", type=int, default=d.img_w, help="frame width (%(default)s)")
    t.add_argument("--img-h", type=int, default=d.img_h, help="frame height (%(default)s)")
    t.add_argument("--vot2019-layout", action="store_true",
                   help="frames next to groundtruth.txt (VOT2016-2019) instead of in color/ (VOT2020+)")
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
        elif a.kind == "got10k":
            spec = Got10kSpec(num_train_seqs=a.num_train_seqs, num_val_seqs=a.num_val_seqs,
                              min_frames=a.min_frames, max_frames=a.max_frames, img_w=a.img_w, img_h=a.img_h,
                              seed=a.seed)
            fn = ensure_got10k
        elif a.kind == "alov":
            spec = AlovSpec(num_categories=a.num_categories, videos_per_category=a.videos_per_category,
                            min_frames=a.min_frames, max_frames=a.max_frames, annotate_every=a.annotate_every,
                            img_w=a.img_w, img_h=a.img_h, seed=a.seed)
            fn = ensure_alov
        elif a.kind == "davis":
            spec = DavisSpec(num_train_videos=a.num_train_videos, num_val_videos=a.num_val_videos,
                             min_frames=a.min_frames, max_frames=a.max_frames, objects_per_video=a.objects_per_video,
                             img_w=a.img_w, img_h=a.img_h, seed=a.seed)
            fn = ensure_davis
        elif a.kind == "vot":
            spec = VotSpec(num_seqs=a.num_seqs, min_frames=a.min_frames, max_frames=a.max_frames, img_w=a.img_w,
                           img_h=a.img_h, color_folder=not a.vot2019_layout, seed=a.seed)
            fn = ensure_vot
        else:
            spec = ImagenetDetSpec(num_synsets=a.num_synsets, images_per_synset=a.images_per_synset,
                                   min_objects=a.min_objects, max_objects=a.max_objects, img_w=a.img_w,
                                   img_h=a.img_h, seed=a.seed)
            fn = ensure_imagenet_det
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
