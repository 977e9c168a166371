"""Private rendering helpers for :mod:`data.synthetic`.

Everything here is pure NumPy/Pillow and draws from an explicit
``numpy.random.Generator`` so that the caller controls determinism.

Coordinates: images are rendered super-sampled (``SS`` times the output size)
and reduced at the end, which gives anti-aliased edges for free.
"""

from __future__ import annotations

import colorsys
import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SS = 2  # super-sampling factor used when drawing people and shapes
JPEG_QUALITY = 90


# --------------------------------------------------------------------------- #
# small utilities
# --------------------------------------------------------------------------- #
def rgb8(c) -> tuple[int, int, int]:
    """Float RGB in [0, 1] -> 8-bit tuple usable by ImageDraw."""
    return tuple(int(round(min(max(v, 0.0), 1.0) * 255)) for v in c)


def hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    return colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))


def jitter_color(rng: np.random.Generator, c, amount: float) -> tuple[float, float, float]:
    return tuple(float(min(max(v + rng.normal(0, amount), 0.0), 1.0)) for v in c)


def encode_jpeg(img: Image.Image) -> bytes:
    """Encode deterministically (fixed quality/subsampling, no metadata)."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=2, optimize=False)
    return buf.getvalue()


def smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1] of shape (h, w), via bicubic upsampling."""
    ch = max(2, int(round(cells * h / max(h, w))))
    cw = max(2, int(round(cells * w / max(h, w))))
    small = (rng.random((ch, cw)) * 255).astype(np.uint8)
    big = Image.fromarray(small, "L").resize((w, h), Image.BICUBIC)
    return np.asarray(big, dtype=np.float32) / 255.0


# --------------------------------------------------------------------------- #
# identities
# --------------------------------------------------------------------------- #
# Clothing hues (fraction of the colour wheel) plus neutrals; identities share
# this palette, so colour alone does not identify a person.
_HUES = [0.0, 0.05, 0.11, 0.16, 0.28, 0.38, 0.5, 0.58, 0.66, 0.75, 0.83, 0.92]
_NEUTRALS = [
    (0.08, 0.08, 0.09),  # black
    (0.92, 0.92, 0.9),   # white
    (0.5, 0.5, 0.52),    # grey
    (0.28, 0.28, 0.3),   # dark grey
    (0.12, 0.15, 0.32),  # navy
    (0.78, 0.7, 0.55),   # beige
    (0.38, 0.26, 0.16),  # brown
]
_SKIN = [(0.96, 0.82, 0.7), (0.9, 0.72, 0.58), (0.78, 0.58, 0.42), (0.6, 0.42, 0.28), (0.42, 0.28, 0.18)]
_HAIR = [(0.06, 0.05, 0.05), (0.22, 0.14, 0.08), (0.42, 0.28, 0.14), (0.85, 0.72, 0.42), (0.6, 0.6, 0.6),
         (0.55, 0.2, 0.08)]
TOP_PATTERNS = ("plain", "stripes_h", "stripes_v", "checks", "logo", "two_tone_h", "two_tone_v")
BOTTOMS = ("trousers", "shorts", "skirt")


def _clothing_color(rng: np.random.Generator) -> tuple[float, float, float]:
    if rng.random() < 0.3:
        return jitter_color(rng, _NEUTRALS[rng.integers(len(_NEUTRALS))], 0.02)
    # categorical colours (hue x {dark, bright}) so that identities differ clearly
    h = _HUES[rng.integers(len(_HUES))] + rng.normal(0, 0.008)
    v = (0.5, 0.88)[rng.integers(2)] + rng.normal(0, 0.03)
    return hsv(h, rng.uniform(0.75, 0.95), v)


def _scene_color(rng: np.random.Generator) -> tuple[float, float, float]:
    """Background/scene colours: mostly muted, unlike clothing."""
    return hsv(rng.random(), rng.uniform(0.08, 0.45), rng.uniform(0.3, 0.85))


def _contrasting(rng: np.random.Generator, c) -> tuple[float, float, float]:
    """A colour clearly different from ``c`` (in luminance or hue)."""
    for _ in range(20):
        d = _clothing_color(rng)
        if sum(abs(a - b) for a, b in zip(c, d)) > 0.7:
            return d
    lum = sum(c) / 3
    return (0.92, 0.92, 0.9) if lum < 0.5 else (0.08, 0.08, 0.09)


@dataclass
class Identity:
    body_w: float
    leg_frac: float
    head_scale: float
    arm_frac: float
    skin: tuple
    hair: tuple
    hair_style: str          # short | long | bald
    top: tuple
    top2: tuple
    top_pattern: str
    pattern_period: float    # fraction of person height
    logo_shape: str
    sleeves: str             # long | short
    bottom: tuple
    bottom_style: str
    shoes: tuple
    bag: str                 # none | left | right
    bag_color: tuple
    backpack: bool
    backpack_color: tuple
    hat: bool
    hat_color: tuple


def make_identity(rng: np.random.Generator) -> Identity:
    top = _clothing_color(rng)
    bottom = _clothing_color(rng)
    bag = ("none", "left", "right")[int(rng.choice(3, p=[0.6, 0.2, 0.2]))]
    return Identity(
        body_w=float(rng.uniform(0.78, 1.28)),
        leg_frac=float(rng.uniform(0.4, 0.52)),
        head_scale=float(rng.uniform(0.88, 1.12)),
        arm_frac=float(rng.uniform(0.34, 0.42)),
        skin=jitter_color(rng, _SKIN[rng.integers(len(_SKIN))], 0.02),
        hair=jitter_color(rng, _HAIR[rng.integers(len(_HAIR))], 0.02),
        hair_style=("short", "long", "bald")[int(rng.choice(3, p=[0.55, 0.35, 0.1]))],
        top=top,
        top2=_contrasting(rng, top),
        top_pattern=TOP_PATTERNS[rng.integers(len(TOP_PATTERNS))],
        pattern_period=float(rng.uniform(0.06, 0.1)),
        logo_shape=("circle", "square", "triangle")[rng.integers(3)],
        sleeves=("long", "short")[rng.integers(2)],
        bottom=bottom,
        bottom_style=BOTTOMS[int(rng.choice(3, p=[0.6, 0.25, 0.15]))],
        shoes=(_NEUTRALS[0], _NEUTRALS[1], _NEUTRALS[6], _clothing_color(rng))[
            int(rng.choice(4, p=[0.4, 0.25, 0.2, 0.15]))],
        bag=bag,
        bag_color=_clothing_color(rng),
        backpack=bool(rng.random() < 0.25),
        backpack_color=_clothing_color(rng),
        hat=bool(rng.random() < 0.2),
        hat_color=_clothing_color(rng),
    )


# --------------------------------------------------------------------------- #
# cameras
# --------------------------------------------------------------------------- #
BG_STYLES = ("wall_floor", "tiles", "foliage", "storefront", "gradient")


@dataclass
class Camera:
    gain: np.ndarray          # per-channel RGB gain (colour cast)
    brightness: float
    contrast: float
    gamma: float
    bg_style: str
    bg_colors: list
    horizon: float
    scale: float              # mean person height / box height
    x_spread: float
    blur: float               # Gaussian radius at output resolution
    noise: float
    occlusion: float          # probability of an occluder
    light_dir: float


def make_camera(rng: np.random.Generator, index: int, cast: float = 1.0) -> Camera:
    # Strong, camera-specific colour casts: a random direction in chroma space
    # plus a random white-balance tilt (warm/cool).
    tilt = rng.uniform(-1, 1)
    gain = np.exp(rng.normal(0, 0.14 * cast, 3) + np.array([0.12, 0.0, -0.12]) * tilt * cast)
    gain = gain / np.exp(np.mean(np.log(gain)))
    style = BG_STYLES[index % len(BG_STYLES)] if rng.random() < 0.7 else BG_STYLES[rng.integers(len(BG_STYLES))]
    return Camera(
        gain=gain.astype(np.float32),
        brightness=float(rng.uniform(0.75, 1.15)),
        contrast=float(rng.uniform(0.8, 1.1)),
        gamma=float(np.exp(rng.uniform(-0.25, 0.25))),
        bg_style=style,
        bg_colors=[_scene_color(rng) for _ in range(3)],
        horizon=float(rng.uniform(0.3, 0.65)),
        scale=float(rng.uniform(0.7, 0.9)),
        x_spread=float(rng.uniform(0.04, 0.1)),
        blur=float(rng.uniform(0.0, 0.7)),
        noise=float(rng.uniform(0.01, 0.035)),
        occlusion=float(rng.uniform(0.1, 0.3)),
        light_dir=float(rng.uniform(-1, 1)),
    )


# --------------------------------------------------------------------------- #
# backgrounds
# --------------------------------------------------------------------------- #
def draw_background(rng: np.random.Generator, cam: Camera, H: int, W: int) -> Image.Image:
    cols = [np.array(jitter_color(rng, c, 0.05), np.float32) for c in cam.bg_colors]
    style = cam.bg_style
    yy = np.linspace(0, 1, H, dtype=np.float32)[:, None, None]
    xx = np.linspace(0, 1, W, dtype=np.float32)[None, :, None]
    if style == "wall_floor":
        hz = cam.horizon + rng.normal(0, 0.05)
        wall = cols[0] * (0.85 + 0.3 * smooth_noise(rng, H, W, 4)[..., None])
        floor = cols[1] * (0.8 + 0.25 * yy)
        arr = np.where(yy < hz, wall, floor)
        # floor tile lines
        period = rng.uniform(0.06, 0.12)
        lines = (np.mod(yy - hz + rng.random() * period, period) < 0.012) & (yy > hz)
        arr = np.where(lines, arr * 0.7, arr)
    elif style == "tiles":
        n = smooth_noise(rng, H, W, 6)[..., None]
        arr = cols[0] * (0.75 + 0.4 * n)
        px, py = rng.uniform(0.12, 0.3), rng.uniform(0.06, 0.14)
        ox, oy = rng.random(), rng.random()
        grout = (np.mod(xx + ox, px) < 0.02) | (np.mod(yy + oy, py) < 0.012)
        arr = np.where(grout, cols[1][None, None, :] * np.ones_like(arr), arr)
    elif style == "foliage":
        n1 = smooth_noise(rng, H, W, 5)[..., None]
        n2 = smooth_noise(rng, H, W, 18)[..., None]
        t = np.clip(0.6 * n1 + 0.4 * n2, 0, 1)
        arr = cols[0] * (1 - t) + cols[1] * t
        arr = arr * (0.7 + 0.5 * n2)
    elif style == "storefront":
        arr = np.empty((H, W, 3), np.float32)
        x = 0
        k = int(rng.integers(3))
        while x < W:
            wdt = int(rng.uniform(0.15, 0.5) * W) + 1
            arr[:, x:x + wdt] = cols[k % 3] * rng.uniform(0.8, 1.1)
            k += 1
            x += wdt
        band = yy > (0.75 + rng.normal(0, 0.05))
        arr = np.where(band, cols[(k + 1) % 3] * 0.6, arr)
    else:  # gradient
        t = yy + 0.2 * (smooth_noise(rng, H, W, 3)[..., None] - 0.5)
        arr = cols[0] * (1 - t) + cols[2] * t
    arr = np.clip(arr, 0, 1)
    img = Image.fromarray((arr * 255).astype(np.uint8), "RGB")
    # clutter objects (signs, bins, windows)
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 4))):
        c = rgb8(_scene_color(rng) if rng.random() < 0.7 else _clothing_color(rng))
        x0, y0 = rng.uniform(-0.2, 1.0) * W, rng.uniform(0.0, 0.95) * H
        w, h = rng.uniform(0.1, 0.5) * W, rng.uniform(0.05, 0.3) * H
        if rng.random() < 0.5:
            d.rectangle([x0, y0, x0 + w, y0 + h], fill=c)
        else:
            d.ellipse([x0, y0, x0 + w, y0 + h], fill=c)
    return img


# --------------------------------------------------------------------------- #
# people
# --------------------------------------------------------------------------- #
@dataclass
class Pose:
    stride: float
    arm_swing: float
    shear: float
    back_view: bool
    width_jitter: float


def random_pose(rng: np.random.Generator) -> Pose:
    return Pose(
        stride=float(rng.uniform(0.0, 0.32)),
        arm_swing=float(rng.uniform(-0.3, 0.3)),
        shear=float(rng.normal(0, 0.05)),
        back_view=bool(rng.random() < 0.15),
        width_jitter=float(rng.uniform(0.92, 1.08)),
    )


def _limb(cx, cy, length, width, angle):
    """Quad for a limb hanging from (cx, cy) rotated by ``angle`` (0 = down)."""
    dx, dy = math.sin(angle), math.cos(angle)
    px, py = dy * width / 2, -dx * width / 2
    ex, ey = cx + dx * length, cy + dy * length
    return [(cx - px, cy - py), (cx + px, cy + py), (ex + px, ey + py), (ex - px, ey - py)], (ex, ey)


def draw_person(img: Image.Image, ident: Identity, pose: Pose, cx: float, top: float, ph: float) -> None:
    """Draw a stylised pedestrian (height ``ph`` px, head top at ``top``)."""
    d = ImageDraw.Draw(img)
    bw = ident.body_w * pose.width_jitter
    feet = top + ph

    def sx(x, y):  # lean/shear about the feet
        return x + pose.shear * (y - feet)

    def P(pts):
        return [(sx(x, y), y) for x, y in pts]

    rh = 0.062 * ph * ident.head_scale
    head_cy = top + rh + 0.005 * ph
    ys = head_cy + rh + 0.02 * ph
    yh = feet - ident.leg_frac * ph
    sw = 0.125 * ph * bw
    hw = 0.1 * ph * bw
    skin, C = rgb8(ident.skin), rgb8
    leg_w = 0.075 * ph * bw
    L = feet - yh - 0.02 * ph

    # long hair behind the head
    if ident.hair_style == "long":
        d.polygon(P([(cx - rh * 1.1, head_cy), (cx + rh * 1.1, head_cy),
                     (cx + rh * 1.2, ys + 0.06 * ph), (cx - rh * 1.2, ys + 0.06 * ph)]), fill=C(ident.hair))
    # backpack edges peek out behind the torso (front view)
    if ident.backpack and not pose.back_view:
        d.polygon(P([(cx - sw - 0.03 * ph, ys + 0.02 * ph), (cx + sw + 0.03 * ph, ys + 0.02 * ph),
                     (cx + sw + 0.03 * ph, ys + 0.22 * ph), (cx - sw - 0.03 * ph, ys + 0.22 * ph)]),
                  fill=C(ident.backpack_color))

    # legs (skin first for shorts/skirt, trousers otherwise)
    leg_color = C(ident.bottom) if ident.bottom_style == "trousers" else skin
    feet_pts = []
    for side in (-1, 1):
        ang = side * pose.stride * 0.5
        quad, end = _limb(cx + side * hw * 0.5, yh, L, leg_w, ang)
        d.polygon(P(quad), fill=leg_color)
        feet_pts.append(end)
        if ident.bottom_style == "shorts":
            q2, _ = _limb(cx + side * hw * 0.5, yh, L * 0.42, leg_w * 1.15, ang)
            d.polygon(P(q2), fill=C(ident.bottom))
    for fx, fy in feet_pts:
        r = 0.045 * ph
        x = sx(fx, fy)
        d.ellipse([x - r, fy - r * 0.55, x + r, fy + r * 0.45], fill=C(ident.shoes))
    if ident.bottom_style == "skirt":
        d.polygon(P([(cx - hw, yh - 0.01 * ph), (cx + hw, yh - 0.01 * ph),
                     (cx + hw * 1.45, yh + 0.5 * L), (cx - hw * 1.45, yh + 0.5 * L)]), fill=C(ident.bottom))

    # torso with a clothing pattern, pasted through a polygon mask
    torso = P([(cx - sw, ys), (cx + sw, ys), (cx + hw, yh + 0.01 * ph), (cx - hw, yh + 0.01 * ph)])
    if ident.bottom_style != "skirt":  # hips / belt area in bottom colour
        d.polygon(P([(cx - hw, yh - 0.03 * ph), (cx + hw, yh - 0.03 * ph),
                     (cx + hw * 1.05, yh + 0.04 * ph), (cx - hw * 1.05, yh + 0.04 * ph)]), fill=C(ident.bottom))
    _draw_top(img, ident, pose, torso, cx, ys, yh, sw, ph)

    # arms
    aw = 0.055 * ph * bw
    al = ident.arm_frac * ph
    for side, swing in ((-1, pose.arm_swing), (1, -pose.arm_swing)):
        ang = side * 0.12 + swing
        ax = cx + side * (sw - aw * 0.35)
        quad, end = _limb(ax, ys + 0.012 * ph, al, aw, ang)
        d.polygon(P(quad), fill=C(ident.top) if ident.sleeves == "long" else skin)
        if ident.sleeves == "short":
            q2, _ = _limb(ax, ys + 0.012 * ph, al * 0.4, aw * 1.15, ang)
            d.polygon(P(q2), fill=C(ident.top))
        hx = sx(*end)
        r = aw * 0.55
        d.ellipse([hx - r, end[1] - r, hx + r, end[1] + r], fill=skin)

    # backpack straps (front) or pack (back view)
    if ident.backpack:
        if pose.back_view:
            d.rounded_rectangle([sx(cx - sw * 0.8, ys), ys + 0.02 * ph, sx(cx + sw * 0.8, ys) , ys + 0.24 * ph],
                                radius=0.02 * ph, fill=C(ident.backpack_color))
        else:
            for side in (-1, 1):
                x = cx + side * sw * 0.55
                d.line(P([(x, ys), (x + side * 0.01 * ph, ys + 0.16 * ph)]), fill=C(ident.backpack_color),
                       width=max(1, int(0.022 * ph)))
    # shoulder bag hanging on one side (image coordinates)
    if ident.bag != "none":
        side = -1 if ident.bag == "left" else 1
        bx = cx + side * (sw + 0.03 * ph)
        d.line(P([(cx - side * sw * 0.7, ys), (bx, yh - 0.02 * ph)]), fill=C(ident.bag_color),
               width=max(1, int(0.015 * ph)))
        bwid, bh = 0.1 * ph, 0.11 * ph
        d.rectangle([sx(bx, yh) - bwid / 2, yh - 0.04 * ph, sx(bx, yh) + bwid / 2, yh - 0.04 * ph + bh],
                    fill=C(ident.bag_color))

    # head, hair, hat
    hx = sx(cx, head_cy)
    if pose.back_view and ident.hair_style != "bald":
        d.ellipse([hx - rh, head_cy - rh, hx + rh, head_cy + rh], fill=C(ident.hair))
    else:
        d.ellipse([hx - rh * 0.9, head_cy - rh, hx + rh * 0.9, head_cy + rh], fill=skin)
        if ident.hair_style != "bald":
            d.chord([hx - rh * 1.02, head_cy - rh * 1.08, hx + rh * 1.02, head_cy + rh * 0.9], 180, 360,
                    fill=C(ident.hair))
    if ident.hat:
        d.chord([hx - rh * 1.05, head_cy - rh * 1.25, hx + rh * 1.05, head_cy + rh * 0.6], 180, 360,
                fill=C(ident.hat_color))
        d.rectangle([hx - rh * 1.35, head_cy - rh * 0.4, hx + rh * 1.35, head_cy - rh * 0.2],
                    fill=C(ident.hat_color))


def _draw_top(img, ident, pose, torso, cx, ys, yh, sw, ph):
    W, H = img.size
    cx = (torso[0][0] + torso[1][0]) / 2  # sheared shoulder centre
    mask = Image.new("L", (W, H), 0)
    ImageDraw.Draw(mask).polygon(torso, fill=255)
    xs = [p[0] for p in torso]
    x0, x1 = int(min(xs)) - 2, int(max(xs)) + 3
    y0, y1 = int(ys) - 2, int(yh) + 4
    c1, c2 = rgb8(ident.top), rgb8(ident.top2)
    pat = Image.new("RGB", (W, H), c1)
    pd = ImageDraw.Draw(pat)
    p = max(2.0, ident.pattern_period * ph)
    kind = ident.top_pattern
    if kind == "stripes_h":
        y = ys + p / 2
        while y < y1:
            pd.rectangle([x0, y, x1, y + p / 2], fill=c2)
            y += p
    elif kind == "stripes_v":
        x = cx - p / 4
        while x > x0:
            x -= p
        while x < x1:
            pd.rectangle([x, y0, x + p / 2, y1], fill=c2)
            x += p
    elif kind == "checks":
        row = 0
        y = ys
        while y < y1:
            x = cx - 4 * p + (row % 2) * p
            while x < x1:
                pd.rectangle([x, y, x + p - 1, y + p - 1], fill=c2)
                x += 2 * p
            y += p
            row += 1
    elif kind == "logo" and not pose.back_view:
        r = 0.06 * ph
        lx, ly = cx, ys + 0.1 * ph
        if ident.logo_shape == "circle":
            pd.ellipse([lx - r, ly - r, lx + r, ly + r], fill=c2)
        elif ident.logo_shape == "square":
            pd.rectangle([lx - r, ly - r, lx + r, ly + r], fill=c2)
        else:
            pd.polygon([(lx, ly - r * 1.2), (lx + r * 1.2, ly + r), (lx - r * 1.2, ly + r)], fill=c2)
    elif kind == "two_tone_h":
        pd.rectangle([x0, (ys + yh) / 2, x1, y1], fill=c2)
    elif kind == "two_tone_v":
        pd.rectangle([cx, y0, x1, y1], fill=c2)
    img.paste(pat, (0, 0), mask)


# --------------------------------------------------------------------------- #
# occluders and photometry
# --------------------------------------------------------------------------- #
def draw_occluder(img: Image.Image, rng: np.random.Generator) -> None:
    W, H = img.size
    d = ImageDraw.Draw(img)
    kind = rng.integers(4)
    c = rgb8(_scene_color(rng)) if rng.random() < 0.7 else rgb8(_clothing_color(rng))
    if kind == 0:  # pole
        w = rng.uniform(0.07, 0.14) * W
        x = rng.uniform(0.05, 0.95) * W
        d.rectangle([x - w / 2, -1, x + w / 2, H + 1], fill=c)
    elif kind == 1:  # bench / car from the bottom
        h = rng.uniform(0.15, 0.32) * H
        d.rectangle([-1, H - h, W + 1, H + 1], fill=c)
    elif kind == 2:  # side object
        w = rng.uniform(0.2, 0.35) * W
        y = rng.uniform(0.0, 0.6) * H
        if rng.random() < 0.5:
            d.rectangle([-1, y, w, y + rng.uniform(0.3, 0.6) * H], fill=c)
        else:
            d.rectangle([W - w, y, W + 1, y + rng.uniform(0.3, 0.6) * H], fill=c)
    else:  # random blob
        w, h = rng.uniform(0.25, 0.5) * W, rng.uniform(0.1, 0.25) * H
        x, y = rng.uniform(0, 1) * W - w / 2, rng.uniform(0.2, 1.0) * H - h / 2
        d.ellipse([x, y, x + w, y + h], fill=c)


def photometric(img: Image.Image, cam: Camera, rng: np.random.Generator, out_size: tuple[int, int],
                jitter: float = 1.0) -> Image.Image:
    """Camera response: colour cast, brightness, contrast, gamma, light gradient, blur, noise."""
    arr = np.asarray(img, dtype=np.float32) / 255.0
    H, W = arr.shape[:2]
    gain = cam.gain * np.exp(rng.normal(0, 0.05 * jitter, 3)).astype(np.float32)
    bright = cam.brightness * float(np.exp(rng.normal(0, 0.1 * jitter)))
    xx = np.linspace(-0.5, 0.5, W, dtype=np.float32)[None, :, None]
    yy = np.linspace(-0.5, 0.5, H, dtype=np.float32)[:, None, None]
    light = 1.0 + 0.25 * (cam.light_dir + rng.normal(0, 0.3)) * xx + 0.15 * rng.normal() * yy
    arr = arr * gain * bright * light
    mean = arr.mean()
    arr = (arr - mean) * cam.contrast * float(np.exp(rng.normal(0, 0.05 * jitter))) + mean
    arr = np.clip(arr, 0, 1) ** (cam.gamma * float(np.exp(rng.normal(0, 0.05 * jitter))))
    out = Image.fromarray((arr * 255 + 0.5).astype(np.uint8), "RGB").resize(out_size, Image.BILINEAR,
                                                                           reducing_gap=None)
    radius = max(0.0, cam.blur + rng.normal(0, 0.25))
    if radius > 0.15:
        out = out.filter(ImageFilter.GaussianBlur(radius))
    a = np.asarray(out, dtype=np.float32)
    a = a + rng.normal(0, cam.noise * 255, a.shape).astype(np.float32)
    return Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8), "RGB")


# --------------------------------------------------------------------------- #
# Market-style crops
# --------------------------------------------------------------------------- #
def render_reid(ident: Identity, cam: Camera, rng: np.random.Generator, h: int, w: int) -> Image.Image:
    """One detection crop of ``ident`` as seen by ``cam``."""
    H, W = h * SS, w * SS
    img = draw_background(rng, cam, H, W)
    # an unrelated passer-by behind the target
    if rng.random() < 0.1:
        other = make_identity(rng)
        ph2 = H * rng.uniform(0.6, 0.9)
        cx2 = W * (0.5 + rng.choice([-1, 1]) * rng.uniform(0.45, 0.7))
        draw_person(img, other, random_pose(rng), cx2, rng.uniform(0.0, 0.15) * H, ph2)
    scale = float(np.clip(cam.scale + rng.normal(0, 0.06), 0.55, 1.02))
    ph = H * scale
    top = rng.uniform(0.0, max(0.0, H - ph)) if ph < H else rng.uniform(-0.03, 0.0) * H
    top += rng.normal(0, 0.02) * H
    cx = W * (0.5 + rng.normal(0, cam.x_spread))
    d = ImageDraw.Draw(img)
    sh = 0.18 * ph  # ground shadow
    d.ellipse([cx - sh, top + ph - 0.025 * ph, cx + sh, top + ph + 0.025 * ph], fill=(20, 20, 20))
    draw_person(img, ident, random_pose(rng), cx, top, ph)
    if rng.random() < cam.occlusion:
        draw_occluder(img, rng)
    return photometric(img, cam, rng, (w, h))


def render_distractor(cam: Camera, rng: np.random.Generator, h: int, w: int) -> Image.Image:
    """A gallery distractor (pid 0000): background or a partial unrelated person."""
    H, W = h * SS, w * SS
    img = draw_background(rng, cam, H, W)
    mode = rng.integers(3)
    if mode > 0:
        ident = make_identity(rng)
        ph = H * rng.uniform(1.3, 2.2)  # zoomed-in part of a body
        top = -rng.uniform(0.0, 1.0) * (ph - H) if mode == 1 else rng.uniform(0.35, 0.6) * H
        cx = W * rng.uniform(0.2, 0.8)
        if mode == 2:  # upper body of a person entering from the bottom
            ph = H * rng.uniform(0.8, 1.1)
        draw_person(img, ident, random_pose(rng), cx, top, ph)
    if rng.random() < 0.5:
        draw_occluder(img, rng)
    return photometric(img, cam, rng, (w, h))


def render_junk(cam: Camera, rng: np.random.Generator, h: int, w: int) -> Image.Image:
    """A junk detection (pid -1): near-empty or badly cropped box."""
    H, W = h * SS, w * SS
    img = draw_background(rng, cam, H, W)
    if rng.random() < 0.6:
        ident = make_identity(rng)
        ph = H * rng.uniform(0.25, 0.5)
        cx = W * rng.choice([rng.uniform(-0.2, 0.1), rng.uniform(0.9, 1.2)])
        draw_person(img, ident, random_pose(rng), cx, rng.uniform(0.0, 0.6) * H, ph)
    out = photometric(img, cam, rng, (w, h))
    if rng.random() < 0.5:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(2.0, 4.0)))
    return out


# --------------------------------------------------------------------------- #
# classification shapes
# --------------------------------------------------------------------------- #
SHAPES = ("circle", "square", "triangle", "cross", "star", "ring", "diamond", "hexagon")


def _shape_polygon(kind: str, cx: float, cy: float, r: float, rot: float) -> list:
    def ring_pts(n, radius, phase=0.0):
        return [(cx + radius * math.cos(rot + phase + 2 * math.pi * k / n),
                 cy + radius * math.sin(rot + phase + 2 * math.pi * k / n)) for k in range(n)]

    if kind == "square":
        return ring_pts(4, r, math.pi / 4)
    if kind == "triangle":
        return ring_pts(3, r)
    if kind == "diamond":
        pts = ring_pts(4, r)
        return [((x - cx) * 0.6 + cx, y) if i % 2 == 0 else (x, y) for i, (x, y) in enumerate(pts)]
    if kind == "hexagon":
        return ring_pts(6, r)
    if kind == "star":
        outer, inner = ring_pts(5, r), ring_pts(5, r * 0.42, math.pi / 5)
        return [p for pair in zip(outer, inner) for p in pair]
    if kind == "cross":
        a, b = r, r * 0.33
        base = [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b), (-a, -b),
                (-b, -b)]
        c, s = math.cos(rot), math.sin(rot)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in base]
    raise ValueError(kind)


def render_shape(kind: str, rng: np.random.Generator, size: int) -> Image.Image:
    """A shape of class ``kind`` with random colour, pose and a cluttered background."""
    S = size * SS
    cols = [np.array(_clothing_color(rng), np.float32) for _ in range(2)]
    t = smooth_noise(rng, S, S, int(rng.integers(2, 8)))[..., None]
    arr = cols[0] * (1 - t) + cols[1] * t
    img = Image.fromarray((np.clip(arr, 0, 1) * 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 6))):  # clutter lines
        d.line([tuple(rng.uniform(0, S, 2)), tuple(rng.uniform(0, S, 2))], fill=rgb8(_clothing_color(rng)),
               width=int(rng.integers(1, 4)))
    bg_mean = arr.mean(axis=(0, 1))
    for _ in range(20):
        fg = np.array(_clothing_color(rng))
        if np.abs(fg - bg_mean).sum() > 0.45:
            break
    r = rng.uniform(0.22, 0.4) * S
    cx, cy = rng.uniform(r, S - r), rng.uniform(r, S - r)
    rot = rng.uniform(0, 2 * math.pi)
    if kind == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=rgb8(fg))
    elif kind == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=rgb8(fg), width=max(2, int(r * 0.35)))
    else:
        d.polygon(_shape_polygon(kind, cx, cy, r, rot), fill=rgb8(fg))
    a = np.asarray(img.resize((size, size), Image.BILINEAR), np.float32)
    a = a * np.exp(rng.normal(0, 0.1, 3)) + rng.normal(0, 6, a.shape)
    out = Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8), "RGB")
    if rng.random() < 0.3:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    return out


# --------------------------------------------------------------------------- #
# tracking sequences
# --------------------------------------------------------------------------- #
def _texture(rng: np.random.Generator, w: int, h: int, colors=None) -> Image.Image:
    """RGBA textured object (ellipse or rounded box) of size (w, h)."""
    cols = colors or [rgb8(_clothing_color(rng)) for _ in range(3)]
    tex = Image.new("RGB", (w, h), cols[0])
    d = ImageDraw.Draw(tex)
    kind = rng.integers(3)
    p = max(3, int(min(w, h) * rng.uniform(0.12, 0.25)))
    if kind == 0:  # stripes
        for k in range(-h, w + h, 2 * p):
            d.polygon([(k, 0), (k + p, 0), (k + p + h // 2, h), (k + h // 2, h)], fill=cols[1])
    elif kind == 1:  # checker
        for i in range(0, w, p):
            for j in range(0, h, p):
                if (i // p + j // p) % 2:
                    d.rectangle([i, j, i + p - 1, j + p - 1], fill=cols[1])
    else:  # spots
        for _ in range(int(rng.integers(4, 10))):
            x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.08, 0.2) * min(w, h)
            d.ellipse([x - r, y - r, x + r, y + r], fill=cols[int(rng.integers(1, 3))])
    d.rectangle([w * 0.3, h * 0.35, w * 0.7, h * 0.65], outline=cols[2], width=max(1, w // 16))
    mask = Image.new("L", (w, h), 0)
    md = ImageDraw.Draw(mask)
    if rng.random() < 0.5:
        md.ellipse([0, 0, w - 1, h - 1], fill=255)
    else:
        md.rounded_rectangle([0, 0, w - 1, h - 1], radius=min(w, h) // 5, fill=255)
    tex.putalpha(mask)
    return tex


def _smooth_path(rng: np.random.Generator, n: int, lo: float, hi: float, wiggle: float) -> np.ndarray:
    """Smooth 1-D trajectory in [lo, hi] over n frames (sum of slow sinusoids)."""
    t = np.arange(n, dtype=np.float64) / max(n - 1, 1)
    mid, amp = (lo + hi) / 2, (hi - lo) / 2
    x = mid + amp * rng.uniform(-0.4, 0.4)
    for k in range(1, 3):
        x = x + amp * wiggle / k * np.sin(2 * math.pi * rng.uniform(0.3, 1.0) * k * t + rng.uniform(0, 2 * math.pi))
    return np.clip(x, lo, hi)


def _stamp(labels: np.ndarray, region: np.ndarray, x0: int, y0: int, value: int) -> None:
    """Set ``labels`` to ``value`` where the bool ``region``, placed with its top-left pixel at (x0, y0), is True
    (clipped to the frame, as ``Image.paste`` clips)."""
    H, W = labels.shape
    h, w = region.shape
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + w, W), min(y0 + h, H)
    if xa < xb and ya < yb:
        labels[ya:yb, xa:xb][region[ya - y0:yb - y0, xa - x0:xb - x0]] = value


def render_sequence(rng: np.random.Generator, n: int, W: int, H: int, *, masks: bool = False):
    """Render one tracking sequence.

    Returns ``(frames, boxes, absence, cover, cut, meta)``: PIL frames, an (n, 4)
    float array of x, y, w, h boxes (inside the image), and per-frame labels.

    With ``masks=True`` a seventh element follows: an (n, H, W) uint8 array of
    object ids per pixel, 1 the target, 2, 3, … the distractors in drawing
    order, 0 the background and the occluding bar. An object owns the pixels
    where it was pasted with alpha above 127 (the threshold ``cover`` uses) and
    that nothing drawn later covers: the visible part, which is what DAVIS
    annotates. The bar's pixels are those of the very rectangle drawn on the
    frame. Computing them draws no random numbers, so the frames, boxes and
    labels are the same with or without masks.
    """
    # a world larger than the frame; the camera pans across it
    WW, WH = 2 * W, 2 * H
    cols = [np.array(_clothing_color(rng), np.float32) for _ in range(3)]
    t = smooth_noise(rng, WH, WW, 8)[..., None]
    world = np.clip(cols[0] * (1 - t) + cols[1] * t, 0, 1)
    world = Image.fromarray((world * 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(world)
    for _ in range(int(rng.integers(25, 45))):
        c = rgb8(_clothing_color(rng))
        x, y = rng.uniform(0, WW), rng.uniform(0, WH)
        w, h = rng.uniform(0.03, 0.2) * W, rng.uniform(0.03, 0.2) * H
        [d.rectangle, d.ellipse][int(rng.integers(2))]([x, y, x + w, y + h], fill=c)
    pan_x = _smooth_path(rng, n, 0, WW - W, 0.3)
    pan_y = _smooth_path(rng, n, 0, WH - H, 0.3)

    base = rng.uniform(0.18, 0.3) * min(W, H)
    aspect = math.exp(rng.uniform(-0.5, 0.5))
    tw0, th0 = base * math.sqrt(aspect), base / math.sqrt(aspect)
    target_tex = _texture(rng, 96, 96)
    scale = np.exp(_smooth_path(rng, n, -0.45, 0.45, 0.6))
    cxs = _smooth_path(rng, n, 0.15 * W, 0.85 * W, 0.5)
    cys = _smooth_path(rng, n, 0.15 * H, 0.85 * H, 0.5)
    # distractors: one shares the target's colours, others are random
    distractors = []
    for k in range(int(rng.integers(2, 4))):
        tex = _texture(rng, 96, 96)
        sizes = base * rng.uniform(0.7, 1.3) * np.exp(_smooth_path(rng, n, -0.3, 0.3, 0.6))
        distractors.append((tex, sizes, _smooth_path(rng, n, 0, W, 0.6), _smooth_path(rng, n, 0, H, 0.6)))
    # one occluding bar sweeps across the target at frame t_occ
    t_occ = int(rng.integers(n // 4, 3 * n // 4 + 1))
    occ_w = tw0 * scale[t_occ] * rng.uniform(0.6, 1.5)
    occ_v = rng.choice([-1, 1]) * rng.uniform(0.3, 0.6) * occ_w
    occ_x = cxs[t_occ] + occ_v * (np.arange(n) - t_occ)
    occ_col = rgb8(_clothing_color(rng))

    frames, boxes, absence, cover, cut, label_maps = [], [], [], [], [], []
    for f in range(n):
        frame = world.crop((int(pan_x[f]), int(pan_y[f]), int(pan_x[f]) + W, int(pan_y[f]) + H))
        labels = np.zeros((H, W), np.uint8) if masks else None
        for k, (tex, sizes, xs, ys) in enumerate(distractors):
            s = max(4, int(sizes[f]))
            dobj = tex.resize((s, s), Image.BILINEAR)
            frame.paste(dobj, (int(xs[f] - s / 2), int(ys[f] - s / 2)), dobj)
            if labels is not None:
                _stamp(labels, np.asarray(dobj.getchannel("A")) > 127, int(xs[f] - s / 2), int(ys[f] - s / 2), k + 2)
        tw, th = max(4, int(round(tw0 * scale[f]))), max(4, int(round(th0 * scale[f])))
        x0, y0 = int(round(cxs[f] - tw / 2)), int(round(cys[f] - th / 2))
        obj = target_tex.resize((tw, th), Image.BILINEAR)
        frame.paste(obj, (x0, y0), obj)
        ox0, ox1 = occ_x[f] - occ_w / 2, occ_x[f] + occ_w / 2
        ImageDraw.Draw(frame).rectangle([ox0, 0, ox1, H], fill=occ_col)
        # visibility from the object's alpha mask
        alpha = np.asarray(obj.getchannel("A"), np.float32) > 127
        if labels is not None:
            _stamp(labels, alpha, x0, y0, 1)
            bar = Image.new("L", (W, H), 0)
            ImageDraw.Draw(bar).rectangle([ox0, 0, ox1, H], fill=255)
            labels[np.asarray(bar) > 0] = 0
            label_maps.append(labels)
        xs_ = np.arange(x0, x0 + tw)[None, :]
        ys_ = np.arange(y0, y0 + th)[:, None]
        inside = (xs_ >= 0) & (xs_ < W) & (ys_ >= 0) & (ys_ < H)
        occluded = (xs_ + 0.5 >= ox0) & (xs_ + 0.5 <= ox1)
        total = max(alpha.sum(), 1)
        vis = float((alpha & inside & ~occluded).sum()) / total
        bx0, by0 = max(0, x0), max(0, y0)
        bx1, by1 = min(W, x0 + tw), min(H, y0 + th)
        boxes.append((bx0, by0, max(1, bx1 - bx0), max(1, by1 - by0)))
        cut.append(int(x0 < 0 or y0 < 0 or x0 + tw > W or y0 + th > H))
        cv = 0 if vis <= 0.0 else (8 if vis >= 0.999 else int(min(7, max(1, math.floor(vis * 8)))))
        cover.append(cv)
        absence.append(int(cv == 0))
        a = np.asarray(frame, np.float32) * float(np.exp(rng.normal(0, 0.04))) + rng.normal(0, 4, (H, W, 3))
        frames.append(Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8), "RGB"))
    speed = float(np.mean(np.hypot(np.diff(cxs), np.diff(cys)))) / base if n > 1 else 0.0
    meta = {
        "object_class": "textured object",
        "motion_class": "translation and scaling",
        "major_class": "synthetic object",
        "root_class": "object",
        "motion_adverb": "slowly" if speed < 0.05 else "quickly",
    }
    result = frames, np.asarray(boxes, np.float64), absence, cover, cut, meta
    return result + (np.stack(label_maps),) if masks else result
