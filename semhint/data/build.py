"""The dataset of a config: which frames a split names, and their ground truth when validating.

The one place that turns a ``DataConfig`` into frames and a :class:`~semhint.data.snippets.SnippetDataset`,
so the layouts (KITTI raw, folders of frames, the SCARED and Hamlyn endoscopy sets) stay independent
of each other and of the Dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from semhint.core.config import DataConfig
from semhint.core.errors import ConfigError, InputError
from semhint.data import endoscopy, folder, kitti
from semhint.data.frames import FrameRef
from semhint.data.poses import snippet_poses
from semhint.data.snippets import SnippetDataset


def frame_refs(data_cfg: DataConfig, split_file: str) -> list[FrameRef]:
    """FrameRefs of a config's dataset for one split file ('' = every frame with all neighbours)."""
    if not data_cfg.path:
        raise ConfigError("data.path: empty; set it to the dataset root")
    if data_cfg.kind == "kitti":
        return kitti.frame_refs(data_cfg.path, split_file, data_cfg.frame_ids)
    if data_cfg.kind in endoscopy.KINDS:
        return endoscopy.frame_refs(data_cfg.kind, data_cfg.path, split_file, data_cfg.frame_ids)
    return folder.frame_refs(data_cfg.path, split_file, data_cfg.frame_ids, data_cfg.intrinsics, data_cfg.cache_dir,
                             fov=data_cfg.fov)


def build_dataset(data_cfg: DataConfig, split: str, train_gt: bool = False, num_classes: int = 0) -> SnippetDataset:
    """The train (augmented) or val (plain, with ground truth when configured) dataset of a DataConfig.

    ``train_gt`` also gives training snippets their ground-truth depth (the diagnostic hint operator
    "oracle" needs it); self-supervised training never sees it otherwise. ``num_classes`` (the
    model's, > 0) makes a label id outside the model's classes an error naming the label file.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    split_file = data_cfg.train_split if split == "train" else data_cfg.val_split
    if split == "val" and not split_file:
        raise ConfigError("data.val_split: empty; a validation set needs a split file")
    frames = frame_refs(data_cfg, split_file)
    gt_depths, gt_root = None, ""
    if (split == "val" or train_gt) and data_cfg.gt_depth:
        gt_depths, gt_root = _ground_truth(data_cfg.gt_depth, frames, data_cfg.kind)
    motions = snippet_poses(frames, data_cfg.poses, data_cfg.frame_ids) if data_cfg.poses else None
    return SnippetDataset(
        frames, data_cfg.height, data_cfg.width, data_cfg.frame_ids,
        augment=split == "train" and data_cfg.augment, flip=data_cfg.flip,
        jitter=(data_cfg.brightness, data_cfg.contrast, data_cfg.saturation, data_cfg.hue),
        labels=data_cfg.labels, gt_labels=data_cfg.gt_labels if split == "val" else "",
        gt_depth_root=gt_root, gt_depths=gt_depths, cache_dir=data_cfg.cache_dir, num_classes=num_classes,
        poses=motions,
    )


def _ground_truth(source: str, frames: list[FrameRef], kind: str = "") -> tuple[Sequence[np.ndarray] | None, str]:
    """An export-gt npz (checked against the split's frames), a root of uint16 depth PNGs, or
    ("layout", SCARED / Hamlyn) the dataset's own depth files, read when a frame is asked for."""
    if source == "layout":
        if kind not in endoscopy.KINDS:
            raise ConfigError(f"data.gt_depth: 'layout' needs data.kind scared or hamlyn, got {kind!r}")
        return endoscopy.LayoutDepths(kind, frames), ""
    if not source.endswith(".npz"):
        if not Path(source).is_dir():
            raise InputError(f"{source}: ground-truth depth folder not found (data.gt_depth)")
        return None, source
    return kitti.load_gt_for_frames(source, [ref.key for ref in frames]), ""
