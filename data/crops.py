"""Context-scaled crops for the Siamese/regression trackers, and exact frame ↔ crop coordinate maps.

Coordinates are continuous (see ``data.boxes``): pixel (i, j) covers [i, i+1) × [j, j+1). A ``CropWindow`` is the square
of ``side`` frame pixels centred at (cx, cy), resampled to ``out_size × out_size``; frame point x maps to crop point
u = (x - x0) * scale with x0 = cx - side/2 and scale = out_size/side, so the window centre lands at out_size/2 and
box sizes are multiplied by ``scale``. A ``RectWindow`` is the same with a ``width × height`` rectangle (GOTURN's
crop of twice the box), so x and y have their own scales (``scale_x``, ``scale_y``; a square window has both equal to
``scale``). ``crop_image`` samples the image with exactly that map (bilinear).

Where we differ from the reference implementations (video_analyst ``crop_track_pair``/``get_crop``, SiamMask
``get_subwindow_tracking``): they use pixel-inclusive boxes and put the crop centre at (out_size - 1)/2 and accept a
search box inside [0, out_size - 1]; here the centre is out_size/2 and the accepted region is [0, out_size]. They also
round the crop side to whole pixels in places; we never round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence, Union

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

from data.boxes import Boxes, as_boxes, is_valid_xywh, xywh_to_cxcywh

Border = Union[Literal["mean", "zero"], Sequence[float]]


def context_side(w: ArrayLike, h: ArrayLike, context: float = 0.5) -> NDArray[np.float64] | np.float64:
    """Side of the square context region around a w × h box: sqrt((w + c(w+h)) * (h + c(w+h))).

    The SiamFC / SiamFC++ / SiamMask template region (c = 0.5): the box plus a margin of c(w+h)/2 on each side, squared
    up keeping the area. Vectorised over broadcastable ``w`` and ``h``.
    """
    w = np.asarray(w, dtype=np.float64)
    h = np.asarray(h, dtype=np.float64)
    pad = context * (w + h)
    return np.sqrt((w + pad) * (h + pad))


@dataclass(frozen=True)
class CropWindow:
    """The square [cx - side/2, cx + side/2] × [cy - side/2, cy + side/2] of the frame, resampled to out_size²."""

    cx: float
    cy: float
    side: float
    out_size: int

    def __post_init__(self) -> None:
        if not (np.isfinite(self.cx) and np.isfinite(self.cy) and np.isfinite(self.side) and self.side > 0):
            raise ValueError(f"crop window needs a finite centre and a finite side > 0, got {self}")
        if int(self.out_size) != self.out_size or self.out_size < 1:
            raise ValueError(f"out_size must be a positive integer, got {self.out_size}")

    @property
    def scale(self) -> float:
        """Crop pixels per frame pixel."""
        return self.out_size / self.side

    scale_x = scale_y = scale

    @property
    def x0(self) -> float:
        """Frame x of the crop's left edge."""
        return self.cx - self.side / 2

    @property
    def y0(self) -> float:
        """Frame y of the crop's top edge."""
        return self.cy - self.side / 2


@dataclass(frozen=True)
class RectWindow:
    """The rectangle [cx - width/2, cx + width/2] × [cy - height/2, cy + height/2] of the frame, resampled to out_size²
    (so the two axes have their own scales)."""

    cx: float
    cy: float
    width: float
    height: float
    out_size: int

    def __post_init__(self) -> None:
        if not (np.isfinite([self.cx, self.cy, self.width, self.height]).all() and self.width > 0 and self.height > 0):
            raise ValueError(f"crop window needs a finite centre and a finite width, height > 0, got {self}")
        if int(self.out_size) != self.out_size or self.out_size < 1:
            raise ValueError(f"out_size must be a positive integer, got {self.out_size}")

    @property
    def scale_x(self) -> float:
        """Crop pixels per frame pixel along x."""
        return self.out_size / self.width

    @property
    def scale_y(self) -> float:
        """Crop pixels per frame pixel along y."""
        return self.out_size / self.height

    @property
    def x0(self) -> float:
        return self.cx - self.width / 2

    @property
    def y0(self) -> float:
        return self.cy - self.height / 2


Window = Union[CropWindow, RectWindow]


def _to_crop(boxes: Boxes, x0: ArrayLike, y0: ArrayLike, scale_x: ArrayLike, scale_y: ArrayLike) -> Boxes:
    """xywh frame boxes → crop boxes for (broadcastable) window origins and scales; shared so results agree bitwise."""
    x0, y0, scale_x, scale_y = (np.asarray(v, dtype=np.float64) for v in (x0, y0, scale_x, scale_y))
    return np.stack([(boxes[..., 0] - x0) * scale_x, (boxes[..., 1] - y0) * scale_y,
                     boxes[..., 2] * scale_x, boxes[..., 3] * scale_y], axis=-1)


def frame_to_crop(boxes_xywh: ArrayLike, window: Window) -> Boxes:
    """Frame xywh boxes (..., 4) → the same boxes in crop pixels: x' = (x - x0) * scale_x, w' = w * scale_x (y, h
    with scale_y)."""
    return _to_crop(as_boxes(boxes_xywh), window.x0, window.y0, window.scale_x, window.scale_y)


def crop_to_frame(boxes_xywh: ArrayLike, window: Window) -> Boxes:
    """Crop xywh boxes (..., 4) → frame pixels, the inverse of ``frame_to_crop``: x = x'/scale_x + x0, w = w'/scale_x
    (y, h with scale_y)."""
    b = as_boxes(boxes_xywh)
    return np.stack([b[..., 0] / window.scale_x + window.x0, b[..., 1] / window.scale_y + window.y0,
                     b[..., 2] / window.scale_x, b[..., 3] / window.scale_y], axis=-1)


def channel_mean(image: NDArray) -> tuple[float, float, float]:
    """Per-channel mean of an H×W×3 image: the padding colour of SiamFC++/SiamMask (trackers take the first frame's).
    The channel sums come from OpenCV (exact for uint8, accumulated in float64): NumPy's strided float64 reduction
    costs ~40 ms on a 1080p frame, more than the crop itself."""
    import cv2

    image = np.asarray(image)
    count = image.shape[0] * image.shape[1]
    return tuple(float(total) / count for total in cv2.sumElems(np.ascontiguousarray(image))[:3])


def _border_value(image: NDArray, border: Border) -> tuple[float, float, float]:
    if isinstance(border, str):
        if border == "mean":
            return channel_mean(image)
        if border == "zero":
            return (0.0, 0.0, 0.0)
        raise ValueError(f"border must be 'mean', 'zero' or a colour of 3 values, got {border!r}")
    colour = tuple(float(v) for v in border)
    if len(colour) != 3:
        raise ValueError(f"border colour needs 3 values, got {border!r}")
    return colour


def crop_image(image: NDArray, window: Window, border: Border = "mean") -> NDArray:
    """Bilinear out_size × out_size × 3 crop of an H×W×3 image (uint8 or float32; the output has the input dtype).

    Output pixel j has continuous centre j + 0.5, which comes from frame x = x0 + (j + 0.5)/scale_x (y likewise). OpenCV puts pixel
    centres at integer coordinates, so that is source coordinate x - 0.5; ``cv2.warpAffine`` gets this
    destination → source map with WARP_INVERSE_MAP (no matrix inversion, so it is exact). Samples outside the image
    blend with the border colour: "mean" = this image's per-channel mean, "zero" = 0 (GOTURN), or an explicit colour
    (a tracker passes its first frame's ``channel_mean``). uint8 outputs are rounded/saturated by OpenCV.
    """
    image = np.ascontiguousarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be H×W×3, got shape {image.shape}")
    return _warp(image, window, _border_value(image, border))


def crop_mask(mask: NDArray, window: Window) -> NDArray[np.float32]:
    """out_size × out_size float32 {0, 1} crop of an H×W object mask with the map of ``crop_image``: bilinear, 0
    outside the frame, then > 0.5 (so a mask crop and its image crop line up exactly)."""
    return (_warp(np.ascontiguousarray(mask, dtype=np.float32), window, 0.0) > 0.5).astype(np.float32)


def _warp(image: NDArray, window: Window, border_value) -> NDArray:
    """``cv2.warpAffine`` of `image` with the destination → source map of `window` (see ``crop_image``)."""
    inv_x, inv_y = 1.0 / window.scale_x, 1.0 / window.scale_y
    dst_to_src = np.array([[inv_x, 0.0, window.x0 + 0.5 * inv_x - 0.5],
                           [0.0, inv_y, window.y0 + 0.5 * inv_y - 0.5]])
    size = int(window.out_size)
    return cv2.warpAffine(image, dst_to_src, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=border_value)


def _object_geometry(box_xywh: ArrayLike, context: float) -> tuple[Boxes, float, float, float]:
    """(box, cx, cy, context side) of one valid xywh box; ValueError otherwise."""
    box = as_boxes(box_xywh)
    if box.shape != (4,) or not is_valid_xywh(box):
        raise ValueError(f"need one finite xywh box with w, h > 0, got {box_xywh!r}")
    cx, cy, w, h = xywh_to_cxcywh(box)
    return box, float(cx), float(cy), float(context_side(w, h, context))


def template_window(box_xywh: ArrayLike, context: float = 0.5, template_size: int = 127) -> CropWindow:
    """The template crop: the box's context square (``context_side``), centred on the box, no augmentation."""
    _, cx, cy, side = _object_geometry(box_xywh, context)
    return CropWindow(cx, cy, side, template_size)


def sample_search_window(rng: np.random.Generator, box_xywh: ArrayLike, *, context: float = 0.5,
                         template_size: int = 127, search_size: int = 303, max_scale: float = 0.3,
                         max_shift: float = 0.4, tries: int = 50) -> tuple[CropWindow, Boxes]:
    """SiamFC++ training search crop with random scale and shift: (window, the box in crop pixels).

    Re-statement of video_analyst ``crop_track_pair`` (search half; the template is ``template_window``):

    * base side = context_side(w, h) * search_size / template_size, so the unaugmented search crop shows the object at
      the template crop's scale;
    * each try draws scale_rand ~ U(1/(1 + max_scale), 1 + max_scale) (uniform, as the reference, not log-uniform) and
      uses side = base side * scale_rand, so the object appears 1/scale_rand times its template size;
    * it draws d = (dx, dy) ~ U(-max_shift, max_shift)² * side/2 frame pixels and centres the crop at the object
      centre minus d, so the object sits at out_size/2 + d * scale in the crop;
    * the first try whose box lies inside [0, search_size]² is used; if none of ``tries`` does, the crop is the
      unaugmented one (centred, base side), whose box may then extend outside the crop.

    All tries are drawn at once (scales, then shifts), so the result is a deterministic function of the rng state.
    Differences from the reference: continuous coordinates (centre out_size/2, bounds [0, out_size], see the module).
    """
    if max_scale < 0 or max_shift < 0 or tries < 0:
        raise ValueError(f"need max_scale, max_shift, tries >= 0, got {max_scale}, {max_shift}, {tries}")
    box, cx, cy, side = _object_geometry(box_xywh, context)
    base_side = side * search_size / template_size
    sides = base_side * rng.uniform(1.0 / (1.0 + max_scale), 1.0 + max_scale, size=tries)
    shifts = rng.uniform(-max_shift, max_shift, size=(tries, 2)) * (sides / 2)[:, None]
    centres_x, centres_y = cx - shifts[:, 0], cy - shifts[:, 1]
    in_crop = _to_crop(box, centres_x - sides / 2, centres_y - sides / 2, search_size / sides, search_size / sides)
    inside = (in_crop[:, :2] >= 0).all(axis=1) & (in_crop[:, :2] + in_crop[:, 2:] <= search_size).all(axis=1)
    if not inside.any():
        window = CropWindow(cx, cy, base_side, search_size)
        return window, frame_to_crop(box, window)
    first = int(np.argmax(inside))
    window = CropWindow(float(centres_x[first]), float(centres_y[first]), float(sides[first]), search_size)
    return window, frame_to_crop(box, window)
