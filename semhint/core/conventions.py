"""Facts every floor shares, in one place: the ignore label, file suffixes, the depth-PNG scale, class sets.

A label map is a single-channel PNG whose pixel values are class ids, ``IGNORE_INDEX`` (255) meaning
"no label". The class sets are the label spaces semhint's data speaks: the 19 Cityscapes train ids
for driving (what SynthDrive renders, and what common street-scene models predict) and the three
endoscopic classes of SynthTissue. Readers of images and videos (training, prediction, labelling)
all accept exactly the suffixes below, so a folder one command reads is a folder every command reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from semhint.core.errors import InputError

IGNORE_INDEX = 255  # label value meaning "no label"; at most 254 classes fit below it in a uint8 map
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg")
DEPTH_PNG_SCALE = 256.0  # KITTI depth-benchmark convention: value = round(depth * 256), 0 = invalid


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

    def id(self, name: str) -> int:
        """The class id of ``name`` (e.g. CITYSCAPES.id("car") == 13); an InputError lists the names."""
        if name not in self.names:
            raise InputError(f"class set {self.name}: no class {name!r} (have: {', '.join(self.names)})")
        return self.names.index(name)

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
