"""The training objective: photometric error, min-reprojection + auto-mask, smoothness, segmentation
losses (plain and noise-robust), the semantic-hint loss, and their assembly for one training step.

Everything follows Monodepth2's formulation (METHOD.md, 'Base') so that the baseline matches the
literature; the noise-robust segmentation losses are the standard ones from the noisy-label
literature, each selectable by name (``loss.seg_loss``). Losses never import models: they take
tensors and dicts whose keys are documented in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from semhint.core.conventions import IGNORE_INDEX
from semhint.core.errors import InputError
from semhint.core.geometry import backproject, disp_to_depth, project, resize_intrinsics, sample, warp


# ----------------------------------------------------------------------------------------------
# photometric terms
# ----------------------------------------------------------------------------------------------
def box_mean3(x: torch.Tensor) -> torch.Tensor:
    """3 x 3 mean without padding (output 2 pixels smaller per axis), as a sum of nine shifted views.

    Equal to ``F.avg_pool2d(x, 3, 1)`` but several times faster on CPU, forward and backward, where
    the pooling kernel was the largest single cost of a training step (10 SSIM maps per step).
    """
    h, w = x.shape[-2] - 2, x.shape[-1] - 2
    total = x[..., :h, :w]
    for i in range(3):  # the pooling kernel's summation order, so results agree to the last bit
        for j in range(3):
            if i or j:
                total = total + x[..., i:i + h, j:j + w]
    return total / 9


def ssim_map(x: torch.Tensor, y: torch.Tensor, c1: float = 0.01**2, c2: float = 0.03**2) -> torch.Tensor:
    """Per-pixel structural dissimilarity (1 - SSIM) / 2 in [0, 1], 3 x 3 windows, reflection padding.

    The small window keeps the error local enough to localise misalignment to a pixel, which the
    per-pixel minimum over source frames relies on.
    """
    x = F.pad(x, (1, 1, 1, 1), mode="reflect")
    y = F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x = box_mean3(x)
    mu_y = box_mean3(y)
    sigma_x = box_mean3(x * x) - mu_x**2
    sigma_y = box_mean3(y * y) - mu_y**2
    sigma_xy = box_mean3(x * y) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)
    denominator = (mu_x**2 + mu_y**2 + c1) * (sigma_x + sigma_y + c2)
    return torch.clamp((1 - numerator / denominator) / 2, 0, 1)


def photometric_error(pred: torch.Tensor, target: torch.Tensor, ssim_weight: float = 0.85) -> torch.Tensor:
    """B x 1 x H x W error: ssim_weight * SSIM term + (1 - ssim_weight) * L1, both averaged over channels."""
    l1 = (pred - target).abs().mean(1, keepdim=True)
    if ssim_weight == 0:
        return l1
    return ssim_weight * ssim_map(pred, target).mean(1, keepdim=True) + (1 - ssim_weight) * l1


# ----------------------------------------------------------------------------------------------
# a light that moves with the camera (loss.brightness, loss.specular_threshold)
# ----------------------------------------------------------------------------------------------
AFFINE_GAIN_RANGE = (0.5, 2.0)  # a fitted gain is clamped here (the offset then refitted to the means)
AFFINE_MIN_PIXELS = 16  # fewer usable pixels than this in a pair: no fit (gain 1, offset 0)


def saturated(image: torch.Tensor, threshold: float) -> torch.Tensor:
    """B x 1 x H x W bool: pixels whose brightest channel reaches ``threshold``, grown by one pixel.

    A specular highlight clips the sensor and sits where the surface mirrors the light into the
    lens, so it moves over the surface as the endoscope moves: no depth makes it reproject. The
    one-pixel margin keeps it out of its neighbours' 3 x 3 SSIM windows too.
    """
    hot = (image.amax(1, keepdim=True) >= threshold).to(image.dtype)
    return F.max_pool2d(hot, 3, stride=1, padding=1) > 0


def fit_affine_brightness(source: torch.Tensor, target: torch.Tensor, valid: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, the gain a and offset b (B x 1 x 1 x 1) minimising sum over valid pixels and all
    channels of (a * source + b - target)^2, in closed form (a = cov / var, b = mean_t - a * mean_s).

    One gain for all channels: a light that moves with the camera (inverse-square falloff, its
    spot profile, exposure control) scales every channel alike. The fit is detached: a and b are
    a nuisance model of the light, solved for the current warp and then held fixed; with gradients
    through them the network could lower the loss by changing what the fit absorbs instead of the
    geometry (a least-squares gain shrinks towards 0 on a misaligned warp, flattening the warped
    image). For the same reason the gain is clamped to AFFINE_GAIN_RANGE (a light change between
    neighbouring frames stays well inside a factor 2), and a pair with fewer than
    AFFINE_MIN_PIXELS valid pixels or a flat source keeps gain 1 and offset 0.
    """
    with torch.no_grad():
        w = valid.to(source.dtype).expand_as(source)
        dims = (1, 2, 3)
        n = w.sum(dims, keepdim=True)
        mean_s = (w * source).sum(dims, keepdim=True) / n.clamp_min(1)
        mean_t = (w * target).sum(dims, keepdim=True) / n.clamp_min(1)
        ds = (source - mean_s) * w
        var = (ds * ds).sum(dims, keepdim=True)
        cov = (ds * (target - mean_t)).sum(dims, keepdim=True)
        usable = (n >= AFFINE_MIN_PIXELS * source.shape[1]) & (var > 1e-8 * n.clamp_min(1))
        gain = torch.where(usable, cov / var.clamp_min(1e-12), torch.ones_like(var)).clamp(*AFFINE_GAIN_RANGE)
        offset = torch.where(usable, mean_t - gain * mean_s, torch.zeros_like(var))
    return gain, offset


def pair_errors(sources: list[torch.Tensor], target: torch.Tensor, ssim_weight: float = 0.85, brightness: str = "none",
                specular_threshold: float = 0.0, inside: list[torch.Tensor] | None = None) -> torch.Tensor:
    """B x S x H x W photometric errors of ``target`` against each (warped or unwarped) source.

    ``brightness="affine"``: each source is first mapped by the gain and offset of
    :func:`fit_affine_brightness`, fitted on the pixels the pair can use (``inside``: where the
    warp sampled inside the source, and not specular). ``specular_threshold`` > 0: a pixel
    saturated in the target or in that source gets an error of +inf for that pair, so the
    per-pixel minimum takes another source, and a pixel no pair can use drops out of the loss
    (:func:`masked_mean`). With both off this is exactly the plain error of every pair.
    """
    if brightness == "none" and specular_threshold <= 0:
        return torch.cat([photometric_error(src, target, ssim_weight) for src in sources], 1)
    hot_target = saturated(target, specular_threshold) if specular_threshold > 0 else None
    errors = []
    for i, src in enumerate(sources):
        hot = None if hot_target is None else hot_target | saturated(src, specular_threshold)
        if brightness == "affine":
            usable = torch.ones_like(target[:, :1], dtype=torch.bool) if hot is None else ~hot
            if inside is not None:
                usable = usable & inside[i]
            gain, offset = fit_affine_brightness(src, target, usable)
            src = gain * src + offset
        err = photometric_error(src, target, ssim_weight)
        errors.append(err if hot is None else err.masked_fill(hot, float("inf")))
    return torch.cat(errors, 1)


def warp_inside(source: torch.Tensor, depth: torch.Tensor, T: torch.Tensor, K: torch.Tensor,
                inv_K: torch.Tensor | None = None, light_at_camera: bool = False,
                log_profile: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`semhint.core.geometry.warp` (same numbers) and where it sampled inside the source
    (B x 1 x H x W bool): border padding invents the pixels outside, which must not steer a fit.

    ``light_at_camera``: the warped source is also relit for a point light at the camera centre
    (the endoscope's light guide), whose irradiance falls off with the square of the distance: the
    same surface point, seen from the source at range r_s and from the target at r_t, is brighter
    in the target by (r_s / r_t)^2. Both ranges come from the predicted depth and pose, so the
    factor keeps its gradient: the brightness change itself then says how near the surface is, and
    the warp no longer has to bend the geometry to explain a light that moved. The ratio does not
    change when depth and translation are scaled together (monocular scale stays free). It assumes
    linear intensities (SynthTissue's frames are; for gamma-encoded video the ``_affine`` variant's
    gain absorbs most of the mismatch); the incidence angle is not modelled.

    ``log_profile`` (B x 1 x H x W, :class:`semhint.models.light.RadialLightProfile`): the light's
    beam and the lens vignetting, fixed to the camera. A point seen at target pixel p_t and source
    pixel p_s is brighter in the target by profile(p_t) / profile(p_s).
    """
    if inv_K is None:
        inv_K = torch.linalg.inv(K)
    h, w = depth.shape[-2:]
    points = backproject(depth, inv_K)
    grid = project(points, K, T, h, w)
    warped = sample(source, grid)
    if light_at_camera:
        r_t = points[:, :3].norm(dim=1)
        r_s = (T[:, :3, :] @ points).norm(dim=1)
        warped = warped * ((r_s / r_t.clamp_min(1e-6)) ** 2).reshape(depth.shape)
    if log_profile is not None:
        warped = warped * torch.exp(log_profile - sample(log_profile, grid))
    return warped, (grid.abs() <= 1 + 1e-4).all(-1).unsqueeze(1)  # 1e-4: rounding at the edge


def residual_brightness(brightness: str) -> str:
    """What :func:`pair_errors` still fits after the warp: ``inverse_square_affine`` relights in the
    warp (:func:`warp_inside`) and then fits a gain and offset (exposure control, gamma); the other
    models are either one or the other."""
    return "affine" if brightness in ("affine", "inverse_square_affine") else "none"


def masked_mean(per_pixel: torch.Tensor) -> torch.Tensor:
    """Mean over the finite pixels (specular pixels no pair could use are +inf); 0 with none."""
    kept = torch.isfinite(per_pixel)
    return per_pixel.masked_fill(~kept, 0.0).sum() / kept.sum().clamp_min(1)


def min_reprojection(reprojection_errors: torch.Tensor, identity_errors: torch.Tensor | None = None,
                     automask: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel minimum error and the auto-mask, from B x S x H x W stacks of per-source errors.

    The minimum over source frames handles occlusion (a pixel hidden in one source is usually
    visible in the other). With ``automask`` the identity errors (unwarped sources vs target) join
    the minimum: where doing nothing explains the pixel better than the warp (static camera, objects
    moving with the camera) the pixel's loss is a constant and gives depth no gradient. Ties go to
    the identity error (no random tie-break noise, so results are deterministic).

    Returns (per_pixel B x 1 x H x W, automask B x 1 x H x W float: 1 where a warped error won).
    """
    if not automask or identity_errors is None:
        per_pixel = reprojection_errors.min(dim=1, keepdim=True).values
        return per_pixel, torch.ones_like(per_pixel)
    combined = torch.cat([identity_errors, reprojection_errors], dim=1)
    per_pixel, idx = combined.min(dim=1, keepdim=True)
    return per_pixel, (idx >= identity_errors.shape[1]).to(per_pixel.dtype)


def smoothness_loss(disp: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Edge-aware smoothness of mean-normalised disparity (scale-free, so it cannot shrink depth).

    First differences of disp / mean(disp) are down-weighted by exp(-|image gradient|), so depth
    may jump where the image has an edge.
    """
    norm = disp / (disp.mean(dim=(2, 3), keepdim=True) + 1e-7)
    grad_disp_x = (norm[:, :, :, :-1] - norm[:, :, :, 1:]).abs()
    grad_disp_y = (norm[:, :, :-1, :] - norm[:, :, 1:, :]).abs()
    grad_img_x = (image[:, :, :, :-1] - image[:, :, :, 1:]).abs().mean(1, keepdim=True)
    grad_img_y = (image[:, :, :-1, :] - image[:, :, 1:, :]).abs().mean(1, keepdim=True)
    return (grad_disp_x * torch.exp(-grad_img_x)).mean() + (grad_disp_y * torch.exp(-grad_img_y)).mean()


def planar_loss(disp: torch.Tensor, segments: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """Mean |second difference| of mean-normalised disparity inside segments of planar classes.

    Why second and not first differences: under a pinhole camera a plane's inverse depth is affine
    in the pixel coordinates (1/Z = a u + b v + c), so its second differences are exactly zero
    whatever its tilt. First-order smoothness instead prefers fronto-parallel surfaces; where
    parallax is weak (the far end of a road or a facade) it pulls depth towards its neighbours and
    compresses the depth range (a trained baseline's log-depth slope on facades is 0.5-0.7). This
    prior leaves a correctly tilted plane alone and carries the slope that the near, well-textured
    part of a surface measures out to its far part. Only triples of pixels that all carry the same
    planar class count, so it never acts across a (labelled) border; the L1 penalty tolerates the
    few true creases inside a segment (a facade's corner) and mislabelled pixels.

    disp: B x 1 x h x w; segments: B x H x W class ids (255 = ignore), resized here by nearest.
    """
    if tuple(segments.shape[-2:]) != tuple(disp.shape[-2:]):
        segments = F.interpolate(segments[:, None].float(), size=disp.shape[-2:], mode="nearest")[:, 0]
    seg = segments.long()[:, None]
    planar = torch.isin(seg, torch.as_tensor(classes, device=seg.device))
    norm = disp / (disp.mean(dim=(2, 3), keepdim=True) + 1e-7)
    mid_x, mid_y = seg[..., 1:-1], seg[..., 1:-1, :]
    in_x = planar[..., 1:-1] & (seg[..., :-2] == mid_x) & (seg[..., 2:] == mid_x)
    in_y = planar[..., 1:-1, :] & (seg[..., :-2, :] == mid_y) & (seg[..., 2:, :] == mid_y)
    dxx = (norm[..., :-2] - 2 * norm[..., 1:-1] + norm[..., 2:]).abs()
    dyy = (norm[..., :-2, :] - 2 * norm[..., 1:-1, :] + norm[..., 2:, :]).abs()
    count = in_x.sum() + in_y.sum()
    return ((dxx * in_x).sum() + (dyy * in_y).sum()) / count.clamp_min(1)


def normalise_depth(depth: torch.Tensor) -> torch.Tensor:
    """Depth divided by its per-image mean (Wang et al., CVPR 2018, "Learning Depth from Monocular
    Videos using Direct Methods").

    Depth and translation are only known up to one shared scale, and early in training the cheaper
    way to fit the parallax is to shrink depth rather than grow the tiny initial translation, until
    near structure saturates at ``min_depth``. Warping with mean-normalised depth takes that escape
    away: the pose net alone carries the scale. The mean stays in the graph, so the loss gives the
    network's overall scale no gradient at all (it cannot drift towards either depth bound).
    """
    return depth / depth.mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-7)


def hint_loss(depth: torch.Tensor, hint: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over ``mask`` of log(1 + |depth - hint|) (Depth Hints' robust pseudo-label loss).

    The log keeps a wrong hint from dominating: its gradient falls as 1 / (1 + error). An empty mask
    gives an exact zero that still carries a graph (so DDP sees every parameter used).
    """
    mask = mask.to(depth.dtype).expand_as(depth)
    per_pixel = torch.log1p((depth - hint).abs()) * mask
    return per_pixel.sum() / mask.sum().clamp_min(1)  # no host sync: an empty mask gives 0 / 1


# ----------------------------------------------------------------------------------------------
# segmentation losses (labels int64 B x H x W, IGNORE_INDEX = ignore)
# ----------------------------------------------------------------------------------------------
def _prepare(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(valid mask, labels with ignored pixels set to class 0), rejecting labels outside the classes."""
    valid = labels != ignore_index
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    num_classes = logits.shape[1]
    if bool(((safe < 0) | (safe >= num_classes)).any()):
        bad = int(safe[(safe < 0) | (safe >= num_classes)][0])
        raise ValueError(f"label {bad} outside 0..{num_classes - 1} (and not the ignore index {ignore_index})")
    return valid, safe


def _masked_mean(per_pixel: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over non-ignored pixels; an all-ignored batch gives 0 that still has a graph (no host sync)."""
    return (per_pixel * valid).sum() / valid.sum().clamp_min(1)


def _log_probs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-softmax B x C x H x W, log-probability of the labelled class B x H x W)."""
    log_p = F.log_softmax(logits, dim=1)
    return log_p, log_p.gather(1, labels.unsqueeze(1)).squeeze(1)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Plain cross-entropy averaged over non-ignored pixels."""
    valid, safe = _prepare(logits, labels, ignore_index)
    _, log_py = _log_probs(logits, safe)
    return _masked_mean(-log_py, valid)


def symmetric_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, beta: float = 1.0,
                            ignore_index: int = IGNORE_INDEX, log_zero: float = 1e-4) -> torch.Tensor:
    """CE + beta * reverse CE (Wang et al., ICCV 2019).

    Reverse CE is -sum_k p_k log(q_k) with the one-hot label q clamped to [log_zero, 1]; since
    log 1 = 0 it equals -log(log_zero) * (1 - p_y): bounded, so a wrong label cannot push the
    prediction arbitrarily hard.
    """
    valid, safe = _prepare(logits, labels, ignore_index)
    _, log_py = _log_probs(logits, safe)
    reverse = -math.log(log_zero) * (1 - log_py.exp())
    return _masked_mean(-log_py + beta * reverse, valid)


def generalized_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, q: float = 0.7,
                              ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """(1 - p_y^q) / q (Zhang & Sabuncu, NeurIPS 2018): CE as q -> 0, MAE at q = 1; robust in between."""
    if not 0 < q <= 1:
        raise ValueError(f"generalised CE needs 0 < q <= 1, got {q}")
    valid, safe = _prepare(logits, labels, ignore_index)
    _, log_py = _log_probs(logits, safe)
    return _masked_mean((1 - torch.exp(q * log_py)) / q, valid)


def bootstrapped_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, beta: float = 0.8, hard: bool = False,
                               ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """CE against beta * label + (1 - beta) * the model's own belief (Reed et al., ICLR 2015 workshop).

    Soft: the belief is the predicted distribution p (not detached: the extra term is p's entropy,
    which rewards confident predictions); hard: the one-hot of argmax p. Where the model confidently
    disagrees with a noisy label, the label's pull is reduced to beta.
    """
    if not 0 <= beta <= 1:
        raise ValueError(f"bootstrapped CE needs 0 <= beta <= 1, got {beta}")
    valid, safe = _prepare(logits, labels, ignore_index)
    log_p, log_py = _log_probs(logits, safe)
    if hard:
        self_term = -log_p.gather(1, log_p.argmax(1, keepdim=True)).squeeze(1)
    else:
        self_term = -(log_p.exp() * log_p).sum(1)
    return _masked_mean(-beta * log_py + (1 - beta) * self_term, valid)


# name -> (function(logits, labels, param), default param); param 0 in the config means the default
SEG_LOSSES: dict[str, tuple[Callable[..., torch.Tensor], float | None]] = {
    "ce": (lambda logits, labels, _p: cross_entropy(logits, labels), None),
    "sce": (lambda logits, labels, p: symmetric_cross_entropy(logits, labels, beta=p), 1.0),
    "gce": (lambda logits, labels, p: generalized_cross_entropy(logits, labels, q=p), 0.7),
    "bootstrap": (lambda logits, labels, p: bootstrapped_cross_entropy(logits, labels, beta=p), 0.8),
    "bootstrap_hard": (lambda logits, labels, p: bootstrapped_cross_entropy(logits, labels, beta=p, hard=True), 0.8),
}


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, name: str = "ce", param: float = 0.0) -> torch.Tensor:
    """The segmentation loss selected by ``name`` (config ``loss.seg_loss``); ``param`` 0 = its default."""
    if name not in SEG_LOSSES:
        raise ValueError(f"unknown segmentation loss {name!r}; choose from {', '.join(SEG_LOSSES)}")
    fn, default = SEG_LOSSES[name]
    return fn(logits, labels, param if param else default)


# ----------------------------------------------------------------------------------------------
# the per-step objective
# ----------------------------------------------------------------------------------------------
def _upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def planar_segments(batch: dict, outputs: dict, source: str) -> torch.Tensor | None:
    """B x H x W segments for the planar prior: the noisy labels, or the branch's detached argmax."""
    if source == "labels":
        return batch.get("labels/0")
    return outputs["seg/0"].detach().argmax(1) if "seg/0" in outputs else None


def _check_label_ids(labels: torch.Tensor, num_classes: int, source: str) -> None:
    """A noisy-label id outside the model's classes is the user's data, not a bug: one line naming
    data.labels (the dataset names the file itself when it is given the class count)."""
    bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= num_classes))
    if bool(bad.any()):
        raise InputError(f"{source or 'data.labels'}: data.labels has class id {int(labels[bad][0])} outside the "
                         f"model's classes 0..{num_classes - 1} (model.num_classes; 255 = ignore)")


def _reduce_sources(errors: torch.Tensor, use_min: bool) -> torch.Tensor:
    """B x S x H x W per-source errors: kept for the per-pixel minimum, or averaged to B x 1 x H x W."""
    return errors if use_min else errors.mean(1, keepdim=True)


def _photo_term(images: dict[int, torch.Tensor], depth: torch.Tensor, poses: dict[int, torch.Tensor], K: torch.Tensor,
                inv_K: torch.Tensor, identity: torch.Tensor | None, log_profile: torch.Tensor | None, lo
                ) -> tuple[torch.Tensor, tuple[dict[int, torch.Tensor], torch.Tensor, torch.Tensor]]:
    """The photometric term of one depth map at one image resolution, and (warped sources, reproj,
    auto-mask) for the maps. ``images`` maps frame id -> image (0 = target); ``identity`` None:
    the unwarped errors are computed here (the pyramid levels)."""
    target, sources = images[0], [f for f in images if f != 0]
    light = {"brightness": residual_brightness(lo.brightness), "specular_threshold": lo.specular_threshold}
    if identity is None:
        identity = _identity_errors(images, lo)
    inside = None
    if lo.brightness != "none" or lo.specular_threshold > 0 or lo.light_profile != "none":
        relight = lo.brightness.startswith("inverse_square")
        both = {f: warp_inside(images[f], depth, poses[f], K, inv_K, relight, log_profile) for f in sources}
        warped, inside = {f: w for f, (w, _) in both.items()}, [both[f][1] for f in sources]
    else:
        warped = {f: warp(images[f], depth, poses[f], K, inv_K) for f in sources}
    reproj = _reduce_sources(
        pair_errors([warped[f] for f in sources], target, lo.ssim_weight, inside=inside, **light), lo.min_reprojection)
    per_pixel, mask = min_reprojection(reproj, identity if lo.automask else None, automask=lo.automask)
    photo = masked_mean(per_pixel) if lo.specular_threshold > 0 else per_pixel.mean()
    return photo, (warped, reproj, mask)


def _identity_errors(images: dict[int, torch.Tensor], lo) -> torch.Tensor:
    """Errors of the unwarped sources (the auto-mask's reference), under the same brightness model
    as the warped ones so that the auto-mask compares like with like."""
    light = {"brightness": residual_brightness(lo.brightness), "specular_threshold": lo.specular_threshold}
    return _reduce_sources(pair_errors([images[f] for f in images if f != 0], images[0], lo.ssim_weight, **light),
                           lo.min_reprojection)


def pyramid_level(images: dict[int, torch.Tensor], depth: torch.Tensor, K: torch.Tensor,
                  log_profile: torch.Tensor | None, factor: int) -> tuple:
    """Images, depth, K, inv_K and light profile of one image-pyramid level (``loss.image_pyramid``).

    Area averaging blurs the fine texture away, so a motion of several pixels becomes a fraction of
    a pixel here and the warp's gradient points to it from zero motion, where the full-resolution
    loss of fine texture is flat or even rises (tests/test_losses.py, the image-pyramid test).
    """
    h, w = depth.shape[-2:]
    new = (max(1, h // factor), max(1, w // factor))
    area = lambda x: F.interpolate(x, size=new, mode="area")  # noqa: E731
    K_level = resize_intrinsics(K, (h, w), new)
    profile = None if log_profile is None else area(log_profile)
    return {f: area(im) for f, im in images.items()}, area(depth), K_level, torch.linalg.inv(K_level), profile


def self_supervised_objective(batch: dict, outputs: dict, poses: dict[int, torch.Tensor], cfg) -> tuple[
        dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Monodepth2's loss for one batch, plus the noisy-label segmentation term.

    ``batch`` follows docs/ARCHITECTURE.md (``image/{f}``, ``K``, ``inv_K``, optional ``labels/0``),
    ``outputs`` holds ``disp/{s}`` (and ``seg/{s}``), ``poses[f]`` maps target points into source f.
    Every scale's disparity is upsampled to full resolution before warping (Monodepth2's fix for
    texture-copy artefacts at low resolution); smoothness acts at each scale's own resolution. With
    ``loss.depth_norm`` the warp uses :func:`normalise_depth`, and so does ``maps["depth/s"]``, so
    that every later warp of the step (hint gate, pseudo-semantics) agrees with the poses.

    A light that moves with the camera (endoscopy) changes the brightness of the same surface from
    frame to frame: ``loss.brightness: affine`` maps each source (warped, and unwarped for the
    auto-mask) by a per-pair, per-image gain and offset before the comparison
    (:func:`pair_errors`); ``inverse_square`` relights each warped source for a point light at the
    camera from the predicted depth and pose (:func:`warp_inside`), ``inverse_square_affine`` does
    both; ``loss.light_profile: radial`` also relights for the beam and vignetting that move with the
    camera (``outputs["light/log_profile"]``); ``loss.specular_threshold`` leaves saturated highlights out; the
    photo term is then the mean over the pixels some pair could use. Both off: Monodepth2's loss.

    The whole objective runs in float32 even under mixed-precision autocast: in bfloat16 the
    back-projection would put pixel coordinates several pixels off and SSIM's variances (E[x^2] -
    mu^2) would cancel to noise.

    Returns (losses, maps). losses: ``loss`` (= photo + smooth + seg), ``photo``, ``smooth`` (already
    weighted), ``seg`` (weighted, only with a segmentation branch and labels), ``automask_frac``.
    maps: ``depth/{s}`` (full-res depth of every scale, with graph, for hint losses), ``warped/{f}``,
    ``reproj/0`` (B x 1 x H x W error of the prediction: min, or mean, over sources; +inf where
    the specular mask left every pair out),
    ``identity_reproj`` (the same for unwarped sources), ``automask/0`` -- all at scale 0, detached.
    """
    with torch.autocast(batch["image/0"].device.type, enabled=False):
        return _objective_fp32(batch, outputs, poses, cfg)


def _objective_fp32(batch: dict, outputs: dict, poses: dict[int, torch.Tensor], cfg) -> tuple[
        dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    model, lo = cfg.model, cfg.loss
    sources = list(cfg.data.frame_ids[1:])
    if not sources:
        raise ValueError("the self-supervised objective needs at least one source frame (data.frame_ids)")
    batch = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in batch.items()}
    outputs = {k: v.float() if torch.is_tensor(v) else v for k, v in outputs.items()}
    poses = {f: T.float() for f, T in poses.items()}
    target = batch["image/0"]
    size = tuple(target.shape[-2:])
    K, inv_K = batch["K"], batch["inv_K"]

    log_profile = outputs.get("light/log_profile") if lo.light_profile != "none" else None
    if lo.light_profile != "none" and log_profile is None:
        raise ValueError("loss.light_profile needs outputs['light/log_profile'] (semhint.models.light)")
    images = {f: batch[f"image/{f}"] for f in [0, *sources]}
    identity = _identity_errors(images, lo)

    maps: dict[str, torch.Tensor] = {}
    photo_terms, smooth_terms = [], []
    for s in model.scales:
        disp = outputs[f"disp/{s}"]
        _, depth = disp_to_depth(_upsample(disp, size), model.min_depth, model.max_depth)
        if lo.depth_norm:
            depth = normalise_depth(depth)
        photo, (warped, reproj, mask) = _photo_term(images, depth, poses, K, inv_K, identity, log_profile, lo)
        levels = [photo]
        for level in range(1, lo.image_pyramid + 1):
            small, small_depth, small_K, small_inv_K, small_profile = pyramid_level(
                images, depth, K, log_profile, 2**level)
            levels.append(_photo_term(small, small_depth, poses, small_K, small_inv_K, None, small_profile, lo)[0])
        photo_terms.append(torch.stack(levels).mean())
        colour = target if tuple(disp.shape[-2:]) == size else F.interpolate(target, size=disp.shape[-2:], mode="area")
        smooth_terms.append(lo.smoothness * smoothness_loss(disp, colour) / 2**s)
        maps[f"depth/{s}"] = depth
        if s == 0:
            maps.update({f"warped/{f}": w.detach() for f, w in warped.items()})
            maps["reproj/0"] = reproj.min(1, keepdim=True).values.detach()
            maps["automask/0"] = mask.detach()
            maps["identity_reproj"] = identity.min(1, keepdim=True).values.detach()

    losses = {"photo": torch.stack(photo_terms).mean(), "smooth": torch.stack(smooth_terms).mean()}
    losses["automask_frac"] = maps["automask/0"].mean()
    total = losses["photo"] + losses["smooth"]
    segments = planar_segments(batch, outputs, lo.planar_segments) if lo.planar_weight > 0 else None
    if segments is not None:
        losses["planar"] = lo.planar_weight * torch.stack([
            planar_loss(outputs[f"disp/{s}"], segments, lo.planar_classes) / 2**s for s in model.scales]).mean()
        total = total + losses["planar"]
    if "seg/0" in outputs and "labels/0" in batch:
        _check_label_ids(batch["labels/0"], outputs["seg/0"].shape[1], cfg.data.labels)
        seg = torch.stack([
            segmentation_loss(_upsample(outputs[f"seg/{s}"], size), batch["labels/0"], lo.seg_loss, lo.seg_loss_param)
            for s in model.seg_scales
        ]).mean()
        losses["seg"] = lo.seg_weight * seg
        total = total + losses["seg"]
    losses["loss"] = total
    return losses, maps
