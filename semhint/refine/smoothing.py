"""Operator A: segment-aware smoothing of depth, a joint-bilateral filter that never mixes classes."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from semhint.core.conventions import IGNORE_INDEX
from semhint.refine.common import EPS, as_labels, shifted, window_offsets


def texture_weight(image: torch.Tensor, floor: float = 0.05) -> torch.Tensor:
    """How far a pixel's depth can be trusted as a source for filling, from local image texture.

    The photometric loss only constrains depth where the image has gradient; in textureless
    regions the prediction is whatever the local minimum left there. So textured pixels are
    good sources and flat ones are not (weight = gradient magnitude relative to the image mean,
    clamped to [floor, 1]).
    """
    gray = image.mean(1, keepdim=True)
    gx = F.pad((gray[..., :, 1:] - gray[..., :, :-1]).abs(), (0, 1, 0, 0))
    gy = F.pad((gray[..., 1:, :] - gray[..., :-1, :]).abs(), (0, 0, 0, 1))
    grad = F.avg_pool2d(gx + gy, 3, stride=1, padding=1, count_include_pad=False)
    scale = grad.mean(dim=(2, 3), keepdim=True) + EPS
    return (grad / (2 * scale)).clamp(floor, 1.0)


def segment_aware_smoothing(depth: torch.Tensor, seg_labels: torch.Tensor, image: torch.Tensor, radius: int = 4,
                            sigma_color: float = 0.1, sigma_space: float = 3.0, source_weight: torch.Tensor | None = None,
                            dilation: int = 1, iterations: int = 1, domain: str = "log", local_linear: bool = False
                            ) -> torch.Tensor:
    """Joint-bilateral filter of log-depth whose weights vanish across predicted classes.

    depth (B,1,H,W) > 0, seg_labels (B,H,W) int (or logits), image (B,3,H,W) in [0,1].
    Weight of neighbour q for pixel p: exp(-|s|^2 / 2 sigma_space^2) (s in window steps)
    * exp(-mean_c (I_p - I_q)^2 / 2 sigma_color^2) * [label_p == label_q] * source_weight_q.
    ``source_weight`` (B,1,H,W) says how trustworthy each pixel is as a source (default: none,
    every pixel 1; ``make_depth_hint`` passes :func:`texture_weight`). Between iterations a pixel's
    source weight rises to the trust of what it received, so large holes fill from their rim
    inwards; ``dilation`` > 1 spreads the same number of taps over a wider window for big holes.
    Ignore-labelled pixels (255) are left unchanged and never used as sources.

    ``domain`` "log" filters log-depth (the METHOD.md default); "disp" filters inverse depth, which
    is affine in pixel coordinates on any plane. With ``local_linear`` each pixel gets the value
    of a weighted least-squares plane through its same-class neighbours instead of their weighted
    mean: exact on slanted planar surfaces (in "disp") and unbiased where the weights are
    lopsided (a hole filled from one side, texture on one side only), at about twice the cost.
    """
    if domain not in ("log", "disp"):
        raise ValueError(f"segment_aware_smoothing: domain must be 'log' or 'disp', got {domain!r}")
    labels = as_labels(seg_labels)
    b, _, h, w = depth.shape
    log_d = depth.clamp_min(EPS).log()
    if domain == "disp":
        log_d = 1.0 / depth.clamp_min(EPS)  # the filtered quantity; the name keeps one code path
    weight = torch.ones_like(depth) if source_weight is None else source_weight.to(depth.dtype)
    known = (labels != IGNORE_INDEX).unsqueeze(1)
    pad = radius * dilation
    lab_p = F.pad(labels.unsqueeze(1), (pad,) * 4, value=-1)
    img_p = F.pad(image, (pad,) * 4, mode="replicate")

    colour_scale = 1.0 / (2 * sigma_color ** 2 * image.shape[1])  # mean over channels, folded into one scale
    lab = labels.unsqueeze(1)

    def kernel(dy: int, dx: int, i: int, j: int) -> torch.Tensor:
        space = (i * i + j * j) / (2 * sigma_space ** 2)
        colour = (image - shifted(img_p, pad, dy, dx, h, w)).square_().sum(1, keepdim=True)
        k = colour.mul_(-colour_scale).sub_(space).exp_()
        return k.mul_((shifted(lab_p, pad, dy, dx, h, w) == lab) & known)

    offsets = list(window_offsets(radius, dilation))
    # the colour * class * space kernel is fixed across iterations: cache it only when iterating
    cached = [kernel(*o) for o in offsets] if iterations > 1 else None
    for _ in range(max(1, iterations)):
        x_p = F.pad(log_d, (pad,) * 4)
        w_p = F.pad(weight * known, (pad,) * 4)
        # weighted moments of the offsets (s = i, t = j in window steps) and of the values
        m = {k: torch.zeros_like(log_d) for k in (("1", "x", "kden") + (("s", "t", "ss", "tt", "st", "xs", "xt")
                                                                      if local_linear else ()))}
        lo, hi = log_d.clone(), log_d.clone()  # range of the contributing values (local_linear guard)
        for n, (dy, dx, i, j) in enumerate(offsets):
            kern = cached[n] if cached is not None else kernel(dy, dx, i, j)
            m["kden"] += kern
            ws = kern * shifted(w_p, pad, dy, dx, h, w)
            wx = ws * shifted(x_p, pad, dy, dx, h, w)
            m["1"] += ws
            m["x"] += wx
            if local_linear:
                x_q = shifted(x_p, pad, dy, dx, h, w)
                lo = torch.minimum(lo, torch.where(ws > 0, x_q, lo))
                hi = torch.maximum(hi, torch.where(ws > 0, x_q, hi))
            if local_linear and (i or j):
                m["s"].add_(ws, alpha=i), m["t"].add_(ws, alpha=j)
                m["ss"].add_(ws, alpha=i * i), m["tt"].add_(ws, alpha=j * j), m["st"].add_(ws, alpha=i * j)
                m["xs"].add_(wx, alpha=i), m["xt"].add_(wx, alpha=j)
        den = m["1"]
        if local_linear:  # guard against ill-posed fits: stay within the contributing values' range
            filtered = torch.minimum(torch.maximum(_local_linear_value(m), lo), hi)
        else:
            filtered = m["x"] / den.clamp_min(EPS)
        log_d = torch.where(known & (den > EPS), filtered, log_d)
        weight = torch.maximum(weight, den / m["kden"].clamp_min(EPS))
    if domain == "disp":
        return 1.0 / log_d.clamp_min(EPS)
    return log_d.exp()


def _local_linear_value(m: dict[str, torch.Tensor], ridge: float = 0.05) -> torch.Tensor:
    """Intercept a of the weighted fit x ~ a + b s + c t from accumulated moments (per pixel).

    The ridge (in window steps^2, times the total weight) keeps the slope finite when the
    neighbours are collinear or few; then the fit falls back towards the weighted mean.
    """
    n = m["1"].clamp_min(EPS)
    A = torch.stack([torch.stack([m["1"], m["s"], m["t"]], -1),
                     torch.stack([m["s"], m["ss"] + ridge * n, m["st"]], -1),
                     torch.stack([m["t"], m["st"], m["tt"] + ridge * n], -1)], -2)  # B,1,H,W,3,3
    rhs = torch.stack([m["x"], m["xs"], m["xt"]], -1).unsqueeze(-1)
    A[..., 0, 0] = n
    return torch.linalg.solve(A, rhs)[..., 0, 0]
