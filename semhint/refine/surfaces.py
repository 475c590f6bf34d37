"""Operators B, D and E: depth from surfaces fitted to segments.

B fits a robust plane (or a low-order surface) to each "stuff" segment, D stands upright objects on
the ground plane where they touch it, E puts facades on vertical planes along the direction of
travel. All fit inverse depth, which is linear in the ray r = K^-1 (u, v, 1) on any plane: the plane
a . X = 1 seen along X = z r has 1/z = a . r. D and E take up from the fitted ground plane
(:func:`ground_plane`, :func:`ground_up`) and the direction of travel from the pose
(:func:`travel_direction`), never from the camera's axes: the camera may be pitched, rolled, or
turned away from the street.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple

import torch

from semhint.core import geometry
from semhint.refine.common import EPS, as_labels


def _surface_design(x: torch.Tensor, y: torch.Tensor, order: int) -> torch.Tensor:
    """Monomials of normalised camera coordinates up to ``order`` (last dim = terms).

    Inverse depth of a 3D plane is exactly linear in (x, y) = K^-1 (u, v): with n . X + d = 0 and
    X = z (x, y, 1), 1/z = -(n_x x + n_y y + n_z) / d. So order 1 IS the ground plane and order 2
    a smooth curved surface, fitted by the same linear least squares. Order 0 is an ABLATION that
    assumes a level camera: the level ground plane (normal = the camera's y axis, y down),
    1/z = y / height, one term and no intercept, so the plane's inverse depth vanishes on the
    principal row (the horizon); with any pitch or roll it is the wrong plane. A free
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


class _Fits(NamedTuple):
    """One robust surface per (image, class) pair with enough pixels: P pairs over the HW pixels."""

    pair_b: torch.Tensor  # P: image of each pair
    pair_c: torch.Tensor  # P: index of its class in the class list
    coef: torch.Tensor  # P x T: the surface's coefficients (``_surface_design``'s terms)
    fit_q: torch.Tensor  # P x HW: the surface's inverse depth at every pixel of its image
    observed: torch.Tensor  # P x HW: the input's inverse depth
    member: torch.Tensor  # P x HW bool: the segment's pixels
    accepted: torch.Tensor  # P bool: enough of the segment agrees with the surface
    support: torch.Tensor  # P: inlier count


def camera_rays(K: torch.Tensor, h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
    """Rays r = K^-1 (u, v, 1) of every pixel, scaled to r_z = 1 (B x 3 x HW): a point at depth z is z r."""
    inv_K = torch.linalg.inv(K[:, :3, :3].to(torch.float64)).to(dtype)
    rays = inv_K @ geometry.pixel_grid(h, w, device=K.device, dtype=dtype)
    return rays / rays[:, 2:3]


def _fit_segments(depth: torch.Tensor, labels: torch.Tensor, K: torch.Tensor, classes: list[int], order: int,
                  num_hypotheses: int, inlier_threshold: float, min_pixels: int, min_inlier_ratio: float,
                  eval_pixels: int, refine_iters: int, generator: torch.Generator | None,
                  design: torch.Tensor | None = None) -> _Fits | None:
    """RANSAC fits of every (image, class) segment at once (see :func:`segment_surface_fit`); None if none is big enough.

    ``design`` (B x HW x T) replaces ``_surface_design``'s terms: a plane constrained to a subspace."""
    b, _, h, w = depth.shape
    dtype = torch.float64 if depth.dtype == torch.float64 else torch.float32
    if design is None:
        rays = camera_rays(K, h, w, dtype)  # B x 3 x HW
        A_img = _surface_design(rays[:, 0], rays[:, 1], order)  # B x HW x T
    else:
        A_img = design.to(dtype)
    q_img = 1.0 / depth.reshape(b, -1).to(dtype).clamp_min(EPS)

    cls = torch.tensor(classes, device=depth.device)
    masks = labels.reshape(b, 1, -1) == cls.view(1, -1, 1)  # B x C x HW
    counts = masks.sum(-1)
    pair_b, pair_c = torch.nonzero(counts >= max(min_pixels, A_img.shape[-1] + 1), as_tuple=True)
    if pair_b.numel() == 0:
        return None
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
    support = inl.sum(-1)
    accepted = support >= min_inlier_ratio * M.sum(-1)
    return _Fits(pair_b, pair_c, coef, fit_q, q, M, accepted, support)


def _fitted_depth(fits: _Fits, depth: torch.Tensor, band: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The fitted surfaces' depth inside accepted segments (within ``band`` of them), the input elsewhere."""
    b, _, h, w = depth.shape
    dtype = fits.fit_q.dtype
    ok = fits.member & fits.accepted.unsqueeze(-1) & (fits.fit_q > EPS)
    if band > 0:
        ok = ok & ((fits.fit_q / fits.observed - 1).abs() < band)
    fit_depth = torch.where(ok, 1.0 / fits.fit_q.clamp_min(EPS), torch.zeros_like(fits.fit_q))
    summed = torch.zeros(b, h * w, dtype=dtype, device=depth.device).index_add_(0, fits.pair_b, fit_depth)
    hit = torch.zeros(b, h * w, dtype=dtype, device=depth.device).index_add_(0, fits.pair_b, ok.to(dtype)) > 0
    valid = hit.view(b, 1, h, w)
    return torch.where(valid, summed.view(b, 1, h, w).to(depth.dtype), depth), valid


# the pinned plane's RANSAC inlier threshold (relative): it cannot follow a compressed prediction, so at the
# free fit's 0.05 its inliers are one narrow band of the road; 0.2 was chosen on the hand-made roads of
# tests/test_refine_geometry.py (0.05 / 0.1 / 0.2 / 0.3: worst road error 3.7 / 2.1 / 1.6 / 1.4 %), not on any
# scored data, and stays below a car's offset from the road behind it (its inverse depth twice the road's)
TRAVEL_PLANE_INLIER = 0.2


def _perpendicular_basis(direction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two unit vectors spanning the plane perpendicular to each row of ``direction`` (B x 3, unit)."""
    helper = torch.zeros_like(direction)
    helper[:, 0] = 1.0  # any vector off the direction: the camera's x axis, or its y axis when travel is along x
    helper = torch.where((direction[:, :1].abs() > 0.9), torch.roll(helper, 1, dims=1), helper)
    e1 = torch.linalg.cross(direction, helper, dim=-1)
    e1 = e1 / e1.norm(dim=-1, keepdim=True).clamp_min(EPS)
    return e1, torch.linalg.cross(direction, e1, dim=-1)


def _travel_planes(depth: torch.Tensor, labels: torch.Tensor, K: torch.Tensor, classes: list[int],
                   travel: torch.Tensor, inlier_threshold: float, min_pixels: int, generator: torch.Generator | None,
                   roll: torch.Tensor | float | None = None
                   ) -> tuple[_Fits, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """RANSAC planes a . X = 1 that hold the direction of travel (a . t = 0) in every (image, class) segment.

    Returns (fits, a: P x 3 plane vectors, known: B bool (travel known), e1, e2: B x 3, the basis of
    the planes perpendicular to t that :func:`ground_rolls` measures the roll in), None without a
    segment big enough. ``roll`` None: a = c1 e1 + c2 e2, two unknowns (roll and height); a roll
    (radians, one for all images or one per image): a = c (cos roll e1 + sin roll e2), the height alone.
    """
    b, _, h, w = depth.shape
    dtype = torch.float64 if depth.dtype == torch.float64 else torch.float32
    t = travel.to(dtype)
    known = t.norm(dim=-1) > 0.5
    e1, e2 = _perpendicular_basis(torch.where(known.unsqueeze(-1), t, torch.tensor([0.0, 0.0, 1.0], dtype=dtype,
                                                                                   device=t.device)))
    if roll is None:
        directions = [e1, e2]
    else:
        roll = torch.as_tensor(roll, dtype=dtype, device=t.device).reshape(-1, 1)  # 1 or B rows
        directions = [torch.cos(roll) * e1 + torch.sin(roll) * e2]
    rays = camera_rays(K, h, w, dtype)  # B x 3 x HW
    design = torch.stack([(d.unsqueeze(-1) * rays).sum(1) for d in directions], -1)  # B x HW x (2 or 1)
    fits = _fit_segments(depth, labels, K, classes, 1, 64, max(inlier_threshold, TRAVEL_PLANE_INLIER), min_pixels, 0.3,
                         2048, 2, generator, design)
    if fits is None:
        return None
    a = sum(fits.coef[:, i:i + 1] * d[fits.pair_b] for i, d in enumerate(directions))  # P x 3
    return fits, a, known, e1, e2


def _fit_along_travel(depth: torch.Tensor, labels: torch.Tensor, K: torch.Tensor, classes: list[int],
                      travel: torch.Tensor, free: _Fits, inlier_threshold: float, min_pixels: int,
                      generator: torch.Generator | None, roll: torch.Tensor | float | None = None) -> _Fits:
    """Planes that contain the direction of travel, in place of the free fits where the image has one.

    A car drives on its road, so the road plane a . X = 1 holds the direction of travel t: a . t = 0,
    and its horizon a . r = 0 passes through the focus of expansion K t. A free plane fitted to a
    short run's prediction does not: the far road is predicted too near (a compressed range), which
    tilts the fitted plane and lifts its horizon into the image, so the hint keeps the compression.
    With a . t = 0 the plane has two unknowns, a = c1 e1 + c2 e2 with e1, e2 perpendicular to t: the
    same RANSAC over those two terms (1/z = c1 (e1 . r) + c2 (e2 . r)). No level-camera assumption:
    pitch, roll and height stay fitted; only the direction the motion measures is pinned. On hand-made
    roads seen by turned, pitched and rolled cameras, a compressed prediction's road comes back to
    within 0.5-1.6 % where the free plane keeps its 12-13 % error (``tests/test_refine_geometry.py``).
    With ``roll`` (the video's one roll, :func:`ground_rolls` voted over many images) only the height
    is fitted: a prediction leaning sideways cannot turn its own road plane with it.
    Images without a direction of travel (zero rows) keep the free fit; acceptance (is this segment a
    plane at all) stays the free fit's, since the pinned plane cannot follow the compression it undoes.
    ``min_pixels`` must be the free fit's, so that both fit the same (image, class) pairs.
    """
    planes = _travel_planes(depth, labels, K, classes, travel, inlier_threshold, min_pixels, generator, roll)
    if planes is None:
        return free
    pinned, a, known, _, _ = planes
    if not (torch.equal(pinned.pair_b, free.pair_b) and torch.equal(pinned.pair_c, free.pair_c)):
        return free
    use = known[pinned.pair_b].unsqueeze(-1)
    coef = torch.where(use, torch.stack([a[:, 2], a[:, 0], a[:, 1]], -1).to(free.coef.dtype), free.coef)
    return free._replace(coef=coef, fit_q=torch.where(use, pinned.fit_q, free.fit_q))


def ground_rolls(depth: torch.Tensor, seg_labels: torch.Tensor, K: torch.Tensor, classes: Iterable[int],
                 travel: torch.Tensor, inlier_threshold: float = 0.05, min_pixels: int = 64,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image's ground roll (B, radians; NaN where unknown): the turn about the direction of travel
    of its ground plane, fitted to ``depth`` through that direction as :func:`_fit_along_travel` fits it.

    Measured as atan2(a . e2, a . e1) in the basis perpendicular to t that ``_perpendicular_basis``
    builds (e1 = t x the camera's x axis): an angle to compare between images of one camera, not an
    angle against gravity; its value is never assumed. The camera on a car is bolted to it and the car
    stands on its road, so this roll is one number for the whole video: voted over many images
    (``refine.ground_roll_votes``) it outvotes a prediction that leans sideways on some of them. Of
    several ground classes an image votes with the plane that most pixels agree with; an image without
    a direction of travel or an accepted ground segment does not vote.
    """
    labels, classes, _, _ = _fit_start(depth, seg_labels, classes)
    rolls = torch.full((depth.shape[0],), float("nan"), dtype=depth.dtype, device=depth.device)
    if not classes:
        return rolls
    free = _fit_segments(depth, labels, K, classes, 1, 64, inlier_threshold, min_pixels, 0.3, 2048, 2, generator)
    planes = _travel_planes(depth, labels, K, classes, travel, inlier_threshold, min_pixels, generator)
    if free is None or planes is None:
        return rolls
    pinned, a, known, e1, e2 = planes
    if not (torch.equal(pinned.pair_b, free.pair_b) and torch.equal(pinned.pair_c, free.pair_c)):
        return rolls
    voting = free.accepted & known[pinned.pair_b]
    angle = torch.atan2((a * e2[pinned.pair_b]).sum(-1), (a * e1[pinned.pair_b]).sum(-1))
    for b in torch.unique(pinned.pair_b[voting]).tolist():
        mine = voting & (pinned.pair_b == b)
        best = torch.nonzero(mine)[pinned.support[mine].argmax()]
        rolls[b] = angle[best].to(rolls.dtype)
    return rolls


def segment_surface_fit(depth: torch.Tensor, seg_labels: torch.Tensor, K: torch.Tensor, classes: Iterable[int],
                        order: int = 1, num_hypotheses: int = 64, inlier_threshold: float = 0.05,
                        min_pixels: int = 64, min_inlier_ratio: float = 0.3, eval_pixels: int = 2048,
                        refine_iters: int = 2, band: float = 0.0, generator: torch.Generator | None = None,
                        travel: torch.Tensor | None = None, roll: torch.Tensor | float | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """RANSAC fit of inverse depth as a polynomial surface in each (image, class) segment.

    order=1: a free plane (road / sidewalk ground plane in driving; any camera pose); order=2: a
    smooth low-order surface (tissue); order=0: ABLATION, the level ground plane, which assumes a
    level camera (see ``_surface_design``). Every (image, class) pair with at least ``min_pixels``
    pixels is fitted at once: ``num_hypotheses`` minimal samples per pair are solved in one batched call, scored by
    the inlier count (relative depth residual < ``inlier_threshold``) on ``eval_pixels`` random
    pixels of the segment, and the winner is refit to all its inliers. Segments where fewer than
    ``min_inlier_ratio`` of pixels agree with the best surface are left out (probably not a surface,
    or the labels are wrong there). ``band`` > 0 replaces only pixels whose depth is within that
    relative distance of the surface (|fit / depth - 1| in inverse depth): a pixel far off the road
    plane is more likely a mislabelled object standing on it than a badly predicted patch of road,
    and the plane would push such a car's pixels back to the ground behind it. Returns (depth with
    the fitted surface inside accepted segments and the input depth elsewhere, valid mask (B,1,H,W)
    bool of the fitted pixels). ``travel`` (B x 3 unit rows, zero where unknown; :func:`travel_direction`):
    order-1 planes are made to contain the direction of travel (:func:`_fit_along_travel`); only for
    classes the camera moves along (the road), never for a surface it moves towards. ``roll`` (radians,
    with ``travel``): those planes also take this roll about the direction of travel (:func:`ground_rolls`).
    """
    labels, classes, out, valid = _fit_start(depth, seg_labels, classes)
    if not classes:
        return out, valid
    fits = _fit_segments(depth, labels, K, classes, order, num_hypotheses, inlier_threshold, min_pixels,
                         min_inlier_ratio, eval_pixels, refine_iters, generator)
    if fits is None:
        return out, valid
    if travel is not None and order == 1:
        fits = _fit_along_travel(depth, labels, K, classes, travel, fits, inlier_threshold, min_pixels, generator, roll)
    return _fitted_depth(fits, depth, band)


# ----------------------------------------------------------------------------------------------
# the ground plane's up direction, the direction of travel
# ----------------------------------------------------------------------------------------------
def _plane_normals(coef: torch.Tensor, order: int) -> torch.Tensor:
    """Surface coefficients -> a with 1/z = a . r, r = (x, y, 1): the plane a . X = 1 (P x 3)."""
    if order == 0:  # 1/z = c y
        return torch.stack([torch.zeros_like(coef[:, 0]), coef[:, 0], torch.zeros_like(coef[:, 0])], -1)
    if order == 1:  # 1/z = c0 + c1 x + c2 y
        return torch.stack([coef[:, 1], coef[:, 2], coef[:, 0]], -1)
    raise ValueError(f"a ground plane has order 0 (level, an ablation) or 1 (free), got {order}")


def _ground(depth: torch.Tensor, labels: torch.Tensor, K: torch.Tensor, classes: Iterable[int], order: int,
            inlier_threshold: float, generator: torch.Generator | None, travel: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ground fits D and E share: (per-class plane depth B x 1 x H x W, where accepted (bool),
    one plane a per image B x 3 (1/z = a . r), accepted B bool); see :func:`ground_plane`. With
    ``travel`` the planes contain the direction of travel (:func:`_fit_along_travel`)."""
    if order not in (0, 1):
        raise ValueError(f"a ground plane has order 0 (level, an ablation) or 1 (free), got {order}")
    classes = [int(c) for c in classes]
    b = depth.shape[0]
    planes = torch.zeros(b, 3, dtype=depth.dtype, device=depth.device)
    accepted = torch.zeros(b, dtype=torch.bool, device=depth.device)
    fits = (_fit_segments(depth, labels, K, classes, order, 64, inlier_threshold, 64, 0.3, 2048, 2, generator)
            if classes else None)
    if fits is None:
        return depth.clone(), torch.zeros_like(depth, dtype=torch.bool), planes, accepted
    if travel is not None and order == 1:
        fits = _fit_along_travel(depth, labels, K, classes, travel, fits, inlier_threshold, 64, generator)
    plane_depth, plane_ok = _fitted_depth(fits, depth, 0.0)
    # per image the accepted segment with the most inliers (the road, usually): its plane is the ground's
    score = torch.full((b, len(classes)), -1.0, dtype=depth.dtype, device=depth.device)
    score[fits.pair_b, fits.pair_c] = torch.where(fits.accepted, fits.support.to(depth.dtype), -1.0)
    table = torch.zeros(b, len(classes), 3, dtype=depth.dtype, device=depth.device)
    table[fits.pair_b, fits.pair_c] = _plane_normals(fits.coef, order).to(depth.dtype)
    best = score.max(1)
    planes = table[torch.arange(b, device=depth.device), best.indices]
    return plane_depth, plane_ok, planes, best.values > 0


def ground_plane(depth: torch.Tensor, seg_labels: torch.Tensor, K: torch.Tensor, ground_classes: Iterable[int],
                 order: int = 1, inlier_threshold: float = 0.05, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The ground plane of every image: (a B x 3, accepted B bool), 1/z = a . r with r = K^-1 (u, v, 1), r_z = 1.

    Operator B's robust plane (order 1) on each ground class; per image the accepted one with the
    most inliers (the road, usually; a sidewalk is parallel to it). A point X = z r on it has
    a . X = 1: a is the plane's normal over the camera's height (height = 1 / |a|), the camera is
    on the side a . X < 1, so up = -a / |a| (:func:`ground_up`), and the horizon is the image line
    a . r = 0. Order 0 is the level-camera ablation (a = (0, 1 / height, 0)). Images without an
    accepted ground segment have accepted False (and a = 0).
    """
    return _ground(depth, as_labels(seg_labels), K, ground_classes, order, inlier_threshold, generator)[2:]


def ground_up(planes: torch.Tensor, accepted: torch.Tensor, travel: torch.Tensor | None = None,
              min_level: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Up in camera coordinates (B x 3 unit; y points down) from :func:`ground_plane`, and where it is usable.

    up = -a / |a|. With the direction of travel (unit rows, zero where unknown; see
    :func:`travel_direction`) up is made perpendicular to it: the car drives on the ground, and a
    fit to a compressed prediction (a far road too near: inverse depth a . r + beta, beta > 0)
    tilts a by beta along r_z, i.e. along the travel direction when driving forward. Usable where
    the ground was accepted and up is within 60 deg of the image's up (-y): a camera on a vehicle
    does not look at the ground from the side, so anything else is a failed fit or a wall called road.
    """
    norm = planes.norm(dim=-1, keepdim=True)
    up = -planes / norm.clamp_min(EPS)
    if travel is not None:
        up = up - (up * travel).sum(-1, keepdim=True) * travel
        up = up / up.norm(dim=-1, keepdim=True).clamp_min(EPS)
    return up, accepted & (norm[:, 0] > EPS) & (-up[:, 1] >= min_level)


def travel_direction(translation: torch.Tensor | None, depth: torch.Tensor, min_translation: float = 0.01
                     ) -> torch.Tensor:
    """The direction of travel (B x 3 unit, in target-camera coordinates), zero rows where it is unknown.

    Unknown: no translation, or one shorter than ``min_translation`` times the image's median depth
    (the pose net's translation and the depth share one scale): a camera standing still has no
    direction, and the pose net's direction is noise there. 0.01 is 15 cm per frame at a median
    depth of 15 m (5 km/h at 10 frames/s).
    """
    b = depth.shape[0]
    if translation is None:
        return torch.zeros(b, 3, dtype=depth.dtype, device=depth.device)
    t = translation.to(depth.dtype).reshape(b, 3)
    norm = t.norm(dim=-1, keepdim=True)
    moving = norm >= min_translation * depth.reshape(b, -1).median(dim=1).values.unsqueeze(-1)
    return torch.where(moving, t / norm.clamp_min(EPS), torch.zeros_like(t))


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


def _along_line(u0: torch.Tensor, v0: torch.Tensor | float, v1: torch.Tensor | float, vanish: torch.Tensor
                ) -> torch.Tensor:
    """The column at row ``v1`` of the image line through (u0, v0) and the homogeneous point ``vanish``.

    ``vanish`` is B x 3 (broadcast as B x 1 x 1 against the others); a point at infinity (w = 0)
    gives parallel lines. Points on the line are (u0, v0, 1) + l V; its row is v1 at
    l = (v1 - v0) / (V_v - v1 V_w).
    """
    vu, vv, vw = (vanish[:, i].view(-1, 1, 1) for i in range(3))
    step = (v1 - v0) / (vv - v1 * vw)
    return (u0 + step * vu) / (1 + step * vw)


def _walk_down(labels: torch.Tensor, vanish: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every pixel, the first pixel below the end of its run of the same label, down the image of
    the vertical line through it: (row, column, found), each B x H x W.

    Vertical lines in space are image lines through the vertical vanishing point ``vanish`` = K up
    (B x 3, homogeneous; at infinity below a level camera, where they are the columns). The image
    is resampled along one such line per column at the middle row (nearest pixel), which makes
    them the columns of a B x H x J grid; :func:`vertical_run_end` walks those, and every pixel
    reads the walk of its nearest line (within half a pixel). The vanishing point must lie off the
    image's rows (``ground_contact`` checks it).
    """
    b, h, w = labels.shape
    dtype = torch.float64  # differences of large numbers when the vanishing point is far away
    vanish = vanish.to(dtype)
    ref = (h - 1) / 2
    rows = torch.arange(h, dtype=dtype, device=labels.device).view(1, h, 1)
    cols = torch.arange(w, dtype=dtype, device=labels.device).view(1, 1, w)
    line_at_ref = _along_line(cols, rows, ref, vanish)  # B x H x W: where each pixel's line crosses the middle row
    first = line_at_ref.flatten(1).min(1).values.floor().view(b, 1, 1)
    n_lines = int((line_at_ref.flatten(1).max(1).values.view(b, 1, 1) - first).ceil().max().item()) + 1
    lines = first + torch.arange(n_lines, dtype=dtype, device=labels.device).view(1, 1, n_lines)
    line_cols = _along_line(lines, ref, rows, vanish).round()  # B x H x J: each line's column at every row
    inside = (line_cols >= 0) & (line_cols < w)
    line_cols = line_cols.clamp(0, w - 1).long()
    resampled = torch.where(inside, torch.gather(labels, 2, line_cols), torch.full_like(line_cols, -2))
    end = vertical_run_end(resampled)
    line = (line_at_ref - first).round().long().clamp(0, n_lines - 1)  # B x H x W: each pixel's nearest line
    same_run = torch.gather(resampled, 2, line) == labels
    row = torch.gather(end, 2, line) + 1
    found = same_run & (row < h)
    row = row.clamp_max(h - 1)
    at = (row * n_lines + line).view(b, -1)  # the contact in the resampled grid
    col = torch.gather(line_cols.view(b, -1), 1, at).view(b, h, w)
    # a walk leaves the run through its bottom, not sideways: a rounded line can step out of an
    # object's side within the last pixel (then the "contact" is ground beside or behind it), which
    # shows as the pixel right above the contact being of another class. Columns never do that.
    above = torch.gather(labels.view(b, -1), 1, ((row - 1).clamp_min(0) * w + col).view(b, -1)).view(b, h, w)
    found = found & torch.gather(inside.view(b, -1), 1, at).view(b, h, w) & (above == labels)
    return row, col, found


def ground_contact(depth: torch.Tensor, seg_labels: torch.Tensor, K: torch.Tensor, ground_classes: Iterable[int],
                   upright_classes: Iterable[int], generator: torch.Generator | None = None, ground_order: int = 1,
                   inlier_threshold: float = 0.05, translation: torch.Tensor | None = None,
                   min_translation: float = 0.01, pin_travel: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Upright surfaces stand on the ground: give their pixels the depth of a vertical plane through their foot.

    Self-supervision is weakest on exactly the surfaces a driving scene is full of: the textureless
    back of a car or a truck matches the neighbouring frames at almost any depth, so short runs
    leave them too far or too near. The ground under them is well constrained (a plane with texture
    along its whole length). So: fit the ground plane (operator B, :func:`ground_plane`; up = its
    normal), follow every pixel of an upright class down the image of the vertical line through it
    (the line through the vertical vanishing point K up: a column only for a camera without pitch
    or roll) to the end of its run of the same class, and if the pixel there is ground with an
    accepted plane, its plane depth gives the foot P = z_c r_c. The pixel gets the depth of the
    vertical plane through P facing the camera (normal n = r_c without its component along up):
    z = z_c (n . r_c) / (n . r). The image line is the image of a vertical plane of rays, which
    meets any vertical surface in a vertical line through its foot, so the depth is exact for any
    vertical surface whatever its orientation (up to the half pixel between a pixel and its walked
    line, and the one row between the foot and the first ground pixel, as before). With a level
    camera the lines are the columns, n . r = n . r_c, and the hint is the contact depth all the way
    up the column. With a direction of travel (``translation``, see :func:`travel_direction`) up is
    made perpendicular to it (:func:`ground_up`). No hint in images without an accepted ground
    plane, with up more than 60 deg off the image's up, or whose vertical vanishing point lies
    within the image's rows. Within a pixel of a slanted silhouette edge (a pole under pitch or
    roll) a walk can leave the object sideways and take the ground beside it for its foot; walks
    whose contact has another class right above it are dropped, which catches most of them.
    Occluded or non-vertical parts and wrong labels give wrong hints; the Depth Hints gate keeps
    them out where they reproject worse than the prediction.
    ``ground_order`` 0 is the level-camera ablation (level plane, up = -y, the columns).
    ``pin_travel``: the ground plane contains the direction of travel (:func:`_fit_along_travel`), so
    the feet, and the objects' depths with them, come from a ground whose range is not compressed.
    Returns (hint: depth with contact depths on accepted pixels, valid mask B x 1 x H x W bool).
    """
    labels = as_labels(seg_labels)
    b, _, h, w = depth.shape
    travel = travel_direction(translation, depth, min_translation) if ground_order == 1 else None
    ground, ground_ok, planes, accepted = _ground(depth, labels, K, ground_classes, ground_order, inlier_threshold,
                                                  generator, travel if pin_travel else None)
    up, usable = ground_up(planes, accepted, travel)
    vanish = K[:, :3, :3].to(up.dtype) @ up.unsqueeze(-1)  # B x 3 x 1, homogeneous
    off_rows = (vanish[:, 1, 0] - vanish[:, 2, 0] * (h - 1) / 2).abs() > h * vanish[:, 2, 0].abs()
    usable = usable & off_rows
    columns = torch.tensor([0.0, -1.0, 0.0], dtype=up.dtype, device=up.device).expand(b, 3)
    row, col, found = _walk_down(labels, torch.where(usable.unsqueeze(-1), vanish[..., 0], columns))

    contact = (row * w + col).view(b, 1, -1)
    rays = camera_rays(K, h, w, depth.dtype)  # B x 3 x HW
    ray_c = torch.gather(rays, 2, contact.expand(-1, 3, -1))
    depth_c = torch.gather(ground.view(b, 1, -1), 2, contact)
    on_ground = torch.gather(ground_ok.view(b, 1, -1), 2, contact)
    up_ = up.to(depth.dtype).unsqueeze(-1)
    up_c, up_p = (ray_c * up_).sum(1, keepdim=True), (rays * up_).sum(1, keepdim=True)
    facing_c = (ray_c * ray_c).sum(1, keepdim=True) - up_c * up_c  # n . r_c, n = r_c - (r_c . up) up
    facing_p = (ray_c * rays).sum(1, keepdim=True) - up_c * up_p  # n . r
    hint = depth_c * facing_c / facing_p.clamp_min(EPS)

    upright = torch.tensor([int(c) for c in upright_classes], device=depth.device, dtype=labels.dtype)
    valid = (torch.isin(labels, upright) & found & usable.view(b, 1, 1)).view(b, 1, -1) & on_ground & (facing_p > EPS)
    valid = valid.view(b, 1, h, w)
    return torch.where(valid, hint.view(b, 1, h, w), depth), valid


MIN_TRAVEL_SINE = 0.5  # operator E: a direction of travel within 30 deg of up defines no facade orientation


def facade_planes(depth: torch.Tensor, seg_labels: torch.Tensor, K: torch.Tensor, classes: Iterable[int],
                  ground_classes: Iterable[int] = (), translation: torch.Tensor | None = None, band: float = 0.0,
                  min_pixels: int = 32, min_offset: float = 0.02, ground_order: int = 1,
                  inlier_threshold: float = 0.05, min_translation: float = 0.01,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Facades take the depth of a vertical plane along the direction of travel: 1/z = |m . r| / d.

    Why: a short run's facades are its largest error, and they are too near where they are far (a
    trained baseline's log-depth slope on buildings is 0.5-0.7): their far end has almost no
    parallax at training resolution, so photometry cannot tell 40 m from 80 m there. Geometry can.
    A street's facades are vertical planes parallel to the direction the car drives in: with up
    from the ground plane (:func:`ground_plane`, :func:`ground_up`) and the direction of travel t
    (``translation``: the camera's motion to a neighbouring frame in target-camera coordinates,
    :func:`travel_direction`; its image K t is the focus of expansion) their normal is
    m = up x t / |up x t|, and a facade is m . X = d: 1/z = (m . r) / d, r = K^-1 (u, v, 1). The
    image line m . r = 0 (through the focus of expansion and the vertical vanishing point) is the
    facades' vanishing line; inverse depth is zero there and grows linearly away from it, with ONE
    unknown per facade. A free plane fitted to the prediction would keep its compression; this one
    takes 1/d as the median of (1/z) / |m . r| over the outer half of the facade's pixels (|m . r|
    above its median: the near, well-measured part; over all of them, the too-near far end biases
    it) and extends it to the far end. One plane per (image, side = sign(m . r), class): building,
    wall and fence on each side stand at different offsets; pixels with |m . r| < ``min_offset``
    (on the vanishing line) are left alone. With a level camera driving along its axis, m = -x and
    this is 1/z = |x| / X, x = (u - cx) / fx.
    No hint in an image without a direction of travel (no ``translation``, a camera standing still,
    or travel within 30 deg of up) or without an accepted ground plane (no up: a vertical plane is
    undefined without assuming a level camera). The alternative for a camera standing still, a
    vertical plane fitted to each facade's own prediction (orientation and offset: 1/z linear in
    two rays perpendicular to up), keeps the compression this operator exists to undo, since the
    orientation absorbs it. And standing still, the gate
    cannot judge a hint (every depth reprojects alike). Wrong where the street turns or for facades
    across it; ``band`` > 0 (relative distance, as operator B) leaves pixels far off the plane alone
    (a tree or a car labelled building stands in front of it), and the gate does the rest.
    ``ground_order`` 0 is the level-camera ablation (up = -y). Returns (hint, valid mask B x 1 x H x W bool).
    """
    labels, classes, out, valid = _fit_start(depth, seg_labels, classes)
    if not classes:
        return out, valid
    b, _, h, w = depth.shape
    _, _, planes, accepted = _ground(depth, labels, K, ground_classes, ground_order, inlier_threshold, generator)
    travel = travel_direction(translation, depth, min_translation)
    up, usable = ground_up(planes, accepted, travel if ground_order == 1 else None)
    normal = torch.linalg.cross(up, travel.to(up.dtype), dim=-1)  # zero rows where travel is unknown
    sine = normal.norm(dim=-1, keepdim=True)
    usable = usable & (sine[:, 0] >= MIN_TRAVEL_SINE)
    normal = (normal / sine.clamp_min(EPS)).to(depth.dtype)
    coord = (normal.unsqueeze(-1) * camera_rays(K, h, w, depth.dtype)).sum(1).view(b, 1, 1, h * w)  # m . r
    side = torch.stack([coord < -min_offset, coord > min_offset], dim=1).view(b, 2, 1, h * w)
    side = side & usable.view(b, 1, 1, 1)
    cls = torch.tensor(classes, device=depth.device, dtype=labels.dtype).view(1, 1, -1, 1)
    member = (labels.view(b, 1, 1, h * w) == cls) & side  # B x 2 x C x HW
    inv = 1.0 / depth.reshape(b, 1, 1, h * w).clamp_min(EPS)
    offset = coord.abs().expand_as(member)
    nan = torch.full_like(offset, float("nan"))
    # the outer half of each facade (|m . r| above its median): the near part, where parallax measured it
    outer = member & (offset >= torch.nanmedian(torch.where(member, offset, nan), dim=-1, keepdim=True).values)
    ratio = torch.where(outer, inv / offset.clamp_min(min_offset), nan)
    slope = torch.nanmedian(ratio, dim=-1, keepdim=True).values  # 1 / d, B x 2 x C x 1
    ok = member & (member.sum(-1, keepdim=True) >= min_pixels) & (slope > 0)
    fit = slope.nan_to_num(0.0) * coord.abs()
    if band > 0:
        ok = ok & ((fit / inv - 1).abs() < band)
    hit = ok.any(dim=(1, 2))  # a pixel belongs to one side and one class: at most one fit
    fit_inv = (fit * ok).sum(dim=(1, 2))
    valid = hit.view(b, 1, h, w)
    out = torch.where(valid, 1.0 / fit_inv.clamp_min(EPS).view(b, 1, h, w), depth)
    return out, valid
