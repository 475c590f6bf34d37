"""Are the semantic hints better than the depth they replace? Measured on a TRAINED model's test depth.

For a trained run and a rendered world, this predicts depth and pose on the test snippets, makes
each operator set's hint exactly as training does (``refine.propose_hint``: operators, trust
region) from the segments of the ground-truth labels, of a noisy label folder and (for a run with
a segmentation branch) of the branch's own prediction, and compares, on the pixels the operators
change and on those the Depth Hints gate then accepts (``refine.accepted_pixels``), the AbsRel of
the prediction and of the hint against exact depth. An operator is only worth training on where
its hint beats the prediction. The diagnostic operator "oracle" (scaled ground truth) shows how
many pixels the gate would let a perfect hint train.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from semhint.core import geometry
from semhint.core.checkpoints import read_checkpoint
from semhint.core.config import Config, load_config
from semhint.core.conventions import CITYSCAPES
from semhint.core.fileio import read_label_png
from semhint.data.build import build_dataset
from semhint.data.frames import mirrored_path
from semhint.data.snippets import SnippetDataset
from semhint.losses import min_reprojection, photometric_error
from semhint.refine import accepted_pixels, propose_hint, reprojection_error
from semhint.training import SemHintModule, collate_snippets, predict_poses

OPERATOR_SETS = (["smooth"], ["surface"], ["border"], ["contact"], ["smooth", "contact"], ["contact", "surface"],
                 ["facade"], ["contact", "surface", "facade"], ["oracle"])
CAR, ROAD, BUILDING = (CITYSCAPES.id(n) for n in ("car", "road", "building"))


def load_run(run: Path, data: Path, labels: str, split: str) -> tuple[SemHintModule, SnippetDataset, Config]:
    """(module in eval mode, validation-style dataset of the split with noisy and GT labels, config)."""
    ckpt = read_checkpoint(run / "checkpoints" / "last.ckpt")
    cfg = ckpt.config
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(
        cfg.data, val_split=str(data / "splits" / f"{split}.txt"), labels=str(data / labels),
        gt_labels=str(data / "gt_labels"), gt_depth=str(data / "gt_depth")))
    module = SemHintModule(cfg)
    module.load_state_dict(ckpt.state_dict)
    return module.eval(), build_dataset(cfg.data, "val"), cfg


def _abs_rel_sums(pred: torch.Tensor, hint: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """[pixels, sum of prediction AbsRel, sum of hint AbsRel] over ``mask``, per-image median scaling."""
    out = np.zeros(3)
    for b in range(gt.shape[0]):
        valid = gt[b] > 0
        sel = valid & mask[b]
        if not sel.any():
            continue
        scale = gt[b][valid].median() / pred[b][valid].median().clamp_min(1e-6)
        out += [int(sel.sum()), float(((pred[b][sel] * scale - gt[b][sel]).abs() / gt[b][sel]).sum()),
                float(((hint[b][sel] * scale - gt[b][sel]).abs() / gt[b][sel]).sum())]
    return out


def moving_masks(dataset: SnippetDataset, data: Path, indices: range) -> torch.Tensor | None:
    """B x 1 x H x W bool of the renderer's independently moving pixels, or None without gt_dynamic/."""
    paths = [mirrored_path(data / "gt_dynamic", dataset.frames[i].target, dataset.frames[i].data_root) for i in indices]
    if not all(p.is_file() for p in paths):
        return None
    return torch.stack([torch.from_numpy(read_label_png(p) > 0) for p in paths]).unsqueeze(1)


def predict_like_training(module: SemHintModule, batch: dict, cfg: Config) -> tuple[dict, torch.Tensor, dict, torch.Tensor]:
    """What a training step would see: (depth net outputs, depth at input size, poses, the prediction's
    min-reprojection error), so the hint is judged against the error the gate compares it with."""
    image = batch["image/0"]
    outputs = module.depth_net(image)
    _, depth = geometry.disp_to_depth(F.interpolate(outputs["disp/0"], size=image.shape[-2:], mode="bilinear",
                                                    align_corners=False), cfg.model.min_depth, cfg.model.max_depth)
    poses = predict_poses(module.pose_net, batch, cfg.data.frame_ids)
    return outputs, depth, poses, reprojection_error(depth, batch, poses, cfg.loss.ssim_weight)


def measure(module: SemHintModule, dataset: SnippetDataset, cfg: Config, upright: list[int], data: Path,
            batch_size: int = 8, surface_band: float = 0.0, surface_order: int | None = None,
            surface_inlier: float | None = None, max_ratio: float = 0.0, ground_travel: bool = False) -> list[dict]:
    """Rows of (operators, segments, pixel group): share of valid pixels, prediction and hint AbsRel."""
    sums: dict[tuple, np.ndarray] = {}
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            indices = range(start, min(start + batch_size, len(dataset)))
            batch = collate_snippets([dataset[i] for i in indices])
            moving = moving_masks(dataset, data, indices)
            image = batch["image/0"]
            outputs, depth, poses, pred_err = predict_like_training(module, batch, cfg)
            identity = torch.cat([photometric_error(batch[f"image/{f}"], image, cfg.loss.ssim_weight) for f in poses], 1)
            _, automask = min_reprojection(pred_err, identity)
            gt = F.interpolate(batch["depth_gt"].float(), size=depth.shape[-2:], mode="nearest")
            gt_labels = batch["gt_labels/0"].long()
            sources = [("ground truth", gt_labels), ("noisy", batch["labels/0"].long())]
            if "seg/0" in outputs:  # a SemHint run: the segments training takes the hints from
                sources.append(("branch", outputs["seg/0"].argmax(1)))
            car, road = (gt_labels == CAR).unsqueeze(1), (gt_labels == ROAD).unsqueeze(1)
            building = (gt_labels == BUILDING).unsqueeze(1)
            for source, labels in sources:
                for ops in OPERATOR_SETS:
                    rcfg = dataclasses.replace(cfg.refine, hint_operators=ops, upright_classes=upright, hint_classes=[],
                                               surface_band=surface_band, hint_max_ratio=max_ratio, hint_gate=True,
                                               hint_gate_margin=0.0, hint_on_masked=False, ground_travel=ground_travel)
                    if surface_order is not None:
                        rcfg = dataclasses.replace(rcfg, surface_order=surface_order)
                    if surface_inlier is not None:
                        rcfg = dataclasses.replace(rcfg, surface_inlier=surface_inlier)
                    hint = propose_hint(depth, labels, batch, poses, rcfg, cfg.model.min_depth, cfg.model.max_depth,
                                        cfg.loss.ssim_weight, generator=torch.Generator().manual_seed(start))
                    changed = hint.changed
                    gate = accepted_pixels(hint, pred_err, None, labels, rcfg)
                    on_masked = accepted_pixels(hint, pred_err, automask, labels,
                                                dataclasses.replace(rcfg, hint_on_masked=True))
                    groups = [("changed", changed), ("gated", gate), ("gated or auto-masked", on_masked),
                              ("changed, car", changed & car), ("gated, car", gate & car),
                              ("gated or auto-masked, car", on_masked & car), ("changed, road", changed & road),
                              ("gated, road", gate & road), ("changed, building", changed & building),
                              ("gated, building", gate & building)]
                    if moving is not None and moving.shape[-2:] == car.shape[-2:]:
                        groups += [("changed, car moving", changed & car & moving),
                                   ("changed, car parked", changed & car & ~moving)]
                    for where, mask in groups:
                        key = ("+".join(ops), source, where)
                        sums[key] = sums.get(key, np.zeros(4)) + np.r_[_abs_rel_sums(depth, hint.depth, gt, mask),
                                                                       int((gt > 0).sum())]
    rows = []
    for (ops, source, where), (n, pred_sum, hint_sum, total) in sums.items():
        rows.append({"operators": ops, "labels": source, "pixels": where, "share of valid": n / max(total, 1),
                     "prediction AbsRel": pred_sum / max(n, 1) if n else "", "hint AbsRel": hint_sum / max(n, 1) if n else ""})
    return rows


def kitti_run_problem(runs: list[Path], labels: str | Path) -> str | None:
    """Why trained KITTI runs cannot be diagnosed (a missing checkpoint, split or label folder), or None."""
    for run in runs:
        for path in (Path(run) / "checkpoints" / "last.ckpt", Path(run) / "diagnostics_split.txt"):
            if not path.is_file():
                return f"{path}: not found (train and score the run first: experiments/real_kitti.py)"
    if not Path(labels).is_dir():
        return f"{labels}: no such label folder"
    return None


def load_kitti_run(run: Path, config: str, labels: str, split: Path) -> tuple[SemHintModule, SnippetDataset, Config]:
    """A trained run on real KITTI frames: (module in eval mode, the split's snippets with LiDAR and the noisy
    labels, the hinted ``config`` whose refine section the hints are made with)."""
    ckpt = read_checkpoint(run / "checkpoints" / "last.ckpt")
    module = SemHintModule(ckpt.config)
    module.load_state_dict(ckpt.state_dict)
    cfg = load_config(config)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, labels=labels, val_split=str(split), num_workers=0))
    return module.eval(), build_dataset(cfg.data, "val"), cfg


def measure_real(module: SemHintModule, dataset: SnippetDataset, cfg: Config, variants: dict[str, dict],
                 classes: dict[str, int], batch_size: int = 8) -> dict[tuple, np.ndarray]:
    """Sums behind the rows of :func:`real_rows` for one trained run on real frames (LiDAR, noisy labels only).

    Each variant is a set of ``refine`` overrides (operators, switches); the hint is made from the
    run's predicted depth and pose with the noisy labels as segments, exactly as training would make it,
    and scored against LiDAR on the pixels it changes and those the gate accepts, overall and per noisy
    class in ``classes`` (name -> id): there are no true classes on these frames.
    """
    sums: dict[tuple, np.ndarray] = {}
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            batch = collate_snippets([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            _, depth, poses, pred_err = predict_like_training(module, batch, cfg)
            gt = F.interpolate(batch["depth_gt"].float(), size=depth.shape[-2:], mode="nearest")
            labels = batch["labels/0"].long()
            total = int((gt > 0).sum())
            for name, overrides in variants.items():
                rcfg = dataclasses.replace(cfg.refine, **overrides)
                hint = propose_hint(depth, labels, batch, poses, rcfg, cfg.model.min_depth, cfg.model.max_depth,
                                    cfg.loss.ssim_weight, generator=torch.Generator().manual_seed(start))
                gate = accepted_pixels(hint, pred_err, None, labels, rcfg)
                groups = [("changed", hint.changed), ("gated", gate)]
                for cls, cid in classes.items():
                    member = (labels == cid).unsqueeze(1)
                    groups += [(f"changed, {cls}", hint.changed & member), (f"gated, {cls}", gate & member)]
                for where, mask in groups:
                    key = (name, where)
                    sums[key] = sums.get(key, np.zeros(4)) + np.r_[_abs_rel_sums(depth, hint.depth, gt, mask), total]
    return sums


def real_rows(sums: dict[tuple, np.ndarray]) -> list[dict]:
    """Rows (variant, pixel group): share of LiDAR pixels, prediction and hint AbsRel, pooled over runs."""
    return [{"variant": name, "pixels": where, "share of valid": float(n / max(total, 1)),
             "prediction AbsRel": float(pred_sum / n) if n else "", "hint AbsRel": float(hint_sum / n) if n else ""}
            for (name, where), (n, pred_sum, hint_sum, total) in sums.items()]
