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


def classify_inputs(inputs: list[str | Path]) -> list[Source]:
    """Sort each CLI input into image / folder / video, failing on anything else up front."""
    sources = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()):
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
    return sources


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
        yield source.path.stem, read_rgb(source.path)
    elif source.kind == "folder":
        for p in sorted(q for q in source.path.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES):
            yield f"{source.path.name}/{p.stem}", read_rgb(p)
    else:
        for i, (rgb, _) in enumerate(iter_video(source.path)):
            yield f"{source.path.stem}/{i:06d}", rgb


def video_fps(path: Path, default: float = 10.0) -> float:
    """Frames per second stored in a video file (``default`` when the container does not say)."""
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0.0
    cap.release()
    return fps if fps and fps > 0 else default
