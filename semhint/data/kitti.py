"""KITTI raw: calibration files, split files, per-sample intrinsics and LiDAR ground truth.

Layout (the official raw "synced+rectified" download, also what ``semhint synth drive`` writes)::

    ROOT/DATE/calib_cam_to_cam.txt, calib_velo_to_cam.txt
    ROOT/DATE/DRIVE/image_02/data/0000000005.png   (or .jpg; image_03 = right camera)
    ROOT/DATE/DRIVE/velodyne_points/data/0000000005.bin

Split lines follow the community format ``DATE/DRIVE FRAME l|r`` (side optional, default l).
Nothing assumes a drive name pattern: the drive folder is used as written, and the calibration
is looked up in its parent folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from semhint.core.fileio import (
    InputError,
    check_output_file,
    load_npz,
    load_npz_object_list,
    npz_keys,
    remove_stale_temps,
    save_npz,
)
from semhint.data.frames import (
    DirListing,
    FrameRef,
    check_aspect,
    check_camera,
    image_hw,
    read_split_lines,
    split_entries,
)

SIDES = {"l": "image_02", "r": "image_03"}
_CAMERA_INDEX = {"l": 2, "r": 3}
SPLIT_FORMAT = "DATE/DRIVE FRAME l|r"


# ----------------------------------------------------------------------------------------------
# calibration
# ----------------------------------------------------------------------------------------------
def read_calib_file(path: str | Path) -> dict[str, np.ndarray]:
    """A KITTI calibration file as {key: float64 vector}; non-numeric entries (calib_time) skipped."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: calibration file not found")
    calib: dict[str, np.ndarray] = {}
    for line in path.read_text(errors="replace").splitlines():
        key, sep, values = line.partition(":")
        if not sep:
            continue
        try:
            calib[key.strip()] = np.array([float(v) for v in values.split()], dtype=np.float64)
        except ValueError:
            continue
    return calib


def _require(calib: dict[str, np.ndarray], key: str, size: int, path: Path) -> np.ndarray:
    if key not in calib:
        raise InputError(f"{path}: no {key} entry")
    if calib[key].size != size:
        raise InputError(f"{path}: {key} has {calib[key].size} values, expected {size}")
    if not np.isfinite(calib[key]).all():  # NaN would pass every later range test and crash the sampler
        raise InputError(f"{path}: {key} has non-finite values ({' '.join(f'{v:g}' for v in calib[key])})")
    return calib[key]


def _image_size(calib: dict[str, np.ndarray], cam: int, path: Path) -> tuple[int, int] | None:
    """(height, width) from S_rect_0cam, or None when the line is absent; it must be whole positive pixels."""
    if f"S_rect_0{cam}" not in calib:
        return None
    size = _require(calib, f"S_rect_0{cam}", 2, path)
    if (size < 1).any() or (size != np.round(size)).any():
        raise InputError(f"{path}: S_rect_0{cam} must be a positive width and height in pixels, got {size.tolist()}")
    return int(size[1]), int(size[0])


def camera_intrinsics(calib_dir: str | Path, side: str = "l") -> tuple[np.ndarray, tuple[int, int] | None]:
    """(3 x 3 K from P_rect_02/03, (height, width) from S_rect_02/03 or None if that line is absent)."""
    path = Path(calib_dir) / "calib_cam_to_cam.txt"
    calib = read_calib_file(path)
    cam = _CAMERA_INDEX[side]
    P = _require(calib, f"P_rect_0{cam}", 12, path).reshape(3, 4)
    hw = _image_size(calib, cam, path)
    K = P[:, :3].copy()
    if hw is not None:
        check_camera(K, hw, f"{path}: P_rect_0{cam}")
    elif K[0, 0] <= 0 or K[1, 1] <= 0:
        raise InputError(f"{path}: P_rect_0{cam}: fx and fy must be positive, got {K[0, 0]}, {K[1, 1]}")
    return K, hw


def velodyne_to_image(calib_dir: str | Path, cam: int = 2) -> tuple[np.ndarray, tuple[int, int]]:
    """(3 x 4 projection P_rect_0cam . R_rect_00 . T_velo_to_cam, image (height, width) from S_rect_0cam)."""
    calib_dir = Path(calib_dir)
    c2c_path = calib_dir / "calib_cam_to_cam.txt"
    v2c_path = calib_dir / "calib_velo_to_cam.txt"
    cam2cam = read_calib_file(c2c_path)
    velo2cam = read_calib_file(v2c_path)
    T = np.eye(4)
    T[:3, :3] = _require(velo2cam, "R", 9, v2c_path).reshape(3, 3)
    T[:3, 3] = _require(velo2cam, "T", 3, v2c_path)
    R_rect = np.eye(4)
    R_rect[:3, :3] = _require(cam2cam, "R_rect_00", 9, c2c_path).reshape(3, 3)
    P_rect = _require(cam2cam, f"P_rect_0{cam}", 12, c2c_path).reshape(3, 4)
    _require(cam2cam, f"S_rect_0{cam}", 2, c2c_path)
    hw = _image_size(cam2cam, cam, c2c_path)
    check_camera(P_rect[:, :3], hw, f"{c2c_path}: P_rect_0{cam}")
    return P_rect @ R_rect @ T, hw


# ----------------------------------------------------------------------------------------------
# LiDAR ground truth
# ----------------------------------------------------------------------------------------------
def read_velodyne(path: str | Path) -> np.ndarray:
    """A velodyne scan (.bin of float32 x, y, z, reflectance) as N x 4 float32."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: velodyne scan not found")
    size = path.stat().st_size
    if size == 0 or size % 16:  # checked on bytes: np.fromfile silently drops a trailing partial float
        raise InputError(f"{path}: corrupt velodyne scan ({size} bytes is not a whole number of 16-byte points)")
    raw = np.fromfile(path, dtype=np.float32)
    points = raw.reshape(-1, 4)
    if not np.isfinite(points[:, :3]).all():
        raise InputError(f"{path}: corrupt velodyne scan (non-finite coordinates)")
    return points


def project_velodyne(points: np.ndarray, P_velo_to_im: np.ndarray, hw: tuple[int, int],
                     camera_z: bool = False) -> np.ndarray:
    """Sparse H x W float32 depth from LiDAR points, the way the Eigen protocol's ground truth is made.

    Points behind the scanner (x < 0) are dropped; pixel = round(u) - 1, round(v) - 1 (the
    community convention, kept so numbers match published ones); the value is the forward velodyne
    x distance (or the camera z with ``camera_z``); where several points land on one pixel the
    nearest is kept; 0 = no point.

    One quirk of the reference implementation is reproduced on purpose, so that exported ground
    truth is bit-identical to what published numbers were computed on: it groups points by the
    linear index ``row * (W - 1) + col - 1``, under which the last column of row r and the first
    column of row r + 1 share an index. For such a pair the group's nearest value goes to the
    pixel of the group's first point, and the other pixel keeps its last-written point. Both
    columns lie outside the Garg/Eigen crops, so metrics are unaffected either way.
    """
    h, w = hw
    pts = points[points[:, 0] >= 0].astype(np.float32, copy=True)
    pts[:, 3] = 1.0
    uvz = pts @ P_velo_to_im.T  # float64 (the matrix is float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.round(uvz[:, 0] / uvz[:, 2]) - 1
        v = np.round(uvz[:, 1] / uvz[:, 2]) - 1
    value = uvz[:, 2] if camera_z else pts[:, 0].astype(np.float64)
    inside = (u >= 0) & (v >= 0) & (u < w) & (v < h)
    row, col, value = v[inside].astype(np.int64), u[inside].astype(np.int64), value[inside]
    flat = row * w + col
    depth = np.zeros(h * w, dtype=np.float64)
    # plain assignment: the last point written to a pixel stays
    last = flat.size - 1 - np.unique(flat[::-1], return_index=True)[1]
    depth[flat[last]] = value[last]
    # grouping under the reference index: the group's minimum goes to its first point's pixel
    group = row * (w - 1) + col - 1
    order = np.argsort(group, kind="stable")
    starts = np.flatnonzero(np.r_[True, group[order][1:] != group[order][:-1]])
    counts = np.diff(np.r_[starts, order.size])
    minima = np.minimum.reduceat(value[order], starts) if order.size else value
    dup = counts > 1
    depth[flat[order[starts[dup]]]] = minima[dup]
    depth[depth < 0] = 0
    return depth.reshape(h, w).astype(np.float32)


def export_gt(data_path: str | Path, split: str | Path, output: str | Path, camera_z: bool = False,
              progress: bool = True) -> Path:
    """Write LiDAR ground truth for every line of a KITTI split to an npz (``semhint kitti export-gt``).

    Keys: ``gt_depths`` (N x H x W float32, 0 = no point; zero-padded to the largest frame when
    dates differ in size), ``sizes`` (N x 2 int32, each frame's true height and width) and
    ``frames`` (the split lines). Read it back with :func:`load_gt_depths`.
    """
    root = Path(data_path)
    if not root.is_dir():
        raise InputError(f"{root}: KITTI dataset root not found")
    output = check_output_file(output, "--output")
    if output.suffix != ".npz":
        raise InputError(f"{output}: --output must be an .npz file")
    remove_stale_temps(output.parent, of=output)  # a killed export's leftovers
    entries = [parse_split_line(text, i, Path(split)) for i, text in read_split_lines(split)]
    projections: dict[tuple[Path, int], tuple[np.ndarray, tuple[int, int]]] = {}
    for folder, _, side in entries:  # calibration first: a bad file fails before any work, and sizes are known
        key = ((root / folder).parent, _CAMERA_INDEX[side])
        if key not in projections:
            projections[key] = velodyne_to_image(*key)
    sizes = np.array([projections[((root / f).parent, _CAMERA_INDEX[s])][1] for f, _, s in entries], dtype=np.int32)
    stacked = np.zeros((len(entries), *sizes.max(axis=0)), dtype=np.float32)  # filled in place: one copy in memory
    lines = []
    for i, (folder, frame, side) in enumerate(tqdm(entries, desc="export-gt", unit="frame", disable=not progress)):
        P, hw = projections[((root / folder).parent, _CAMERA_INDEX[side])]
        scan = root / folder / "velodyne_points" / "data" / f"{frame:010d}.bin"
        if not scan.is_file():
            raise InputError(f"{scan}: velodyne scan not found (split line '{folder} {frame} {side}')")
        stacked[i, : hw[0], : hw[1]] = project_velodyne(read_velodyne(scan), P, hw, camera_z=camera_z)
        lines.append(f"{folder} {frame} {side}")
    save_npz(output, gt_depths=stacked, sizes=sizes, frames=np.array(lines))
    return Path(output)


def load_gt_depths(path: str | Path) -> tuple[list[np.ndarray], list[str]]:
    """(per-frame H x W float32 depths cropped to their true size, split lines) from an export-gt npz,
    or from Monodepth2's ``gt_depths.npz`` (key ``data``; it names no frames, so the lines are empty).

    `semhint kitti export-gt` zero-pads frames of different sizes to one stack and stores each
    frame's true (H, W) under ``sizes``; frames are cropped back to it, because the evaluation crop
    is a fraction of the true image size. The stack must be stored under ``gt_depths``: taking
    whichever array comes first would evaluate against the wrong data without a word.
    """
    keys = npz_keys(path)
    if "gt_depths" not in keys and "data" in keys:
        return _monodepth2_gt(path), []
    data = load_npz(path)
    if "gt_depths" not in data:
        raise InputError(f"{path}: no 'gt_depths' array (has {', '.join(sorted(data)) or 'nothing'}; "
                         "write it with `semhint kitti export-gt`)")
    gt = data["gt_depths"]
    if gt.ndim == 4 and gt.shape[1] == 1:
        gt = gt[:, 0]
    if gt.ndim != 3:
        raise InputError(f"{path}: gt_depths must be N x H x W, got shape {gt.shape}")
    sizes = data.get("sizes", np.tile(np.array(gt.shape[1:]), (len(gt), 1)))
    if sizes.shape != (len(gt), 2):
        raise InputError(f"{path}: 'sizes' must be N x 2 for {len(gt)} maps, got shape {sizes.shape}")
    frames = [str(f) for f in data["frames"]] if "frames" in data else []
    return [gt[i, : int(sizes[i][0]), : int(sizes[i][1])] for i in range(len(gt))], frames


def _monodepth2_gt(path: str | Path) -> list[np.ndarray]:
    """Monodepth2's ``gt_depths.npz`` (its export_gt_depth.py): key ``data``, an object array of per-frame
    H x W depths (sizes differ by date), in the order of the split it was made for; no frame names.

    Read with pickling allowed for that one key only (see :func:`load_npz_object_list`); the maps
    are the same LiDAR projection as ``semhint kitti export-gt`` writes.
    """
    maps = load_npz_object_list(path, "data")
    for i, m in enumerate(maps):
        if m.ndim == 3 and m.shape[0] == 1:
            maps[i] = m = m[0]
        if m.ndim != 2:
            raise InputError(f"{path}: 'data' item {i} must be an H x W depth map, got shape {m.shape}")
    return [np.asarray(m, dtype=np.float32) for m in maps]


def load_gt_for_frames(path: str | Path, keys: list[str]) -> list[np.ndarray]:
    """The depth maps of an export-gt npz for exactly these frames (split lines), in their order.

    A ground-truth file made for another split would score every prediction against the wrong
    frame without a word, so the count and every stored split line must match; or, for a split
    that is a subset of the file's (fewer frames, and the file names its frames), each frame is
    looked up by its split line.
    """
    depths, frames = load_gt_depths(path)
    if frames and len(keys) < len(depths):
        stored = {" ".join(name.split()): i for i, name in enumerate(frames)}
        missing = [key for key in keys if " ".join(key.split()) not in stored]
        if missing:
            raise InputError(f"{path}: no depth map for the split's frame '{missing[0]}' ({len(missing)} missing)")
        return [depths[stored[" ".join(key.split())]] for key in keys]
    if len(depths) != len(keys):
        raise InputError(f"{path}: has {len(depths)} depth maps but the split has {len(keys)} frames")
    for i, (name, key) in enumerate(zip(frames, keys)):
        if name.split() != key.split():
            raise InputError(f"{path}: frame {i} is '{name}' but the split has '{key}'")
    return depths


# ----------------------------------------------------------------------------------------------
# split files and frame references
# ----------------------------------------------------------------------------------------------
def parse_split_line(text: str, lineno: int, source: str | Path) -> tuple[str, int, str]:
    """``"DATE/DRIVE FRAME l|r"`` to (folder, frame, side); anything else is an InputError."""
    parts = text.split()
    if len(parts) not in (2, 3) or not parts[1].lstrip("-").isdigit() or (len(parts) == 3 and parts[2] not in SIDES):
        raise InputError(f"{source} line {lineno}: expected '{SPLIT_FORMAT}', got '{text}'")
    return parts[0].strip("/"), int(parts[1]), parts[2] if len(parts) == 3 else "l"


def image_dir(root: Path, folder: str, side: str) -> Path:
    return root / folder / SIDES[side] / "data"


def frame_refs(root: str | Path, split: str | Path | None, frame_ids: list[int]) -> list[FrameRef]:
    """FrameRefs for a split file, or for every frame with all neighbours when ``split`` is empty."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: KITTI dataset root not found")
    listing = DirListing()
    entries = split_entries(split, root, lambda: scan_split_lines(root, frame_ids, listing=listing), parse_split_line,
                            "no KITTI drive folders with frames (expected DATE/DRIVE/image_02/data/*.png)")
    calib: dict[tuple[Path, str], tuple[np.ndarray, tuple[int, int] | None]] = {}
    stored: dict[tuple[str, str], tuple[int, int]] = {}
    refs = []
    for (folder, frame, side), where in entries:
        images = neighbour_images(root, folder, frame, side, frame_ids, listing, where)
        calib_key = ((root / folder).parent, side)
        if calib_key not in calib:
            calib[calib_key] = camera_intrinsics(calib_key[0], side)
        K, hw = calib[calib_key]
        seq_key = (folder, side)
        if seq_key not in stored:  # one header per drive: the size every frame of it must have
            stored[seq_key] = _drive_image_size(listing, image_dir(root, folder, side), K, hw, calib_key[0])
        refs.append(FrameRef(key=f"{folder} {frame} {side}", images=images, K=K, K_hw=hw or stored[seq_key],
                             data_root=root, image_hw=stored[seq_key]))
    return refs


def _drive_image_size(listing: DirListing, folder: Path, K: np.ndarray, K_hw: tuple[int, int] | None,
                      calib_dir: Path) -> tuple[int, int]:
    """The stored size of a drive's frames (its first frame's), checked against the calibration."""
    frames = listing.numbered_images(folder)
    stored = image_hw(frames[min(frames)])
    source = f"{calib_dir / 'calib_cam_to_cam.txt'} (frames in {folder})"
    check_camera(K, K_hw or stored, source)
    if K_hw is not None:
        check_aspect(K_hw, stored, source)
    return stored


def neighbour_images(root: Path, folder: str, frame: int, side: str, frame_ids: list[int], listing: DirListing,
                     where: str) -> dict[int, Path]:
    """Image of every frame offset of a snippet; a missing one is an InputError naming ``where``."""
    folder_path = image_dir(root, folder, side)
    frames = listing.numbered_images(folder_path)
    if not frames:
        raise InputError(f"{where}: no images in {folder_path}")
    images = {}
    for f in frame_ids:
        path = frames.get(frame + f)
        if path is None:
            what = "frame" if f == 0 else f"neighbour {f:+d} (frame {frame + f})"
            raise InputError(f"{where}: {what} not found in {folder_path}")
        images[f] = path
    return images


def drive_folders(root: str | Path) -> list[str]:
    """Every DATE/DRIVE folder under ``root`` that has image_02/data (relative, sorted)."""
    root = Path(root)
    return sorted(p.parent.parent.relative_to(root).as_posix() for p in root.glob("*/*/image_02/data") if p.is_dir())


def scan_split_lines(root: str | Path, frame_ids: list[int], stride: int = 1,
                     listing: DirListing | None = None) -> list[str]:
    """Split lines for every frame (every ``stride``-th) whose neighbours all exist, both cameras."""
    root = Path(root)
    listing = listing or DirListing()
    lines = []
    for folder in drive_folders(root):
        for side in SIDES:
            frames = listing.numbered_images(image_dir(root, folder, side))
            ok = [i for i in sorted(frames) if all(i + f in frames for f in frame_ids)]
            lines += [f"{folder} {i} {side}" for i in ok[::stride]]
    return lines
