"""How far is the road plane of a trained run rolled away from LiDAR's, and could photometry tell?

On real frames a short run's road can lean sideways (its depth falls off faster on one side): the
plane fitted to it is turned about the direction of travel, a roll that no camera on a car has
against its road. Operator B fits its plane to the prediction, so it keeps part of that roll, and
ungated it trains it back in. This diagnostic fits, per scored frame, one plane each to the LiDAR
points, the prediction and the hint on the noisy road pixels, and reports the signed angle about
the direction of travel from LiDAR's plane to the other two. It then turns the hint's plane about
the same axis by a few offsets and asks which offset the photometric error prefers and which
LiDAR prefers: where they differ, no photometric gate could have caught the roll. LiDAR only
diagnoses here; nothing is trained.
"""

from __future__ import annotations

import math
import statistics

import torch
import torch.nn.functional as F

from semhint.core.config import Config
from semhint.data.snippets import SnippetDataset
from semhint.lab.hint_quality import predict_like_training
from semhint.refine import camera_rays, camera_translation, propose_hint, reprojection_error
from semhint.training import SemHintModule, collate_snippets


def fit_plane(rays: torch.Tensor, inv_depth: torch.Tensor) -> torch.Tensor:
    """The plane a . X = 1 through points z r (least squares on 1/z = a . r): ``rays`` 3 x N, returns a (3)."""
    return torch.linalg.lstsq(rays.T.double(), inv_depth.double().unsqueeze(-1)).solution[:, 0].to(rays.dtype)


def rotate_about(a: torch.Tensor, axis: torch.Tensor, degrees: float) -> torch.Tensor:
    """``a`` turned by ``degrees`` about ``axis`` (right hand, Rodrigues)."""
    k = axis / axis.norm().clamp_min(1e-12)
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return a * c + torch.linalg.cross(k, a, dim=-1) * s + k * (k @ a) * (1 - c)


def roll_about(reference: torch.Tensor, a: torch.Tensor, axis: torch.Tensor) -> float:
    """Signed angle (degrees) about ``axis`` from ``reference``'s normal to ``a``'s, both seen along the axis.

    A plane that holds the direction of travel can only differ from another such plane by a turn
    about it (and by its distance): the roll. Tilts along the axis are left out.
    """
    k = axis / axis.norm().clamp_min(1e-12)
    p, q = reference - k * (k @ reference), a - k * (k @ a)
    return math.degrees(math.atan2(float(k @ torch.linalg.cross(p, q, dim=-1)), float(p @ q)))


def _abs_rel(depth: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, scale: torch.Tensor) -> float:
    sel = mask & (gt > 0)
    return float(((depth[sel] * scale - gt[sel]).abs() / gt[sel]).mean()) if sel.any() else float("nan")


def measure_road_roll(module: SemHintModule, dataset: SnippetDataset, cfg: Config, road: int,
                      offsets: tuple[float, ...] = (-40, -20, -10, -5, 0, 5, 10, 20, 40), min_pixels: int = 30,
                      batch_size: int = 8) -> list[dict]:
    """One row per scored frame: LiDAR's road roll against the camera (from t x its x axis, the basis
    :func:`semhint.refine.ground_rolls` votes in), the roll (degrees) of the prediction's and the hint's
    road plane from LiDAR's, and the offset of the hint's plane that photometry and that LiDAR prefer.

    ``road``: the class id whose noisy-label pixels are the road. A frame with fewer than ``min_pixels``
    road pixels with LiDAR, or that the hint moves, gets no row.
    """
    rows = []
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            batch = collate_snippets([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            _, depth, poses, _ = predict_like_training(module, batch, cfg)
            labels = batch["labels/0"].long()
            hint = propose_hint(depth, labels, batch, poses, cfg.refine, cfg.model.min_depth, cfg.model.max_depth,
                                cfg.loss.ssim_weight, generator=torch.Generator().manual_seed(start))
            travel = camera_translation(poses)
            gt = F.interpolate(batch["depth_gt"].float(), size=depth.shape[-2:], mode="nearest")
            b, _, h, w = depth.shape
            rays = camera_rays(batch["K"].float(), h, w, torch.float32)
            road_px = (labels == road).view(b, -1)
            moved = hint.changed.view(b, -1) & road_px
            lidar = (gt.view(b, -1) > 0) & road_px
            frames = [i for i in range(b) if moved[i].sum() >= min_pixels and lidar[i].sum() >= min_pixels]
            planes = {i: fit_plane(rays[i][:, moved[i]], 1.0 / hint.depth[i].view(-1)[moved[i]]) for i in frames}
            photo, lidar_err = {i: [] for i in frames}, {i: [] for i in frames}
            for offset in offsets:  # the hint's road plane turned about the direction of travel, all frames at once
                candidate = depth.clone().view(b, -1)
                for i in frames:
                    q = rotate_about(planes[i], travel[i], offset) @ rays[i]
                    put = moved[i] & (q > 1.0 / cfg.model.max_depth)
                    candidate[i, put] = (1.0 / q[put]).clamp(cfg.model.min_depth, cfg.model.max_depth)
                candidate = candidate.view(b, 1, h, w)
                error = reprojection_error(candidate, batch, poses, cfg.loss.ssim_weight).view(b, -1)
                for i in frames:
                    valid = gt[i].view(-1) > 0
                    scale = gt[i].view(-1)[valid].median() / depth[i].view(-1)[valid].median().clamp_min(1e-6)
                    photo[i].append(float(error[i, moved[i]].mean()))
                    lidar_err[i].append(_abs_rel(candidate[i].view(-1), gt[i].view(-1), moved[i], scale))
            for i in frames:
                reference = fit_plane(rays[i][:, lidar[i]], 1.0 / gt[i].view(-1)[lidar[i]])
                down = torch.linalg.cross(travel[i], torch.tensor([1.0, 0.0, 0.0]).to(travel), dim=-1)  # t x camera x
                predicted = fit_plane(rays[i][:, road_px[i]], 1.0 / depth[i].view(-1)[road_px[i]])
                best_photo = min(range(len(offsets)), key=photo[i].__getitem__)
                best_lidar = min(range(len(offsets)), key=lambda j: (math.isnan(lidar_err[i][j]), lidar_err[i][j]))
                rows.append({"frame": start + i, "LiDAR roll": roll_about(down, reference, travel[i]),
                             "prediction roll": roll_about(reference, predicted, travel[i]),
                             "hint roll": roll_about(reference, planes[i], travel[i]),
                             "photometry prefers": offsets[best_photo], "LiDAR prefers": offsets[best_lidar],
                             "hint AbsRel": lidar_err[i][offsets.index(0)] if 0 in offsets else float("nan"),
                             "AbsRel at LiDAR's offset": lidar_err[i][best_lidar]})
    return rows


def summarise_road_roll(rows: list[dict], agree_within: float = 5.0) -> dict:
    """One run's frames in a line: LiDAR's roll range, median and worst |roll| of prediction and hint, and how often
    photometry picks the offset LiDAR picks (within ``agree_within`` degrees)."""
    pred = [abs(r["prediction roll"]) for r in rows]
    hint = [abs(r["hint roll"]) for r in rows]
    agree = [abs(r["photometry prefers"] - r["LiDAR prefers"]) <= agree_within for r in rows]
    lidar = [r["LiDAR roll"] for r in rows if "LiDAR roll" in r]
    return {"frames": len(rows), "LiDAR roll range": f"{min(lidar):.1f}..{max(lidar):.1f}" if lidar else "",
            "median |prediction roll|": statistics.median(pred) if rows else float("nan"),
            "median |hint roll|": statistics.median(hint) if rows else float("nan"),
            "worst |hint roll|": max(hint, default=float("nan")),
            "photometry agrees with LiDAR": f"{sum(agree)}/{len(agree)}"}
