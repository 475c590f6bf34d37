"""File input/output that fails clearly and never leaves half-written files.

Every reader raises :class:`InputError` with a one-line message naming the file and the problem;
every writer writes to a temporary file in the same folder and renames it into place.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from semhint.core.conventions import DEPTH_PNG_SCALE, IGNORE_INDEX
from semhint.core.errors import InputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


NEW_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file; read once, at import


@contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary name keeps the final suffix (writers such as np.savez and cv2 pick the format
    from it). The result gets the mode a plain write would give it (the replaced file's, or the
    umask's for a new one), not mkstemp's private 0600: outputs are meant to be shared and served.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=suffix or path.suffix)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, path.stat().st_mode & 0o7777 if path.exists() else NEW_FILE_MODE)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)


def save_npy(path: str | Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array)


def save_image(path: str | Path, array: np.ndarray) -> None:
    """uint8 HxW / HxWx3 or uint16 HxW array to PNG/JPEG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format=_pil_format(path))


def _pil_format(path: str | Path) -> str:
    ext = Path(path).suffix.lower()
    return {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(ext, "PNG")


def read_image_array(path: str | Path, what: str, modes: tuple[str, ...] | None = None,
                     mode_rule: str = "", convert: str | None = None) -> np.ndarray:
    """Decode an image file; a missing, corrupt or wrong-mode file is one InputError naming it.

    ``what`` names the file's role in messages ("image", "label map", "depth PNG"); ``modes`` are
    the PIL modes accepted (``mode_rule`` says in words what they mean); ``convert`` converts first.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} not found")
    try:
        with Image.open(path) as im:
            if modes is not None and im.mode not in modes:
                raise InputError(f"{path}: {what} must be {mode_rule} (got mode {im.mode})")
            return np.asarray(im.convert(convert) if convert else im)
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: cannot decode {what} ({exc.__class__.__name__}: {exc})".replace("\n", " ")) from None


WIDE_GREY_MODES = ("I;16", "I;16B", "I;16L", "I")  # 16-bit (and 32-bit integer) greyscale


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as uint8 H x W x 3 RGB, whatever its bit depth and channels.

    Pillow's convert("RGB") clips 16-bit greyscale to 255 (an all-white frame), so wide greyscale
    is scaled to 8 bits explicitly (value >> 8, what OpenCV does: training and prediction agree).
    Float images have no agreed range and are refused rather than guessed.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: image not found")
    mode = image_mode(path)
    if mode in WIDE_GREY_MODES:
        wide = read_image_array(path, "image").astype(np.int64)
        if wide.size and (wide.min() < 0 or wide.max() > 65535):
            raise InputError(f"{path}: image values {wide.min()}..{wide.max()} do not fit 16 bits")
        grey = (wide >> 8).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        raise InputError(f"{path}: floating-point image (mode F); expected 8- or 16-bit RGB or greyscale")
    return read_image_array(path, "image", convert="RGB")


def image_mode(path: str | Path) -> str:
    """The PIL mode of an image file, from its header; a file PIL cannot open is one InputError."""
    try:
        with Image.open(path) as im:
            return im.mode
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: cannot decode image ({exc.__class__.__name__}: {exc})".replace("\n", " ")) from None


def read_label_png(path: str | Path) -> np.ndarray:
    """A single-channel class-map PNG as uint8 H x W (255 = ignore).

    A 16-bit map may hold ids above 255, which uint8 would wrap (258 -> class 2) without a word,
    so they are an error naming the file.
    """
    labels = read_image_array(path, "label map", modes=("L", "P", "I", "I;16", "I;16B", "I;16L"),
                              mode_rule="single-channel")
    if labels.dtype != np.uint8 and labels.size and (labels.min() < 0 or labels.max() > IGNORE_INDEX):
        raise InputError(f"{path}: label ids must be in 0..255 (255 = ignore), got {labels.min()}..{labels.max()}")
    return labels.astype(np.uint8)


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except Exception as exc:  # zipfile / pickle / value errors all mean 'corrupt'
        raise InputError(f"{path}: cannot read npz ({exc.__class__.__name__}: {exc})".replace("\n", " ")) from None


def npz_keys(path: str | Path) -> list[str]:
    """The array names of an npz file, read from its index only (nothing is loaded or unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            return list(data.files)
    except Exception as exc:  # zipfile / value errors all mean 'corrupt'
        raise InputError(f"{path}: cannot read npz ({exc.__class__.__name__}: {exc})".replace("\n", " ")) from None


def load_npz_object_list(path: str | Path, key: str) -> list[np.ndarray]:
    """The per-item arrays of one object array in an npz (e.g. Monodepth2's ``gt_depths.npz``, key ``data``).

    An object array can only be stored pickled, and unpickling can run code, so this is the one
    place semhint passes ``allow_pickle=True``: for a single named key of a file the user pointed
    at, in a format (Monodepth2's ground truth) that has no other form. Every item must be a
    numeric array; anything else is refused.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=True) as data:
            raw = data[key]
    except Exception as exc:
        raise InputError(f"{path}: cannot read '{key}' ({exc.__class__.__name__}: {exc})".replace("\n", " ")) from None
    items = list(raw) if raw.dtype == object or raw.ndim >= 3 else [raw]
    for i, item in enumerate(items):
        if not isinstance(item, np.ndarray) or item.dtype == object or not np.issubdtype(item.dtype, np.number):
            raise InputError(f"{path}: '{key}' item {i} is not a numeric array ({type(item).__name__})")
    return items


def read_depth_png(path: str | Path) -> np.ndarray:
    """A uint16 depth PNG (value = round(depth * 256), 0 = invalid) as float32 H x W depth."""
    raw = read_image_array(path, "depth PNG", modes=("I;16", "I;16B", "I"), mode_rule="16-bit single-channel")
    return (raw.astype(np.float32) / DEPTH_PNG_SCALE).astype(np.float32)


def write_depth_png(path: str | Path, depth: np.ndarray) -> None:
    """Write H x W depth as a uint16 PNG (round(depth * 256); <= 0 and non-finite become 0), atomically.

    The range is 0..255.996 units (metres or millimetres per ``data.unit``); larger values are an
    error rather than a silent clip, because a clipped ground truth corrupts every metric.
    """
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise InputError(f"{path}: depth must be H x W, got shape {depth.shape}")
    depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0)
    scaled = np.round(depth * DEPTH_PNG_SCALE)
    if scaled.max(initial=0) > np.iinfo(np.uint16).max:
        raise InputError(f"{path}: depth {depth.max():.3f} exceeds the uint16 PNG range (max {65535 / DEPTH_PNG_SCALE:.3f})")
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(scaled.astype(np.uint16)).save(tmp, format="PNG")


DEPTH_SCALE_KEY = "semhint:depth_scale"  # PNG text chunk of a scaled depth PNG: depth = value / scale
PNG16_MAX = 65535


def depth_png_scale(depth: np.ndarray) -> float:
    """The scale that maps a frame's largest valid depth to the top of the uint16 range.

    The fixed KITTI scale (x 256) leaves a relative depth of 0.1..0.4 with about 77 grey levels;
    a per-frame scale from the range gives every frame the full 16 bits whatever its unit.
    """
    valid = np.asarray(depth)[np.isfinite(depth) & (np.asarray(depth) > 0)]
    top = float(valid.max()) if valid.size else 0.0
    return PNG16_MAX / top if top > 0 else DEPTH_PNG_SCALE


def write_scaled_depth_png(path: str | Path, depth: np.ndarray, scale: float, unit: str = "") -> dict:
    """H x W depth as uint16 round(depth * scale) (0 = invalid), the scale recorded in the PNG itself.

    The scale goes into a PNG text chunk (``semhint:depth_scale``), so the file alone gives depth
    back (:func:`read_scaled_depth_png`); the returned dict says the same for a JSON sidecar.
    """
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise InputError(f"{path}: depth must be H x W, got shape {depth.shape}")
    if not (np.isfinite(scale) and scale > 0):
        raise InputError(f"{path}: depth PNG scale must be a finite number > 0, got {scale}")
    depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0)
    values = np.minimum(np.round(depth * scale), PNG16_MAX).astype(np.uint16)
    info = PngInfo()
    info.add_text(DEPTH_SCALE_KEY, repr(float(scale)))
    if unit:
        info.add_text("semhint:depth_unit", unit)
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(values).save(tmp, format="PNG", pnginfo=info)
    return {"scale": float(scale), "unit": unit, "depth": "value / scale", "invalid": 0}


def read_scaled_depth_png(path: str | Path) -> np.ndarray:
    """float32 H x W depth from a PNG written by :func:`write_scaled_depth_png` (its text chunk holds the scale)."""
    raw = read_image_array(path, "depth PNG", modes=("I;16", "I;16B", "I"), mode_rule="16-bit single-channel")
    with Image.open(path) as im:
        text = getattr(im, "text", {}) or {}
    if DEPTH_SCALE_KEY not in text:
        raise InputError(f"{path}: no '{DEPTH_SCALE_KEY}' text chunk (not written by `semhint predict`; "
                         "KITTI-style depth PNGs are read with read_depth_png)")
    return (raw.astype(np.float64) / float(text[DEPTH_SCALE_KEY])).astype(np.float32)


def write_label_png(path: str | Path, labels: np.ndarray) -> None:
    """Write an H x W class map (ids 0..254, 255 = ignore) as a single-channel PNG, atomically.

    Values outside 0..255 cannot be stored in 8 bits and would wrap silently, so they are an error.
    """
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise InputError(f"{path}: label map must be H x W, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > IGNORE_INDEX):
            raise InputError(f"{path}: label values must be in 0..255, got {arr.min()}..{arr.max()}")
        arr = arr.astype(np.uint8)
    save_image(path, np.ascontiguousarray(arr))


# ----------------------------------------------------------------------------------------------
# where outputs may go
# ----------------------------------------------------------------------------------------------
def _existing_ancestor_not_dir(path: Path) -> Path | None:
    """The first ancestor of ``path`` that exists but is not a folder (a file in the way), or None."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def check_output_file(path: str | Path, option: str) -> Path:
    """Fail before any work when ``path`` cannot become a file: it is a folder, or sits under a file."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: {option} is a folder; give a file name")
    blocker = _existing_ancestor_not_dir(path)
    if blocker is not None:
        raise InputError(f"{path}: {option} lies under {blocker}, which is a file, not a folder")
    return path


def check_output_dir(path: str | Path, option: str) -> Path:
    """Fail before any work when ``path`` cannot become a folder: it is a file, or sits under a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: {option} is a file; give a folder")
    blocker = _existing_ancestor_not_dir(path)
    if blocker is not None:
        raise InputError(f"{path}: {option} lies under {blocker}, which is a file, not a folder")
    return path


def is_within(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path`` is ``folder`` or lies below it (symlinks and '..' resolved)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def refuse_inside(out: str | Path, inputs: list[str | Path], option: str) -> None:
    """An output folder equal to, or inside, an input folder would overwrite the input (or be read
    back as input next time): refuse it, naming both."""
    for item in inputs:
        if item and Path(item).is_dir() and is_within(out, item):
            raise InputError(f"{out}: {option} is inside the input folder {item}; write the output elsewhere")


_TEMP_SUFFIXES = "npz|npy|png|jpg|jpeg|ply|json|txt|yaml|mp4|ckpt|onnx|pt|tmp"
_TEMP_NAME = re.compile(rf"^\..+\.(?:[a-z0-9_]{{8}}|tmp)\.(?:{_TEMP_SUFFIXES})$")


def remove_stale_temps(folder: str | Path, recursive: bool = False, of: str | Path | None = None) -> int:
    """Delete the hidden temporary files :func:`atomic_path` (and video writers) leave when killed.

    Called when a command starts writing into ``folder`` again, so a killed run's leftovers never
    accumulate. Only names of the form ``.<stem>.<8 random chars or tmp>.<ext>`` are touched;
    with ``of`` (an output file) only the temporary files of that one file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    files = folder.rglob(".*") if recursive else folder.glob(".*")
    prefix = f".{Path(of).stem}." if of is not None else "."
    removed = 0
    for path in files:
        if path.is_file() and path.name.startswith(prefix) and _TEMP_NAME.match(path.name):
            path.unlink(missing_ok=True)
            removed += 1
    return removed
