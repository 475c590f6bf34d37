"""Lifting 2D tracks to 3D: depth lookup, pinhole back-projection, and an explicit scale policy.

Scale policies (monocular depth is known only up to scale unless trained on stereo):
- ``metric``: use the depth as it is (stereo-trained, ground truth, or a known scale);
- ``first-frame``: one factor fixed at the first frame (median ratio to a reference depth there),
  then held for the whole clip, so the geometry stays consistent over time;
- ``per-frame-median``: a new factor on every frame. For EVALUATION ONLY: inside a tracker it
  changes the scale under the points each frame and so injects fake motion along the rays.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

SCALE_POLICIES = ("metric", "first-frame", "per-frame-median")


def sample_depth(depth: np.ndarray, xy: np.ndarray, edge_rel: float = 0.05, window: int = 5) -> np.ndarray:
    """Depth at N sub-pixel positions: bilinear, or a window median where bilinear is unsafe.

    Bilinear interpolation across a depth edge (tool over tissue) invents a surface halfway between
    the two; where the 2 x 2 neighbourhood spans more than ``edge_rel`` relative depth or holds an
    invalid (0) pixel, the median of the valid pixels in a ``window`` x ``window`` patch is used
    instead. NaN where no valid depth is near.
    """
    depth = np.asarray(depth, dtype=np.float32)
    h, w = depth.shape
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    x = np.clip(xy[:, 0], 0, w - 1)
    y = np.clip(xy[:, 1], 0, h - 1)
    x0 = np.clip(np.floor(x).astype(int), 0, w - 2 if w > 1 else 0)
    y0 = np.clip(np.floor(y).astype(int), 0, h - 2 if h > 1 else 0)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    corners = np.stack([depth[y0, x0], depth[y0, x1], depth[y1, x0], depth[y1, x1]], axis=1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    weights = np.concatenate([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], axis=1)
    out = (corners * weights).sum(axis=1)
    valid = corners > 0
    cmax, cmin = corners.max(axis=1), np.where(valid, corners, np.inf).min(axis=1)
    unsafe = ~valid.all(axis=1) | (cmax - cmin > edge_rel * np.maximum(cmin, 1e-6))
    if unsafe.any():
        out[unsafe] = _window_median(depth, np.round(y[unsafe]).astype(int), np.round(x[unsafe]).astype(int), window)
    return out.astype(np.float32)


def _window_median(depth: np.ndarray, rows: np.ndarray, cols: np.ndarray, window: int) -> np.ndarray:
    """Median of the valid (> 0) pixels in a window around each (row, col); NaN where none is valid."""
    h, w = depth.shape
    r = window // 2
    off = np.arange(-r, r + 1)
    rr = rows[:, None, None] + off[None, :, None]
    cc = cols[:, None, None] + off[None, None, :]
    inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
    vals = depth[np.clip(rr, 0, h - 1), np.clip(cc, 0, w - 1)].reshape(len(rows), -1).astype(np.float64)
    vals[~inside.reshape(len(rows), -1) | (vals <= 0)] = np.nan
    out = np.full(len(rows), np.nan)
    some = np.isfinite(vals).any(axis=1)
    out[some] = np.nanmedian(vals[some], axis=1)
    return out


def backproject_points(xy: np.ndarray, z: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixels (x, y) with depth z -> N x 3 camera-frame points (pinhole, K is 3 x 3 or 4 x 4)."""
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    z = np.asarray(z, dtype=np.float64).reshape(-1)
    return np.stack([(xy[:, 0] - cx) / fx * z, (xy[:, 1] - cy) / fy * z, z], axis=1)


def project_points(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """N x 3 camera-frame points -> N x 2 pixels (x, y)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    z = np.maximum(points[:, 2], 1e-9)
    return np.stack([K[0, 0] * points[:, 0] / z + K[0, 2], K[1, 1] * points[:, 1] / z + K[1, 2]], axis=1)


def median_scale(depth: np.ndarray, reference: np.ndarray) -> float:
    """The factor s with median(s * depth) == median(reference) over pixels valid in both."""
    valid = (depth > 0) & (reference > 0) & np.isfinite(depth) & np.isfinite(reference)
    if not valid.any():
        raise ValueError("no pixel has valid depth in both maps: cannot fix the scale")
    return float(np.median(reference[valid]) / np.median(depth[valid]))


class ScaledDepth:
    """A depth source with a scale policy applied: ``depth(t)`` returns depth in reference units.

    ``predict(t)`` gives raw depth for frame t; ``reference(t)`` (needed by every policy but
    ``metric``) gives the depth the scale is measured against (ground truth, or a known-scale map).
    """

    def __init__(self, predict, policy: str = "metric", reference=None, first_frame: int = 0):
        if policy not in SCALE_POLICIES:
            raise ValueError(f"scale policy must be one of {SCALE_POLICIES}, got {policy!r}")
        if policy != "metric" and reference is None:
            raise ValueError(f"scale policy {policy!r} needs a reference depth (e.g. ground truth) to fix the scale")
        self.predict, self.policy, self.reference = predict, policy, reference
        self.scale = 1.0
        if policy == "first-frame":
            self.scale = median_scale(predict(first_frame), reference(first_frame))

    def __call__(self, t: int) -> np.ndarray:
        depth = np.asarray(self.predict(t), dtype=np.float32)
        if self.policy == "per-frame-median":
            return depth * median_scale(depth, self.reference(t))
        return depth * self.scale


def corrupt_depth(depth: np.ndarray, rel_noise: float, rng: np.random.Generator, smooth_px: float = 6.0) -> np.ndarray:
    """Multiply depth by (1 + rel_noise * n), n a smooth zero-mean unit-std random field.

    Smooth (spatially correlated) noise models what a depth network gets wrong: whole surface
    patches bulge or sink. White per-pixel noise would mostly average out over a neighbourhood and
    understate the effect. Invalid pixels (0) stay invalid.
    """
    if rel_noise <= 0:
        return depth.astype(np.float32)
    field = ndimage.gaussian_filter(rng.standard_normal(depth.shape), smooth_px, mode="reflect")
    field /= max(field.std(), 1e-12)
    out = depth * (1.0 + rel_noise * field)
    return np.where(depth > 0, np.maximum(out, 1e-3), 0).astype(np.float32)


def lift_tracks(xy: np.ndarray, depth_at, K: np.ndarray, frames: list[int] | None = None) -> np.ndarray:
    """T x N x 2 tracks + depth per frame -> T x N x 3 points (NaN where depth is missing)."""
    frames = list(range(xy.shape[0])) if frames is None else frames
    out = np.full(xy.shape[:2] + (3,), np.nan)
    for i, t in enumerate(frames):
        z = sample_depth(depth_at(t), xy[i])
        out[i] = backproject_points(xy[i], z, K)
    return out


__all__ = ["sample_depth", "backproject_points", "project_points", "median_scale", "ScaledDepth",
           "corrupt_depth", "lift_tracks", "SCALE_POLICIES"]
