"""Scoring point tracks against labelled points (SuPer / TAP-Vid / STIR style).

Only labelled, visible ground-truth entries are ever scored: unlabelled or occluded points carry
NaN (or a placeholder) in the ground truth and are masked out *before* any average, so placeholder
values can never leak into an error. The query frame itself is not scored (its error is zero by
construction). A tracker's own visibility flag does not excuse it: a point the ground truth sees is
scored at the position the tracker reports.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

THRESHOLDS_PX = (4, 8, 16, 32, 64)
THRESHOLDS_MM = (2, 4, 8, 16, 32)


def point_errors(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """F x N Euclidean errors with NaN wherever ``valid`` is False (never reading gt there)."""
    err = np.full(valid.shape, np.nan)
    diff = pred[valid] - gt[valid]
    err[valid] = np.linalg.norm(diff, axis=-1)
    return err


def summarise(err: np.ndarray, thresholds, unit: str) -> dict:
    """Mean (per frame, then over frames), median and std (over all scored entries), delta_avg.

    ``err`` is F x N with NaN for entries that are not scored. Frames with nothing scored are
    skipped; with nothing scored at all the dict says so (count 0) instead of inventing numbers.
    """
    scored = np.isfinite(err)
    count = int(scored.sum())
    if count == 0:
        return {"count": 0}
    values = err[scored]
    frame_means = [row[np.isfinite(row)].mean() for row in err if np.isfinite(row).any()]
    within = {str(t): float((values < t).mean()) for t in thresholds}
    return {
        "count": count,
        f"mean_{unit}": float(np.mean(frame_means)),
        f"median_{unit}": float(np.median(values)),
        f"std_{unit}": float(np.std(values)),
        "delta_avg": float(np.mean(list(within.values()))),
        "delta": within,
    }


def survival(err: np.ndarray, max_error: float) -> float:
    """Mean over points of the fraction of their scored frames before the error first exceeds ``max_error``."""
    fractions = []
    for col in err.T:
        seen = col[np.isfinite(col)]
        if seen.size == 0:
            continue
        lost = np.flatnonzero(seen > max_error)
        fractions.append((lost[0] if lost.size else seen.size) / seen.size)
    return float(np.mean(fractions)) if fractions else float("nan")


def edge_points(queries: np.ndarray, labels0: np.ndarray, edge_px: float = 8.0) -> np.ndarray:
    """Whether each query lies within ``edge_px`` of a class border (tissue/tissue or tool) in frame 0."""
    border = np.zeros(labels0.shape, bool)
    border[:, 1:] |= labels0[:, 1:] != labels0[:, :-1]
    border[1:, :] |= labels0[1:, :] != labels0[:-1, :]
    if not border.any():
        return np.zeros(len(queries), bool)
    dist = ndimage.distance_transform_edt(~border)
    h, w = labels0.shape
    ix = np.clip(np.round(queries[:, 0]).astype(int), 0, w - 1)
    iy = np.clip(np.round(queries[:, 1]).astype(int), 0, h - 1)
    return dist[iy, ix] <= edge_px


def high_motion_frames(gt_xy: np.ndarray, valid: np.ndarray, queries: np.ndarray, threshold_px: float | None = None) -> np.ndarray:
    """F bool: frames whose mean ground-truth displacement from the query frame is large.

    ``threshold_px`` None means the top quarter of the scored frames (the 75th percentile of the
    per-frame displacement), which adapts to clips of any motion level.
    """
    disp = point_errors(np.broadcast_to(queries, gt_xy.shape), gt_xy, valid)
    per_frame = np.array([row[np.isfinite(row)].mean() if np.isfinite(row).any() else np.nan for row in disp])
    if not np.isfinite(per_frame).any():
        return np.zeros(len(per_frame), bool)
    thr = np.nanpercentile(per_frame, 75) if threshold_px is None else threshold_px
    return np.nan_to_num(per_frame, nan=-1.0) >= thr


def score(pred_xy: np.ndarray, gt_xy: np.ndarray, valid: np.ndarray, pred_xyz: np.ndarray | None = None,
          gt_xyz: np.ndarray | None = None, edge: np.ndarray | None = None, high_motion: np.ndarray | None = None,
          survival_px: float = 16.0) -> dict:
    """All metrics for predictions and ground truth sampled at the same F labelled frames (F x N x ...)."""
    err2 = point_errors(pred_xy, gt_xy, valid)
    out = {"2d": summarise(err2, THRESHOLDS_PX, "px"), "survival": survival(err2, survival_px)}
    err3 = None
    if pred_xyz is not None and gt_xyz is not None:
        valid3 = valid & np.isfinite(gt_xyz).all(-1) & np.isfinite(pred_xyz).all(-1)
        err3 = point_errors(pred_xyz, gt_xyz, valid3)
        out["3d"] = summarise(err3, THRESHOLDS_MM, "mm")
    subsets = {}
    if edge is not None:
        subsets["edge"] = _subset(err2, err3, np.broadcast_to(edge[None, :], err2.shape))
    if high_motion is not None:
        subsets["high_motion"] = _subset(err2, err3, np.broadcast_to(high_motion[:, None], err2.shape))
    if subsets:
        out["subsets"] = subsets
    return out


def _subset(err2: np.ndarray, err3: np.ndarray | None, keep: np.ndarray) -> dict:
    res = {"2d": summarise(np.where(keep, err2, np.nan), THRESHOLDS_PX, "px")}
    if err3 is not None:
        res["3d"] = summarise(np.where(keep, err3, np.nan), THRESHOLDS_MM, "mm")
    return res
