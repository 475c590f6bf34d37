"""Label maps: class sets with names and palettes, PNG class maps (255 = ignore), colourised previews.

A label map is a single-channel PNG whose pixel values are class ids, 255 meaning "ignore" (no
label). The class sets here are the ones semhint's data speaks: the 19 Cityscapes train ids for
driving (what SynthDrive renders, and what common street-scene models predict) and the three
endoscopic classes of SynthTissue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from semhint.core.fileio import InputError, read_label_png, save_image

IGNORE_INDEX = 255

__all__ = ["IGNORE_INDEX", "ClassSet", "CITYSCAPES", "TISSUE", "get_class_set", "class_names", "read_label_png",
           "write_label_png", "colorize"]


@dataclass(frozen=True)
class ClassSet:
    """Names and display colours of a label space; ``groups`` name useful subsets of class ids.

    Groups let other modules ask for e.g. the "flat" classes (road, sidewalk: planar surfaces the
    pseudo-depth surface fit uses) or the "things" (countable objects that label noise can drop)
    without hard-coding ids.
    """

    name: str
    names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    groups: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.names) != len(self.palette):
            raise ValueError(f"class set {self.name}: {len(self.names)} names but {len(self.palette)} colours")
        if len(self.names) >= IGNORE_INDEX:
            raise ValueError(f"class set {self.name}: at most {IGNORE_INDEX - 1} classes (255 is ignore)")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def group(self, name: str) -> tuple[int, ...]:
        """The class ids of group ``name``; an InputError lists the groups that exist."""
        if name not in self.groups:
            raise InputError(f"class set {self.name}: no group {name!r} (have: {', '.join(sorted(self.groups))})")
        return self.groups[name]

    def palette_array(self) -> np.ndarray:
        """256 x 3 uint8 lookup table: class colours, every other value (255 = ignore included) black."""
        lut = np.zeros((256, 3), dtype=np.uint8)
        lut[: self.num_classes] = np.asarray(self.palette, dtype=np.uint8)
        return lut


# The Cityscapes train ids and their official colours (cityscapesScripts, labels.py).
CITYSCAPES = ClassSet(
    name="cityscapes",
    names=("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
           "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"),
    palette=((128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
             (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
             (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32)),
    groups={
        "flat": (0, 1),  # Cityscapes category 'flat'
        "construction": (2, 3, 4),
        "object": (5, 6, 7),
        "nature": (8, 9),
        "sky": (10,),
        "human": (11, 12),
        "vehicle": (13, 14, 15, 16, 17, 18),
        "stuff": (0, 1, 2, 3, 4, 8, 9, 10),
        "things": (11, 12, 13, 14, 15, 16, 17, 18),
    },
)

TISSUE = ClassSet(
    name="tissue",
    names=("tissue A", "tissue B", "instrument"),
    palette=((214, 90, 96), (235, 190, 95), (90, 200, 230)),
    groups={"stuff": (0, 1), "things": (2,), "tissue": (0, 1), "instrument": (2,)},
)

_SETS = {c.name: c for c in (CITYSCAPES, TISSUE)}


def get_class_set(name: str) -> ClassSet:
    """A class set by name ("cityscapes" or "tissue"); an unknown name is an InputError listing them."""
    key = name.strip().lower()
    if key not in _SETS:
        raise InputError(f"unknown class set {name!r} (choose from: {', '.join(sorted(_SETS))})")
    return _SETS[key]


def class_names(name: str) -> tuple[str, ...]:
    """The class names of the set called ``name``."""
    return get_class_set(name).names


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


def colorize(labels: np.ndarray, class_set: ClassSet | str) -> np.ndarray:
    """H x W class ids -> H x W x 3 uint8 preview in the set's palette (ignore and unknown ids black)."""
    cs = get_class_set(class_set) if isinstance(class_set, str) else class_set
    arr = np.asarray(labels)
    if arr.dtype != np.uint8:
        arr = np.where((arr < 0) | (arr > IGNORE_INDEX), IGNORE_INDEX, arr).astype(np.uint8)
    idx = arr
    return cs.palette_array()[idx]
