"""The SiamMask online tracker (SiamMask's ``siamese_init`` / ``siamese_track`` of ``tools/test.py``, re-written; notes
``trackers-and-got10k.md`` §3.6), one class for every way of running the network: a PyTorch model
(:class:`TorchNetwork`) or the three exported ONNX graphs (``trackers.siammask.onnx_network.OnnxNetwork``).

init: the template crop (context square of the first box, resized to 127, padded with the first frame's channel
mean) goes through the template path once; its adjusted map ``zf`` is cached for the sequence.

update: a search crop around the previous position (side = context side × x_size / 127, so the target keeps the
template's scale), then on the k · S · S anchors (anchor-major, as ``anchors.anchor_grid``'s (k, S, S) layout):

* the boxes are the anchors' deltas decoded against ``anchors.tracking_anchors`` (displacements from the crop centre)
  plus x_size / 2, i.e. in search-crop pixels;
* penalty, cosine window (tiled over the k anchors), best anchor and the smoothing rate lr = penalty · score · lr are
  SiamFC++'s (``trackers.siamese.select_box``: the reference's formulas are the same in both trackers);
* the centre moves to the best box, the size is smoothed with lr; centre clamped into the frame, size into
  [min_size, frame size] — the state follows the RPN box, never the mask (as the reference);
* the mask of the best anchor's location (row i, column j) comes from the network (refine module 127 × 127, or the
  base model's 63 × 63) and is mapped back to the frame (below), thresholded at ``seg_thr``;
* the polygon: the largest external contour of the mask, if its area exceeds ``min_contour_area``, as
  ``cv2.minAreaRect`` → ``cv2.boxPoints`` (4 × 2); else the four corners of the RPN box.

The box ``update`` returns is the RPN box (``box_output`` "rpn", the reference's state) or the axis-aligned bounding
rectangle of the polygon (``box_output`` "polygon").

Mask → frame (the window the mask targets were cut from in training, ``anchors`` / ``targets.mask_windows``):
location (i, j) owns the search-crop square ``[8j − P, 8j − P + 127) × [8i − P, 8i − P + 127)`` (continuous crop
coordinates; P = ``anchors.window_padding``, 32 for 255 / 25, so the middle location's window is [64, 191), centred on
the crop centre 127.5). A 127 × 127 refine mask covers it pixel for pixel; the base model's 63 × 63 mask was trained
bilinearly upsampled with ``align_corners=True``, so its first and last pixel centres sit on the window's first and
last pixel centres: window coordinate ``w = 0.5 + (q − 0.5) · 126 / 62`` for mask coordinate q (the identity for
127). Crop coordinate c is frame coordinate ``x0 + c / scale`` (``data.crops.CropWindow``). The composite map is
applied with ``cv2.warpAffine`` (bilinear, WARP_INVERSE_MAP, pixel centres at +0.5 as ``data.crops.crop_image``),
only over the frame pixels the window covers; outside the window (and, for 63, in the outer half pixel of it) the
probability is 0. The reference (``crop_back`` in ``tools/test.py``) warps its mask onto the same window in its
pixel-index convention with mask index m → window index m · 127 / M (for 63: from the window's first pixel, not
centre-aligned as its training's upsampling, at most ~1 crop pixel apart from ours) and an extra factor (W − 1) / W
on the frame coordinates; for the refine mask the two agree up to that factor.

Polygon convention: OpenCV contours are pixel indices, i.e. pixel centres, which are at +0.5 in the continuous
convention; the rectangle of ``cv2.minAreaRect`` is therefore shifted by +0.5 on both axes (the same rectangle as the
reference's, expressed in continuous coordinates: it passes through the centres of the outermost mask pixels, half a
pixel inside the mask's pixel area). The fallback polygon is the RPN box's corners, already continuous.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Protocol

import cv2
import numpy as np
from pydantic import Field, field_validator

from data.boxes import cxcywh_to_xyxy, xyxy_to_xywh
from data.crops import CropWindow, crop_image, crop_to_frame
from engine.sections import Fraction, PositiveInt, Section
from trackers.base import TrackOutput
from trackers.crop_batches import torch_batch
from trackers.siamese import SiameseTracker, cosine_window, select_box

# trackers.siammask.anchors imports torch: it is imported where it is used, so that this module (the task's params,
# the ONNX Runtime tracker) loads without PyTorch
TEMPLATE_SIZE, STRIDE = 127, 8    # anchors.TEMPLATE_SIZE, anchors.STRIDE (tested equal)

PositiveFloat = Annotated[float, Field(gt=0.0)]


class SiamMaskTrackerParams(Section):
    """The online tracker. Defaults: the reference's ``utils/tracker_config.py``; its VOT2018 sharp configuration
    (``experiments/siammask_sharp/config_vot18.json``) is given in each description."""

    context_amount: PositiveFloat = Field(0.5, description="Context margin of the template and search crops (side = "
                                          "sqrt((w + c(w+h))(h + c(w+h))); reference 0.5).")
    penalty_k: Annotated[float, Field(ge=0.0)] = Field(0.09, description="Scale/ratio change penalty "
                                                       "exp(−(r·s − 1)·k) (reference 0.09; VOT2018 sharp 0.10).")
    window_influence: Fraction = Field(0.39, description="Weight of the cosine window in the final score (reference "
                                       "0.39; VOT2018 sharp 0.41).")
    lr: Fraction = Field(0.38, description="Size smoothing: new size = old·(1 − r) + predicted·r with r = penalty · "
                         "score · lr (reference 0.38; VOT2018 sharp 0.32).")
    seg_thr: Fraction = Field(0.3, description="Mask threshold: a frame pixel belongs to the target where the mask "
                              "probability is > seg_thr (reference 0.3; VOT2018 sharp 0.15).")
    x_size: PositiveInt = Field(255, description="Search crop side when tracking (reference 255; x_size − 127 must be "
                                "a multiple of the stride 8).")
    min_size: PositiveFloat = Field(10.0, description="Smallest tracked width/height in pixels (reference 10).")
    mask_source: Literal["refine", "base"] = Field("base", description="Mask of the chosen location: 'base' = the "
                                                   "mask head's 63 × 63 mask (the reference's default out_size 63; "
                                                   "every model has it), 'refine' = the refine module's 127 × 127 "
                                                   "mask (sharp model: needs a model with the refine module; the "
                                                   "reference's VOT2018 sharp configuration).")
    min_contour_area: Annotated[float, Field(ge=0.0)] = Field(100.0, description="The polygon is the minimum-area "
                                                              "rectangle of the mask's largest contour when its area "
                                                              "(pixels²) exceeds this, else the RPN box's corners "
                                                              "(reference 100).")
    box_output: Literal["rpn", "polygon"] = Field("rpn", description="Axis-aligned box update() returns (what "
                                                  "GOT-10k-style evaluation scores): 'rpn' = the RPN box (the "
                                                  "tracker's state, as the reference), 'polygon' = the bounding "
                                                  "rectangle of the mask's rotated rectangle. The state always "
                                                  "follows the RPN box.")

    @field_validator("x_size")
    @classmethod
    def _on_the_grid(cls, value: int) -> int:
        if (value - TEMPLATE_SIZE) % STRIDE or value < TEMPLATE_SIZE:
            raise ValueError(f"x_size {value}: must be {TEMPLATE_SIZE} + a multiple of the stride {STRIDE} (255 in "
                             "the reference)")
        return value


class SiamMaskNetwork(Protocol):
    """What the tracker needs of a network (PyTorch or ONNX Runtime): crops are H×W×3 uint8 RGB arrays."""

    z_size: int
    x_size: int
    score_size: int

    def template(self, crop: np.ndarray) -> object:
        """The template's kernel (adjusted map zf), in whatever form `search` takes it."""

    def search(self, crop: np.ndarray, kernel: object) -> tuple[np.ndarray, np.ndarray, object]:
        """(score (k·S·S,) foreground probability, loc deltas (k·S·S, 4), a handle for `mask`) of one search crop;
        anchor-major order (a, i, j) as ``anchors.anchor_grid``."""

    def mask(self, handle: object, row: int, col: int) -> np.ndarray:
        """(M, M) foreground probabilities of location (row, col)'s window (refine: 127, base: 63)."""


def mask_to_frame(probability: np.ndarray, window: CropWindow, row: int, col: int, padding: int,
                  frame_size: tuple[int, int], stride: int, side: int) -> np.ndarray:
    """H×W float32 probabilities in the frame (``frame_size`` = (width, height)) of location (row, col)'s M × M mask
    (the module docstring's map, 0 outside the location's window): the window is the ``side``-pixel square at
    ``(stride · col − padding, stride · row − padding)`` of the search crop ``window``."""
    width, height = frame_size
    out = np.zeros((height, width), dtype=np.float32)
    m = probability.shape[0]
    ratio = (m - 1) / (side - 1)
    u0, v0 = stride * col - padding, stride * row - padding     # the window's corner in crop pixels
    scale = window.scale
    # frame pixels the window covers
    left, top = window.x0 + u0 / scale, window.y0 + v0 / scale
    x_lo, x_hi = max(0, int(np.floor(left))), min(width, int(np.ceil(left + side / scale)))
    y_lo, y_hi = max(0, int(np.floor(top))), min(height, int(np.ceil(top + side / scale)))
    if x_lo >= x_hi or y_lo >= y_hi:
        return out
    # destination pixel j (frame x = j + x_lo + 0.5) → crop c = (x − x0)·scale → window w = c − u0 → mask OpenCV
    # coordinate (w − 0.5)·ratio (mask q = 0.5 + (w − 0.5)·ratio, pixel centres at q − 0.5)
    a = scale * ratio
    bx = ((x_lo + 0.5 - window.x0) * scale - u0 - 0.5) * ratio
    by = ((y_lo + 0.5 - window.y0) * scale - v0 - 0.5) * ratio
    dst_to_src = np.array([[a, 0.0, bx], [0.0, a, by]])
    out[y_lo:y_hi, x_lo:x_hi] = cv2.warpAffine(
        np.ascontiguousarray(probability, dtype=np.float32), dst_to_src, (x_hi - x_lo, y_hi - y_lo),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return out


def box_corners(box_xywh: np.ndarray) -> np.ndarray:
    """(4, 2) corners of an xywh box, clockwise from the top left."""
    x, y, w, h = box_xywh
    return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], dtype=np.float64)


def mask_polygon(mask: np.ndarray, min_area: float) -> Optional[np.ndarray]:
    """(4, 2) float64 rotated rectangle (continuous coordinates: ``cv2.boxPoints`` + 0.5) of the largest external
    contour of a bool mask when its ``cv2.contourArea`` exceeds ``min_area``; None otherwise."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    areas = [cv2.contourArea(contour) for contour in contours]
    best = int(np.argmax(areas))
    if not areas[best] > min_area:
        return None
    return cv2.boxPoints(cv2.minAreaRect(contours[best])).astype(np.float64) + 0.5


class SiamMaskTracker(SiameseTracker):
    """The online tracker (module docstring) on a `SiamMaskNetwork`; ``last`` holds the box, the best anchor's score,
    the H×W bool mask and the (4, 2) polygon of every frame after the first."""

    name = "siammask"

    def __init__(self, network: SiamMaskNetwork, params: SiamMaskTrackerParams) -> None:
        from trackers.siammask import anchors

        super().__init__()
        if getattr(network, "x_size", params.x_size) != params.x_size:
            raise ValueError(f"the network takes {network.x_size}-pixel search crops, tracker_params.x_size is "
                             f"{params.x_size}")
        self.network, self.params = network, params
        size = int(network.score_size)
        self.score_size, self.padding = size, anchors.window_padding(params.x_size, size)
        self.anchors = anchors.tracking_anchors(size).reshape(-1, 4)         # (k·S·S, 4) anchor-major
        self.anchor_num = len(self.anchors) // (size * size)
        self.window = np.tile(cosine_window(size), self.anchor_num)
        self.stride, self.mask_window = anchors.STRIDE, anchors.WINDOW
        self._decode = anchors.decode_deltas

    def _initialize(self, frame: np.ndarray, box: np.ndarray) -> None:
        crop = self._template_crop(frame, box, self.params.context_amount, self.network.z_size)
        self.kernel = self.network.template(crop)

    def _rpn_box(self) -> np.ndarray:
        return np.concatenate([self.center - self.size / 2, self.size])

    def crop_boxes(self, deltas: np.ndarray) -> np.ndarray:
        """(k·S·S, 4) xyxy boxes in search-crop pixels of the network's deltas."""
        boxes = self._decode(np.asarray(deltas, dtype=np.float64), self.anchors)
        boxes[:, :2] += self.params.x_size / 2
        return cxcywh_to_xyxy(boxes)

    def _track(self, frame: np.ndarray) -> TrackOutput:
        p = self.params
        window = self._search_window(p.context_amount, self.network.z_size, p.x_size)
        score, deltas, handle = self.network.search(crop_image(frame, window, self.mean), self.kernel)
        with np.errstate(over="ignore", invalid="ignore"):
            boxes = self.crop_boxes(deltas)
        best, box, lr = select_box(score, boxes, self.size * window.scale, self.window, p.penalty_k,
                                  p.window_influence, p.lr)
        if best < 0:  # nothing usable on this frame: keep the state
            return TrackOutput(box=self._rpn_box(), score=0.0)
        x, y, w, h = crop_to_frame(box, window)
        height, width = frame.shape[:2]
        self.center = np.clip([x + w / 2, y + h / 2], 0, [width, height])
        self.size = np.clip(self.size * (1 - lr) + np.array([w, h]) * lr, p.min_size, [width, height])
        rpn_box = self._rpn_box()

        _, row, col = np.unravel_index(best, (self.anchor_num, self.score_size, self.score_size))
        probability = np.asarray(self.network.mask(handle, int(row), int(col)))
        mask = mask_to_frame(probability, window, int(row), int(col), self.padding, (width, height),
                             self.stride, self.mask_window) > p.seg_thr
        polygon = mask_polygon(mask, p.min_contour_area)
        if polygon is None:
            polygon = box_corners(rpn_box)
        out_box = rpn_box
        if p.box_output == "polygon":
            out_box = xyxy_to_xywh(np.concatenate([polygon.min(axis=0), polygon.max(axis=0)]))
        return TrackOutput(box=out_box, score=float(score[best]), mask=mask, polygon=polygon)


class TorchNetwork:
    """A `SiamMask` in eval mode on its device, run in fp32 (as evaluation always runs): crops as channels-last views
    (`trackers.crop_batches.torch_batch`). ``mask_source``: "refine" (the refine module's 127 × 127 mask; the model
    must have it) or "base" (the mask head's 63 × 63)."""

    def __init__(self, net, x_size: int, mask_source: str = "base") -> None:
        import torch

        from trackers.siammask.anchors import ANCHOR_NUM, score_size

        if mask_source not in ("refine", "base"):
            raise ValueError(f"mask_source must be 'refine' or 'base', found {mask_source!r}")
        if mask_source == "refine" and getattr(net, "refinement", None) is None:
            raise ValueError("mask_source 'refine' needs a SiamMask with the refine module (this one was built "
                             "with refine=False); use mask_source 'base'")
        self.net, self.torch, self.mask_source = net.eval(), torch, mask_source
        self.device = next(net.parameters()).device
        self.z_size, self.x_size = TEMPLATE_SIZE, x_size
        self.score_size = score_size(x_size)
        self.anchor_num = getattr(net, "anchor_num", ANCHOR_NUM)

    def template(self, crop: np.ndarray):
        with self.torch.no_grad():
            return self.net.template(torch_batch(crop, self.device))

    def search(self, crop: np.ndarray, kernel) -> tuple[np.ndarray, np.ndarray, object]:
        from trackers.siammask.model import foreground_probability

        with self.torch.no_grad():
            out = self.net.track(torch_batch(crop, self.device), kernel, mask=False)
            score = foreground_probability(out.cls.float(), self.anchor_num)[0]
        size = score.shape[-1]
        if size != self.score_size:
            raise ValueError(f"the network's score map is {size} × {size}, not the {self.score_size} × "
                             f"{self.score_size} of x_size {self.x_size}")
        loc = out.loc[0].float().reshape(4, -1).T                          # (4, k, S, S) → (k·S·S, 4)
        return (score.reshape(-1).cpu().numpy().astype(np.float64), loc.cpu().numpy().astype(np.float64),
                (out.levels, out.corr))

    def mask(self, handle, row: int, col: int) -> np.ndarray:
        levels, corr = handle
        position = self.torch.tensor([row, col], dtype=self.torch.int64, device=corr.device)
        with self.torch.no_grad():
            logits = (self.net.refine(levels, corr, position) if self.mask_source == "refine"
                      else self.net.mask_at(corr, position))
            return self.torch.sigmoid(logits[0].float()).cpu().numpy()
