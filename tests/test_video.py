"""Mp4Writer: browsers' codec when available, complete files only, clear errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from semhint.core.errors import InputError
from semhint.core.video import Mp4Writer, h264_available


def _frames(n: int, h: int, w: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def _read(path):
    cap = cv2.VideoCapture(str(path))
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode(errors="replace").lower()
    n = 0
    size = None
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        n, size = n + 1, frame.shape[:2]
    cap.release()
    return fourcc, n, size


@pytest.mark.skipif(not h264_available(), reason="imageio-ffmpeg (the video extra) not installed")
def test_h264_video_has_every_frame_and_odd_sides_are_padded_not_resized(tmp_path):
    path = tmp_path / "out.mp4"
    with Mp4Writer(path, fps=10) as writer:
        assert writer.codec == "h264"
        for f in _frames(5, 33, 47):
            writer.add(f)
    fourcc, n, size = _read(path)
    assert fourcc in ("avc1", "h264") and n == 5 and size == (34, 48)
    assert not list(tmp_path.glob(".*"))  # no temporary left


def test_mp4v_fallback_and_a_failure_leaves_no_output(tmp_path):
    path = tmp_path / "out.mp4"
    with Mp4Writer(path, fps=10, codec="mp4v") as writer:
        for f in _frames(3, 32, 48):
            writer.add(f)
    assert _read(path)[1:] == (3, (32, 48))
    broken = tmp_path / "broken.mp4"
    with pytest.raises(RuntimeError):
        with Mp4Writer(broken, fps=10, codec="mp4v") as writer:
            writer.add(_frames(1, 32, 48)[0])
            raise RuntimeError("killed half-way")
    assert not broken.exists() and not list(tmp_path.glob(".*"))


def test_bad_frames_and_codecs_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="uint8 RGB"):
        Mp4Writer(tmp_path / "a.mp4", 10, codec="mp4v").add(np.zeros((8, 8), np.float32))
    writer = Mp4Writer(tmp_path / "b.mp4", 10, codec="mp4v")
    writer.add(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(InputError, match="frame 1 is 10x8"):
        writer.add(np.zeros((8, 10, 3), np.uint8))
    writer.abort()
    with pytest.raises(InputError, match="expected auto, h264 or mp4v"):
        Mp4Writer(tmp_path / "c.mp4", 10, codec="vp9")
