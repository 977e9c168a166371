"""Pack a training set into one LMDB file: ``python -m data.pack SRC DST [--task reid|classification]``.

Each image is stored under its record key with its original encoded bytes (never re-encoded), next to a JSON manifest
(entry ``__manifest__.json``) holding the format version, task, records, class names, source path and counts. The
pack is written into ``DST.tmp-…`` and renamed to DST when complete, so a DST that exists is always a whole pack; an
existing DST is refused.
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
from typing import Optional, Sequence

from data.formats import PACK_FORMAT, PACK_VERSION, open_train_set
from data.readers import MANIFEST_KEY, FolderReader
from data.records import DataError
from engine.errors import run_command

_PAGE = 4096
_MAX_KEY_BYTES = 511  # LMDB's default maximum key size
_COMMIT_EVERY = 1000


def _map_size(sizes: Sequence[int], manifest_bytes: int) -> int:
    """Room for every value (rounded up to whole pages, plus a page of b-tree overhead each) with a 2× margin."""
    pages = sum(math.ceil(s / _PAGE) + 1 for s in sizes) + math.ceil(manifest_bytes / _PAGE) + 1
    return 2 * pages * _PAGE + 64 * 1024 * 1024


def pack_dataset(src: str | os.PathLike, dst: str | os.PathLike, task: str = "reid") -> dict:
    """Pack the training set at `src` (any layout open_train_set accepts) into the LMDB directory `dst`; returns a
    summary dict (dst, source, task, images, classes, bytes, map_size, description)."""
    import lmdb

    dst = Path(dst)
    if dst.exists():
        raise DataError(f"{dst}: already exists; refusing to overwrite it (remove it or choose another destination)")
    if not dst.parent.is_dir():
        raise DataError(f"{dst.parent}: destination directory does not exist")
    image_set = open_train_set(src, task)  # type: ignore[arg-type]
    reader = image_set.reader
    for record in image_set.records:
        if len(record.key.encode("utf-8")) > _MAX_KEY_BYTES:
            raise DataError(f"{reader.describe(record.key)}: path is longer than the {_MAX_KEY_BYTES} bytes an LMDB "
                            f"key can hold")
    if isinstance(reader, FolderReader):
        sizes = [reader.size(r.key) for r in image_set.records]
    else:
        sizes = [len(reader.read(r.key)) for r in image_set.records]
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
    manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode("utf-8")
    map_size = _map_size(sizes, len(manifest_bytes))

    tmp = dst.with_name(f"{dst.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    keep_tmp = False
    try:
        env = lmdb.open(str(tmp), map_size=map_size, subdir=True, readahead=False, meminit=False)
        try:
            txn = env.begin(write=True)
            try:
                for i, record in enumerate(image_set.records, 1):
                    txn.put(record.key.encode("utf-8"), reader.read(record.key))
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data.pack",
                                     description="Pack a training image set into an LMDB file for fast loading.")
    parser.add_argument("src", help="training data: Market-1501 root, flat dir, identity/class folders")
    parser.add_argument("dst", help="LMDB pack directory to create (must not exist)")
    parser.add_argument("--task", choices=("reid", "classification"), default="reid",
                        help="how SRC is read (default: reid)")
    args = parser.parse_args(argv)
    return run_command(lambda: _pack_and_report(args.src, args.dst, args.task))


def _pack_and_report(src: str, dst: str, task: str) -> int:
    summary = pack_dataset(src, dst, task)
    print(f"packed {summary['images']} images ({summary['classes']} "
          f"{'identities' if task == 'reid' else 'classes'}, {summary['bytes'] / 1e6:.1f} MB) from "
          f"{summary['source']} into {summary['dst']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
