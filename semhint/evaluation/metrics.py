"""The standard depth and segmentation metrics, written once: the numbers every table and report uses.

Arithmetic runs in the dtype of the inputs (float32 for stored predictions and LiDAR ground truth,
as in the community's reference code), which is what makes results match published tables to the
digit; results are returned as float64.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from semhint.core.conventions import IGNORE_INDEX
from semhint.core.errors import InputError

METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
LOWER_IS_BETTER = {"abs_rel": True, "sq_rel": True, "rmse": True, "rmse_log": True, "a1": False, "a2": False, "a3": False}

# Crop windows as fractions of the GT image (rows top, bottom, cols left, right), truncated to int32.
# "garg": Garg et al. ECCV 2016, the crop every monocular KITTI paper (Monodepth2 and after) uses
# and calls the Eigen crop; "eigen": the crop that reproduces Eigen et al. NIPS 2014 (Monodepth v1).
CROPS: dict[str, tuple[float, float, float, float] | None] = {
    "garg": (0.40810811, 0.99189189, 0.03594771, 0.96405229),
    "eigen": (0.3324324, 0.91351351, 0.0359477, 0.96405229),
    "none": None,
}


def compute_depth_errors(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """The seven standard errors of valid, positive depths, in the order of METRIC_NAMES (float64).

    abs_rel, sq_rel, rmse and rmse_log are the usual means; a1..a3 are the fractions with
    max(gt / pred, pred / gt) below 1.25, 1.25^2, 1.25^3.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    thresh = np.maximum(gt / pred, pred / gt)
    a1 = (thresh < 1.25).mean()
    a2 = (thresh < 1.25**2).mean()
    a3 = (thresh < 1.25**3).mean()
    diff = gt - pred
    rmse = np.sqrt((diff**2).mean())
    rmse_log = np.sqrt(((np.log(gt) - np.log(pred)) ** 2).mean())
    abs_rel = np.mean(np.abs(diff) / gt)
    sq_rel = np.mean(diff**2 / gt)
    return np.array([abs_rel, sq_rel, rmse, rmse_log, a1, a2, a3], dtype=np.float64)


def crop_mask(height: int, width: int, crop: str) -> np.ndarray:
    """Boolean H x W mask of the evaluation window ``crop`` ("garg", "eigen" or "none")."""
    if crop not in CROPS:
        raise ValueError(f"unknown crop {crop!r}; choose from {', '.join(CROPS)}")
    mask = np.zeros((height, width), dtype=bool)
    fractions = CROPS[crop]
    if fractions is None:
        mask[:] = True
        return mask
    top, bottom, left, right = (np.array(fractions) * [height, height, width, width]).astype(np.int32)
    mask[top:bottom, left:right] = True
    return mask


def ratio_stats(ratios: np.ndarray) -> tuple[float, float]:
    """(median, std of ratios / median) of the median-scaling ratios, as Monodepth2 prints them.

    A small relative spread means the network's scale is consistent across images, i.e. a single
    global scale factor (known camera height, stereo baseline) would work nearly as well.
    """
    ratios = np.asarray(ratios, dtype=np.float64)
    if ratios.size == 0:
        return float("nan"), float("nan")
    med = float(np.median(ratios))
    return med, float(np.std(ratios / med))


CLASS_SUMS = ("pixels", "abs_rel", "log_ratio", "log_gt", "log_pred", "log_gt^2", "log_gt*log_pred")


def class_error_sums(labels: np.ndarray, gt: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """num_classes x len(CLASS_SUMS) sums over each class's pixels (already masked and scaled).

    Sums, not means, so that pixels pool exactly across images and runs; :func:`class_errors` turns
    one row into the per-class numbers.
    """
    out = np.zeros((num_classes, len(CLASS_SUMS)), dtype=np.float64)
    rel = (np.abs(gt - pred) / gt).astype(np.float64)
    log_gt = np.log(gt.astype(np.float64))
    log_pred = np.log(pred.astype(np.float64))
    for c in range(num_classes):
        sel = labels == c
        if not sel.any():
            continue
        x, y = log_gt[sel], log_pred[sel]
        out[c] = [sel.sum(), rel[sel].sum(), (y - x).sum(), x.sum(), y.sum(), (x * x).sum(), (x * y).sum()]
    return out


def range_slope(sums: np.ndarray) -> float:
    """Least-squares slope of log(prediction) on log(truth) from a row of CLASS_SUMS: 1 = the right depth range.

    Below 1 the class's depth range is compressed: its far part predicted too near relative to its
    near part (what parallax too small to measure at the far end does), which no offset can fix.
    """
    n, sx, sy, sxx, sxy = sums[0], sums[3], sums[4], sums[5], sums[6]
    var = n * sxx - sx * sx
    return float((n * sxy - sx * sy) / var) if var > 1e-9 * max(n * sxx, 1.0) else float("nan")


def class_errors(sums: np.ndarray) -> dict[str, float]:
    """AbsRel, log bias (mean log(pred / gt): > 0 too far), pixels and range slope of one row of CLASS_SUMS."""
    n = max(sums[0], 1.0)
    return {"abs_rel": float(sums[1] / n), "log_bias": float(sums[2] / n), "pixels": int(sums[0]),
            "range_slope": range_slope(sums)}


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """C x C counts, rows = ground truth class, columns = predicted class; ignored GT pixels dropped."""
    gt = np.asarray(gt).reshape(-1).astype(np.int64)
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    if gt.shape != pred.shape:
        raise InputError(f"segmentation: {gt.size} ground-truth pixels but {pred.size} predicted")
    keep = gt != ignore_index
    gt, pred = gt[keep], pred[keep]
    bad = (gt < 0) | (gt >= num_classes)
    if bad.any():
        raise InputError(f"segmentation: ground-truth class {int(gt[bad][0])} outside 0..{num_classes - 1}")
    bad = (pred < 0) | (pred >= num_classes)
    if bad.any():
        raise InputError(f"segmentation: predicted class {int(pred[bad][0])} outside 0..{num_classes - 1}")
    return np.bincount(gt * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def iou_scores(conf: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-class IoU (NaN for classes absent from both GT and prediction) and their mean (mIoU)."""
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    present = ~np.isnan(iou)
    return iou, float(iou[present].mean()) if present.any() else float("nan")


def segmentation_summary(conf: np.ndarray, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """mIoU, pixel accuracy and per-class IoU (None where a class is absent) of a confusion matrix."""
    conf = np.asarray(conf)
    iou, miou = iou_scores(conf)
    names = list(class_names) if class_names is not None else [f"class_{c}" for c in range(len(conf))]
    total = conf.sum()
    return {
        "miou": miou,
        "pixel_accuracy": float(np.trace(conf) / total) if total else float("nan"),
        "per_class_iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, iou)},
    }


def evaluate_segmentation(gts: Sequence[np.ndarray], preds: Sequence[np.ndarray], num_classes: int,
                          class_names: Sequence[str] | None = None, ignore_index: int = IGNORE_INDEX) -> dict[str, Any]:
    """mIoU, pixel accuracy and per-class IoU over a set of label maps (one confusion matrix for all)."""
    if len(gts) != len(preds):
        raise InputError(f"segmentation: {len(gts)} ground-truth maps but {len(preds)} predictions")
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    for gt, pred in zip(gts, preds):
        conf += confusion_matrix(gt, pred, num_classes, ignore_index)
    return {**segmentation_summary(conf, class_names), "confusion": conf.tolist()}
