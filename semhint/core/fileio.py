"""File input/output that fails clearly and never leaves half-written files.

Every reader raises :class:`InputError` with a one-line message naming the file and the problem;
every writer writes to a temporary file in the same folder and renames it into place.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

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


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as uint8 H x W x 3 RGB."""
    return read_image_array(path, "image", convert="RGB")


def read_label_png(path: str | Path) -> np.ndarray:
    """A single-channel class-map PNG as uint8 H x W (255 = ignore)."""
    labels = read_image_array(path, "label map", modes=("L", "P", "I", "I;16"), mode_rule="single-channel")
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
