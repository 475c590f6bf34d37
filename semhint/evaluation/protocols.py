"""Evaluation protocols: which pixels count, how a monocular prediction is scaled, how errors are averaged.

The KITTI Eigen protocol for monocular models (Monodepth2's evaluation) is one call of
:func:`evaluate_depth` with its defaults; other protocols (SCARED-style endoscopy: 150 mm cap, no
crop) are the same function with other arguments, so every number in a report comes from one code
path. Named presets live in ``PROTOCOLS`` (``scared``: depth in mm within (1e-3, 150), no crop,
per-image median scaling, the numbers the endoscopy papers print).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from semhint.core.errors import InputError
from semhint.core.fileio import write_json
from semhint.evaluation.metrics import (
    CLASS_SUMS,
    CROPS,
    METRIC_NAMES,
    class_error_sums,
    class_errors,
    compute_depth_errors,
    crop_mask,
    ratio_stats,
)

# Named presets; explicit arguments override them.
PROTOCOLS: dict[str, dict[str, Any]] = {
    "kitti-eigen": {"min_depth": 1e-3, "max_depth": 80.0, "crop": "garg", "median_scaling": True},
    "generic": {"min_depth": 1e-3, "max_depth": 80.0, "crop": "none", "median_scaling": True},
    # SCARED as AF-SfMLearner, EndoDAC and MonoPCC report it: depth in mm capped at 150, whole frame
    "scared": {"min_depth": 1e-3, "max_depth": 150.0, "crop": "none", "median_scaling": True},
}


def resolve_protocol(protocol: str, **overrides: Any) -> dict[str, Any]:
    """The protocol preset with every non-None override applied."""
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    settings = dict(PROTOCOLS[protocol])
    settings.update({k: v for k, v in overrides.items() if v is not None})
    if settings["crop"] not in CROPS:
        raise InputError(f"unknown crop {settings['crop']!r}; choose from {', '.join(CROPS)}")
    if not (math.isfinite(settings["min_depth"]) and math.isfinite(settings["max_depth"])):
        raise InputError(f"--min-depth/--max-depth must be finite, got {settings['min_depth']}, {settings['max_depth']}")
    if not 0 <= settings["min_depth"] < settings["max_depth"]:
        raise InputError(f"need 0 <= min-depth < max-depth, got {settings['min_depth']}, {settings['max_depth']}")
    return settings


@dataclass
class DepthEvaluation:
    """Result of :func:`evaluate_depth`."""

    per_image_errors: np.ndarray  # N x 7, METRIC_NAMES order
    mean_errors: np.ndarray  # 7
    ratios: np.ndarray  # N median-scaling ratios (empty without median scaling)
    settings: dict[str, Any] = field(default_factory=dict)
    per_class_abs_rel: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> abs_rel, log_bias, pixels, range_slope
    per_class_sums: dict[str, np.ndarray] = field(default_factory=dict)  # name -> CLASS_SUMS, to pool over runs

    def metrics(self) -> dict[str, float]:
        return {name: float(v) for name, v in zip(METRIC_NAMES, self.mean_errors)}


def _resize(array: np.ndarray, height: int, width: int) -> np.ndarray:
    if array.shape == (height, width):
        return array
    return cv2.resize(array, (width, height), interpolation=cv2.INTER_LINEAR)


def _check_prediction(pred: np.ndarray, index: int, kind: str) -> np.ndarray:
    pred = np.asarray(pred)
    if pred.ndim == 3 and pred.shape[0] == 1:
        pred = pred[0]
    if pred.ndim != 2:
        raise InputError(f"prediction {index}: expected an H x W {kind} map, got shape {pred.shape}")
    if pred.dtype not in (np.float32, np.float64):
        pred = pred.astype(np.float32)
    if not np.all(np.isfinite(pred)) or np.any(pred <= 0):
        raise InputError(f"prediction {index}: {kind} must be finite and > 0 everywhere")
    return pred


def check_shape_matches(pred_shape: tuple[int, ...], gt_shape: tuple[int, ...], what: str) -> None:
    """A prediction is resized to its ground truth's size, so a transposed one (W x H for H x W)
    or one of another aspect would be stretched and scored without a word: an aspect more than
    1.5x off the ground truth's is an error."""
    (ph, pw), (h, w) = pred_shape[-2:], gt_shape[-2:]
    if min(ph, pw, h, w) <= 0 or abs(math.log((pw / ph) / (w / h))) > math.log(1.5):
        hint = " (transposed?)" if (ph, pw) != (h, w) and abs(math.log((ph / pw) / (w / h))) < math.log(1.5) else ""
        raise InputError(f"{what}: prediction is {ph}x{pw} (rows x columns) but its ground truth is {h}x{w}: "
                         f"the aspect ratios differ{hint}")


def evaluate_depth(
    preds: Sequence[np.ndarray] | np.ndarray,
    gt_depths: Sequence[np.ndarray] | np.ndarray,
    min_depth: float = 1e-3,
    max_depth: float = 80.0,
    crop: str = "garg",
    median_scaling: bool = True,
    pred_is_disp: bool = True,
    fixed_scale: float | None = None,
    labels: Sequence[np.ndarray] | None = None,
    class_names: Sequence[str] | None = None,
    progress: bool = False,
) -> DepthEvaluation:
    """Evaluate predictions against sparse or dense ground truth, one image at a time.

    Per image: the prediction (disparity when ``pred_is_disp``, else depth) is resized bilinearly to
    the GT size (disparity is resized before inversion, as the reference protocol does); GT pixels
    in (min_depth, max_depth) inside the crop are kept; the prediction is multiplied by
    ``fixed_scale`` (e.g. a known stereo scale) and then, with ``median_scaling``, by
    median(gt) / median(pred); it is clamped to [min_depth, max_depth]; errors are averaged over
    images (not pixels), like published tables.

    ``labels`` (one H x W class map per image at GT resolution, 255 = ignore) with ``class_names``
    adds AbsRel per class, pooled over all valid GT pixels of that class across the images, the
    class's mean log(pred / gt) ("log_bias": > 0 too far, < 0 too near), which AbsRel cannot show
    (a textureless object swallowed by the background behind it and one pulled towards the camera
    have the same AbsRel but opposite fixes), and its range slope (see ``metrics.range_slope``).
    """
    if len(preds) != len(gt_depths):
        raise InputError(f"{len(preds)} predictions but {len(gt_depths)} ground-truth maps")
    if len(gt_depths) == 0:
        raise InputError("nothing to evaluate: no ground-truth maps")
    if labels is not None and len(labels) != len(gt_depths):
        raise InputError(f"{len(labels)} label maps but {len(gt_depths)} ground-truth maps")
    if not 0 <= min_depth < max_depth:
        raise ValueError(f"need 0 <= min_depth < max_depth, got {min_depth}, {max_depth}")
    kind = "disparity" if pred_is_disp else "depth"
    errors, ratios = [], []
    names = list(class_names) if class_names is not None else []
    class_sums = np.zeros((len(names), len(CLASS_SUMS)), dtype=np.float64)
    pairs = tqdm(zip(preds, gt_depths), total=len(gt_depths), desc="evaluate", unit="img", disable=not progress)
    for i, (pred, gt) in enumerate(pairs):
        gt = np.asarray(gt)
        if gt.ndim != 2:
            raise InputError(f"ground truth {i}: expected an H x W depth map, got shape {gt.shape}")
        h, w = gt.shape
        pred = _check_prediction(pred, i, kind)
        check_shape_matches(pred.shape, gt.shape, f"prediction {i}")
        pred = _resize(pred, h, w)
        pred_depth = 1 / pred if pred_is_disp else pred
        mask = np.logical_and(gt > min_depth, gt < max_depth) & crop_mask(h, w, crop)
        if not mask.any():
            raise InputError(f"ground truth {i}: no pixels in ({min_depth}, {max_depth}) inside the {crop!r} crop")
        pred_depth = pred_depth[mask]
        gt_valid = gt[mask]
        if fixed_scale is not None:
            pred_depth = pred_depth * fixed_scale
        if median_scaling:
            ratio = np.median(gt_valid) / np.median(pred_depth)
            ratios.append(ratio)
            pred_depth = pred_depth * ratio
        pred_depth = np.clip(pred_depth, min_depth, max_depth)
        errors.append(compute_depth_errors(gt_valid, pred_depth))
        if labels is not None and names:
            label_map = np.asarray(labels[i])
            if label_map.shape != (h, w):
                raise InputError(f"label map {i}: shape {label_map.shape} does not match its ground truth {(h, w)}")
            class_sums += class_error_sums(label_map[mask], gt_valid, pred_depth, len(names))
    per_image = np.stack(errors)
    per_class_sums = {name: class_sums[c] for c, name in enumerate(names) if class_sums[c, 0] > 0}
    per_class = {name: class_errors(sums) for name, sums in per_class_sums.items()}
    settings = {
        "min_depth": min_depth, "max_depth": max_depth, "crop": crop, "median_scaling": median_scaling,
        "pred_type": "disp" if pred_is_disp else "depth", "fixed_scale": fixed_scale, "num_images": len(per_image),
    }
    return DepthEvaluation(per_image, per_image.mean(0), np.asarray(ratios), settings, per_class, per_class_sums)


def format_metrics_table(result: DepthEvaluation | Sequence[float], title: str | None = None, digits: int = 3) -> str:
    """A fixed-width table of the seven metrics (plus ratio statistics and per-class AbsRel if known)."""
    mean = result.mean_errors if isinstance(result, DepthEvaluation) else np.asarray(result)
    width = max(len(n) for n in METRIC_NAMES) + 2
    lines = [title] if title else []
    lines.append("".join(f"{n:>{width}}" for n in METRIC_NAMES))
    lines.append("".join(f"{v:>{width}.{digits}f}" for v in mean))
    if isinstance(result, DepthEvaluation):
        if result.ratios.size:
            med, rel_std = ratio_stats(result.ratios)
            lines.append(f"scaling ratios: median {med:.3f}, std / median {rel_std:.3f}")
        if result.per_class_abs_rel:
            lines.append("per-class abs_rel (log bias = mean log(pred / gt): > 0 too far):")
            name_w = max(len(n) for n in result.per_class_abs_rel) + 2
            for name, row in result.per_class_abs_rel.items():
                lines.append(f"  {name:<{name_w}}{row['abs_rel']:.{digits}f}  log bias {row['log_bias']:+.{digits}f}"
                             f"  ({row['pixels']} px)")
    return "\n".join(lines)


def report_dict(result: DepthEvaluation, **extra: Any) -> dict[str, Any]:
    """JSON-ready dict: metrics, settings, ratio statistics, per-image errors, per-class AbsRel."""
    med, rel_std = ratio_stats(result.ratios)
    out: dict[str, Any] = {
        "metrics": result.metrics(),
        "settings": result.settings,
        "ratios": {"median": med, "std_over_median": rel_std, "values": [float(r) for r in result.ratios]}
        if result.ratios.size else None,
        "per_class_abs_rel": result.per_class_abs_rel,
        "per_image": [dict(zip(METRIC_NAMES, map(float, row))) for row in result.per_image_errors],
    }
    out.update(extra)
    return out


def write_report(path: str | Path, result: DepthEvaluation, **extra: Any) -> None:
    """Write :func:`report_dict` as JSON atomically."""
    write_json(path, report_dict(result, **extra))
