"""The refinement terms of one training step (METHOD.md 'Total loss'): the hint loss and the
pseudo-semantic loss, with the statistics the logs show (gate acceptance, pseudo-label rate, ...).

This is the glue between the training step and the operators: it reads the whole config; the
operators below it take explicit arguments.
"""

from __future__ import annotations

import torch

from semhint.core.config import Config
from semhint.core.conventions import IGNORE_INDEX
from semhint.losses import cross_entropy, hint_loss
from semhint.refine.hints import accepted_pixels, camera_translation, hint_gt_stats, hint_segments, propose_hint
from semhint.refine.pseudo_semantics import fuse_probabilities, select_pseudo_labels, snap_borders, warp_probabilities
from semhint.refine.surfaces import ground_rolls, travel_direction


def hint_term(batch: dict, outputs: dict, maps: dict, poses: dict, cfg: Config, ground_roll: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, dict[str, float]]:
    """The hint loss of one step and its statistics (acceptance, and hint quality where GT exists).

    Adds to ``maps`` (no graph, for the logs): ``hint/0`` (B x 1 x H x W pseudo-depth, in the units
    of ``depth/0``), ``hint_changed/0`` (bool: pixels the operators moved) and ``hint_gate/0``
    (bool: pixels the hint trains); with ``refine.ground_roll_votes``, ``ground_roll/0`` (B: each
    image's own road roll in the unflipped camera, NaN where it has none), the votes the training step
    keeps. ``ground_roll``: the voted roll B's road planes take (None: each image's own).
    """
    with torch.no_grad():  # float32 throughout: log/exp and the surface solve need it under AMP
        depth = maps["depth/0"].detach().float()
        segments = hint_segments(outputs, batch, cfg.refine.hint_segments)
        mirror = _mirror_signs(batch, depth)
        hint = propose_hint(depth, segments, batch, poses, cfg.refine, cfg.model.min_depth, cfg.model.max_depth,
                            cfg.loss.ssim_weight, brightness=cfg.loss.brightness,
                            specular_threshold=cfg.loss.specular_threshold,
                            log_profile=outputs.get("light/log_profile"),
                            ground_roll=None if ground_roll is None else ground_roll.to(depth) * mirror)
        gate = accepted_pixels(hint, maps["reproj/0"].detach(), maps.get("automask/0"), segments, cfg.refine)
        if cfg.refine.ground_roll_votes:
            maps["ground_roll/0"] = mirror * ground_rolls(depth, segments, batch["K"].float(), cfg.refine.stuff_classes,
                                                          travel_direction(camera_translation(poses), depth),
                                                          cfg.refine.surface_inlier)
    # for the TensorBoard panels: references to tensors made under no_grad, nothing more is computed
    maps.update({"hint/0": hint.depth, "hint_changed/0": hint.changed, "hint_gate/0": gate})
    # maps["depth/s"] is every scale's depth upsampled to full resolution, still in the graph
    depths = [maps[f"depth/{s}"] for s in cfg.model.scales]
    loss = torch.stack([hint_loss(d, hint.depth, gate) for d in depths]).mean()
    n_changed = hint.changed.float().sum().item()
    stats = {"hint_accept_rate": gate.float().mean().item(),  # fraction of all pixels the hint trains
             "hint_changed_rate": n_changed / hint.changed.numel(),  # fraction the operators changed
             "hint_accept_of_changed": gate.float().sum().item() / max(1.0, n_changed)}
    if ground_roll is not None:  # the roll the road planes took this step, in degrees
        stats["ground_roll_deg"] = float(torch.rad2deg(ground_roll))
    if isinstance(batch.get("depth_gt"), torch.Tensor):  # a list when frame sizes differ (KITTI): skipped
        stats.update(hint_gt_stats(depth, hint.depth, gate, batch["depth_gt"]))
    return loss, stats


def _mirror_signs(batch: dict, like: torch.Tensor) -> torch.Tensor:
    """-1 for images the loader flipped, +1 for the others (B): a flip mirrors the camera, and a roll
    measured in it changes sign, so votes and the voted roll are taken back to the unflipped camera."""
    flipped = batch.get("flipped")
    if flipped is None:
        return torch.ones(like.shape[0], dtype=like.dtype, device=like.device)
    return 1.0 - 2.0 * flipped.to(device=like.device, dtype=like.dtype).reshape(-1)


def pseudo_seg_term(batch: dict, outputs: dict, maps: dict, poses: dict, source_outputs: dict, cfg: Config
                     ) -> tuple[torch.Tensor, dict[str, float]]:
    """The pseudo-semantic loss of one step and its statistics; adds ``pseudo_labels/0`` (int64
    B x H x W, 255 = not kept; no graph) to ``maps`` for the logs."""
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
    maps["pseudo_labels/0"] = pseudo  # for the TensorBoard panels
    kept = pseudo != IGNORE_INDEX
    loss = cross_entropy(logits, pseudo, IGNORE_INDEX)  # an exact zero (with graph) when all are ignored
    stats = {"pseudo_label_rate": kept.float().mean().item(), "pseudo_sources": float(len(warped))}
    both = kept & (noisy != IGNORE_INDEX) if noisy is not None else None
    if both is not None and both.any():  # left out (not NaN) when undefined, so step averages stay finite
        stats["pseudo_label_agreement"] = (pseudo == noisy)[both].float().mean().item()
    gt = batch.get("gt_labels/0")
    if gt is not None:  # does the refinement denoise? accuracy of pseudo vs noisy labels against ground truth
        for name, lab in (("pseudo", pseudo), ("noisy", noisy)):
            sel = (lab != IGNORE_INDEX) & (gt != IGNORE_INDEX) if lab is not None else None
            if sel is not None and sel.any():
                stats[f"{name}_label_gt_accuracy"] = (lab == gt)[sel].float().mean().item()
    return loss, stats


def refinement_losses(batch: dict, outputs: dict, maps: dict, poses: dict, source_outputs: dict, cfg: Config, epoch: int,
                      ground_roll: torch.Tensor | None = None) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Cross-task refinement terms of the per-step objective (METHOD.md 'Total loss').

    batch: the training batch (ARCHITECTURE.md); outputs: the depth net's dict for the target
    ("disp/s", "seg/s"); maps: from losses.self_supervised_objective ("depth/s": every scale's
    depth at full resolution, in the graph; "reproj/0": min reprojection error of the prediction;
    "automask/0"); poses: {f: T
    target->source}; source_outputs: {f: depth-net outputs of source frame f} (may be empty when
    pseudo_seg is off). Returns ({"loss", "hint", "pseudo_seg"}, stats) where loss =
    hint_weight * hint + pseudo_seg_weight * pseudo_seg, all zero before refine.warmup_epochs.
    The terms that run add their detached maps to ``maps`` (:func:`hint_term`, :func:`pseudo_seg_term`).
    ground_roll: the road roll voted over recent images (``refine.ground_roll_votes``), for the hint.
    """
    r = cfg.refine
    ref = outputs["disp/0"]
    zero = ref.sum() * 0.0
    terms = {"hint": zero, "pseudo_seg": zero}
    stats: dict[str, float] = {}
    if epoch >= r.warmup_epochs:
        if r.hint:
            terms["hint"], s = hint_term(batch, outputs, maps, poses, cfg, ground_roll)
            stats.update(s)
        if r.pseudo_seg:
            terms["pseudo_seg"], s = pseudo_seg_term(batch, outputs, maps, poses, source_outputs, cfg)
            stats.update(s)
    terms["loss"] = r.hint_weight * terms["hint"] + r.pseudo_seg_weight * terms["pseudo_seg"]
    return terms, stats
