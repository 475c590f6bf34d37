"""Endoscopy layouts: SCARED keyframes with their stereo calibration, and the rectified Hamlyn sequences.

SCARED (MICCAI 2019 EndoVis sub-challenge), unpacked the way AF-SfMLearner and EndoDAC read it::

    ROOT/dataset3/keyframe4/image_02/data/0000000390.png       (left frames; image_03 = right)
    ROOT/dataset3/keyframe4/image_02/data/groundtruth/scene_points000389.tiff   (optional ground truth)
    ROOT/dataset3/keyframe4/endoscope_calibration.yaml          (or one in dataset3/ for all keyframes)

Split lines are ``dataset3/keyframe4 390 l`` (side optional, default l). Intrinsics are M1 (left) or
M2 (right) of the keyframe's OpenCV FileStorage calibration, in pixels of SCARED's native 1280 x 1024
frames (stored frames of another size with that aspect are treated as resized copies; the
distortion D1/D2 is ignored, as the community does). Ground truth for frame F is
``scene_points{F-1:06d}.tiff`` (the scene points count from 0, the frames from 1): per pixel the 3D
point in mm, left view over right view; its z channel is the depth.

Hamlyn (the rectified sequences as distributed by Recasens et al., "Endo-Depth-and-Motion")::

    ROOT/rectified01/image01/0000000001.jpg    (left frames; image02 = right)
    ROOT/rectified01/depth01/0000000001.png    (uint16 depth in mm from stereo, 0 = none; depth02 = right)
    ROOT/rectified01/intrinsics.txt            (3 x 3 K, 3 x 4 P or "fx fy cx cy"; or one in ROOT)

Split lines are ``rectified01 1 l``, the frame being the number at the end of the file name. A ROOT
that is one sequence folder itself (with image01/ in it) is the sequence ``.``.

No real endoscopic data ships with semhint (both sets are under licence): the tests read small
fabricated copies of these layouts.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from semhint.core.fileio import (
    WIDE_GREY_MODES,
    InputError,
    check_output_file,
    read_image_array,
    remove_stale_temps,
    save_npz,
)
from semhint.data import kitti
from semhint.data.frames import DirListing, FrameRef, check_aspect, check_camera, image_hw, split_entries

KINDS = ("scared", "hamlyn")
SCARED_CALIBRATION = "endoscope_calibration.yaml"
SCARED_HW = (1024, 1280)  # (height, width) of one SCARED view: what M1 / M2 describe
SCARED_MATRIX = {"l": "M1", "r": "M2"}
HAMLYN_IMAGES = {"l": "image01", "r": "image02"}
HAMLYN_DEPTHS = {"l": "depth01", "r": "depth02"}
HAMLYN_INTRINSICS = "intrinsics.txt"
SPLIT_FORMATS = {"scared": "datasetN/keyframeM FRAME l|r", "hamlyn": "rectifiedNN FRAME l|r"}
_TRAILING_NUMBER = re.compile(r"(\d+)$")


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise InputError(f"endoscopy layout must be one of {', '.join(KINDS)}, got {kind!r}")


def parse_split_line(kind: str, text: str, lineno: int, source: str | Path) -> tuple[str, int, str]:
    """``"FOLDER FRAME [l|r]"`` to (folder, frame, side); anything else is an InputError naming the line."""
    parts = text.split()
    if len(parts) not in (2, 3) or not parts[1].isdigit() or (len(parts) == 3 and parts[2] not in ("l", "r")):
        raise InputError(f"{source} line {lineno}: expected '{SPLIT_FORMATS[kind]}', got '{text}'")
    return parts[0].strip("/") or ".", int(parts[1]), parts[2] if len(parts) == 3 else "l"


# ----------------------------------------------------------------------------------------------
# calibration
# ----------------------------------------------------------------------------------------------
def _opencv_error(exc: BaseException) -> str:
    """OpenCV's parse error (Python wraps it in a SystemError) as one short line."""
    text = " ".join(str(exc.__cause__ or exc).split())
    return text.split(") ", 1)[-1][:160] if text else exc.__class__.__name__


def read_scared_calibration(path: str | Path, side: str = "l") -> np.ndarray:
    """The 3 x 3 camera matrix (M1 for ``l``, M2 for ``r``) of a SCARED ``endoscope_calibration.yaml``.

    The file is OpenCV FileStorage YAML (``%YAML:1.0``, ``!!opencv-matrix`` tags), which PyYAML
    cannot read; OpenCV reads it. Every entry must be finite, fx and fy positive and the principal
    point inside the 1280 x 1024 view the matrix describes.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: SCARED calibration file not found")
    key = SCARED_MATRIX[side]
    try:
        storage = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
        if not storage.isOpened():
            raise InputError(f"{path}: cannot open calibration (not OpenCV FileStorage YAML)")
        try:
            node = storage.getNode(key)
            matrix = None if node.empty() or node.isNone() else node.mat()
        finally:
            storage.release()
    except (cv2.error, SystemError) as exc:
        raise InputError(f"{path}: cannot parse calibration ({_opencv_error(exc)})") from None
    if matrix is None:
        raise InputError(f"{path}: no {key} camera matrix (expected an !!opencv-matrix named {key})")
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (3, 3):
        raise InputError(f"{path}: {key} must be a 3 x 3 matrix, got shape {matrix.shape}")
    check_camera(matrix, SCARED_HW, f"{path}: {key}")
    return matrix


def find_scared_calibration(root: Path, folder: str) -> Path:
    """The keyframe's calibration file, else its dataset folder's; a missing one names both places."""
    for place in (root / folder, (root / folder).parent):
        if (place / SCARED_CALIBRATION).is_file():
            return place / SCARED_CALIBRATION
    raise InputError(f"{root / folder / SCARED_CALIBRATION}: SCARED calibration file not found "
                     f"(nor in {(root / folder).parent}); copy the keyframe's {SCARED_CALIBRATION} there")


def read_hamlyn_intrinsics(path: str | Path) -> np.ndarray:
    """3 x 3 K from a Hamlyn ``intrinsics.txt``: 9 numbers (K), 12 (a 3 x 4 P, K = its left 3 x 3) or
    4 (fx fy cx cy), whitespace or comma separated; every number must be finite, fx and fy positive."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: Hamlyn intrinsics file not found")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read intrinsics ({exc.__class__.__name__})") from None
    tokens = text.replace(",", " ").replace("[", " ").replace("]", " ").split()
    try:
        values = np.array([float(t) for t in tokens], dtype=np.float64)
    except ValueError:
        bad = next(t for t in tokens if not _is_number(t))
        raise InputError(f"{path}: intrinsics must be numbers, got {bad!r}") from None
    if values.size == 4:
        fx, fy, cx, cy = values
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    elif values.size in (9, 12):
        K = values.reshape(3, -1)[:, :3].copy()
    else:
        raise InputError(f"{path}: expected 9 numbers (3 x 3 K), 12 (3 x 4 P) or 4 (fx fy cx cy), got {values.size}")
    if not np.isfinite(K).all():
        raise InputError(f"{path}: intrinsics have non-finite values ({' '.join(f'{v:g}' for v in K.ravel())})")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise InputError(f"{path}: fx and fy must be positive, got {K[0, 0]:g}, {K[1, 1]:g}")
    if not np.allclose(K[2], [0.0, 0.0, 1.0]):
        raise InputError(f"{path}: the last row of K must be 0 0 1, got {' '.join(f'{v:g}' for v in K[2])}")
    return K


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def find_hamlyn_intrinsics(root: Path, sequence: str) -> Path:
    """The sequence's intrinsics.txt, else ROOT's."""
    for place in (root / sequence, root):
        if (place / HAMLYN_INTRINSICS).is_file():
            return place / HAMLYN_INTRINSICS
    raise InputError(f"{root / sequence / HAMLYN_INTRINSICS}: Hamlyn intrinsics file not found (nor in {root})")


# ----------------------------------------------------------------------------------------------
# frames
# ----------------------------------------------------------------------------------------------
def numbered_frames(listing: DirListing, folder: Path) -> dict[int, Path]:
    """Images of a folder by the number that ends their name (``0000000001.jpg``, ``frame000001.jpg``)."""
    frames: dict[int, Path] = {}
    for path in listing.sorted_images(folder):
        match = _TRAILING_NUMBER.search(path.stem)
        if match:
            frames.setdefault(int(match.group(1)), path)
    return frames


def frame_folder(kind: str, root: Path, folder: str, side: str) -> Path:
    """Where a sequence's frames of one side are."""
    return kitti.image_dir(root, folder, side) if kind == "scared" else root / folder / HAMLYN_IMAGES[side]


def _frames(kind: str, listing: DirListing, folder: Path) -> dict[int, Path]:
    return listing.numbered_images(folder) if kind == "scared" else numbered_frames(listing, folder)


def sequences(kind: str, root: str | Path) -> list[str]:
    """Every keyframe (SCARED: DATASET/KEYFRAME with image_02/data) or sequence (Hamlyn: a folder with
    image01) under ``root``, relative and sorted."""
    root = Path(root)
    if kind == "scared":
        return kitti.drive_folders(root)
    found = [p.parent.relative_to(root).as_posix() for p in root.glob(f"*/{HAMLYN_IMAGES['l']}") if p.is_dir()]
    if (root / HAMLYN_IMAGES["l"]).is_dir():
        found.append(".")
    return sorted(found)


def scan_split_lines(kind: str, root: str | Path, frame_ids: list[int], stride: int = 1,
                     listing: DirListing | None = None) -> list[str]:
    """Split lines for every frame (every ``stride``-th) whose neighbours all exist, both sides."""
    _check_kind(kind)
    root = Path(root)
    listing = listing or DirListing()
    lines = []
    for folder in sequences(kind, root):
        for side in ("l", "r"):
            frames = _frames(kind, listing, frame_folder(kind, root, folder, side))
            ok = [i for i in sorted(frames) if all(i + f in frames for f in frame_ids)]
            lines += [f"{folder} {i} {side}" for i in ok[::stride]]
    return lines


def snippet_images(kind: str, root: Path, folder: str, frame: int, side: str, frame_ids: Sequence[int],
                   listing: DirListing, where: str) -> dict[int, Path]:
    """Image of every frame offset of a snippet; a missing one is an InputError naming ``where``."""
    path = frame_folder(kind, root, folder, side)
    frames = _frames(kind, listing, path)
    if not frames:
        raise InputError(f"{where}: no images in {path}")
    images = {}
    for f in frame_ids:
        if frame + f not in frames:
            what = "frame" if f == 0 else f"neighbour {f:+d} (frame {frame + f})"
            raise InputError(f"{where}: {what} not found in {path}")
        images[f] = frames[frame + f]
    return images


def _camera(kind: str, root: Path, folder: str, side: str, first: Path) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """(K, the size it describes, the stored frames' size) of one sequence side, checked against each other."""
    stored = image_hw(first)
    if kind == "scared":
        source = find_scared_calibration(root, folder)
        K, K_hw = read_scared_calibration(source, side), SCARED_HW
        check_aspect(K_hw, stored, f"{source} (frames in {first.parent})")
    else:
        source = find_hamlyn_intrinsics(root, folder)
        K, K_hw = read_hamlyn_intrinsics(source), stored
        check_camera(K, K_hw, f"{source} (frames in {first.parent})")
    return K, K_hw, stored


def frame_refs(kind: str, root: str | Path, split: str | Path | None, frame_ids: list[int]) -> list[FrameRef]:
    """FrameRefs for a split file, or for every frame with all neighbours when ``split`` is empty."""
    _check_kind(kind)
    root = Path(root)
    name = "SCARED" if kind == "scared" else "Hamlyn"
    if not root.is_dir():
        raise InputError(f"{root}: {name} dataset root not found")
    listing = DirListing()
    expected = ("no SCARED keyframe folders with frames (expected datasetN/keyframeM/image_02/data/*.png)"
                if kind == "scared" else "no Hamlyn sequences with frames (expected rectifiedNN/image01/*.jpg)")
    entries = split_entries(split, root, lambda: scan_split_lines(kind, root, frame_ids, listing=listing),
                            lambda text, i, src: parse_split_line(kind, text, i, src), expected)
    cameras: dict[tuple[str, str], tuple[np.ndarray, tuple[int, int], tuple[int, int]]] = {}
    refs = []
    for (folder, frame, side), where in entries:
        images = snippet_images(kind, root, folder, frame, side, frame_ids, listing, where)
        if (folder, side) not in cameras:
            first = _frames(kind, listing, frame_folder(kind, root, folder, side))
            cameras[(folder, side)] = _camera(kind, root, folder, side, first[min(first)])
        K, K_hw, stored = cameras[(folder, side)]
        refs.append(FrameRef(key=f"{folder} {frame} {side}", images=images, K=K, K_hw=K_hw, data_root=root,
                             image_hw=stored))
    return refs


# ----------------------------------------------------------------------------------------------
# ground truth (millimetres)
# ----------------------------------------------------------------------------------------------
def scared_gt_path(root: Path, folder: str, frame: int, side: str) -> Path:
    """``image_0X/data/groundtruth/scene_points{frame - 1:06d}.tiff`` (scene points count from 0)."""
    return kitti.image_dir(root, folder, side) / "groundtruth" / f"scene_points{frame - 1:06d}.tiff"


def read_scene_points(path: str | Path, side: str = "l") -> np.ndarray:
    """Depth in mm (H x W float32, 0 = none) from a SCARED scene-points TIFF: per pixel x, y, z in mm.

    The z channel is the depth (what OpenCV reads as channel 0, channels reversed, as the
    community's export does). A map as tall as two views (left over right, 2048 x 1280) gives the
    ``side``'s half. Non-finite and non-positive points are pixels without a measurement.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: SCARED ground-truth scene points not found")
    points = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if points is None:
        raise InputError(f"{path}: cannot decode scene points (expected a 3-channel float TIFF)")
    if points.ndim != 3 or points.shape[2] != 3 or points.dtype.kind != "f":
        raise InputError(f"{path}: scene points must be an H x W x 3 float image (x, y, z in mm), "
                         f"got shape {points.shape} of {points.dtype}")
    depth = points[:, :, 0].astype(np.float32)
    h, w = depth.shape
    if abs(math.log((h / w) / (2 * SCARED_HW[0] / SCARED_HW[1]))) < 0.02:  # left view over right view
        depth = depth[: h // 2] if side == "l" else depth[h // 2:]
    return np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)


def hamlyn_gt_path(image: Path, side: str) -> Path:
    """The depth PNG beside a Hamlyn frame: ``depth01/<frame name>.png`` for ``image01/<frame name>.jpg``."""
    return image.parent.parent / HAMLYN_DEPTHS[side] / f"{image.stem}.png"


def read_hamlyn_depth(path: str | Path) -> np.ndarray:
    """Depth in mm (H x W float32, 0 = none) from a Hamlyn uint16 depth PNG (value = millimetres)."""
    raw = read_image_array(path, "Hamlyn depth PNG", modes=WIDE_GREY_MODES, mode_rule="16-bit single-channel")
    return raw.astype(np.float32)


def _gt_reader(kind: str, ref: FrameRef) -> tuple[Callable[[], np.ndarray], Path]:
    folder, frame, side = parse_split_line(kind, ref.key, 0, "frame")
    if kind == "scared":
        path = scared_gt_path(ref.data_root, folder, frame, side)
        return (lambda: read_scene_points(path, side)), path
    path = hamlyn_gt_path(ref.target, side)
    return (lambda: read_hamlyn_depth(path)), path


class LayoutDepths(Sequence):
    """The ground-truth depth (mm) of each frame, read from the dataset's own files when asked for.

    Stands in for an in-memory list (``SnippetDataset(gt_depths=...)``): a SCARED test split at
    1280 x 1024 would hold gigabytes. Every file is checked to exist when this is made, so a missing
    one fails before training, naming the frame; its aspect must be its frame's (evaluation resizes
    the prediction to the ground truth's size).
    """

    def __init__(self, kind: str, frames: Sequence[FrameRef]) -> None:
        _check_kind(kind)
        self.kind = kind
        self.items = []
        for ref in frames:
            _, path = _gt_reader(kind, ref)
            if not path.is_file():
                raise InputError(f"{path}: ground-truth depth not found (frame '{ref.key}')")
            self.items.append(ref)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> np.ndarray:  # type: ignore[override]
        ref = self.items[index]
        read, path = _gt_reader(self.kind, ref)
        depth = read()
        if ref.image_hw is not None:  # evaluation resizes the prediction to the ground truth: only the aspect must agree
            (h, w), (fh, fw) = depth.shape, ref.image_hw
            if abs(math.log((w / h) / (fw / fh))) > 0.02:
                raise InputError(f"{path}: depth is {w}x{h} but its frame is {fw}x{fh} (width x height): "
                                 "the aspects differ")
        return depth


def export_gt(kind: str, data_path: str | Path, split: str | Path, output: str | Path, progress: bool = True) -> Path:
    """Write the ground truth (mm) of every line of a split to an npz (``semhint endoscopy export-gt``).

    The same keys as ``semhint kitti export-gt`` writes (``gt_depths`` N x H x W float32, 0 = none;
    ``sizes``; ``frames`` = the split lines), so `semhint evaluate --gt` and ``data.gt_depth`` read it.
    """
    output = check_output_file(output, "--output")
    if output.suffix != ".npz":
        raise InputError(f"{output}: --output must be an .npz file")
    remove_stale_temps(output.parent, of=output)  # a killed export's leftovers
    refs = frame_refs(kind, data_path, split, [0])
    depths = LayoutDepths(kind, refs)
    shapes: dict[tuple[str, str], tuple[int, int]] = {}  # one size per sequence side, from its first map
    for i, ref in enumerate(refs):
        group = (ref.key.rsplit(None, 2)[0], ref.key.rsplit(None, 1)[1])
        if group not in shapes:
            shapes[group] = depths[i].shape
    sizes = np.array([shapes[(ref.key.rsplit(None, 2)[0], ref.key.rsplit(None, 1)[1])] for ref in refs], dtype=np.int32)
    stacked = np.zeros((len(refs), *sizes.max(axis=0)), dtype=np.float32)  # filled in place: one copy in memory
    for i in tqdm(range(len(refs)), desc="export-gt", unit="frame", disable=not progress):
        depth = depths[i]
        if depth.shape != tuple(sizes[i]):
            raise InputError(f"{_gt_reader(kind, refs[i])[1]}: depth is {depth.shape[1]}x{depth.shape[0]} but the "
                             f"first map of its sequence is {sizes[i][1]}x{sizes[i][0]} (width x height)")
        stacked[i, : depth.shape[0], : depth.shape[1]] = depth
    save_npz(output, gt_depths=stacked, sizes=sizes, frames=np.array([ref.key for ref in refs]))
    return output
