"""Second rendering style of :mod:`data.synthetic`'s Market-1501 generator: ``style="street"``.

Defaults tuned on one synthetic style can overfit its quirks, so this style shares nothing with
:mod:`data._render`'s but the output contract: other body model (capsule limbs with knees and elbows, an elliptic
torso, front / back / side views with view-dependent garments), other clothing (coats of three lengths, dots,
diagonals, yokes, open jackets, front prints, side panels, scarves, caps, ponytails), other palette, other scenes
(brick and plaster facades with windows, crosswalks, park paths, paved plazas and night streets, drawn in
perspective) and other camera effects (roll, low resolution, vignetting, motion blur, a gamma / S-curve response,
signal-dependent sensor noise, in-camera JPEG at a per-camera quality).

Identity is carried by garments, colours, build, hair and accessories that stay the same in every camera; what makes
it hard is that cameras recolour and degrade them differently, that front-only garments (prints, open jackets,
straps) and back-only ones (backpacks) come and go with the view, and that identities share one palette.

Same interface as :mod:`data._render` (``make_identity``, ``make_camera``, ``render_reid``, ``render_distractor``,
``render_junk``) and the same determinism rule: everything draws from the ``numpy.random.Generator`` it is given.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from data._render import SS, hsv, jitter_color, rgb8, smooth_noise

# --------------------------------------------------------------------------- #
# palette (deliberately not _render's: other hues, three value levels, earthier neutrals, denim)
# --------------------------------------------------------------------------- #
_HUES = [0.02, 0.07, 0.13, 0.2, 0.33, 0.45, 0.53, 0.61, 0.7, 0.8, 0.9, 0.96]
_VALUES = (0.32, 0.58, 0.85)
_NEUTRALS = [(0.06, 0.06, 0.07), (0.95, 0.95, 0.93), (0.62, 0.62, 0.64), (0.36, 0.36, 0.38), (0.2, 0.22, 0.3),
             (0.55, 0.45, 0.32), (0.3, 0.34, 0.22), (0.45, 0.12, 0.14)]
_DENIM = [(0.16, 0.22, 0.4), (0.3, 0.4, 0.6), (0.5, 0.6, 0.75), (0.12, 0.13, 0.18)]
_SKIN = [(0.98, 0.85, 0.74), (0.88, 0.7, 0.56), (0.74, 0.54, 0.4), (0.55, 0.38, 0.26), (0.36, 0.24, 0.16)]
_HAIR = [(0.04, 0.03, 0.03), (0.25, 0.16, 0.09), (0.5, 0.33, 0.16), (0.9, 0.78, 0.5), (0.7, 0.7, 0.72),
         (0.6, 0.22, 0.1)]

TOP_PATTERNS = ("plain", "dots", "diagonal", "yoke", "open_jacket", "print", "side_panels")
COAT_LENGTHS = ("waist", "hip", "knee")
BOTTOMS = ("jeans", "trousers", "shorts", "skirt")
HAIR_STYLES = ("short", "long", "ponytail", "bun", "bald")
SCENES = ("facade", "crosswalk", "park", "plaza", "night")
VIEWS = ("front", "back", "left", "right")


def _garment_color(rng: np.random.Generator) -> tuple[float, float, float]:
    if rng.random() < 0.35:
        return jitter_color(rng, _NEUTRALS[rng.integers(len(_NEUTRALS))], 0.025)
    h = _HUES[rng.integers(len(_HUES))] + rng.normal(0, 0.01)
    return hsv(h, rng.uniform(0.45, 0.9), _VALUES[rng.integers(len(_VALUES))] + rng.normal(0, 0.03))


def _other_color(rng: np.random.Generator, c) -> tuple[float, float, float]:
    """A garment colour visibly different from ``c``."""
    for _ in range(20):
        d = _garment_color(rng)
        if sum(abs(a - b) for a, b in zip(c, d)) > 0.6:
            return d
    return (0.95, 0.95, 0.93) if sum(c) / 3 < 0.5 else (0.06, 0.06, 0.07)


def _muted(rng: np.random.Generator, lo: float = 0.25, hi: float = 0.8) -> np.ndarray:
    """Scene colours: low saturation, unlike garments."""
    return np.array(hsv(rng.random(), rng.uniform(0.05, 0.35), rng.uniform(lo, hi)), np.float32)


# --------------------------------------------------------------------------- #
# identities
# --------------------------------------------------------------------------- #
@dataclass
class Walker:
    build: float             # width factor
    leg_frac: float          # legs' share of the height
    head: float              # head size factor
    stride: float            # typical step amplitude (radians)
    skin: tuple
    hair: tuple
    hair_style: str
    top: tuple
    top2: tuple
    top_pattern: str
    pattern_scale: float     # fraction of the person's height
    print_kind: int          # which front print (pattern "print")
    sleeves: str             # long | short
    sleeve_color: tuple      # raglan / contrast sleeves, or the top colour
    coat: str                # how far the top reaches: waist | hip | knee
    bottom: tuple
    bottom_style: str
    shoes: tuple
    hat: str                 # none | cap | beanie
    hat_color: tuple
    scarf: tuple | None
    backpack: tuple | None
    bag: str                 # none | left | right (a tote hanging from one hand)
    bag_color: tuple


def make_identity(rng: np.random.Generator) -> Walker:
    top = _garment_color(rng)
    top2 = _other_color(rng, top)
    style = BOTTOMS[int(rng.choice(4, p=[0.4, 0.3, 0.15, 0.15]))]
    return Walker(
        build=float(rng.uniform(0.8, 1.25)),
        leg_frac=float(rng.uniform(0.45, 0.55)),
        head=float(rng.uniform(0.9, 1.12)),
        stride=float(rng.uniform(0.15, 0.4)),
        skin=jitter_color(rng, _SKIN[rng.integers(len(_SKIN))], 0.02),
        hair=jitter_color(rng, _HAIR[rng.integers(len(_HAIR))], 0.02),
        hair_style=HAIR_STYLES[int(rng.choice(5, p=[0.4, 0.25, 0.15, 0.1, 0.1]))],
        top=top,
        top2=top2,
        top_pattern=TOP_PATTERNS[rng.integers(len(TOP_PATTERNS))],
        pattern_scale=float(rng.uniform(0.045, 0.08)),
        print_kind=int(rng.integers(4)),
        sleeves=("long", "short")[int(rng.random() < 0.35)],
        sleeve_color=top2 if rng.random() < 0.2 else top,
        coat=COAT_LENGTHS[int(rng.choice(3, p=[0.45, 0.35, 0.2]))],
        bottom=_DENIM[rng.integers(len(_DENIM))] if style == "jeans" else _garment_color(rng),
        bottom_style=style,
        shoes=(_NEUTRALS[0], _NEUTRALS[1], _NEUTRALS[5], _garment_color(rng))[
            int(rng.choice(4, p=[0.35, 0.3, 0.2, 0.15]))],
        hat=("none", "cap", "beanie")[int(rng.choice(3, p=[0.75, 0.15, 0.1]))],
        hat_color=_garment_color(rng),
        scarf=_garment_color(rng) if rng.random() < 0.15 else None,
        backpack=_garment_color(rng) if rng.random() < 0.3 else None,
        bag=("none", "left", "right")[int(rng.choice(3, p=[0.7, 0.15, 0.15]))],
        bag_color=_garment_color(rng),
    )


# --------------------------------------------------------------------------- #
# cameras
# --------------------------------------------------------------------------- #
@dataclass
class StreetCamera:
    scene: str
    colors: list             # scene colours (float RGB arrays)
    horizon: float           # fraction of the height
    vanish_x: float          # vanishing point, fraction of the width
    period: float            # main texture period (bricks, tiles, stripes), fraction of the width
    views: np.ndarray        # probabilities of front / back / left / right at this spot
    scale: float             # person height / box height
    squash: float            # person width factor (steep cameras see people narrower)
    x_spread: float
    roll: float              # degrees
    gain: np.ndarray         # RGB colour cast
    exposure: float
    gamma: float
    s_curve: float           # contrast of the response curve
    vignette: float
    lowres: float            # sensor resolution / output resolution (<= 1)
    blur_prob: float         # probability of motion blur per image
    shot_noise: float
    read_noise: float
    jpeg_quality: int
    occlusion: float


def make_camera(rng: np.random.Generator, index: int) -> StreetCamera:
    scene = SCENES[index % len(SCENES)] if rng.random() < 0.6 else SCENES[rng.integers(len(SCENES))]
    night = scene == "night"
    tilt = rng.uniform(-1, 1)
    gain = np.exp(rng.normal(0, 0.12, 3) + np.array([-0.1, 0.02, 0.1]) * tilt)  # cool/warm tilt, other sign
    views = rng.dirichlet([2.0, 2.0, 1.0, 1.0])
    return StreetCamera(
        scene=scene,
        colors=[_muted(rng) for _ in range(4)],
        horizon=float(rng.uniform(0.25, 0.5)),
        vanish_x=float(rng.uniform(0.2, 0.8)),
        period=float(rng.uniform(0.12, 0.3)),
        views=views,
        scale=float(rng.uniform(0.72, 0.92)),
        squash=float(rng.uniform(0.85, 1.05)),
        x_spread=float(rng.uniform(0.03, 0.08)),
        roll=float(rng.normal(0, 2.5)),
        gain=(gain / np.exp(np.mean(np.log(gain)))).astype(np.float32),
        exposure=float(rng.uniform(0.45, 0.7) if night else rng.uniform(0.8, 1.2)),
        gamma=float(np.exp(rng.uniform(-0.3, 0.2))),
        s_curve=float(rng.uniform(0.0, 0.6)),
        vignette=float(rng.uniform(0.05, 0.45)),
        lowres=float(rng.uniform(0.5, 1.0)),
        blur_prob=float(rng.uniform(0.0, 0.5)),
        shot_noise=float(rng.uniform(0.002, 0.01) * (2.5 if night else 1.0)),
        read_noise=float(rng.uniform(0.005, 0.02) * (2.0 if night else 1.0)),
        jpeg_quality=int(rng.integers(25, 80)),
        occlusion=float(rng.uniform(0.1, 0.3)),
    )


# --------------------------------------------------------------------------- #
# scenes
# --------------------------------------------------------------------------- #
def _grid(H: int, W: int):
    yy = np.linspace(0, 1, H, dtype=np.float32)[:, None]
    xx = np.linspace(0, 1, W, dtype=np.float32)[None, :]
    return yy, xx


def _ground(cam: StreetCamera, H: int, W: int, hz: float, pan: float):
    """Perspective coordinates of the ground plane: depth lines (1 / distance below the horizon) and lateral
    position, both growing towards the camera; NaN-free above the horizon (masked by the caller)."""
    yy, xx = _grid(H, W)
    below = np.maximum(yy - hz, 1e-3)
    depth = 1.0 / below
    lateral = (xx - cam.vanish_x - pan) / below
    return yy > hz, depth, lateral


def _bricks(rng: np.random.Generator, H: int, W: int, base: np.ndarray, mortar: np.ndarray, period: float,
            pan: float) -> np.ndarray:
    yy, xx = _grid(H, W)
    bh, bw = period * 0.3 * W / H, period
    row = np.floor(yy / bh).astype(np.int64)
    x = xx + pan + 0.5 * bw * (row % 2)
    col = np.floor(x / bw).astype(np.int64)
    col -= col.min()
    shade = rng.normal(0, 0.06, (row.max() + 1, col.max() + 1)).astype(np.float32)  # one tone per brick
    arr = base * (1 + shade[row, col][..., None])
    joint = (np.mod(yy, bh) < 0.12 * bh) | (np.mod(x, bw) < 0.06 * bw)
    return np.where(joint[..., None], mortar, arr)


def _windows(arr: np.ndarray, rng: np.random.Generator, cam: StreetCamera, top: float, bottom: float, pan: float,
             lit: bool) -> np.ndarray:
    H, W = arr.shape[:2]
    yy, xx = _grid(H, W)
    px, py = cam.period * 1.6, cam.period * 1.1 * W / H
    u, v = np.mod(xx + pan, px) / px, np.mod(yy - top, py) / py
    inside = (u > 0.2) & (u < 0.8) & (v > 0.2) & (v < 0.75) & (yy > top) & (yy < bottom)
    if lit:
        glass = np.array([0.95, 0.8, 0.45], np.float32) * rng.uniform(0.6, 1.0)
    else:
        glass = cam.colors[3] * 0.35 + 0.15 * (1 - v[..., None])  # dark glass with a sky reflection
    return np.where(inside[..., None], glass, arr)


def draw_scene(rng: np.random.Generator, cam: StreetCamera, H: int, W: int) -> Image.Image:
    """The camera's scene (fixed layout and colours) seen with a small random pan, plus per-image clutter."""
    c = [np.asarray(jitter_color(rng, col, 0.03), np.float32) for col in cam.colors]
    hz = cam.horizon + rng.normal(0, 0.02)
    pan = rng.uniform(-0.3, 0.3)
    yy, xx = _grid(H, W)
    floor, depth, lateral = _ground(cam, H, W, hz, pan)
    fine = smooth_noise(rng, H, W, 40)[..., None]
    if cam.scene == "facade":
        wall = _bricks(rng, H, W, c[0], c[1] * 1.1, cam.period, pan) if cam.period > 0.2 else \
            c[0] * (0.9 + 0.2 * smooth_noise(rng, H, W, 5)[..., None])
        wall = _windows(wall, rng, cam, 0.0, hz - 0.05, pan, lit=False)
        paving = (np.mod(lateral * 0.15, 1.0) < 0.04) | (np.mod(depth * 0.3, 1.0) < 0.05)
        ground = np.where(paving[..., None], c[2] * 0.7, c[2] * (0.85 + 0.25 * fine))
        arr = np.where(floor[..., None], ground, wall)
    elif cam.scene == "crosswalk":
        sky = np.array([0.6, 0.72, 0.9], np.float32) * (0.8 + 0.3 * yy[..., None])
        far = yy > hz - rng.uniform(0.08, 0.2)  # distant building row
        backdrop = np.where(far[..., None], c[0] * (0.8 + 0.2 * smooth_noise(rng, H, W, 12)[..., None]), sky)
        asphalt = np.full((H, W, 3), 0.3, np.float32) * (0.8 + 0.35 * fine) + c[1] * 0.08
        zebra = (np.mod(lateral * 0.25, 1.0) < 0.5) & (np.mod(depth * 0.05, 1.0) < 0.6)
        ground = np.where(zebra[..., None], np.float32(0.85), asphalt)
        arr = np.where(floor[..., None], ground, backdrop)
    elif cam.scene == "park":
        sky = np.array([0.7, 0.8, 0.92], np.float32) * (0.85 + 0.2 * yy[..., None])
        grass = np.array([0.25, 0.45, 0.18], np.float32) * (0.7 + 0.5 * smooth_noise(rng, H, W, 60)[..., None])
        path = np.abs(lateral) < rng.uniform(0.6, 1.2)
        ground = np.where(path[..., None], c[2] * (0.9 + 0.2 * fine), grass)
        arr = np.where(floor[..., None], ground, sky)
    elif cam.scene == "plaza":
        shops = c[0] * (0.9 + 0.2 * np.floor(np.mod((xx + pan) / cam.period, 3.0))[..., None] / 3)
        shops = _windows(shops, rng, cam, hz - 0.25, hz - 0.02, pan, lit=False)
        tiles = (np.floor(lateral * 0.1) + np.floor(depth * 0.15)) % 2 == 0
        ground = np.where(tiles[..., None], c[2], c[3] * 0.9) * (0.9 + 0.15 * fine)
        arr = np.where(floor[..., None], ground, shops)
    else:  # night
        wall = c[0] * 0.25 * (0.8 + 0.3 * smooth_noise(rng, H, W, 6)[..., None])
        wall = _windows(wall, rng, cam, 0.0, hz - 0.05, pan, lit=True)
        road = np.full((H, W, 3), 0.12, np.float32) * (0.8 + 0.4 * fine)
        arr = np.where(floor[..., None], road, wall)
        for _ in range(int(rng.integers(1, 3))):  # lamp glow
            lx, ly = rng.uniform(0, 1), rng.uniform(0.05, hz)
            glow = np.exp(-(((xx - lx) * W / H) ** 2 + (yy - ly) ** 2) / rng.uniform(0.01, 0.05))
            arr = arr + glow[..., None] * np.array([1.0, 0.8, 0.5], np.float32) * 0.6
    img = Image.fromarray((np.clip(arr, 0, 1) * 255).astype(np.uint8), "RGB")
    _clutter(img, rng, cam, hz)
    return img


def _clutter(img: Image.Image, rng: np.random.Generator, cam: StreetCamera, hz: float) -> None:
    """Street furniture: trees, lamp posts, bollards, bins."""
    W, H = img.size
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 4))):
        kind = rng.integers(4)
        x = rng.uniform(-0.1, 1.1) * W
        base = (hz + rng.uniform(0.0, 0.3)) * H
        size = (base / H - hz + 0.1) * H * rng.uniform(0.8, 1.6)
        if kind == 0:  # tree
            d.rectangle([x - 0.04 * size, base - 0.9 * size, x + 0.04 * size, base], fill=(70, 50, 35))
            g = rgb8(hsv(rng.uniform(0.22, 0.35), rng.uniform(0.4, 0.7), rng.uniform(0.25, 0.5)))
            r = size * rng.uniform(0.35, 0.5)
            d.ellipse([x - r, base - 0.9 * size - r, x + r, base - 0.9 * size + r * 0.8], fill=g)
        elif kind == 1:  # lamp post
            d.rectangle([x - 0.02 * size, base - 1.6 * size, x + 0.02 * size, base], fill=(45, 45, 50))
        elif kind == 2:  # bollard
            d.rounded_rectangle([x - 0.06 * size, base - 0.3 * size, x + 0.06 * size, base], radius=0.05 * size,
                                fill=rgb8(_muted(rng, 0.2, 0.6)))
        else:  # bin
            d.rectangle([x - 0.12 * size, base - 0.35 * size, x + 0.12 * size, base], fill=rgb8(_muted(rng, 0.2, 0.5)))


# --------------------------------------------------------------------------- #
# walkers
# --------------------------------------------------------------------------- #
@dataclass
class Gait:
    view: str
    phase: float
    stride: float
    lean: float


def random_gait(rng: np.random.Generator, ident: Walker, views: np.ndarray) -> Gait:
    return Gait(view=VIEWS[int(rng.choice(4, p=views))], phase=float(rng.uniform(0, 2 * math.pi)),
                stride=ident.stride * float(rng.uniform(0.6, 1.3)), lean=float(rng.normal(0, 0.03)))


def _capsule(d: ImageDraw.ImageDraw, p0, p1, r: float, fill) -> None:
    d.line([p0, p1], fill=fill, width=max(1, int(round(2 * r))))
    for x, y in (p0, p1):
        d.ellipse([x - r, y - r, x + r, y + r], fill=fill)


def _joint(p, length: float, angle: float):
    """End of a segment of ``length`` from ``p`` at ``angle`` (0 = straight down, positive = towards +x)."""
    return p[0] + length * math.sin(angle), p[1] + length * math.cos(angle)


def draw_walker(img: Image.Image, ident: Walker, gait: Gait, cx: float, top: float, ph: float,
                squash: float = 1.0) -> None:
    """Draw a walker of height ``ph`` px whose head top is at ``top``."""
    d = ImageDraw.Draw(img)
    side = gait.view in ("left", "right")
    facing = {"left": -1, "right": 1}.get(gait.view, 0)
    width = ident.build * squash
    feet = top + ph
    hr = 0.058 * ph * ident.head
    head_c = (cx + gait.lean * ph * 0.5, top + hr)
    neck_y = top + 2 * hr + 0.01 * ph
    hip_y = feet - ident.leg_frac * ph
    sw = 0.11 * ph * width * (0.55 if side else 1.0)      # shoulder half-width
    hw = 0.08 * ph * width * (0.6 if side else 1.0)       # hip half-width
    leg_r = 0.036 * ph * width
    arm_r = 0.026 * ph * width
    skin = rgb8(ident.skin)
    swing = gait.stride * math.sin(gait.phase)

    def lean(x, y):  # the body leans about the feet
        return x + gait.lean * (feet - y), y

    # hair that hangs behind the body, backpack seen from the front or side
    if ident.hair_style == "long" and gait.view != "back":
        d.rounded_rectangle([head_c[0] - hr * 1.05, head_c[1], head_c[0] + hr * 1.05, neck_y + 0.08 * ph],
                            radius=hr * 0.5, fill=rgb8(ident.hair))
    if ident.backpack is not None and gait.view == "front":
        d.rounded_rectangle([cx - sw * 1.1, neck_y + 0.02 * ph, cx + sw * 1.1, neck_y + 0.18 * ph], radius=0.02 * ph,
                            fill=rgb8(ident.backpack))

    # legs: thigh + shin capsules with a knee bend on the trailing leg
    leg_len = feet - hip_y - 0.02 * ph
    thigh, shin = 0.5 * leg_len, 0.5 * leg_len
    bottom_c = rgb8(ident.bottom)
    for s in (-1, 1):
        hip = lean(cx + (s * hw * 0.45 if not side else s * hw * 0.1), hip_y)
        a = s * swing * (1.0 if side else 0.25) * (facing or 1)
        knee = _joint(hip, thigh, a)
        bend = max(0.0, -s * math.sin(gait.phase)) * 0.5 * facing if side else 0.0
        foot = _joint(knee, shin, a - bend)
        lower = skin if ident.bottom_style in ("shorts", "skirt") else bottom_c
        _capsule(d, knee, foot, leg_r * 0.9, lower)
        _capsule(d, hip, knee, leg_r, bottom_c if ident.bottom_style != "skirt" else skin)
        fl = leg_r * (1.9 if side else 1.2)
        fx = foot[0] + 0.6 * fl * facing
        d.ellipse([fx - fl, foot[1] - leg_r * 0.6, fx + fl, foot[1] + leg_r * 0.7], fill=rgb8(ident.shoes))
    if ident.bottom_style == "skirt":
        d.polygon([lean(cx - hw * 1.05, hip_y - 0.02 * ph), lean(cx + hw * 1.05, hip_y - 0.02 * ph),
                   lean(cx + hw * 1.6, hip_y + 0.24 * ph), lean(cx - hw * 1.6, hip_y + 0.24 * ph)], fill=bottom_c)
    else:
        d.ellipse([*lean(cx - hw * 1.05, hip_y - 0.04 * ph), *lean(cx + hw * 1.05, hip_y + 0.05 * ph)], fill=bottom_c)

    # the arm behind the body (side views)
    shoulder_y = neck_y + 0.025 * ph
    if side:
        _arm(d, ident, lean(cx - facing * sw * 0.2, shoulder_y), -swing * 1.2, arm_r, ph, darker=True)

    if side and ident.backpack is not None:  # the pack sticks out behind the back
        x0, x1 = sorted((cx - facing * sw * 0.4, cx - facing * sw * 1.7))
        d.rounded_rectangle([x0, neck_y + 0.03 * ph, x1, neck_y + 0.2 * ph], radius=0.02 * ph,
                            fill=rgb8(ident.backpack))

    # torso garment through a mask: ellipse shoulders + body down to the coat length
    coat_end = {"waist": hip_y + 0.01 * ph, "hip": hip_y + 0.07 * ph, "knee": hip_y + 0.26 * ph}[ident.coat]
    mask = Image.new("L", img.size, 0)
    md = ImageDraw.Draw(mask)
    md.ellipse([*lean(cx - sw, neck_y), *lean(cx + sw, neck_y + 0.12 * ph)], fill=255)
    flare = 1.35 if ident.coat == "knee" else 1.05
    md.polygon([lean(cx - sw, neck_y + 0.06 * ph), lean(cx + sw, neck_y + 0.06 * ph),
                lean(cx + hw * flare, coat_end), lean(cx - hw * flare, coat_end)], fill=255)
    img.paste(_pattern(img.size, ident, gait, cx, neck_y, coat_end, sw, ph), (0, 0), mask)

    # accessories on the torso
    if ident.backpack is not None:
        if gait.view == "back":
            d.rounded_rectangle([cx - sw * 0.75, neck_y + 0.03 * ph, cx + sw * 0.75, neck_y + 0.22 * ph],
                                radius=0.025 * ph, fill=rgb8(ident.backpack))
        elif gait.view == "front":
            for s in (-1, 1):
                d.line([(cx + s * sw * 0.55, neck_y + 0.01 * ph), (cx + s * sw * 0.5, neck_y + 0.17 * ph)],
                       fill=rgb8(ident.backpack), width=max(1, int(0.02 * ph)))
    if ident.scarf is not None:
        d.rounded_rectangle([cx - sw * 0.6, neck_y - 0.01 * ph, cx + sw * 0.6, neck_y + 0.035 * ph],
                            radius=0.015 * ph, fill=rgb8(ident.scarf))
        if gait.view != "back":
            d.rectangle([cx + sw * 0.15, neck_y, cx + sw * 0.4, neck_y + 0.14 * ph], fill=rgb8(ident.scarf))

    # the front arm(s)
    if side:
        _arm(d, ident, lean(cx + facing * sw * 0.2, shoulder_y), swing * 1.2, arm_r, ph, darker=False)
    else:
        for s in (-1, 1):
            _arm(d, ident, lean(cx + s * (sw - arm_r * 0.6), shoulder_y), s * 0.1 + s * swing * 0.3, arm_r, ph,
                 darker=False, hand_bag=(ident.bag == ("left" if s < 0 else "right")))

    _head(d, ident, gait, head_c, hr, facing, ph)


def _arm(d, ident: Walker, shoulder, angle: float, r: float, ph: float, darker: bool, hand_bag: bool = False) -> None:
    upper = 0.17 * ph
    elbow = _joint(shoulder, upper, angle)
    hand = _joint(elbow, 0.16 * ph, angle + 0.25 * abs(angle))
    sleeve = ident.sleeve_color

    def col(c):
        return rgb8(tuple(v * 0.75 for v in c)) if darker else rgb8(c)

    _capsule(d, elbow, hand, r * 0.9, col(sleeve) if ident.sleeves == "long" else col(ident.skin))
    _capsule(d, shoulder, elbow, r, col(sleeve))
    d.ellipse([hand[0] - r, hand[1] - r, hand[0] + r, hand[1] + r], fill=col(ident.skin))
    if hand_bag:
        d.rounded_rectangle([hand[0] - 0.05 * ph, hand[1], hand[0] + 0.05 * ph, hand[1] + 0.11 * ph],
                            radius=0.01 * ph, fill=rgb8(ident.bag_color))


def _head(d, ident: Walker, gait: Gait, c, hr: float, facing: int, ph: float) -> None:
    x, y = c
    hair, skin = rgb8(ident.hair), rgb8(ident.skin)
    back = gait.view == "back"
    d.ellipse([x - hr * 0.85, y - hr, x + hr * 0.85, y + hr], fill=hair if back and ident.hair_style != "bald"
              else skin)
    if ident.hair_style != "bald" and not back:
        if facing:  # side: hair on the back half of the head
            d.chord([x - hr * 0.9, y - hr * 1.05, x + hr * 0.9, y + hr * 0.8], 90 + 90 * facing, 270 + 90 * facing,
                    fill=hair)
        d.chord([x - hr * 0.9, y - hr * 1.08, x + hr * 0.9, y + hr * 0.5], 180, 360, fill=hair)
    if ident.hair_style == "ponytail" and gait.view != "front":
        tx = x - facing * hr * 1.1
        d.ellipse([tx - hr * 0.35, y - hr * 0.2, tx + hr * 0.35, y + hr * 1.3], fill=hair)
    elif ident.hair_style == "bun":
        d.ellipse([x - hr * 0.45, y - hr * 1.5, x + hr * 0.45, y - hr * 0.6], fill=hair)
    if ident.hat == "cap":
        d.chord([x - hr * 0.95, y - hr * 1.15, x + hr * 0.95, y + hr * 0.4], 180, 360, fill=rgb8(ident.hat_color))
        brim = facing if facing else (0 if back else 1)
        if brim:
            d.rectangle([x + brim * hr * 0.4 - hr * 0.6, y - hr * 0.45, x + brim * hr * 0.4 + hr * 0.6, y - hr * 0.25],
                        fill=rgb8(ident.hat_color))
    elif ident.hat == "beanie":
        d.chord([x - hr * 0.95, y - hr * 1.25, x + hr * 0.95, y + hr * 0.2], 180, 360, fill=rgb8(ident.hat_color))


def _pattern(size, ident: Walker, gait: Gait, cx: float, y0: float, y1: float, sw: float, ph: float) -> Image.Image:
    """The torso garment's pattern over the whole canvas (the caller pastes it through the torso mask)."""
    c1, c2 = rgb8(ident.top), rgb8(ident.top2)
    pat = Image.new("RGB", size, c1)
    d = ImageDraw.Draw(pat)
    p = max(3.0, ident.pattern_scale * ph)
    kind = ident.top_pattern
    front = gait.view == "front"
    W, H = size
    if kind == "dots":
        r = p * 0.28
        for j, y in enumerate(np.arange(y0, y1, p)):
            for x in np.arange(cx - 3 * p + (j % 2) * p / 2, cx + 3 * p, p):
                d.ellipse([x - r, y - r, x + r, y + r], fill=c2)
    elif kind == "diagonal":
        for k in np.arange(-H, W + H, 2 * p):
            d.polygon([(k, y0), (k + p, y0), (k + p + (y1 - y0), y1), (k + (y1 - y0), y1)], fill=c2)
    elif kind == "yoke":
        d.rectangle([0, y0, W, y0 + 0.28 * (y1 - y0)], fill=c2)
    elif kind == "open_jacket" and front:
        d.rectangle([cx - sw * 0.3, y0, cx + sw * 0.3, y1], fill=c2)
    elif kind == "print" and front:
        r, y = 0.05 * ph, y0 + 0.1 * ph
        if ident.print_kind == 0:
            d.ellipse([cx - r, y - r, cx + r, y + r], fill=c2)
        elif ident.print_kind == 1:
            d.polygon([(cx, y - r * 1.2), (cx + r * 1.2, y + r), (cx - r * 1.2, y + r)], fill=c2)
        elif ident.print_kind == 2:
            d.rectangle([cx - r * 1.4, y - r * 0.4, cx + r * 1.4, y + r * 0.4], fill=c2)
        else:
            d.rectangle([cx - r * 0.4, y - r * 1.3, cx + r * 0.4, y + r * 1.3], fill=c2)
            d.rectangle([cx - r * 1.2, y - r * 0.4, cx + r * 1.2, y + r * 0.4], fill=c2)
    elif kind == "side_panels":
        d.rectangle([-W, y0, cx - sw * 0.55, 2 * H], fill=c2)  # off-canvas bounds: walkers may stand at an edge
        d.rectangle([cx + sw * 0.55, y0, 2 * W, 2 * H], fill=c2)
    return pat


def _occluder(img: Image.Image, rng: np.random.Generator) -> None:
    """A parked car, a pole, a sign or a hedge in front of the walker."""
    W, H = img.size
    d = ImageDraw.Draw(img)
    kind = rng.integers(4)
    col = rgb8(_muted(rng, 0.15, 0.7)) if rng.random() < 0.6 else rgb8(_garment_color(rng))
    if kind == 0:  # car bonnet from the bottom
        h = rng.uniform(0.15, 0.3) * H
        d.rounded_rectangle([-0.2 * W, H - h, 1.2 * W, H + 0.1 * H], radius=0.1 * W, fill=col)
        d.rectangle([-1, H - h * 0.35, W + 1, H + 1], fill=(25, 25, 28))
    elif kind == 1:  # pole
        w, x = rng.uniform(0.05, 0.12) * W, rng.uniform(0.1, 0.9) * W
        d.rectangle([x - w / 2, -1, x + w / 2, H + 1], fill=col)
    elif kind == 2:  # sign on a post
        x, y = rng.uniform(0.0, 1.0) * W, rng.uniform(0.15, 0.5) * H
        r = rng.uniform(0.15, 0.3) * W
        d.rectangle([x - 0.02 * W, y, x + 0.02 * W, H + 1], fill=(80, 80, 85))
        d.ellipse([x - r, y - r, x + r, y + r], fill=col)
    else:  # hedge
        h = rng.uniform(0.2, 0.4) * H
        g = rgb8(hsv(rng.uniform(0.22, 0.35), 0.5, rng.uniform(0.2, 0.45)))
        d.rounded_rectangle([-0.1 * W, H - h, 1.1 * W, H + 0.2 * H], radius=0.08 * W, fill=g)


# --------------------------------------------------------------------------- #
# camera response
# --------------------------------------------------------------------------- #
def _motion_blur(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Average of copies shifted along a random direction (edge pixels repeated)."""
    n = int(rng.integers(3, 7))
    ang = rng.uniform(0, math.pi)
    pad = n
    padded = np.pad(a, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    H, W = a.shape[:2]
    out = np.zeros_like(a)
    for k in range(n):
        t = k - (n - 1) / 2
        dx, dy = int(round(t * math.cos(ang))), int(round(t * math.sin(ang)))
        out += padded[pad + dy:pad + dy + H, pad + dx:pad + dx + W]
    return out / n


def _jpeg_roundtrip(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, subsampling=2, optimize=False)
    buf.seek(0)
    with Image.open(buf) as out:
        return out.convert("RGB")


def camera_response(img: Image.Image, cam: StreetCamera, rng: np.random.Generator, out_size) -> Image.Image:
    """Roll, sensor resolution, colour cast and exposure, vignetting, motion blur, gamma / S-curve, shot and read
    noise, in-camera JPEG."""
    W, H = img.size
    if abs(cam.roll) > 0.2:  # the canvas has a margin: rotate, then cut it off
        img = img.rotate(cam.roll + rng.normal(0, 0.5), resample=Image.BICUBIC)
    mx, my = int(W * 0.08), int(H * 0.08)
    img = img.crop((mx, my, W - mx, H - my))
    w, h = out_size
    lw, lh = max(8, int(round(w * cam.lowres))), max(16, int(round(h * cam.lowres)))
    img = img.resize((lw, lh), Image.BILINEAR, reducing_gap=None).resize((w, h), Image.BILINEAR)
    a = np.asarray(img, np.float32) / 255.0
    a = a ** 2.2  # to linear light
    gain = cam.gain * np.exp(rng.normal(0, 0.04, 3)).astype(np.float32)
    a = a * gain * cam.exposure * float(np.exp(rng.normal(0, 0.12)))
    yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :] * (w / h)
    a = a * (1 - cam.vignette * np.clip((xx ** 2 + yy ** 2) / (1 + (w / h) ** 2), 0, 1))[..., None]
    if rng.random() < cam.blur_prob:
        a = _motion_blur(a, rng)
    a = np.clip(a, 0, 1)
    noise_sd = np.sqrt(cam.shot_noise * a + cam.read_noise ** 2)
    a = np.clip(a + rng.normal(0, 1, a.shape).astype(np.float32) * noise_sd, 0, 1)
    a = a ** (1 / (2.2 * cam.gamma))
    a = a + cam.s_curve * (a - 0.5) * (1 - np.abs(2 * a - 1)) * 0.5  # contrast around mid-grey
    out = Image.fromarray((np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")
    return _jpeg_roundtrip(out, cam.jpeg_quality)


# --------------------------------------------------------------------------- #
# Market-style crops
# --------------------------------------------------------------------------- #
def _canvas(h: int, w: int) -> tuple[int, int]:
    """Super-sampled canvas with the margin that the roll cuts off."""
    return int(round(h * SS / 0.84)), int(round(w * SS / 0.84))


def render_reid(ident: Walker, cam: StreetCamera, rng: np.random.Generator, h: int, w: int) -> Image.Image:
    """One detection crop of ``ident`` as seen by ``cam``."""
    H, W = _canvas(h, w)
    img = draw_scene(rng, cam, H, W)
    ph_box = H * 0.84
    if rng.random() < 0.25:  # passers-by behind the target
        other = make_identity(rng)
        ph2 = ph_box * rng.uniform(0.5, 0.85)
        cx2 = W * (0.5 + rng.choice([-1, 1]) * rng.uniform(0.35, 0.6))
        draw_walker(img, other, random_gait(rng, other, cam.views), cx2, H * rng.uniform(0.08, 0.25), ph2,
                    cam.squash)
    ph = ph_box * float(np.clip(cam.scale + rng.normal(0, 0.05), 0.6, 1.02))
    top = H * 0.08 + rng.uniform(0.0, max(0.0, ph_box - ph)) + rng.normal(0, 0.015) * H
    cx = W * (0.5 + rng.normal(0, cam.x_spread))
    ImageDraw.Draw(img).ellipse([cx - 0.15 * ph, top + ph - 0.02 * ph, cx + 0.15 * ph, top + ph + 0.02 * ph],
                                fill=(30, 30, 32))
    draw_walker(img, ident, random_gait(rng, ident, cam.views), cx, top, ph, cam.squash)
    if rng.random() < cam.occlusion:
        _occluder(img, rng)
    return camera_response(img, cam, rng, (w, h))


def render_distractor(cam: StreetCamera, rng: np.random.Generator, h: int, w: int) -> Image.Image:
    """A gallery distractor (pid 0000): empty street, or a close-up of part of an unrelated walker."""
    H, W = _canvas(h, w)
    img = draw_scene(rng, cam, H, W)
    if rng.random() < 0.6:
        ident = make_identity(rng)
        ph = H * rng.uniform(1.4, 2.4)
        draw_walker(img, ident, random_gait(rng, ident, cam.views), W * rng.uniform(0.25, 0.75),
                    -rng.uniform(0.0, 1.0) * (ph - H), ph, cam.squash)
    if rng.random() < 0.5:
        _occluder(img, rng)
    return camera_response(img, cam, rng, (w, h))


def render_junk(cam: StreetCamera, rng: np.random.Generator, h: int, w: int) -> Image.Image:
    """A junk detection (pid -1): a walker cut by the box edge, or a smeared box."""
    H, W = _canvas(h, w)
    img = draw_scene(rng, cam, H, W)
    if rng.random() < 0.7:
        ident = make_identity(rng)
        ph = H * rng.uniform(0.3, 0.6)
        cx = W * rng.choice([rng.uniform(-0.25, 0.05), rng.uniform(0.95, 1.25)])
        draw_walker(img, ident, random_gait(rng, ident, cam.views), cx, rng.uniform(0.1, 0.5) * H, ph, cam.squash)
    out = camera_response(img, cam, rng, (w, h))
    if rng.random() < 0.5:
        out = out.resize((max(4, w // 6), max(8, h // 6)), Image.BILINEAR).resize((w, h), Image.BILINEAR)
    return out
