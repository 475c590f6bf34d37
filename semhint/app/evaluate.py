"""`semhint evaluate`: depth metrics of stored predictions, or of a checkpoint run on a KITTI, SCARED or Hamlyn split,
against a ground-truth npz, printed as a table and written as a JSON report.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from semhint.core.conventions import IGNORE_INDEX
from semhint.core.errors import InputError
from semhint.core.fileio import load_npz, read_label_png, read_rgb
from semhint.data import endoscopy, kitti
from semhint.evaluation.protocols import (
    DepthEvaluation,
    check_shape_matches,
    evaluate_depth,
    format_metrics_table,
    resolve_protocol,
    write_report,
)
from semhint.export import load_any_predictor


def run(args: argparse.Namespace) -> None:
    run_evaluation(args.gt, predictions=args.predictions, pred_type=args.pred_type, checkpoint=args.checkpoint,
                   split=args.split, data_path=args.data_path, protocol=args.protocol, min_depth=args.min_depth,
                   max_depth=args.max_depth, crop=args.crop, median_scaling=args.median_scaling,
                   fixed_scale=args.scale, labels=args.labels,
                   class_names=args.class_names.split(",") if args.class_names else None, out=args.out,
                   device=args.device, kind=args.kind)


_PRED_KEYS = ("pred_disps", "pred_depths", "disp", "depth", "preds")


def _first_array(arrays: dict[str, np.ndarray], preferred: Sequence[str], path: Path) -> np.ndarray:
    for key in preferred:
        if key in arrays:
            return arrays[key]
    if len(arrays) != 1:  # with several arrays, guessing which one holds the predictions is a silent error
        raise InputError(f"{path}: expected one of the keys {', '.join(preferred)} or a single array, "
                         f"found {', '.join(sorted(arrays)) or 'no arrays'}")
    return next(iter(arrays.values()))


def _as_stack(array: np.ndarray, path: Path, what: str) -> np.ndarray:
    """N x H x W (an N x 1 x H x W stack is squeezed); anything else is a clear error."""
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 3:
        raise InputError(f"{path}: expected {what} as an N x H x W array, got shape {array.shape}")
    return array


def load_predictions(path: str | Path) -> np.ndarray:
    """Predictions from an .npy (N x H x W) or .npz (key pred_disps / pred_depths / disp / depth, or its only array)."""
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


def predict_split(checkpoint: str | Path, split: str | Path, data_path: str | Path, device: str = "cpu",
                  batch_size: int = 8, kind: str = "kitti") -> tuple[list[np.ndarray], list[str]]:
    """(network-resolution scaled disparities, split lines) of a checkpoint on every frame of a split
    (``kind``: kitti, scared or hamlyn layout)."""
    if kind == "kitti":
        refs = kitti.frame_refs(data_path, split, [0])
    elif kind in endoscopy.KINDS:
        refs = endoscopy.frame_refs(kind, data_path, split, [0])
    else:
        raise InputError(f"--kind must be kitti, scared or hamlyn, got {kind!r}")
    predictor = load_any_predictor(checkpoint, device)
    disps: list[np.ndarray] = []
    with tqdm(total=len(refs), desc="predict", unit="img") as bar:
        for start in range(0, len(refs), batch_size):
            chunk = refs[start:start + batch_size]
            disps.extend(predictor.predict_disparity_batch([read_rgb(r.images[0]) for r in chunk]))
            bar.update(len(chunk))
    return disps, [r.key for r in refs]


def load_label_dir(directory: str | Path, count: int) -> list[np.ndarray]:
    """The label PNGs of a folder in sorted name order, one per evaluated image (count must match)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory}: label folder not found")
    files = sorted(directory.glob("*.png"))
    if len(files) != count:
        raise InputError(f"{directory}: {len(files)} label PNGs for {count} evaluated images")
    return [read_label_png(f) for f in files]


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
    kind: str = "kitti",
) -> DepthEvaluation:
    """Evaluate stored predictions (or a checkpoint on a split) against a GT npz; print and report."""
    if (predictions is None) == (checkpoint is None):
        raise InputError("give exactly one of --predictions FILE or --checkpoint CKPT")
    if pred_type not in ("disp", "depth"):
        raise InputError(f"--pred-type must be 'disp' or 'depth', got {pred_type!r}")
    if fixed_scale is not None and not (math.isfinite(fixed_scale) and fixed_scale > 0):
        raise InputError(f"--scale must be a finite number > 0, got {fixed_scale}")
    settings = resolve_protocol(protocol, min_depth=min_depth, max_depth=max_depth, crop=crop,
                                median_scaling=median_scaling)
    gt_depths, gt_frames = kitti.load_gt_depths(gt)
    if checkpoint is not None:
        if split is None or data_path is None:
            raise InputError("--checkpoint needs --split FILE and --data-path ROOT")
        preds, keys = predict_split(checkpoint, split, data_path, device=device, kind=kind)
        if gt_frames and len(gt_frames) == len(keys):
            mismatch = next((i for i, (a, b) in enumerate(zip(gt_frames, keys)) if a.split() != b.split()), None)
            if mismatch is not None:
                raise InputError(f"{gt}: frame {mismatch} is '{gt_frames[mismatch]}' but the split has '{keys[mismatch]}'")
        pred_type, source = "disp", {"checkpoint": str(checkpoint), "split": str(split)}
    else:
        preds = load_predictions(predictions)
        for i, (pred, gt_map) in enumerate(zip(preds, gt_depths)):  # name the file, not only the index
            check_shape_matches(np.shape(pred), np.shape(gt_map), f"{predictions} (map {i})")
        source = {"predictions": str(predictions)}
    if len(preds) != len(gt_depths):
        raise InputError(f"{len(preds)} predictions but {len(gt_depths)} ground-truth maps in {gt}")
    label_maps = load_label_dir(labels, len(gt_depths)) if labels else None
    if label_maps is not None and class_names is None:
        top = max(int(m[m != IGNORE_INDEX].max(initial=0)) for m in label_maps)
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
