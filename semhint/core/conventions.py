"""Facts every floor shares, in one place: the ignore label, file suffixes, the depth-PNG scale, class sets.

A label map is a single-channel PNG whose pixel values are class ids, ``IGNORE_INDEX`` (255) meaning
"no label". Readers of images and videos (training, prediction, labelling) all accept exactly the
suffixes below, so a folder one command reads is a folder every command reads.

Class sets (the label spaces semhint's data speaks) are data, not code: one YAML file each, shipped
in ``semhint/core/classsets/`` (the 19 Cityscapes train ids for driving, what SynthDrive renders;
the three endoscopic classes of SynthTissue; CamVid's 11 classes, mapped onto Cityscapes), and a
user's own file works the same way. A file holds::

    name: camvid
    map_to: cityscapes            # optional: the set these classes become (each class names its target)
    classes:                      # id = position in the list
      - {name: sky, colour: [128, 128, 128], to: sky}     # `to: null` = becomes 255 (ignore)
    ignore: [11]                  # optional: source values meaning "unlabelled" (read as 255)
    groups: {flat: [road, pavement]}   # optional: named subsets, by class name (or id)

A mistake in a file is an InputError naming the file and the key.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from semhint.core.errors import InputError

IGNORE_INDEX = 255  # label value meaning "no label"; at most 254 classes fit below it in a uint8 map
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg")
DEPTH_PNG_SCALE = 256.0  # KITTI depth-benchmark convention: value = round(depth * 256), 0 = invalid
CLASSSET_DIR = Path(__file__).resolve().parent / "classsets"  # the class sets that ship inside the package
MAX_CLASSES = IGNORE_INDEX - 1  # ids 0..253: 254 classes, 255 = ignore (254 kept free as in the old limit)

_TOP_KEYS = {"name", "classes", "groups", "ignore", "map_to", "description"}
_CLASS_KEYS = {"name", "colour", "color", "to"}


@dataclass(frozen=True)
class ClassSet:
    """Names and display colours of a label space; ``groups`` name useful subsets of class ids.

    Groups let other modules ask for e.g. the "flat" classes (road, sidewalk: planar surfaces the
    pseudo-depth surface fit uses) or the "things" (countable objects that label noise can drop)
    without hard-coding ids. ``ignore`` lists source label values that mean "unlabelled";
    ``map_to`` names another set and ``targets`` each class's class there (None = ignore), so that
    labels made in this set's ids can be written in the other's (:meth:`mapping_to`).
    """

    name: str
    names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    groups: dict[str, tuple[int, ...]] = field(default_factory=dict)
    ignore: tuple[int, ...] = ()
    map_to: str | None = None  # a packaged set's name or an absolute path to a YAML file
    targets: tuple[str | None, ...] = ()
    source: str = ""  # the file it was read from (for messages)

    def __post_init__(self) -> None:
        if len(self.names) != len(self.palette):
            raise ValueError(f"class set {self.name}: {len(self.names)} names but {len(self.palette)} colours")
        if len(self.names) > MAX_CLASSES:
            raise ValueError(f"class set {self.name}: at most {MAX_CLASSES} classes (255 is ignore)")
        if self.map_to is not None and len(self.targets) != len(self.names):
            raise ValueError(f"class set {self.name}: map_to needs one target per class")

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
        lut[: self.num_classes] = np.asarray(self.palette, dtype=np.uint8).reshape(-1, 3)
        return lut

    # -- label values ---------------------------------------------------------------------------
    def label_table(self) -> np.ndarray:
        """256-entry uint8 table from label-file values to this set's ids: ids stay, ``ignore`` values
        and 255 become 255, and so does any other value (:meth:`to_ids` rejects those first)."""
        lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        lut[: self.num_classes] = np.arange(self.num_classes, dtype=np.uint8)
        return lut

    def to_ids(self, raw: np.ndarray, where: str = "label map") -> np.ndarray:
        """A label file's uint8 values as this set's ids (ignore values -> 255); a value that is
        neither a class id, an ``ignore`` value nor 255 is an InputError naming ``where``."""
        raw = np.asarray(raw, dtype=np.uint8)
        allowed = np.zeros(256, dtype=bool)
        allowed[: self.num_classes] = True
        allowed[list(self.ignore) + [IGNORE_INDEX]] = True
        bad = ~allowed[raw]
        if bad.any():
            extra = f", {'/'.join(map(str, self.ignore))} = unlabelled" if self.ignore else ""
            raise InputError(f"{where}: label {int(raw[bad][0])} outside the class set {self.name} "
                             f"(0..{self.num_classes - 1}{extra}, 255 = ignore)")
        return self.label_table()[raw]

    def target_set(self) -> ClassSet | None:
        """The set named by ``map_to`` (None when there is none)."""
        return None if self.map_to is None else get_class_set(self.map_to)

    def mapping_to(self, target: ClassSet | str | None = None) -> np.ndarray:
        """256-entry uint8 table from this set's label values to ``target``'s ids (default: the
        ``map_to`` set), so a whole map converts with one indexing op: ``table[labels]``.

        Class ids map to their named target class (255 where the target is null), ``ignore``
        values, 255 and every unused value to 255. ``target`` equal to this set gives
        :meth:`label_table`. An explicit ``target`` (e.g. the copy a checkpoint carries) is matched
        by class name, so the map_to file need not exist any more.
        """
        if isinstance(target, str):
            target = get_class_set(target)
        if target is not None and target.name == self.name and target.names == self.names:
            return self.label_table()
        if self.map_to is None:
            wanted = "its map_to set" if target is None else repr(target.name)
            raise InputError(f"class set {self.name}: no mapping to {wanted} (the set has no map_to)")
        target = self.target_set() if target is None else target
        lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        for i, t in enumerate(self.targets):
            lut[i] = IGNORE_INDEX if t is None else target.id(t)
        return lut

    # -- serialisation (a checkpoint carries its class set, so a user's YAML is not needed later) -----
    def to_dict(self) -> dict[str, Any]:
        """The YAML form of this set (class names in groups), readable by :func:`class_set_from_dict`."""
        classes = []
        for i, (n, c) in enumerate(zip(self.names, self.palette)):
            entry: dict[str, Any] = {"name": n, "colour": [int(v) for v in c]}
            if self.map_to is not None:
                entry["to"] = self.targets[i]
            classes.append(entry)
        out: dict[str, Any] = {"name": self.name, "classes": classes}
        if self.groups:
            out["groups"] = {g: [self.names[i] for i in ids] for g, ids in self.groups.items()}
        if self.ignore:
            out["ignore"] = list(self.ignore)
        if self.map_to is not None:
            out["map_to"] = self.map_to
        return out


# ----------------------------------------------------------------------------------------------
# reading and checking class-set files
# ----------------------------------------------------------------------------------------------
def _is_colour(value: Any) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value))


def _parse_class(where: str, key: str, entry: Any, mapped: bool) -> tuple[str, tuple[int, int, int], str | None]:
    """(name, colour, target) of one ``classes`` entry."""
    if not isinstance(entry, dict):
        raise InputError(f"{where}: {key} must be a mapping with name and colour, got {entry!r}")
    unknown = set(entry) - _CLASS_KEYS
    if unknown:
        raise InputError(f"{where}: {key}: unknown key(s) {', '.join(sorted(map(str, unknown)))} "
                         f"(allowed: name, colour, to)")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"{where}: {key}.name must be a non-empty string, got {name!r}")
    colour = entry.get("colour", entry.get("color"))
    if not _is_colour(colour):
        raise InputError(f"{where}: {key}.colour must be three integers 0..255 ([R, G, B]), got {colour!r}")
    if "to" in entry and not mapped:
        raise InputError(f"{where}: {key}.to needs a top-level map_to naming the target class set")
    if mapped and "to" not in entry:
        raise InputError(f"{where}: {key}.to missing: with map_to every class names its target class (null = ignore)")
    target = entry.get("to")
    if target is not None and (not isinstance(target, str) or not target.strip()):
        raise InputError(f"{where}: {key}.to must be a class name of the map_to set or null, got {target!r}")
    return name.strip(), tuple(int(v) for v in colour), target


def _parse_groups(where: str, raw: Any, names: list[str]) -> dict[str, tuple[int, ...]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InputError(f"{where}: groups must be a mapping of group name -> list of classes")
    groups = {}
    for g, members in raw.items():
        if not isinstance(members, list):
            raise InputError(f"{where}: groups.{g} must be a list of class names, got {members!r}")
        ids = []
        for m in members:
            if isinstance(m, str) and m in names:
                ids.append(names.index(m))
            elif isinstance(m, int) and not isinstance(m, bool) and 0 <= m < len(names):
                ids.append(m)
            else:
                raise InputError(f"{where}: groups.{g}: no class {m!r} in this set")
        groups[str(g)] = tuple(ids)
    return groups


def _parse_ignore(where: str, raw: Any, num_classes: int) -> tuple[int, ...]:
    if raw is None:
        return ()
    values = raw if isinstance(raw, list) else [raw]
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 255:
            raise InputError(f"{where}: ignore: values must be integers 0..255, got {v!r}")
        if v < num_classes:
            raise InputError(f"{where}: ignore: {v} is the id of a class (ignore lists values beyond the classes)")
    return tuple(sorted(set(values)))


def _map_to_text(where: str, raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise InputError(f"{where}: map_to must name a class set (e.g. cityscapes) or a YAML file, got {raw!r}")
    return raw.strip()


def _resolve_map_to(where: str, raw: Any, base: Path | None) -> str:
    """The ``map_to`` spec as a packaged name or an absolute path (relative paths: from the file's folder)."""
    spec = _map_to_text(where, raw)
    if spec.lower() in packaged_class_sets():
        return spec.lower()
    path = Path(spec).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    if not path.is_file():
        raise InputError(f"{where}: map_to: unknown class set {raw!r} (packaged: {', '.join(packaged_class_sets())}, "
                         "or a path to a YAML file)")
    return str(path.resolve())


def class_set_from_dict(data: Any, where: str, base: Path | None = None, check_target: bool = True) -> ClassSet:
    """A ClassSet from the parsed YAML of a class-set file; every mistake is an InputError naming
    ``where`` (the file) and the key. ``check_target`` loads the map_to set to check the targets."""
    if not isinstance(data, dict):
        raise InputError(f"{where}: a class set file is a mapping with name and classes")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))} "
                         f"(allowed: {', '.join(sorted(_TOP_KEYS))})")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"{where}: name must be a non-empty string, got {name!r}")
    classes = data.get("classes")
    if not isinstance(classes, list) or not classes:
        raise InputError(f"{where}: classes must be a non-empty list of {{name, colour}} entries")
    if len(classes) > MAX_CLASSES:
        raise InputError(f"{where}: classes: {len(classes)} classes, at most {MAX_CLASSES} fit (255 is ignore)")
    mapped = data.get("map_to") is not None
    parsed = [_parse_class(where, f"classes[{i}]", e, mapped) for i, e in enumerate(classes)]
    names = [n for n, _, _ in parsed]
    dup = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if dup is not None:
        raise InputError(f"{where}: classes: duplicate class name {dup!r}")
    map_to = None
    if mapped:  # a set read only for its names (a map_to target, a checkpoint's copy) keeps map_to as written
        map_to = _resolve_map_to(where, data["map_to"], base) if check_target else _map_to_text(where, data["map_to"])
    if map_to is not None and check_target:
        target = _load(map_to, check_target=False)
        for i, (_, _, t) in enumerate(parsed):
            if t is not None and t not in target.names:
                raise InputError(f"{where}: classes[{i}].to: {t!r} is not a class of {target.name} "
                                 f"(have: {', '.join(target.names)})")
    return ClassSet(name=name.strip(), names=tuple(names), palette=tuple(c for _, c, _ in parsed),
                    groups=_parse_groups(where, data.get("groups"), names),
                    ignore=_parse_ignore(where, data.get("ignore"), len(names)),
                    map_to=map_to, targets=tuple(t for _, _, t in parsed) if mapped else (), source=where)


def load_class_set_file(path: str | Path, check_target: bool = True) -> ClassSet:
    """Read and check one class-set YAML file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"{path}: class set file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: cannot read class set ({exc.__class__.__name__}: {exc})".replace("\n", " ")) from None
    return class_set_from_dict(data, str(path), base=path.resolve().parent, check_target=check_target)


@functools.lru_cache(maxsize=None)
def packaged_class_sets() -> tuple[str, ...]:
    """Names of the class sets shipped with semhint (``semhint/core/classsets/*.yaml``)."""
    return tuple(sorted(p.stem for p in CLASSSET_DIR.glob("*.yaml")))


@functools.lru_cache(maxsize=None)
def _load_packaged(name: str, check_target: bool) -> ClassSet:
    return load_class_set_file(CLASSSET_DIR / f"{name}.yaml", check_target)


def _load(spec: str, check_target: bool) -> ClassSet:
    key = spec.strip()
    if key.lower() in packaged_class_sets():
        return _load_packaged(key.lower(), check_target)
    if key.lower().endswith((".yaml", ".yml")) or "/" in key or "\\" in key or Path(key).is_file():
        return load_class_set_file(key, check_target)
    raise InputError(f"unknown class set {spec!r} (choose from: {', '.join(packaged_class_sets())}, "
                     "or give a path to a YAML file)")


def get_class_set(name_or_path: str) -> ClassSet:
    """A class set by packaged name (``cityscapes``, ``tissue``, ``camvid``) or a path to a YAML file;
    an unknown name is an InputError listing the packaged ones."""
    return _load(name_or_path, check_target=True)


def class_names(name: str) -> tuple[str, ...]:
    """The class names of the set called ``name``."""
    return get_class_set(name).names


CITYSCAPES = get_class_set("cityscapes")
TISSUE = get_class_set("tissue")
