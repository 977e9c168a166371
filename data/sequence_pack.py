"""LMDB packs of tracking sequences, made by ``python -m data.pack SRC DST [--subset S]``.

A tracking set is millions of small JPEGs; one LMDB file reads much faster than that many files. Every frame is stored
under its reader key with its original encoded bytes (never re-encoded), and the sequences (frame keys, boxes, flags,
meta) go into the pack's JSON manifest, so an opened pack is the same :class:`~data.sequences.SequenceSet` as the
folders it came from, only with an :class:`~data.readers.LmdbReader`. The writing (temporary directory, rename, map
size, refusal of an existing destination) is :mod:`data.pack`'s, shared with image-set packs.

The DAVIS and YouTube-VOS annotation PNGs are stored the same way under their reader keys (each frame and PNG once,
however many objects share it), with each sequence's ``masks`` keys and ``object_id`` in the manifest; VOT sequences
keep their ``polygons`` there. Entries of the other layouts have none of these keys.

Boxes are written as JSON floats, which Python writes with ``repr`` (the shortest text that reads back to the same
double), so they read back bit-identical.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from data.formats import PACK_FORMAT, PACK_VERSION, TRACKING_TASK, read_pack_manifest
from data.pack import check_destination, measure, write_pack
from data.readers import LmdbReader
from data.records import DataError
from data.sequences import Sequence, SequenceSet, open_sequences

_LAYOUTS = ("got10k", "lasot", "alov", "davis", "youtube_vos", "vot")


def pack_sequences(src: str | os.PathLike, dst: str | os.PathLike, subset: Optional[str] = None) -> dict:
    """Pack the sequences at `src` (any layout :func:`~data.sequences.open_sequences` reads, with `subset`) into the
    LMDB directory `dst`; returns a summary dict (dst, source, layout, subset, sequences, frames, bytes, map_size,
    description)."""
    dst = check_destination(dst)
    sequence_set = open_sequences(src, subset)
    reader = sequence_set.reader
    # frames, then annotation PNGs, each once (the objects of one video share its frames and PNGs)
    frames = list(dict.fromkeys(key for sequence in sequence_set.sequences for key in sequence.frames))
    annotations = list(dict.fromkeys(key for sequence in sequence_set.sequences for key in sequence.masks or ()
                                     if key is not None))
    keys = frames + annotations
    sizes = measure(reader, keys)
    manifest = {
        "format": PACK_FORMAT,
        "version": PACK_VERSION,
        "task": TRACKING_TASK,
        "layout": sequence_set.layout,
        "subset": subset,
        "source": str(Path(src).resolve()),
        "description": sequence_set.description,
        "counts": {"sequences": len(sequence_set), "frames": len(frames), "bytes": int(sum(sizes)),
                   **({"annotations": len(annotations)} if annotations else {})},
        "sequences": [_entry(sequence) for sequence in sequence_set.sequences],
    }
    map_size = write_pack(dst, ((key, reader.read(key)) for key in keys), sizes, manifest)
    return {
        "dst": str(dst),
        "source": manifest["source"],
        "layout": sequence_set.layout,
        "subset": subset,
        "sequences": len(sequence_set),
        "frames": len(frames),
        "bytes": int(sum(sizes)),
        "map_size": map_size,
        "description": sequence_set.description,
    }


def _entry(sequence: Sequence) -> dict:
    """A sequence as JSON: arrays as lists of Python numbers (floats keep every bit, see the module docstring)."""
    return {
        "name": sequence.name,
        "frames": list(sequence.frames),
        "boxes": sequence.boxes.tolist(),
        "visible": None if sequence.visible is None else sequence.visible.astype(int).tolist(),
        "cover": None if sequence.cover is None else sequence.cover.tolist(),
        "resolution": None if sequence.resolution is None else list(sequence.resolution),
        "meta": sequence.meta,
        "where": sequence.where,
        # written only where a layout has them, so that packs of the other layouts keep their manifests
        **({} if sequence.masks is None else {"masks": list(sequence.masks), "object_id": sequence.object_id}),
        **({} if sequence.polygons is None else {"polygons": sequence.polygons.tolist()}),
    }


def open_sequence_pack(path: str | os.PathLike, subset: Optional[str] = None) -> SequenceSet:
    """The sequences in the pack at `path`. A `subset` must be the one the pack was made from; a pack recorded without
    one (packed from a GOT-10k subset folder or an OTB-style root) takes any, as the folder it came from does."""
    path = Path(path)
    reader = LmdbReader(path)
    manifest = read_pack_manifest(reader)
    task = manifest.get("task")
    if task != TRACKING_TASK:
        raise DataError(f"{path}: an LMDB pack of {task} training images, not of tracking sequences; pack the "
                        f"sequences with `python -m data.pack SRC DST` (SRC: a GOT-10k subset or a LaSOT/OTB root)")
    recorded = manifest.get("subset")
    if subset is not None and recorded is not None and subset != recorded:
        raise DataError(f"{path}: pack holds subset {recorded!r} of {manifest.get('source', '?')}, but subset "
                        f"{subset!r} was asked for; pack that subset with `python -m data.pack SRC DST --subset "
                        f"{subset}`")
    try:
        layout = manifest["layout"]
        _require(layout in _LAYOUTS, f"layout {layout!r} is not one of {', '.join(_LAYOUTS)}")
        sequences = tuple(_sequence(entry, path) for entry in manifest["sequences"])
        _require(bool(sequences), "it lists no sequences")
        description = f"LMDB pack {path}, packed from {manifest['description']}"
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"{path}: pack manifest is incomplete or malformed ({type(err).__name__}: {err})") from None
    return SequenceSet(sequences, reader, layout, description)


def _require(condition: bool, problem: str) -> None:
    """A ValueError (reported by open_sequence_pack as a malformed manifest) unless `condition` holds."""
    if not condition:
        raise ValueError(problem)


def _sequence(entry: dict, path: Path) -> Sequence:
    """One manifest entry back as a Sequence, its arrays checked against its frame count."""
    name = str(entry["name"])
    frames = tuple(str(key) for key in entry["frames"])
    boxes = np.asarray(entry["boxes"], dtype=np.float64)
    visible = None if entry["visible"] is None else np.asarray(entry["visible"], dtype=np.int64).astype(bool)
    cover = None if entry["cover"] is None else np.asarray(entry["cover"], dtype=np.int64)
    resolution = None if entry["resolution"] is None else tuple(int(v) for v in entry["resolution"])
    meta = entry["meta"]
    _require(bool(frames), f"sequence {name!r} has no frames")
    _require(boxes.ndim == 2 and boxes.shape[1] == 4, f"sequence {name!r}: boxes are not rows of x, y, w, h")
    _require(len(boxes) == len(frames) or (len(boxes) == 1 and visible is None),
             f"sequence {name!r}: {len(boxes)} boxes for {len(frames)} frames")
    for label, flags in (("visible", visible), ("cover", cover)):
        _require(flags is None or flags.shape == (len(frames),), f"sequence {name!r}: {label} is not one per frame")
    _require(resolution is None or len(resolution) == 2, f"sequence {name!r}: resolution is not (width, height)")
    _require(isinstance(meta, dict), f"sequence {name!r}: meta is not a mapping")
    masks = entry.get("masks")
    if masks is not None:
        masks = tuple(None if key is None else str(key) for key in masks)
        _require(len(masks) == len(frames), f"sequence {name!r}: masks are not one per frame")
        _require(isinstance(entry.get("object_id"), int), f"sequence {name!r}: masks without an integer object_id")
    polygons = None if entry.get("polygons") is None else np.asarray(entry["polygons"], dtype=np.float64)
    _require(polygons is None or polygons.shape == (len(frames), 8),
             f"sequence {name!r}: polygons are not rows of 8 numbers, one per frame")
    return Sequence(name, frames, boxes, visible, cover, resolution, meta,  # type: ignore[arg-type]
                    f"{path}:{name} (packed from {entry['where']})", masks=masks,
                    object_id=entry.get("object_id") if masks is not None else None, polygons=polygons)
