"""Tracking sequences on disk → :class:`SequenceSet`: frames, boxes and which frames show the target.

Layouts read by :func:`open_sequences`:

* **GOT-10k** as it ships: ``<root>/<subset>/list.txt`` naming one folder per sequence, each with ``00000001.jpg…``,
  ``groundtruth.txt`` (``x,y,w,h`` per frame), ``absence.label``, ``cover.label``, ``cut_by_image.label`` and
  ``meta_info.ini``. The ``test`` subset has only the first frame's box and no labels. ``<root>`` may also be the
  subset folder itself (the one holding ``list.txt``).
* **LaSOT / OTB style**: ``<root>/<class>/<seq>/img/*.jpg`` (LaSOT) or ``<root>/<seq>/img/*.jpg`` (OTB), with
  ``groundtruth.txt`` (or OTB's ``groundtruth_rect.txt``; comma, tab or space separated) and, in LaSOT,
  ``full_occlusion.txt`` and ``out_of_view.txt`` (one line of comma-separated 0/1 flags). A LaSOT ``subset`` of
  ``train`` / ``test`` selects the sequences named in ``<root>/training_set.txt`` / ``testing_set.txt``.
* **ALOV300++** as GOTURN's training seed lays it out: ``<root>/images/<category>/<video>/00000001.jpg…`` and one
  ``<root>/gt/<category>/<video>.ann`` per video (see *ALOV300++ annotations* below). ALOV has no official split: a
  ``subset`` is accepted and ignored, every video is read (GOTURN's reference holds out the last videos of each
  category itself).
* **DAVIS 2016/2017** (``JPEGImages/480p/<seq>/``, palette PNGs in ``Annotations/480p/<seq>/``,
  ``ImageSets/2017/<subset>.txt``), **YouTube-VOS** (``<subset>/meta.json``, ``<subset>/JPEGImages/<video>/``,
  sparse ``<subset>/Annotations/<video>/*.png``) and **VOT** (``list.txt``, ``<seq>/color/*.jpg`` or ``<seq>/*.jpg``,
  ``<seq>/groundtruth.txt`` with rectangles or rotated-rectangle polygons): see :mod:`data.mask_sequences`. The two
  segmentation layouts give one sequence per (video, object) with ``Sequence.masks`` / ``object_id`` (read with
  :meth:`SequenceSet.mask`) and boxes derived from the masks; VOT sequences carry ``Sequence.polygons``.
* an LMDB pack of any of these, made by ``python -m data.pack`` (see :mod:`data.sequence_pack`).

Which frames count as "target visible" (the frames a pair sampler may draw and, for GOT-10k, the frames scored):

* GOT-10k: ``cover > 0`` and not ``absent`` (pytracking's rule). The official toolkit scores frames with ``cover > 0``
  and ignores ``absence.label``; in the shipped data the two agree (an absent target has cover 0).
* LaSOT: neither fully occluded nor out of view. OTB: every frame whose box has a positive width and height.
* ALOV: exactly the annotated frames whose box has a positive width and height; the other frames (ALOV annotates
  about every fifth frame) have NaN boxes.
* DAVIS, YouTube-VOS: the frames whose annotation PNG holds at least one pixel of the object; frames without a PNG
  (YouTube-VOS annotates every fifth frame, its valid subset only each object's first one) have NaN boxes.
* VOT: every frame with a region whose bounding box has a positive width and height (``0`` lines, VOT's "no region",
  and NaN rectangles have NaN boxes).

**ALOV300++ annotations.** Each ``.ann`` line is ``frame ax ay bx by cx cy dx dy``: a 1-based frame number (the
frame's position among the video's image files in name order) and the four corners of a possibly rotated rectangle,
space separated. The box is the axis-aligned bounding box of the corners. The files do not state their pixel
convention; like the frame numbers, we take the corners as 1-based, i.e. MATLAB's spatial coordinates, in which pixel
``(1, 1)`` covers ``[0.5, 1.5] × [0.5, 1.5]`` (in ours it covers ``[0, 1] × [0, 1]``). Hence
``x = min(ax, bx, cx, dx) - 0.5``, ``y = min(ay, by, cy, dy) - 0.5``, ``w = max(x's) - min(x's)``,
``h = max(y's) - min(y's)``: a box drawn along the whole image, 0.5 to W + 0.5, becomes 0 to W. GOTURN's reference
subtracts 1 instead (moving the corners to 0-based pixel indices, whose centres are integers); read in our convention
that is the same box half a pixel up and to the left. Sizes agree exactly. ``open_alov(…, corner_origin=1.0)``
reproduces the reference's positions.

Boxes are ``x, y, w, h`` in continuous pixel coordinates (right edge ``x + w``; see :mod:`data.boxes`). Every problem
is a :class:`~data.records.DataError` naming the file, what was expected and what was found.
"""

from __future__ import annotations

import io
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from data.imaging import IMAGE_EXTENSIONS
from data.readers import FolderReader, ImageReader, decode_image
from data.records import DataError

# the labels a rule reads (cut_by_image.label, "target cut by the image border", is not used by any rule, nor read)
GOT10K_LABELS = ("absence.label", "cover.label")
_LASOT_SUBSET_FILES = {"train": "training_set.txt", "test": "testing_set.txt"}
_SPLIT_RE = re.compile(r"[,\t ]+")


@dataclass(frozen=True, eq=False)
class Sequence:
    """One annotated video. ``frames`` are reader keys ('/'-separated paths relative to the set's root)."""

    name: str
    frames: tuple[str, ...]
    boxes: np.ndarray
    """(N, 4) float64 x, y, w, h; (1, 4) when only the first box is known (GOT-10k test)."""
    visible: Optional[np.ndarray]
    """(N,) bool, target visible (see the module docstring); None when only the first box is known."""
    cover: Optional[np.ndarray] = None
    """(N,) int, GOT-10k visible-ratio level 0..8 (0 = invisible); None in other layouts."""
    resolution: Optional[tuple[int, int]] = None
    """(width, height) from GOT-10k's meta_info.ini; None when not recorded."""
    meta: dict = field(default_factory=dict)
    """GOT-10k meta_info.ini entries (object_class, motion_class, …); LaSOT: {'class': …}; ALOV: {'class': the
    category folder, e.g. '01-Light'}; DAVIS: {'video': …}; YouTube-VOS: {'video': …, 'category': …}; VOT: {}."""
    where: str = ""
    """The sequence's folder (or pack entry), for messages."""
    masks: Optional[tuple[Optional[str], ...]] = None
    """Segmentation layouts (DAVIS, YouTube-VOS): per frame the reader key of its annotation PNG (a palette image of
    object ids, 0 = background), None for a frame without one; None in layouts without masks. Read with
    :meth:`SequenceSet.mask`."""
    object_id: Optional[int] = None
    """The palette index of this sequence's object in the annotation PNGs; None in layouts without masks."""
    polygons: Optional[np.ndarray] = None
    """VOT: (N, 8) float64 x1, y1, …, x4, y4 per frame (the region as annotated, in our continuous coordinates; a
    4-number rectangle becomes its corners; NaN where the frame has no region); None in other layouts."""

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def fully_annotated(self) -> bool:
        return len(self.boxes) == len(self.frames)


@dataclass(frozen=True)
class SequenceSet:
    sequences: tuple[Sequence, ...]
    reader: ImageReader
    layout: str
    """'got10k', 'lasot' (LaSOT/OTB style), 'alov' (ALOV300++), 'davis', 'youtube_vos', 'vot' (see
    :mod:`data.mask_sequences`) or 'still' (still images, `data.still_images`)."""
    description: str

    def __len__(self) -> int:
        return len(self.sequences)

    def by_name(self) -> dict[str, Sequence]:
        return {s.name: s for s in self.sequences}

    def frame(self, sequence: Sequence, index: int) -> np.ndarray:
        """Frame `index` of `sequence` as an H×W×3 uint8 RGB array."""
        key = sequence.frames[index]
        return np.asarray(decode_image(self.reader.read(key), self.reader.describe(key)))

    def mask(self, sequence: Sequence, index: int) -> np.ndarray:
        """The object's mask on frame `index` of `sequence`: an H×W bool array, True where the frame's annotation PNG
        holds ``sequence.object_id``. DataError naming the file when the sequence has no masks, the frame has no
        annotation, or the PNG is not a palette (indexed) or single-channel image of the frame's size."""
        from data.mask_sequences import decode_annotation, image_size

        if sequence.masks is None or sequence.object_id is None:
            raise DataError(f"{sequence.where or sequence.name}: the sequence has no segmentation masks ({self.layout} "
                            f"layout); masks come with the DAVIS and YouTube-VOS layouts")
        key = sequence.masks[index]
        frame_key = sequence.frames[index]
        if key is None:
            raise DataError(f"{self.reader.describe(frame_key)}: frame {index} of {sequence.name} has no annotation "
                            f"PNG; expected a frame whose mask is annotated (sequence.masks[{index}] is not None)")
        where = self.reader.describe(key)
        labels = decode_annotation(self.reader.read(key), where)
        size = image_size(self.reader.read(frame_key), self.reader.describe(frame_key))
        if (labels.shape[1], labels.shape[0]) != size:
            raise DataError(f"{where}: annotation is {labels.shape[1]}×{labels.shape[0]} pixels; expected the size of "
                            f"its frame {self.reader.describe(frame_key)}, {size[0]}×{size[1]}")
        return labels == sequence.object_id


# --------------------------------------------------------------------------------------------------------------------
# Layout detection

SEQUENCE_LAYOUTS = ("a GOT-10k root (<root>/<subset>/list.txt and one folder per sequence), a GOT-10k subset folder "
                    "(holding list.txt), a LaSOT/OTB-style root (<class>/<seq>/img/ or <seq>/img/ with "
                    "groundtruth.txt), an ALOV300++ root (images/<category>/<video>/*.jpg and "
                    "gt/<category>/<video>.ann), a DAVIS root (JPEGImages/480p/<seq>/, Annotations/480p/<seq>/*.png, "
                    "ImageSets/2017/<subset>.txt), a YouTube-VOS root or subset folder (<subset>/meta.json, "
                    "<subset>/JPEGImages/<video>/, <subset>/Annotations/<video>/*.png), a VOT root (list.txt, "
                    "<seq>/color/*.jpg or <seq>/*.jpg and <seq>/groundtruth.txt with 4 or 8 numbers a line), or an "
                    "LMDB pack of one made by `python -m data.pack`")


def sequence_layout(root: Path, subset: Optional[str] = None) -> Optional[str]:
    """'got10k', 'lasot', 'alov', 'davis', 'youtube_vos', 'vot' or 'pack' if `root` holds sequences in that layout,
    else None (nothing is read but list.txt's first name and, for a root holding list.txt, one line of that
    sequence's groundtruth.txt, which tells VOT from GOT-10k)."""
    from data import mask_sequences

    if (root / "data.mdb").is_file():
        return "pack"
    if subset is not None and (root / subset / "list.txt").is_file():
        return "got10k"
    if (root / "list.txt").is_file():
        return "vot" if mask_sequences.is_vot_root(root) else "got10k"
    if mask_sequences.is_davis_root(root):
        return "davis"
    if mask_sequences.is_youtube_vos_root(root):
        return "youtube_vos"
    if _is_alov_root(root):
        return "alov"
    if _lasot_sequence_dirs(root, limit=1):
        return "lasot"
    return None


def open_sequences(path: str | os.PathLike, subset: Optional[str] = None) -> SequenceSet:
    """The sequences at `path` in any supported layout. `subset`: the GOT-10k subset folder (``train``, ``val``,
    ``test``; needed when `path` is a GOT-10k root), LaSOT's ``train`` / ``test`` list, DAVIS's ImageSets list
    (``train``, ``val``; default ``val``) or the YouTube-VOS subset folder (``train``, ``valid``; default ``train``
    unless `path` is the subset folder); ignored for OTB, ALOV and VOT (which have no official split)."""
    root = Path(path)
    if not root.exists():
        raise DataError(f"{root}: tracking data not found (no such file or directory)")
    if not root.is_dir():
        raise DataError(f"{root}: expected a directory: {SEQUENCE_LAYOUTS}")
    layout = sequence_layout(root, subset)
    if layout == "pack":
        from data.sequence_pack import open_sequence_pack

        return open_sequence_pack(root, subset)
    if layout == "got10k":
        return open_got10k(root, subset)
    if layout == "lasot":
        return open_lasot(root, subset)
    if layout == "alov":
        return open_alov(root, subset)
    if layout in ("davis", "youtube_vos", "vot"):
        from data import mask_sequences

        if layout == "davis":
            return mask_sequences.open_davis(root, subset if subset is not None else "val")
        if layout == "youtube_vos":
            return mask_sequences.open_youtube_vos(root, subset)
        return mask_sequences.open_vot(root)
    hint = ""
    if subset is not None and not (root / subset).exists() and any(root.glob("*/list.txt")):
        found = sorted(p.parent.name for p in root.glob("*/list.txt"))
        hint = f"; there is no subset {subset!r} here (subsets with a list.txt: {', '.join(found)})"
    elif (root / "images").is_dir() and any((root / "gt").glob("*/*.xml")):
        hint = ("; images/ and gt/<synset>/*.xml look like an ImageNet DET still-image set, which "
                "data.still_images.open_imagenet_det reads")
    raise DataError(f"{root}: not a tracking dataset{hint}. Expected {SEQUENCE_LAYOUTS}")


# --------------------------------------------------------------------------------------------------------------------
# Text files


def _read_text(path: Path) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except FileNotFoundError:
        raise DataError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read ({getattr(err, 'strerror', None) or err})") from None


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in _read_text(path).splitlines() if line.strip()]


def read_boxes(path: Path) -> np.ndarray:
    """An N×4 box file: comma, tab or space separated numbers, one box per line."""
    text = _read_text(path)
    try:  # the common case, parsed in C; anything unusual goes through the line-by-line reader for its message
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # loadtxt warns on an empty file
            boxes = np.loadtxt(io.StringIO(text), delimiter="," if "," in text else None, ndmin=2,
                               dtype=np.float64)
        if boxes.shape[1] == 4 and len(boxes):
            return boxes
    except ValueError:
        pass
    return _boxes_line_by_line(path, text)


def _boxes_line_by_line(path: Path, text: str) -> np.ndarray:
    rows = []
    for number, line in enumerate((line.strip() for line in text.splitlines()), 1):
        if not line:
            continue
        try:
            values = [float(v) for v in _SPLIT_RE.split(line)]
        except ValueError:
            raise DataError(f"{path}: line {number}: expected 4 numbers x,y,w,h, found {line[:60]!r}") from None
        if len(values) != 4:
            raise DataError(f"{path}: line {number}: expected 4 numbers x,y,w,h, found {len(values)}")
        rows.append(values)
    if not rows:
        raise DataError(f"{path}: no boxes (empty file)")
    return np.asarray(rows, dtype=np.float64)


def _read_ints(path: Path, expected: int) -> np.ndarray:
    """One integer per frame, one per line (GOT-10k labels) or comma separated on one line (LaSOT flags)."""
    tokens = _read_text(path).replace(",", " ").split()
    try:
        array = np.array(tokens, dtype=np.int64)
    except ValueError:
        raise DataError(f"{path}: expected one integer per frame, found {next(t for t in tokens if not _is_int(t))!r}")
    if len(array) != expected:
        raise DataError(f"{path}: {len(array)} values, expected one per frame ({expected})")
    return array


def _is_int(token: str) -> bool:
    try:
        int(token)
        return True
    except ValueError:
        return False


def _frame_keys(directory: Path, prefix: str) -> tuple[str, ...]:
    try:
        names = sorted(n for n in os.listdir(directory)
                       if not n.startswith(".") and n.lower().endswith(IMAGE_EXTENSIONS))
    except OSError as err:
        raise DataError(f"{directory}: cannot list frames ({err.strerror or err})") from None
    if not names:
        raise DataError(f"{directory}: no frames (image files such as 00000001.jpg)")
    return tuple(f"{prefix}/{n}" for n in names)


def _check_box_count(path: Path, boxes: np.ndarray, frames: int) -> None:
    if len(boxes) != frames:
        raise DataError(f"{path}: {len(boxes)} boxes for {frames} frames; expected one box per frame")


# --------------------------------------------------------------------------------------------------------------------
# GOT-10k


def read_meta_info(path: Path) -> dict:
    """meta_info.ini: '[METAINFO]' then 'key: value' lines (read as the toolkit reads them: split at the first ': ');
    {} when the file does not exist."""
    try:
        lines = _read_lines(path)
    except DataError:
        if not path.exists():
            return {}
        raise
    meta = {}
    for line in lines[1:]:
        key, separator, value = line.partition(":")
        if not separator:
            raise DataError(f"{path}: expected 'key: value' lines after [METAINFO], found {line[:60]!r}")
        meta[key.strip()] = value.strip()
    return meta


def _resolution(meta: dict, path: Path) -> Optional[tuple[int, int]]:
    text = meta.get("resolution")
    if text is None:
        return None
    match = re.fullmatch(r"\(\s*(\d+)\s*,\s*(\d+)\s*\)", text)
    if not match:
        raise DataError(f"{path}: resolution: expected '(width, height)', found {text!r}")
    return int(match.group(1)), int(match.group(2))


def open_got10k(root: str | os.PathLike, subset: Optional[str] = None) -> SequenceSet:
    """A GOT-10k subset: `root` is the dataset root (with `subset`) or the subset folder itself."""
    root = Path(root)
    split_dir = root / subset if subset is not None and (root / subset / "list.txt").is_file() else root
    names = _read_lines(split_dir / "list.txt")
    if not names:
        raise DataError(f"{split_dir / 'list.txt'}: lists no sequences")
    prefix = "" if split_dir == root else f"{subset}/"
    sequences = tuple(_got10k_sequence(split_dir / name, prefix + name) for name in names)
    split = subset if split_dir != root else root.name
    return SequenceSet(sequences, FolderReader(root), "got10k",
                       f"GOT-10k {split} at {split_dir}: {len(sequences)} sequences, "
                       f"{sum(len(s) for s in sequences)} frames")


def _got10k_sequence(directory: Path, key_prefix: str) -> Sequence:
    if not directory.is_dir():
        raise DataError(f"{directory}: sequence folder listed in {directory.parent / 'list.txt'} does not exist")
    frames = _frame_keys(directory, key_prefix)
    boxes = read_boxes(directory / "groundtruth.txt")
    meta = read_meta_info(directory / "meta_info.ini")
    resolution = _resolution(meta, directory / "meta_info.ini")
    if len(boxes) == 1 and len(frames) > 1 and not (directory / "cover.label").exists():
        # the test subset: only the first box is given, and no labels
        return Sequence(directory.name, frames, boxes, None, None, resolution, meta, str(directory))
    _check_box_count(directory / "groundtruth.txt", boxes, len(frames))
    absent, cover = (_read_ints(directory / name, len(frames)) for name in GOT10K_LABELS)
    visible = (cover > 0) & (absent == 0)
    return Sequence(directory.name, frames, boxes, visible, cover, resolution, meta, str(directory))


# --------------------------------------------------------------------------------------------------------------------
# LaSOT / OTB


def _lasot_sequence_dirs(root: Path, limit: Optional[int] = None) -> list[Path]:
    """Folders `<seq>` (OTB) or `<class>/<seq>` (LaSOT) under `root` that hold an img/ folder, sorted."""
    found: list[Path] = []
    for first in _subfolders(root):
        if (first / "img").is_dir():
            found.append(first)
        else:
            found.extend(p for p in _subfolders(first) if (p / "img").is_dir())
        if limit is not None and len(found) >= limit:
            break
    return found


def _subfolders(directory: Path) -> list[Path]:
    # scandir's entries know their type without a stat per entry: a class folder of a million images stays cheap
    with os.scandir(directory) as entries:
        return sorted(Path(e.path) for e in entries if not e.name.startswith(".") and e.is_dir())


def open_lasot(root: str | os.PathLike, subset: Optional[str] = None) -> SequenceSet:
    root = Path(root)
    directories = _lasot_sequence_dirs(root)
    if subset is not None and subset in _LASOT_SUBSET_FILES and (root / _LASOT_SUBSET_FILES[subset]).is_file():
        wanted = set(_read_lines(root / _LASOT_SUBSET_FILES[subset]))
        directories = [d for d in directories if d.name in wanted]
        missing = sorted(wanted - {d.name for d in directories})
        if missing:
            raise DataError(f"{root / _LASOT_SUBSET_FILES[subset]}: lists {len(missing)} sequence(s) with no "
                            f"<class>/<seq>/img/ folder, e.g. {', '.join(missing[:3])}")
    if not directories:
        raise DataError(f"{root}: no sequences (<class>/<seq>/img/ or <seq>/img/ folders)")
    sequences = tuple(_lasot_sequence(root, d) for d in directories)
    return SequenceSet(sequences, FolderReader(root), "lasot",
                       f"LaSOT/OTB-style set at {root}: {len(sequences)} sequences, "
                       f"{sum(len(s) for s in sequences)} frames")


def _lasot_sequence(root: Path, directory: Path) -> Sequence:
    frames = _frame_keys(directory / "img", f"{directory.relative_to(root).as_posix()}/img")
    gt = directory / "groundtruth.txt"
    if not gt.exists() and (directory / "groundtruth_rect.txt").exists():
        gt = directory / "groundtruth_rect.txt"
    boxes = read_boxes(gt)
    _check_box_count(gt, boxes, len(frames))
    visible = np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
    for name in ("full_occlusion.txt", "out_of_view.txt"):
        if (directory / name).exists():
            visible &= _read_ints(directory / name, len(frames)) == 0
    meta = {"class": directory.parent.name} if directory.parent != root else {}
    return Sequence(directory.name, frames, boxes, visible, None, None, meta, str(directory))


# --------------------------------------------------------------------------------------------------------------------
# ALOV300++

ALOV_CORNER_ORIGIN = 0.5
"""Subtracted from the .ann corner coordinates: MATLAB spatial coordinates → ours (see the module docstring)."""
_ALOV_LINE = "'frame ax ay bx by cx cy dx dy' (a frame number and the x, y of 4 corners)"


def _is_alov_root(root: Path) -> bool:
    """images/ and gt/ folders, and a .ann file in some gt/<category>/ (stops at the first one found)."""
    gt = root / "gt"
    if not ((root / "images").is_dir() and gt.is_dir()):
        return False
    for category in _subfolders(gt):
        with os.scandir(category) as entries:  # the first .ann or .xml decides (ImageNet DET's gt/ holds .xml files)
            kind = next((e.name[-4:] for e in entries if e.name.endswith((".ann", ".xml")) and e.is_file()), None)
        if kind is not None:
            return kind == ".ann"
    return False


def _alov_videos(root: Path) -> list[tuple[str, str]]:
    """(category, video) of every video, sorted; DataError for a video folder without its .ann or the reverse."""
    images, gt = root / "images", root / "gt"
    categories = sorted({p.name for p in _subfolders(images)} | {p.name for p in _subfolders(gt)})
    videos: list[tuple[str, str]] = []
    problems: list[str] = []
    for category in categories:
        folders = {p.name for p in _subfolders(images / category)} if (images / category).is_dir() else set()
        annotations = set()
        if (gt / category).is_dir():
            with os.scandir(gt / category) as entries:
                annotations = {e.name[:-4] for e in entries if e.name.endswith(".ann") and not e.name.startswith(".")}
        for video in sorted(folders - annotations):
            problems.append(f"{images / category / video}: video folder without its annotation file; expected "
                            f"{gt / category / (video + '.ann')}")
        for video in sorted(annotations - folders):
            problems.append(f"{gt / category / (video + '.ann')}: annotation file without its video; expected the "
                            f"frames in {images / category / video}/")
        videos.extend((category, video) for video in sorted(folders & annotations))
    if problems:
        more = f" (and {len(problems) - 1} more such problems)" if len(problems) > 1 else ""
        raise DataError(problems[0] + more)
    if not videos:
        raise DataError(f"{root}: no ALOV videos (images/<category>/<video>/ folders with gt/<category>/<video>.ann)")
    return videos


def open_alov(root: str | os.PathLike, subset: Optional[str] = None, *,
              corner_origin: float = ALOV_CORNER_ORIGIN) -> SequenceSet:
    """ALOV300++ at `root` (``images/<category>/<video>/`` and ``gt/<category>/<video>.ann``): one sequence per video,
    named after its folder, with every image file as a frame, NaN boxes and ``visible`` False on the frames the .ann
    does not annotate, and meta ``{'class': category}``. `subset` is ignored (ALOV has no official split).
    `corner_origin` is subtracted from the corner coordinates (0.5: MATLAB spatial coordinates, see the module
    docstring; 1.0: GOTURN's reference)."""
    del subset  # accepted for open_sequences' sake; there is no split to select
    root = Path(root)
    sequences = []
    for category, video in _alov_videos(root):
        directory = root / "images" / category / video
        frames = _frame_keys(directory, f"images/{category}/{video}")
        boxes, visible = read_alov_annotations(root / "gt" / category / f"{video}.ann", len(frames), directory,
                                               corner_origin)
        sequences.append(Sequence(video, frames, boxes, visible, None, None, {"class": category}, str(directory)))
    annotated = sum(int(np.isfinite(s.boxes[:, 0]).sum()) for s in sequences)
    categories = len({s.meta["class"] for s in sequences})
    return SequenceSet(tuple(sequences), FolderReader(root), "alov",
                       f"ALOV300++ set at {root}: {len(sequences)} videos in {categories} categories, "
                       f"{sum(len(s) for s in sequences)} frames ({annotated} annotated)")


def read_alov_annotations(path: Path, num_frames: int, video: Path | str = "the video",
                          corner_origin: float = ALOV_CORNER_ORIGIN) -> tuple[np.ndarray, np.ndarray]:
    """(boxes (num_frames, 4), visible (num_frames,)) from one .ann file: the annotated frames get the bounding box
    of their corners (module docstring), the others NaN; visible marks the annotated frames with w, h > 0."""
    boxes = np.full((num_frames, 4), np.nan)
    annotated = np.zeros(num_frames, dtype=bool)
    first_line: dict[int, int] = {}
    for number, line in enumerate(_read_text(path).splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 9:
            raise DataError(f"{path}: line {number}: expected 9 numbers {_ALOV_LINE}, found {len(tokens)}: "
                            f"{line.strip()[:80]!r}")
        try:
            values = [float(t) for t in tokens]
        except ValueError:
            raise DataError(f"{path}: line {number}: expected 9 numbers {_ALOV_LINE}, found "
                            f"{line.strip()[:80]!r}") from None
        frame = values[0]
        if not (math.isfinite(frame) and frame == int(frame) and frame >= 1):
            raise DataError(f"{path}: line {number}: expected a frame number 1, 2, …, found {tokens[0]!r}")
        frame = int(frame)
        if frame > num_frames:
            raise DataError(f"{path}: line {number}: frame {frame}, but {video} has {num_frames} frames")
        if frame in first_line:
            raise DataError(f"{path}: line {number}: frame {frame} is annotated again (first on line "
                            f"{first_line[frame]})")
        first_line[frame] = number
        if not all(math.isfinite(v) for v in values[1:]):
            raise DataError(f"{path}: line {number}: expected finite corner coordinates, found {line.strip()[:80]!r}")
        xs, ys = values[1::2], values[2::2]
        boxes[frame - 1] = (min(xs) - corner_origin, min(ys) - corner_origin, max(xs) - min(xs), max(ys) - min(ys))
        annotated[frame - 1] = True
    if not first_line:
        raise DataError(f"{path}: no annotations (empty file); expected lines {_ALOV_LINE}")
    visible = annotated & np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
    return boxes, visible
