"""Writing mp4 files that people can open: H.264 when a bundled ffmpeg is installed, mp4v otherwise.

Browsers and chat apps play only H.264 (in yuv420p); OpenCV's wheel cannot write it. The optional
``video`` extra (``pip install semhint[video]``) brings imageio-ffmpeg, whose wheel carries an ffmpeg
binary, so nothing is downloaded at run time. Without it the file is mp4v, which desktop players
(VLC, mpv) open. Frames go to a hidden temporary file that is renamed onto the output only when the
video is complete, so an interrupted run never leaves a truncated video under the final name.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np

from semhint.core.errors import InputError
from semhint.core.fileio import NEW_FILE_MODE


def h264_available() -> bool:
    """True when imageio-ffmpeg (and so a bundled ffmpeg with libx264) is installed."""
    try:
        import imageio_ffmpeg  # noqa: F401  # lazy: optional extra (semhint[video])
    except ImportError:
        return False
    return True


class Mp4Writer:
    """Append RGB uint8 frames of one size; ``close()`` publishes the file, ``abort()`` drops it.

    Used as a context manager, an exception inside the block aborts (no partial output). H.264 in
    yuv420p needs even sides: odd frames are padded by one black row/column, never resized.
    """

    def __init__(self, path: str | Path, fps: float, codec: str = "auto"):
        if codec not in ("auto", "h264", "mp4v"):
            raise InputError(f"video codec {codec!r}: expected auto, h264 or mp4v")
        if codec == "h264" and not h264_available():
            raise InputError("H.264 video needs imageio-ffmpeg: pip install 'semhint[video]' (or use mp4v)")
        self.path = Path(path)
        self.fps = float(fps) if fps and np.isfinite(fps) and fps > 0 else 10.0
        self.codec = "h264" if codec == "h264" or (codec == "auto" and h264_available()) else "mp4v"
        self.tmp = self.path.with_name(f".{self.path.stem}.tmp.mp4")
        self.frames = 0
        self._size: tuple[int, int] | None = None
        self._sink = None

    def add(self, rgb: np.ndarray) -> None:
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise InputError(f"{self.path}: video frames must be H x W x 3 uint8 RGB, got {rgb.dtype} {rgb.shape}")
        if self._sink is None:
            self._open(rgb.shape[:2])
        if rgb.shape[:2] != self._size:
            raise InputError(f"{self.path}: frame {self.frames} is {rgb.shape[1]}x{rgb.shape[0]}, "
                             f"the video is {self._size[1]}x{self._size[0]}")
        if self.codec == "h264":
            h, w = self._size
            frame = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0))) if (h % 2 or w % 2) else rgb
            self._sink.send(np.ascontiguousarray(frame))
        else:
            self._sink.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def _open(self, size: tuple[int, int]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._size = size
        h, w = size
        if self.codec == "h264":
            import imageio_ffmpeg  # lazy: optional extra (semhint[video])

            # macro_block_size=1: no silent resize; the padding in add() makes the sides even
            self._sink = imageio_ffmpeg.write_frames(
                str(self.tmp), (w + w % 2, h + h % 2), fps=self.fps, codec="libx264", pix_fmt_out="yuv420p",
                macro_block_size=1, output_params=["-movflags", "+faststart"], ffmpeg_log_level="error")
            self._sink.send(None)  # start the encoder
        else:
            self._sink = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self._sink.isOpened():
                raise InputError(f"{self.path}: cannot open an mp4v video writer")

    def _release(self) -> None:
        if self._sink is not None:
            if self.codec == "h264":
                self._sink.close()
            else:
                self._sink.release()
            self._sink = None

    def close(self) -> Path | None:
        """Finish the file and move it to ``path``; None when no frame was added."""
        self._release()
        if self.frames == 0:
            self.tmp.unlink(missing_ok=True)
            return None
        os.chmod(self.tmp, self.path.stat().st_mode & 0o7777 if self.path.exists() else NEW_FILE_MODE)
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Stop and delete the temporary file; the output path is left as it was."""
        try:
            self._release()
        finally:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, kind: type | None, value: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()
