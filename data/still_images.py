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

:func:`open_imagenet_det` reads ImageNet DET (ILSVRC2014_Det) laid out as GOTURN's training seed has it:
``<root>/images/<synset>/<name>.JPEG`` and ``<root>/gt/<synset>/<name>.xml``, PASCAL VOC-style XML (``<annotation>``
with ``<size><width>, <height>`` and one ``<object>`` per object: ``<name>`` and ``<bndbox>`` with ``<xmin>``,
``<ymin>``, ``<xmax>``, ``<ymax>``). An XML file belongs to the image with the same path and stem (the ``<folder>``
and ``<filename>`` inside it are not used); an image without an XML file has no objects and is skipped, an XML file
without its image is a DataError. Image sizes come from ``<size>``; no image is opened here.

**ImageNet DET boxes.** The bndbox values are 0-based indices of the first and last pixel column / row the object
covers, both inclusive: pixel column ``i`` is ``[i, i + 1)`` in our continuous convention, so ``x = xmin``,
``w = xmax + 1 - xmin`` (and likewise y, h). PASCAL VOC's own files are 1-based and would need ``x = xmin - 1``; we
take ImageNet's as 0-based, as detection code reading them commonly does (an xmin of 0 occurs in them, which a 1-based
index cannot be). Some xmax equal the image width, which no 0-based inclusive index can be either (an exclusive end in
effect), so the right and bottom edges are clipped to the image, ``min(xmax + 1, W)``: both readings of a box that
reaches the border end at the border, not one pixel past it.

**Which objects are used** (GOTURN's reference, ``kMaxRatio``): objects with ``xmin < 0``, ``ymin < 0``,
``xmax <= xmin`` or ``ymax <= ymin`` are degenerate and dropped, as are objects left with no width or height after the
clipping, and objects larger than ``max_side_ratio`` (0.66) of the image on either side: ``w > 0.66·W`` or
``h > 0.66·H``. The reference measures that width as ``xmax - xmin``, one pixel less than our ``w``; we measure the box
we train on, so an object within a pixel of the limit may be judged differently. ``max_side_ratio=inf`` turns the rule
off.
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Optional

import numpy as np

from data.imaging import IMAGE_EXTENSIONS
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


# --------------------------------------------------------------------------------------------------------------------
# ImageNet DET (ILSVRC2014_Det, GOTURN's layout)

IMAGENET_DET_MAX_SIDE_RATIO = 0.66
_VOC_EXPECTED = ("PASCAL VOC-style XML: <annotation> with <size><width>, <height></size> and <object>s each with "
                 "<bndbox><xmin>, <ymin>, <xmax>, <ymax></bndbox>")


def open_imagenet_det(root: str | os.PathLike, *, max_side_ratio: float = IMAGENET_DET_MAX_SIDE_RATIO,
                      images: Optional[str | os.PathLike] = None,
                      annotations: Optional[str | os.PathLike] = None) -> SequenceSet:
    """One one-frame sequence (layout ``"still"``) per usable object of an ImageNet DET set (module docstring).

    `images` / `annotations`: the image and XML folders (one subfolder per synset in each); by default
    ``<root>/images`` and ``<root>/gt``. Sequence ``<image stem>_<k>`` (the image's k-th ``<object>``, from 1) has
    frames ``("<synset>/<image file>",)`` read from the image folder, boxes (1, 4), visible ``[True]``, resolution
    (W, H) from the XML and meta ``{"image": "<synset>/<stem>", "category": <name>}``.
    """
    if not max_side_ratio > 0:
        raise ValueError(f"max_side_ratio must be > 0, got {max_side_ratio}")
    root = Path(root)
    images_dir = Path(images) if images is not None else root / "images"
    gt_dir = Path(annotations) if annotations is not None else root / "gt"
    for folder, what in ((images_dir, "images/<synset>/<name>.JPEG"), (gt_dir, "gt/<synset>/<name>.xml")):
        if not folder.is_dir():
            raise DataError(f"{folder}: ImageNet DET folder not found (expected <root>/{what})")
    sequences: list[Sequence] = []
    counts = {"xml": 0, "objects": 0, "degenerate": 0, "too large": 0, "images without xml": 0}
    for synset in sorted(p.name for p in gt_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        image_files = _image_files(images_dir / synset)
        xml_files = sorted(p for p in (gt_dir / synset).iterdir() if p.suffix.lower() == ".xml" and p.is_file())
        counts["images without xml"] += len(set(image_files) - {p.stem for p in xml_files})
        for xml_path in xml_files:
            counts["xml"] += 1
            if xml_path.stem not in image_files:
                raise DataError(f"{xml_path}: annotation without its image; expected "
                                f"{images_dir / synset / xml_path.stem}.JPEG")
            key = f"{synset}/{image_files[xml_path.stem]}"
            (width, height), objects = read_voc_xml(xml_path)
            for k, (name, box) in enumerate(objects, 1):
                counts["objects"] += 1
                usable = _imagenet_box(box, width, height, max_side_ratio)
                if isinstance(usable, str):
                    counts[usable] += 1
                    continue
                sequences.append(Sequence(f"{xml_path.stem}_{k}", (key,), usable[None, :], np.ones(1, dtype=bool),
                                          None, (width, height), {"image": f"{synset}/{xml_path.stem}",
                                                                  "category": name},
                                          f"{images_dir / key} (object {k} of {xml_path})"))
    if counts["xml"] == 0:
        raise DataError(f"{gt_dir}: no annotation files (expected <synset>/<name>.xml)")
    skipped = (f"skipped {counts['degenerate']} degenerate and {counts['too large']} too large (a side over "
               f"{max_side_ratio:g} of the image's) objects, and {counts['images without xml']} images without an "
               f"annotation file")
    if not sequences:
        raise DataError(f"{gt_dir}: no usable object in {counts['xml']} annotation files ({counts['objects']} "
                        f"objects; {skipped})")
    description = (f"ImageNet DET set at {root} (images in {images_dir}, annotations in {gt_dir}): {len(sequences)} "
                   f"objects in {len({s.frames[0] for s in sequences})} images; {skipped}")
    return SequenceSet(tuple(sequences), FolderReader(images_dir), STILL_LAYOUT, description)


def _image_files(folder: Path) -> dict[str, str]:
    """{stem: file name} of the image files in `folder` ({} if it does not exist)."""
    try:
        with os.scandir(folder) as entries:
            return {Path(e.name).stem: e.name for e in entries
                    if not e.name.startswith(".") and e.name.lower().endswith(IMAGE_EXTENSIONS)}
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise DataError(f"{folder}: cannot list images ({err.strerror or err})") from None


def _imagenet_box(box: tuple[float, float, float, float], width: int, height: int,
                  max_side_ratio: float) -> np.ndarray | str:
    """x, y, w, h of an inclusive (xmin, ymin, xmax, ymax), or why it is not used ('degenerate', 'too large')."""
    xmin, ymin, xmax, ymax = box
    if xmin < 0 or ymin < 0 or xmax <= xmin or ymax <= ymin:
        return "degenerate"
    w, h = min(xmax + 1, width) - xmin, min(ymax + 1, height) - ymin
    if not (w > 0 and h > 0):
        return "degenerate"
    if w > max_side_ratio * width or h > max_side_ratio * height:
        return "too large"
    return np.array([xmin, ymin, w, h], dtype=np.float64)


def read_voc_xml(path: Path) -> tuple[tuple[int, int], list[tuple[str, tuple[float, float, float, float]]]]:
    """((width, height), [(name, (xmin, ymin, xmax, ymax)), …]) of a PASCAL VOC-style annotation file, as written
    (no conversion); DataError naming the file for anything malformed."""
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as err:
        raise DataError(f"{path}: not well-formed XML ({err}); expected {_VOC_EXPECTED}") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from None
    if root.tag != "annotation":
        raise DataError(f"{path}: root element is <{root.tag}>; expected {_VOC_EXPECTED}")
    width, height = (_xml_number(path, root, f"size/{tag}", "<size>") for tag in ("width", "height"))
    if not (width > 0 and height > 0 and width == int(width) and height == int(height)):
        raise DataError(f"{path}: <size> must hold whole numbers <width>, <height> > 0, found {width:g} × {height:g}")
    objects = []
    for k, element in enumerate(root.findall("object"), 1):
        where = f"object {k}"
        box = tuple(_xml_number(path, element, f"bndbox/{tag}", where) for tag in ("xmin", "ymin", "xmax", "ymax"))
        objects.append(((element.findtext("name") or "").strip(), box))
    return (int(width), int(height)), objects


def _xml_number(path: Path, element, tag_path: str, where: str) -> float:
    text = element.findtext(tag_path)
    if text is None:
        raise DataError(f"{path}: {where}: <{tag_path.replace('/', '><')}> is missing; expected {_VOC_EXPECTED}")
    try:
        value = float(text.strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DataError(f"{path}: {where}: <{tag_path.split('/')[-1]}> must be a number, found {text.strip()[:40]!r}")
    return value
