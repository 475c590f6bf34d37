"""Pseudo-semantics: the sources' class probabilities warped into the target with depth and pose, fused
with the target's own, and kept where confident and consistent; optional depth-aware border snapping.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from semhint.core import geometry
from semhint.core.conventions import IGNORE_INDEX
from semhint.refine.common import EPS, channel_max, shifted, window_offsets


def warp_probabilities(probs: torch.Tensor, depth: torch.Tensor, T: torch.Tensor, K: torch.Tensor,
                       inv_K: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Source-frame class probabilities resampled into the target with target depth and pose.

    Returns (warped probs B x C x H x W, zero outside the source image; valid B x 1 x H x W bool:
    the target pixel projects in front of the source camera and inside its image).
    """
    if inv_K is None:
        inv_K = torch.linalg.inv(K)
    h, w = depth.shape[-2:]
    pix, z = geometry.project_to_pixels(geometry.backproject(depth, inv_K), K, T)
    pix = pix.reshape(depth.shape[0], 2, h, w)
    tol = 1e-3  # pixels: rounding must not drop the image's own edge
    inside = (pix[:, 0] > -tol) & (pix[:, 0] < w - 1 + tol) & (pix[:, 1] > -tol) & (pix[:, 1] < h - 1 + tol)
    valid = (inside & (z.reshape(-1, h, w) > EPS)).unsqueeze(1)
    grid = geometry.normalise_pixels(pix.permute(0, 2, 3, 1), h, w)
    return geometry.sample(probs, grid, padding_mode="zeros") * valid, valid


def fuse_probabilities(target_probs: torch.Tensor, warped_probs: list[torch.Tensor], valid: list[torch.Tensor],
                       weights: list[float] | None = None) -> torch.Tensor:
    """Weighted average of the target's probabilities and the valid warped source probabilities.

    ``weights`` = [w_target, w_source_1, ...] (default all 1). Averaging probabilities (not logits)
    lets a confident view outvote an unsure one without letting one wrong, over-confident view
    dominate the way a product of distributions would.
    """
    weights = weights or [1.0] * (1 + len(warped_probs))
    if len(weights) != 1 + len(warped_probs):
        raise ValueError(f"fuse_probabilities: need {1 + len(warped_probs)} weights, got {len(weights)}")
    num = weights[0] * target_probs
    den = torch.full_like(target_probs[:, :1], weights[0])
    for wgt, probs, ok in zip(weights[1:], warped_probs, valid):
        num = num + wgt * ok * probs
        den = den + wgt * ok
    return num / den.clamp_min(EPS)


def select_pseudo_labels(fused: torch.Tensor, noisy_labels: torch.Tensor | None, photo_error: torch.Tensor | None,
                         confidence: float, max_photo: float) -> torch.Tensor:
    """Pseudo label = fused argmax where confident AND (agrees with the noisy label OR photometrically
    consistent); 255 elsewhere. Returns int64 B x H x W."""
    conf, label = channel_max(fused)  # = fused.max(1)
    consistent = torch.zeros_like(label, dtype=torch.bool)
    if noisy_labels is not None:
        consistent |= label == noisy_labels
    if photo_error is not None:
        consistent |= photo_error[:, 0] < max_photo
    keep = (conf >= confidence) & consistent
    return torch.where(keep, label, torch.full_like(label, IGNORE_INDEX))


def snap_borders(labels: torch.Tensor, depth: torch.Tensor, band: int = 2, sigma_depth: float = 0.05,
                 iterations: int = 2) -> torch.Tensor:
    """Depth-aware border snapping: relabel pixels near a class border by a depth-similarity vote.

    Each pixel within ``band`` of a class change takes the class with most weight among its
    (2 band + 1)^2 neighbours, weighted by exp(-(log-depth difference)^2 / 2 sigma_depth^2). A
    class border that cuts through smooth depth gets pulled to where the depth jumps, by up to
    about one pixel per iteration. Ignored pixels neither vote nor change.
    """
    for _ in range(iterations):
        labels = _snap_once(labels, depth, band, sigma_depth)
    return labels


def _snap_once(labels: torch.Tensor, depth: torch.Tensor, band: int, sigma_depth: float) -> torch.Tensor:
    b, h, w = labels.shape
    known = labels != IGNORE_INDEX
    if not known.any():
        return labels
    n_cls = int(labels[known].max().item()) + 1
    log_d = depth.clamp_min(EPS).log()
    # votes are scattered into the voter's class (one channel per offset, not one per class)
    lab_p = F.pad(torch.where(known, labels, 0).unsqueeze(1), (band,) * 4)
    ok_p = F.pad(known.unsqueeze(1), (band,) * 4)
    x_p = F.pad(log_d, (band,) * 4)
    votes = torch.zeros(b, n_cls, h, w, dtype=depth.dtype, device=depth.device)
    # window min / max of the known labels (ignored pixels set to values that never win)
    lo, hi = torch.where(known, labels, n_cls), torch.where(known, labels, -1)
    lo_p, hi_p = F.pad(lo, (band,) * 4, value=n_cls), F.pad(hi, (band,) * 4, value=-1)
    lo_min, hi_max = lo, hi
    for dy, dx, _, _ in window_offsets(band):
        sim = torch.exp(-(log_d - shifted(x_p, band, dy, dx, h, w)).pow(2) / (2 * sigma_depth ** 2))
        votes.scatter_add_(1, shifted(lab_p, band, dy, dx, h, w), sim * shifted(ok_p, band, dy, dx, h, w))
        lo_min = torch.minimum(lo_min, shifted(lo_p, band, dy, dx, h, w))
        hi_max = torch.maximum(hi_max, shifted(hi_p, band, dy, dx, h, w))
    near_border = lo_min != hi_max  # some other known class within the window
    return torch.where(known & near_border, votes.argmax(1), labels)
