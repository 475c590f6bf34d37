"""Split making for every layout (`semhint split make`): frames with all neighbours, minus static
frames, subsampled, with a held-out tail per sequence.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from semhint.core.fileio import InputError, read_rgb
from semhint.data import endoscopy, folder, kitti
from semhint.data.frames import DirListing, write_split
from semhint.data.snippets import resize_array


def make_split(data_path: str | Path, kind: str, out: str | Path, frame_ids: list[int] | None = None, stride: int = 1,
               static_threshold: float = 0.0, static_measure: str = "flow", val_fraction: float = 0.0,
               val_out: str | Path | None = None, cache_dir: str | Path = "") -> dict[str, int]:
    """Write split file(s) for a dataset (``semhint split make``); returns frame counts per stage.

    Candidates are the frames whose neighbours (``frame_ids``) all exist; with a static threshold,
    frames whose motion to some neighbour is below it are dropped (the camera stood still, so the
    photometric loss cannot tell depths apart); ``stride`` keeps every N-th remaining frame; the
    last ``val_fraction`` of each sequence goes to ``val_out`` (a contiguous tail, so validation
    frames are not near-copies of training frames).
    """
    frame_ids = list(frame_ids or [0, -1, 1])
    if 0 not in frame_ids:
        frame_ids = [0, *frame_ids]
    if stride < 1:
        raise InputError(f"--stride must be >= 1, got {stride}")
    if not 0 <= val_fraction < 1:
        raise InputError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if val_fraction > 0 and not val_out:
        raise InputError("--val-fraction needs --val-out FILE")
    if kind == "kitti":
        root = Path(data_path)
        lines = kitti.scan_split_lines(root, frame_ids)
        refs_of = lambda lines_: _kitti_refs(root, lines_, frame_ids)  # noqa: E731
    elif kind == "folder":
        root = folder.resolve_root(data_path, cache_dir)
        lines = folder.scan_split_lines(root, frame_ids)
        refs_of = lambda lines_: _image_refs(root, lines_, frame_ids)  # noqa: E731
    elif kind in endoscopy.KINDS:
        root = Path(data_path)
        if not root.is_dir():
            raise InputError(f"{root}: dataset root not found")
        lines = endoscopy.scan_split_lines(kind, root, frame_ids)
        refs_of = lambda lines_: _endoscopy_refs(kind, root, lines_, frame_ids)  # noqa: E731
    else:
        raise InputError(f"--kind must be one of kitti, folder, {', '.join(endoscopy.KINDS)}; got {kind!r}")
    if not lines:
        raise InputError(f"{data_path}: no frames with all neighbours {frame_ids} (check the layout and --kind)")
    counts = {"candidates": len(lines)}
    if static_threshold > 0:
        motion = frame_motion(refs_of(lines), static_measure)
        lines = [line for line, m in zip(lines, motion) if m >= static_threshold]
        counts["after_static"] = len(lines)
    groups: dict[str, list[str]] = {}
    for line in lines:
        groups.setdefault(line.rsplit(None, 1)[0] if kind == "folder" else " ".join(line.split()[::2]), []).append(line)
    train, val = [], []
    for group in groups.values():
        group = group[::stride]
        n_val = int(round(len(group) * val_fraction))
        train += group[: len(group) - n_val]
        val += group[len(group) - n_val:]
    if not train:
        raise InputError(f"{data_path}: no training frames left (lower --static-threshold, --stride or --val-fraction)")
    write_split(out, train)
    counts["train"] = len(train)
    if val_out and val_fraction > 0:
        write_split(val_out, val)
        counts["val"] = len(val)
    return counts


def _kitti_refs(root: Path, lines: list[str], frame_ids: list[int]) -> list[dict[int, Path]]:
    listing = DirListing()
    out = []
    for i, text in enumerate(lines, 1):
        drive, frame, side = kitti.parse_split_line(text, i, root)
        out.append(kitti.neighbour_images(root, drive, frame, side, frame_ids, listing, text))
    return out


def _endoscopy_refs(kind: str, root: Path, lines: list[str], frame_ids: list[int]) -> list[dict[int, Path]]:
    listing = DirListing()
    out = []
    for i, text in enumerate(lines, 1):
        folder_, frame, side = endoscopy.parse_split_line(kind, text, i, root)
        out.append(endoscopy.snippet_images(kind, root, folder_, frame, side, frame_ids, listing, text))
    return out


def _image_refs(root: Path, lines: list[str], frame_ids: list[int]) -> list[dict[int, Path]]:
    listing = DirListing()
    out = []
    for i, text in enumerate(lines, 1):
        seq, index = folder.parse_split_line(text, i, root)
        frames = listing.sorted_images(root / seq)
        out.append({f: frames[index + f] for f in frame_ids})
    return out


def frame_motion(snippets: list[dict[int, Path]], measure: str = "flow", work_width: int = 256) -> list[float]:
    """Per snippet, the smallest motion between the target and any source frame.

    ``flow``: mean DIS optical-flow magnitude in pixels of the stored frames (computed on grey
    frames downscaled to at most ``work_width`` and scaled back); ``photometric``: mean absolute grey
    difference in [0, 1]. Frames are decoded once each (a small rolling cache follows the
    snippets' order).
    """
    if measure not in ("flow", "photometric"):
        raise InputError(f"--static-measure must be 'flow' or 'photometric', got {measure!r}")
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST) if measure == "flow" else None
    grey: dict[Path, tuple[np.ndarray, float]] = {}

    def load(path: Path) -> tuple[np.ndarray, float]:
        if path not in grey:
            if len(grey) > 64:
                grey.pop(next(iter(grey)))
            rgb = read_rgb(path)
            scale = min(1.0, work_width / rgb.shape[1])
            small_hw = (max(8, round(rgb.shape[0] * scale)), max(8, round(rgb.shape[1] * scale)))
            small = resize_array(rgb, small_hw)
            grey[path] = (cv2.cvtColor(small, cv2.COLOR_RGB2GRAY), scale)
        return grey[path]

    result = []
    for images in tqdm(snippets, desc=f"static frames ({measure})", unit="frame"):
        target, scale = load(images[0])
        values = []
        for f, path in images.items():
            if f == 0:
                continue
            source, _ = load(path)
            if dis is None:
                values.append(float(np.abs(target.astype(np.float32) - source.astype(np.float32)).mean() / 255.0))
            else:
                flow = dis.calc(target, source, None)
                values.append(float(np.linalg.norm(flow, axis=-1).mean() / scale))
        result.append(min(values) if values else float("inf"))
    return result
