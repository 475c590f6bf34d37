"""Controlled label noise: noisy label maps made from ground truth, with a seed and a strength.

Real noisy labels (from a segmentation model trained on a few frames) are wrong in typical ways:
borders sit a few pixels off, small objects are missed, and patches take the wrong class. The
corruption reproduces those three kinds, each scaled by ``strength`` in [0, 1] (0 = the ground
truth itself), so experiments can sweep the noise level and report it as mIoU.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage
from tqdm import tqdm

from semhint.core.conventions import IGNORE_INDEX, ClassSet, get_class_set
from semhint.core.errors import InputError
from semhint.core.fileio import read_label_png, refuse_inside, write_json, write_label_png
from semhint.evaluation.metrics import confusion_matrix, iou_scores


def corrupt_labels(labels: np.ndarray, class_set: ClassSet, strength: float, rng: np.random.Generator) -> np.ndarray:
    """A noisy copy of an H x W uint8 class map: dropped objects, shifted borders, flipped blobs.

    Ignored pixels (255) stay ignored. ``strength`` 0 returns an identical copy.
    """
    if not 0.0 <= strength <= 1.0:
        raise InputError(f"label corruption strength must be in [0, 1], got {strength}")
    out = np.array(labels, dtype=np.uint8, copy=True)
    if strength == 0:
        return out
    out = drop_objects(out, class_set.groups.get("things", ()), 0.5 * strength, rng)
    out = jitter_boundaries(out, strength, rng)
    out = flip_blobs(out, class_set.num_classes, strength, rng)
    return out


def _fill_from_outside(labels: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Relabel ``region`` with the label of the nearest labelled pixel outside it (what a model would guess)."""
    blocked = region | (labels == IGNORE_INDEX)  # never copy 'ignore' into a labelled pixel
    if not region.any() or blocked.all():
        return labels
    _, (iy, ix) = ndimage.distance_transform_edt(blocked, return_indices=True)
    out = labels.copy()
    out[region] = labels[iy[region], ix[region]]
    return out


def drop_objects(labels: np.ndarray, things: tuple[int, ...], prob: float, rng: np.random.Generator) -> np.ndarray:
    """Remove each connected object of a 'thing' class with probability ``prob`` (a missed detection)."""
    out = labels
    for c in things:
        mask = (out == c).astype(np.uint8)
        if not mask.any():
            continue
        count, comp = cv2.connectedComponents(mask, connectivity=8)
        drop = np.flatnonzero(rng.random(count - 1) < prob) + 1
        if drop.size:
            out = _fill_from_outside(out, np.isin(comp, drop))
    return out


def jitter_boundaries(labels: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Grow or shrink every class region by its own random radius (up to ~4 % of the image size)."""
    h, w = labels.shape
    r_max = max(1.0, 0.04 * min(h, w)) * strength
    out = labels
    classes = [int(c) for c in np.unique(labels) if c != IGNORE_INDEX]
    for c in rng.permutation(classes):
        radius = int(round(r_max * rng.uniform(0.3, 1.0)))
        if radius < 1:
            continue
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        mask = (out == c).astype(np.uint8)
        if rng.random() < 0.5:
            grown = cv2.dilate(mask, kernel).astype(bool) & (out != IGNORE_INDEX)
            out = np.where(grown, np.uint8(c), out)
        else:
            kept = cv2.erode(mask, kernel, borderType=cv2.BORDER_REPLICATE).astype(bool)
            out = _fill_from_outside(out, mask.astype(bool) & ~kept)
    return out


def flip_blobs(labels: np.ndarray, num_classes: int, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Give random elliptical patches of one segment a wrong class (a confused region)."""
    h, w = labels.shape
    out = labels.copy()
    for _ in range(int(rng.poisson(8 * strength))):
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        src = int(out[cy, cx])
        if src == IGNORE_INDEX:
            continue
        axes = (max(1, int(min(h, w) * rng.uniform(0.03, 0.12) * (0.5 + strength))),
                max(1, int(min(h, w) * rng.uniform(0.03, 0.12) * (0.5 + strength))))
        blob = np.zeros((h, w), dtype=np.uint8)
        cv2.ellipse(blob, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        dst = int(rng.integers(num_classes - 1))
        dst = dst + 1 if dst >= src else dst  # any class but the true one
        out[(blob > 0) & (out == src)] = dst
    return out


def corrupt_label_dir(gt_root: str | Path, out_root: str | Path, strength: float, seed: int = 0,
                      classes: str = "cityscapes") -> dict:
    """Corrupt every label PNG under ``gt_root`` into the mirrored path under ``out_root``.

    Returns (and writes to ``out_root/corruption.json``) the noisy labels' mIoU against the ground
    truth: the noise level a training run on them will see.
    """
    gt_root, out_root = Path(gt_root), Path(out_root)
    cs = get_class_set(classes)
    files = sorted(p for p in gt_root.rglob("*.png") if not p.name.startswith("."))
    if not files:
        raise InputError(f"{gt_root}: no label PNGs found")
    if out_root.resolve() == gt_root.resolve():
        raise InputError(f"{out_root}: the output folder must differ from the ground-truth folder")
    refuse_inside(out_root, [gt_root], "--out")
    if not 0.0 <= strength <= 1.0:
        raise InputError(f"--strength must be in [0, 1], got {strength}")
    for path in tqdm(files, desc="check labels", unit="map"):  # every input checked before the first write
        _read_checked(path, cs)
    (out_root / "corruption.json").unlink(missing_ok=True)  # the summary is the completion marker: written last
    conf = np.zeros((cs.num_classes, cs.num_classes), dtype=np.int64)
    bar = tqdm(files, desc="corrupt labels", unit="map")
    for i, path in enumerate(bar):
        gt = _read_checked(path, cs)
        noisy = corrupt_labels(gt, cs, strength, np.random.default_rng([seed, i]))
        write_label_png(out_root / path.relative_to(gt_root), noisy)
        conf += confusion_matrix(gt, noisy, cs.num_classes)
    iou, miou = iou_scores(conf)
    report = {
        "gt": str(gt_root), "out": str(out_root), "strength": strength, "seed": seed, "classes": cs.name,
        "files": len(files), "miou": miou,
        "per_class_iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(cs.names, iou)},
    }
    write_json(out_root / "corruption.json", report)
    return report


def _read_checked(path: Path, cs: ClassSet) -> np.ndarray:
    """A ground-truth map whose ids all lie in the class set (255 = ignore)."""
    gt = read_label_png(path)
    top = int(gt[gt != IGNORE_INDEX].max(initial=0))
    if top >= cs.num_classes:
        raise InputError(f"{path}: class id {top} outside the {cs.name} set (0..{cs.num_classes - 1})")
    return gt


def default_class_set(gt_root: str | Path) -> str:
    """The class set named in ``gt_root/../meta.json`` (a `semhint synth` output), else cityscapes."""
    meta = Path(gt_root).parent / "meta.json"
    try:
        return str(json.loads(meta.read_text())["class_set"])
    except (OSError, ValueError, KeyError, TypeError):
        return "cityscapes"
