"""Operators B, D and E: depth from surfaces fitted to segments.

B fits a robust plane (or a low-order surface) to each "stuff" segment, D stands upright objects on
the ground plane where they touch it, E puts facades on vertical planes along the street. All fit
inverse depth, which is linear in normalised image coordinates on any plane.
"""

from __future__ import annotations

from typing import Iterable

import torch

from semhint.core import geometry
from semhint.refine.common import EPS, as_labels


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
    return (as_labels(seg_labels), [int(c) for c in classes], depth.clone(),
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
    q_img = 1.0 / depth.reshape(b, -1).to(dtype).clamp_min(EPS)

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
    ok = M & accepted.unsqueeze(-1) & (fit_q > EPS)
    if band > 0:
        ok = ok & ((fit_q / q - 1).abs() < band)
    fit_depth = torch.where(ok, 1.0 / fit_q.clamp_min(EPS), torch.zeros_like(fit_q))
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
    labels = as_labels(seg_labels)
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
    inv = 1.0 / depth.reshape(b, 1, 1, h * w).clamp_min(EPS)
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
    out = torch.where(valid, 1.0 / fit_inv.clamp_min(EPS).view(b, 1, h, w), depth)
    return out, valid
