"""Pictures for TensorBoard: curves (CMC, tracking success) and ranked results (query + top-k, green = match, red =
not)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

GREEN, RED, GREY = (40, 170, 60), (210, 40, 40), (128, 128, 128)


def cmc_curve_image(cmc: np.ndarray, width: int = 360, height: int = 240) -> np.ndarray:
    """A plot of CMC(k) for k = 1..len(cmc), as an H×W×3 uint8 array."""
    return curve_image(cmc, "rank 1", f"rank {len(cmc)}", width, height)


def curve_image(values: np.ndarray, first_label: str, last_label: str, width: int = 360,
                height: int = 240) -> np.ndarray:
    """A plot of `values` in [0, 1] over evenly spaced x positions labelled `first_label` … `last_label`, as an
    H×W×3 uint8 array."""
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 36, width - 10, 10, height - 24
    draw.rectangle([left, top, right, bottom], outline=GREY)
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = bottom - frac * (bottom - top)
        draw.line([left, y, right, y], fill=(225, 225, 225))
        draw.text((2, y - 6), f"{frac:.2f}", fill=GREY)
    n = len(values)
    points = [(left + (right - left) * (k / max(n - 1, 1)), bottom - float(v) * (bottom - top))
              for k, v in enumerate(values)]
    if len(points) > 1:
        draw.line(points, fill=(30, 90, 200), width=2)
    draw.text((left, bottom + 6), first_label, fill=GREY)
    draw.text((right - 50, bottom + 6), last_label, fill=GREY)
    return np.asarray(image)


def ranked_grid(query: Image.Image, ranked: Sequence[Image.Image], matches: Sequence[bool],
                tile: tuple[int, int] = (128, 64), border: int = 4) -> np.ndarray:
    """One row: the query (grey border) then the ranked gallery images with green (same identity) or red borders."""
    th, tw = tile
    cell_w = tw + 2 * border + 4
    row = Image.new("RGB", (cell_w * (1 + len(ranked)), th + 2 * border), "white")
    for i, (img, colour) in enumerate([(query, GREY)] + [(g, GREEN if m else RED) for g, m in zip(ranked, matches)]):
        x = i * cell_w
        framed = Image.new("RGB", (tw + 2 * border, th + 2 * border), colour)
        framed.paste(img.convert("RGB").resize((tw, th)), (border, border))
        row.paste(framed, (x, 0))
    return np.asarray(row)
