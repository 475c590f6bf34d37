"""Training: the LightningModule (one self-supervised step), the data module, and ``fit``.

Nothing here is model-specific: networks come from ``semhint.models``, the objective from
``semhint.losses`` (and ``semhint.refine`` when a refinement switch is on), the data from
``semhint.data``. Lightning owns the loop so that seeds, checkpoints, exact resume, AMP, gradient
clipping, logging and DDP (devices / num_nodes / strategy from the config) come from one place.

A run folder (``cfg.trainer.out_dir``) holds ``config.yaml``, ``checkpoints/last.ckpt`` and the best
checkpoint by the validation metric, and ``logs/`` (TensorBoard and CSV). Checkpoints carry the
resolved config and the semhint version, so loading one never needs the YAML. The folder guards
itself (``semhint.core.runfolder``): one run at a time, nothing overwritten without ``overwrite``,
checkpoints replaced atomically (every epoch and every ``trainer.checkpoint_every_n_steps``), and
a resumed run appends to the metrics history.
"""

from __future__ import annotations

import csv
import math
import os
import random
import warnings
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.utils.data import DataLoader, default_collate

from semhint.core import geometry, runfolder
from semhint.core.checkpoints import checkpoint_metadata, read_checkpoint, save_weights
from semhint.core.config import Config, from_dict, load_config, save_config
from semhint.core.errors import ConfigError, InputError, SemhintWarning
from semhint.core.fileio import atomic_path
from semhint.core.pictures import colorize, colorize_labels, compose_panels
from semhint.data.build import build_dataset
from semhint.evaluation.metrics import METRIC_NAMES, iou_scores
from semhint.evaluation.protocols import evaluate_depth
from semhint.losses import self_supervised_objective
from semhint.models import build_depth_net, build_pose_net, parameter_report
from semhint.models.light import RadialLightProfile
from semhint.refine import RollVotes, check_config, refinement_losses


# ----------------------------------------------------------------------------------------------
# the step
# ----------------------------------------------------------------------------------------------
def predict_poses(pose_net: torch.nn.Module, batch: dict, frame_ids: list[int]) -> dict[int, torch.Tensor]:
    """Target->source pose for each source frame, feeding each pair to the pose net in time order.

    Feeding pairs in temporal order (and inverting for sources before the target) means the pose
    net always sees forward motion, the Monodepth2 convention METHOD.md follows.
    """
    target = batch["image_aug/0"]
    poses = {}
    for f in frame_ids[1:]:
        source = batch[f"image_aug/{f}"]
        pair = (source, target) if f < 0 else (target, source)
        axisangle, translation = pose_net(*pair)
        poses[f] = geometry.pose_from_axisangle(axisangle, translation, invert=f < 0)
    return poses


def given_poses(batch: dict, frame_ids: list[int]) -> dict[int, torch.Tensor] | None:
    """The dataset's own target->source motion of every source (``data.poses``), or None without it."""
    if not all(f"pose/{f}" in batch for f in frame_ids[1:]):
        return None
    return {f: batch[f"pose/{f}"] for f in frame_ids[1:]}


@contextmanager
def frozen_norm_stats(module: torch.nn.Module) -> Iterator[None]:
    """Batch-norm layers keep normalising with batch statistics (train mode) but leave their running
    statistics exactly as they were: momentum 0 makes the update ``(1 - 0) * running + 0 * batch``,
    and the batch counter is put back afterwards."""
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, count) in zip(norms, saved):
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)


def source_segmentation(depth_net: torch.nn.Module, images: torch.Tensor, scale: int = 0) -> dict[str, torch.Tensor]:
    """A source frame's segmentation outputs for the pseudo-semantic term (``{"seg/s": logits}``).

    ``scale`` 0 (the default): ``depth_net.segment`` at the training resolution, exactly the
    ``seg/s`` of a full forward. ``scale`` n > 0 (``refine.pseudo_seg_scale``, a cost switch that
    changes the numbers): the images area-downsampled by 2^n, the logits upsampled back
    (bilinear), about 4^n times cheaper; batch norm then normalises with the small images' batch
    statistics but leaves the running statistics alone (:func:`frozen_norm_stats`), so the
    evaluation-time statistics stay those of full-resolution images.
    """
    if scale <= 0:
        return depth_net.segment(images)
    h, w = images.shape[-2:]
    small = F.interpolate(images, size=(max(1, h >> scale), max(1, w >> scale)), mode="area")
    with frozen_norm_stats(depth_net):
        out = depth_net.segment(small)
    return {k: F.interpolate(v, size=(h, w), mode="bilinear", align_corners=False) for k, v in out.items()}


SATURATED_WARN = 0.9  # share of pixels at a depth limit past which training warns (_warn_if_saturated)


def saturated_fraction(disp: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Share of pixels whose sigmoid disparity is within ``eps`` of 0 or 1 (depth at a limit), detached."""
    d = disp.detach()
    return ((d < eps) | (d > 1 - eps)).float().mean()


def pose_warmup_outputs(outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Depth-net outputs for a pose warm-up step: each disparity map replaced by its per-image mean.

    During the warm-up the pose net alone learns, against a fronto-parallel plane at the depth
    net's current mean depth. Against a plane the best motion is the real one (forward motion
    expands the image about its centre), whereas the depth net's own initial map has arbitrary
    image-dependent structure that a sideways motion can fit better; and learning both from the
    start lets depth fit itself to the pose net's first, arbitrary motion, a solution the two then
    cannot leave (experiments/convergence.py). Keeping the mean keeps the scale continuous
    when the depth net joins in. The maps stay in the graph with a zero gradient (``+ 0 * v``):
    under DDP every parameter must take part in every step, and Adam leaves a parameter whose
    gradients have all been zero exactly where it was.
    """
    return {k: (v.detach().mean(dim=(1, 2, 3), keepdim=True).expand_as(v) if k.startswith("disp/") else v.detach())
            + 0 * v for k, v in outputs.items()}


def pose_warmup_config(cfg: Config) -> Config:
    """The config of a pose warm-up step: no auto-mask.

    Against a plane no motion explains every pixel, and the auto-mask (keep a pixel only where the
    warp beats the unwarped source) then rewards a motion that explains SOME pixels exactly: a
    sideways shift that fits one side of the road. Measured: pose net on a fixed plane, 135 steps,
    cosine to the true (forward) direction 0.99 without the mask, 0.16-0.6 with it.
    """
    return replace(cfg, loss=replace(cfg.loss, automask=False))


def pose_warmup_note(warmup_steps: int, total_steps: float) -> str | None:
    """A one-line warning when ``optim.pose_warmup_steps`` covers the whole run, else None.

    During the warm-up the depth net gets a zero gradient, so such a run ends with an untrained
    depth net that still writes checkpoints and metrics; a short test run (``optim.max_steps``)
    on a config with a warm-up is the usual way to get there.
    """
    if warmup_steps <= 0 or not math.isfinite(total_steps) or warmup_steps < total_steps:
        return None
    return (f"optim.pose_warmup_steps ({warmup_steps}) >= the run's {int(total_steps)} optimiser steps "
            "(optim.max_steps, or optim.epochs x batches): only the pose net trains and the depth net learns nothing; "
            f"lower optim.pose_warmup_steps (e.g. optim.pose_warmup_steps={int(total_steps) // 4}) or train longer")


def _detached_scalars(values: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {k: v.detach().float() for k, v in values.items() if torch.is_tensor(v) and v.numel() == 1}


def step_panels(batch: dict, outputs: dict, maps: dict, num_classes: int = 0) -> dict[str, np.ndarray]:
    """What one training step saw and made, for its first image: named uint8 H x W x 3 (or H x W) pictures.

    In pairs, each prediction or target beside what it is judged by: the input and the disparity;
    the hint gate (white: the hint trains the pixel, grey: the operators moved it but the gate
    refused it) and the depth hint, on the depth's own colour scale (inverse depth over the
    prediction's range); the noisy labels and the branch's segmentation; the auto-mask (white: the
    warp explained the pixel) and the pseudo labels (black: not kept). Panels whose maps the step
    did not make are left out: the refinement ones before ``refine.warmup_epochs``, the label ones
    without a segmentation branch. Only the first image is detached and copied to the host.
    """
    def first(x: torch.Tensor) -> np.ndarray:
        return x[0].detach().float().cpu().numpy()

    def labels(ids: torch.Tensor) -> np.ndarray:
        return colorize_labels(ids.detach().cpu().numpy(), classes)

    classes = num_classes or (outputs["seg/0"].shape[1] if "seg/0" in outputs else 0)
    image = (np.clip(first(batch["image/0"]).transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8)
    panels = {"input": image, "disparity": colorize(first(outputs["disp/0"])[0])}
    if "hint_gate/0" in maps:
        gate = first(maps["hint_gate/0"])[0] > 0
        moved = first(maps["hint_changed/0"])[0] > 0 if "hint_changed/0" in maps else gate
        panels["hint gate"] = np.where(gate, 255, np.where(moved, 96, 0)).astype(np.uint8)
    if "hint/0" in maps and "depth/0" in maps:
        inv_depth = 1.0 / np.maximum(first(maps["depth/0"])[0], 1e-6)
        lo, hi = float(inv_depth.min()), float(np.percentile(inv_depth, 95))  # colorize's default range
        panels["depth hint"] = colorize(1.0 / np.maximum(first(maps["hint/0"])[0], 1e-6), vmin=lo, vmax=hi)
    if classes and "labels/0" in batch:
        panels["noisy labels"] = labels(batch["labels/0"][0])
    if classes and "seg/0" in outputs:
        panels["segmentation"] = labels(outputs["seg/0"][0].argmax(0))
    if "automask/0" in maps:
        panels["automask"] = (first(maps["automask/0"])[0] * 255).astype(np.uint8)
    if classes and "pseudo_labels/0" in maps:
        panels["pseudo labels"] = labels(maps["pseudo_labels/0"][0])
    return panels


class TrainingDiverged(ConfigError):
    """A loss term or a weight became NaN or infinite: one line naming the step and the term.

    A ConfigError because the usual cause is a setting (the learning rate, a loss weight) and the
    command line reports it as one line; raised before the step's backward pass, so the weights
    and the last checkpoint stay as they were.
    """


def first_non_finite(losses: dict[str, Any]) -> tuple[str, float] | None:
    """The first non-finite scalar term (the total ``loss`` last, since a bad term explains it), or None.

    One stacked check, so a healthy step costs a single device-to-host sync.
    """
    scalars = _detached_scalars(losses)
    if not scalars:
        return None
    names = sorted(scalars, key=lambda k: k == "loss")
    values = torch.stack([scalars[k].reshape(()) for k in names])
    finite = torch.isfinite(values)
    if bool(finite.all()):
        return None
    i = int((~finite).nonzero()[0, 0])
    return names[i], float(values[i])


def _rng_state() -> dict[str, Any]:
    """Every random generator the loop draws from (shuffle, colour jitter), as plain tensors and numbers.

    Stored in checkpoints so that a resumed run draws what the uninterrupted run would have drawn;
    plain types, because checkpoints are read with ``weights_only=True``.
    """
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)),
                                                                        int(pos), int(has_gauss), float(gauss)],
                             "python": list(random.getstate())}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


RNG_KEY = "semhint_rng"
ROLL_VOTES_KEY = "semhint_ground_roll_votes"  # refine.ground_roll_votes: the votes a resumed run goes on from


class SemHintModule(L.LightningModule):
    """Depth (+ segmentation) net and pose net trained with the self-supervised objective."""

    def __init__(self, cfg: Config | dict):
        super().__init__()
        self.cfg = cfg if isinstance(cfg, Config) else from_dict(cfg, "checkpoint config")
        self.depth_net = build_depth_net(self.cfg.model)
        self.pose_net = build_pose_net(self.cfg.model)
        # with the motion given (data.poses) the pose net is kept (checkpoints keep one shape) but frozen
        # and left out of the optimiser: no gradient reaches it, and DDP must not wait for one
        self.pose_net.requires_grad_(not self.cfg.data.poses)
        # the light's beam and vignetting, learnt beside the networks (loss.light_profile); None when off
        self.light = RadialLightProfile() if self.cfg.loss.light_profile == "radial" else None
        self._val_sums: dict[str, torch.Tensor] = {}
        self._confusion: torch.Tensor | None = None
        self._compiled = None  # torch.compile(self.objective), built on the first step when trainer.compile
        self._saturation_warned = False
        # the road roll voted over recent images (refine.ground_roll_votes): kept across steps and checkpoints
        self.roll_votes = RollVotes(self.cfg.refine.ground_roll_votes) if self.cfg.refine.ground_roll_votes else None

    # -- the objective, shared by training_step and benchmarks/bench_step.py -------------------
    def objective(self, batch: dict) -> tuple[dict, dict, dict]:
        """One forward pass and every loss term: returns (losses, maps, depth outputs)."""
        cfg = self.cfg
        outputs = self.depth_net(batch["image_aug/0"])
        known = given_poses(batch, cfg.data.frame_ids)
        if cfg.data.poses and known is None:
            raise ValueError("data.poses is set but the batch has no pose/{f} for every source frame")
        poses = known if known is not None else predict_poses(self.pose_net, batch, cfg.data.frame_ids)
        if self.light is not None:
            outputs["light/log_profile"] = self.light(batch["inv_K"].float(), *batch["image/0"].shape[-2:])
        warming_up = self._trainer is not None and self.training and self.global_step < cfg.optim.pose_warmup_steps
        if warming_up and known is None:  # with given poses there is no pose net to warm up
            outputs = pose_warmup_outputs(outputs)
            losses, maps = self_supervised_objective(batch, outputs, poses, pose_warmup_config(cfg))
        else:
            losses, maps = self_supervised_objective(batch, outputs, poses, cfg)
        losses = dict(losses)
        if self.light is not None:
            a, b = self.light.ab().detach()
            losses.update({"light_a": a, "light_b": b})
        # the scale the pose net has settled on: depth is only known up to it, so a translation
        # stuck near zero (or collapsing) explains saturated or degenerate depth in the logs
        losses["pose_translation"] = torch.stack([T[:, :3, 3].norm(dim=1).mean() for T in poses.values()]).mean().detach()
        losses["depth_saturated"] = saturated_fraction(outputs["disp/0"])
        if cfg.refine.hint or cfg.refine.pseudo_seg:
            epoch = self.current_epoch if self._trainer is not None else 0
            source_outputs = {}
            if cfg.refine.pseudo_seg and epoch >= cfg.refine.warmup_epochs:
                # only the sources' detached class probabilities are used (warped into the target):
                # no graph, so no activation memory and no wasted backward bookkeeping; and only the
                # segmentation outputs, so the depth branch is not run for them
                with torch.no_grad():
                    source_outputs = {f: source_segmentation(self.depth_net, batch[f"image_aug/{f}"],
                                                             cfg.refine.pseudo_seg_scale)
                                      for f in cfg.data.frame_ids[1:]}
            ground_roll = self.roll_votes.consensus() if self.roll_votes is not None else None
            refine_losses, stats = refinement_losses(batch, outputs, maps, poses, source_outputs, cfg, epoch, ground_roll)
            losses["loss"] = losses["loss"] + refine_losses["loss"]
            losses.update({f"refine/{k}": v for k, v in refine_losses.items()})
            # gate acceptance, pseudo-label rate, ...: plain floats, logged as scalars like the losses
            device = losses["loss"].device
            losses.update({f"refine/{k}": torch.tensor(float(v), device=device) for k, v in stats.items()})
        return losses, maps, outputs

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        objective = self.objective
        if self.cfg.trainer.compile:
            if self._compiled is None:
                self._compiled = torch.compile(self.objective)
            objective = self._compiled
        losses, maps, outputs = objective(batch)
        self._stop_if_diverged(losses)
        if self.roll_votes is not None and "ground_roll/0" in maps:  # outside the (compilable) objective: state
            self.roll_votes.add(maps["ground_roll/0"])
        if self.global_step % max(1, self.cfg.trainer.log_every_n_steps) == 0:  # .item() syncs a GPU: not every step
            self._warn_if_saturated(float(losses["depth_saturated"]))
        bs = batch["image/0"].shape[0]
        scalars = _detached_scalars(losses)
        self.log("train/loss", scalars.pop("loss"), prog_bar=True, on_step=True, on_epoch=True, batch_size=bs,
                 sync_dist=True)
        self.log_dict({f"train/{k}": v for k, v in scalars.items()}, on_step=True, on_epoch=False, batch_size=bs)
        every = self.cfg.trainer.image_log_every_n_steps
        if every > 0 and self.global_step % every == 0:
            self._log_images(batch, outputs, maps)
        return losses["loss"]

    def _warn_if_saturated(self, fraction: float) -> None:
        """Say once when the depth net has run into its limits on most pixels, past the pose warm-up.

        A saturated sigmoid passes no gradient, so such a run does not come back: typically all
        depth at ``model.max_depth``, where the translation no longer moves anything and the
        pose net's rotation alone explains the frames (seen on the SCARED-like tissue world)."""
        if (fraction < SATURATED_WARN or self._saturation_warned or self._trainer is None
                or self.global_step < self.cfg.optim.pose_warmup_steps + 50):
            return
        self._saturation_warned = True
        warnings.warn(f"step {self.global_step}: depth is at model.min_depth or model.max_depth on "
                      f"{100 * fraction:.0f} % of pixels; a saturated depth net does not recover (try loss.depth_norm=true, "
                      "docs/METHOD.md 'Short runs and the pose net')", SemhintWarning, stacklevel=2)

    def _stop_if_diverged(self, losses: dict[str, Any]) -> None:
        """Raise TrainingDiverged before the backward pass when any loss term is NaN or infinite.

        Under DDP every rank must stop together (a rank left alone would wait for the others
        forever), so the verdict is reduced over ranks.
        """
        bad = first_non_finite(losses)
        if self._trainer is not None and self._trainer.world_size > 1:
            if not self._trainer.strategy.reduce_boolean_decision(bad is not None, all=False):
                return
        elif bad is None:
            return
        what = f"loss term '{bad[0]}' is {bad[1]}" if bad else "a loss term is not finite on another process"
        raise TrainingDiverged(f"training diverged at step {self.global_step}: {what} (lower optim.lr or the loss "
                               f"weights, or check the data); {_last_checkpoint_note(self.cfg)}")

    def _log_images(self, batch: dict, outputs: dict, maps: dict) -> None:
        """One labelled grid of the first image's panels to TensorBoard (rank 0 only; loggers are rank-aware)."""
        if not self.trainer.is_global_zero:
            return
        writers = [lg.experiment for lg in self.loggers if isinstance(lg, TensorBoardLogger)]
        if not writers:
            return
        panels = step_panels(batch, outputs, maps, self.cfg.model.num_classes)
        h, w = next(iter(panels.values())).shape[:2]
        grid = compose_panels(panels, columns=2 if w >= 2 * h else 4)
        for writer in writers:
            writer.add_image("images/panels", grid, self.global_step, dataformats="HWC")

    # -- validation: depth metrics against GT, mIoU against GT labels --------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_sums = {}
        self._confusion = None

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        outputs = self.depth_net(batch["image/0"])
        if "depth_gt" in batch:
            self._accumulate_depth(outputs["disp/0"], batch["depth_gt"])
        if "seg/0" in outputs and "gt_labels/0" in batch:
            self._accumulate_confusion(outputs["seg/0"], batch["gt_labels/0"])

    def _accumulate_depth(self, disp: torch.Tensor, depth_gt: torch.Tensor | list[torch.Tensor]) -> None:
        """Per-image errors with the protocol of cfg.eval (the same code path as `semhint evaluate`)."""
        e = self.cfg.eval
        scaled_disp, _ = geometry.disp_to_depth(disp.float(), self.cfg.model.min_depth, self.cfg.model.max_depth)
        for pred, gt in zip(scaled_disp[:, 0].cpu().numpy(), depth_gt):
            gt = gt[0].float().cpu().numpy()
            if not ((gt > e.min_depth) & (gt < e.max_depth)).any():
                continue  # a frame without measurements says nothing about the model
            result = evaluate_depth([pred], [gt], min_depth=e.min_depth, max_depth=e.max_depth, crop=e.crop,
                                    median_scaling=e.median_scaling, pred_is_disp=True)
            for name, value in result.metrics().items():
                self._add_sum(name, value)
            self._add_sum("count", 1.0)

    def _add_sum(self, name: str, value: float) -> None:
        self._val_sums[name] = self._val_sums.get(name, 0.0) + value

    def _accumulate_confusion(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        c = logits.shape[1]
        pred = logits.argmax(1).flatten()
        gt = labels.flatten()
        valid = gt < c
        idx = gt[valid] * c + pred[valid]
        conf = torch.bincount(idx, minlength=c * c).reshape(c, c).double()
        self._confusion = conf if self._confusion is None else self._confusion + conf

    def on_validation_epoch_end(self) -> None:
        """Sum per-image metrics and the confusion matrix over ranks, then log exact means."""
        names = ["count", *METRIC_NAMES]
        sums = torch.tensor([self._val_sums.get(n, 0.0) for n in names], dtype=torch.float64, device=self.device)
        sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        count = float(sums[0])
        if count > 0:
            metrics = {f"val/{n}": float(s) / count for n, s in zip(METRIC_NAMES, sums[1:].tolist())}
            # identical on every rank after the reduce: log everywhere so callbacks on all ranks see it
            self.log("val/abs_rel", metrics.pop("val/abs_rel"), prog_bar=True)
            self.log_dict(metrics)
        if self.depth_net_has_seg():
            c = self.cfg.model.num_classes
            conf = self._confusion if self._confusion is not None else torch.zeros(c, c, dtype=torch.float64)
            conf = self.trainer.strategy.reduce(conf.to(self.device), reduce_op="sum")
            if conf.sum() > 0:
                self.log("val/miou", iou_scores(conf.cpu().numpy())[1], prog_bar=True)

    def depth_net_has_seg(self) -> bool:
        return self.cfg.model.num_classes > 0

    def on_train_start(self) -> None:
        """Warn, once, when the pose warm-up covers the whole run: the depth net would get no gradient."""
        note = pose_warmup_note(self.cfg.optim.pose_warmup_steps, self.trainer.estimated_stepping_batches)
        if note and self.trainer.is_global_zero and self.global_step < self.cfg.optim.pose_warmup_steps:
            warnings.warn(note, SemhintWarning, stacklevel=2)

    # -- optimisation and checkpoint metadata --------------------------------------------------
    def configure_optimizers(self):
        o = self.cfg.optim
        params = list(self.depth_net.parameters())
        params += [] if self.cfg.data.poses else list(self.pose_net.parameters())
        params += list(self.light.parameters()) if self.light is not None else []
        optimizer = torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=o.milestones, gamma=o.gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def __getstate__(self) -> dict[str, Any]:
        """Never pickle the compiled objective (spawned DDP workers, deepcopy): it is rebuilt lazily."""
        state = super().__getstate__()
        state["_compiled"] = None
        return state

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Add config, version and random state; refuse to write weights that are not finite.

        A NaN weight in last.ckpt would destroy the run's last good state, so the save stops
        with TrainingDiverged before anything is written.
        """
        for name, value in checkpoint["state_dict"].items():
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise TrainingDiverged(f"training diverged at step {self.global_step}: weight '{name}' is not finite "
                                       f"(lower optim.lr); {_last_checkpoint_note(self.cfg)}")
        checkpoint.update(checkpoint_metadata(self.cfg))
        checkpoint[RNG_KEY] = _rng_state()
        if self.roll_votes is not None:
            checkpoint[ROLL_VOTES_KEY] = self.roll_votes.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Resume the random streams too (one process only: DDP ranks keep their own seeded streams), and the road-roll votes."""
        if RNG_KEY in checkpoint and self._trainer is not None and self.trainer.world_size == 1:
            _set_rng_state(checkpoint[RNG_KEY])
        if self.roll_votes is not None and ROLL_VOTES_KEY in checkpoint:  # the resumed run votes on from there
            self.roll_votes.load_state_dict(checkpoint[ROLL_VOTES_KEY])


def _last_checkpoint_note(cfg: Config) -> str:
    last = Path(cfg.trainer.out_dir) / "checkpoints" / "last.ckpt"
    if last.is_file():
        return f"the last good checkpoint, {last}, is kept as it was"
    return "no checkpoint had been written yet"


def save_model_checkpoint(module: SemHintModule, path: str | Path) -> Path:
    """Weights + config + version only (no optimizer state): a small file to share a trained model.

    It has the layout of a Lightning checkpoint's model part, so every loader reads both.
    """
    return save_weights(module.state_dict(), module.cfg, path)


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------
def collate_snippets(samples: list[dict]) -> dict:
    """Default collation, except ground-truth depth of different sizes stays a list.

    KITTI dates differ in image size (1242x375, 1224x370, ...), so an Eigen validation batch can
    hold LiDAR maps that cannot be stacked; everything at network resolution stacks as usual.
    """
    gts = [s.pop("depth_gt") for s in samples if "depth_gt" in s]
    batch = default_collate(samples)
    if gts:
        same = all(g.shape == gts[0].shape for g in gts)
        batch["depth_gt"] = torch.stack(gts) if same else gts
    return batch


class DataModule(L.LightningDataModule):
    """Train / val loaders over ``semhint.data.build_dataset``; Lightning shards them under DDP."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.train_set = None
        self.val_set = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = build_dataset(self.cfg.data, "train", train_gt="oracle" in self.cfg.refine.hint_operators,
                                           num_classes=self.cfg.model.num_classes)
        if self.val_set is None and self.cfg.data.val_split:
            self.val_set = build_dataset(self.cfg.data, "val", num_classes=self.cfg.model.num_classes)

    def _loader(self, dataset, shuffle: bool) -> DataLoader:
        workers = self.cfg.data.num_workers
        return DataLoader(dataset, batch_size=self.cfg.optim.batch_size, shuffle=shuffle, num_workers=workers,
                          collate_fn=collate_snippets,
                          persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(),
                          drop_last=shuffle and len(dataset) >= 2 * self.cfg.optim.batch_size)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self):
        return self._loader(self.val_set, shuffle=False) if self.val_set is not None else []


# ----------------------------------------------------------------------------------------------
# fit
# ----------------------------------------------------------------------------------------------
class _RunFolder(Callback):
    """Writes the resolved config into the run folder, from global rank 0 only."""

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            save_config(self.cfg, Path(self.cfg.trainer.out_dir) / "config.yaml")
            _log_parameter_counts(trainer, pl_module)


def _log_parameter_counts(trainer: L.Trainer, module: SemHintModule) -> None:
    """Print the parameter counts (shared decoder included: a studied variable) and store them as
    hyperparameters of the run (TensorBoard hparams, logs/csv/hparams.yaml)."""
    report = parameter_report(module.depth_net)
    print("parameters: " + ", ".join(f"{k} {v:,}" for k, v in report.items()))
    for logger in trainer.loggers:
        logger.log_hyperparams({f"params/{k}": v for k, v in report.items()})


class _AppendingCSVWriter(ExperimentWriter):
    """Lightning's CSV writer, except that an existing metrics.csv is continued, never deleted.

    Lightning deletes metrics.csv when its folder is not empty, so every resume lost the history
    (176 -> 26 lines after a kill and ``--resume auto``). A new run starts in an empty folder
    (runfolder.claim) and a resumed one has had its history cut back to the checkpoint's step
    (runfolder.trim_metrics), so appending is always right. Rows are written as they are logged,
    and a header rewrite (a metric logged for the first time) replaces the file atomically: a kill
    at any moment keeps the history up to that moment.
    """

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as fh:
                header = next(csv.reader(fh), [])
            self.metrics_keys = list(header)

    def _check_log_dir_exists(self) -> None:
        """Keep what is there (Lightning's version deletes metrics.csv)."""

    def log_metrics(self, metrics_dict: dict[str, float], step: int | None = None) -> None:
        """Record and write at once: rows buffered in memory (Lightning flushes every 100 steps) die
        with a killed process, and the resumed run would never log those steps again."""
        super().log_metrics(metrics_dict, step)
        self.save()

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with open(self.metrics_file_path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        with atomic_path(self.metrics_file_path) as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)


class _AppendingCSVLogger(CSVLogger):
    """CSVLogger writing through :class:`_AppendingCSVWriter`."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingCSVWriter(log_dir=self.log_dir)
        return self._experiment


class _AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file beside the target, synced, then renamed over it.

    Lightning truncates the target and writes into it, so a kill mid-save left a corrupt
    last.ckpt; here the old file stays whole until the new one is complete, and a temporary file
    left by a kill is removed when the next run starts (runfolder.remove_temp_files).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        with atomic_path(path, suffix=".ckpt") as tmp, open(tmp, "wb") as fh:
            torch.save(checkpoint, fh)
            fh.flush()
            os.fsync(fh.fileno())


class _StepCheckpoint(Callback):
    """last.ckpt every ``trainer.checkpoint_every_n_steps`` optimiser steps, between the epoch-end saves.

    Skipped on an epoch's last batch (the epoch-end save follows at once, with the validation
    results and the finished-epoch state) and at max_steps (likewise). Called on every rank, as
    Lightning's own saves are; only global rank 0 writes.
    """

    def __init__(self, cfg: Config):
        self.every = cfg.trainer.checkpoint_every_n_steps
        self.path = Path(cfg.trainer.out_dir) / "checkpoints" / "last.ckpt"

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if self.every <= 0 or step == 0 or step % self.every:
            return
        if batch_idx + 1 >= trainer.num_training_batches or step == trainer.max_steps:
            return
        trainer.save_checkpoint(self.path)


def _has_validation_metric(cfg: Config) -> bool:
    return bool(cfg.data.val_split) and (bool(cfg.data.gt_depth) or cfg.model.num_classes > 0 and bool(cfg.data.gt_labels))


def _checkpoint_callbacks(cfg: Config) -> list[ModelCheckpoint]:
    """last.ckpt at the end of every training epoch, plus the best by AbsRel (or mIoU, or training loss).

    Two callbacks, because ModelCheckpoint(save_last=True) rewrites last.ckpt only when it saves a
    top-k checkpoint, which leaves a stale "last" once the monitored metric stops improving.
    """
    ckpt_dir = Path(cfg.trainer.out_dir) / "checkpoints"
    if _has_validation_metric(cfg):
        monitor, mode = ("val/abs_rel", "min") if cfg.data.gt_depth else ("val/miou", "max")
    else:
        monitor, mode = "train/loss_epoch", "min"
    best = ModelCheckpoint(dirpath=ckpt_dir, filename="best-{epoch:03d}-{step}", monitor=monitor, mode=mode,
                           save_top_k=1, auto_insert_metric_name=False)
    last = ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1,
                           save_on_train_epoch_end=True, enable_version_counter=False)
    return [best, last]


def _resolve_resume(cfg: Config, resume: str | None) -> tuple[str, int] | None:
    """The checkpoint to resume from and its step; a missing, corrupt or foreign file is one InputError."""
    if resume is None:
        return None
    path = Path(cfg.trainer.out_dir) / "checkpoints" / "last.ckpt" if resume == "auto" else Path(resume)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint to resume from not found")
    checkpoint = read_checkpoint(path)
    if not checkpoint.resumable:
        raise InputError(f"{path}: a model-only checkpoint (weights, no optimiser state) cannot be resumed from; "
                         "resume from the run's checkpoints/last.ckpt")
    return str(path), checkpoint.global_step


@contextmanager
def guarded_run_folder(cfg: Config, is_global_zero: bool, resume_step: int | None, overwrite: bool) -> Iterator[None]:
    """Hold the run folder's lock for the whole run and make the folder ready (global rank 0 only).

    DDP ranks share the folder and rank 0 alone writes to it, so the other ranks take no lock
    (they would find it held by rank 0) and leave the folder to rank 0.
    """
    if not is_global_zero:
        yield
        return
    out = Path(cfg.trainer.out_dir)
    with runfolder.RunFolderLock(out):
        aside = runfolder.claim(out, resume=resume_step is not None, overwrite=overwrite)
        if aside is not None:
            print(f"--overwrite: the previous contents of {out} are now in {aside}")
        runfolder.remove_temp_files(out)
        if resume_step is not None:
            runfolder.trim_metrics(out, resume_step)
        yield


def build_trainer(cfg: Config, extra_callbacks: list[Callback] | None = None) -> L.Trainer:
    """A Lightning Trainer with every setting taken from ``cfg.trainer`` / ``cfg.optim``."""
    t, o = cfg.trainer, cfg.optim
    if t.precision == "16-mixed" and t.accelerator == "cpu":
        raise ConfigError("trainer.precision: 16-mixed needs a GPU; use bf16-mixed on CPU")
    out = Path(t.out_dir)
    loggers = [TensorBoardLogger(save_dir=str(out), name="logs", version="tensorboard", default_hp_metric=False),
               _AppendingCSVLogger(save_dir=str(out), name="logs", version="csv")]
    callbacks = [*_checkpoint_callbacks(cfg), _StepCheckpoint(cfg), LearningRateMonitor(logging_interval="step"),
                 _RunFolder(cfg)]
    return L.Trainer(
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy,
        precision=t.precision, max_epochs=o.epochs, max_steps=o.max_steps,
        max_time={"seconds": t.max_minutes * 60} if t.max_minutes > 0 else None,
        gradient_clip_val=o.grad_clip if o.grad_clip > 0 else None,
        log_every_n_steps=t.log_every_n_steps, check_val_every_n_epoch=t.val_every_n_epochs,
        limit_train_batches=t.limit_train_batches, limit_val_batches=t.limit_val_batches,
        num_sanity_val_steps=0, logger=loggers, callbacks=callbacks + list(extra_callbacks or []),
        default_root_dir=str(out), deterministic=False, enable_model_summary=False,
        enable_progress_bar=t.progress_bar, plugins=[_AtomicCheckpointIO()],
    )


def load_training_config(source: str | Path, overrides: list[str] | None = None) -> Config:
    """A config (shipped name or YAML path, plus dotted overrides) checked against everything training
    needs, the hint-operator registry included, so that a bad key fails before any work starts."""
    return check_config(load_config(source, overrides), str(source))


def fit(cfg: Config, resume: str | None = None, extra_callbacks: list[Callback] | None = None,
        overwrite: bool = False) -> Path:
    """Train ``cfg``; ``resume`` = a checkpoint path or "auto" (the run's last.ckpt). Returns the run folder.

    A run folder that already holds something is refused unless the run resumes, or ``overwrite``
    moves the old contents aside (``<out_dir>.old-<UTC time>``); a folder another run is writing
    to is refused (see :func:`guarded_run_folder`).
    """
    check_config(cfg)
    runfolder.check_modes(cfg.trainer.out_dir, resume is not None, overwrite)
    if cfg.trainer.num_threads > 0:
        torch.set_num_threads(cfg.trainer.num_threads)
    resumed = _resolve_resume(cfg, resume)
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    module = SemHintModule(cfg)
    data = DataModule(cfg)
    trainer = build_trainer(cfg, extra_callbacks)
    with guarded_run_folder(cfg, trainer.is_global_zero, resumed[1] if resumed else None, overwrite):
        trainer.fit(module, datamodule=data, ckpt_path=resumed[0] if resumed else None)
    out = Path(cfg.trainer.out_dir)
    if trainer.is_global_zero:
        print(f"run folder: {out}  (last checkpoint: {out / 'checkpoints' / 'last.ckpt'})")
    return out
