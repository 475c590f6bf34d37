"""A user's inputs for prediction and tracking: image files, folders of images and video files, as RGB frames.

The suffixes accepted are those of ``semhint.core.conventions``, the same that training reads, so
a folder `semhint train` accepts is one `semhint predict` accepts and the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from semhint.core.conventions import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from semhint.core.errors import InputError
from semhint.core.fileio import read_rgb


@dataclass
class Source:
    """One user input: a list of images or a video, with a name for the output files."""

    path: Path
    kind: str  # image | folder | video
    name: str = ""  # what its outputs are named after (see :func:`name_sources`); the stem / folder name by default

    @property
    def out_name(self) -> str:
        return self.name or (self.path.name if self.kind == "folder" else self.path.stem)


def classify_inputs(inputs: list[str | Path]) -> list[Source]:
    """Sort each CLI input into image / folder / video, failing on anything else up front."""
    sources: list[Source] = []
    seen: dict[Path, str] = {}
    for item in inputs:
        resolved = Path(item).resolve()
        if resolved in seen:
            raise InputError(f"{item}: input given twice (also as {seen[resolved]})")
        seen[resolved] = str(item)
        path = Path(item)
        if path.is_dir():
            if not folder_frames(path):
                raise InputError(f"{path}: folder has no images ({', '.join(IMAGE_SUFFIXES)})")
            sources.append(Source(path, "folder"))
        elif not path.exists():
            raise InputError(f"{path}: input not found")
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            sources.append(Source(path, "image"))
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            sources.append(Source(path, "video"))
        else:
            raise InputError(f"{path}: unsupported input type (images: {IMAGE_SUFFIXES}, videos: {VIDEO_SUFFIXES})")
    return name_sources(sources)


def _name_parts(source: Source) -> tuple[str, ...]:
    path = source.path.resolve()
    return path.parts if source.kind == "folder" else (*path.parent.parts, path.stem)


def name_sources(sources: list[Source]) -> list[Source]:
    """Give every source the shortest trailing part of its path that no other source shares.

    Two drives' ``.../image_02/data`` folders would both write ``data/0000000000_depth.npy`` and
    the second would overwrite the first; named ``drive_a/image_02/data`` and
    ``drive_b/image_02/data`` their outputs mirror the inputs' own paths and stay apart. One input
    keeps its plain name (the folder name, or the file's stem).
    """
    parts = [_name_parts(s) for s in sources]
    longest = max((len(p) for p in parts), default=1)
    for k in range(1, longest + 1):
        names = ["/".join(p[-k:]) for p in parts]
        if len(set(names)) == len(names):
            break
    else:  # only the suffix tells them apart (x.png and x.jpg in one folder)
        names = ["/".join(p[-2:]) + (s.path.suffix.replace(".", "_") if s.kind != "folder" else "")
                 for p, s in zip(parts, sources)]
    return [Source(s.path, s.kind, name.lstrip("/")) for s, name in zip(sources, names)]


def folder_frames(folder: Path) -> list[tuple[str, Path]]:
    """(output stem, image) of a folder's images in name order; x.png beside x.jpg keep their suffixes apart."""
    images = sorted(q for q in folder.iterdir()
                    if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file() and not q.name.startswith("."))
    stems = [q.stem for q in images]
    return [(q.stem if stems.count(q.stem) == 1 else q.name.replace(".", "_"), q) for q in images]


def iter_video(path: Path) -> Iterator[tuple[np.ndarray, float]]:
    """RGB frames of a video file (and its fps); an unreadable file is an InputError."""
    cap = cv2.VideoCapture(str(path))
    ok, frame = cap.read() if cap.isOpened() else (False, None)
    if not ok:
        cap.release()
        raise InputError(f"{path}: cannot read video (not a video file, corrupt, or codec unsupported by OpenCV)")
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    try:
        while ok:
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), fps
            ok, frame = cap.read()
    finally:
        cap.release()


def iter_frames(source: Source) -> Iterator[tuple[str, np.ndarray]]:
    """(output name, RGB uint8 frame) for every frame of a source."""
    if source.kind == "image":
        yield source.out_name, read_rgb(source.path)
    elif source.kind == "folder":
        for stem, p in folder_frames(source.path):
            yield f"{source.out_name}/{stem}", read_rgb(p)
    else:
        for i, (rgb, _) in enumerate(iter_video(source.path)):
            yield f"{source.out_name}/{i:06d}", rgb


def video_fps(path: Path, default: float = 10.0) -> float:
    """Frames per second stored in a video file (``default`` when the container does not say)."""
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0.0
    cap.release()
    return fps if fps and fps > 0 else default


def frame_count(source: Source) -> int | None:
    """How many frames a source has (for a progress bar's total and ETA); None when a video does not say."""
    if source.kind == "image":
        return 1
    if source.kind == "folder":
        return len(folder_frames(source.path))
    cap = cv2.VideoCapture(str(source.path))
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    cap.release()
    return count if count > 0 else None
