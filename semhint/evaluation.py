"""Depth and segmentation evaluation: the metrics and protocols papers report, reproduced exactly.

The KITTI Eigen protocol for monocular models (Monodepth2's ``evaluate_depth.py``) is one call of
:func:`evaluate_depth` with its defaults; other protocols (SCARED-style endoscopy: 150 mm cap, no
crop) are the same function with other arguments, so every number in a report comes from one code
path. Arithmetic runs in the dtype of the inputs (float32 for stored predictions and LiDAR ground
truth, as in the reference code), which is what makes results match published tables to the digit;
results are returned as float64.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from semhint.core.fileio import InputError

METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")

# Crop windows as fractions of the GT image (rows top, bottom, cols left, right), truncated to int32.
# "garg": Garg et al. ECCV 2016, the crop every monocular KITTI paper (Monodepth2 and after) uses
# and calls the Eigen crop; "eigen": the crop that reproduces Eigen et al. NIPS 2014 (Monodepth v1).
CROPS: dict[str, tuple[float, float, float, float] | None] = {
    "garg": (0.40810811, 0.99189189, 0.03594771, 0.96405229),
    "eigen": (0.3324324, 0.91351351, 0.0359477, 0.96405229),
    "none": None,
}

# Named presets; explicit arguments override them.
PROTOCOLS: dict[str, dict[str, Any]] = {
    "kitti-eigen": {"min_depth": 1e-3, "max_depth": 80.0, "crop": "garg", "median_scaling": True},
    "generic": {"min_depth": 1e-3, "max_depth": 80.0, "crop": "none", "median_scaling": True},
}


# ----------------------------------------------------------------------------------------------
# depth metrics
# ----------------------------------------------------------------------------------------------
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


@dataclass
class DepthEvaluation:
    """Result of :func:`evaluate_depth`."""

    per_image_errors: np.ndarray  # N x 7, METRIC_NAMES order
    mean_errors: np.ndarray  # 7
    ratios: np.ndarray  # N median-scaling ratios (empty without median scaling)
    settings: dict[str, Any] = field(default_factory=dict)
    per_class_abs_rel: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> abs_rel, log_bias, pixels

    def metrics(self) -> dict[str, float]:
        return {name: float(v) for name, v in zip(METRIC_NAMES, self.mean_errors)}


def _resize(array: np.ndarray, height: int, width: int) -> np.ndarray:
    import cv2

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
    adds AbsRel per class, pooled over all valid GT pixels of that class across the images, and the
    class's mean log(pred / gt) ("log_bias": > 0 too far, < 0 too near), which AbsRel cannot show:
    a textureless object swallowed by the background behind it and one pulled towards the camera
    have the same AbsRel but opposite fixes.
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
    class_sum = np.zeros(len(names), dtype=np.float64)
    class_count = np.zeros(len(names), dtype=np.int64)
    class_log_sum = np.zeros(len(names), dtype=np.float64)
    from tqdm import tqdm

    pairs = tqdm(zip(preds, gt_depths), total=len(gt_depths), desc="evaluate", unit="img", disable=not progress)
    for i, (pred, gt) in enumerate(pairs):
        gt = np.asarray(gt)
        if gt.ndim != 2:
            raise InputError(f"ground truth {i}: expected an H x W depth map, got shape {gt.shape}")
        h, w = gt.shape
        pred = _resize(_check_prediction(pred, i, kind), h, w)
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
            _accumulate_per_class(label_map[mask], gt_valid, pred_depth, class_sum, class_count, class_log_sum)
    per_image = np.stack(errors)
    per_class = {
        name: {"abs_rel": float(class_sum[c] / class_count[c]), "log_bias": float(class_log_sum[c] / class_count[c]),
               "pixels": int(class_count[c])}
        for c, name in enumerate(names)
        if class_count[c] > 0
    }
    settings = {
        "min_depth": min_depth, "max_depth": max_depth, "crop": crop, "median_scaling": median_scaling,
        "pred_type": "disp" if pred_is_disp else "depth", "fixed_scale": fixed_scale, "num_images": len(per_image),
    }
    return DepthEvaluation(per_image, per_image.mean(0), np.asarray(ratios), settings, per_class)


def _accumulate_per_class(labels: np.ndarray, gt: np.ndarray, pred: np.ndarray, sums: np.ndarray,
                          counts: np.ndarray, log_sums: np.ndarray) -> None:
    """Add the abs-rel and log-ratio terms of each class's pixels (already masked and scaled) to the sums."""
    rel = np.abs(gt - pred) / gt
    log_ratio = np.log(pred.astype(np.float64) / gt)
    for c in range(len(sums)):
        sel = labels == c
        counts[c] += int(sel.sum())
        sums[c] += float(rel[sel].astype(np.float64).sum())
        log_sums[c] += float(log_ratio[sel].sum())


# ----------------------------------------------------------------------------------------------
# segmentation
# ----------------------------------------------------------------------------------------------
def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
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


def evaluate_segmentation(gts: Sequence[np.ndarray], preds: Sequence[np.ndarray], num_classes: int,
                          class_names: Sequence[str] | None = None, ignore_index: int = 255) -> dict[str, Any]:
    """mIoU, pixel accuracy and per-class IoU over a set of label maps (one confusion matrix for all)."""
    if len(gts) != len(preds):
        raise InputError(f"segmentation: {len(gts)} ground-truth maps but {len(preds)} predictions")
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    for gt, pred in zip(gts, preds):
        conf += confusion_matrix(gt, pred, num_classes, ignore_index)
    iou, miou = iou_scores(conf)
    names = list(class_names) if class_names is not None else [f"class_{c}" for c in range(num_classes)]
    total = conf.sum()
    return {
        "miou": miou,
        "pixel_accuracy": float(np.trace(conf) / total) if total else float("nan"),
        "per_class_iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, iou)},
        "confusion": conf.tolist(),
    }


# ----------------------------------------------------------------------------------------------
# reporting
# ----------------------------------------------------------------------------------------------
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
    from semhint.core.fileio import write_json

    write_json(path, report_dict(result, **extra))


# ----------------------------------------------------------------------------------------------
# `semhint evaluate`: load predictions (or run a checkpoint), evaluate, print, write JSON
# ----------------------------------------------------------------------------------------------
_PRED_KEYS = ("pred_disps", "pred_depths", "disp", "depth", "preds")


def _first_array(arrays: dict[str, np.ndarray], preferred: Sequence[str], path: Path) -> np.ndarray:
    for key in preferred:
        if key in arrays:
            return arrays[key]
    if not arrays:
        raise InputError(f"{path}: npz holds no arrays")
    return next(iter(arrays.values()))


def _as_stack(array: np.ndarray, path: Path, what: str) -> np.ndarray:
    """N x H x W (an N x 1 x H x W stack is squeezed); anything else is a clear error."""
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 3:
        raise InputError(f"{path}: expected {what} as an N x H x W array, got shape {array.shape}")
    return array


def load_predictions(path: str | Path) -> np.ndarray:
    """Predictions from an .npy (N x H x W) or .npz (key pred_disps / pred_depths / disp / depth, else the first)."""
    from semhint.core.fileio import load_npz

    path = Path(path)
    if path.suffix == ".npz":
        array = _first_array(load_npz(path), _PRED_KEYS, path)
    else:
        if not path.is_file():
            raise InputError(f"{path}: predictions file not found")
        try:
            array = np.load(path, allow_pickle=False)
        except Exception as exc:  # a corrupt or non-numpy file
            raise InputError(f"{path}: cannot read predictions ({exc.__class__.__name__}: {exc})") from None
    return _as_stack(array, path, "predictions")


def load_gt_depths(path: str | Path) -> tuple[list[np.ndarray], list[str]]:
    """(per-image GT depth maps, split lines if stored) from an npz: key gt_depths (else the first array).

    `semhint kitti export-gt` zero-pads frames of different sizes to one stack and stores each
    frame's true (H, W) under ``sizes``; frames are cropped back to it, because the evaluation crop
    is a fraction of the true image size.
    """
    from semhint.core.fileio import load_npz

    path = Path(path)
    arrays = load_npz(path)
    stack = _as_stack(_first_array(arrays, ("gt_depths",), path), path, "ground-truth depths")
    frames = [str(f) for f in arrays["frames"]] if "frames" in arrays else []
    sizes = arrays.get("sizes")
    if sizes is None:
        return list(stack), frames
    if sizes.shape != (len(stack), 2):
        raise InputError(f"{path}: 'sizes' must be N x 2 for {len(stack)} maps, got shape {sizes.shape}")
    return [stack[i, : int(h), : int(w)] for i, (h, w) in enumerate(sizes)], frames


def predict_split(checkpoint: str | Path, split: str | Path, data_path: str | Path, device: str = "cpu",
                  batch_size: int = 8) -> tuple[list[np.ndarray], list[str]]:
    """(network-resolution scaled disparities, split lines) of a checkpoint on every frame of a KITTI split."""
    from tqdm import tqdm

    from semhint.data.kitti import frame_refs
    from semhint.core.fileio import read_rgb
    from semhint.inference import load_predictor

    predictor = load_predictor(checkpoint, device=device)
    refs = frame_refs(data_path, split, [0])
    disps: list[np.ndarray] = []
    with tqdm(total=len(refs), desc="predict", unit="img") as bar:
        for start in range(0, len(refs), batch_size):
            chunk = refs[start:start + batch_size]
            disps.extend(predictor.predict_disparity_batch([read_rgb(r.images[0]) for r in chunk]))
            bar.update(len(chunk))
    return disps, [r.key for r in refs]


def load_label_dir(directory: str | Path, count: int) -> list[np.ndarray]:
    """The label PNGs of a folder in sorted name order, one per evaluated image (count must match)."""
    from semhint.core.fileio import read_label_png

    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory}: label folder not found")
    files = sorted(directory.glob("*.png"))
    if len(files) != count:
        raise InputError(f"{directory}: {len(files)} label PNGs for {count} evaluated images")
    return [read_label_png(f) for f in files]


def resolve_protocol(protocol: str, **overrides: Any) -> dict[str, Any]:
    """The protocol preset with every non-None override applied."""
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    settings = dict(PROTOCOLS[protocol])
    settings.update({k: v for k, v in overrides.items() if v is not None})
    if settings["crop"] not in CROPS:
        raise InputError(f"unknown crop {settings['crop']!r}; choose from {', '.join(CROPS)}")
    if not 0 <= settings["min_depth"] < settings["max_depth"]:
        raise InputError(f"need 0 <= min-depth < max-depth, got {settings['min_depth']}, {settings['max_depth']}")
    return settings


def run_evaluation(
    gt: str | Path,
    predictions: str | Path | None = None,
    pred_type: str = "disp",
    checkpoint: str | Path | None = None,
    split: str | Path | None = None,
    data_path: str | Path | None = None,
    protocol: str = "kitti-eigen",
    min_depth: float | None = None,
    max_depth: float | None = None,
    crop: str | None = None,
    median_scaling: bool | None = None,
    fixed_scale: float | None = None,
    labels: str | Path | None = None,
    class_names: Sequence[str] | None = None,
    out: str | Path | None = None,
    device: str = "cpu",
) -> DepthEvaluation:
    """Evaluate stored predictions (or a checkpoint on a split) against a GT npz; print and report."""
    if (predictions is None) == (checkpoint is None):
        raise InputError("give exactly one of --predictions FILE or --checkpoint CKPT")
    if pred_type not in ("disp", "depth"):
        raise InputError(f"--pred-type must be 'disp' or 'depth', got {pred_type!r}")
    settings = resolve_protocol(protocol, min_depth=min_depth, max_depth=max_depth, crop=crop,
                                median_scaling=median_scaling)
    gt_depths, gt_frames = load_gt_depths(gt)
    if checkpoint is not None:
        if split is None or data_path is None:
            raise InputError("--checkpoint needs --split FILE and --data-path ROOT")
        preds, keys = predict_split(checkpoint, split, data_path, device=device)
        if gt_frames and len(gt_frames) == len(keys):
            mismatch = next((i for i, (a, b) in enumerate(zip(gt_frames, keys)) if a.split() != b.split()), None)
            if mismatch is not None:
                raise InputError(f"{gt}: frame {mismatch} is '{gt_frames[mismatch]}' but the split has '{keys[mismatch]}'")
        pred_type, source = "disp", {"checkpoint": str(checkpoint), "split": str(split)}
    else:
        preds = load_predictions(predictions)
        source = {"predictions": str(predictions)}
    if len(preds) != len(gt_depths):
        raise InputError(f"{len(preds)} predictions but {len(gt_depths)} ground-truth maps in {gt}")
    label_maps = load_label_dir(labels, len(gt_depths)) if labels else None
    if label_maps is not None and class_names is None:
        top = max(int(m[m != 255].max(initial=0)) for m in label_maps)
        class_names = [f"class_{c}" for c in range(top + 1)]
    result = evaluate_depth(preds, gt_depths, pred_is_disp=pred_type == "disp", fixed_scale=fixed_scale,
                            labels=label_maps, class_names=class_names, progress=True, **settings)
    result.settings["protocol"] = protocol
    scaling = "median scaling" if settings["median_scaling"] else "no median scaling"
    title = (f"{protocol}: {len(gt_depths)} images, depth in ({settings['min_depth']:g}, {settings['max_depth']:g}), "
             f"crop {settings['crop']}, {scaling}")
    print(format_metrics_table(result, title=title))
    if out:
        write_report(out, result, source=source, gt=str(gt))
        print(f"wrote {out}")
    return result
