"""Any video as a dataset: folder of frames or video file + intrinsics file; split making."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from semhint.app.cli import main
from semhint.core.config import DataConfig
from semhint.core.fileio import InputError
from semhint.data import folder, splits
from semhint.data.build import build_dataset

H, W = 24, 40


def texture(seed: int = 0) -> np.ndarray:
    """A smooth random texture (wider than a frame) that optical flow can track."""
    import cv2

    noise = np.random.default_rng(seed).integers(0, 255, (H, W + 64, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), 1.5)


def make_sequence(folder_path: Path, shifts: list[int], seed: int = 0) -> None:
    """Frames that are crops of one texture moved by ``shifts`` pixels (equal shifts = static camera)."""
    from PIL import Image

    folder_path.mkdir(parents=True, exist_ok=True)
    tex = texture(seed)
    for i, s in enumerate(shifts):
        Image.fromarray(np.ascontiguousarray(tex[:, s : s + W])).save(folder_path / f"frame_{i:04d}.png")


def write_intrinsics(path: Path, **values) -> Path:
    values = values or {"fx": 30.0, "fy": 30.0, "cx": 19.5, "cy": 11.5}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values) if path.suffix == ".json" else "".join(f"{k}: {v}\n" for k, v in values.items()))
    return path


def test_read_intrinsics_yaml_json_and_missing_keys(tmp_path):
    K, hw = folder.read_intrinsics(write_intrinsics(tmp_path / "a.yaml", fx=10, fy=11, cx=5, cy=6, width=40, height=20))
    np.testing.assert_allclose(K, [[10, 0, 5], [0, 11, 6], [0, 0, 1]])
    assert hw == (20, 40)
    K, hw = folder.read_intrinsics(write_intrinsics(tmp_path / "b.json", fx=1, fy=2, cx=3, cy=4))
    assert K[1, 1] == 2 and hw is None
    with pytest.raises(InputError, match=r"c.yaml: intrinsics missing key\(s\) cx, cy"):
        folder.read_intrinsics(write_intrinsics(tmp_path / "c.yaml", fx=1, fy=2))
    with pytest.raises(InputError, match=r"d.yaml: intrinsics key fy must be a number"):
        folder.read_intrinsics(write_intrinsics(tmp_path / "d.yaml", fx=1, fy="abc", cx=1, cy=1))
    with pytest.raises(InputError, match=r"e.yaml: give both width and height"):
        folder.read_intrinsics(write_intrinsics(tmp_path / "e.yaml", fx=1, fy=1, cx=1, cy=1, width=3))


def test_folder_dataset_sequences_and_intrinsics_scaling(tmp_path):
    root = tmp_path / "data"
    make_sequence(root / "seqA", [0, 2, 4, 6, 8])
    make_sequence(root / "case" / "left", [0, 3, 6, 9])
    # stated at twice the stored resolution: frames are treated as half-size copies
    write_intrinsics(root / "seqA" / "intrinsics.yaml", fx=60, fy=60, cx=39.5, cy=23.5, width=2 * W, height=2 * H)
    write_intrinsics(root / "intrinsics.yaml")  # shared by every other sequence, found by walking up
    assert folder.sequences(root) == ["case/left", "seqA"]
    refs = folder.frame_refs(root, "", [0, -1, 1])
    assert [r.key for r in refs] == ["case/left 1", "case/left 2", "seqA 1", "seqA 2", "seqA 3"]
    assert refs[2].images[-1].name == "frame_0000.png" and refs[2].K_hw == (2 * H, 2 * W)
    assert refs[0].K_hw == (H, W)  # no width/height: the stored size
    ds = build_dataset(DataConfig(kind="folder", path=str(root), height=H, width=W, augment=False), "train")
    K_a, K_b = ds[2]["K"], ds[0]["K"]
    torch.testing.assert_close(K_a[:3, :3], K_b[:3, :3])  # same camera, once stated at 2x
    assert ds[0]["image/1"].shape == (3, H, W)


def test_folder_split_errors(tmp_path):
    root = tmp_path / "data"
    make_sequence(root / "s", [0, 1, 2, 3])
    write_intrinsics(root / "s" / "intrinsics.yaml")
    split = tmp_path / "split.txt"
    split.write_text("s 1\ns 3\n")
    with pytest.raises(InputError, match=r"split.txt line 2: neighbour \+1 \(frame 4\) out of range: .* frames 0..3"):
        folder.frame_refs(root, split, [0, -1, 1])
    split.write_text("s 1\ns x\n")
    with pytest.raises(InputError, match=r"split.txt line 2: expected '<sequence> <frame_index>', got 's x'"):
        folder.frame_refs(root, split, [0, -1, 1])
    split.write_text("nope 1\n")
    with pytest.raises(InputError, match=r"line 1: sequence folder .*nope has no frames"):
        folder.frame_refs(root, split, [0, -1, 1])
    (root / "s" / "intrinsics.yaml").unlink()
    with pytest.raises(InputError, match=r"no intrinsics file"):
        folder.frame_refs(root, "", [0, -1, 1])


def test_video_file_is_decoded_once_into_the_cache(tmp_path):
    import cv2

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (W, H))
    tex = texture()
    for i in range(5):
        writer.write(np.ascontiguousarray(tex[:, 2 * i : 2 * i + W]))
    writer.release()
    with pytest.raises(InputError, match=r"clip.avi: no intrinsics file"):
        folder.frame_refs(video, "", [0, -1, 1], cache_dir=tmp_path / "cache")
    write_intrinsics(tmp_path / "clip.yaml")
    refs = folder.frame_refs(video, "", [0, -1, 1], cache_dir=tmp_path / "cache")
    assert [r.key for r in refs] == ["clip 1", "clip 2", "clip 3"]
    decoded = refs[0].images[0]
    assert decoded.is_relative_to(tmp_path / "cache") and decoded.parent.name == "clip"
    mtime = decoded.stat().st_mtime_ns
    again = folder.frame_refs(video, "", [0, -1, 1], cache_dir=tmp_path / "cache")
    assert again[0].images[0] == decoded and decoded.stat().st_mtime_ns == mtime
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(InputError, match=r"bad.mp4: cannot open video"):
        folder.frame_refs(bad, "", [0, -1, 1], cache_dir=tmp_path / "cache")


def test_make_split_static_frames_stride_and_val(tmp_path):
    root = tmp_path / "data"
    # frames 2..4 do not move: targets 3 (both neighbours identical) and 2, 4 (one identical neighbour)
    make_sequence(root / "a", [0, 3, 6, 6, 6, 9, 12, 15, 18, 21])
    write_intrinsics(root / "intrinsics.yaml")
    out, val = tmp_path / "train.txt", tmp_path / "val.txt"
    counts = splits.make_split(root, "folder", out, [0, -1, 1], static_threshold=1.0)
    assert counts == {"candidates": 8, "after_static": 5, "train": 5}
    assert out.read_text().split("\n")[:-1] == ["a 1", "a 5", "a 6", "a 7", "a 8"]
    motion = splits.frame_motion(splits._image_refs(root, ["a 1", "a 3"], [0, -1, 1]), "flow")
    assert 2.0 < motion[0] < 4.0 and motion[1] < 0.5  # flow in stored pixels: a 3-pixel pan
    counts = splits.make_split(root, "folder", out, [0, -1, 1], static_threshold=0.01, static_measure="photometric",
                               stride=2, val_fraction=0.4, val_out=val)
    assert out.read_text().split() == ["a", "1", "a", "6"] and val.read_text().split() == ["a", "8"]
    assert counts["val"] == 1
    with pytest.raises(InputError, match=r"--val-fraction needs --val-out"):
        splits.make_split(root, "folder", out, val_fraction=0.2)


def test_split_make_cli(tmp_path, capsys):
    root = tmp_path / "data"
    make_sequence(root / "a", [0, 1, 2, 3, 4])
    out = tmp_path / "train.txt"
    assert main(["split", "make", "--data-path", str(root), "--kind", "folder", "--out", str(out),
                 "--frame-ids", "0", "-2", "2"]) == 0
    assert out.read_text() == "a 2\n" and "train=1" in capsys.readouterr().out
    assert main(["split", "make", "--data-path", str(tmp_path / "missing"), "--kind", "folder", "--out", str(out)]) == 2
    assert "missing: dataset root not found" in capsys.readouterr().err
