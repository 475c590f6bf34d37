"""SynthDrive's ``town``: the streets that the straight street's assumptions fail in.

The straight street has facades parallel to the optical axis, a level camera and sidewalks on both
sides all along. Here the street curves (the camera follows it, so facades ahead turn against the
optical axis), a perpendicular street crosses it (facades end, open road to both sides), buildings
stand at three setbacks from the sidewalk behind front gardens, with alleys and open lots (houses
further back) between them, trees and hedges stand in front of the facades, and the camera is
pitched down 2-6 degrees with a little roll (drawn per sequence). Everything that is not round is a
box turned about the vertical axis (``raycast.OBOX``), so the renderer, textures and exact ground
truth are those of :mod:`semhint.data.synthetic.drive`.

Streets are centrelines parameterised by arc length ``s`` (straight pieces and circular arcs with a
continuous heading); a point's street coordinates are ``(s, lateral offset)``, offset > 0 to the right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from semhint.data.synthetic.drive import (_CARS, _FACADES, BUILDING, CAR, FENCE, LANE, LIGHT, POLE, PERSON, ROAD,
                                          ROAD_HALF, SIDEWALK, SIGN, TERRAIN, TILES, TRUCK, VEGETATION, WALL, WINDOWS,
                                          DriveConfig, DriveScene, _Builder, _coverage, _stripe, speed_profile)
from semhint.data.synthetic.noise import fbm, noise_table
from semhint.data.synthetic.raycast import Prims

PITCH_DEG = (2.0, 6.0)  # the camera looks down by this much (drawn per sequence)
ROLL_DEG = 1.0  # and is rolled by up to this much either way
SETBACKS = ((0.0, 0.6), (2.5, 4.5), (6.0, 9.0))  # metres behind the sidewalk: flush, front garden, deep garden
TIER_ODDS = (0.45, 0.35, 0.2)
BEHIND = 40.0  # metres of street laid out behind the first camera position
AHEAD = 170.0  # ... and beyond the last one (the far facades of the street)
ARM = 130.0  # length of the crossing street's arms
ARC_PIECE = 3.0  # metres: sidewalks and hedges along an arc are chords this long


# ----------------------------------------------------------------------------------------------
# street centrelines
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Piece:
    """A straight piece (curvature 0) or a circular arc of a centreline, from arc length s0 on."""

    s0: float
    length: float
    x0: float
    z0: float
    heading: float  # at s0; the direction is (sin heading, cos heading) in (x, z): 0 = +z, > 0 turns right
    curvature: float  # 1 / radius, > 0 turning right


class Centreline:
    """Consecutive pieces with a continuous heading; the first and last extend without end."""

    def __init__(self, pieces: list[Piece]) -> None:
        self.pieces = pieces

    @staticmethod
    def chain(x0: float, z0: float, heading: float, s0: float, spec: list[tuple[float, float]]) -> "Centreline":
        """Pieces (length, curvature) laid end to end from (x0, z0) at arc length s0."""
        pieces = []
        for length, k in spec:
            pieces.append(Piece(s0, length, x0, z0, heading, k))
            x0, z0, heading = _piece_at(pieces[-1], s0 + length)
            s0 += length
        return Centreline(pieces)

    def _piece(self, s: float) -> Piece:
        for piece in self.pieces[:-1]:
            if s < piece.s0 + piece.length:
                return piece
        return self.pieces[-1]

    def at(self, s: float, offset: float = 0.0) -> tuple[float, float, float]:
        """World (x, z) of the point ``offset`` m right of the centreline at arc length s, and the heading there."""
        x, z, heading = _piece_at(self._piece(s), s)
        return x + offset * math.cos(heading), z - offset * math.sin(heading), heading

    def curvature(self, s: float) -> float:
        return self._piece(s).curvature

    def spans(self, s0: float, s1: float) -> list[tuple[float, float, float]]:
        """[s0, s1] cut where the curvature changes: (start, end, curvature) per part."""
        out = []
        for i, piece in enumerate(self.pieces):
            lo = s0 if i == 0 else max(s0, piece.s0)
            hi = s1 if i == len(self.pieces) - 1 else min(s1, piece.s0 + piece.length)
            if hi > lo:
                out.append((lo, hi, piece.curvature))
        return out

    def locate(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Street coordinates (s, lateral offset) of world points; offset = inf where no piece is beside them.

        Each piece projects the points it lies beside; the nearest projection (smallest |offset|) wins.
        """
        best_s = torch.zeros_like(x)
        best_lat = torch.full_like(x, float("inf"))
        last = len(self.pieces) - 1
        for i, piece in enumerate(self.pieces):
            sin0, cos0 = math.sin(piece.heading), math.cos(piece.heading)
            if piece.curvature == 0.0:
                along = (x - piece.x0) * sin0 + (z - piece.z0) * cos0
                lat = (x - piece.x0) * cos0 - (z - piece.z0) * sin0
            else:
                k = piece.curvature
                sign = 1.0 if k > 0 else -1.0
                cx, cz = piece.x0 + cos0 / k, piece.z0 - sin0 / k  # the arc's centre
                vx, vz = x - cx, z - cz
                angle = torch.atan2(sign * vz, -sign * vx)
                turned = torch.remainder(angle - piece.heading + math.pi, 2 * math.pi) - math.pi
                along = turned / k
                lat = sign * (abs(1.0 / k) - torch.sqrt(vx * vx + vz * vz))
            beside = torch.ones_like(x, dtype=torch.bool)
            if i > 0:
                beside &= along >= 0
            if i < last:
                beside &= along <= piece.length
            better = beside & (lat.abs() < best_lat.abs())
            best_s = torch.where(better, piece.s0 + along, best_s)
            best_lat = torch.where(better, lat, best_lat)
        return best_s, best_lat


def _piece_at(piece: Piece, s: float) -> tuple[float, float, float]:
    d = s - piece.s0
    if piece.curvature == 0.0:
        return piece.x0 + d * math.sin(piece.heading), piece.z0 + d * math.cos(piece.heading), piece.heading
    k = piece.curvature
    heading = piece.heading + k * d
    return (piece.x0 + (math.cos(piece.heading) - math.cos(heading)) / k,
            piece.z0 + (math.sin(heading) - math.sin(piece.heading)) / k, heading)


# ----------------------------------------------------------------------------------------------
# the town
# ----------------------------------------------------------------------------------------------
@dataclass
class Town:
    """The streets of one sequence, what moves on them, and how the ground between them looks."""

    main: Centreline
    cross: Centreline  # perpendicular to the main street at main arc length s_cross; its s = 0 there
    s_cross: float
    kerb: float  # offset of the back of the sidewalks from either centreline
    travel: np.ndarray  # the camera's arc length along the main street, per frame
    movers: list[dict]

    def moving_prims(self, scene: DriveScene, frame: int) -> Prims | None:
        """A lead car that keeps its distance along the street, oncoming cars in the other lane."""
        b = _Builder()
        for m in self.movers:
            if m["kind"] == "lead":
                x, z, heading = self.main.at(float(self.travel[frame]) + m["gap"], LANE)
            else:
                x, z, heading = self.main.at(m["s0"] - m["speed"] * frame, -LANE)
                heading += math.pi
            _car(b, x, z, heading, scene.camera_height, m["colour"], True)
        return b.build() if b.rows else None

    def ground(self, p: torch.Tensor, scene: DriveScene, footprint: torch.Tensor):
        """Road inside the kerbs of either street (lane markings, none inside the crossing); terrain elsewhere."""
        x, z = p[0], p[2]
        streets = [self.main.locate(x, z), self.cross.locate(x, z)]
        on = [lat.abs() < ROAD_HALF for _, lat in streets]
        tex = fbm(torch.stack([x * 1.3, z * 1.3, torch.zeros_like(x)]), scene.table, octaves=3,
                  footprint=footprint * 1.3)
        road_col = 0.36 * (1 + 0.08 * (2 * tex - 1))
        paint = torch.zeros_like(x)
        for (s, lat), other in zip(streets, reversed(on)):
            dash = _stripe(s, 9.0, 1.5 / 9.0, 1.5 / 9.0, footprint) * _coverage(0.08 - lat.abs(), footprint)
            edge = _coverage(0.07 - (lat.abs() - (ROAD_HALF - 2.0)).abs(), footprint)
            paint = torch.maximum(paint, torch.maximum(dash, edge) * ~other)
        road_col = torch.lerp(road_col, torch.full_like(road_col, 0.82), paint)
        road_rgb = road_col[None] * torch.tensor([1.0, 1.0, 1.03])[:, None]
        grass = torch.tensor([0.3, 0.42, 0.18])[:, None] * (1 + 0.45 * (2 * tex - 1))[None]
        road = on[0] | on[1]
        albedo = torch.where(road[None], road_rgb, grass)
        shade = 0.38 + 0.62 * (-scene.sun[1]).clamp_min(0)
        return albedo * shade, torch.where(road, torch.tensor(ROAD), torch.tensor(TERRAIN))

    def clear_of_streets(self, points: np.ndarray) -> bool:
        """True when every (x, z) point lies behind the sidewalks of both streets (not on a road or sidewalk)."""
        pts = torch.tensor(points, dtype=torch.float64)
        return all(bool((street.locate(pts[:, 0], pts[:, 1])[1].abs() > self.kerb - 0.3).all())
                   for street in (self.main, self.cross))


def build_scene(cfg: DriveConfig, sequence_seed: int) -> DriveScene:
    """Lay out a town for the whole camera path: the crossing ahead of the start, then the curve."""
    rng = np.random.default_rng(sequence_seed)
    h = cfg.camera_height
    v = speed_profile(cfg, rng)
    travel = np.concatenate([[0.0], np.cumsum(v[:-1])])
    s_cross = 6.0 + float(travel[-1]) * rng.uniform(0.15, 0.3)
    s_arc = max(s_cross + rng.uniform(14, 20), float(travel[-1]) * rng.uniform(0.4, 0.55))  # driven through
    radius, turn = rng.uniform(35, 70), math.radians(rng.uniform(35, 65)) * rng.choice([-1.0, 1.0])
    arc = (radius * abs(turn), math.copysign(1 / radius, turn))
    main = Centreline.chain(0.0, -1000.0, 0.0, -1000.0, [(1000.0 + s_arc, 0.0), arc, (5000.0, 0.0)])
    xc, zc, _ = main.at(s_cross)
    cross = Centreline.chain(xc - 1000.0, zc, math.pi / 2, -1000.0, [(2000.0, 0.0)])
    poses = _camera_path(cfg, rng, main, travel)
    sw = float(rng.uniform(2.0, 3.5))
    kerb = ROAD_HALF + sw
    town = Town(main, cross, s_cross, kerb, travel, [])
    s0, s1 = -BEHIND, float(travel[-1]) + AHEAD
    cross_zone = (s_cross - kerb - 0.5, s_cross + kerb + 0.5)
    b = _Builder()
    footprints: list[np.ndarray] = []
    for side in (-1.0, 1.0):
        for lo, hi in ((s0 - 20, s_cross - ROAD_HALF), (s_cross + ROAD_HALF, s1 + 20)):
            _sidewalk(b, main, side, lo, hi, kerb, h)
        for lo, hi in ((s0, cross_zone[0]), (cross_zone[1], s1)):
            _row(b, rng, town, main, side, lo, hi, kerb, h, footprints, None)
        poles = _poles(b, rng, main, side, s0, s1, h, [cross_zone])
        _street_trees(b, rng, main, side, s0, s1, h, sw, poles, [cross_zone])
        _parked(b, rng, main, side, s0, s1, h, [(s_cross - ROAD_HALF - 6, s_cross + ROAD_HALF + 3)])
        _people(b, rng, main, side, 5.0, float(travel[-1]) + 60, h, sw, [cross_zone])
    _crossing_lights(b, main, s_cross, h)
    main_footprints = list(footprints)
    for side in (-1.0, 1.0):
        for lo, hi in ((-ARM - 20, -ROAD_HALF), (ROAD_HALF, ARM + 20)):
            _sidewalk(b, cross, side, lo, hi, kerb, h)
        for lo, hi in ((-ARM, -kerb - 0.5), (kerb + 0.5, ARM)):
            _row(b, rng, town, cross, side, lo, hi, kerb, h, footprints, main_footprints)
            _street_trees(b, rng, cross, side, lo, hi, h, sw, [], [])
            _parked(b, rng, cross, side, lo, hi, h, [(-ROAD_HALF - 6, ROAD_HALF + 6)])
    town.movers = _movers(cfg, rng, travel) if cfg.moving_cars else []
    sun = torch.tensor([-0.45, -0.8, 0.4])
    return DriveScene(b.build(), [], poses, sw, h, noise_table(sequence_seed), sun / sun.norm(), town=town)


def _camera_path(cfg: DriveConfig, rng, main: Centreline, travel: np.ndarray) -> np.ndarray:
    """Camera-to-world poses: the right lane of the main street (weaving a little), pitched down, rolled."""
    amp, wavelength, phase = rng.uniform(0.2, 0.4), rng.uniform(40, 80), rng.uniform(0, 2 * math.pi)
    pitch_down = math.radians(rng.uniform(*PITCH_DEG))
    roll = math.radians(rng.uniform(-ROLL_DEG, ROLL_DEG))
    bounce = rng.uniform(0.5, 1.0)
    poses = np.zeros((cfg.frames, 4, 4))
    for i, s in enumerate(travel):
        w = 2 * math.pi / wavelength
        lat = LANE + amp * math.sin(w * s + phase)
        x, z, heading = main.at(float(s), lat)
        # the lane's direction of travel: the heading plus the weave's slope (widened or narrowed by the curve)
        yaw = heading + math.atan2(amp * w * math.cos(w * s + phase), 1 - main.curvature(float(s)) * lat)
        pitch = -pitch_down + 0.004 * math.sin(i * bounce)  # rotation about x by > 0 looks up (y is down)
        poses[i, :3, :3] = _rot_y(yaw) @ _rot_x(pitch) @ _rot_z(roll)
        poses[i, :3, 3] = (x, 0.0, z)
        poses[i, 3, 3] = 1
    return poses


def _rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _outside(s: float, zones: list[tuple[float, float]], margin: float = 0.0) -> bool:
    return all(not (lo - margin <= s <= hi + margin) for lo, hi in zones)


# ----------------------------------------------------------------------------------------------
# things along a street
# ----------------------------------------------------------------------------------------------
def _strip(b: _Builder, street: Centreline, side: float, s0: float, s1: float, inner: float, outer: float,
           y_top: float, y_bottom: float, cls: int, colour, amp: float, freq: float, pattern: int = 0) -> None:
    """A band between offsets ``inner`` and ``outer`` on one side: one box per straight part, chords on arcs.

    Chords are lengthened by the arc's widening at the outer offset so neighbours overlap, never gap.
    """
    for lo, hi, k in street.spans(s0, s1):
        n = 1 if k == 0.0 else max(1, math.ceil((hi - lo) / ARC_PIECE))
        step = (hi - lo) / n
        for j in range(n):
            s = lo + (j + 0.5) * step
            x, z, heading = street.at(s, side * 0.5 * (inner + outer))
            length = step * (1 + abs(k) * outer) + (0.1 if k else 0.0)
            half = (0.5 * (outer - inner), 0.5 * (y_bottom - y_top), 0.5 * length)
            b.turned_box((x, 0.5 * (y_top + y_bottom), z), half, heading, cls, colour, amp, freq, pattern)


def _sidewalk(b: _Builder, street: Centreline, side: float, s0: float, s1: float, kerb: float, h: float) -> None:
    """A raised sidewalk (0.15 m kerb) from the road's edge to ``kerb``, tiled."""
    _strip(b, street, side, s0, s1, ROAD_HALF, kerb, h - 0.15, h + 0.5, SIDEWALK, (0.62, 0.6, 0.58), 0.12, 1.5, TILES)


def _footprint(x: float, z: float, heading: float, half_across: float, half_along: float) -> np.ndarray:
    """Corners, edge midpoints and centre (9 x 2) of a turned rectangle."""
    a = np.array([math.cos(heading), -math.sin(heading)])  # across (to the right)
    u = np.array([math.sin(heading), math.cos(heading)])  # along
    return np.array([[x, z] + i * half_across * a + j * half_along * u for i in (-1, 0, 1) for j in (-1, 0, 1)])


def _overlaps(one: np.ndarray, other: np.ndarray) -> bool:
    """Whether two turned rectangles (as :func:`_footprint` points) overlap: no separating edge direction."""
    for rect in (one, other):
        for edge in (rect[2] - rect[0], rect[6] - rect[0]):
            axis = np.array([-edge[1], edge[0]])
            p, q = one @ axis, other @ axis
            if p.max() <= q.min() or q.max() <= p.min():
                return False
    return True


def _row(b: _Builder, rng, town: Town, street: Centreline, side: float, s0: float, s1: float, kerb: float, h: float,
         footprints: list, avoid: list | None) -> None:
    """Buildings along one side between s0 and s1: three setback tiers, alleys, open lots with houses further back.

    A building that would reach a road or sidewalk is left out, and so is one overlapping a building of
    ``avoid`` (the crossing street's houses give way to the main street's corner buildings).
    """
    s = s0
    while s1 - s > 4.0:
        if rng.random() < 0.12:  # an open lot: a boundary at the sidewalk, sometimes a house far back
            gap = float(min(rng.uniform(5, 12), s1 - s))
            _boundary(b, rng, street, side, s, s + gap, kerb, h)
            if rng.random() < 0.5 and gap > 6:
                back = kerb + float(rng.uniform(14, 22))
                _building(b, rng, town, street, side, s + 0.5, gap - 1.0, back, h, footprints, avoid)
            s += gap
            continue
        length = float(min(rng.uniform(8, 20), s1 - s))
        if street.curvature(s + length / 2) != 0.0:
            length = min(length, 12.0)  # chords along a curve stay close to it
        tier = SETBACKS[int(rng.choice(len(SETBACKS), p=TIER_ODDS))]
        setback = float(rng.uniform(*tier))
        placed = _building(b, rng, town, street, side, s, length, kerb + setback, h, footprints, avoid)
        if placed and setback > 2.0:
            if rng.random() < 0.6:
                _tree(b, rng, street, side, s + length * rng.uniform(0.25, 0.75), kerb + setback * 0.5, h,
                      max_radius=0.4 * setback + 0.6)
            if rng.random() < 0.35:
                _boundary(b, rng, street, side, s, s + length, kerb, h)
        s += length + (float(rng.uniform(1.5, 4.0)) if rng.random() < 0.3 else float(rng.uniform(0, 0.5)))


def _building(b: _Builder, rng, town: Town, street: Centreline, side: float, s: float, length: float, front: float,
              h: float, footprints: list, avoid: list | None) -> bool:
    """One building with its facade ``front`` m from the centreline, turned with the street; False if left out."""
    mid = s + length / 2
    k = street.curvature(mid)
    if side * k > 0:  # inside the curve the chord's ends come nearer the street by its sagitta
        front += length * length / (8 * max(1.0 / abs(k) - front, 5.0))
    depth = float(rng.uniform(8, 14))
    height = float(rng.uniform(6, 20))
    x, z, heading = street.at(mid, side * (front + depth / 2))
    foot = _footprint(x, z, heading, depth / 2, length / 2)
    colour = _FACADES[int(rng.integers(len(_FACADES)))]
    colour = tuple(float(c) * rng.uniform(0.85, 1.1) for c in colour)
    if not town.clear_of_streets(foot):
        return False
    if avoid is not None and any(_overlaps(foot, other) for other in avoid):
        return False
    b.turned_box((x, h - height / 2, z), (depth / 2, height / 2, length / 2), heading, BUILDING, colour, 0.18, 0.8,
                 WINDOWS)
    footprints.append(foot)
    return True


def _boundary(b: _Builder, rng, street: Centreline, side: float, s0: float, s1: float, kerb: float, h: float) -> None:
    """A wall, a fence or a hedge along the back of the sidewalk."""
    kind = int(rng.integers(0, 3))
    if kind == 0:
        top = h - float(rng.uniform(1.2, 2.2))
        _strip(b, street, side, s0, s1, kerb, kerb + 0.3, top, h, WALL, (0.55, 0.53, 0.5), 0.15, 1.0)
    elif kind == 1:
        _strip(b, street, side, s0, s1, kerb, kerb + 0.3, h - 1.4, h, FENCE, (0.42, 0.36, 0.3), 0.35, 3.0)
    else:
        green = (0.16 * rng.uniform(0.8, 1.2), 0.32 * rng.uniform(0.8, 1.2), 0.11)
        top = h - float(rng.uniform(1.0, 1.5))
        _strip(b, street, side, s0, s1, kerb + 0.1, kerb + 0.9, top, h, VEGETATION, green, 0.5, 3.5)


def _tree(b: _Builder, rng, street: Centreline, side: float, s: float, offset: float, h: float, base: float = 0.0,
          max_radius: float = 2.0) -> None:
    x, z, _ = street.at(s, side * offset)
    r = float(min(rng.uniform(1.1, 2.0), max_radius))
    trunk = float(rng.uniform(2.2, 3.2))
    b.cylinder(x, z, h - base - trunk - 0.5, h - base, 0.14, VEGETATION, (0.3, 0.22, 0.15), 0.2, 3.0)
    green = (0.18 * rng.uniform(0.8, 1.2), 0.36 * rng.uniform(0.8, 1.2), 0.12)
    b.sphere((x, h - base - trunk - r * 0.8, z), r, VEGETATION, green, 0.55, 3.5)


def _street_trees(b: _Builder, rng, street: Centreline, side: float, s0: float, s1: float, h: float, sw: float,
                  keep_clear: list[float], zones: list[tuple[float, float]]) -> None:
    """Trees on the back of the sidewalk, in front of the facades, away from poles and the crossing."""
    s = s0 + float(rng.uniform(0, 8))
    while s < s1:
        if min((abs(s - p) for p in keep_clear), default=9.0) > 2.0 and _outside(s, zones) and rng.random() < 0.6:
            _tree(b, rng, street, side, s, ROAD_HALF + sw - 0.7, h, base=0.15)
        s += float(rng.uniform(7, 18))


def _poles(b: _Builder, rng, street: Centreline, side: float, s0: float, s1: float, h: float,
           zones: list[tuple[float, float]]) -> list[float]:
    """Poles at the kerb carrying signs (facing the oncoming camera) and traffic lights; returns their s."""
    out = []
    s = s0 + float(rng.uniform(0, 10))
    while s < s1:
        if _outside(s, zones, 1.0):
            height = float(rng.uniform(4.5, 7.0))
            u = rng.random()
            _pole(b, street, side, s, h, height, sign=u < 0.45, light=0.45 <= u < 0.65,
                  colour=[(0.1, 0.25, 0.7), (0.8, 0.1, 0.1), (0.9, 0.9, 0.9)][int(rng.integers(3))])
            out.append(s)
        s += float(rng.uniform(12, 28))
    return out


def _pole(b: _Builder, street: Centreline, side: float, s: float, h: float, height: float, sign: bool, light: bool,
          colour=(0.9, 0.9, 0.9)) -> None:
    x, z, heading = street.at(s, side * (ROAD_HALF + 0.45))
    ux, uz = math.sin(heading), math.cos(heading)
    b.cylinder(x, z, h - 0.15 - height, h - 0.15, 0.07, POLE, (0.45, 0.46, 0.48), 0.05, 2.0)
    if sign:
        b.turned_box((x - 0.085 * ux, h - 2.55, z - 0.085 * uz), (0.35, 0.35, 0.015), heading, SIGN, colour, 0.04, 1.0)
    if light:
        b.turned_box((x - 0.185 * ux, h - 0.15 - height + 0.45, z - 0.185 * uz), (0.17, 0.45, 0.115), heading, LIGHT,
                     (0.12, 0.12, 0.1), 0.05, 1.0)


def _crossing_lights(b: _Builder, main: Centreline, s_cross: float, h: float) -> None:
    """Traffic lights at the four corners of the crossing."""
    for s in (s_cross - ROAD_HALF - 1.0, s_cross + ROAD_HALF + 1.0):
        for side in (-1.0, 1.0):
            _pole(b, main, side, s, h, 5.0, sign=False, light=True)


def _car(b: _Builder, x: float, z: float, heading: float, h: float, colour, dynamic: bool) -> None:
    """drive._car turned to ``heading``: textureless body, glass cabin (towards the back), dark wheel block."""
    for along, y_mid, half, col, amp, freq in ((0.0, h - 0.66, (0.9, 0.34, 2.1), colour, 0.012, 0.5),
                                               (-0.15, h - 1.225, (0.78, 0.225, 1.05), (0.1, 0.12, 0.15), 0.03, 1.0),
                                               (0.0, h - 0.225, (0.85, 0.225, 1.7), (0.05, 0.05, 0.05), 0.05, 1.0)):
        b.turned_box((x + along * math.sin(heading), y_mid, z + along * math.cos(heading)), half, heading, CAR, col,
                     amp, freq, dynamic=dynamic)


def _truck(b: _Builder, x: float, z: float, heading: float, h: float, colour) -> None:
    for along, y_mid, half, col, amp, freq in ((-0.5, h - 1.9, (1.2, 1.4, 3.5), colour, 0.02, 0.5),
                                               (3.8, h - 1.55, (1.1, 1.05, 0.8), (0.85, 0.85, 0.85), 0.03, 1.0),
                                               (0.25, h - 0.35, (1.1, 0.35, 3.75), (0.05, 0.05, 0.05), 0.05, 1.0)):
        b.turned_box((x + along * math.sin(heading), y_mid, z + along * math.cos(heading)), half, heading, TRUCK, col,
                     amp, freq)


def _parked(b: _Builder, rng, street: Centreline, side: float, s0: float, s1: float, h: float,
            zones: list[tuple[float, float]]) -> None:
    """Cars (and the odd truck) in the parking strip, turned with the street; none at the crossing."""
    s = s0 + float(rng.uniform(0, 5))
    while s < s1:
        if rng.random() < 0.5:
            truck = rng.random() < 0.08
            length = 9.0 if truck else 4.2
            colour = _CARS[int(rng.integers(len(_CARS)))]
            if _outside(s, zones) and _outside(s + length, zones):
                x, z, heading = street.at(s + length / 2, side * (ROAD_HALF - 1.0))
                (_truck(b, x, z, heading, h, colour) if truck else _car(b, x, z, heading, h, colour, False))
            s += length
        s += float(rng.uniform(0.8, 8.0))


def _people(b: _Builder, rng, street: Centreline, side: float, s0: float, s1: float, h: float, sw: float,
            zones: list[tuple[float, float]]) -> None:
    for _ in range(int(rng.integers(0, 4))):
        s = float(rng.uniform(s0, s1))
        x, z, _ = street.at(s, side * (ROAD_HALF + rng.uniform(0.8, sw - 0.3)))
        col = tuple(rng.uniform(0.1, 0.8, 3))
        if _outside(s, zones):
            b.cylinder(x, z, h - 0.15 - 1.55, h - 0.15, 0.22, PERSON, col, 0.05, 2.0)
            b.sphere((x, h - 0.15 - 1.65, z), 0.13, PERSON, (0.8, 0.62, 0.5), 0.05, 2.0)


def _movers(cfg: DriveConfig, rng, travel: np.ndarray) -> list[dict]:
    """A lead car that keeps its distance (moves with the camera) and a few oncoming cars."""
    movers = [dict(kind="lead", gap=float(rng.uniform(9, 16)), colour=_CARS[int(rng.integers(len(_CARS)))])]
    s_far = float(travel[-1]) + 120
    for _ in range(int(rng.integers(1, 4))):
        movers.append(dict(kind="oncoming", s0=float(rng.uniform(30, s_far)), speed=float(rng.uniform(0.8, 1.5)),
                           colour=_CARS[int(rng.integers(len(_CARS)))]))
    return movers
