"""SynthDrive: a procedural street rendered by ray casting, with exact depth, poses and semantics.

The world is built to contain what makes self-supervised depth hard on real driving data:
textureless car bodies and a low-texture road (flat photometric loss), sky at infinity, thin poles,
a lead car driving at the camera's speed (it looks static: the classic infinite-depth hole), stops
where the camera stands still, and surfaces lit differently by a sun. Textures are solid noise in
world coordinates, so every view of a point agrees and the ground-truth warp reproduces a frame.

World frame: x right, y down, z forward (the camera convention), the road plane at y = camera
height. Semantic classes are the Cityscapes train ids.

Two kinds of streets share the renderer: ``straight`` (one straight street, facades parallel to
the camera axis, a level camera) and ``town`` (:mod:`semhint.data.synthetic.town`: a street that curves, a
crossing, setbacks, gaps, trees before the facades, a camera pitched down).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from semhint.core.conventions import CITYSCAPES
from semhint.core.errors import InputError
from semhint.data.synthetic.noise import fbm, noise_table
from semhint.data.synthetic.raycast import BOX, CYLINDER, OBOX, SPHERE, Prims, cast, length3, normals, screen_boxes

# the classes SynthDrive renders, as Cityscapes train ids
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY, PERSON, CAR, TRUCK = (
    CITYSCAPES.id(n) for n in ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                               "vegetation", "terrain", "sky", "person", "car", "truck"))

# procedural pattern codes
PLAIN, WINDOWS, TILES = 0, 1, 2

LANE = 1.75  # the camera drives in the right lane, centred at x = +1.75 m
ROAD_HALF = 5.5  # two 3.5 m lanes plus a 2 m parking strip on each side
SMALL_CULL = 90.0  # metres: small objects farther than this cover a pixel or two; skipped
FAR_CULL = 220.0


@dataclass(frozen=True)
class DriveConfig:
    """Everything that defines one rendered drive (the seed makes it reproducible)."""

    height: int = 192
    width: int = 640
    frames: int = 40
    seed: int = 0
    camera_height: float = 1.65  # metres (KITTI's camera height)
    speed: float = 1.0  # metres per frame (about 36 km/h at KITTI's 10 Hz)
    moving_cars: bool = True  # a lead car at the camera's speed and oncoming traffic
    stops: bool = True  # the camera stands still for a few frames
    fx_ratio: float = 0.58  # fx = fy = fx_ratio * width (KITTI's normalised focal length)
    streets: str = "straight"  # straight | town (a curving street with a crossing, a pitched camera)


def intrinsics(cfg: DriveConfig) -> np.ndarray:
    """The 3 x 3 pinhole K of the rendered frames (pixel centres at integers, centred principal point)."""
    f = cfg.fx_ratio * cfg.width
    return np.array([[f, 0, (cfg.width - 1) / 2], [0, f, (cfg.height - 1) / 2], [0, 0, 1]], dtype=np.float64)


# ----------------------------------------------------------------------------------------------
# camera path
# ----------------------------------------------------------------------------------------------
def speed_profile(cfg: DriveConfig, rng: np.random.Generator) -> np.ndarray:
    """Metres travelled from each frame to the next (T): a steady speed with one stop (if ``cfg.stops``)."""
    n = cfg.frames
    speed = cfg.speed * rng.uniform(0.8, 1.2)
    v = np.full(n, speed)
    if cfg.stops and n >= 16:  # short clips (the tiny preset) keep moving: tests need parallax
        # decelerate, stand still, accelerate: static frames exercise the auto-mask
        length = int(rng.integers(2, max(3, n // 6) + 1))
        start = int(rng.integers(n // 4, max(n // 4 + 1, n - length - 1)))
        v[start:start + length] = 0.0
        for k in (1, 2):
            if start - k >= 0:
                v[start - k] *= k / 3
            if start + length + k - 1 < n:
                v[start + length + k - 1] *= k / 3
    return v


def camera_path(cfg: DriveConfig, rng: np.random.Generator) -> np.ndarray:
    """Camera-to-world poses (T x 4 x 4): forward along the street with gentle weaving turns and stops."""
    n = cfg.frames
    v = speed_profile(cfg, rng)
    z = np.concatenate([[0.0], np.cumsum(v[:-1])])
    amp, wavelength, phase = rng.uniform(0.3, 0.6), rng.uniform(40, 80), rng.uniform(0, 2 * math.pi)
    x = LANE + amp * np.sin(2 * math.pi * z / wavelength + phase)
    yaw = np.arctan(amp * 2 * math.pi / wavelength * np.cos(2 * math.pi * z / wavelength + phase))
    pitch = 0.004 * np.sin(np.arange(n) * rng.uniform(0.5, 1.0))  # suspension
    poses = np.zeros((n, 4, 4))
    for i in range(n):
        cy, sy, cp, sp = math.cos(yaw[i]), math.sin(yaw[i]), math.cos(pitch[i]), math.sin(pitch[i])
        ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
        poses[i, :3, :3] = ry @ rx
        poses[i, :3, 3] = (x[i], 0.0, z[i])
        poses[i, 3, 3] = 1
    return poses


# ----------------------------------------------------------------------------------------------
# scene
# ----------------------------------------------------------------------------------------------
class _Builder:
    """Collects primitive rows; turned into a :class:`Prims` table once."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def box(self, lo, hi, cls, colour, amp=0.1, freq=1.0, pattern=PLAIN, dynamic=False):
        self.rows.append((BOX, lo, hi, 0.0, cls, colour, amp, freq, pattern, dynamic))

    def cylinder(self, x, z, y_top, y_bottom, r, cls, colour, amp=0.1, freq=1.0, dynamic=False):
        self.rows.append((CYLINDER, (x, y_top, z), (x, y_bottom, z), r, cls, colour, amp, freq, PLAIN, dynamic))

    def sphere(self, c, r, cls, colour, amp=0.1, freq=1.0):
        self.rows.append((SPHERE, c, c, r, cls, colour, amp, freq, PLAIN, False))

    def turned_box(self, centre, half, yaw, cls, colour, amp=0.1, freq=1.0, pattern=PLAIN, dynamic=False):
        """A box turned by ``yaw`` about the vertical axis (half sizes along its own x, y, z)."""
        self.rows.append((OBOX, tuple(centre), tuple(half), float(yaw), cls, colour, amp, freq, pattern, dynamic))

    def build(self) -> Prims:
        cols = list(zip(*self.rows))
        f32 = torch.float32
        return Prims(kind=torch.tensor(cols[0], dtype=torch.int64), a=torch.tensor(cols[1], dtype=f32),
                     b=torch.tensor(cols[2], dtype=f32), r=torch.tensor(cols[3], dtype=f32),
                     cls=torch.tensor(cols[4], dtype=torch.int64), colour=torch.tensor(cols[5], dtype=f32),
                     tex_amp=torch.tensor(cols[6], dtype=f32), tex_freq=torch.tensor(cols[7], dtype=f32),
                     pattern=torch.tensor(cols[8], dtype=torch.int64), dynamic=torch.tensor(cols[9], dtype=torch.bool))


@dataclass
class DriveScene:
    """A street: static primitives, moving cars as (start pose, velocity), road geometry, camera path."""

    static: Prims
    movers: list[dict]
    poses: np.ndarray
    sidewalk_width: float
    camera_height: float
    table: torch.Tensor
    sun: torch.Tensor
    town: object | None = None  # the town's streets (ground, moving cars: town.Town); None: the straight street


_FACADES = [(0.72, 0.66, 0.55), (0.6, 0.6, 0.62), (0.62, 0.36, 0.28), (0.82, 0.8, 0.74), (0.5, 0.46, 0.4), (0.7, 0.58, 0.45)]
_CARS = [(0.75, 0.08, 0.06), (0.85, 0.85, 0.86), (0.1, 0.1, 0.12), (0.12, 0.22, 0.55), (0.5, 0.52, 0.55), (0.9, 0.75, 0.15)]


def _car(b: _Builder, x: float, z: float, h: float, colour, dynamic: bool) -> None:
    """Body (textureless: the photometric loss is flat on it), glass cabin, dark wheel block."""
    b.box((x - 0.9, h - 1.0, z - 2.1), (x + 0.9, h - 0.32, z + 2.1), CAR, colour, amp=0.012, freq=0.5, dynamic=dynamic)
    b.box((x - 0.78, h - 1.45, z - 1.2), (x + 0.78, h - 1.0, z + 0.9), CAR, (0.1, 0.12, 0.15), amp=0.03, dynamic=dynamic)
    b.box((x - 0.85, h - 0.45, z - 1.7), (x + 0.85, h, z + 1.7), CAR, (0.05, 0.05, 0.05), amp=0.05, dynamic=dynamic)


def _truck(b: _Builder, x: float, z: float, h: float, colour) -> None:
    b.box((x - 1.2, h - 3.3, z - 4.0), (x + 1.2, h - 0.5, z + 3.0), TRUCK, colour, amp=0.02, freq=0.5)
    b.box((x - 1.1, h - 2.6, z + 3.0), (x + 1.1, h - 0.5, z + 4.6), TRUCK, (0.85, 0.85, 0.85), amp=0.03)
    b.box((x - 1.1, h - 0.7, z - 3.5), (x + 1.1, h, z + 4.0), TRUCK, (0.05, 0.05, 0.05), amp=0.05)


def build_scene(cfg: DriveConfig, sequence_seed: int) -> DriveScene:
    """Lay out a street long enough for the whole camera path (plus the view beyond its end).

    The straight street only; ``semhint.data.synthetic.build_drive_scene`` picks the builder of any streets.
    """
    if cfg.streets != "straight":
        raise InputError(f"drive.build_scene lays out the straight street, not streets={cfg.streets!r}: "
                         "use semhint.data.synthetic.build_drive_scene")
    rng = np.random.default_rng(sequence_seed)
    h = cfg.camera_height
    poses = camera_path(cfg, rng)
    z_end = poses[-1, 2, 3] + FAR_CULL
    z_start = -30.0
    sw = float(rng.uniform(2.0, 3.5))
    b = _Builder()
    for side in (-1.0, 1.0):
        x_in = ROAD_HALF
        lo_x, hi_x = (x_in, x_in + sw) if side > 0 else (-x_in - sw, -x_in)
        b.box((lo_x, h - 0.15, z_start - 50), (hi_x, h + 0.5, z_end + 50), SIDEWALK, (0.62, 0.6, 0.58), 0.12, 1.5, TILES)
        _facades(b, rng, side, ROAD_HALF + sw, z_start, z_end, h)
        poles = _street_furniture(b, rng, side, z_start, z_end, h, sw)
        _trees(b, rng, side, z_start, z_end, h, sw, poles)
        _parked(b, rng, side, z_start, z_end, h)
        for _ in range(int(rng.integers(0, 4))):
            pz = float(rng.uniform(5, poses[-1, 2, 3] + 60))
            px = side * (ROAD_HALF + rng.uniform(0.8, sw - 0.3))
            col = tuple(rng.uniform(0.1, 0.8, 3))
            b.cylinder(px, pz, h - 0.15 - 1.55, h - 0.15, 0.22, PERSON, col, 0.05, 2.0)
            b.sphere((px, h - 0.15 - 1.65, pz), 0.13, PERSON, (0.8, 0.62, 0.5), 0.05, 2.0)
    movers = _movers(cfg, rng, poses) if cfg.moving_cars else []
    sun = torch.tensor([-0.45, -0.8, 0.4])
    return DriveScene(b.build(), movers, poses, sw, h, noise_table(sequence_seed), sun / sun.norm())


def _facades(b: _Builder, rng, side: float, x_in: float, z0: float, z1: float, h: float) -> None:
    z = z0
    while z < z1:
        length = float(rng.uniform(8, 22))
        if rng.random() < 0.3:  # a gap: terrain, with a wall or a fence along the sidewalk
            gap = float(rng.uniform(4, 12))
            kind = rng.integers(0, 3)
            xs = (x_in, x_in + 0.3) if side > 0 else (-x_in - 0.3, -x_in)
            if kind == 1:
                b.box((xs[0], h - rng.uniform(1.2, 2.4), z), (xs[1], h, z + gap), WALL, (0.55, 0.53, 0.5), 0.15, 1.0)
            elif kind == 2:
                b.box((xs[0], h - 1.4, z), (xs[1], h, z + gap), FENCE, (0.42, 0.36, 0.3), 0.35, 3.0)
            z += gap
            continue
        setback = float(rng.uniform(0.0, 2.5))
        depth = float(rng.uniform(8, 15))
        height = float(rng.uniform(6, 22))
        xa = x_in + setback
        lo_x, hi_x = (xa, xa + depth) if side > 0 else (-xa - depth, -xa)
        colour = _FACADES[int(rng.integers(len(_FACADES)))]
        colour = tuple(float(c) * rng.uniform(0.85, 1.1) for c in colour)
        b.box((lo_x, h - height, z), (hi_x, h, z + length), BUILDING, colour, 0.18, 0.8, WINDOWS)
        z += length + float(rng.uniform(0, 1.0))


def _street_furniture(b: _Builder, rng, side: float, z0: float, z1: float, h: float, sw: float) -> list[float]:
    """Poles (thin structures) carrying signs and traffic lights; returns their z positions."""
    zs = []
    z = z0 + float(rng.uniform(0, 10))
    x = side * (ROAD_HALF + 0.45)
    while z < z1:
        height = float(rng.uniform(4.5, 7.0))
        b.cylinder(x, z, h - 0.15 - height, h - 0.15, 0.07, POLE, (0.45, 0.46, 0.48), 0.05, 2.0)
        u = rng.random()
        if u < 0.45:
            col = [(0.1, 0.25, 0.7), (0.8, 0.1, 0.1), (0.9, 0.9, 0.9)][int(rng.integers(3))]
            b.box((x - 0.35, h - 2.9, z - 0.1), (x + 0.35, h - 2.2, z - 0.07), SIGN, col, 0.04, 1.0)
        elif u < 0.65:
            b.box((x - 0.17, h - 0.15 - height, z - 0.3), (x + 0.17, h - 0.15 - height + 0.9, z - 0.07), LIGHT,
                  (0.12, 0.12, 0.1), 0.05, 1.0)
        zs.append(z)
        z += float(rng.uniform(12, 28))
    return zs


def _trees(b: _Builder, rng, side: float, z0: float, z1: float, h: float, sw: float, poles: list[float]) -> None:
    z = z0 + float(rng.uniform(0, 8))
    x = side * (ROAD_HALF + sw - 0.7)
    while z < z1:
        if min((abs(z - p) for p in poles), default=9.0) > 2.0 and rng.random() < 0.7:
            r = float(rng.uniform(1.1, 2.0))
            trunk = float(rng.uniform(2.2, 3.2))
            b.cylinder(x, z, h - 0.15 - trunk - 0.5, h - 0.15, 0.14, VEGETATION, (0.3, 0.22, 0.15), 0.2, 3.0)
            green = (0.18 * rng.uniform(0.8, 1.2), 0.36 * rng.uniform(0.8, 1.2), 0.12)
            b.sphere((x, h - 0.15 - trunk - r * 0.8, z), r, VEGETATION, green, 0.55, 3.5)
        z += float(rng.uniform(7, 18))


def _parked(b: _Builder, rng, side: float, z0: float, z1: float, h: float) -> None:
    z = z0 + float(rng.uniform(0, 5))
    x = side * (ROAD_HALF - 1.0)
    while z < z1:
        if rng.random() < 0.55:
            if rng.random() < 0.08:
                _truck(b, x, z + 4.0, h, _CARS[int(rng.integers(len(_CARS)))])
                z += 9.0
            else:
                _car(b, x, z + 2.1, h, _CARS[int(rng.integers(len(_CARS)))], False)
                z += 4.2
        z += float(rng.uniform(0.8, 8.0))


def _movers(cfg: DriveConfig, rng, poses: np.ndarray) -> list[dict]:
    """A lead car that keeps its distance (moves with the camera) and a few oncoming cars."""
    movers = [dict(kind="lead", gap=float(rng.uniform(9, 16)), colour=_CARS[int(rng.integers(len(_CARS)))])]
    z_far = poses[-1, 2, 3] + 120
    for _ in range(int(rng.integers(1, 4))):
        movers.append(dict(kind="oncoming", z0=float(rng.uniform(30, z_far)), speed=float(rng.uniform(0.8, 1.5)),
                           colour=_CARS[int(rng.integers(len(_CARS)))]))
    return movers


def _moving_prims(scene: DriveScene, frame: int) -> Prims | None:
    b = _Builder()
    h = scene.camera_height
    for m in scene.movers:
        if m["kind"] == "lead":
            _car(b, LANE, float(scene.poses[frame, 2, 3]) + m["gap"], h, m["colour"], True)
        else:
            _car(b, -LANE, m["z0"] - m["speed"] * frame, h, m["colour"], True)
    return b.build() if b.rows else None


# ----------------------------------------------------------------------------------------------
# rendering
# ----------------------------------------------------------------------------------------------
def render_frame(scene: DriveScene, cfg: DriveConfig, frame: int) -> dict[str, np.ndarray]:
    """Render one frame: image (H x W x 3 float in [0, 1]), depth (H x W metres, inf = sky),
    labels (H x W uint8 Cityscapes train ids), dynamic (H x W bool: independently moving objects).

    Rays are cast on a (2H + 1) x (2W + 1) grid at half-pixel spacing. Depth and labels are the
    exact values of each pixel-centre ray. Pixels whose 3 x 3 samples all hit the same primitive are
    shaded once at the centre (the textures are smooth at pixel scale and the patterns carry
    their own analytic coverage); pixels on an object border are shaded at all nine samples and
    tent-filtered: anti-aliasing where it matters, at a fraction of the cost of 9 samples a pixel.
    """
    H, W = cfg.height, cfg.width
    prims = scene.static
    movers = _moving_prims(scene, frame) if scene.town is None else scene.town.moving_prims(scene, frame)
    if movers is not None:
        prims = Prims.concat([prims, movers])
    c2w = torch.tensor(scene.poses[frame], dtype=torch.float32)
    K = torch.tensor(intrinsics(cfg), dtype=torch.float32)
    origin, d = _sample_rays(c2w, K, H, W)
    t, idx = _cast_all(scene, prims, c2w, K, origin, d)
    key = torch.where(torch.isinf(t), torch.full_like(idx, -2), idx)
    centre = key[1::2, 1::2]
    edge = torch.zeros(H, W, dtype=torch.bool)
    need = torch.zeros_like(key, dtype=torch.bool)
    for dy in range(3):
        for dx in range(3):
            edge |= key[dy:dy + 2 * H:2, dx:dx + 2 * W:2] != centre
    for dy in range(3):
        for dx in range(3):
            need[dy:dy + 2 * H:2, dx:dx + 2 * W:2] |= edge
    need[1::2, 1::2] = True
    sel = need.reshape(-1).nonzero().squeeze(1)
    colour, cls, dyn = _shade(scene, prims, origin, d.reshape(3, -1).index_select(1, sel), t.reshape(-1).index_select(0, sel),
                              idx.reshape(-1).index_select(0, sel), float(K[0, 0]))
    grid = torch.zeros(3, key.numel())
    grid[:, sel] = colour
    image = grid.reshape(3, *key.shape)[:, 1::2, 1::2].reshape(3, -1).clone()
    image[:, edge.reshape(-1)] = _tent(grid, edge, ws=key.shape[1])
    cls_grid = torch.full((key.numel(),), SKY, dtype=torch.int64)
    cls_grid[sel] = cls
    dyn_grid = torch.zeros(key.numel(), dtype=torch.bool)
    dyn_grid[sel] = dyn
    return {
        "image": image.T.reshape(H, W, 3).clamp(0, 1).numpy(),
        "depth": t[1::2, 1::2].numpy().copy(),
        "labels": cls_grid.reshape(key.shape)[1::2, 1::2].numpy().astype(np.uint8),
        "dynamic": dyn_grid.reshape(key.shape)[1::2, 1::2].numpy().copy(),
    }


def _tent(grid: torch.Tensor, edge: torch.Tensor, ws: int) -> torch.Tensor:
    """Tent-filtered colour (3 x E) of the edge pixels from their 3 x 3 half-pixel samples."""
    r, c = edge.nonzero(as_tuple=True)
    top_left = 2 * r * ws + 2 * c
    out = torch.zeros(3, r.numel())
    for dy, wy in ((0, 0.25), (1, 0.5), (2, 0.25)):
        for dx, wx in ((0, 0.25), (1, 0.5), (2, 0.25)):
            out += (wy * wx) * grid.index_select(1, top_left + (dy * ws + dx))
    return out


def _sample_rays(c2w: torch.Tensor, K: torch.Tensor, H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
    """World rays of the half-pixel sample grid, scaled to unit camera-z so hit distance = depth."""
    hs, ws = 2 * H + 1, 2 * W + 1
    ys = (torch.arange(hs, dtype=torch.float32) - 1) / 2
    xs = (torch.arange(ws, dtype=torch.float32) - 1) / 2
    cam = torch.ones(3, hs, ws)
    cam[0] = ((xs - K[0, 2]) / K[0, 0])[None, :]
    cam[1] = ((ys - K[1, 2]) / K[1, 1])[:, None]
    d = (c2w[:3, :3] @ cam.reshape(3, -1)).reshape(3, hs, ws)
    return c2w[:3, 3], d


def _cast_all(scene: DriveScene, prims: Prims, c2w: torch.Tensor, K: torch.Tensor, origin: torch.Tensor, d: torch.Tensor):
    """Nearest hit (distance, primitive index; -1 = ground plane or sky) for every sample ray."""
    hs, ws = d.shape[1:]
    d_safe = torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)
    inv_d = 1.0 / d_safe
    dxz2 = d[0] * d[0] + d[2] * d[2]
    dd = dxz2 + d[1] * d[1]
    # the ground plane (road, and terrain beyond the sidewalks) is hit by every downward ray
    t = torch.where(d[1] > 0, (scene.camera_height - origin[1]) / d_safe[1], torch.full_like(d[1], float("inf")))
    idx = torch.full((hs, ws), -1, dtype=torch.int64)
    Ks = K.clone()  # camera -> sample grid: sample index = 2 * pixel + 1
    Ks[:2] *= 2
    Ks[0, 2] += 1
    Ks[1, 2] += 1
    lo, hi = prims.bounds()
    small = ~torch.isin(prims.cls, torch.tensor([BUILDING, SIDEWALK, WALL, FENCE]))
    max_dist = torch.where(small, torch.tensor(SMALL_CULL), torch.tensor(FAR_CULL))
    boxes = screen_boxes(lo, hi, torch.linalg.inv(c2w), Ks, (hs, ws), max_dist)
    cast(prims, boxes, origin, d, inv_d, dxz2, dd, t, idx)
    return t, idx


def _shade(scene: DriveScene, prims: Prims, origin: torch.Tensor, d: torch.Tensor, t: torch.Tensor, idx: torch.Tensor,
           focal: float):
    """Colour, class and dynamic flag of N samples (rays ``d`` 3 x N, hits ``t``, primitives ``idx``).

    Albedo is the class colour times solid noise (plus patterns); light is a sun (Lambert) plus
    ambient, so differently oriented surfaces differ in brightness; the sky depends on direction only.
    """
    n_samples = t.shape[0]
    colour = torch.empty(3, n_samples)
    cls = torch.full((n_samples,), SKY, dtype=torch.int64)
    dyn = torch.zeros(n_samples, dtype=torch.bool)
    h = scene.camera_height
    ray_len = length3(d)

    sky = torch.isinf(t)
    colour[:, sky] = _sky(d[:, sky], scene.table)

    ground = (~sky & (idx < 0)).nonzero().squeeze(1)
    tg = t.index_select(0, ground)
    dg = d.index_select(1, ground)
    pg = origin[:, None] + tg * dg
    cos_g = (dg[1] / ray_len.index_select(0, ground)).clamp_min(0.05)
    ground_fn = _ground if scene.town is None else scene.town.ground
    colour[:, ground], cls[ground] = ground_fn(pg, scene, tg * ray_len.index_select(0, ground) / focal / cos_g)

    obj = (idx >= 0).nonzero().squeeze(1)
    k = idx.index_select(0, obj)
    do = d.index_select(1, obj)
    p = origin[:, None] + t.index_select(0, obj) * do
    n = normals(prims, k, p)
    dist = t.index_select(0, obj) * ray_len.index_select(0, obj)
    cos_o = ((n * do).sum(0).abs() / ray_len.index_select(0, obj)).clamp_min(0.2)
    footprint = dist / focal / cos_o
    freq = prims.tex_freq.index_select(0, k)
    tex = fbm(p * freq, scene.table, octaves=2, footprint=footprint * freq)
    albedo = prims.colour.T.contiguous().index_select(1, k) * (1 + prims.tex_amp.index_select(0, k) * (2 * tex - 1))
    albedo = _patterns(albedo, prims.pattern.index_select(0, k), p, n, h, footprint, prims.kind.index_select(0, k) == OBOX)
    shade = 0.38 + 0.62 * (n * scene.sun[:, None]).sum(0).clamp_min(0)
    colour[:, obj] = albedo * shade
    cls[obj] = prims.cls.index_select(0, k)
    dyn[obj] = prims.dynamic.index_select(0, k)
    return colour, cls, dyn


def _coverage(dist_inside: torch.Tensor, footprint: torch.Tensor) -> torch.Tensor:
    """Fraction of a pixel (of size ``footprint``) covered by a pattern whose edge is ``dist_inside`` away."""
    return (dist_inside / footprint + 0.5).clamp(0, 1)


def _stripe(coord: torch.Tensor, period: float, centre: float, half_width: float, footprint: torch.Tensor) -> torch.Tensor:
    """Anti-aliased coverage of periodic stripes |(coord / period) mod 1 - centre| < half_width."""
    inside = (half_width - ((coord / period) % 1.0 - centre).abs()) * period
    return _coverage(inside, footprint)


def _sky(d: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Sky colour as a function of direction only: it sits at infinity, so translation never moves it."""
    u = d / length3(d)[None]
    elev = (-u[1]).clamp(0, 1)
    horizon = torch.tensor([0.78, 0.84, 0.92])[:, None]
    zenith = torch.tensor([0.32, 0.52, 0.85])[:, None]
    g = torch.lerp(horizon, zenith, (elev * 2.5).clamp(0, 1)[None])
    clouds = fbm(u * 4.0 + 11.0, table, octaves=2)
    return torch.lerp(g, torch.full_like(g, 0.95), ((clouds - 0.55) * 3).clamp(0, 0.6)[None])


def _ground(p: torch.Tensor, scene: DriveScene, footprint: torch.Tensor):
    """Road (faint texture, lane markings) inside the kerbs; terrain (grass) beyond the sidewalks."""
    x, z = p[0], p[2]
    road = x.abs() < ROAD_HALF
    tex = fbm(torch.stack([x * 1.3, z * 1.3, torch.zeros_like(x)]), scene.table, octaves=3, footprint=footprint * 1.3)
    road_col = 0.36 * (1 + 0.08 * (2 * tex - 1))
    dash = _stripe(z, 9.0, 1.5 / 9.0, 1.5 / 9.0, footprint) * _coverage(0.08 - x.abs(), footprint)
    edge = _coverage(0.07 - (x.abs() - (ROAD_HALF - 2.0)).abs(), footprint)
    road_col = torch.lerp(road_col, torch.full_like(road_col, 0.82), torch.maximum(dash, edge))
    road_rgb = road_col[None] * torch.tensor([1.0, 1.0, 1.03])[:, None]
    grass = torch.tensor([0.3, 0.42, 0.18])[:, None] * (1 + 0.45 * (2 * tex - 1))[None]
    albedo = torch.where(road[None], road_rgb, grass)
    shade = 0.38 + 0.62 * (-scene.sun[1]).clamp_min(0)
    cls = torch.where(road, torch.tensor(ROAD), torch.tensor(TERRAIN))
    return albedo * shade, cls


def _patterns(albedo: torch.Tensor, pattern: torch.Tensor, p: torch.Tensor, n: torch.Tensor, h: float,
              footprint: torch.Tensor, turned: torch.Tensor) -> torch.Tensor:
    """Facade windows and sidewalk tiles, defined on world coordinates of the hit point.

    Window columns run along a wall: along z or x on axis-aligned boxes, along the wall's own
    horizontal direction on ``turned`` boxes (the town's facades).
    """
    win = (pattern == WINDOWS) & (n[1].abs() < 0.5)
    if win.any():
        along = torch.where(n[0].abs() > 0.5, p[2], p[0])
        if bool(turned.any()):
            along = torch.where(turned, n[0] * p[2] - n[2] * p[0], along)
        up = h - p[1]
        glass = _stripe(along, 2.7, 0.5, 0.22, footprint) * _stripe(up, 3.2, 0.55, 0.22, footprint) * (up > 2.5)
        glass = glass * win
        albedo = torch.lerp(albedo, torch.tensor([0.12, 0.15, 0.2])[:, None].expand_as(albedo), glass[None])
    tile = (pattern == TILES) & (n[1].abs() > 0.5)
    if tile.any():
        grout = torch.maximum(_stripe(p[0], 1.2, 0.0, 0.03, footprint), _stripe(p[2], 1.2, 0.0, 0.03, footprint))
        grout = torch.maximum(grout, _stripe(p[0], 1.2, 1.0, 0.03, footprint))
        grout = torch.maximum(grout, _stripe(p[2], 1.2, 1.0, 0.03, footprint))
        albedo = albedo * (1 - 0.2 * grout * tile)[None]
    return albedo


def render_sequence(cfg: DriveConfig, sequence_seed: int):
    """Yield (frame index, rendered frame dict) for every frame of one drive (poses: build_scene)."""
    scene = build_scene(cfg, sequence_seed)
    for i in range(cfg.frames):
        yield i, render_frame(scene, cfg, i)
