"""The one evaluator of a trained run on a split: the seven metrics, AbsRel and log bias per class,
the branch's mIoU, and the refinement's hint statistics, next to the constant-depth reference.

The demo, the seed sweeps and every accuracy experiment call this module, so a number means the
same thing wherever it appears. Ground truth comes from a rendered world's layout (``gt_depth/``,
``gt_labels/`` and, where the renderer wrote it, ``gt_dynamic/`` mirroring the images).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from semhint.core.checkpoints import read_checkpoint
from semhint.core.config import Config, EvalConfig
from semhint.core.conventions import CITYSCAPES, IGNORE_INDEX, TISSUE, ClassSet
from semhint.core.fileio import read_depth_png, read_label_png, read_rgb
from semhint.data import kitti
from semhint.data.build import build_dataset, frame_refs
from semhint.data.frames import mirrored_path
from semhint.evaluation.metrics import evaluate_segmentation
from semhint.evaluation.protocols import DepthEvaluation, evaluate_depth
from semhint.inference import Predictor, load_predictor
from semhint.training import SemHintModule, collate_snippets

MOVING_GROUPS = ("car moving", "car parked")  # reported where the render has gt_dynamic/ (SynthDrive)


@dataclass(frozen=True)
class ReportSpec:
    """Which classes a world's reports break the error down by (ids of its class set)."""

    class_set: ClassSet
    classes: dict[str, tuple[int, ...]]  # report name -> class ids
    sky: int | None = None  # class whose border pixels ("sky-adjacent") are reported apart; None: none
    classes_from: str = "gt"  # "gt": ground-truth labels; "noisy": the labels a run learned from (real frames)


REPORTS = {
    "drive": ReportSpec(CITYSCAPES, {"car": (CITYSCAPES.id("car"),), "road": (CITYSCAPES.id("road"),),
                                     "pole": (CITYSCAPES.id("pole"),)}, sky=CITYSCAPES.id("sky")),
    "tissue": ReportSpec(TISSUE, {name: (TISSUE.id(name),) for name in TISSUE.names}),
    # real frames have LiDAR but no ground-truth classes: the error is broken down by the noisy labels
    "kitti": ReportSpec(CITYSCAPES, {name: (CITYSCAPES.id(name),) for name in
                                     ("road", "sidewalk", "building", "vegetation", "car", "pole", "traffic sign")},
                        sky=CITYSCAPES.id("sky"), classes_from="noisy"),
}


@dataclass
class SplitData:
    """The frames of one split with everything an evaluation compares against."""

    names: list[str]
    images: list[np.ndarray]  # uint8 H x W x 3
    depths: list[np.ndarray]  # exact depth, 0 = none
    gt_labels: list[np.ndarray] = field(default_factory=list)  # [] when the world has none
    noisy: list[np.ndarray] = field(default_factory=list)  # the noisy labels a run learned from ([] without)
    dynamic: list[np.ndarray] = field(default_factory=list)  # moving-object masks ([] unless rendered)


def load_split(cfg: Config, split: str | Path, root: str | Path, labels: str | Path = "") -> SplitData:
    """Test frames of a rendered world ``root`` (gt_depth/, gt_labels/, gt_dynamic/) for ``cfg``'s data layout.

    ``labels`` is a noisy label root to load beside them ('' = none). Moving-object masks are
    loaded only when every frame has one (renders made before gt_dynamic/ existed have none).
    """
    root = Path(root)
    refs = frame_refs(cfg.data, str(split))

    def maps(folder: Path) -> list[Path]:
        return [mirrored_path(folder, r.target, r.data_root) for r in refs]

    label_paths, dynamic_paths = maps(root / "gt_labels"), maps(root / "gt_dynamic")
    return SplitData(
        names=[r.key for r in refs], images=[read_rgb(r.target) for r in refs],
        depths=[read_depth_png(p) for p in maps(root / "gt_depth")],
        gt_labels=[read_label_png(p) for p in label_paths] if (root / "gt_labels").is_dir() else [],
        noisy=[read_label_png(p) for p in maps(Path(labels))] if labels else [],
        dynamic=[read_label_png(p) for p in dynamic_paths] if all(p.is_file() for p in dynamic_paths) else [])


def load_kitti_split(data_path: str | Path, split: str | Path, gt_npz: str | Path, labels: str | Path = "") -> SplitData:
    """Frames of a KITTI raw split with their LiDAR ground truth (an export-gt npz of the same split, checked)
    and, with ``labels`` (a root mirroring the images), the noisy labels a run learned from."""
    refs = kitti.frame_refs(data_path, split, [0])
    depths = kitti.load_gt_for_frames(gt_npz, [r.key for r in refs])
    noisy = [read_label_png(mirrored_path(labels, r.target, r.data_root)) for r in refs] if labels else []
    return SplitData(names=[r.key for r in refs], images=[read_rgb(r.target) for r in refs], depths=depths, noisy=noisy)


def predict_disparities(predictor: Predictor, images: list[np.ndarray], batch_size: int = 8) -> list[np.ndarray]:
    """Scaled disparities at network resolution (what the protocols resize themselves)."""
    return [d for i in range(0, len(images), batch_size) for d in predictor.predict_disparity_batch(images[i:i + batch_size])]


def _protocol(e: EvalConfig) -> dict:
    return dict(min_depth=e.min_depth, max_depth=e.max_depth, crop=e.crop, median_scaling=e.median_scaling)


def class_groups(labels: np.ndarray, depth: np.ndarray, spec: ReportSpec, band: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(group map: index into ``spec.classes`` or 255, sky-adjacent mask: 0 or 255) of one frame."""
    groups = np.full(labels.shape, IGNORE_INDEX, np.uint8)
    for g, ids in enumerate(spec.classes.values()):
        groups[np.isin(labels, ids)] = g
    sky_adjacent = np.full(labels.shape, IGNORE_INDEX, np.uint8)
    if spec.sky is not None:
        near = cv2.dilate((labels == spec.sky).astype(np.uint8), np.ones((2 * band + 1, 2 * band + 1), np.uint8))
        sky_adjacent[(near > 0) & (labels != spec.sky) & (depth > 0)] = 0
    return groups, sky_adjacent


def moving_groups(labels: np.ndarray, dynamic: np.ndarray, spec: ReportSpec) -> np.ndarray:
    """Group map of one frame: 0 = car moving on its own, 1 = parked car, 255 = neither.

    The two fail differently: a car that keeps the camera's speed looks static and reprojects best
    at infinite depth (a hole the auto-mask only hides), a parked car is plain rigid structure with
    textureless panels. Pooled into one "car" number the two causes cannot be told apart.
    """
    cars = np.isin(labels, spec.classes["car"])
    groups = np.full(labels.shape, IGNORE_INDEX, np.uint8)
    groups[cars & (dynamic == 0)] = 1
    groups[dynamic > 0] = 0
    return groups


def depth_report(disparities: list[np.ndarray], data: SplitData, eval_cfg: EvalConfig, spec: ReportSpec) -> dict:
    """The seven metrics, and (with ground-truth labels) AbsRel, log bias and range slope per reported
    class, sky-adjacent pixels and moving vs parked cars."""
    kw = _protocol(eval_cfg)
    out = {"metrics": evaluate_depth(disparities, data.depths, **kw).metrics(), "per_class_abs_rel": {},
           "per_class_log_bias": {}, "per_class_range_slope": {}}
    labels = data.gt_labels if spec.classes_from == "gt" else data.noisy
    if not labels:
        return out
    groups = [class_groups(lab, d, spec) for lab, d in zip(labels, data.depths)]
    passes: list[DepthEvaluation] = [evaluate_depth(disparities, data.depths, labels=[g for g, _ in groups],
                                                    class_names=list(spec.classes), **kw)]
    out["metrics"] = passes[0].metrics()
    if spec.sky is not None:
        passes.append(evaluate_depth(disparities, data.depths, labels=[s for _, s in groups],
                                     class_names=["sky-adjacent"], **kw))
    if data.dynamic and "car" in spec.classes:
        passes.append(evaluate_depth(disparities, data.depths, class_names=list(MOVING_GROUPS), **kw,
                                     labels=[moving_groups(lab, dyn, spec) for lab, dyn in zip(data.gt_labels, data.dynamic)]))
    for one in passes:
        for name, row in one.per_class_abs_rel.items():
            out["per_class_abs_rel"][name] = row["abs_rel"]
            out["per_class_log_bias"][name] = row["log_bias"]
            out["per_class_range_slope"][name] = row["range_slope"]
    return out


def constant_depth_report(data: SplitData, eval_cfg: EvalConfig, spec: ReportSpec) -> dict:
    """The trivial reference: one constant depth per image (median scaling picks its value)."""
    return depth_report([np.ones_like(d) for d in data.depths], data, eval_cfg, spec)


def per_class_sums(disparities: list[np.ndarray], data: SplitData, eval_cfg: EvalConfig,
                   class_set: ClassSet) -> dict[str, np.ndarray]:
    """Per ground-truth class, the pooled error sums of the protocol (``evaluation.metrics.CLASS_SUMS``):
    what an error budget adds up over runs."""
    result = evaluate_depth(disparities, data.depths, labels=data.gt_labels, class_names=list(class_set.names),
                            **_protocol(eval_cfg))
    return result.per_class_sums


def evaluate_run(checkpoint: str | Path, data: SplitData, spec: ReportSpec, split: str | Path | None = None,
                 cfg: Config | None = None) -> dict:
    """Everything the tables report about one trained run on ``data``.

    ``cfg`` (default: the checkpoint's own) gives the protocol and, for the refinement statistics,
    the dataset to read ``split`` from. Keys: ``metrics``, ``per_class_*``, ``depth_spread`` (median
    over frames of the 95th / 5th percentile ratio of the unscaled depth; about 1 = a collapsed,
    constant map) and, for a run with a segmentation branch, ``branch_miou``, ``noisy_labels_test_miou``,
    ``branch_vs_noisy_miou`` and ``refine_test`` (:func:`refine_diagnostics`).
    """
    predictor = load_predictor(checkpoint)
    cfg = cfg or predictor.config
    disparities = predict_disparities(predictor, data.images)
    out = depth_report(disparities, data, cfg.eval, spec)
    out["depth_spread"] = float(np.median([np.percentile(1 / d, 95) / np.percentile(1 / d, 5) for d in disparities]))
    classes = cfg.model.num_classes
    if classes and (data.gt_labels or data.noisy):
        preds = [p for i in range(0, len(data.images), 8) for p in predictor.predict_segmentation_batch(data.images[i:i + 8])]
        if data.gt_labels:
            out["branch_miou"] = evaluate_segmentation(data.gt_labels, preds, classes)["miou"]
        if data.gt_labels and data.noisy:
            out["noisy_labels_test_miou"] = evaluate_segmentation(data.gt_labels, data.noisy, classes)["miou"]
        if data.noisy:  # on real frames the only reference: does the branch still agree with its labels?
            out["branch_vs_noisy_miou"] = evaluate_segmentation(data.noisy, preds, classes)["miou"]
    if classes and (cfg.refine.hint or cfg.refine.pseudo_seg) and split is not None:
        out["refine_test"] = refine_diagnostics(checkpoint, cfg, split)
    return out


def refine_diagnostics(checkpoint: str | Path, cfg: Config, split: str | Path, batches: int = 4) -> dict:
    """The refinement statistics of the TRAINED model on ``split``'s snippets, with ground truth at hand.

    Runs the training objective (refinements forced on, no gradient) on ``batches`` batches spread
    over the split: the gate's acceptance rate, and on accepted pixels the AbsRel of the hint vs
    the prediction it would replace (is the hint worth learning from?); the pseudo-label rate and
    the accuracy of pseudo vs noisy labels against ground truth (do they denoise?).
    """
    cfg = dataclasses.replace(cfg, refine=dataclasses.replace(cfg.refine, warmup_epochs=0),
                              data=dataclasses.replace(cfg.data, val_split=str(split)))
    module = SemHintModule(cfg)
    module.load_state_dict(read_checkpoint(checkpoint).state_dict)
    module.eval()
    dataset = build_dataset(cfg.data, "val")
    picks = np.linspace(0, len(dataset) - 1, batches * cfg.optim.batch_size).round().astype(int)
    sums: dict[str, list[float]] = {}
    with torch.no_grad():
        for i in range(0, len(picks), cfg.optim.batch_size):
            batch = collate_snippets([dataset[int(j)] for j in picks[i:i + cfg.optim.batch_size]])
            batch.update({f"image_aug/{f}": batch[f"image/{f}"] for f in cfg.data.frame_ids})
            losses, _, _ = module.objective(batch)
            for key, value in losses.items():
                if key.startswith("refine/"):
                    sums.setdefault(key[len("refine/"):], []).append(float(value))
    return {k: float(np.mean(v)) for k, v in sums.items()}
