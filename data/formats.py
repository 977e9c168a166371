"""Dataset layouts on disk → :class:`~data.records.ImageSet`.

Training (``open_train_set``):

* re-ID: a Market-1501 root (``bounding_box_train/`` is used), a flat directory of Market-named (or MSMT17-named)
  images, one folder per identity (``pytorch/train_all`` style), or an LMDB pack made by ``python -m data.pack``.
  Junk (pid -1) and, under Market naming, distractors (pid 0000) are left out. Labels are contiguous in sorted pid
  order.
* classification: ``root/<class>/**`` or ``root/train/<class>/**``; labels in sorted folder-name order.

Evaluation: ``open_reid_eval`` (Market root with ``query/`` + ``bounding_box_test/``, or ``query/`` + ``gallery/`` flat
or with one folder per pid) and ``open_classification_eval`` (``root/<class>`` or ``root/val/<class>``).

Every problem is a :class:`~data.records.DataError` that names the path, what was expected and what was found.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional, Sequence

from data.imaging import IMAGE_EXTENSIONS
from data.readers import MANIFEST_KEY, FolderReader, LmdbReader
from data.records import DataError, ImageRecord, ImageSet

PACK_FORMAT = "reid-service-lmdb-pack"
PACK_VERSION = 1
TRACKING_TASK = "tracking"
"""The manifest task of a pack of tracking sequences (see :mod:`data.sequence_pack`)."""

_EXTENSIONS_TEXT = " ".join(IMAGE_EXTENSIONS) + " (case-insensitive)"
_REID_TRAIN_LAYOUTS = ("a Market-1501 root (containing bounding_box_train/), a flat directory of Market-named images "
                       "(0002_c1s1_000451_03.jpg), one folder per identity (pytorch/train_all style), or an LMDB pack "
                       "made by `python -m data.pack`")
REID_EVAL_LAYOUTS = ("a Market-1501 root (containing query/ and bounding_box_test/), or a directory containing query/ "
                      "and gallery/ (each either flat, or one folder per identity)")
_CLASS_LAYOUTS = "one folder per class (root/<class>/… or root/train/<class>/…)"
CLASS_EVAL_LAYOUT = "one folder per class (root/<class>/… or root/val/<class>/…)"

# --------------------------------------------------------------------------------------------------------------------
# File names

_MARKET_RE = re.compile(r"^(-1|\d+)_c(\d+)(?:s\d+)?_")
_MSMT_RE = re.compile(r"^(\d+)_(\d+)_(\d+)_")
_PID_DIR_RE = re.compile(r"^(-1|\d+)$")


def _market_match(name: str) -> Optional[tuple[int, int]]:
    m = _MARKET_RE.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _msmt_match(name: str) -> Optional[tuple[int, int]]:
    m = _MSMT_RE.match(name)
    return (int(m.group(1)), int(m.group(3))) if m else None


def parse_market_name(filename: str | os.PathLike) -> tuple[int, int]:
    """(pid, camid) of a Market-1501 style name ``PPPP_cXsY_FFFFFF_NN.jpg`` (``-1_cX…`` for junk, ``0000_…`` for
    distractors; ``PPPP_cX_…`` DukeMTMC-style names parse too)."""
    parsed = _market_match(os.path.basename(os.fspath(filename)))
    if parsed is None:
        raise DataError(f"{os.fspath(filename)}: not a Market-1501 image name; expected PPPP_cXsY_FFFFFF_NN.jpg "
                        f"(e.g. 0002_c1s1_000451_03.jpg, or -1_c1s1_000401_03.jpg for junk)")
    return parsed


def parse_msmt_name(filename: str | os.PathLike) -> tuple[int, int]:
    """(pid, camid) of an MSMT17_V1 style name ``PPPP_III_CC_…`` (pid_index_camera_…)."""
    parsed = _msmt_match(os.path.basename(os.fspath(filename)))
    if parsed is None:
        raise DataError(f"{os.fspath(filename)}: not an MSMT17 image name; expected PPPP_III_CC_… "
                        f"(pid_index_camera_…, e.g. 0000_000_01_0303morning_0015_0.jpg)")
    return parsed


@dataclass(frozen=True)
class _Naming:
    name: str
    example: str
    parse: Callable[[str], tuple[int, int]]
    match: Callable[[str], Optional[tuple[int, int]]]
    zero_is_distractor: bool


MARKET_NAMING = _Naming("Market-1501", "0002_c1s1_000451_03.jpg", parse_market_name, _market_match, True)
MSMT_NAMING = _Naming("MSMT17", "0000_000_01_0303morning_0015_0.jpg", parse_msmt_name, _msmt_match, False)


def _naming_of(directory: Path, relpaths: Sequence[str]) -> _Naming:
    """The naming convention of a set of files, decided by the first file that follows one; DataError naming the
    first file if none does."""
    for rel in relpaths:
        for naming in (MARKET_NAMING, MSMT_NAMING):
            if naming.match(os.path.basename(rel)) is not None:
                return naming
    raise DataError(f"{directory / relpaths[0]}: file name does not give identity and camera; expected a Market-1501 "
                    f"name like {MARKET_NAMING.example} (-1_… junk, 0000_… distractor) or an MSMT17 name like "
                    f"{MSMT_NAMING.example}")


def _parse_all(directory: Path, relpaths: Sequence[str], naming: _Naming) -> list[tuple[int, int]]:
    out = []
    for rel in relpaths:
        parsed = naming.match(os.path.basename(rel))
        if parsed is None:
            raise DataError(f"{directory / rel}: file name does not parse as a {naming.name} name like "
                            f"{naming.example} (as the other files in {directory} do)")
        out.append(parsed)
    return out


def _camid_if_named(name: str) -> int:
    parsed = _market_match(name) or _msmt_match(name)
    return parsed[1] if parsed else -1


# --------------------------------------------------------------------------------------------------------------------
# Directory scanning


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _scan(directory: Path, recursive: bool) -> tuple[list[str], list[str]]:
    """Image files under `directory` as sorted '/'-separated relative paths, and the names of (some) other files.
    Hidden files and folders (starting with '.') are skipped."""
    images: list[str] = []
    others: list[str] = []
    if recursive:
        for current, dirs, files in os.walk(directory):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            rel_dir = Path(current).relative_to(directory).as_posix()
            prefix = "" if rel_dir == "." else rel_dir + "/"
            for name in files:
                (images if _is_image(name) else others).append(prefix + name)
    else:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_file():
                    (images if _is_image(entry.name) else others).append(entry.name)
    images.sort()
    return images, others


def _subdirs(directory: Path) -> list[Path]:
    with os.scandir(directory) as entries:
        return sorted((Path(e.path) for e in entries if e.is_dir() and not e.name.startswith(".")),
                      key=lambda p: p.name)


def _no_images(where: str, others: Sequence[str], expected: str) -> DataError:
    found = ""
    if others:
        sample = ", ".join(sorted(others)[:3])
        found = f"; found {len(others)} other file(s), e.g. {sample}"
    return DataError(f"{where}: no images found (image files end in {_EXTENSIONS_TEXT}){found}. Expected {expected}.")


def _key(prefix: str, rel: str) -> str:
    return f"{prefix}/{rel}" if prefix else rel


def _check_path(path: str | os.PathLike, what: str) -> Path:
    root = Path(path)
    if not root.exists():
        raise DataError(f"{root}: {what} not found (no such file or directory)")
    return root


def _is_pack(path: Path) -> bool:
    return (path.is_dir() and (path / "data.mdb").is_file()) or (path.is_file() and path.name == "data.mdb")


def _describe_contents(directory: Path) -> str:
    try:
        names = sorted(n for n in os.listdir(directory) if not n.startswith("."))
    except OSError:
        return "an unreadable directory"
    if not names:
        return "an empty directory"
    shown = [n + ("/" if (directory / n).is_dir() else "") for n in names[:8]]
    more = f" and {len(names) - 8} more" if len(names) > 8 else ""
    return "a directory containing " + ", ".join(shown) + more


# --------------------------------------------------------------------------------------------------------------------
# Training sets


def open_train_set(path: str | os.PathLike, task: Literal["reid", "classification"]) -> ImageSet:
    """The training images at `path` (any supported layout), with contiguous labels."""
    if task not in ("reid", "classification"):
        raise ValueError(f"task must be 'reid' or 'classification', not {task!r}")
    root = _check_path(path, "training data")
    if _is_pack(root):
        return _open_pack(root if root.is_dir() else root.parent, task)
    expected = _REID_TRAIN_LAYOUTS if task == "reid" else _CLASS_LAYOUTS + ", or an LMDB pack made by `python -m data.pack`"
    if not root.is_dir():
        raise DataError(f"{root}: not a known training-data layout; expected {expected}; found a regular file")
    if task == "reid":
        return _reid_train(root)
    return _classification_train(root)


def _reid_train(root: Path) -> ImageSet:
    if (root / "bounding_box_train").is_dir():
        return _flat_reid_train(root, "bounding_box_train", "Market-1501 root")
    if (root / "query").is_dir() and ((root / "gallery").is_dir() or (root / "bounding_box_test").is_dir()):
        gallery = "gallery/" if (root / "gallery").is_dir() else "bounding_box_test/"
        raise DataError(f"{root}: not a known training-data layout: it holds query/ and {gallery} (an evaluation set) "
                        f"but no bounding_box_train/; expected {_REID_TRAIN_LAYOUTS}")
    top_images, others = _scan(root, recursive=False)
    id_dirs = [(d, imgs) for d in _subdirs(root) if (imgs := _scan(d, recursive=True)[0])]
    if top_images and id_dirs:
        raise DataError(f"{root}: not a known training-data layout: it mixes {len(top_images)} image file(s) "
                        f"(e.g. {top_images[0]}) with {len(id_dirs)} folder(s) holding images (e.g. "
                        f"{id_dirs[0][0].name}/); expected {_REID_TRAIN_LAYOUTS}")
    if top_images:
        return _flat_reid_train(root, "", "flat directory")
    if id_dirs:
        return _identity_folders(root, id_dirs)
    n_dirs = len(_subdirs(root))
    where = f"{root} (and its {n_dirs} sub-folder(s), recursively)" if n_dirs else str(root)
    raise _no_images(where, others, _REID_TRAIN_LAYOUTS)


def _contiguous(pids: Sequence[int]) -> dict[int, int]:
    return {pid: label for label, pid in enumerate(sorted(set(pids)))}


def _flat_reid_train(root: Path, sub: str, kind: str) -> ImageSet:
    directory = root / sub if sub else root
    names, others = _scan(directory, recursive=False)
    if not names:
        raise _no_images(str(directory), others, "Market-named images such as 0002_c1s1_000451_03.jpg")
    naming = _naming_of(directory, names)
    parsed = _parse_all(directory, names, naming)
    kept, junk, distractors, class_name = [], 0, 0, {}
    for name, (pid, camid) in zip(names, parsed):
        if pid < 0:
            junk += 1
        elif pid == 0 and naming.zero_is_distractor:
            distractors += 1
        else:
            kept.append((_key(sub, name), pid, camid))
            class_name.setdefault(pid, name.split("_", 1)[0])
    if not kept:
        raise DataError(f"{directory}: all {len(names)} images are junk (-1) or distractors (0000); no identity to "
                        f"train on")
    labels = _contiguous([pid for _, pid, _ in kept])
    records = tuple(ImageRecord(key, pid, camid, labels[pid]) for key, pid, camid in kept)
    names_by_label = tuple(class_name[pid] for pid in sorted(labels))
    excluded = f"; left out {junk} junk (-1) and {distractors} distractor (0000) images" if junk or distractors else ""
    desc = (f"{kind} {directory} ({naming.name} names): {len(records)} images, {len(labels)} identities{excluded}")
    return ImageSet(records, names_by_label, FolderReader(root), desc)


def _identity_folders(root: Path, id_dirs: list[tuple[Path, list[str]]]) -> ImageSet:
    numeric = all(_PID_DIR_RE.match(d.name) for d, _ in id_dirs)
    folder_pid: dict[str, int] = {}
    if numeric:
        seen: dict[int, str] = {}
        for d, _ in id_dirs:
            pid = int(d.name)
            if pid in seen:
                raise DataError(f"{root}: identity folders {seen[pid]}/ and {d.name}/ name the same identity {pid}")
            seen[pid] = d.name
            folder_pid[d.name] = pid
    else:
        folder_pid = {d.name: i for i, (d, _) in enumerate(id_dirs)}
    kept, junk, distractors = [], 0, 0
    for d, images in id_dirs:
        pid = folder_pid[d.name]
        market = _market_match(os.path.basename(images[0])) is not None
        if numeric and pid < 0:
            junk += len(images)
            continue
        if numeric and pid == 0 and market:
            distractors += len(images)
            continue
        for rel in images:
            kept.append((f"{d.name}/{rel}", pid, _camid_if_named(os.path.basename(rel)), d.name))
    if not kept:
        raise DataError(f"{root}: all identity folders are junk (-1) or distractors (0000); no identity to train on")
    labels = _contiguous([pid for _, pid, _, _ in kept])
    class_name = {pid: name for _, pid, _, name in kept}
    kept.sort(key=lambda item: item[0])
    records = tuple(ImageRecord(key, pid, camid, labels[pid]) for key, pid, camid, _ in kept)
    excluded = f"; left out {junk} junk (-1) and {distractors} distractor (0000) images" if junk or distractors else ""
    desc = f"identity folders {root}: {len(records)} images, {len(labels)} identities{excluded}"
    return ImageSet(records, tuple(class_name[pid] for pid in sorted(labels)), FolderReader(root), desc)


def _classification_train(root: Path) -> ImageSet:
    base, prefix = (root / "train", "train") if (root / "train").is_dir() else (root, "")
    class_dirs = _subdirs(base)
    expected = _CLASS_LAYOUTS
    if not class_dirs:
        top_images, others = _scan(base, recursive=False)
        if top_images:
            raise DataError(f"{base}: not a known classification layout: found {len(top_images)} image(s) directly in "
                            f"it (e.g. {top_images[0]}) and no class folders; expected {expected}")
        raise _no_images(str(base), others, expected)
    entries = []
    empty = 0
    for label, d in enumerate(class_dirs):
        images, _ = _scan(d, recursive=True)
        empty += not images
        for rel in images:
            entries.append(ImageRecord(_key(prefix, f"{d.name}/{rel}"), label, -1, label))
    if not entries:
        raise _no_images(f"{base} (in its {len(class_dirs)} class folder(s), recursively)", [], expected)
    entries.sort(key=lambda r: r.key)
    note = f" ({empty} empty class folder(s))" if empty else ""
    desc = f"class folders {base}: {len(entries)} images, {len(class_dirs)} classes{note}"
    return ImageSet(tuple(entries), tuple(d.name for d in class_dirs), FolderReader(root), desc)


# --------------------------------------------------------------------------------------------------------------------
# LMDB packs


def read_pack_manifest(reader: LmdbReader) -> dict:
    raw = reader.get(MANIFEST_KEY)
    if raw is None:
        raise DataError(f"{reader.path}: an LMDB database, but not a pack made by `python -m data.pack` (it has no "
                        f"{MANIFEST_KEY.decode()} entry)")
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{reader.path}: pack manifest is not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != PACK_FORMAT:
        raise DataError(f"{reader.path}: pack manifest has format {manifest.get('format') if isinstance(manifest, dict) else None!r}, "
                        f"expected {PACK_FORMAT!r}")
    if manifest.get("version") != PACK_VERSION:
        raise DataError(f"{reader.path}: pack format version {manifest.get('version')!r} is not supported (this tool "
                        f"reads version {PACK_VERSION}); repack the dataset with `python -m data.pack`")
    return manifest


def _open_pack(path: Path, task: str) -> ImageSet:
    reader = LmdbReader(path)
    manifest = read_pack_manifest(reader)
    if manifest.get("task") == TRACKING_TASK:
        raise DataError(f"{path}: an LMDB pack of tracking sequences ({manifest.get('description', '?')}), not of "
                        f"{task} training images; pack the {task} image set with `python -m data.pack SRC DST "
                        f"--task {task}`")
    if manifest.get("task") != task:
        raise DataError(f"{path}: pack was made for task {manifest.get('task')!r}, but the task is {task!r}; repack "
                        f"with `python -m data.pack SRC DST --task {task}`")
    try:
        class_names = tuple(str(c) for c in manifest["class_names"])
        records = tuple(ImageRecord(str(r["key"]), int(r["pid"]), int(r["camid"]), int(r["label"]))
                        for r in manifest["records"])
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"{path}: pack manifest is incomplete or malformed ({type(err).__name__}: {err})") from None
    if not records:
        raise DataError(f"{path}: pack holds no images")
    bad = next((r for r in records if not 0 <= r.label < len(class_names)), None)
    if bad is not None:
        raise DataError(f"{path}: pack record {bad.key} has label {bad.label}, outside [0, {len(class_names)})")
    desc = (f"LMDB pack {path} (packed from {manifest.get('source', '?')}): {len(records)} images, "
            f"{len(class_names)} {'identities' if task == 'reid' else 'classes'}")
    return ImageSet(records, class_names, reader, desc)


# --------------------------------------------------------------------------------------------------------------------
# Evaluation sets


def check_eval_root(path: str | os.PathLike, key: str, expected: str, is_layout: Callable[[Path], bool]) -> None:
    """A cheap check, before any training, that `path` (named by params key `key`) holds evaluation data of the
    `expected` layout (`is_layout` tests a directory); the full reader runs at the first evaluation. An LMDB pack is
    training data only: the message says where it was packed from, which usually is the evaluation root."""
    root = Path(path)
    if not root.exists():
        raise DataError(f"{key}: {root} does not exist; expected {expected}")
    if _is_pack(root):
        source = None
        try:
            source = read_pack_manifest(LmdbReader(root)).get("source")
        except DataError:
            pass
        hint = (f" (this pack was made from {source}; if that folder holds the evaluation images, set "
                f"\"evaluation_params\": {{\"data_dir\": {json.dumps(str(source))}}})") if source else ""
        raise DataError(f"{key}: {root} is an LMDB pack of training images, which holds no evaluation split; set "
                        f"evaluation_params.data_dir to {expected}{hint}")
    if not root.is_dir() or not is_layout(root):
        found = "a regular file" if not root.is_dir() else _describe_contents(root)
        raise DataError(f"{key}: {root} is not {expected}; found {found}")


def is_reid_eval_root(root: Path) -> bool:
    return (root / "query").is_dir() and ((root / "bounding_box_test").is_dir() or (root / "gallery").is_dir())


def open_reid_eval(path: str | os.PathLike) -> tuple[ImageSet, ImageSet]:
    """(query, gallery) with pid/camid from the names (junk and distractors kept) and label -1."""
    root = _check_path(path, "evaluation data")
    if not root.is_dir():
        raise DataError(f"{root}: not a known re-ID evaluation layout; expected {REID_EVAL_LAYOUTS}; found a "
                        f"regular file")
    if (root / "query").is_dir() and (root / "bounding_box_test").is_dir():
        gallery, kind = "bounding_box_test", "Market-1501 root"
    elif (root / "query").is_dir() and (root / "gallery").is_dir():
        gallery, kind = "gallery", "query/gallery root"
    else:
        raise DataError(f"{root}: not a known re-ID evaluation layout; expected {REID_EVAL_LAYOUTS}; found "
                        f"{_describe_contents(root)}")
    reader = FolderReader(root)
    return _eval_split(root, "query", kind, reader), _eval_split(root, gallery, kind, reader)


def _eval_split(root: Path, sub: str, kind: str, reader: FolderReader) -> ImageSet:
    directory = root / sub
    top_images, others = _scan(directory, recursive=False)
    id_dirs = [(d, imgs) for d in _subdirs(directory) if (imgs := _scan(d, recursive=True)[0])]
    if top_images and id_dirs:
        raise DataError(f"{directory}: mixes {len(top_images)} image file(s) (e.g. {top_images[0]}) with "
                        f"{len(id_dirs)} folder(s) holding images (e.g. {id_dirs[0][0].name}/); expected either a flat "
                        f"directory of named images or one folder per identity")
    if top_images:
        naming = _naming_of(directory, top_images)
        parsed = _parse_all(directory, top_images, naming)
        records = tuple(ImageRecord(f"{sub}/{n}", pid, camid, -1) for n, (pid, camid) in zip(top_images, parsed))
        layout = "flat"
    elif id_dirs:
        bad = next((d for d, _ in id_dirs if not _PID_DIR_RE.match(d.name)), None)
        if bad is not None:
            raise DataError(f"{bad}: identity folder name is not a pid; expected an integer such as 0002 or -1")
        all_rel = [f"{d.name}/{rel}" for d, imgs in id_dirs for rel in imgs]
        naming = _naming_of(directory, all_rel)
        parsed = _parse_all(directory, all_rel, naming)
        records = tuple(ImageRecord(f"{sub}/{rel}", int(rel.split("/", 1)[0]), camid, -1)
                        for rel, (_, camid) in zip(all_rel, parsed))
        layout = "one folder per identity"
    else:
        n_dirs = len(_subdirs(directory))
        where = f"{directory} (and its {n_dirs} sub-folder(s), recursively)" if n_dirs else str(directory)
        raise _no_images(where, others, REID_EVAL_LAYOUTS)
    records = tuple(sorted(records, key=lambda r: r.key))
    n_ids = len({r.pid for r in records})
    desc = f"{sub} of {kind} {root} ({layout}, {naming.name} names): {len(records)} images, {n_ids} identities"
    return ImageSet(records, (), reader, desc)


def open_classification_eval(path: str | os.PathLike, class_names: Sequence[str]) -> ImageSet:
    """Validation images in class folders, labelled by the position of their folder name in the TRAINING classes."""
    root = _check_path(path, "evaluation data")
    if not root.is_dir():
        raise DataError(f"{root}: not a known classification evaluation layout; expected {CLASS_EVAL_LAYOUT}; found "
                        "a regular file")
    base, prefix = (root / "val", "val") if (root / "val").is_dir() else (root, "")
    index = {name: i for i, name in enumerate(class_names)}
    class_dirs = _subdirs(base)
    expected = CLASS_EVAL_LAYOUT
    if not class_dirs:
        raise _no_images(str(base), _scan(base, recursive=False)[1], expected)
    records = []
    for d in class_dirs:
        images, _ = _scan(d, recursive=True)
        if not images:
            continue
        if d.name not in index:
            shown = ", ".join(list(class_names)[:5]) + (", …" if len(class_names) > 5 else "")
            raise DataError(f"{d}: class folder {d.name!r} is not one of the {len(class_names)} training classes "
                            f"({shown})")
        label = index[d.name]
        records.extend(ImageRecord(_key(prefix, f"{d.name}/{rel}"), label, -1, label) for rel in images)
    if not records:
        raise _no_images(f"{base} (in its {len(class_dirs)} class folder(s), recursively)", [], expected)
    records.sort(key=lambda r: r.key)
    n_cls = len({r.label for r in records})
    desc = f"class folders {base}: {len(records)} images in {n_cls} of the {len(class_names)} training classes"
    return ImageSet(tuple(records), tuple(class_names), FolderReader(root), desc)
