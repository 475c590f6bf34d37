"""SynthTissue: close-range endoscopic video of a deforming tissue surface, with exact ground truth.

Everything lives in *material coordinates* (u, v) in millimetres: albedo, tissue type and the rest
height are functions of (u, v), and the deformation moves material points. A pixel is inverted to
the material point it sees by fixed-point iteration of the projection, which gives exact depth,
segmentation and the 2D / 3D track of any material point (see docs TRACKING.md, 'Synthetic
endoscopic scene'). Units: millimetres; camera frame x right, y down, z forward.

What real endoscopy has and this keeps: a light at the camera (brightness ~ cos / r^2, vignetting),
moving specular highlights, texture-poor reddish albedo with thin vessels, breathing, heartbeat and
a tool pull (non-rigid motion), an occluding metallic instrument, small camera drift, sensor noise.

``style="scared"`` (the ``scared`` preset) is modelled on the SCARED and Hamlyn videos instead of
the tracking clips: the endoscope pivots about its trocar (pan), slides in and out (dolly) and rolls,
so consecutive frames show a few pixels of parallax at training resolution; the light at the tip
also has a spot profile; wet tissue gives sharper, saturating highlights; the tissue is mostly rigid
(shallow breathing, a faint heartbeat, and a local pull only while the instrument grasps it); the
instrument enters the view, grasps, and leaves; the texture has vessels at three scales and a fine
grain. Its random draws come from a second generator, so a ``clip`` scene of the same seed has the
same surface and the default renders stay bit-identical.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from semhint.core.conventions import IGNORE_INDEX, TISSUE
from semhint.core.errors import InputError
from semhint.data.synthetic.noise import fbm, noise_table
from semhint.data.synthetic.raycast import length3

TISSUE_A, TISSUE_B, INSTRUMENT = (TISSUE.id(n) for n in TISSUE.names)  # the classes SynthTissue renders
DT = torch.float32  # float32 converges to ~1e-5 px here; float64 would only double the cost
STYLES = ("clip", "scared")  # clip: the tracking clips (near-static camera); scared: a SCARED/Hamlyn-like scope


@dataclass(frozen=True)
class TissueConfig:
    height: int = 240
    width: int = 320
    frames: int = 40
    seed: int = 0
    fps: float = 15.0
    hfov_deg: float = 55.0  # horizontal field of view (TRACKING.md: 40-65 degrees)
    queries: int = 64  # material points tracked through the sequence
    noise: float = 0.01  # sensor noise std (image in [0, 1])
    instrument: bool = True
    iterations: int = 12  # Newton iterations cap (stops early once converged)
    # A scope sweeping across the tissue: lateral back-and-forth camera motion of this amplitude (mm),
    # on top of the drift. 0 (default) keeps the near-static camera of the tracking clips, whose ~0.1 px
    # of parallax leaves photometric self-supervision almost nothing to learn from.
    sweep_mm: float = 0.0
    sweep_cycles: float = 1.0  # back-and-forth cycles over the sequence
    # clip: the tracking clips (drift, tool pull over the whole clip); scared: the SCARED/Hamlyn-like scope
    # path, spot light, mostly rigid tissue, an instrument that comes and goes, multi-scale texture
    style: str = "clip"


def intrinsics(cfg: TissueConfig) -> np.ndarray:
    f = (cfg.width / 2) / math.tan(math.radians(cfg.hfov_deg) / 2)
    return np.array([[f, 0, (cfg.width - 1) / 2], [0, f, (cfg.height - 1) / 2], [0, 0, 1]], dtype=np.float64)


@dataclass
class TissueScene:
    """Random but fixed parameters of one sequence: surface, deformation, camera drift, instrument."""

    distance: float  # mm from camera to the mean surface
    tilt: tuple[float, float]
    bumps: torch.Tensor  # B x 4: (u, v, amplitude, sigma)
    breath: tuple[float, float, float]  # amplitude mm, frequency Hz, phase
    heart: tuple[float, float, float, float, float]  # amplitude, frequency, phase, u, v
    pull_uv: tuple[float, float]
    pull_dir: torch.Tensor  # 3 unit vector of the pull
    pull_amp: float
    border: tuple[float, float, float, float]  # tissue B where u cos a + v sin a > b0 + amp sin(...)
    shaft_entry: torch.Tensor  # 3: a point of the shaft outside the view
    poses: np.ndarray  # T x 4 x 4 camera-to-world (world = first camera)
    table: torch.Tensor
    pull_sigma: float = 16.0  # mm: radius of the tissue the tool pull moves
    # scared: fractions of the sequence where the instrument starts entering, reaches the tissue, starts
    # leaving and is gone; None: always at the tissue (clip)
    instrument_window: tuple[float, float, float, float] | None = None
    bowl: float = 0.0  # mm per mm^2: the cavity's curvature, z += bowl (u^2 + v^2) (scared; 0 in clips)


def build_scene(cfg: TissueConfig, sequence_seed: int) -> TissueScene:
    """The fixed random parameters of one sequence (the same surface for every style of a seed)."""
    if cfg.style not in STYLES:
        raise InputError(f"unknown SynthTissue style {cfg.style!r} (choose from: {', '.join(STYLES)})")
    if cfg.style == "scared" and cfg.sweep_mm > 0:
        raise InputError("SynthTissue style 'scared' moves its own scope: sweep_mm must be 0")
    rng = np.random.default_rng(sequence_seed)
    distance = float(rng.uniform(60, 100))
    nb = 7
    bumps = torch.tensor(np.stack([rng.uniform(-60, 60, nb), rng.uniform(-45, 45, nb), rng.uniform(-7, 7, nb),
                                   rng.uniform(14, 30, nb)], 1), dtype=DT)
    ang = rng.uniform(0, 2 * math.pi)
    pull_dir = np.array([math.cos(ang) * 0.6, math.sin(ang) * 0.6, -0.8])
    a = rng.uniform(0, 2 * math.pi)
    side = rng.uniform(-1, 1)
    entry = np.array([math.cos(a) * distance * 0.9, math.sin(a) * distance * 0.9 * 0.75, distance * 0.35])
    scene = TissueScene(
        distance=distance, tilt=(float(rng.uniform(-0.25, 0.25)), float(rng.uniform(-0.25, 0.25))), bumps=bumps,
        breath=(float(rng.uniform(1.5, 3.0)), float(rng.uniform(0.2, 0.3)), float(rng.uniform(0, 2 * math.pi))),
        heart=(float(rng.uniform(0.3, 0.8)), float(rng.uniform(0.9, 1.3)), float(rng.uniform(0, 2 * math.pi)),
               float(rng.uniform(-30, 30)), float(rng.uniform(-20, 20))),
        pull_uv=(float(rng.uniform(-15, 15)), float(rng.uniform(-10, 10))),
        pull_dir=torch.tensor(pull_dir / np.linalg.norm(pull_dir), dtype=DT), pull_amp=float(rng.uniform(5, 15)),
        border=(float(rng.uniform(0, 2 * math.pi)), float(side * 15), float(rng.uniform(3, 8)), float(rng.uniform(20, 40))),
        shaft_entry=torch.tensor(entry, dtype=DT), poses=_drift(cfg, rng), table=noise_table(sequence_seed),
    )
    return _scared_scene(scene, cfg, sequence_seed) if cfg.style == "scared" else scene


# The scope of the scared style, sized so that consecutive frames at 15 fps show 2-10 px of image
# motion at the training size (tests/test_synth_tissue.py checks it; docs/lab/parallax_scared.md records it).
SCOPE_PIVOT_MM = (90.0, 130.0)  # trocar (remote centre of motion) behind the tip: pan also moves the tip
SCOPE_PAN_DEG = (6.0, 9.0)  # the scope axis circles (an ellipse) this far about its mean direction...
SCOPE_PAN_PERIOD_S = (3.0, 4.5)  # ...once per this many seconds: a steady sweep, no standstill
SCOPE_DOLLY_MM = (6.0, 12.0)  # in and out along the view axis
SCOPE_DOLLY_PERIOD_S = (5.0, 8.0)
SCOPE_ROLL_DEG = (6.0, 12.0)  # about the view axis
SCOPE_ROLL_PERIOD_S = (6.0, 10.0)
# The scared style's organ-scale relief (SCARED frames span roughly 40-150 mm of depth): lobes of this
# height (mm, either sign) and width (sigma, mm), steep enough to matter, gentle enough never to fold
# over along a ray (slope <= 0.6 x height / width < 1); and a cavity curvature of either sign (mm / mm^2:
# 0.006 moves the view's edge, ~45 mm off axis, by ~12 mm)
SCOPE_LOBES = 3
SCOPE_LOBE_HEIGHT_MM = (10.0, 20.0)
SCOPE_LOBE_WIDTH_MM = (15.0, 25.0)
SCOPE_BOWL = (0.003, 0.006)


def _scared_scene(scene: TissueScene, cfg: TissueConfig, sequence_seed: int) -> TissueScene:
    """The clip scene of the same seed (same surface, tissues, instrument entry) with the scared
    style's motion: a scope path, shallow breathing, a faint heartbeat, a local pull while grasped,
    and an instrument that enters and leaves. A second generator, so clip scenes keep their draws."""
    rng = np.random.default_rng([sequence_seed, 20])
    scene.breath = (float(rng.uniform(0.2, 0.5)), float(rng.uniform(0.2, 0.3)), float(rng.uniform(0, 2 * math.pi)))
    scene.heart = (float(rng.uniform(0.05, 0.2)),) + scene.heart[1:]
    scene.pull_amp = float(rng.uniform(3.0, 6.0))
    scene.pull_sigma = float(rng.uniform(7.0, 11.0))
    enter = float(rng.uniform(0.05, 0.2))
    reached = enter + float(rng.uniform(0.08, 0.15))
    leave = reached + float(rng.uniform(0.3, 0.45))
    scene.instrument_window = (enter, reached, leave, leave + float(rng.uniform(0.08, 0.15)))
    scene.poses = _scope_path(cfg, rng)
    # organ-scale shape, drawn last so the draws above keep their values: a few lobes and the cavity's
    # curvature. The clip surface alone is so nearly flat that a homography explains the flow between
    # frames to 0.06 px (docs/lab/parallax_relief.md): photometric learning then has no depth to find.
    n = SCOPE_LOBES
    lobes = np.stack([rng.uniform(-40, 40, n), rng.uniform(-30, 30, n), rng.choice([-1.0, 1.0], n)
                      * rng.uniform(*SCOPE_LOBE_HEIGHT_MM, n), rng.uniform(*SCOPE_LOBE_WIDTH_MM, n)], 1)
    scene.bumps = torch.cat([scene.bumps, torch.tensor(lobes, dtype=DT)])
    scene.bowl = float(rng.choice([-1.0, 1.0]) * rng.uniform(*SCOPE_BOWL))
    return scene


def _rotation(axis: int, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    R = np.eye(3)
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    return R


def _scope_path(cfg: TissueConfig, rng: np.random.Generator) -> np.ndarray:
    """Camera-to-world poses of an endoscope held through a trocar (world = first camera).

    The tip sits ``pivot`` mm in front of the trocar along the scope axis. Pan turns the axis about
    the trocar (yaw about the camera's vertical, pitch about its horizontal axis) along an ellipse,
    so the view turns *and* the tip translates sideways: that translation is the parallax depth is
    learnt from. Dolly slides the scope along its axis; roll turns it about the axis. The motion is
    defined in seconds (``cfg.fps``), so the step between frames does not depend on the clip length.
    """
    t = np.arange(cfg.frames) / cfg.fps
    pivot = rng.uniform(*SCOPE_PIVOT_MM)
    pan = math.radians(rng.uniform(*SCOPE_PAN_DEG))
    ellipse = rng.uniform(0.6, 1.0)
    w_pan = 2 * math.pi / rng.uniform(*SCOPE_PAN_PERIOD_S)
    ph_pan = rng.uniform(0, 2 * math.pi)
    dolly = rng.uniform(*SCOPE_DOLLY_MM) * np.sin(2 * math.pi * t / rng.uniform(*SCOPE_DOLLY_PERIOD_S)
                                                   + rng.uniform(0, 2 * math.pi))
    roll = math.radians(rng.uniform(*SCOPE_ROLL_DEG)) * np.sin(2 * math.pi * t / rng.uniform(*SCOPE_ROLL_PERIOD_S)
                                                               + rng.uniform(0, 2 * math.pi))
    yaw = pan * np.sin(w_pan * t + ph_pan)
    pitch = pan * ellipse * np.cos(w_pan * t + ph_pan)
    rig = np.tile(np.eye(4), (cfg.frames, 1, 1))  # camera-to-trocar
    for i in range(cfg.frames):
        aim = _rotation(1, yaw[i]) @ _rotation(0, pitch[i])
        rig[i, :3, :3] = aim @ _rotation(2, roll[i])
        rig[i, :3, 3] = aim @ np.array([0.0, 0.0, pivot + dolly[i]])
    return np.linalg.inv(rig[0]) @ rig


def _drift(cfg: TissueConfig, rng: np.random.Generator) -> np.ndarray:
    """Small smooth camera motion (a few mm and about a degree over the sequence), plus the optional sweep."""
    n = cfg.frames
    s = np.linspace(0, 1, n)
    poses = np.tile(np.eye(4), (n, 1, 1))
    for axis in range(3):
        amp, ph = rng.uniform(1.0, 3.0), rng.uniform(0, 2 * math.pi)
        poses[:, axis, 3] = amp * (np.sin(2 * math.pi * 0.5 * s + ph) - math.sin(ph))
    ax = rng.normal(size=3)
    ax /= np.linalg.norm(ax)
    for i in range(n):
        angle = math.radians(1.2) * math.sin(math.pi * s[i])
        kx = np.array([[0, -ax[2], ax[1]], [ax[2], 0, -ax[0]], [-ax[1], ax[0], 0]])
        poses[i, :3, :3] = np.eye(3) + math.sin(angle) * kx + (1 - math.cos(angle)) * kx @ kx
    if cfg.sweep_mm > 0:  # drawn last and only when on, so default renders stay bit-identical
        heading = rng.uniform(0, 2 * math.pi)
        offset = cfg.sweep_mm * np.sin(2 * math.pi * cfg.sweep_cycles * s)
        poses[:, 0, 3] += offset * math.cos(heading)
        poses[:, 1, 3] += offset * math.sin(heading)
    return poses


# ----------------------------------------------------------------------------------------------
# the deforming surface in material coordinates
# ----------------------------------------------------------------------------------------------
def _pull_amount(scene: TissueScene, cfg: TissueConfig, frame: int) -> float:
    """The tool pulls and releases once over the sequence (0 -> pull_amp -> 0); with an instrument
    that comes and goes, only while it grasps the tissue (the tissue is at rest before and after)."""
    if scene.instrument_window is None:
        return scene.pull_amp * math.sin(math.pi * frame / max(cfg.frames - 1, 1)) ** 2
    _, reached, leave, _ = (f * (cfg.frames - 1) for f in scene.instrument_window)
    if not reached < frame < leave:
        return 0.0
    return scene.pull_amp * math.sin(math.pi * (frame - reached) / (leave - reached)) ** 2


def instrument_reach(scene: TissueScene, cfg: TissueConfig, frame: int) -> float:
    """How far the instrument has come from its entry point towards the tissue, 0 (out of the scene)
    to 1 (grasping): smooth ramps in and out of the instrument window, always 1 without one."""
    if scene.instrument_window is None:
        return 1.0
    enter, reached, leave, gone = (f * (cfg.frames - 1) for f in scene.instrument_window)

    def smooth(x: float) -> float:
        x = min(max(x, 0.0), 1.0)
        return x * x * (3 - 2 * x)

    if frame <= reached:
        return smooth((frame - enter) / (reached - enter))
    return 1.0 - smooth((frame - leave) / (gone - leave))


def world_points(scene: TissueScene, cfg: TissueConfig, frame: int, u: torch.Tensor, v: torch.Tensor,
                 jacobian: bool = False):
    """World position (3 x N, mm) of material points (u, v) at ``frame``: rest surface + deformation.

    With ``jacobian`` also returns dX/du and dX/dv (3 x N each), computed analytically: they drive
    the Newton inversion of the projection and give exact surface normals.
    """
    tsec = frame / cfg.fps
    b = scene.bumps
    du = u[None] - b[:, 0:1]
    dv = v[None] - b[:, 1:2]
    inv_s2 = 1.0 / b[:, 3:4] ** 2
    g = b[:, 2:3] * torch.exp(-(du * du + dv * dv) * (0.5 * inv_s2))
    bump = g.sum(0)
    z = scene.distance + scene.tilt[0] * u + scene.tilt[1] * v + bump + scene.bowl * (u * u + v * v)
    amp, freq, ph = scene.breath
    b_amp = amp * math.sin(2 * math.pi * freq * tsec + ph)
    breathing = b_amp * (1 + 0.3 * torch.sin(u / 40.0))
    ha, hf, hph, hu, hv = scene.heart
    heart = ha * math.sin(2 * math.pi * hf * tsec + hph) * torch.exp(-((u - hu) ** 2 + (v - hv) ** 2) / (2 * 20.0**2))
    pu, pv = scene.pull_uv
    s2 = scene.pull_sigma**2
    pull = _pull_amount(scene, cfg, frame) * torch.exp(-((u - pu) ** 2 + (v - pv) ** 2) / (2 * s2))
    pd = scene.pull_dir.tolist()
    X = torch.stack([u + 0.25 * breathing + pull * pd[0], v + pull * pd[1], z - breathing - heart + pull * pd[2]])
    if not jacobian:
        return X
    zu = scene.tilt[0] - (g * du * inv_s2).sum(0) + 2 * scene.bowl * u
    zv = scene.tilt[1] - (g * dv * inv_s2).sum(0) + 2 * scene.bowl * v
    br_u = b_amp * 0.3 / 40.0 * torch.cos(u / 40.0)
    hr_u, hr_v = -heart * (u - hu) / 20.0**2, -heart * (v - hv) / 20.0**2
    pl_u, pl_v = -pull * (u - pu) / s2, -pull * (v - pv) / s2
    dXu = torch.stack([1 + 0.25 * br_u + pl_u * pd[0], pl_u * pd[1], zu - br_u - hr_u + pl_u * pd[2]])
    dXv = torch.stack([pl_v * pd[0], 1 + pl_v * pd[1], zv - hr_v + pl_v * pd[2]])
    return X, dXu, dXv


def camera_points(scene: TissueScene, cfg: TissueConfig, frame: int, u: torch.Tensor, v: torch.Tensor,
                  jacobian: bool = False):
    """Material points in the camera frame of ``frame`` (3 x N, mm), optionally with dP/du, dP/dv."""
    c2w = torch.tensor(scene.poses[frame], dtype=DT)
    Rt = c2w[:3, :3].T
    out = world_points(scene, cfg, frame, u, v, jacobian)
    if not jacobian:
        return Rt @ (out - c2w[:3, 3:4])
    X, dXu, dXv = out
    return Rt @ (X - c2w[:3, 3:4]), Rt @ dXu, Rt @ dXv


def invert_pixels(scene: TissueScene, cfg: TissueConfig, frame: int, px: torch.Tensor, py: torch.Tensor,
                  K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Material coordinates (u, v) seen at pixels (px, py), and the final reprojection residual (px).

    Newton iteration on g(u, v) = P_z * ray_xy - P_xy (zero when the material point lies on the
    pixel's ray), with the analytic surface Jacobian. It converges in a handful of steps while the
    surface does not fold over along the ray, which the scene's bounded bumps ensure; the residual
    is returned so callers can reject any pixel that did not converge.
    """
    rx = (px - K[0, 2]) / K[0, 0]
    ry = (py - K[1, 2]) / K[1, 1]
    u = rx * scene.distance  # start: the ray's hit on the mean plane
    v = ry * scene.distance
    for _ in range(cfg.iterations):
        P, Pu, Pv = camera_points(scene, cfg, frame, u, v, jacobian=True)
        gx = P[2] * rx - P[0]
        gy = P[2] * ry - P[1]
        a, b = rx * Pu[2] - Pu[0], rx * Pv[2] - Pv[0]  # d gx / d(u, v)
        c, d = ry * Pu[2] - Pu[1], ry * Pv[2] - Pv[1]  # d gy / d(u, v)
        det = a * d - b * c
        det = torch.where(det.abs() < 1e-9, torch.full_like(det, -1e-9), det)
        step_u = (d * gx - b * gy) / det
        step_v = (-c * gx + a * gy) / det
        # damp wild steps (far from the solution) so the iteration cannot jump off the surface
        norm = torch.hypot(step_u, step_v)
        scale = (20.0 / norm.clamp_min(1e-12)).clamp(max=1.0)
        u = u - step_u * scale
        v = v - step_v * scale
        if float(norm.max()) < 1e-4:  # mm: far below a pixel at endoscopic range
            break
    P = camera_points(scene, cfg, frame, u, v)
    resid = torch.hypot(K[0, 0] * (P[0] / P[2] - rx), K[1, 1] * (P[1] / P[2] - ry))
    return u, v, resid


# ----------------------------------------------------------------------------------------------
# instrument
# ----------------------------------------------------------------------------------------------
SHAFT_RADIUS = 3.5
JAW_RADIUS = 4.5


def instrument_geometry(scene: TissueScene, cfg: TissueConfig, frame: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Camera-frame shaft end points (entry outside the view, tip grasping the pulled tissue, or on
    its way there while the instrument enters or leaves); None while it is out of the scene."""
    if not cfg.instrument:
        return None
    reach = instrument_reach(scene, cfg, frame)
    if reach <= 0:
        return None
    pu, pv = scene.pull_uv
    tip = camera_points(scene, cfg, frame, torch.tensor([pu], dtype=DT), torch.tensor([pv], dtype=DT))[:, 0]
    tip = tip - torch.tensor([0.0, 0.0, JAW_RADIUS * 0.8], dtype=DT)
    c2w = torch.tensor(scene.poses[frame], dtype=DT)
    entry = c2w[:3, :3].T @ (scene.shaft_entry - c2w[:3, 3])
    if reach < 1:
        tip = entry + reach * (tip - entry)
    return entry, tip


def instrument_depth(entry: torch.Tensor, tip: torch.Tensor, rays: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth (z) where rays (3 x N, unit z) hit the shaft cylinder or the jaw sphere (inf = miss),
    and the camera-frame surface normal there."""
    axis = tip - entry
    length = torch.linalg.vector_norm(axis)
    a_hat = axis / length
    # cylinder: |(t r - entry) x a_hat| = radius, with 0 <= (t r - entry) . a_hat <= length
    rp = rays - (a_hat @ rays)[None] * a_hat[:, None]
    ep = -entry - (a_hat @ -entry) * a_hat
    A = (rp * rp).sum(0)
    B = 2 * (rp * ep[:, None]).sum(0)
    C = (ep * ep).sum() - SHAFT_RADIUS**2
    disc = B * B - 4 * A * C
    t_cyl = (-B - disc.clamp_min(0).sqrt()) / (2 * A.clamp_min(1e-12))
    s = a_hat @ (t_cyl[None] * rays - entry[:, None])
    inf = torch.full_like(t_cyl, float("inf"))
    t_cyl = torch.where((disc > 0) & (t_cyl > 0) & (s >= 0) & (s <= length), t_cyl, inf)
    # jaw sphere at the tip
    bb = -(rays * tip[:, None]).sum(0)
    rr = (rays * rays).sum(0)
    cc = (tip * tip).sum() - JAW_RADIUS**2
    disc2 = bb * bb - rr * cc
    t_sph = (-bb - disc2.clamp_min(0).sqrt()) / rr
    t_sph = torch.where((disc2 > 0) & (t_sph > 0), t_sph, inf)
    t = torch.minimum(t_cyl, t_sph)
    P = t[None] * rays
    on_axis = entry[:, None] + ((P - entry[:, None]).T @ a_hat)[None] * a_hat[:, None]
    n = torch.where((t_sph <= t_cyl)[None], P - tip[:, None], P - on_axis)
    n = n / length3(n)[None].clamp_min(1e-9)
    return t, n


# ----------------------------------------------------------------------------------------------
# rendering
# ----------------------------------------------------------------------------------------------
def render_frame(scene: TissueScene, cfg: TissueConfig, frame: int) -> dict[str, np.ndarray]:
    """image (H x W x 3 in [0, 1]), depth (H x W mm, 0 = invalid), labels (H x W uint8:
    0 tissue A, 1 tissue B, 2 instrument, 255 unknown), uv (H x W x 2 material coordinates, nan
    where the instrument or a non-converged pixel hides the tissue)."""
    H, W = cfg.height, cfg.width
    K = torch.tensor(intrinsics(cfg), dtype=DT)
    ys, xs = torch.meshgrid(torch.arange(H, dtype=DT), torch.arange(W, dtype=DT), indexing="ij")
    px, py = xs.reshape(-1), ys.reshape(-1)
    u, v, resid = invert_pixels(scene, cfg, frame, px, py, K)
    P = camera_points(scene, cfg, frame, u, v)
    ok = resid < 0.05
    rays = torch.stack([(px - K[0, 2]) / K[0, 0], (py - K[1, 2]) / K[1, 1], torch.ones_like(px)])
    depth = torch.where(ok, P[2], torch.zeros_like(P[2]))
    label = torch.where(_tissue_b(scene, u, v), torch.tensor(TISSUE_B), torch.tensor(TISSUE_A))
    scared = cfg.style == "scared"
    normal = _surface_normals(scene, cfg, frame, u, v, relief=MICRO_RELIEF if scared else 0.0)
    albedo = _tissue_albedo_scared(scene, u, v) if scared else _tissue_albedo(scene, u, v)
    spec_k, spec_exp = (0.9, 120.0) if scared else (0.35, 60.0)  # wet tissue: sharp glints that saturate
    shaft = instrument_geometry(scene, cfg, frame)
    if shaft is not None:
        t_ins, n_ins = instrument_depth(*shaft, rays)
        hit = t_ins < torch.where(ok, P[2], torch.full_like(P[2], float("inf")))
        depth = torch.where(hit, t_ins, depth)
        label = torch.where(hit, torch.tensor(INSTRUMENT), label)
        normal = torch.where(hit[None], n_ins, normal)
        albedo = torch.where(hit[None], torch.tensor([0.55, 0.56, 0.58], dtype=DT)[:, None], albedo)
        ok = ok | hit
        u = torch.where(hit, torch.full_like(u, float("nan")), u)
        v = torch.where(hit, torch.full_like(v, float("nan")), v)
    label = torch.where(ok, label, torch.tensor(IGNORE_INDEX))
    image = _shade(albedo, normal, rays, depth, scene.distance, K, H, W, spec_k, spec_exp, SPOT_EXP if scared else 0.0)
    if cfg.noise > 0:
        g = torch.Generator().manual_seed(int(cfg.seed) * 100003 + frame * 7919 + int(scene.distance * 1000))
        image = image + cfg.noise * torch.randn(image.shape, generator=g, dtype=DT)
    uv = torch.stack([torch.where(ok, u, torch.nan), torch.where(ok, v, torch.nan)], -1)
    return {
        "image": image.clamp(0, 1).T.reshape(H, W, 3).numpy(),
        "depth": depth.reshape(H, W).numpy(),
        "labels": label.reshape(H, W).numpy().astype(np.uint8),
        "uv": uv.reshape(H, W, 2).numpy(),
    }


def _tissue_b(scene: TissueScene, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    a, b0, amp, wl = scene.border
    return u * math.cos(a) + v * math.sin(a) > b0 + amp * torch.sin((-u * math.sin(a) + v * math.cos(a)) / wl * 2 * math.pi)


MICRO_RELIEF = 0.35  # scared: slope scale of the shading-only micro-relief (wet mucosa's fine folds)


def _surface_normals(scene: TissueScene, cfg: TissueConfig, frame: int, u: torch.Tensor, v: torch.Tensor,
                     relief: float = 0.0) -> torch.Tensor:
    """Camera-frame unit normals (pointing at the camera): the cross product of the surface tangents.

    ``relief`` > 0 tilts them by the slope of a fine height texture of the material (about 2 mm
    folds; shading only, the geometry and so the depth stay exact): a smooth surface lit from the
    camera shows one broad highlight, wet mucosa a scatter of small glints that move with the view.
    """
    _, Pu, Pv = camera_points(scene, cfg, frame, u, v, jacobian=True)
    n = torch.linalg.cross(Pu, Pv, dim=0)
    n = torch.where(n[2:3] > 0, -n, n)
    n = n / length3(n)[None].clamp_min(1e-12)
    if relief <= 0:
        return n
    eps = 0.05  # mm: central differences of the height texture
    uv0 = torch.stack([u, v, torch.zeros_like(u)]).nan_to_num(0) / 2.0 + 31.0
    du = torch.tensor([eps / 2.0, 0.0, 0.0], dtype=DT)[:, None]
    dv = torch.tensor([0.0, eps / 2.0, 0.0], dtype=DT)[:, None]
    h_u = (fbm(uv0 + du, scene.table, octaves=2) - fbm(uv0 - du, scene.table, octaves=2)) / (2 * eps)
    h_v = (fbm(uv0 + dv, scene.table, octaves=2) - fbm(uv0 - dv, scene.table, octaves=2)) / (2 * eps)
    t_u = Pu / length3(Pu)[None].clamp_min(1e-12)
    t_v = Pv / length3(Pv)[None].clamp_min(1e-12)
    n = n - relief * (h_u[None] * t_u + h_v[None] * t_v)
    return n / length3(n)[None].clamp_min(1e-12)


def _tissue_albedo(scene: TissueScene, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Texture-poor reddish albedo with low-frequency mottling and thin darker vessels."""
    uv0 = torch.stack([u, v, torch.zeros_like(u)]).nan_to_num(0)
    mottle = fbm(uv0 / 9.0, scene.table, octaves=3)
    vessel_field = fbm(uv0 / 22.0 + 5.0, scene.table, octaves=2)
    vessel = (1 - ((vessel_field - 0.5).abs() / 0.012)).clamp(0, 1)
    a = torch.tensor([0.86, 0.42, 0.40], dtype=DT)[:, None]
    b = torch.tensor([0.88, 0.66, 0.42], dtype=DT)[:, None]
    base = torch.where(_tissue_b(scene, u, v)[None], b, a) * (0.85 + 0.3 * mottle)[None]
    vessel_col = torch.tensor([0.5, 0.12, 0.14], dtype=DT)[:, None]
    return torch.lerp(base, vessel_col, 0.8 * vessel[None])


SPOT_EXP = 4.0  # scared: the tip's light falls off as cos^4 of the angle off the optical axis (0.56 at 30 deg)


def _tissue_albedo_scared(scene: TissueScene, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The clip albedo's colours with texture at several scales, as real mucosa has: mottling, large
    vessels, smaller vessels, capillaries and a fine grain (~1.5 mm, a few pixels at training size),
    so that photometric matching has structure at every scale rather than only along a few vessels."""
    uv0 = torch.stack([u, v, torch.zeros_like(u)]).nan_to_num(0)
    mottle = fbm(uv0 / 9.0, scene.table, octaves=3)
    grain = fbm(uv0 / 1.5 + 11.0, scene.table, octaves=2)
    a = torch.tensor([0.86, 0.42, 0.40], dtype=DT)[:, None]
    b = torch.tensor([0.88, 0.66, 0.42], dtype=DT)[:, None]
    base = torch.where(_tissue_b(scene, u, v)[None], b, a) * (0.78 + 0.3 * mottle + 0.3 * (grain - 0.5))[None]
    vessel_col = torch.tensor([0.5, 0.12, 0.14], dtype=DT)[:, None]
    for scale, offset, width, strength in ((30.0, 5.0, 0.02, 0.8), (12.0, 17.0, 0.014, 0.6), (5.0, 23.0, 0.01, 0.35)):
        field_ = fbm(uv0 / scale + offset, scene.table, octaves=2)
        vessel = (1 - ((field_ - 0.5).abs() / width)).clamp(0, 1)
        base = torch.lerp(base, vessel_col, strength * vessel[None])
    return base


def _shade(albedo, normal, rays, depth, distance, K, H, W, spec_k, spec_exp, spot_exp: float = 0.0) -> torch.Tensor:
    """Light at the camera: diffuse ~ cos / r^2, Blinn-Phong highlight (half vector = view), vignetting;
    with ``spot_exp`` > 0 also a spot profile cos^spot_exp of the angle off the optical axis, the
    beam of a light guide at the tip (brightness then changes as the scope turns, not only as it moves)."""
    ray_len = length3(rays)
    view = -rays / ray_len[None]
    cos = (normal * view).sum(0).clamp_min(0)
    r = depth * ray_len
    falloff = (distance / r.clamp_min(1.0)) ** 2
    radial = ((rays[0] * K[0, 0] / (W / 2)) ** 2 + (rays[1] * K[1, 1] / (W / 2)) ** 2)
    vignette = (1 - 0.3 * radial).clamp_min(0.3)
    if spot_exp > 0:
        vignette = vignette * (1 / ray_len) ** spot_exp  # rays have z = 1: 1 / |ray| = cos(off-axis angle)
    diffuse = albedo * (0.04 + 0.85 * cos * falloff * vignette)[None]
    spec = spec_k * cos**spec_exp * falloff * vignette
    image = diffuse + spec[None]
    return torch.where((depth > 0)[None], image, torch.zeros_like(image))


# ----------------------------------------------------------------------------------------------
# tracks
# ----------------------------------------------------------------------------------------------
def pick_queries(scene: TissueScene, cfg: TissueConfig, first: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Material coordinates (N x 2) of query points: tissue pixels visible in the first frame."""
    uv = first["uv"].reshape(-1, 2)
    labels = first["labels"].reshape(-1)
    good = np.flatnonzero((labels != INSTRUMENT) & (labels != IGNORE_INDEX) & np.isfinite(uv).all(1))
    pick = rng.choice(good, size=min(cfg.queries, good.size), replace=False)
    return uv[np.sort(pick)]


def track_points(scene: TissueScene, cfg: TissueConfig, frame: int, queries: np.ndarray) -> dict[str, np.ndarray]:
    """The exact 2D (px) and 3D (camera mm) positions of material points at ``frame``, and whether
    each is visible (inside the image and not hidden by the instrument)."""
    K = torch.tensor(intrinsics(cfg), dtype=DT)
    q = torch.tensor(queries, dtype=DT)
    P = camera_points(scene, cfg, frame, q[:, 0], q[:, 1])
    x = K[0, 0] * P[0] / P[2] + K[0, 2]
    y = K[1, 1] * P[1] / P[2] + K[1, 2]
    inside = (x >= -0.5) & (x <= cfg.width - 0.5) & (y >= -0.5) & (y <= cfg.height - 0.5) & (P[2] > 0)
    visible = inside
    shaft = instrument_geometry(scene, cfg, frame)
    if shaft is not None:
        rays = P / P[2:3]
        t_ins, _ = instrument_depth(*shaft, rays)
        visible = visible & ~(t_ins < P[2] - 1e-6)
    return {"xy": torch.stack([x, y], 1).numpy(), "xyz": P.T.numpy(), "visible": visible.numpy()}


def render_sequence(cfg: TissueConfig, sequence_seed: int, scene: TissueScene | None = None):
    """Yield (frame index, frame dict with 'queries' and 'tracks') for one sequence.

    Query points are tissue pixels visible in frame 0 (drawn with a generator seeded from the
    sequence), tracked exactly through every frame.
    """
    scene = scene or build_scene(cfg, sequence_seed)
    rng = np.random.default_rng(sequence_seed + 1)
    queries = None
    for i in range(cfg.frames):
        out = render_frame(scene, cfg, i)
        if queries is None:
            queries = pick_queries(scene, cfg, out, rng)
        out["queries"] = queries
        out["tracks"] = track_points(scene, cfg, i, queries)
        yield i, out
