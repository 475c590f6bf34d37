"""Any monocular video as a dataset: a folder of frames (or a video file) plus an intrinsics file.

Layout::

    ROOT/<sequence>/<frames *.png|*.jpg, ordered by name>
    ROOT/<sequence>/intrinsics.yaml      (or one ROOT/intrinsics.yaml for every sequence)

A sequence is any folder under ROOT that holds frames (nested folders give names like
``case1/left``; frames directly in ROOT form the sequence ``.``). The intrinsics file (YAML or
JSON) has ``fx fy cx cy`` in pixels of the stored frames, optionally ``width height`` naming the
resolution they describe (frames stored at another size are then treated as resized copies).
Split lines are ``<sequence> <frame_index>``, the index counting frames in name order.

A ROOT that is a video file is decoded once into PNG frames under the cache folder and then read
as a one-sequence folder named after the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import yaml

from semhint.data.frames import DirListing, FrameRef, image_hw, split_entries, write_split
from semhint.core.fileio import InputError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg")
INTRINSICS_NAMES = ("intrinsics.yaml", "intrinsics.yml", "intrinsics.json")
SPLIT_FORMAT = "<sequence> <frame_index>"


# ----------------------------------------------------------------------------------------------
# intrinsics
# ----------------------------------------------------------------------------------------------
def read_intrinsics(path: str | Path) -> tuple[np.ndarray, tuple[int, int] | None]:
    """(3 x 3 K, (height, width) it describes or None) from a YAML/JSON file with fx fy cx cy."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: intrinsics file not found")
    try:
        text = path.read_text()
        values = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: cannot parse intrinsics ({exc.__class__.__name__})") from None
    if not isinstance(values, dict):
        raise InputError(f"{path}: intrinsics must be a mapping with keys fx, fy, cx, cy")
    missing = [k for k in ("fx", "fy", "cx", "cy") if k not in values]
    if missing:
        raise InputError(f"{path}: intrinsics missing key(s) {', '.join(missing)} (need fx, fy, cx, cy in pixels)")
    nums = {}
    for key in ("fx", "fy", "cx", "cy", "width", "height"):
        if key in values:
            try:
                nums[key] = float(values[key])
            except (TypeError, ValueError):
                raise InputError(f"{path}: intrinsics key {key} must be a number, got {values[key]!r}") from None
    if nums["fx"] <= 0 or nums["fy"] <= 0:
        raise InputError(f"{path}: fx and fy must be positive, got {nums['fx']}, {nums['fy']}")
    if ("width" in nums) != ("height" in nums):
        raise InputError(f"{path}: give both width and height, or neither")
    K = np.array([[nums["fx"], 0, nums["cx"]], [0, nums["fy"], nums["cy"]], [0, 0, 1]], dtype=np.float64)
    hw = (int(nums["height"]), int(nums["width"])) if "width" in nums else None
    return K, hw


def find_intrinsics(root: Path, sequence: str, override: str | Path = "") -> Path:
    """The intrinsics file of a sequence: ``override``, else the nearest intrinsics.* from the sequence up to ROOT."""
    if override:
        return Path(override)
    folder = (root / sequence).resolve()
    top = root.resolve()
    while True:
        for name in INTRINSICS_NAMES:
            if (folder / name).is_file():
                return folder / name
        if folder == top or top not in folder.parents:
            break
        folder = folder.parent
    raise InputError(f"{root / sequence}: no intrinsics file (put intrinsics.yaml with fx fy cx cy in the sequence "
                     f"folder or in {root}, or set data.intrinsics)")


# ----------------------------------------------------------------------------------------------
# sequences and videos
# ----------------------------------------------------------------------------------------------
def sequences(root: str | Path, listing: DirListing | None = None) -> list[str]:
    """Every folder under ``root`` that holds frames, as relative posix names ('.' for root itself)."""
    root = Path(root)
    listing = listing or DirListing()
    found = []
    for folder, dirs, _ in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if listing.sorted_images(Path(folder)):
            found.append(Path(folder).relative_to(root).as_posix())
    return sorted(found)


def resolve_root(path: str | Path, cache_dir: str | Path = "") -> Path:
    """The folder to read frames from: ``path`` itself, or the decoded frames of a video file."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
        return decode_video(path, cache_dir)
    if not path.is_dir():
        raise InputError(f"{path}: dataset root not found (expected a folder of frames or a video file)")
    return path


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "semhint"


def decode_video(video: Path, cache_dir: str | Path = "") -> Path:
    """Decode a video once into ``CACHE/videos/<stem>-<hash>/<stem>/000000.png...``; returns that root.

    The hash covers the path, size and modification time, so an edited video is decoded again. PNG
    keeps frames lossless; decoding goes to a temporary folder renamed into place, so an interrupted
    run never leaves a half-decoded sequence that later looks complete.
    """
    import cv2
    from tqdm import tqdm

    stat = video.stat()
    key = hashlib.sha1(f"{video.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    out = Path(cache_dir or default_cache_dir()) / "videos" / f"{video.stem}-{key}"
    if (out / video.stem).is_dir():
        return out
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise InputError(f"{video}: cannot open video (unsupported codec or corrupt file)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        (tmp / video.stem).mkdir()
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        count = 0
        with tqdm(total=total, desc=f"decoding {video.name}", unit="frame") as bar:
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                cv2.imwrite(str(tmp / video.stem / f"{count:06d}.png"), frame)
                count += 1
                bar.update(1)
        if count == 0:
            raise InputError(f"{video}: no frames could be decoded")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        cap.release()
    return out


def _video_intrinsics(video: Path) -> str:
    """Intrinsics next to a video: video.yaml/.yml/.json, else intrinsics.* in its folder."""
    for cand in [video.with_suffix(s) for s in (".yaml", ".yml", ".json")] + [video.parent / n for n in INTRINSICS_NAMES]:
        if cand.is_file():
            return str(cand)
    raise InputError(f"{video}: no intrinsics file (put {video.stem}.yaml with fx fy cx cy beside it, "
                     "or set data.intrinsics)")


# ----------------------------------------------------------------------------------------------
# split files and frame references
# ----------------------------------------------------------------------------------------------
def parse_split_line(text: str, lineno: int, source: str | Path) -> tuple[str, int]:
    """``"<sequence> <frame_index>"`` to (sequence, index); the sequence name may contain spaces."""
    parts = text.rsplit(None, 1)
    if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
        raise InputError(f"{source} line {lineno}: expected '{SPLIT_FORMAT}', got '{text}'")
    return parts[0].strip("/") or ".", int(parts[1])


def frame_refs(path: str | Path, split: str | Path | None, frame_ids: list[int], intrinsics: str | Path = "",
               cache_dir: str | Path = "") -> list[FrameRef]:
    """FrameRefs for a split file, or for every frame with all neighbours when ``split`` is empty."""
    path = Path(path)
    root = resolve_root(path, cache_dir)
    if root != path and not intrinsics:
        intrinsics = _video_intrinsics(path)
    listing = DirListing()
    entries = split_entries(split, root, lambda: scan_split_lines(root, frame_ids, listing=listing), parse_split_line,
                            f"no sequence has enough frames for frame ids {frame_ids}")
    calib: dict[str, tuple[np.ndarray, tuple[int, int]]] = {}
    refs = []
    for (seq, index), where in entries:
        frames = listing.sorted_images(root / seq)
        if not frames:
            raise InputError(f"{where}: sequence folder {root / seq} has no frames")
        images = {}
        for f in frame_ids:
            if not 0 <= index + f < len(frames):
                what = "frame" if f == 0 else f"neighbour {f:+d} (frame {index + f})"
                raise InputError(f"{where}: {what} out of range: {root / seq} has frames 0..{len(frames) - 1}")
            images[f] = frames[index + f]
        if seq not in calib:
            K, hw = read_intrinsics(find_intrinsics(root, seq, intrinsics))
            calib[seq] = (K, hw or image_hw(frames[0]))
        K, hw = calib[seq]
        refs.append(FrameRef(key=f"{seq} {index}", images=images, K=K, K_hw=hw, data_root=root))
    return refs


def scan_split_lines(root: str | Path, frame_ids: list[int], stride: int = 1,
                     listing: DirListing | None = None) -> list[str]:
    """Split lines for every frame (every ``stride``-th) of every sequence whose neighbours all exist."""
    root = Path(root)
    listing = listing or DirListing()
    lines = []
    lo, hi = -min(frame_ids), max(frame_ids)
    for seq in sequences(root, listing):
        n = len(listing.sorted_images(root / seq))
        lines += [f"{seq} {i}" for i in range(max(lo, 0), n - max(hi, 0))][::stride]
    return lines


# ----------------------------------------------------------------------------------------------
# split making (both kinds): drop frames without neighbours, static frames; subsample; hold out val
# ----------------------------------------------------------------------------------------------
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
    from semhint.data import kitti

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
        root = resolve_root(data_path, cache_dir)
        lines = scan_split_lines(root, frame_ids)
        refs_of = lambda lines_: _image_refs(root, lines_, frame_ids)  # noqa: E731
    else:
        raise InputError(f"--kind must be 'kitti' or 'folder', got {kind!r}")
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
    from semhint.data import kitti

    listing = DirListing()
    out = []
    for i, text in enumerate(lines, 1):
        folder, frame, side = kitti.parse_split_line(text, i, root)
        out.append(kitti.neighbour_images(root, folder, frame, side, frame_ids, listing, text))
    return out


def _image_refs(root: Path, lines: list[str], frame_ids: list[int]) -> list[dict[int, Path]]:
    listing = DirListing()
    out = []
    for i, text in enumerate(lines, 1):
        seq, index = parse_split_line(text, i, root)
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
    import cv2
    from tqdm import tqdm

    from semhint.data.snippets import resize_array
    from semhint.core.fileio import read_rgb

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
