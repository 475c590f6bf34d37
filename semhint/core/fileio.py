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


class InputError(ValueError):
    """Bad user input (missing file, corrupt image, malformed split line...): one clear line."""


@contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary name keeps the final suffix (writers such as np.savez and cv2 pick the format
    from it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=suffix or path.suffix)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
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
