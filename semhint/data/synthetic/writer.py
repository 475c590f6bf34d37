"""Writing rendered worlds to disk in the layouts semhint's loaders read unchanged.

OUT/
  data/        the dataset root: KITTI raw layout (drive) or one folder per sequence (tissue)
  gt_depth/    uint16 PNG, value = round(depth * 256), 0 = invalid/sky (metres drive, mm tissue)
  gt_labels/   uint8 PNG class maps (Cityscapes train ids / tissue classes; 255 = ignore)
  gt_dynamic/  drive only: uint8 PNG, 1 = an independently moving object (the lead car, oncoming cars)
               (all three mirror the image's path relative to data/, with a .png suffix)
  poses/       <sequence>.txt: one line per frame, the 3 x 4 camera-to-world matrix row-major
               (KITTI odometry format; the relative pose target->source is inv(P_src) @ P_tgt)
  splits/      train.txt, val.txt, test.txt (only frames with both neighbours; test = held-out sequences)
  tracks/      tissue only: <sequence>.npz with queries, tracks_2d, tracks_3d, visibility
  meta.json    generator, seed, preset, units, class set, intrinsics
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from semhint.core.conventions import DEPTH_PNG_SCALE
from semhint.core.fileio import save_image, write_depth_png, write_json, write_label_png, write_text
from semhint.data.frames import write_split
from semhint.data.poses import read_pose_file

DATE = "2000_01_01"  # a date no real KITTI drive has, so synthetic and real data never mix up
MAX_PNG_DEPTH = 65535 / DEPTH_PNG_SCALE


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def png_depth(depth: np.ndarray) -> np.ndarray:
    """Depth ready for the uint16 PNG: sky/invalid and anything beyond its range become 0 (invalid)."""
    return np.where(np.isfinite(depth) & (depth > 0) & (depth < MAX_PNG_DEPTH), depth, 0.0)


def write_poses(path: Path, poses: np.ndarray) -> None:
    lines = [" ".join(f"{v:.9e}" for v in p[:3, :4].reshape(-1)) for p in poses]
    write_text(path, "\n".join(lines) + "\n")


def read_poses(path: str | Path) -> np.ndarray:
    """Camera-to-world poses (T x 4 x 4) from a poses/<sequence>.txt file."""
    return read_pose_file(path)


def split_frames(n_sequences: int, n_frames: int, margin: int = 1) -> dict[str, list[tuple[int, int]]]:
    """(sequence, frame) pairs per split. Only frames with both neighbours ``margin`` frames away (a
    config's frame ids -margin, +margin); the last ~20 % of the sequences (at least one, when there are
    two or more) are held out for test; every 10th frame (frame % 10 == 5) of the others is validation."""
    n_test = max(1, round(0.2 * n_sequences)) if n_sequences >= 2 else 0
    train_seqs = range(n_sequences - n_test)
    eligible = range(margin, n_frames - margin)
    val = [(s, f) for s in train_seqs for f in eligible if f % 10 == 5]
    train = [(s, f) for s in train_seqs for f in eligible if f % 10 != 5]
    test = [(s, f) for s in range(n_sequences - n_test, n_sequences) for f in eligible]
    if not test:  # a single sequence: nothing to hold out, so test on the validation frames
        test = list(val)
    return {"train": train, "val": val, "test": test}


# ----------------------------------------------------------------------------------------------
# KITTI calibration (official text format, synthetic values)
# ----------------------------------------------------------------------------------------------
def _fmt(values) -> str:
    return " ".join(f"{float(v):.6e}" for v in np.asarray(values).reshape(-1))


def kitti_cam_to_cam(K: np.ndarray, width: int, height: int, baseline: float = 0.54) -> str:
    """calib_cam_to_cam.txt for an ideal rectified rig whose every camera has intrinsics ``K``.

    Camera 2 (the left colour camera, image_02) is the rendered one, so P_rect_02 = [K | 0]; the
    others sit on KITTI's baseline to the right (P_rect_0x[0, 3] = -fx * offset) for completeness.
    """
    eye = np.eye(3)
    lines = ["calib_time: 01-Jan-2000 00:00:00", "corner_dist: 0.000000e+00"]
    offsets = {0: 0.06, 1: 0.06 + baseline, 2: 0.0, 3: baseline}
    for cam in range(4):
        P = np.zeros((3, 4))
        P[:, :3] = K
        P[0, 3] = -K[0, 0] * offsets[cam]
        lines += [
            f"S_0{cam}: {_fmt([width, height])}", f"K_0{cam}: {_fmt(K)}", f"D_0{cam}: {_fmt(np.zeros(5))}",
            f"R_0{cam}: {_fmt(eye)}", f"T_0{cam}: {_fmt([-offsets[cam], 0, 0])}", f"S_rect_0{cam}: {_fmt([width, height])}",
            f"R_rect_0{cam}: {_fmt(eye)}", f"P_rect_0{cam}: {_fmt(P)}",
        ]
    return "\n".join(lines) + "\n"


def kitti_velo_to_cam() -> str:
    """A LiDAR frame (x forward, y left, z up) mounted at the camera: the axis permutation only."""
    R = np.array([[0, -1, 0], [0, 0, -1], [1, 0, 0]], dtype=np.float64)
    return (f"calib_time: 01-Jan-2000 00:00:00\nR: {_fmt(R)}\nT: {_fmt(np.zeros(3))}\n"
            f"delta_f: {_fmt([0, 0])}\ndelta_c: {_fmt([0, 0])}\n")


def kitti_imu_to_velo() -> str:
    return f"calib_time: 01-Jan-2000 00:00:00\nR: {_fmt(np.eye(3))}\nT: {_fmt(np.zeros(3))}\n"


def drive_name(index: int) -> str:
    return f"{DATE}_drive_{index + 1:04d}_sync"


def write_drive_frame(out: Path, seq: int, frame: int, rendered: dict[str, np.ndarray]) -> None:
    rel = Path(DATE) / drive_name(seq) / "image_02" / "data" / f"{frame:010d}.png"
    save_image(out / "data" / rel, to_uint8(rendered["image"]))
    write_depth_png(out / "gt_depth" / rel, png_depth(rendered["depth"]))
    write_label_png(out / "gt_labels" / rel, rendered["labels"])
    # which pixels move on their own: evaluation splits the car error into moving and parked cars
    write_label_png(out / "gt_dynamic" / rel, rendered["dynamic"].astype(np.uint8))


def write_drive_static(out: Path, K: np.ndarray, width: int, height: int, n_sequences: int, n_frames: int) -> None:
    """Calibration files of a rendered drive set (the split files come after the frames: write_drive_splits)."""
    date_dir = out / "data" / DATE
    write_text(date_dir / "calib_cam_to_cam.txt", kitti_cam_to_cam(K, width, height))
    write_text(date_dir / "calib_velo_to_cam.txt", kitti_velo_to_cam())
    write_text(date_dir / "calib_imu_to_velo.txt", kitti_imu_to_velo())


def write_drive_splits(out: Path, n_sequences: int, n_frames: int) -> None:
    for name, pairs in split_frames(n_sequences, n_frames).items():
        write_split(out / "splits" / f"{name}.txt", [f"{DATE}/{drive_name(s)} {f} l" for s, f in pairs])


def start_render(out: Path) -> None:
    """Remove the completion markers of an earlier render into ``out`` (meta.json, the split files)
    before any frame is written: a render killed half-way must never look like a finished set."""
    (out / "meta.json").unlink(missing_ok=True)
    for split in (out / "splits").glob("*.txt") if (out / "splits").is_dir() else []:
        split.unlink()


# ----------------------------------------------------------------------------------------------
# tissue (folder layout)
# ----------------------------------------------------------------------------------------------
def tissue_name(index: int) -> str:
    return f"tissue_{index + 1:02d}"


def write_tissue_frame(out: Path, seq: int, frame: int, rendered: dict[str, np.ndarray]) -> None:
    rel = Path(tissue_name(seq)) / f"{frame:06d}.png"
    save_image(out / "data" / rel, to_uint8(rendered["image"]))
    write_depth_png(out / "gt_depth" / rel, png_depth(rendered["depth"]))
    write_label_png(out / "gt_labels" / rel, rendered["labels"])


def write_tissue_static(out: Path, K: np.ndarray, width: int, height: int, n_sequences: int, n_frames: int) -> None:
    for s in range(n_sequences):
        text = (f"# SynthTissue pinhole intrinsics in pixels of the stored frames\nfx: {K[0, 0]:.6f}\nfy: {K[1, 1]:.6f}\n"
                f"cx: {K[0, 2]:.6f}\ncy: {K[1, 2]:.6f}\nwidth: {width}\nheight: {height}\n")
        write_text(out / "data" / tissue_name(s) / "intrinsics.yaml", text)


def write_tissue_splits(out: Path, n_sequences: int, n_frames: int, margin: int = 1) -> None:
    for name, pairs in split_frames(n_sequences, n_frames, margin).items():
        write_split(out / "splits" / f"{name}.txt", [f"{tissue_name(s)} {f}" for s, f in pairs])


def write_meta(out: Path, meta: dict) -> None:
    """meta.json, the completion marker: written last, after every frame and split file."""
    write_json(out / "meta.json", meta)
