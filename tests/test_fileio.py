"""semhint.core.fileio: writes are all-or-nothing and leave files readable like any other output."""

from __future__ import annotations

import os

import numpy as np
import pytest

from semhint.core.errors import InputError
from semhint.core.fileio import NEW_FILE_MODE, atomic_path, write_json, write_text


def test_a_new_file_gets_the_umask_mode_and_a_replaced_file_keeps_its_own(tmp_path):
    new = tmp_path / "report.md"
    write_text(new, "a")
    assert new.stat().st_mode & 0o777 == NEW_FILE_MODE  # not mkstemp's 0600
    os.chmod(new, 0o640)
    write_json(new, {"b": 1})
    assert new.stat().st_mode & 0o777 == 0o640 and new.read_text().startswith("{")


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "result.json"
    write_text(path, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_sixteen_bit_greyscale_is_scaled_not_clipped_and_wide_labels_are_refused(tmp_path):
    """16-bit greyscale frames keep their high byte (as OpenCV does), never turn all white; a
    label id above 255 is an error, never wrapped to id % 256."""
    import cv2
    from PIL import Image

    from semhint.core.fileio import read_label_png, read_rgb
    from semhint.data.snippets import decode_rgb

    grey = (np.arange(32 * 48).reshape(32, 48) * 40).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    rgb = read_rgb(tmp_path / "g16.png")
    assert rgb.shape == (32, 48, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[..., 0], (grey >> 8).astype(np.uint8))
    np.testing.assert_array_equal(decode_rgb(tmp_path / "g16.png"), rgb)
    assert cv2.imread(str(tmp_path / "g16.png")) is not None
    Image.fromarray(np.full((4, 4), 258, np.uint16)).save(tmp_path / "l16.png")
    with pytest.raises(InputError, match=r"l16.png: label ids must be in 0..255"):
        read_label_png(tmp_path / "l16.png")
