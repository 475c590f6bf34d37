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
    kernels = _pair_kernels(labels, known, image, radius, dilation, sigma_color, sigma_space)
    offsets = list(window_offsets(radius, dilation))
    big = torch.finfo(depth.dtype).max
    for it in range(max(1, iterations)):
        last = it == max(1, iterations) - 1
        x_p = F.pad(log_d, (pad,) * 4)
        w_p = F.pad(weight * known, (pad,) * 4)
        # weighted moments of the offsets (s = i, t = j in window steps) and of the values
        m = {k: torch.zeros_like(log_d) for k in (("1", "x") + (() if last else ("kden",))
                                                  + (("s", "t", "ss", "tt", "st", "xs", "xt") if local_linear else ()))}
        lo, hi = log_d.clone(), log_d.clone()  # range of the contributing values (local_linear guard)
        for dy, dx, i, j in offsets:
            kern = kernels(dy, dx)
            if not last:  # the total kernel weight only feeds the next iteration's source weights
                m["kden"] += kern
            ws = kern * shifted(w_p, pad, dy, dx, h, w)
            x_q = shifted(x_p, pad, dy, dx, h, w)
            wx = ws * x_q
            m["1"] += ws
            m["x"] += wx
            if local_linear:
                # lo = min(lo, x_q where ws > 0): a non-contributing x_q is pushed out of reach by adding
                # the largest float, because add, min and max are vectorised on the CPU and torch.where
                # is not (about 15x slower per call); a contributing one gets + 0, i.e. stays x_q
                idle = (ws <= 0).to(ws.dtype)
                lo = torch.minimum(lo, x_q.add(idle, alpha=big))
                hi = torch.maximum(hi, x_q.add(idle, alpha=-big))
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
        if not last:
            weight = torch.maximum(weight, den / m["kden"].clamp_min(EPS))
    if domain == "disp":
        return 1.0 / log_d.clamp_min(EPS)
    return log_d.exp()


def _pair_kernels(labels: torch.Tensor, known: torch.Tensor, image: torch.Tensor, radius: int, dilation: int,
                  sigma_color: float, sigma_space: float):
    """The colour * space * class kernel of every window offset: ``kernels(dy, dx)`` is B x 1 x H x W,
    the weight between each pixel p and its neighbour p + (dy, dx).

    The kernel is symmetric (the colour distance is; a class match implies both pixels are known),
    so the weight for -(dy, dx) at p is the weight for (dy, dx) at p - (dy, dx): each pair of
    opposite offsets is computed once, over the pixels of both, and read as two shifted views.
    Same operations on the same values as one kernel per offset, so the same numbers. The filter
    accumulates the offsets in their original order (so that its sums, too, are bit for bit the
    plain filter's), which keeps the 2 r (r + 1) pair kernels alive at once: at radius 4, 40 maps of
    the batch's size (235 MB at 640 x 192, batch 12, float32).
    """
    b, _, h, w = known.shape
    pad = radius * dilation
    # padded class map in which unknown (255) and outside pixels never match anything
    lab_p = F.pad(torch.where(known, labels.unsqueeze(1), -1), (pad,) * 4, value=-1)
    valid_p = F.pad(known, (pad,) * 4)
    img_p = F.pad(image, (pad,) * 4, mode="replicate")
    colour_scale = 1.0 / (2 * sigma_color ** 2 * image.shape[1])  # mean over channels, folded into one scale
    cache: dict[tuple[int, int], tuple[torch.Tensor, int, int]] = {}
    for dy, dx, i, j in window_offsets(radius, dilation):
        if (dy, dx) <= (0, 0):  # (0, 0) and the negative half: read from their positive twin
            continue
        # pixels a whose pair (a, a + d) is needed: a = p (offset d) and a = p - d (offset -d)
        y0, x0 = min(0, -dy), min(0, -dx)
        rh, rw = h + abs(dy), w + abs(dx)

        def region(t: torch.Tensor, oy: int, ox: int) -> torch.Tensor:
            return t[..., pad + y0 + oy:pad + y0 + oy + rh, pad + x0 + ox:pad + x0 + ox + rw]

        space = (i * i + j * j) / (2 * sigma_space ** 2)
        colour = (region(img_p, 0, 0) - region(img_p, dy, dx)).square_().sum(1, keepdim=True)
        k = colour.mul_(-colour_scale).sub_(space).exp_()
        same = (region(lab_p, 0, 0) == region(lab_p, dy, dx)) & region(valid_p, 0, 0)
        cache[(dy, dx)] = (k.mul_(same), y0, x0)
    centre = known.to(image.dtype)  # offset (0, 0): colour distance 0, space 0, the pixel's own class

    def kernels(dy: int, dx: int) -> torch.Tensor:
        if dy == 0 and dx == 0:
            return centre
        if (dy, dx) > (0, 0):
            k, y0, x0 = cache[(dy, dx)]
            return k[..., -y0:-y0 + h, -x0:-x0 + w]  # a = p
        k, y0, x0 = cache[(-dy, -dx)]
        return k[..., -y0 + dy:-y0 + dy + h, -x0 + dx:-x0 + dx + w]  # a = p - d', d' = -(dy, dx)

    return kernels


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
