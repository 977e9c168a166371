"""Still-image detection sets as one-frame tracking sequences, so a tracker can train on them with same-frame pairs.

SiamFC++ (video_analyst) adds COCO to its video sets this way: every usable object annotation is a "sequence" of one
frame, and a pair is two crops of that frame (the search crop scaled and shifted), which adds many more object
classes and appearances than the video sets have.

:func:`open_coco_detection` reads a COCO-style detection set: an annotation JSON with ``images`` (``id``,
``file_name``, ``width``, ``height``) and ``annotations`` (``id``, ``image_id``, ``bbox`` = [x, y, w, h] in
continuous pixels, the convention of :mod:`data.boxes`; ``iscrowd``; ``category_id``), and a folder of the images,
laid out as COCO ships: ``<root>/annotations/instances_<split>.json`` with the images in ``<root>/<split>/`` (or
``<root>/images/<split>/`` or ``<root>/images/``).

**Which annotations are used.** Crowd annotations (``iscrowd`` set: a region of many objects) are skipped, and so are
boxes that are not finite with w, h > 0, or fail the size rule: area ratio ``w·h / (W·H)`` strictly inside
(``min_area_ratio``, ``max_area_ratio``) = (0.001, 0.6) and aspect ``max(w/h, h/w)`` strictly below ``max_aspect``
= 10. That is the rule video_analyst intends (``filter_unreasonable_training_boxes``, used by ``TrackPairFilter``), but
there the two area conditions form a tuple inside ``all([...])``, and a non-empty tuple is always true, so only the
aspect test takes effect (a box covering 98 % of the image and a one-pixel box both pass). We apply the intended rule;
pass ``min_area_ratio=0, max_area_ratio=inf`` to get the reference's actual behaviour. (The reference also measures
boxes pixel-inclusively, w + 1; we use the plain width.) ``W``, ``H`` come from the JSON, so no image is opened here:
an image that is listed but missing or corrupt is reported (a DataError naming it) when a loader reads it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Optional

import numpy as np

from data.readers import FolderReader
from data.records import DataError
from data.sequences import Sequence, SequenceSet

STILL_LAYOUT = "still"
_ANNOTATIONS_PREFIX = "instances_"


def open_coco_detection(root: str | os.PathLike, annotations: Optional[str | os.PathLike] = None, *,
                        split: Optional[str] = None, min_area_ratio: float = 0.001, max_area_ratio: float = 0.6,
                        max_aspect: float = 10.0) -> SequenceSet:
    """One one-frame sequence (layout ``"still"``) per usable object annotation of a COCO-style detection set.

    `annotations`: the JSON file; by default ``<root>/annotations/instances_<split>.json`` (with no `split`, the only
    ``instances_*.json`` there). The images are looked for under `root` as the module docstring says, ``<split>`` being
    the JSON's name without ``instances_``. Sequence ``<image stem>_<annotation id>`` has frames ``(file_name,)``,
    boxes (1, 4), visible ``[True]``, resolution (W, H) and meta ``{"image_id", "category_id"}``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: COCO-style detection set not found (expected a directory with annotations/"
                        f"instances_<split>.json and the image folder)")
    path = Path(annotations) if annotations is not None else _find_annotations(root, split)
    images_dir = _find_images(root, path)
    images, annotation_list = _read_json(path)
    sequences: list[Sequence] = []
    skipped = {"crowd": 0, "size": 0}
    for annotation in annotation_list:
        image = images[annotation["image_id"]]
        box = np.asarray(annotation["bbox"], dtype=np.float64)
        if annotation.get("iscrowd", 0):
            skipped["crowd"] += 1
        elif not _usable(box, image["width"] * image["height"], min_area_ratio, max_area_ratio, max_aspect):
            skipped["size"] += 1
        else:
            sequences.append(_sequence(annotation, image, box, images_dir))
    if not sequences:
        raise DataError(f"{path}: no usable object annotation ({len(annotation_list)} annotations: {skipped['crowd']} "
                        f"crowd, {skipped['size']} outside the size rule)")
    description = (f"COCO-style detection set {path} (images in {images_dir}): {len(sequences)} objects in "
                   f"{len({s.frames[0] for s in sequences})} images; skipped {skipped['crowd']} crowd and "
                   f"{skipped['size']} too small, too large or too elongated boxes")
    return SequenceSet(tuple(sequences), FolderReader(images_dir), STILL_LAYOUT, description)


def _usable(box: np.ndarray, image_area: float, min_area_ratio: float, max_area_ratio: float,
            max_aspect: float) -> bool:
    """The size rule of the module docstring."""
    if not np.isfinite(box).all() or box[2] <= 0 or box[3] <= 0:
        return False
    w, h = float(box[2]), float(box[3])
    return min_area_ratio < w * h / image_area < max_area_ratio and max(w / h, h / w) < max_aspect


def _sequence(annotation: dict, image: dict, box: np.ndarray, images_dir: Path) -> Sequence:
    file_name = str(image["file_name"])
    name = f"{Path(file_name).stem}_{annotation['id']}"
    meta = {"image_id": annotation["image_id"], "category_id": annotation.get("category_id")}
    return Sequence(name, (file_name,), box[None, :], np.ones(1, dtype=bool), None,
                    (int(image["width"]), int(image["height"])), meta,
                    f"{images_dir / file_name} (annotation {annotation['id']})")


def _find_annotations(root: Path, split: Optional[str]) -> Path:
    folder = root / "annotations"
    if split is not None:
        path = folder / f"{_ANNOTATIONS_PREFIX}{split}.json"
        if not path.is_file():
            raise DataError(f"{path}: annotation file not found (expected <root>/annotations/"
                            f"instances_<split>.json for split {split!r})")
        return path
    found = sorted(folder.glob(f"{_ANNOTATIONS_PREFIX}*.json"))
    if len(found) != 1:
        listed = ", ".join(p.name for p in found) if found else "none"
        raise DataError(f"{folder}: expected exactly one instances_<split>.json (or pass the split or the annotation "
                        f"file), found {listed}")
    return found[0]


def _find_images(root: Path, annotations: Path) -> Path:
    """The image folder under `root` for the annotation file: see the module docstring."""
    stem = annotations.stem
    split = stem[len(_ANNOTATIONS_PREFIX):] if stem.startswith(_ANNOTATIONS_PREFIX) else None
    candidates = ([root / split, root / "images" / split] if split else []) + [root / "images"]
    for folder in candidates:
        if folder.is_dir():
            return folder
    raise DataError(f"{root}: no image folder for {annotations.name}; looked for "
                    f"{', '.join(str(c) for c in candidates)}")


def _read_json(path: Path) -> tuple[dict, list]:
    """(images by id, the annotation list) of a COCO annotation file, every entry checked for the fields used."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise DataError(f"{path}: annotation file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read annotation file ({getattr(err, 'strerror', None) or err})") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    expected = ("a COCO detection JSON: an object with 'images' (id, file_name, width, height) and 'annotations' "
                "(id, image_id, bbox [x, y, w, h], iscrowd, category_id)")
    try:
        images = {image["id"]: image for image in data["images"]}
        for image in images.values():
            _check_image(image)
        annotation_list = list(data["annotations"])
        for annotation in annotation_list:
            _check_annotation(annotation, images)
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"{path}: expected {expected}; {type(err).__name__}: {err}") from None
    return images, annotation_list


def _check_image(image: dict) -> None:
    """A ValueError unless the image entry has a file name and a positive size (a KeyError if a field is absent)."""
    width, height = float(image["width"]), float(image["height"])
    if not (math.isfinite(width) and math.isfinite(height) and width > 0 and height > 0 and image["file_name"]):
        raise ValueError(f"image {image['id']!r} needs a file_name and width, height > 0, found {image}")


def _check_annotation(annotation: dict, images: dict) -> None:
    """A ValueError unless the annotation has an id, a listed image_id and a bbox of 4 numbers (a KeyError if a field
    is absent)."""
    if annotation["image_id"] not in images:
        raise ValueError(f"annotation {annotation['id']!r} refers to image_id {annotation['image_id']!r}, which "
                         f"'images' does not list")
    if np.asarray(annotation["bbox"], dtype=np.float64).shape != (4,):
        raise ValueError(f"annotation {annotation['id']!r}: bbox must be [x, y, w, h], found {annotation['bbox']!r}")
