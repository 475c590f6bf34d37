"""The torch Dataset that turns a list of frames into training snippets (docs/ARCHITECTURE.md).

One sample = a target frame and its neighbours, resized to the network resolution, with the
intrinsics scaled to match, optional noisy labels, and (for validation) ground truth. Augmentation
draws one flip and one colour jitter per snippet and applies it to every frame, because the
photometric loss compares frames with each other and would otherwise see the jitter as motion.

Decoding a 1242 x 375 PNG costs far more than everything else a sample needs, so with
``data.cache_dir`` each frame is resized once and kept on disk as a small .npy.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from semhint.core import geometry
from semhint.core.conventions import IGNORE_INDEX
from semhint.core.fileio import InputError, read_depth_png, read_label_png, read_rgb, save_npy
from semhint.data.frames import DirListing, FrameRef, mirrored_path
from semhint.data.poses import flip_pose


# ----------------------------------------------------------------------------------------------
# decoding, resizing and the on-disk cache
# ----------------------------------------------------------------------------------------------
def resize_array(array: np.ndarray, hw: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """Resize H x W (x C) uint8 to ``hw``: area averaging when shrinking, bilinear when growing, nearest for labels."""
    h, w = hw
    if array.shape[:2] == (h, w):
        return array
    if nearest:
        mode = cv2.INTER_NEAREST
    else:
        mode = cv2.INTER_AREA if h <= array.shape[0] and w <= array.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(array, (w, h), interpolation=mode)


def cache_file(cache_dir: str | Path, path: Path, hw: tuple[int, int], kind: str) -> Path:
    """Where the resized copy of ``path`` lives: keyed by path, size and mtime, so edits invalidate it."""
    st = os.stat(path)
    key = hashlib.sha1(f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{kind}".encode()).hexdigest()
    return Path(cache_dir) / f"{kind}_{hw[0]}x{hw[1]}" / key[:2] / f"{key}.npy"


def load_resized(path: Path, hw: tuple[int, int], cache_dir: str | Path = "", kind: str = "rgb",
                 expect_hw: tuple[int, int] | None = None) -> np.ndarray:
    """An image (``kind="rgb"``, H x W x 3) or label map (``"label"``, H x W) as uint8 at ``hw``.

    With ``cache_dir`` the resized array is read from, or written once (atomically, so parallel
    workers never see half a file) to, the cache; a damaged cache file is simply rebuilt.
    ``expect_hw`` is the stored size the file must have (checked when it is decoded): a frame of
    another size in a sequence, or a label map of another size than its frame, would otherwise be
    resized to the network size without a word, with the wrong intrinsics or misplaced classes.
    """
    if not cache_dir:
        return _decode_resized(path, hw, kind, expect_hw)
    if not os.path.isfile(path):  # the cache key needs the file; keep the reader's error message
        return _decode_resized(path, hw, kind, expect_hw)
    target = cache_file(cache_dir, path, hw, kind)
    if target.is_file():
        try:
            return np.load(target, allow_pickle=False)
        except (ValueError, OSError, EOFError):
            pass
    array = _decode_resized(path, hw, kind, expect_hw)
    save_npy(target, np.ascontiguousarray(array))
    return array


def _decode_resized(path: Path, hw: tuple[int, int], kind: str, expect_hw: tuple[int, int] | None = None) -> np.ndarray:
    array = read_label_png(path) if kind == "label" else decode_rgb(path)
    if expect_hw is not None and tuple(array.shape[:2]) != tuple(expect_hw):
        h, w = array.shape[:2]
        what = "label map is" if kind == "label" else "frame is"
        other = "its frame is" if kind == "label" else "the first frame of its sequence is"
        raise InputError(f"{path}: {what} {w}x{h} but {other} {expect_hw[1]}x{expect_hw[0]} (width x height)")
    return resize_array(array, hw, nearest=kind == "label")


def ends_complete(path: Path) -> bool:
    """Whether a PNG ends with its IEND chunk or a JPEG with its end-of-image marker.

    OpenCV decodes a truncated file into half an image (grey below the cut) with only a warning;
    Pillow refuses it. Checking the last bytes costs one small read, so the fast OpenCV path is
    taken only for files that are whole, and every other file goes through Pillow's strict reader
    (the one `semhint predict` uses): a truncated frame is an error in training as in prediction.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64))
            tail = fh.read()
    except OSError:
        return False
    if head.startswith(b"\x89PNG"):
        return tail.endswith(b"IEND\xaeB`\x82")
    if head.startswith(b"\xff\xd8"):
        return b"\xff\xd9" in tail
    return False


def decode_rgb(path: Path) -> np.ndarray:
    """uint8 H x W x 3 RGB, decoded by OpenCV (about 1.8x faster than Pillow on KITTI PNGs).

    EXIF orientation is ignored, as Pillow does in fileio.read_rgb, so cached and uncached frames
    agree (16-bit greyscale too: both keep the high byte). When the file is not a whole PNG or JPEG
    (see :func:`ends_complete`), or OpenCV cannot decode it, fileio.read_rgb decodes it or gives
    the one-line InputError.
    """
    if not ends_complete(path):
        return read_rgb(path)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None:
        return read_rgb(path)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# ----------------------------------------------------------------------------------------------
# colour jitter (one draw per snippet)
# ----------------------------------------------------------------------------------------------
def draw_jitter(brightness: float, contrast: float, saturation: float, hue: float,
                generator: torch.Generator | None = None) -> dict[str, float]:
    """Random factors in the ColorJitter convention: [max(0, 1 - x), 1 + x] for the first three, [-hue, hue] turns."""

    def uniform(lo: float, hi: float) -> float:
        return float(lo + (hi - lo) * torch.rand((), generator=generator))

    return {
        "brightness": uniform(max(0.0, 1 - brightness), 1 + brightness),
        "contrast": uniform(max(0.0, 1 - contrast), 1 + contrast),
        "saturation": uniform(max(0.0, 1 - saturation), 1 + saturation),
        "hue": uniform(-hue, hue),
    }


def apply_jitter(image: np.ndarray, params: dict[str, float]) -> np.ndarray:
    """Brightness, contrast, saturation, hue (in that order) on an H x W x 3 uint8 RGB image.

    Uses OpenCV's saturating uint8 arithmetic, as ColorJitter does on uint8 tensors. That is about
    8x faster than the same operations on float tensors (1.5 vs 12.8 ms per 192 x 640 frame on
    one core) and matters: in float, jitter was most of a cached snippet's cost. Results differ
    from the float computation by half a grey level on average. Contrast blends towards the
    frame's mean luma and saturation towards each pixel's luma (BT.601 weights); hue is rotated
    in HSV with 256 steps per turn.
    """
    out = cv2.convertScaleAbs(image, alpha=params["brightness"])
    mean = float(cv2.cvtColor(out, cv2.COLOR_RGB2GRAY).mean())
    out = cv2.addWeighted(out, params["contrast"], out, 0.0, mean * (1.0 - params["contrast"]))
    luma = cv2.cvtColor(cv2.cvtColor(out, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    out = cv2.addWeighted(out, params["saturation"], luma, 1.0 - params["saturation"], 0.0)
    steps = int(round(params["hue"] * 256)) % 256
    if steps:
        hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV_FULL)
        hsv[..., 0] += np.uint8(steps)  # uint8 wraps around: a rotation
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)
    return out


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """H x W x 3 uint8 to float32 3 x H x W in [0, 1]."""
    return torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1).float().div_(255.0)


# ----------------------------------------------------------------------------------------------
# the dataset
# ----------------------------------------------------------------------------------------------
class SnippetDataset(Dataset):
    """Snippets (target + neighbours) as the sample dicts of docs/ARCHITECTURE.md.

    ``labels`` / ``gt_labels`` / ``gt_depth_root`` are roots mirroring the image layout (see
    :func:`semhint.data.mirrored_path`); ``gt_depths`` is an in-memory list ordered like ``frames``
    (from an export-gt npz); ``poses`` (``data.poses``), ordered like ``frames``, adds each
    source's given motion as ``pose/{f}``. Augmentation (``augment``): with probability 0.5 a horizontal flip
    (if ``flip``) and, independently with probability 0.5, one colour-jitter draw, both shared by
    all frames of the snippet; ``image/{f}`` stay un-jittered for the losses.
    """

    def __init__(self, frames: Sequence[FrameRef], height: int, width: int, frame_ids: Sequence[int],
                 augment: bool = False, flip: bool = True,
                 jitter: tuple[float, float, float, float] = (0.2, 0.2, 0.2, 0.1),
                 labels: str | Path = "", gt_labels: str | Path = "", gt_depth_root: str | Path = "",
                 gt_depths: Sequence[np.ndarray] | None = None, cache_dir: str | Path = "",
                 num_classes: int = 0, poses: Sequence[dict[int, np.ndarray]] | None = None) -> None:
        if not frames:
            raise InputError("the dataset has no frames (empty split)")
        self.frames = list(frames)
        self.hw = (int(height), int(width))
        self.frame_ids = list(frame_ids)
        self.augment, self.flip, self.jitter = augment, flip, tuple(jitter)
        self.labels, self.gt_labels, self.gt_depth_root = labels, gt_labels, gt_depth_root
        self.cache_dir = str(cache_dir or "")
        self.num_classes = int(num_classes)  # > 0: label ids must be below it (or 255, ignore)
        if gt_depths is not None and len(gt_depths) != len(self.frames):
            raise InputError(f"ground truth has {len(gt_depths)} depth maps for {len(self.frames)} frames")
        self.gt_depths = gt_depths
        if poses is not None and len(poses) != len(self.frames):
            raise InputError(f"given poses for {len(poses)} snippets, but the dataset has {len(self.frames)} frames")
        self.poses = poses  # data.poses: per frame, offset -> 4 x 4 target->source motion
        self._check_maps()
        self._log_resize_policy()

    def _log_resize_policy(self, tolerance: float = 0.1) -> None:
        """Frames are resized to data.height x data.width whatever their aspect, with K scaled per
        axis (geometry stays right, but the picture is stretched): said once, in the log, when the
        aspects differ by more than ``tolerance`` (relative), so a mistyped width is noticed."""
        stored = next((ref.image_hw for ref in self.frames if ref.image_hw), None)
        if stored is None:
            return
        a_net, a_img = self.hw[1] / self.hw[0], stored[1] / stored[0]
        if abs(math.log(a_net / a_img)) > tolerance:
            warnings.warn(f"data.height/width {self.hw[0]}x{self.hw[1]} (aspect {a_net:.2f}) differ from the frames' "
                          f"{stored[0]}x{stored[1]} (aspect {a_img:.2f}): frames are stretched to the network size and "
                          "the intrinsics scaled per axis", stacklevel=2)

    def _check_maps(self) -> None:
        """Fail at construction, naming the frame, when a mirrored label or depth file is missing."""
        listing = DirListing()
        for ref in self.frames:
            maps = ((self.labels, self.frame_ids, "label map"), (self.gt_labels, [0], "ground-truth label map"),
                    (self.gt_depth_root, [0], "ground-truth depth"))
            for root, offsets, what in maps:
                if not root:
                    continue
                for f in offsets:
                    path = mirrored_path(root, ref.images[f], ref.data_root)
                    if not listing.exists(path):
                        raise InputError(f"{path}: {what} not found (frame '{ref.key}', offset {f:+d})")

    def __len__(self) -> int:
        return len(self.frames)

    def intrinsics(self, ref: FrameRef, flipped: bool) -> torch.Tensor:
        """4 x 4 K at network resolution (scaled from the calibration's resolution, then flipped)."""
        K = torch.eye(4, dtype=torch.float32)
        K[:3, :3] = torch.as_tensor(ref.K, dtype=torch.float32)
        K = geometry.resize_intrinsics(K, ref.K_hw, self.hw)
        return geometry.flip_intrinsics(K, self.hw[1]) if flipped else K

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ref = self.frames[index]
        flipped = self.augment and self.flip and bool(torch.rand(()) < 0.5)
        params = draw_jitter(*self.jitter) if self.augment and bool(torch.rand(()) < 0.5) else None
        sample: dict[str, torch.Tensor] = {}
        for f in self.frame_ids:
            rgb = load_resized(ref.images[f], self.hw, self.cache_dir, "rgb", ref.image_hw)
            if flipped:
                rgb = np.ascontiguousarray(rgb[:, ::-1])
            image = to_tensor(rgb)
            sample[f"image/{f}"] = image
            sample[f"image_aug/{f}"] = to_tensor(apply_jitter(rgb, params)) if params else image
            if self.labels:
                sample[f"labels/{f}"] = self._label(self.labels, ref, f, flipped)
        if self.gt_labels:
            sample["gt_labels/0"] = self._label(self.gt_labels, ref, 0, flipped)
        if self.gt_depths is not None:
            sample["depth_gt"] = torch.from_numpy(np.asarray(self.gt_depths[index], dtype=np.float32)).unsqueeze(0)
        elif self.gt_depth_root:
            depth = read_depth_png(mirrored_path(self.gt_depth_root, ref.target, ref.data_root))
            sample["depth_gt"] = torch.from_numpy(depth).unsqueeze(0)
        if "depth_gt" in sample and flipped:
            sample["depth_gt"] = sample["depth_gt"].flip(-1)
        K = self.intrinsics(ref, flipped)
        sample["K"], sample["inv_K"] = K, torch.linalg.inv(K)
        if self.poses is not None:
            for f, T in self.poses[index].items():
                sample[f"pose/{f}"] = torch.from_numpy(flip_pose(T) if flipped else T)
        sample["index"] = torch.tensor(index, dtype=torch.int64)
        # a mirrored camera: what is measured against the camera's x axis changes sign (refine.ground_roll_votes)
        sample["flipped"] = torch.tensor(flipped)
        return sample

    def _label(self, root: str | Path, ref: FrameRef, f: int, flipped: bool) -> torch.Tensor:
        path = mirrored_path(root, ref.images[f], ref.data_root)
        labels = load_resized(path, self.hw, self.cache_dir, "label", ref.image_hw)
        if self.num_classes > 0:
            known = labels[labels != IGNORE_INDEX]
            if known.size and int(known.max()) >= self.num_classes:
                raise InputError(f"{path}: class id {int(known.max())} outside the model's classes "
                                 f"0..{self.num_classes - 1} (model.num_classes; 255 = ignore)")
        if flipped:
            labels = labels[:, ::-1]
        return torch.from_numpy(np.require(labels, requirements=["C", "W"])).long()
