"""Pack a training set into one LMDB file: ``python -m data.pack SRC DST [--task reid|classification] [--subset S]``.

What SRC holds is detected: tracking sequences (a GOT-10k root with ``--subset`` or a GOT-10k subset folder, a
LaSOT/OTB-style root, or a pack of one; see :mod:`data.sequence_pack`) are packed as sequences; anything else is read
as a re-ID or classification image set (``--task``, default reid).

Each image is stored under its record key with its original encoded bytes (never re-encoded), next to a JSON manifest
(entry ``__manifest__.json``) holding the format version, task, records, class names, source path and counts. The
pack is written into ``DST.tmp-…`` and renamed to DST when complete, so a DST that exists is always a whole pack; an
existing DST is refused. :func:`write_pack` does that writing for both kinds of pack.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Iterable, Optional, Sequence

from data.formats import PACK_FORMAT, PACK_VERSION, TRACKING_TASK, open_train_set, read_pack_manifest
from data.readers import MANIFEST_KEY, FolderReader, ImageReader, LmdbReader
from data.records import DataError
from data.sequences import sequence_layout
from engine.errors import run_command

_PAGE = 4096
_MAX_KEY_BYTES = 511  # LMDB's default maximum key size
_COMMIT_EVERY = 1000


def _map_size(sizes: Sequence[int], manifest_bytes: int) -> int:
    """Room for every value (rounded up to whole pages, plus a page of b-tree overhead each) with a 2× margin."""
    pages = sum(math.ceil(s / _PAGE) + 1 for s in sizes) + math.ceil(manifest_bytes / _PAGE) + 1
    return 2 * pages * _PAGE + 64 * 1024 * 1024


def check_destination(dst: str | os.PathLike) -> Path:
    """`dst` as a Path, refused before any source is read if it exists or its directory does not."""
    dst = Path(dst)
    if dst.exists():
        raise DataError(f"{dst}: already exists; refusing to overwrite it (remove it or choose another destination)")
    if not dst.parent.is_dir():
        raise DataError(f"{dst.parent}: destination directory does not exist")
    return dst


def measure(reader: ImageReader, keys: Sequence[str]) -> list[int]:
    """The stored size of each key's bytes, which sizes the LMDB map; refuses a key too long for LMDB before anything
    is written. A folder is measured with stat() so that nothing is read twice."""
    for key in keys:
        if len(key.encode("utf-8")) > _MAX_KEY_BYTES:
            raise DataError(f"{reader.describe(key)}: path is longer than the {_MAX_KEY_BYTES} bytes an LMDB key can "
                            f"hold")
    if isinstance(reader, FolderReader):
        return [reader.size(key) for key in keys]
    return [len(reader.read(key)) for key in keys]


def write_pack(dst: Path, records: Iterable[tuple[str, bytes]], sizes: Sequence[int], manifest: dict) -> int:
    """Write `records` (key, encoded bytes) and `manifest` as the LMDB pack `dst`; returns the map size.

    `sizes` are the records' byte sizes (see :func:`measure`). Everything goes into ``DST.tmp-…``, committed every
    few records, and is renamed to `dst` only when complete, so a failure leaves nothing behind and a `dst` that
    appeared meanwhile is never overwritten. LMDB errors become DataError."""
    import lmdb

    manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode("utf-8")
    map_size = _map_size(sizes, len(manifest_bytes))
    tmp = dst.with_name(f"{dst.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    keep_tmp = False
    try:
        env = lmdb.open(str(tmp), map_size=map_size, subdir=True, readahead=False, meminit=False)
        try:
            txn = env.begin(write=True)
            try:
                for i, (key, data) in enumerate(records, 1):
                    txn.put(key.encode("utf-8"), data)
                    if i % _COMMIT_EVERY == 0:
                        txn.commit()
                        txn = env.begin(write=True)
                txn.put(MANIFEST_KEY, manifest_bytes)
                txn.commit()
            except BaseException:
                txn.abort()
                raise
            env.sync(True)
        finally:
            env.close()
        if dst.exists():
            keep_tmp = True
            raise DataError(f"{dst}: appeared while packing; refusing to overwrite it (the pack is left in {tmp})")
        os.rename(tmp, dst)
    except lmdb.Error as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{tmp}: writing the LMDB pack failed ({err})") from None
    except BaseException:
        if not keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return map_size


def pack_dataset(src: str | os.PathLike, dst: str | os.PathLike, task: str = "reid") -> dict:
    """Pack the training set at `src` (any layout open_train_set accepts) into the LMDB directory `dst`; returns a
    summary dict (dst, source, task, images, classes, bytes, map_size, description)."""
    dst = check_destination(dst)
    image_set = open_train_set(src, task)  # type: ignore[arg-type]
    reader = image_set.reader
    keys = [r.key for r in image_set.records]
    sizes = measure(reader, keys)
    manifest = {
        "format": PACK_FORMAT,
        "version": PACK_VERSION,
        "task": task,
        "source": str(Path(src).resolve()),
        "description": image_set.description,
        "class_names": list(image_set.class_names),
        "counts": {"images": len(image_set.records), "classes": image_set.num_classes, "bytes": int(sum(sizes))},
        "records": [{"key": r.key, "pid": r.pid, "camid": r.camid, "label": r.label} for r in image_set.records],
    }
    map_size = write_pack(dst, ((key, reader.read(key)) for key in keys), sizes, manifest)
    return {
        "dst": str(dst),
        "source": manifest["source"],
        "task": task,
        "images": len(image_set.records),
        "classes": image_set.num_classes,
        "bytes": int(sum(sizes)),
        "map_size": map_size,
        "description": image_set.description,
    }


def is_tracking_source(src: Path, subset: Optional[str]) -> bool:
    """Whether `src` holds tracking sequences (and so is packed as sequences, not as an image set). A `subset` is
    only meaningful for sequences; a pack is recognised by the task in its manifest. A GOT-10k root given without a
    subset is refused with the subsets it holds, since packing it as an image set would fail obscurely."""
    if subset is not None:
        return True
    if not src.is_dir():
        return False
    layout = sequence_layout(src)
    if layout == "pack":
        return read_pack_manifest(LmdbReader(src)).get("task") == TRACKING_TASK
    if layout is not None:
        return True
    subsets = sorted(p.parent.name for p in src.glob("*/list.txt"))
    if subsets:
        raise DataError(f"{src}: a GOT-10k root holding subsets {', '.join(subsets)}; choose one with --subset")
    return False


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data.pack",
        description="Pack a training set into an LMDB file for fast loading. Tracking sequences are detected (a "
                    "GOT-10k subset folder, or a GOT-10k root with --subset; a LaSOT/OTB-style root of "
                    "<class>/<seq>/img/ or <seq>/img/ folders; a pack of either) and packed as sequences; anything "
                    "else is packed as a re-ID or classification image set (--task).")
    parser.add_argument("src", help="training data: Market-1501 root, flat dir, identity/class folders, or tracking "
                                    "sequences (GOT-10k, LaSOT/OTB style)")
    parser.add_argument("dst", help="LMDB pack directory to create (must not exist)")
    parser.add_argument("--task", choices=("reid", "classification"),
                        help="how an image set in SRC is read (default: reid); not for tracking sequences")
    parser.add_argument("--subset", help="tracking sequences only: the GOT-10k subset folder (train, val, test) of a "
                                         "GOT-10k root, or LaSOT's train/test list")
    args = parser.parse_args(argv)
    return run_command(lambda: _pack_and_report(args.src, args.dst, args.task, args.subset))


def _pack_and_report(src: str, dst: str, task: Optional[str], subset: Optional[str]) -> int:
    if is_tracking_source(Path(src), subset):
        if task is not None:
            raise DataError(f"{src}: holds tracking sequences; --task {task} applies to image sets only (leave it out)")
        from data.sequence_pack import pack_sequences  # here: data.sequence_pack imports this module

        summary = pack_sequences(src, dst, subset)
        print(f"packed {summary['sequences']} sequences ({summary['frames']} frames, {summary['bytes'] / 1e6:.1f} MB, "
              f"{summary['layout']} layout) from {summary['source']} into {summary['dst']}")
        return 0
    task = task or "reid"
    summary = pack_dataset(src, dst, task)
    print(f"packed {summary['images']} images ({summary['classes']} "
          f"{'identities' if task == 'reid' else 'classes'}, {summary['bytes'] / 1e6:.1f} MB) from "
          f"{summary['source']} into {summary['dst']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
