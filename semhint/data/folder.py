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
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import cv2
import numpy as np
import yaml
from tqdm import tqdm

from semhint.core.errors import SemhintWarning
from semhint.core.fileio import InputError
from semhint.data.frames import DirListing, FrameRef, check_aspect, check_camera, image_hw, split_entries

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
    bad = [k for k, v in nums.items() if not math.isfinite(v)]
    if bad:  # NaN passes 'fx <= 0' and crashes the grid sampler later without a message
        raise InputError(f"{path}: intrinsics key {bad[0]} must be a finite number, got {nums[bad[0]]}")
    if nums["fx"] <= 0 or nums["fy"] <= 0:
        raise InputError(f"{path}: fx and fy must be positive, got {nums['fx']}, {nums['fy']}")
    if ("width" in nums) != ("height" in nums):
        raise InputError(f"{path}: give both width and height, or neither")
    K = np.array([[nums["fx"], 0, nums["cx"]], [0, nums["fy"], nums["cy"]], [0, 0, 1]], dtype=np.float64)
    hw = None
    if "width" in nums:
        if nums["width"] < 1 or nums["height"] < 1 or not nums["width"].is_integer() or not nums["height"].is_integer():
            raise InputError(f"{path}: width and height must be positive whole pixels, got {nums['width']}, {nums['height']}")
        hw = (int(nums["height"]), int(nums["width"]))
        check_camera(K, hw, str(path))
    return K, hw


def intrinsics_from_fov(fov_degrees: float, hw: tuple[int, int]) -> np.ndarray:
    """A pinhole K for frames of size ``hw`` from a horizontal field of view: fx = fy = W / (2 tan(fov / 2)),
    principal point at the image centre, square pixels.

    An estimate for footage without calibration (a phone's main camera is about 65-75 degrees, a
    GoPro's wide mode about 120): depth and motion come out consistent with it, but a wrong field
    of view bends planes and scales motion, so a real calibration is always better.
    """
    if not 0 < fov_degrees < 180:
        raise InputError(f"--fov must be a horizontal field of view in degrees, 0 < fov < 180, got {fov_degrees}")
    h, w = hw
    f = w / (2.0 * math.tan(math.radians(fov_degrees) / 2.0))
    return np.array([[f, 0.0, w / 2.0], [0.0, f, h / 2.0], [0.0, 0.0, 1.0]], dtype=np.float64)


def fov_warning(where: str | Path, fov_degrees: float, K: np.ndarray,
                remedy: str = "put intrinsics.yaml with fx fy cx cy beside the frames") -> None:
    """Say once, plainly, that the camera was guessed (a silent guess looks like a calibration)."""
    warnings.warn(f"{where}: no intrinsics file; assuming a horizontal field of view of {fov_degrees:g} degrees "
                  f"(fx = fy = {K[0, 0]:.1f} px at {K[0, 2] * 2:.0f} px wide, principal point at the centre); "
                  f"{remedy} for real geometry", SemhintWarning, stacklevel=3)


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
                     f"folder or in {root}, set data.intrinsics, or estimate them from the field of view: "
                     "--fov DEGREES / data.fov)")


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


def _video_intrinsics(video: Path, required: bool = True) -> str:
    """Intrinsics next to a video: video.yaml/.yml/.json, else intrinsics.* in its folder ('' when
    there is none and not ``required``: a field-of-view estimate stands in)."""
    for cand in [video.with_suffix(s) for s in (".yaml", ".yml", ".json")] + [video.parent / n for n in INTRINSICS_NAMES]:
        if cand.is_file():
            return str(cand)
    if not required:
        return ""
    raise InputError(f"{video}: no intrinsics file (put {video.stem}.yaml with fx fy cx cy beside it, "
                     "set data.intrinsics, or estimate them from the field of view: --fov DEGREES / data.fov)")


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
               cache_dir: str | Path = "", fov: float = 0.0) -> list[FrameRef]:
    """FrameRefs for a split file, or for every frame with all neighbours when ``split`` is empty.

    ``fov`` > 0: a sequence without an intrinsics file gets K from that horizontal field of view
    (degrees), with a warning; 0: a missing file is an error.
    """
    path = Path(path)
    root = resolve_root(path, cache_dir)
    if root != path and not intrinsics:
        intrinsics = _video_intrinsics(path, required=fov <= 0)
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
            calib[seq] = _sequence_camera(root, seq, intrinsics, frames[0], fov)
        K, hw, stored = calib[seq]
        refs.append(FrameRef(key=f"{seq} {index}", images=images, K=K, K_hw=hw, data_root=root, image_hw=stored))
    return refs


def _sequence_camera(root: Path, seq: str, intrinsics: str | Path, first: Path, fov: float = 0.0
                     ) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """(K, the size it describes, the stored frames' size) of a sequence, checked against each other;
    estimated from ``fov`` (with a warning) when the sequence has no intrinsics file and fov > 0."""
    stored = image_hw(first)
    try:
        source = find_intrinsics(root, seq, intrinsics)
    except InputError:
        if fov <= 0:
            raise
        K = intrinsics_from_fov(fov, stored)
        fov_warning(root / seq, fov, K)
        return K, stored, stored
    K, hw = read_intrinsics(source)
    check_camera(K, hw or stored, str(source))
    check_aspect(hw or stored, stored, f"{source} (sequence {seq})")
    return K, hw or stored, stored


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
