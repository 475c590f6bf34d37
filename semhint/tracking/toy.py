"""A tiny deforming tissue-like surface with exact ground truth, rendered in numpy + cv2.remap.

Used by the tests and the speed benchmark so that they never depend on the full SynthTissue
renderer: a bumpy textured surface 60 mm away, deformed by a smooth Gaussian pull plus a
breathing-like sway, optionally crossed by an instrument bar (its own class, closer to the
camera). Material points are indexed by their pixel in the first (rest) frame; a pixel of frame t
is inverted to its material point by a few fixed-point iterations of the projection, which
converges for smooth, non-folding deformations.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from semhint.core.fileio import save_image, save_npz, write_depth_png, write_text
from semhint.tracking.lift import backproject_points, project_points

TISSUE_A, TISSUE_B, INSTRUMENT = 0, 1, 2  # class ids of the toy scene's label maps


@dataclass
class ToyClip:
    frames: list[np.ndarray]  # uint8 H x W x 3
    depth: list[np.ndarray]  # float32 H x W, mm
    labels: list[np.ndarray]  # uint8 H x W
    K: np.ndarray  # 3 x 3
    queries: np.ndarray  # N x 2, pixels of frame 0
    xy: np.ndarray  # T x N x 2 ground-truth pixel tracks
    xyz: np.ndarray  # T x N x 3 ground-truth camera-frame points, mm
    visible: np.ndarray  # T x N bool


def _smooth_noise(rng: np.random.Generator, h: int, w: int, sigmas=(1.5, 4.0, 10.0)) -> np.ndarray:
    out = np.zeros((h, w), np.float32)
    for s in sigmas:
        out += cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), s) * s
    out -= out.min()
    return out / max(out.max(), 1e-6)


def _displacement(a: np.ndarray, b: np.ndarray, t: float, w: int, h: int, amp: float) -> np.ndarray:
    """Smooth 3D displacement (mm) of material points at rest pixels (a, b) at normalised time t."""
    ca, cb = 0.55 * w, 0.5 * h
    g = np.exp(-(((a - ca) / (0.35 * w)) ** 2 + ((b - cb) / (0.35 * h)) ** 2))
    pull = np.sin(np.pi * t) * amp
    sway = np.sin(2 * np.pi * t) * 0.3 * amp
    dx = pull * g + sway
    dy = 0.5 * pull * g
    dz = -0.5 * pull * g + 0.2 * sway
    return np.stack([dx, dy, dz], -1)


def make_toy_clip(height: int = 96, width: int = 128, frames: int = 8, points: int = 30, amp_mm: float = 6.0,
                  instrument: bool = False, seed: int = 0) -> ToyClip:
    """Render a deforming bumpy surface; frame 0 is the rest state. Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    f = 0.9 * width
    K = np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]], dtype=np.float64)
    texture = (np.stack([0.55 + 0.4 * _smooth_noise(rng, height, width),
                         0.2 + 0.5 * _smooth_noise(rng, height, width),
                         0.2 + 0.4 * _smooth_noise(rng, height, width)], -1) * 255).astype(np.float32)
    bumps = cv2.GaussianBlur(rng.standard_normal((height, width)).astype(np.float32), (0, 0), width / 16)
    z_rest = 60.0 + 8.0 * bumps / max(np.abs(bumps).max(), 1e-6)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    rest = backproject_points(np.stack([xs.ravel(), ys.ravel()], 1), z_rest.ravel(), K).reshape(height, width, 3)
    border = width / 2 + 0.1 * width * np.sin(ys / height * 2 * np.pi)
    rest_labels = np.where(xs < border, TISSUE_A, TISSUE_B).astype(np.uint8)

    margin = 0.15
    q = np.stack([rng.uniform(margin * width, (1 - margin) * width, points),
                  rng.uniform(margin * height, (1 - margin) * height, points)], 1)
    q_rest = backproject_points(q, cv2.remap(z_rest, q[:, :1].astype(np.float32), q[:, 1:].astype(np.float32),
                                             cv2.INTER_LINEAR)[:, 0], K)

    out = ToyClip([], [], [], K, q, np.zeros((frames, points, 2)), np.zeros((frames, points, 3)),
                  np.ones((frames, points), bool))
    for i in range(frames):
        t = i / max(frames - 1, 1)
        a, b = xs.copy(), ys.copy()
        for _ in range(12):  # invert pixel -> material point by fixed-point iteration
            pts = _sample3(rest, a, b) + _displacement(a, b, t, width, height, amp_mm)
            proj = project_points(pts.reshape(-1, 3), K).reshape(height, width, 2)
            a = np.clip(a - (proj[..., 0] - xs), 0, width - 1)
            b = np.clip(b - (proj[..., 1] - ys), 0, height - 1)
        pts = _sample3(rest, a, b) + _displacement(a, b, t, width, height, amp_mm)
        ma, mb = a.astype(np.float32), b.astype(np.float32)
        img = cv2.remap(texture, ma, mb, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        depth = pts[..., 2].astype(np.float32)
        labels = cv2.remap(rest_labels, ma, mb, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
        gt3 = q_rest + _displacement(q[:, 0], q[:, 1], t, width, height, amp_mm)
        gt2 = project_points(gt3, K)
        if instrument and 0 < i:
            bar = np.abs(xs - (0.2 + 0.6 * t) * width) < 0.06 * width
            img[bar] = (150, 150, 155)
            depth[bar] = 35.0
            labels[bar] = INSTRUMENT
            out.visible[i] = ~bar[np.clip(np.round(gt2[:, 1]).astype(int), 0, height - 1),
                                  np.clip(np.round(gt2[:, 0]).astype(int), 0, width - 1)]
        out.frames.append(np.clip(img, 0, 255).astype(np.uint8))
        out.depth.append(depth)
        out.labels.append(labels)
        out.xy[i], out.xyz[i] = gt2, gt3
    return out


def _sample3(field: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ma, mb = a.astype(np.float32), b.astype(np.float32)
    return np.stack([cv2.remap(field[..., c].astype(np.float32), ma, mb, cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE) for c in range(3)], -1).astype(np.float64)


def write_toy_clip(clip: ToyClip, out: str | Path, name: str = "toy") -> Path:
    """Write a toy clip in the SynthTissue layout (frames, intrinsics, uint16 depth, labels, tracks).

    Returns OUT/data/NAME, the folder ``semhint track`` and ``load_clip`` take.
    """
    out = Path(out)
    seq = out / "data" / name
    K = clip.K
    h, w = clip.frames[0].shape[:2]
    write_text(seq / "intrinsics.yaml", f"fx: {K[0, 0]}\nfy: {K[1, 1]}\ncx: {K[0, 2]}\ncy: {K[1, 2]}\n"
                                        f"width: {w}\nheight: {h}\n")
    for i, (img, depth, labels) in enumerate(zip(clip.frames, clip.depth, clip.labels)):
        save_image(seq / f"{i:06d}.png", img)
        write_depth_png(out / "gt_depth" / name / f"{i:06d}.png", depth)
        save_image(out / "gt_labels" / name / f"{i:06d}.png", labels)
    save_npz(out / "tracks" / f"{name}.npz", queries=clip.queries.astype(np.float32), query_frame=np.int64(0),
             tracks_2d=clip.xy.astype(np.float32), tracks_3d=clip.xyz.astype(np.float32), visibility=clip.visible)
    return seq
