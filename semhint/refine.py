"""Cross-task refinement (METHOD.md, idea 4): pseudo-depth from semantics, pseudo-semantics from depth.

Everything here runs on DETACHED predictions: the refined maps are targets, not part of the graph.
Pseudo-depth ("semantic hints") applies up to four operators to the predicted depth,
  A  ``segment_aware_smoothing``: a joint-bilateral filter of log-depth that never mixes classes,
  B  ``segment_surface_fit``: a robust (RANSAC) plane or low-order surface per "stuff" segment,
  C  ``border_morphing``: depth discontinuities pulled onto nearby semantic borders,
  D  ``ground_contact``: an upright surface takes the ground plane's depth where it touches the
     ground, all the way up its image column (our addition; docs/METHOD.md),
  E  ``facade_planes``: facades as vertical planes along the street, whose inverse depth vanishes
     on the principal column (our addition; docs/METHOD.md),
and keeps the result only where it reprojects better than the prediction (the Depth Hints gate).
Pseudo-semantics warp the source frames' class probabilities into the target with the predicted
depth and pose, fuse them with the target's own prediction, and keep the fused label only where it
is confident and agrees with the noisy label or is photometrically consistent.

All operators are vectorised over pixels and batch; the only Python loops run over window offsets
(at most (2r+1)^2) or source frames.
"""

from __future__ import annotations

import math
from typing import Iterable, Iterator

import torch
import torch.nn.functional as F

from semhint.core import geometry

IGNORE = 255
_EPS = 1e-6


# ----------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------
def _as_labels(seg: torch.Tensor) -> torch.Tensor:
    """Class logits/probabilities (B, C, H, W) or labels (B, H, W) / (B, 1, H, W) -> int64 (B, H, W)."""
    if seg.is_floating_point():
        if seg.dim() != 4:
            raise ValueError(f"segmentation logits must be B x C x H x W, got shape {tuple(seg.shape)}")
        return seg.argmax(1)
    if seg.dim() == 4:
        seg = seg[:, 0]
    return seg.long()


def _offsets(radius: int, dilation: int = 1) -> Iterator[tuple[int, int, int, int]]:
    """Window offsets as (dy, dx, step_y, step_x): pixel offsets and their index in window steps."""
    for i in range(-radius, radius + 1):
        for j in range(-radius, radius + 1):
            yield i * dilation, j * dilation, i, j


def _shifted(padded: torch.Tensor, pad: int, dy: int, dx: int, h: int, w: int) -> torch.Tensor:
    """View of a padded map shifted by (dy, dx): value at p is the original value at p + (dy, dx)."""
    return padded[..., pad + dy:pad + dy + h, pad + dx:pad + dx + w]


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
    scale = grad.mean(dim=(2, 3), keepdim=True) + _EPS
    return (grad / (2 * scale)).clamp(floor, 1.0)


# ----------------------------------------------------------------------------------------------
# Operator A: segment-aware smoothing
# ----------------------------------------------------------------------------------------------
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
    labels = _as_labels(seg_labels)
    b, _, h, w = depth.shape
    log_d = depth.clamp_min(_EPS).log()
    if domain == "disp":
        log_d = 1.0 / depth.clamp_min(_EPS)  # the filtered quantity; the name keeps one code path
    weight = torch.ones_like(depth) if source_weight is None else source_weight.to(depth.dtype)
    known = (labels != IGNORE).unsqueeze(1)
    pad = radius * dilation
    lab_p = F.pad(labels.unsqueeze(1), (pad,) * 4, value=-1)
    img_p = F.pad(image, (pad,) * 4, mode="replicate")

    colour_scale = 1.0 / (2 * sigma_color ** 2 * image.shape[1])  # mean over channels, folded into one scale
    lab = labels.unsqueeze(1)

    def kernel(dy: int, dx: int, i: int, j: int) -> torch.Tensor:
        space = (i * i + j * j) / (2 * sigma_space ** 2)
        colour = (image - _shifted(img_p, pad, dy, dx, h, w)).square_().sum(1, keepdim=True)
        k = colour.mul_(-colour_scale).sub_(space).exp_()
        return k.mul_((_shifted(lab_p, pad, dy, dx, h, w) == lab) & known)

    offsets = list(_offsets(radius, dilation))
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
            ws = kern * _shifted(w_p, pad, dy, dx, h, w)
            wx = ws * _shifted(x_p, pad, dy, dx, h, w)
            m["1"] += ws
            m["x"] += wx
            if local_linear:
                x_q = _shifted(x_p, pad, dy, dx, h, w)
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
            filtered = m["x"] / den.clamp_min(_EPS)
        log_d = torch.where(known & (den > _EPS), filtered, log_d)
        weight = torch.maximum(weight, den / m["kden"].clamp_min(_EPS))
    if domain == "disp":
        return 1.0 / log_d.clamp_min(_EPS)
    return log_d.exp()


def _local_linear_value(m: dict[str, torch.Tensor], ridge: float = 0.05) -> torch.Tensor:
    """Intercept a of the weighted fit x ~ a + b s + c t from accumulated moments (per pixel).

    The ridge (in window steps^2, times the total weight) keeps the slope finite when the
    neighbours are collinear or few; then the fit falls back towards the weighted mean.
    """
    n = m["1"].clamp_min(_EPS)
    A = torch.stack([torch.stack([m["1"], m["s"], m["t"]], -1),
                     torch.stack([m["s"], m["ss"] + ridge * n, m["st"]], -1),
                     torch.stack([m["t"], m["st"], m["tt"] + ridge * n], -1)], -2)  # B,1,H,W,3,3
    rhs = torch.stack([m["x"], m["xs"], m["xt"]], -1).unsqueeze(-1)
    A[..., 0, 0] = n
    return torch.linalg.solve(A, rhs)[..., 0, 0]


# ----------------------------------------------------------------------------------------------
# Operator B: per-segment robust surface fit
# ----------------------------------------------------------------------------------------------
def _surface_design(x: torch.Tensor, y: torch.Tensor, order: int) -> torch.Tensor:
    """Monomials of normalised camera coordinates up to ``order`` (last dim = terms).

    Inverse depth of a 3D plane is exactly linear in (x, y) = K^-1 (u, v): with n . X + d = 0 and
    X = z (x, y, 1), 1/z = -(n_x x + n_y y + n_z) / d. So order 1 IS the ground plane and order 2
    a smooth curved surface, fitted by the same linear least squares. Order 0 is the level ground
    plane of a level camera (normal = the camera's y axis, y down): 1/z = y / height, one term and
    no intercept, so the plane's inverse depth vanishes on the principal row (the horizon). A free
    plane fitted to a trained prediction inherits its compressed depth range (the far road too near,
    nonzero inverse depth at the horizon); one parameter cannot, and a few hundred noisy road pixels
    pin it down. Because the prediction it is fitted to is wrong in shape, not only noisy, it
    needs a wider RANSAC inlier threshold than a free plane (``refine.surface_inlier``).
    """
    if order == 0:
        return y.unsqueeze(-1)
    terms = [torch.ones_like(x)]
    for total in range(1, order + 1):
        for py in range(total + 1):
            terms.append(x ** (total - py) * y ** py)
    return torch.stack(terms, dim=-1)


def _ridge_solve(A: torch.Tensor, q: torch.Tensor, w: torch.Tensor | None = None, ridge: float = 1e-6) -> torch.Tensor:
    """Batched weighted least squares (A^T W A + ridge I) c = A^T W q; A (..., N, T), q (..., N)."""
    Aw = A if w is None else A * w.unsqueeze(-1)
    ata = Aw.transpose(-1, -2) @ A
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    atq = (Aw.transpose(-1, -2) @ q.unsqueeze(-1)).squeeze(-1)
    return torch.linalg.solve(ata + ridge * eye, atq)


def _fit_start(depth: torch.Tensor, seg_labels: torch.Tensor, classes: Iterable[int]
               ) -> tuple[torch.Tensor, list[int], torch.Tensor, torch.Tensor]:
    """What every per-segment fit starts from: labels, class ids, the depth untouched, nothing fitted."""
    return (_as_labels(seg_labels), [int(c) for c in classes], depth.clone(),
            torch.zeros_like(depth, dtype=torch.bool))


def segment_surface_fit(depth: torch.Tensor, seg_labels: torch.Tensor, K: torch.Tensor, classes: Iterable[int],
                        order: int = 1, num_hypotheses: int = 64, inlier_threshold: float = 0.05,
                        min_pixels: int = 64, min_inlier_ratio: float = 0.3, eval_pixels: int = 2048,
                        refine_iters: int = 2, band: float = 0.0, generator: torch.Generator | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """RANSAC fit of inverse depth as a polynomial surface in each (image, class) segment.

    order=1: a plane (road / sidewalk ground plane in driving); order=2: a smooth low-order
    surface (tissue); order=0: the level ground plane of a level camera (see ``_surface_design``). Every (image, class) pair with at least ``min_pixels`` pixels is fitted at
    once: ``num_hypotheses`` minimal samples per pair are solved in one batched call, scored by
    the inlier count (relative depth residual < ``inlier_threshold``) on ``eval_pixels`` random
    pixels of the segment, and the winner is refit to all its inliers. Segments where fewer than
    ``min_inlier_ratio`` of pixels agree with the best surface are left out (probably not a surface,
    or the labels are wrong there). ``band`` > 0 replaces only pixels whose depth is within that
    relative distance of the surface (|fit / depth - 1| in inverse depth): a pixel far off the road
    plane is more likely a mislabelled object standing on it than a badly predicted patch of road,
    and the plane would push such a car's pixels back to the ground behind it. Returns (depth with
    the fitted surface inside accepted segments and the input depth elsewhere, valid mask (B,1,H,W)
    bool of the fitted pixels).
    """
    labels, classes, out, valid = _fit_start(depth, seg_labels, classes)
    if not classes:
        return out, valid
    b, _, h, w = depth.shape
    dtype = torch.float64 if depth.dtype == torch.float64 else torch.float32
    inv_K = torch.linalg.inv(K[:, :3, :3].to(torch.float64)).to(dtype)
    rays = inv_K @ geometry.pixel_grid(h, w, device=depth.device, dtype=dtype)  # B x 3 x HW
    A_img = _surface_design(rays[:, 0] / rays[:, 2], rays[:, 1] / rays[:, 2], order)  # B x HW x T
    q_img = 1.0 / depth.reshape(b, -1).to(dtype).clamp_min(_EPS)

    cls = torch.tensor(classes, device=depth.device)
    masks = labels.reshape(b, 1, -1) == cls.view(1, -1, 1)  # B x C x HW
    counts = masks.sum(-1)
    pair_b, pair_c = torch.nonzero(counts >= max(min_pixels, A_img.shape[-1] + 1), as_tuple=True)
    if pair_b.numel() == 0:
        return out, valid
    M = masks[pair_b, pair_c]  # P x HW
    A, q = A_img[pair_b], q_img[pair_b]  # P x HW x T, P x HW
    n_terms = A.shape[-1]

    def gather(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.gather(A, 1, idx.unsqueeze(-1).expand(-1, -1, n_terms)), torch.gather(q, 1, idx))

    probs = M.to(dtype)
    sample_idx = torch.multinomial(probs, num_hypotheses * n_terms, replacement=True, generator=generator)
    As, qs = gather(sample_idx)
    hyps = _ridge_solve(As.view(-1, num_hypotheses, n_terms, n_terms), qs.view(-1, num_hypotheses, n_terms))
    eval_idx = torch.multinomial(probs, eval_pixels, replacement=True, generator=generator)
    Ae, qe = gather(eval_idx)  # P x E x T, P x E
    resid = ((Ae @ hyps.transpose(-1, -2)) / qe.unsqueeze(-1) - 1).abs()  # P x E x Hy
    best = (resid < inlier_threshold).sum(1).argmax(-1)  # P
    coef = hyps[torch.arange(len(best), device=best.device), best]  # P x T
    for _ in range(refine_iters):
        inl = M & (((A @ coef.unsqueeze(-1)).squeeze(-1) / q - 1).abs() < inlier_threshold)
        coef = _ridge_solve(A, q, inl.to(dtype))
    fit_q = (A @ coef.unsqueeze(-1)).squeeze(-1)  # P x HW
    inl = M & ((fit_q / q - 1).abs() < inlier_threshold)
    accepted = inl.sum(-1) >= min_inlier_ratio * M.sum(-1)
    ok = M & accepted.unsqueeze(-1) & (fit_q > _EPS)
    if band > 0:
        ok = ok & ((fit_q / q - 1).abs() < band)
    fit_depth = torch.where(ok, 1.0 / fit_q.clamp_min(_EPS), torch.zeros_like(fit_q))
    summed = torch.zeros(b, h * w, dtype=dtype, device=depth.device).index_add_(0, pair_b, fit_depth)
    hit = torch.zeros(b, h * w, dtype=dtype, device=depth.device).index_add_(0, pair_b, ok.to(dtype)) > 0
    valid = hit.view(b, 1, h, w)
    out = torch.where(valid, summed.view(b, 1, h, w).to(depth.dtype), depth)
    return out, valid


def vertical_run_end(labels: torch.Tensor) -> torch.Tensor:
    """For every pixel, the last row of its column's run of the same label (B x H x W long).

    A reverse cumulative minimum over the rows where the label changes below: one vectorised scan,
    no per-pixel loop.
    """
    b, h, w = labels.shape
    rows = torch.arange(h, device=labels.device).view(1, h, 1).expand(b, h, w)
    last = torch.ones_like(labels, dtype=torch.bool)
    last[:, :-1] = labels[:, :-1] != labels[:, 1:]
    ends = torch.where(last, rows, torch.full_like(rows, h))
    return torch.cummin(ends.flip(1), dim=1).values.flip(1)


def ground_contact(depth: torch.Tensor, seg_labels: torch.Tensor, K: torch.Tensor, ground_classes: Iterable[int],
                   upright_classes: Iterable[int], generator: torch.Generator | None = None, ground_order: int = 1,
                   inlier_threshold: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Upright surfaces stand on the ground: give their pixels the ground plane's depth where they touch it.

    Self-supervision is weakest on exactly the surfaces a driving scene is full of: the textureless
    back of a car or a truck matches the neighbouring frames at almost any depth, so short runs
    leave them too far or too near. The ground under them is well constrained (a plane with texture
    along its whole length). And with a level camera, an image column is a vertical plane of rays,
    so any vertical surface (a car's back or side, a wall, a pole, a facade) meets it in a vertical
    line: one depth z all the way up the column. So: fit the ground plane (operator B) to the
    ground classes, follow every pixel of an upright class down its column to the end of its run
    of the same class, and if the pixel just below is ground with an accepted plane, take the
    plane's depth there. Occluded or non-vertical parts, a pitched camera and wrong labels give
    wrong hints; the Depth Hints gate keeps them out where they reproject worse than the
    prediction. ``ground_order`` 0 fits the level plane instead of a free one (``_surface_design``).
    Returns (hint: depth with contact depths on accepted pixels, valid mask B x 1 x H x W bool).
    """
    labels = _as_labels(seg_labels)
    ground, ground_ok = segment_surface_fit(depth, labels, K, ground_classes, order=ground_order,
                                            inlier_threshold=inlier_threshold, generator=generator)
    upright = torch.tensor([int(c) for c in upright_classes], device=depth.device, dtype=labels.dtype)
    b, _, h, w = depth.shape
    end = vertical_run_end(labels)
    below = (end + 1).clamp_max(h - 1)
    contact_ok = torch.gather(ground_ok[:, 0], 1, below) & (end + 1 < h)
    valid = torch.isin(labels, upright) & contact_ok
    hint = torch.where(valid, torch.gather(ground[:, 0], 1, below), depth[:, 0])
    return hint.unsqueeze(1), valid.unsqueeze(1)


# ----------------------------------------------------------------------------------------------
# Operator E: facades along the street
# ----------------------------------------------------------------------------------------------
def facade_planes(depth: torch.Tensor, seg_labels: torch.Tensor, K: torch.Tensor, classes: Iterable[int],
                  band: float = 0.0, min_pixels: int = 32, min_offset: float = 0.02) -> tuple[torch.Tensor, torch.Tensor]:
    """Facades take the depth of a vertical plane along the street: 1/z = a |x|, x = (u - cx) / fx.

    Why: a short run's facades are its largest error, and they are too near where they are far (a
    trained baseline's log-depth slope on buildings is 0.5-0.7): their far end has almost no
    parallax at training resolution, so photometry cannot tell 40 m from 80 m there. Geometry can.
    A camera looking along a street sees each facade as a vertical plane parallel to its axis, at
    lateral offset X, so 1/z = |x| / X: zero on the principal column (the street's vanishing
    line), growing linearly outwards, with ONE unknown per facade. A free plane fitted to the
    prediction would keep its compression; this one takes 1/X as the median of (1/z) / |x| over
    the outer half of the facade's pixels (its near, well-measured part: over all of them, the
    too-near far end biases it) and extends it to the far end.
    One plane per (image, side of the principal column, class): building, wall and fence on each
    side stand at different offsets. Wrong where the street turns or the camera is not looking
    along it; ``band`` > 0 (relative distance, as operator B) leaves pixels far off the plane alone
    (a tree or a car labelled building stands in front of it), and the gate does the rest.
    Returns (hint, valid mask B x 1 x H x W bool).
    """
    labels, classes, out, valid = _fit_start(depth, seg_labels, classes)
    if not classes:
        return out, valid
    b, _, h, w = depth.shape
    x = (torch.arange(w, device=depth.device, dtype=depth.dtype).view(1, 1, w) - K[:, 0, 2].view(b, 1, 1)) \
        / K[:, 0, 0].view(b, 1, 1)  # B x 1 x W normalised column
    x = x.expand(b, h, w).reshape(b, 1, 1, h * w)
    side = torch.stack([x < -min_offset, x > min_offset], dim=1).view(b, 2, 1, h * w)
    cls = torch.tensor(classes, device=depth.device, dtype=labels.dtype).view(1, 1, -1, 1)
    member = (labels.view(b, 1, 1, h * w) == cls) & side  # B x 2 x C x HW
    inv = 1.0 / depth.reshape(b, 1, 1, h * w).clamp_min(_EPS)
    offset = x.abs().expand_as(member)
    nan = torch.full_like(offset, float("nan"))
    # the outer half of each facade (|x| above its median): the near part, where parallax measured it
    outer = member & (offset >= torch.nanmedian(torch.where(member, offset, nan), dim=-1, keepdim=True).values)
    ratio = torch.where(outer, inv / offset.clamp_min(min_offset), nan)
    slope = torch.nanmedian(ratio, dim=-1, keepdim=True).values  # 1 / lateral offset, B x 2 x C x 1
    ok = member & (member.sum(-1, keepdim=True) >= min_pixels) & (slope > 0)
    fit = slope.nan_to_num(0.0) * x.abs()
    if band > 0:
        ok = ok & ((fit / inv - 1).abs() < band)
    hit = ok.any(dim=(1, 2))  # a pixel belongs to one side and one class: at most one fit
    fit_inv = (fit * ok).sum(dim=(1, 2))
    valid = hit.view(b, 1, h, w)
    out = torch.where(valid, 1.0 / fit_inv.clamp_min(_EPS).view(b, 1, h, w), depth)
    return out, valid


# ----------------------------------------------------------------------------------------------
# Operator C: border morphing
# ----------------------------------------------------------------------------------------------
def border_morphing(depth: torch.Tensor, seg_labels: torch.Tensor, band: int = 3, sigma_space: float = 2.0
                    ) -> torch.Tensor:
    """Move depth discontinuities onto the nearby semantic borders.

    Predicted depth edges are often a few pixels off the object outline (edge fattening). For a
    pixel p within ``band`` pixels of a class border, estimate its depth from the same-class
    interior (pixels at least ``band`` from any other class) and from the other classes nearby;
    if p's predicted depth looks like the other side's, it is a misplaced discontinuity and p
    takes the same-class interior depth. Pixels whose depth already matches their own class keep
    it, so genuine depth gradients near borders survive.
    """
    labels = _as_labels(seg_labels)
    b, _, h, w = depth.shape
    lab = labels.unsqueeze(1)
    known = lab != IGNORE
    # distance-to-border test with a max-pool: a pixel is interior if its (2 band + 1)^2 window holds one class
    lab_f = lab.to(depth.dtype)
    hi = F.max_pool2d(F.pad(lab_f, (band,) * 4, mode="replicate"), 2 * band + 1, stride=1)
    lo = -F.max_pool2d(F.pad(-lab_f, (band,) * 4, mode="replicate"), 2 * band + 1, stride=1)
    interior = (hi == lo) & known
    near_border = ~interior & known
    log_d = depth.clamp_min(_EPS).log()
    radius = band + 1
    lab_p = F.pad(lab, (radius,) * 4, value=-1)
    x_p = F.pad(log_d, (radius,) * 4)
    int_p = F.pad(interior, (radius,) * 4)
    kn_p = F.pad(known, (radius,) * 4)
    same_num, same_den = torch.zeros_like(log_d), torch.zeros_like(log_d)
    other_num, other_den = torch.zeros_like(log_d), torch.zeros_like(log_d)
    for dy, dx, i, j in _offsets(radius):
        k = math.exp(-(i * i + j * j) / (2 * sigma_space ** 2))
        lab_q = _shifted(lab_p, radius, dy, dx, h, w)
        x_q = _shifted(x_p, radius, dy, dx, h, w)
        w_same = ((lab_q == lab) & _shifted(int_p, radius, dy, dx, h, w)) * k
        w_other = ((lab_q != lab) & _shifted(kn_p, radius, dy, dx, h, w)) * k
        same_num += w_same * x_q
        same_den += w_same
        other_num += w_other * x_q
        other_den += w_other
    same = same_num / same_den.clamp_min(_EPS)
    other = other_num / other_den.clamp_min(_EPS)
    misplaced = near_border & (same_den > _EPS) & (other_den > _EPS) & ((log_d - other).abs() < (log_d - same).abs())
    return torch.where(misplaced, same, log_d).exp()


# ----------------------------------------------------------------------------------------------
# composing the hint, and the Depth Hints gate
# ----------------------------------------------------------------------------------------------
def oracle_hint(depth: torch.Tensor, depth_gt: torch.Tensor | list[torch.Tensor] | None) -> torch.Tensor:
    """Diagnostic only: the ground truth, scaled to the prediction by its per-image median ratio.

    A perfect hint answers whether the hint loss, the gate and the weight can carry information
    into the network at all at a given budget: if even this does not make the trained depth better,
    the operators' quality is not what holds the method back. Pixels without ground truth keep the
    prediction (so they drop out of the loss as unchanged).
    """
    if depth_gt is None:
        raise ValueError("hint operator 'oracle' needs ground-truth depth in the batch (data.gt_depth)")
    out = depth.clone()
    for b in range(depth.shape[0]):
        gt = F.interpolate(depth_gt[b][None].to(depth), size=depth.shape[-2:], mode="nearest")[0]
        valid = gt > 0
        if not valid.any():
            continue
        scale = depth[b][valid].median() / gt[valid].median()
        out[b] = torch.where(valid, gt * scale, depth[b])
    return out


def make_depth_hint(depth: torch.Tensor, seg: torch.Tensor, image: torch.Tensor, K: torch.Tensor, refine_cfg,
                    generator: torch.Generator | None = None,
                    depth_gt: torch.Tensor | list[torch.Tensor] | None = None) -> torch.Tensor:
    """The pseudo-depth label: ``refine_cfg.hint_operators`` applied in order to the detached depth.

    ``seg`` is the segmentation prediction (logits B x C x H x W) or labels (B x H x W). Pixels no
    operator changes keep the predicted depth (refinement_losses leaves those out of the loss).
    "smooth" uses texture-weighted, local-linear smoothing of log-depth (``refine_cfg.smooth_domain``
    "log") or inverse depth ("disp"): the plain weighted mean is biased wherever depth is slanted and
    the texture lopsided (on exact SynthDrive depth the local-linear fit more than halves that bias).
    Because the hint is rebuilt from the current depth at every step, any bias of the operator on
    the *true* depth compounds like repeated filtering. Log-depth is not affine on a plane seen in
    perspective (a road: log z = c - log(y - y_horizon), convex), so log-domain smoothing drifts
    the far road further away; inverse depth is affine on every plane, which makes planes a fixed
    point (benchmarks/bench_hint_drift.py measures both).
    """
    hint = depth.detach()
    labels = _as_labels(seg.detach())
    image = image.detach()
    for op in refine_cfg.hint_operators:
        if op == "smooth":
            hint = segment_aware_smoothing(hint, labels, image, radius=refine_cfg.bilateral_radius,
                                           sigma_color=refine_cfg.bilateral_sigma_color,
                                           sigma_space=refine_cfg.bilateral_sigma_space,
                                           source_weight=texture_weight(image), local_linear=True,
                                           domain=refine_cfg.smooth_domain)
        elif op == "surface":
            # plane (1) or level plane (0) for driving; a curved surface (2) suits tissue
            hint, _ = segment_surface_fit(hint, labels, K, refine_cfg.stuff_classes, order=refine_cfg.surface_order,
                                          band=refine_cfg.surface_band, inlier_threshold=refine_cfg.surface_inlier,
                                          generator=generator)
        elif op == "border":
            hint = border_morphing(hint, labels)
        elif op == "contact":
            hint, _ = ground_contact(hint, labels, K, refine_cfg.stuff_classes, refine_cfg.upright_classes,
                                     generator=generator, ground_order=0 if refine_cfg.surface_order == 0 else 1,
                                     inlier_threshold=refine_cfg.surface_inlier)
        elif op == "facade":
            hint, _ = facade_planes(hint, labels, K, refine_cfg.facade_classes, band=refine_cfg.surface_band)
        elif op == "oracle":
            hint = oracle_hint(hint, depth_gt)
        else:
            raise ValueError(f"refine.hint_operators: unknown operator {op!r} "
                             "(smooth | surface | border | contact | facade | oracle)")
    return hint


def hint_gate(hint_reproj: torch.Tensor, pred_reproj: torch.Tensor, automask: torch.Tensor | None = None,
              margin: float = 0.0, on_masked: bool = False) -> torch.Tensor:
    """Depth Hints rule: trust the hint only where it explains the images better (B,1,H,W bool).

    With ``margin`` = 0 the hint must be strictly better. A textureless surface reprojects about
    equally well at any depth, so there the strict rule rejects even a good hint, although that is
    exactly where the photometric loss cannot decide; a small positive margin lets semantics break
    such ties while a hint that clearly worsens the photometric error is still rejected.

    The auto-mask drops pixels that look the same unwarped (a car moving with the camera, a stop):
    the paper's rule rejects the hint there too. But those are the pixels where photometry has no
    say at all and the photometric comparison above favours the wrong answer (a car moving with the
    camera reprojects best at infinite depth), so with ``on_masked`` semantics decides there alone.
    """
    gate = hint_reproj < pred_reproj + margin
    if automask is not None:
        kept = automask.bool()
        gate = (gate | ~kept) if on_masked else (gate & kept)
    return gate


def reprojection_error(depth: torch.Tensor, batch: dict, poses: dict, ssim_weight: float = 0.85) -> torch.Tensor:
    """Per-pixel minimum photometric error over source frames of the target warped with ``depth``.

    Uses the same error and minimum as the training objective (semhint.losses) so that the hint
    and the prediction are judged by one rule.
    """
    from semhint import losses

    target = batch["image/0"]
    K, inv_K = batch["K"], batch.get("inv_K")
    errors = [losses.photometric_error(geometry.warp(batch[f"image/{f}"], depth, T.detach(), K, inv_K), target, ssim_weight)
              for f, T in sorted(poses.items())]
    per_pixel, _ = losses.min_reprojection(torch.cat(errors, 1), None, automask=False)
    return per_pixel


# ----------------------------------------------------------------------------------------------
# pseudo-semantics
# ----------------------------------------------------------------------------------------------
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
    valid = (inside & (z.reshape(-1, h, w) > _EPS)).unsqueeze(1)
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
    return num / den.clamp_min(_EPS)


def select_pseudo_labels(fused: torch.Tensor, noisy_labels: torch.Tensor | None, photo_error: torch.Tensor | None,
                         confidence: float, max_photo: float) -> torch.Tensor:
    """Pseudo label = fused argmax where confident AND (agrees with the noisy label OR photometrically
    consistent); 255 elsewhere. Returns int64 B x H x W."""
    conf, label = fused.max(1)
    consistent = torch.zeros_like(label, dtype=torch.bool)
    if noisy_labels is not None:
        consistent |= label == noisy_labels
    if photo_error is not None:
        consistent |= photo_error[:, 0] < max_photo
    keep = (conf >= confidence) & consistent
    return torch.where(keep, label, torch.full_like(label, IGNORE))


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
    known = labels != IGNORE
    if not known.any():
        return labels
    n_cls = int(labels[known].max().item()) + 1
    log_d = depth.clamp_min(_EPS).log()
    # votes are scattered into the voter's class (one channel per offset, not one per class)
    lab_p = F.pad(torch.where(known, labels, 0).unsqueeze(1), (band,) * 4)
    ok_p = F.pad(known.unsqueeze(1), (band,) * 4)
    x_p = F.pad(log_d, (band,) * 4)
    votes = torch.zeros(b, n_cls, h, w, dtype=depth.dtype, device=depth.device)
    # window min / max of the known labels (ignored pixels set to values that never win)
    lo, hi = torch.where(known, labels, n_cls), torch.where(known, labels, -1)
    lo_p, hi_p = F.pad(lo, (band,) * 4, value=n_cls), F.pad(hi, (band,) * 4, value=-1)
    lo_min, hi_max = lo, hi
    for dy, dx, _, _ in _offsets(band):
        sim = torch.exp(-(log_d - _shifted(x_p, band, dy, dx, h, w)).pow(2) / (2 * sigma_depth ** 2))
        votes.scatter_add_(1, _shifted(lab_p, band, dy, dx, h, w), sim * _shifted(ok_p, band, dy, dx, h, w))
        lo_min = torch.minimum(lo_min, _shifted(lo_p, band, dy, dx, h, w))
        hi_max = torch.maximum(hi_max, _shifted(hi_p, band, dy, dx, h, w))
    near_border = lo_min != hi_max  # some other known class within the window
    return torch.where(known & near_border, votes.argmax(1), labels)


# ----------------------------------------------------------------------------------------------
# the training-step entry point
# ----------------------------------------------------------------------------------------------
def trust_region(hint: torch.Tensor, depth: torch.Tensor, max_ratio: float, min_depth: float, max_depth: float
                 ) -> torch.Tensor:
    """Clamp the hint into [depth / max_ratio, depth * max_ratio] and the model's depth range.

    A surface fitted to an early, poorly structured depth map can put its horizon anywhere, and
    near it the plane's depth runs to infinity; a target many times the current depth would then
    dominate the step (measured: a contact-only run's pose scale and depth blew up to a constant
    map). A bounded step towards the hint keeps its direction and lets later steps go further.
    ``max_ratio`` <= 0 turns the ratio bound off (the depth range always applies).
    """
    if max_ratio > 0:
        hint = torch.minimum(torch.maximum(hint, depth / max_ratio), depth * max_ratio)
    return hint.clamp(min_depth, max_depth)


def hint_segments(outputs: dict, batch: dict, source: str) -> torch.Tensor:
    """The segmentation the hint operators follow: the branch's logits, or the noisy labels.

    "labels": the noisy label map of the target frame, with the branch's own argmax where a label
    is ignored (255). Early in training the branch is still worse than the labels it learns from
    (docs/RESULTS.md: branch mIoU 0.35 vs labels 0.42 after 250 steps), so hints from the labels
    follow better segments; "prediction" is the paper's reading (refine the current predictions).
    """
    predicted = _as_labels(outputs["seg/0"].detach())
    if source == "prediction" or "labels/0" not in batch:
        return predicted
    labels = batch["labels/0"].to(predicted)
    if labels.shape[-2:] != predicted.shape[-2:]:
        raise ValueError(f"labels/0 is {tuple(labels.shape[-2:])}, the prediction {tuple(predicted.shape[-2:])}")
    return torch.where(labels == IGNORE, predicted, labels)


def hint_class_mask(segments: torch.Tensor, classes: Iterable[int]) -> torch.Tensor:
    """Pixels whose segment is one of ``classes`` (B,1,H,W bool); every pixel when ``classes`` is empty.

    The hint is a cure for textureless objects (car panels), where photometry has no gradient; on
    a well-textured plane seen in perspective (the road) photometry already finds the depth and
    a smoothing hint only adds its own bias (docs/RESULTS.md: the full method's car gain comes with
    a road loss). Restricting the hint to the classes it helps keeps one without the other.
    """
    labels = _as_labels(segments).unsqueeze(1)
    classes = [int(c) for c in classes]
    if not classes:
        return torch.ones_like(labels, dtype=torch.bool)
    return torch.isin(labels, torch.tensor(classes, device=labels.device, dtype=labels.dtype))


def _hint_term(batch: dict, outputs: dict, maps: dict, poses: dict, cfg) -> tuple[torch.Tensor, dict[str, float]]:
    from semhint import losses

    image = batch["image/0"].float()
    with torch.no_grad():  # float32 throughout: log/exp and the surface solve need it under AMP
        depth = maps["depth/0"].detach().float()
        segments = hint_segments(outputs, batch, cfg.refine.hint_segments)
        hint = make_depth_hint(depth, segments, image, batch["K"].float(), cfg.refine, depth_gt=batch.get("depth_gt"))
        hint = trust_region(hint, depth, cfg.refine.hint_max_ratio, cfg.model.min_depth, cfg.model.max_depth)
        if cfg.refine.hint_gate:
            hint_err = reprojection_error(hint, batch, poses, cfg.loss.ssim_weight)
            gate = hint_gate(hint_err, maps["reproj/0"].detach(), maps.get("automask/0"), cfg.refine.hint_gate_margin,
                             cfg.refine.hint_on_masked)
        else:
            gate = torch.ones_like(depth, dtype=torch.bool)
        # a hint equal to the prediction carries no information: it would only win the gate by
        # rounding noise and dilute the mean, so such pixels are left out
        changed = (hint - depth).abs() > 1e-3 * depth
        gate = gate & changed & hint_class_mask(segments, cfg.refine.hint_classes)
    # maps["depth/s"] is every scale's depth upsampled to full resolution, still in the graph
    depths = [maps[f"depth/{s}"] for s in cfg.model.scales]
    loss = torch.stack([losses.hint_loss(d, hint, gate) for d in depths]).mean()
    n_changed = changed.float().sum().item()
    stats = {"hint_accept_rate": gate.float().mean().item(),  # fraction of all pixels the hint trains
             "hint_changed_rate": n_changed / changed.numel(),  # fraction the operators changed
             "hint_accept_of_changed": gate.float().sum().item() / max(1.0, n_changed)}
    if isinstance(batch.get("depth_gt"), torch.Tensor):  # a list when frame sizes differ (KITTI): skipped
        stats.update(hint_gt_stats(depth, hint, gate, batch["depth_gt"]))
    return loss, stats


def hint_gt_stats(depth: torch.Tensor, hint: torch.Tensor, gate: torch.Tensor, depth_gt: torch.Tensor
                  ) -> dict[str, float]:
    """Where ground truth exists: are the accepted hints better than the predictions they replace?

    Both maps are resized to the GT resolution and scaled by one per-image median ratio (the
    prediction's, so the comparison is fair to it); AbsRel is taken over accepted pixels with GT.
    Empty when no accepted pixel has ground truth.
    """
    size = depth_gt.shape[-2:]
    if depth.shape[-2:] != size:
        depth = F.interpolate(depth, size=size, mode="bilinear", align_corners=False)
        hint = F.interpolate(hint, size=size, mode="bilinear", align_corners=False)
        gate = F.interpolate(gate.float(), size=size, mode="nearest") > 0.5
    gt = depth_gt.to(depth)
    valid = gt > 0
    sel = valid & gate
    if not sel.any():
        return {}
    pred_err, hint_err = [], []
    for b in range(gt.shape[0]):  # per image: median scaling is per image in the Eigen protocol
        v, sb = valid[b], sel[b]
        if not sb.any():
            continue
        scale = gt[b][v].median() / depth[b][v].median().clamp_min(_EPS)
        pred_err.append(((depth[b][sb] * scale - gt[b][sb]).abs() / gt[b][sb]))
        hint_err.append(((hint[b][sb] * scale - gt[b][sb]).abs() / gt[b][sb]))
    return {"hint_gt_absrel": torch.cat(hint_err).mean().item(), "pred_gt_absrel": torch.cat(pred_err).mean().item()}


def _pseudo_seg_term(batch: dict, outputs: dict, maps: dict, poses: dict, source_outputs: dict, cfg
                     ) -> tuple[torch.Tensor, dict[str, float]]:
    from semhint import losses

    logits = outputs["seg/0"]
    with torch.no_grad():
        depth = maps["depth/0"].detach().float()
        K, inv_K = batch["K"].float(), batch.get("inv_K")
        inv_K = None if inv_K is None else inv_K.float()
        warped, valid = [], []
        for f, src in sorted(source_outputs.items()):
            if f == 0 or f not in poses:
                continue
            p, ok = warp_probabilities(src["seg/0"].detach().float().softmax(1), depth, poses[f].detach().float(), K, inv_K)
            warped.append(p)
            valid.append(ok)
        fused = fuse_probabilities(logits.detach().float().softmax(1), warped, valid)
        noisy = batch.get("labels/0")
        photo = maps.get("reproj/0")
        pseudo = select_pseudo_labels(fused, noisy, None if photo is None else photo.detach(),
                                      cfg.refine.pseudo_seg_confidence, cfg.refine.pseudo_seg_max_photo)
        if cfg.refine.border_snap:
            pseudo = snap_borders(pseudo, depth)
    kept = pseudo != IGNORE
    loss = losses.cross_entropy(logits, pseudo, IGNORE)  # an exact zero (with graph) when all are ignored
    stats = {"pseudo_label_rate": kept.float().mean().item(), "pseudo_sources": float(len(warped))}
    both = kept & (noisy != IGNORE) if noisy is not None else None
    if both is not None and both.any():  # left out (not NaN) when undefined, so step averages stay finite
        stats["pseudo_label_agreement"] = (pseudo == noisy)[both].float().mean().item()
    gt = batch.get("gt_labels/0")
    if gt is not None:  # does the refinement denoise? accuracy of pseudo vs noisy labels against ground truth
        for name, lab in (("pseudo", pseudo), ("noisy", noisy)):
            sel = (lab != IGNORE) & (gt != IGNORE) if lab is not None else None
            if sel is not None and sel.any():
                stats[f"{name}_label_gt_accuracy"] = (lab == gt)[sel].float().mean().item()
    return loss, stats


def refinement_losses(batch: dict, outputs: dict, maps: dict, poses: dict, source_outputs: dict, cfg, epoch: int
                      ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Cross-task refinement terms of the per-step objective (METHOD.md 'Total loss').

    batch: the training batch (ARCHITECTURE.md); outputs: the depth net's dict for the target
    ("disp/s", "seg/s"); maps: from losses.self_supervised_objective ("depth/s": every scale's
    depth at full resolution, in the graph; "reproj/0": min reprojection error of the prediction;
    "automask/0"); poses: {f: T
    target->source}; source_outputs: {f: depth-net outputs of source frame f} (may be empty when
    pseudo_seg is off). Returns ({"loss", "hint", "pseudo_seg"}, stats) where loss =
    hint_weight * hint + pseudo_seg_weight * pseudo_seg, all zero before refine.warmup_epochs.
    """
    r = cfg.refine
    ref = outputs["disp/0"]
    zero = ref.sum() * 0.0
    terms = {"hint": zero, "pseudo_seg": zero}
    stats: dict[str, float] = {}
    if epoch >= r.warmup_epochs:
        if r.hint:
            terms["hint"], s = _hint_term(batch, outputs, maps, poses, cfg)
            stats.update(s)
        if r.pseudo_seg:
            terms["pseudo_seg"], s = _pseudo_seg_term(batch, outputs, maps, poses, source_outputs, cfg)
            stats.update(s)
    terms["loss"] = r.hint_weight * terms["hint"] + r.pseudo_seg_weight * terms["pseudo_seg"]
    return terms, stats
