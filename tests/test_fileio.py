"""semhint.core.fileio: writes are all-or-nothing and leave files readable like any other output."""

from __future__ import annotations

import os

import pytest

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
