"""The pseudo-depth of one step: operators applied to the detached depth, the trust region that bounds
it, the Depth Hints gate that decides where it may teach, and its quality where ground truth exists.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable

import torch
import torch.nn.functional as F

from semhint.core import geometry
from semhint.core.config import RefineConfig
from semhint.core.conventions import IGNORE_INDEX
from semhint.losses import min_reprojection, pair_errors, photometric_error, residual_brightness, warp_inside
from semhint.refine.common import EPS, as_labels
from semhint.refine.operators import HintInputs, apply_operators


def camera_translation(poses: dict[int, torch.Tensor]) -> torch.Tensor | None:
    """The camera's translation to the neighbouring frame farthest away, forward in time (B x 3, target camera).

    ``poses[f]`` maps target-camera points into source frame f (X_f = R X + t, the training
    step's convention), so the source camera sits at c_f = -R^T t in target coordinates; frames
    before the target (f < 0) are flipped, so that the result points the way the car drives. Per
    image the frame with the largest baseline (the best-measured direction). None without poses.
    """
    if not poses:
        return None
    frames = sorted(poses)
    T = torch.stack([poses[f].detach().float() for f in frames])  # F x B x 4 x 4
    centre = -(T[..., :3, :3].transpose(-1, -2) @ T[..., :3, 3:])[..., 0]  # F x B x 3
    forward = centre * torch.tensor([1.0 if f > 0 else -1.0 for f in frames], device=centre.device).view(-1, 1, 1)
    farthest = centre.norm(dim=-1).argmax(0)  # B
    return forward[farthest, torch.arange(forward.shape[1], device=forward.device)]


def make_depth_hint(depth: torch.Tensor, seg: torch.Tensor, image: torch.Tensor, K: torch.Tensor, refine_cfg: RefineConfig,
                    generator: torch.Generator | None = None,
                    depth_gt: torch.Tensor | list[torch.Tensor] | None = None,
                    translation: torch.Tensor | None = None, ground_roll: torch.Tensor | None = None) -> torch.Tensor:
    """The pseudo-depth label: ``refine_cfg.hint_operators`` applied in order to the detached depth.

    ``seg`` is the segmentation prediction (logits B x C x H x W) or labels (B x H x W);
    ``translation`` the camera's motion (B x 3, :func:`camera_translation`), which operators D and E
    take the direction of travel from (without it E gives no hint); ``ground_roll`` the video's voted
    road roll (:class:`RollVotes`), which B's planes through the direction of travel then take. Pixels no
    operator changes keep the predicted depth (refinement_losses leaves those out of the loss).
    Because the hint is rebuilt from the current depth at every step, any bias of the operator on
    the *true* depth compounds like repeated filtering. Log-depth is not affine on a plane seen in
    perspective (a road: log z = c - log(y - y_horizon), convex), so log-domain smoothing drifts
    the far road further away; inverse depth is affine on every plane, which makes planes a fixed
    point (experiments/hint_drift.py measures both).
    """
    inputs = HintInputs(labels=as_labels(seg.detach()), image=image.detach(), K=K, generator=generator,
                        depth_gt=depth_gt, translation=None if translation is None else translation.detach(),
                        ground_roll=ground_roll)
    if refine_cfg.hint_scale > 0:
        return coarse_hint(refine_cfg.hint_operators, depth.detach(), inputs, refine_cfg, refine_cfg.hint_scale)
    return apply_operators(refine_cfg.hint_operators, depth.detach(), inputs, refine_cfg)


def coarse_hint(names: list[str], depth: torch.Tensor, inputs: HintInputs, refine_cfg: RefineConfig, scale: int
                ) -> torch.Tensor:
    """The operators ``names`` run at 1 / 2^scale of the depth's resolution, the hint brought back to it
    (``refine.hint_scale``: a cost switch, about 4^scale times less operator work, that changes the hint).

    Depth and image are area-downsampled, the labels subsampled (nearest), the intrinsics resized
    with them. Back at full resolution a pixel takes the coarse hint (bilinear in inverse depth,
    which is affine on every plane) where its coarse pixel was moved by the operators, and keeps
    the depth where it was not, so the pixels no operator touches stay unchanged and out of the loss.
    """
    h, w = depth.shape[-2:]
    size = (max(1, h >> scale), max(1, w >> scale))
    depth_c = F.interpolate(depth, size=size, mode="area")
    labels_c = F.interpolate(inputs.labels[:, None].float(), size=size, mode="nearest")[:, 0].long()
    coarse = replace(inputs, labels=labels_c, image=F.interpolate(inputs.image, size=size, mode="area"),
                     K=geometry.resize_intrinsics(inputs.K, (h, w), size))
    hint_c = apply_operators(names, depth_c, coarse, refine_cfg)
    moved = F.interpolate((hint_c != depth_c).to(depth.dtype), size=(h, w), mode="nearest") > 0
    inv = F.interpolate(1.0 / hint_c.clamp_min(EPS), size=(h, w), mode="bilinear", align_corners=False)
    return torch.where(moved, 1.0 / inv.clamp_min(EPS), depth)


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


def reprojection_error(depth: torch.Tensor, batch: dict, poses: dict, ssim_weight: float = 0.85, *,
                       brightness: str = "none", specular_threshold: float = 0.0,
                       log_profile: torch.Tensor | None = None) -> torch.Tensor:
    """Per-pixel minimum photometric error over source frames of the target warped with ``depth``.

    Uses the same error and minimum as the training objective (semhint.losses), with the same
    brightness model and specular mask (``loss.brightness``, ``loss.specular_threshold``), so that
    the hint and the prediction are judged by one rule (a specular pixel: +inf for both, so the
    gate refuses the hint there).
    """
    target = batch["image/0"]
    K, inv_K = batch["K"], batch.get("inv_K")
    if brightness == "none" and specular_threshold <= 0 and log_profile is None:
        errors = [photometric_error(geometry.warp(batch[f"image/{f}"], depth, T.detach(), K, inv_K), target, ssim_weight)
                  for f, T in sorted(poses.items())]
        per_pixel, _ = min_reprojection(torch.cat(errors, 1), None, automask=False)
        return per_pixel
    relight = brightness.startswith("inverse_square")
    profile = None if log_profile is None else log_profile.detach()
    both = [warp_inside(batch[f"image/{f}"], depth, T.detach(), K, inv_K, relight, profile)
            for f, T in sorted(poses.items())]
    errors = pair_errors([w for w, _ in both], target, ssim_weight, residual_brightness(brightness), specular_threshold,
                         inside=[ok for _, ok in both])
    per_pixel, _ = min_reprojection(errors, None, automask=False)
    return per_pixel


def hint_segments(outputs: dict, batch: dict, source: str) -> torch.Tensor:
    """The segmentation the hint operators follow: the branch's logits, or the noisy labels.

    "labels": the noisy label map of the target frame, with the branch's own argmax where a label
    is ignored (255). Early in training the branch is still worse than the labels it learns from
    (docs/RESULTS.md: branch mIoU 0.35 vs labels 0.42 after 250 steps), so hints from the labels
    follow better segments; "prediction" is the paper's reading (refine the current predictions).
    """
    predicted = as_labels(outputs["seg/0"].detach())
    if source == "prediction" or "labels/0" not in batch:
        return predicted
    labels = batch["labels/0"].to(predicted)
    if labels.shape[-2:] != predicted.shape[-2:]:
        raise ValueError(f"labels/0 is {tuple(labels.shape[-2:])}, the prediction {tuple(predicted.shape[-2:])}")
    return torch.where(labels == IGNORE_INDEX, predicted, labels)


def hint_class_mask(segments: torch.Tensor, classes: Iterable[int]) -> torch.Tensor:
    """Pixels whose segment is one of ``classes`` (B,1,H,W bool); every pixel when ``classes`` is empty.

    The hint is a cure for textureless objects (car panels), where photometry has no gradient; on
    a well-textured plane seen in perspective (the road) photometry already finds the depth and
    a smoothing hint only adds its own bias (docs/RESULTS.md: the full method's car gain comes with
    a road loss). Restricting the hint to the classes it helps keeps one without the other.
    """
    labels = as_labels(segments).unsqueeze(1)
    classes = [int(c) for c in classes]
    if not classes:
        return torch.ones_like(labels, dtype=torch.bool)
    return torch.isin(labels, torch.tensor(classes, device=labels.device, dtype=labels.dtype))


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
        scale = gt[b][v].median() / depth[b][v].median().clamp_min(EPS)
        pred_err.append(((depth[b][sb] * scale - gt[b][sb]).abs() / gt[b][sb]))
        hint_err.append(((hint[b][sb] * scale - gt[b][sb]).abs() / gt[b][sb]))
    return {"hint_gt_absrel": torch.cat(hint_err).mean().item(), "pred_gt_absrel": torch.cat(pred_err).mean().item()}


@dataclass
class GatedHint:
    """One step's pseudo-depth and where it may teach: what the training step and the hint-quality
    experiments share, so both judge a hint by the same rule."""

    depth: torch.Tensor  # B x 1 x H x W pseudo-depth (trust region applied)
    changed: torch.Tensor  # bool: pixels the operators moved (a hint equal to the prediction says nothing)
    error: torch.Tensor | None  # its reprojection error (None when the gate is off: not needed)


def propose_hint(depth: torch.Tensor, segments: torch.Tensor, batch: dict, poses: dict, refine_cfg: RefineConfig,
                 min_depth: float, max_depth: float, ssim_weight: float = 0.85,
                 generator: torch.Generator | None = None, *, brightness: str = "none",
                 specular_threshold: float = 0.0, log_profile: torch.Tensor | None = None,
                 ground_roll: torch.Tensor | None = None) -> GatedHint:
    """The operators' pseudo-depth for a batch, bounded by the trust region, with its reprojection error.

    ``poses``: {f: target->source pose} as the training step predicts them; they give the
    operators the camera's translation (:func:`camera_translation`) and the gate its warps.
    ``brightness``, ``specular_threshold`` and ``log_profile``: the training objective's photometric model
    (``loss.*``), so the gate's error is the one the prediction's ``reproj/0`` was measured with.
    ``ground_roll``: the video's voted road roll (:class:`RollVotes`), None to fit each image's own.
    """
    hint = make_depth_hint(depth, segments, batch["image/0"].float(), batch["K"].float(), refine_cfg,
                           generator=generator, depth_gt=batch.get("depth_gt"), translation=camera_translation(poses),
                           ground_roll=ground_roll)
    hint = trust_region(hint, depth, refine_cfg.hint_max_ratio, min_depth, max_depth)
    error = (reprojection_error(hint, batch, poses, ssim_weight, brightness=brightness,
                                specular_threshold=specular_threshold, log_profile=log_profile)
             if refine_cfg.hint_gate else None)
    # a hint equal to the prediction carries no information: it would only win the gate by rounding
    # noise and dilute the mean, so such pixels are left out
    return GatedHint(hint, (hint - depth).abs() > 1e-3 * depth, error)


def accepted_pixels(hint: GatedHint, pred_error: torch.Tensor, automask: torch.Tensor | None, segments: torch.Tensor,
                    refine_cfg: RefineConfig) -> torch.Tensor:
    """Pixels the hint trains: changed, of a hinted class, and (with the gate) reprojecting better."""
    if refine_cfg.hint_gate:
        gate = hint_gate(hint.error, pred_error, automask, refine_cfg.hint_gate_margin, refine_cfg.hint_on_masked)
        if refine_cfg.hint_ungated_classes:
            gate = gate | hint_class_mask(segments, refine_cfg.hint_ungated_classes)
    else:
        gate = torch.ones_like(hint.changed)
    return gate & hint.changed & hint_class_mask(segments, refine_cfg.hint_classes)
