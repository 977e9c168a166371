"""Video object segmentation sets and VOT on disk → :class:`~data.sequences.SequenceSet`.

Three layouts, as their datasets ship them (each detected by :func:`data.sequences.open_sequences`):

* **DAVIS 2016/2017** (:func:`open_davis`): ``<root>/JPEGImages/480p/<seq>/00000.jpg…``,
  ``<root>/Annotations/480p/<seq>/00000.png…`` and the sequence lists ``<root>/ImageSets/2017/<subset>.txt`` (or
  ``ImageSets/2016/<subset>.txt``, one name a line; the original DAVIS 2016 package's ``ImageSets/480p/<subset>.txt``,
  whose lines are frame/annotation path pairs, is read too). The annotations are palette PNGs whose pixel values are
  object ids: 0 background, 1..K the video's objects (DAVIS 2016's single object may be 255). Every frame of train and
  val is annotated; a video whose only PNG is the first frame's (test-dev, test-challenge) is read with its other
  frames unannotated.
* **YouTube-VOS** (:func:`open_youtube_vos`): ``<root>/<subset>/JPEGImages/<video>/<frame>.jpg``,
  ``<root>/<subset>/Annotations/<video>/<frame>.png`` and ``<root>/<subset>/meta.json``
  (``{"videos": {video: {"objects": {"1": {"category": …, "frames": […]}}}}}``). Annotation is sparse: train has a PNG
  for every fifth frame, valid only for the frame where each object first appears; the objects and their categories
  come from meta.json.
* **VOT** (:func:`open_vot`): ``<root>/list.txt`` naming the sequences, frames in ``<root>/<seq>/color/`` (VOT2020+)
  or directly in ``<root>/<seq>/`` (VOT2016–2019), and ``<root>/<seq>/groundtruth.txt`` with one region a line:
  ``x,y,w,h`` (4 numbers), a polygon ``x1,y1,…,x4,y4`` (8 numbers; the rotated rectangles of VOT2016–2019), or ``0``,
  the toolkit's special region "unknown" (no region on that frame). VOT2020's RLE-encoded masks (lines starting with
  ``m``) are refused with a message.

**Sequences and masks.** DAVIS and YouTube-VOS give one :class:`~data.sequences.Sequence` per (video, object), named
``<video>_<id>``, or just ``<video>`` when the video has one object. ``Sequence.masks`` holds per frame the reader key
of its annotation PNG (None for a frame without one), ``Sequence.object_id`` the object's palette index, and
:meth:`~data.sequences.SequenceSet.mask` reads one frame's mask (``png == object_id``). The box of a frame is the
bounding box of the object's pixels in our continuous convention (:mod:`data.boxes`: column i covers [i, i+1)):
``x`` = the first column, ``w`` = last column + 1 − first column, and the same for rows. A frame whose annotation
does not contain the object, or which has no annotation, has a NaN box and ``visible`` False; ``visible`` is True
exactly where the object has at least one pixel.

**What opening costs.** The boxes need every annotation PNG decoded once, which :func:`open_davis` and
:func:`open_youtube_vos` do at open time (nothing is cached on disk): Pillow decodes the palette indices, and NumPy
finds each object's rows and columns within the bounding box of all the objects. Measured on one core: about 2 ms per
854×480 PNG (decoding is ~1.6 ms of it) and 3-4 ms per 1280×720 PNG, so DAVIS 2017 train+val (≈6,000 PNGs) opens in
some 15 s and YouTube-VOS train (≈95,000 annotated frames) in some 5-6 minutes, plus listing the folders.
``workers`` (default: up to 8 threads) spreads the videos over threads; Pillow's decoder and NumPy release the GIL,
so this divides the time on an idle multi-core machine (not measurable on the loaded 2-core machine these numbers come
from). The result does not depend on it. A pack (``python -m data.pack``) stores the PNGs next to the frames and the
boxes in its manifest, so opening a pack decodes nothing.

**VOT regions.** The toolkit rasterises a polygon with pixel *centres* at integer coordinates (a vertex at x = 3 lies
on the centre of column 3) and a rectangle ``x,y,w,h`` as the columns x … x + w − 1. In our convention column 3's
centre is 3.5, so polygon vertices are shifted by ``vertex_shift`` = +0.5 (``open_vot(…, vertex_shift=0.0)`` keeps
the file's numbers), while a rectangle is already our ``x, y, w, h`` and its polygon is its four corners.
``Sequence.polygons`` is the (N, 8) float64 array of these polygons (NaN rows where there is no region) and
``Sequence.boxes`` their axis-aligned bounding boxes (``x = min(xs)``, ``w = max(xs) − min(xs)``); ``visible`` marks
the frames whose box has a positive width and height. NaN rectangles (VOT-LT's absent target) count as no region.

Every problem is a :class:`~data.records.DataError` naming the file, what was expected and what was found.
"""

from __future__ import annotations

import io
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional, TypeVar

import numpy as np
from PIL import Image

from data.readers import FolderReader
from data.records import DataError
from data.sequences import (Sequence, SequenceSet, _SPLIT_RE, _check_box_count, _frame_keys, _read_lines,
                            _read_text, _subfolders)

MASK_MODES = ("P", "L", "1")
"""Pillow modes accepted for annotation PNGs: palette (indexed), 8-bit grey, 1-bit."""
_MODE_WORDS = "a palette (indexed, mode P) or single-channel (mode L or 1) PNG of object ids"
VOT_VERTEX_SHIFT = 0.5
"""Added to VOT polygon vertices: the toolkit's pixel-centre coordinates → ours (module docstring)."""
VOT_TAG_FILES = ("camera_motion.tag", "illum_change.tag", "motion_change.tag", "occlusion.tag", "size_change.tag")
_VOT_LINE = "4 numbers x,y,w,h, 8 numbers x1,y1,x2,y2,x3,y3,x4,y4 or 0 (no region)"
_DAVIS_LISTS = ("2017", "2016")

T = TypeVar("T")
R = TypeVar("R")


# --------------------------------------------------------------------------------------------------------------------
# Annotation PNGs


def _labels_of(img: Image.Image, where: str) -> np.ndarray:
    if img.mode not in MASK_MODES:
        raise DataError(f"{where}: expected {_MODE_WORDS}, found an image of mode {img.mode}")
    labels = np.asarray(img)
    return labels.astype(np.uint8) if labels.dtype != np.uint8 else labels


def decode_annotation(data: bytes, where: str) -> np.ndarray:
    """The H×W uint8 object ids of an annotation PNG's bytes (palette indices of a P image, values of an L image);
    DataError naming `where` for anything else."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return _labels_of(img, where)
    except DataError:
        raise
    except Exception as err:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ValueError, …
        reason = "empty file" if not data else str(err) or type(err).__name__
        raise DataError(f"{where}: cannot decode annotation PNG ({reason}); expected {_MODE_WORDS}") from None


def read_annotation(path: Path) -> np.ndarray:
    """:func:`decode_annotation` of the file at `path`."""
    try:
        with Image.open(path) as img:
            img.load()
            return _labels_of(img, str(path))
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: missing") from None
    except Exception as err:
        raise DataError(f"{path}: cannot decode annotation PNG ({str(err) or type(err).__name__}); expected "
                        f"{_MODE_WORDS}") from None


def image_size(data: bytes, where: str) -> tuple[int, int]:
    """(width, height) of encoded image bytes, from the header alone."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception as err:
        reason = "empty file" if not data else str(err) or type(err).__name__
        raise DataError(f"{where}: cannot decode image ({reason})") from None


def _file_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as img:
            return img.size
    except Exception as err:
        raise DataError(f"{path}: cannot decode image ({str(err) or type(err).__name__})") from None


def mask_box(mask: np.ndarray) -> np.ndarray:
    """x, y, w, h of a bool mask's pixels in continuous coordinates (``w`` = last column + 1 − first column); NaNs
    when the mask is empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if not len(rows):
        return np.full(4, np.nan)
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] + 1 - cols[0], rows[-1] + 1 - rows[0]], dtype=np.float64)


def _object_boxes(labels: np.ndarray, wanted: Optional[set[int]]) -> dict[int, np.ndarray]:
    """{object id: box} for every non-zero id in `labels` (only those in `wanted` when given). The work is done on
    the bounding box of all the objects, which is usually a fraction of the frame."""
    rows = np.flatnonzero(labels.any(axis=1))
    if not len(rows):
        return {}
    cols = np.flatnonzero(labels.any(axis=0))
    crop = labels[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    if wanted is None:
        ids = [int(k) for k in np.flatnonzero(np.bincount(crop.ravel(), minlength=256)[1:]) + 1]
    else:
        ids = sorted(wanted)
    found = {}
    for k in ids:
        box = mask_box(crop == k)
        if not np.isnan(box[0]):
            found[k] = box + np.array([cols[0], rows[0], 0, 0])
    return found


def _scan_annotations(paths: list[Optional[Path]], frame_size: tuple[int, int],
                      wanted: Optional[set[int]]) -> list[Optional[dict[int, np.ndarray]]]:
    """Decode each annotation once: per frame {object id: box}, None where the frame has no PNG."""
    found: list[Optional[dict[int, np.ndarray]]] = []
    for path in paths:
        if path is None:
            found.append(None)
            continue
        labels = read_annotation(path)
        if (labels.shape[1], labels.shape[0]) != frame_size:
            raise DataError(f"{path}: annotation is {labels.shape[1]}×{labels.shape[0]} pixels; expected the size of "
                            f"the video's frames, {frame_size[0]}×{frame_size[1]}")
        found.append(_object_boxes(labels, wanted))
    return found


def _object_sequences(video: str, frames: tuple[str, ...], mask_keys: tuple[Optional[str], ...],
                      scanned: list[Optional[dict[int, np.ndarray]]], object_ids: list[int], where: str,
                      meta: Callable[[int], dict]) -> list[Sequence]:
    sequences = []
    for object_id in object_ids:
        boxes = np.full((len(frames), 4), np.nan)
        for index, found in enumerate(scanned):
            if found is not None and object_id in found:
                boxes[index] = found[object_id]
        visible = np.isfinite(boxes[:, 0])
        name = video if len(object_ids) == 1 else f"{video}_{object_id}"
        sequences.append(Sequence(name, frames, boxes, visible, None, None, meta(object_id), where,
                                  masks=mask_keys, object_id=object_id))
    return sequences


def _map(fn: Callable[[T], R], items: list[T], workers: Optional[int]) -> list[R]:
    """`fn` over `items` in order, on up to `workers` threads (default min(8, CPUs)); the first failure in item order
    is raised and what has not started is cancelled."""
    if workers is None:
        workers = min(8, os.cpu_count() or 1)
    if workers <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    executor = ThreadPoolExecutor(min(workers, len(items)))
    try:
        return list(executor.map(fn, items))
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _pngs(directory: Path) -> list[str]:
    try:
        return sorted(n for n in os.listdir(directory) if n.lower().endswith(".png") and not n.startswith("."))
    except OSError as err:
        raise DataError(f"{directory}: cannot list annotations ({err.strerror or err})") from None


def _match_annotations(frames: tuple[str, ...], ann_dir: Path, frame_dir: Path) -> list[Optional[str]]:
    """Per frame the name of its PNG in `ann_dir` (same stem as the frame) or None; DataError for a PNG of no frame."""
    stems = {Path(key).stem: index for index, key in enumerate(frames)}
    names: list[Optional[str]] = [None] * len(frames)
    for name in _pngs(ann_dir):
        index = stems.get(name[:-4])
        if index is None:
            raise DataError(f"{ann_dir / name}: annotation of a frame that {frame_dir} does not hold (expected a frame "
                            f"{name[:-4]}.jpg)")
        names[index] = name
    return names


# --------------------------------------------------------------------------------------------------------------------
# DAVIS


def is_davis_root(root: Path) -> bool:
    """JPEGImages/ and ImageSets/ folders (Annotations/ is checked when the set is opened)."""
    return (root / "JPEGImages").is_dir() and (root / "ImageSets").is_dir()


def _davis_list(root: Path, subset: str, resolution: str) -> Path:
    candidates = [root / "ImageSets" / year / f"{subset}.txt" for year in _DAVIS_LISTS]
    candidates.append(root / "ImageSets" / resolution / f"{subset}.txt")
    for path in candidates:
        if path.is_file():
            return path
    found = sorted({p.stem for p in (root / "ImageSets").glob("*/*.txt")})
    listed = f"; lists found: {', '.join(found)}" if found else ""
    raise DataError(f"{candidates[0]}: missing; expected the DAVIS sequence list of subset {subset!r} "
                    f"(ImageSets/2017/{subset}.txt or ImageSets/2016/{subset}.txt){listed}")


def _davis_names(path: Path) -> list[str]:
    """Sequence names, one a line; a DAVIS 2016 line '/JPEGImages/480p/bear/00000.jpg /Annotations/…' names its
    sequence by the frame's folder."""
    names: dict[str, None] = {}
    for line in _read_lines(path):
        first = line.split()[0]
        names[first.strip("/").split("/")[-2] if "/" in first else first] = None
    if not names:
        raise DataError(f"{path}: lists no sequences")
    return list(names)


def open_davis(root: str | os.PathLike, subset: str = "val", resolution: str = "480p", *,
               workers: Optional[int] = None) -> SequenceSet:
    """The DAVIS videos of `subset` (``train``, ``val``, …: the names in ``ImageSets/2017/<subset>.txt``) at
    `resolution` (``480p`` or ``Full-Resolution``): one sequence per (video, object) with boxes from the masks (module
    docstring; every annotation PNG is decoded here, `workers` threads)."""
    root = Path(root)
    list_path = _davis_list(root, subset, resolution)
    names = _davis_names(list_path)
    images, annotations = root / "JPEGImages" / resolution, root / "Annotations" / resolution
    for folder, what in ((images, "the frames (JPEGImages/{r}/<seq>/00000.jpg…)"),
                         (annotations, "the palette PNG annotations (Annotations/{r}/<seq>/00000.png…)")):
        if not folder.is_dir():
            others = sorted(p.name for p in _subfolders(folder.parent)) if folder.parent.is_dir() else []
            hint = f"; found resolutions {', '.join(others)} (open_davis(…, resolution=…))" if others else ""
            raise DataError(f"{folder}: missing; expected {what.format(r=resolution)}{hint}")

    def video(name: str) -> list[Sequence]:
        frame_dir, ann_dir = images / name, annotations / name
        if not frame_dir.is_dir():
            raise DataError(f"{frame_dir}: missing; {list_path} lists sequence {name!r}")
        if not ann_dir.is_dir():
            raise DataError(f"{ann_dir}: missing; expected the annotation PNGs of sequence {name!r} (one per frame "
                            f"of {frame_dir})")
        frames = _frame_keys(frame_dir, f"JPEGImages/{resolution}/{name}")
        pngs = _match_annotations(frames, ann_dir, frame_dir)
        if None in pngs and any(pngs[1:]) or pngs[0] is None:
            missing = Path(frames[pngs.index(None)]).name
            raise DataError(f"{ann_dir}: no annotation for frame {missing}; expected one PNG per frame (as DAVIS "
                            f"train and val ship) or the first frame's only (test-dev)")
        scanned = _scan_annotations([None if p is None else ann_dir / p for p in pngs],
                                    _file_size(root / frames[0]), None)
        object_ids = sorted({k for found in scanned if found for k in found})
        if not object_ids:
            raise DataError(f"{ann_dir}: no object in any annotation (every pixel is 0); expected object ids 1, 2, …")
        mask_keys = tuple(None if p is None else f"Annotations/{resolution}/{name}/{p}" for p in pngs)
        return _object_sequences(name, frames, mask_keys, scanned, object_ids, str(frame_dir),
                                 lambda _: {"video": name})

    sequences = tuple(s for found in _map(video, names, workers) for s in found)
    return SequenceSet(sequences, FolderReader(root), "davis",
                       f"DAVIS {subset} ({resolution}) at {root}: {len(names)} videos, {len(sequences)} objects, "
                       f"{sum(len(s) for s in sequences)} object-frames")


# --------------------------------------------------------------------------------------------------------------------
# YouTube-VOS


def _is_vos_split(folder: Path) -> bool:
    return (folder / "meta.json").is_file() and (folder / "JPEGImages").is_dir()


def is_youtube_vos_root(root: Path) -> bool:
    """`root` is a YouTube-VOS subset folder (meta.json and JPEGImages/) or holds one."""
    try:
        return _is_vos_split(root) or any(_is_vos_split(folder) for folder in _subfolders(root))
    except OSError:
        return False


def _vos_meta(path: Path) -> dict[str, dict[int, str]]:
    """{video: {object id: category}} from meta.json, videos in name order."""
    try:
        meta = json.loads(_read_text(path))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    videos = meta.get("videos") if isinstance(meta, dict) else None
    if not isinstance(videos, dict):
        raise DataError(f"{path}: expected {{\"videos\": {{video: {{\"objects\": …}}}}}}, found "
                        f"{type(videos if isinstance(meta, dict) else meta).__name__}")
    result: dict[str, dict[int, str]] = {}
    for video in sorted(videos):
        objects = videos[video].get("objects") if isinstance(videos[video], dict) else None
        if not isinstance(objects, dict):
            raise DataError(f"{path}: videos[{video!r}]: expected {{\"objects\": {{id: {{\"category\": …, \"frames\": "
                            f"[…]}}}}}}, found {str(videos[video])[:80]!r}")
        ids: dict[int, str] = {}
        for key, entry in objects.items():
            if not (str(key).isdigit() and 1 <= int(key) <= 255):
                raise DataError(f"{path}: videos[{video!r}].objects: expected object ids 1..255, found {key!r}")
            ids[int(key)] = str(entry.get("category", "")) if isinstance(entry, dict) else ""
        result[video] = dict(sorted(ids.items()))
    return result


def open_youtube_vos(root: str | os.PathLike, subset: Optional[str] = "train", *,
                     workers: Optional[int] = None) -> SequenceSet:
    """The YouTube-VOS videos of `subset` (``train``, ``valid``, ``test``; `root` may also be the subset folder
    itself): one sequence per (video, object of meta.json) over all the video's frames, boxes from the annotated frames
    (module docstring; every annotation PNG is decoded here, `workers` threads), meta ``{'video', 'category'}``."""
    root = Path(root)
    if subset is None and not _is_vos_split(root):
        subset = "train"
    if subset is not None and _is_vos_split(root / subset):
        split_dir, prefix = root / subset, f"{subset}/"
    elif _is_vos_split(root):
        split_dir, prefix = root, ""
    else:
        found = sorted(p.name for p in _subfolders(root) if _is_vos_split(p)) if root.is_dir() else []
        subsets = f"; subsets found: {', '.join(found)}" if found else ""
        raise DataError(f"{root / subset / 'meta.json'}: missing; expected a YouTube-VOS subset folder "
                        f"with meta.json, JPEGImages/ and Annotations/{subsets}")
    meta_path, annotations = split_dir / "meta.json", split_dir / "Annotations"
    videos = _vos_meta(meta_path)
    if not videos:
        raise DataError(f"{meta_path}: lists no videos")
    if not annotations.is_dir():
        raise DataError(f"{annotations}: missing; expected the palette PNG annotations (Annotations/<video>/"
                        f"<frame>.png) of the videos in {meta_path}")

    def video(name: str) -> list[Sequence]:
        frame_dir, ann_dir = split_dir / "JPEGImages" / name, annotations / name
        if not frame_dir.is_dir():
            raise DataError(f"{frame_dir}: missing; {meta_path} lists video {name!r}")
        if not ann_dir.is_dir():
            raise DataError(f"{ann_dir}: missing; expected the annotation PNGs of video {name!r} listed in "
                            f"{meta_path}")
        frames = _frame_keys(frame_dir, f"{prefix}JPEGImages/{name}")
        pngs = _match_annotations(frames, ann_dir, frame_dir)
        categories = videos[name]
        scanned = _scan_annotations([None if p is None else ann_dir / p for p in pngs],
                                    _file_size(root / frames[0]), set(categories))
        mask_keys = tuple(None if p is None else f"{prefix}Annotations/{name}/{p}" for p in pngs)
        return _object_sequences(name, frames, mask_keys, scanned, list(categories), str(frame_dir),
                                 lambda k: {"video": name, "category": categories[k]})

    names = [name for name in videos if videos[name]]
    sequences = tuple(s for found in _map(video, names, workers) for s in found)
    annotated = sum(int(any(k is not None for k in s.masks or ())) for s in sequences)
    return SequenceSet(sequences, FolderReader(root), "youtube_vos",
                       f"YouTube-VOS {split_dir.name} at {split_dir}: {len(names)} videos, {len(sequences)} objects "
                       f"({annotated} with annotations), {sum(len(s) for s in sequences)} object-frames")


# --------------------------------------------------------------------------------------------------------------------
# VOT


def _first_line(path: Path) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as file:
            for line in file:
                if line.strip():
                    return line.strip()
    except (OSError, UnicodeDecodeError):
        return None
    return None


def is_vot_root(root: Path) -> bool:
    """A root holding list.txt is VOT rather than a GOT-10k subset folder when its first sequence has a color/ folder
    or a ``sequence`` file (VOT2020+) or VOT's .tag files, or, having none of GOT-10k's label files, starts its
    groundtruth.txt with a polygon (8 numbers), a ``0`` or a mask."""
    first = _first_line(root / "list.txt")
    if first is None:
        return False
    folder = root / first
    if (folder / "color").is_dir() or (folder / "sequence").is_file() or any((folder / t).is_file()
                                                                           for t in VOT_TAG_FILES):
        return True
    if any((folder / name).exists() for name in ("absence.label", "cover.label", "meta_info.ini")):
        return False
    line = _first_line(folder / "groundtruth.txt")
    if line is None:
        return False
    return line.startswith("m") or len([t for t in _SPLIT_RE.split(line) if t]) in (1, 8)


def read_vot_groundtruth(path: Path, vertex_shift: float = VOT_VERTEX_SHIFT) -> tuple[np.ndarray, np.ndarray]:
    """(polygons (N, 8), boxes (N, 4)) of a VOT groundtruth.txt (module docstring): polygons in our coordinates
    (vertices + `vertex_shift`; a rectangle's four corners), boxes their bounding boxes; NaN rows for no region."""
    polygons, boxes = [], []
    for number, line in enumerate(_read_text(path).splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("m"):
            raise DataError(f"{path}: line {number}: a VOT2020 mask region ('m…', RLE encoded), which is not read; "
                            f"expected {_VOT_LINE}")
        tokens = [t for t in _SPLIT_RE.split(line) if t]
        try:
            values = [float(t) for t in tokens]
        except ValueError:
            raise DataError(f"{path}: line {number}: expected {_VOT_LINE}, found {line[:80]!r}") from None
        if len(values) == 1 and values[0] == 0 or len(values) in (4, 8) and all(math.isnan(v) for v in values):
            polygons.append([math.nan] * 8)
            boxes.append([math.nan] * 4)
            continue
        if len(values) not in (4, 8):
            raise DataError(f"{path}: line {number}: expected {_VOT_LINE}, found {len(values)} number(s): "
                            f"{line[:80]!r}")
        if not all(math.isfinite(v) for v in values):
            raise DataError(f"{path}: line {number}: expected finite coordinates, found {line[:80]!r}")
        if len(values) == 4:
            x, y, w, h = values
            polygons.append([x, y, x + w, y, x + w, y + h, x, y + h])
            boxes.append(values)
        else:
            shifted = [v + vertex_shift for v in values]
            xs, ys = shifted[0::2], shifted[1::2]
            polygons.append(shifted)
            boxes.append([min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)])
    if not boxes:
        raise DataError(f"{path}: no regions (empty file); expected one line per frame: {_VOT_LINE}")
    return np.asarray(polygons, dtype=np.float64), np.asarray(boxes, dtype=np.float64)


def open_vot(root: str | os.PathLike, subset: Optional[str] = None, *,
             vertex_shift: float = VOT_VERTEX_SHIFT) -> SequenceSet:
    """The VOT sequences named in ``<root>/list.txt`` (frames in ``<seq>/color/`` or ``<seq>/``), each with
    ``polygons`` and their bounding boxes (module docstring). `subset` is ignored (VOT has no split)."""
    del subset
    root = Path(root)
    names = _read_lines(root / "list.txt")
    if not names:
        raise DataError(f"{root / 'list.txt'}: lists no sequences")
    sequences = []
    for name in names:
        folder = root / name
        if not folder.is_dir():
            raise DataError(f"{folder}: sequence folder listed in {root / 'list.txt'} does not exist")
        color = folder / "color"
        frames = _frame_keys(color, f"{name}/color") if color.is_dir() else _frame_keys(folder, name)
        gt = folder / "groundtruth.txt"
        polygons, boxes = read_vot_groundtruth(gt, vertex_shift)
        _check_box_count(gt, boxes, len(frames))
        visible = np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
        sequences.append(Sequence(name, frames, boxes, visible, None, None, {}, str(folder), polygons=polygons))
    return SequenceSet(tuple(sequences), FolderReader(root), "vot",
                       f"VOT set at {root}: {len(sequences)} sequences, {sum(len(s) for s in sequences)} frames")


__all__ = ["MASK_MODES", "VOT_VERTEX_SHIFT", "decode_annotation", "image_size", "is_davis_root", "is_vot_root",
           "is_youtube_vos_root", "mask_box", "open_davis", "open_vot", "open_youtube_vos", "read_annotation",
           "read_vot_groundtruth"]
