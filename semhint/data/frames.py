"""One training frame and where its pieces are: FrameRef, split files, folder listings, mirrored maps.

The small pieces every data module (and the synthetic renderers, which write data these readers
must load unchanged) shares: the description of one training frame (:class:`FrameRef`), split-file
reading and writing, one-listing-per-folder image lookup, and the path of a per-frame map (labels,
depth) that mirrors an image's place under its dataset root.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

from semhint.core.conventions import IMAGE_SUFFIXES
from semhint.core.fileio import InputError, atomic_path


@dataclass(frozen=True)
class FrameRef:
    """One target frame with its neighbours: everything a snippet needs, resolved up front.

    Resolving paths and intrinsics when the dataset is built (not in ``__getitem__``) means a
    missing neighbour or calibration file fails before training starts, with the split line named.
    ``K`` is 3 x 3 in pixels of ``K_hw`` (height, width), the resolution the calibration describes;
    the network-resolution K follows from that alone, whatever size the stored image has.
    """

    key: str  # the normalised split line, e.g. "2011_09_26/2011_09_26_drive_0001_sync 5 l"
    images: dict[int, Path]  # frame offset -> image file
    K: np.ndarray  # 3 x 3 float64
    K_hw: tuple[int, int]
    data_root: Path  # what mirrored per-frame maps (labels, depth) are relative to
    image_hw: tuple[int, int] | None = None  # stored size of the sequence's frames (its first frame's), if known

    @property
    def target(self) -> Path:
        return self.images[0]


# ----------------------------------------------------------------------------------------------
# split files
# ----------------------------------------------------------------------------------------------
SPLITS_DIR = Path(__file__).resolve().parents[1] / "splits"  # split files that ship inside the package


def resolve_split(path: str | Path) -> Path:
    """A split file: the path itself when it exists, else the shipped split of that name (with or
    without a leading ``splits/``), so configs name standard splits the same way in a clone and a pip install."""
    path = Path(path)
    if path.is_file():
        return path
    parts = path.parts[1:] if path.parts[:1] == ("splits",) else path.parts
    shipped = SPLITS_DIR.joinpath(*parts) if parts else SPLITS_DIR
    return shipped if shipped.is_file() else path


def read_split_lines(path: str | Path) -> list[tuple[int, str]]:
    """(line number, stripped text) of every non-empty, non-comment line of a split file."""
    path = resolve_split(path)
    if not path.is_file():
        raise InputError(f"{path}: split file not found")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read split file ({exc.__class__.__name__})") from None
    lines = [(i, raw.strip()) for i, raw in enumerate(text.splitlines(), start=1)]
    lines = [(i, s) for i, s in lines if s and not s.startswith("#")]
    if not lines:
        raise InputError(f"{path}: split file has no frames")
    return lines


def split_entries(split: str | Path | None, root: Path, scanned: Callable[[], list[str]],
                  parse: Callable[[str, int, str | Path], tuple], nothing_found: str) -> list[tuple[tuple, str]]:
    """(parsed split line, where it came from) for a split file, or for the scanned frames when
    ``split`` is empty; the 'where' text makes every later error name the line or frame at fault."""
    if split:
        return [(parse(text, i, split), f"{split} line {i}") for i, text in read_split_lines(split)]
    lines = scanned()
    if not lines:
        raise InputError(f"{root}: {nothing_found}")
    return [(parse(text, i, root), f"{root} frame {text}") for i, text in enumerate(lines, 1)]


def write_split(path: str | Path, lines: list[str]) -> None:
    """Write split lines atomically (one frame per line)."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{line}\n" for line in lines))


class DirListing:
    """Answers 'which images are in this folder' with one ``os.listdir`` per folder.

    A KITTI Eigen split checks ~120k neighbour files; listing each drive folder once instead of
    stat-ing every file keeps building the dataset to well under a second. One instance per build:
    nothing is cached across builds, so new files are always seen.
    """

    def __init__(self) -> None:
        self._frames: dict[Path, dict[int, Path]] = {}
        self._sorted: dict[Path, list[Path]] = {}
        self._sets: dict[Path, set[Path]] = {}

    def sorted_images(self, folder: Path) -> list[Path]:
        """Image files of ``folder`` sorted by name ([] when the folder does not exist)."""
        if folder not in self._sorted:
            try:
                names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_SUFFIXES) and not n.startswith("."))
            except (FileNotFoundError, NotADirectoryError):
                names = []
            self._sorted[folder] = [folder / n for n in names]
        return self._sorted[folder]

    def numbered_images(self, folder: Path) -> dict[int, Path]:
        """Images whose stem is an integer, by that integer (any zero padding, png or jpg)."""
        if folder not in self._frames:
            frames = {}
            for p in self.sorted_images(folder):
                if p.stem.isdigit():
                    frames.setdefault(int(p.stem), p)
            self._frames[folder] = frames
        return self._frames[folder]

    def exists(self, path: Path) -> bool:
        """Whether ``path`` exists, answered from its folder's listing (non-image files via stat)."""
        if not path.name.lower().endswith(IMAGE_SUFFIXES):
            return path.is_file()
        return path in self._name_set(path.parent)

    def _name_set(self, folder: Path) -> set[Path]:
        if folder not in self._sets:
            self._sets[folder] = set(self.sorted_images(folder))
        return self._sets[folder]


def image_hw(path: Path) -> tuple[int, int]:
    """Image (height, width) from the file header, without decoding pixels."""
    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{path}: cannot read image header ({exc})".replace("\n", " ")) from None


def check_camera(K: np.ndarray, hw: tuple[int, int], source: str) -> None:
    """Reject a 3 x 3 K that no real camera has: non-finite entries, fx or fy <= 0, or a principal
    point far outside the image it describes (``hw``: height, width).

    NaN passes a plain ``fx <= 0`` test and later crashes the grid sampler with no message, so
    every entry is checked for finiteness first. The principal point may sit a little outside the
    image (cropped sensors), not more than 10 % of its size.
    """
    K = np.asarray(K, dtype=np.float64)
    if not np.isfinite(K).all():
        raise InputError(f"{source}: intrinsics have non-finite values (fx {K[0, 0]}, fy {K[1, 1]}, cx {K[0, 2]}, cy {K[1, 2]})")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise InputError(f"{source}: fx and fy must be positive, got {K[0, 0]}, {K[1, 1]}")
    h, w = hw
    if h <= 0 or w <= 0:
        raise InputError(f"{source}: image size must be positive, got {w}x{h} (width x height)")
    for name, value, size in (("cx", K[0, 2], w), ("cy", K[1, 2], h)):
        if not -0.1 * size <= value <= 1.1 * size:
            raise InputError(f"{source}: {name} = {value:g} lies far outside the {w}x{h} image it describes")


def check_aspect(K_hw: tuple[int, int], image_hw: tuple[int, int], source: str, tolerance: float = 0.02) -> None:
    """Intrinsics for a W x H image applied to frames of another aspect would stretch every point
    cloud and warp; resized copies keep the aspect to within rounding, so more than ``tolerance``
    (relative) apart is an error naming the calibration."""
    a_k, a_i = K_hw[1] / K_hw[0], image_hw[1] / image_hw[0]
    if abs(math.log(a_k / a_i)) > tolerance:
        raise InputError(f"{source}: intrinsics describe {K_hw[1]}x{K_hw[0]} images but the frames are "
                         f"{image_hw[1]}x{image_hw[0]} (aspect {a_k:.3f} vs {a_i:.3f}; width x height)")


# ----------------------------------------------------------------------------------------------
# mirrored per-frame maps (labels, depth)
# ----------------------------------------------------------------------------------------------
def mirrored_path(root: str | Path, image_path: str | Path, data_root: str | Path, suffix: str = ".png") -> Path:
    """The per-frame map under ``root`` that mirrors ``image_path``'s place under ``data_root``.

    ``labels/2011_09_26/drive/image_02/data/0000000005.png`` mirrors
    ``data/2011_09_26/drive/image_02/data/0000000005.jpg``: same relative path, ``suffix`` extension.
    """
    image_path, data_root = Path(image_path), Path(data_root)
    try:
        rel = image_path.relative_to(data_root)
    except ValueError:
        raise InputError(f"{image_path}: not inside the dataset root {data_root}") from None
    return Path(root) / rel.with_suffix(suffix)
