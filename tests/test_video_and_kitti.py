"""Your own video (a generic config, a field-of-view estimate) and KITTI the way the field runs it
(shipped standard splits, .jpg frames, Monodepth2's gt_depths.npz) (issue 21, items 4 and 5)."""

from __future__ import annotations

import argparse
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest

from semhint.app.evaluate import run_evaluation
from semhint.app.train import train_overrides
from semhint.core.config import load_config
from semhint.core.errors import ConfigError, InputError, SemhintWarning
from semhint.core.fileio import save_image
from semhint.data import folder, kitti
from semhint.data.build import build_dataset
from semhint.data.frames import SPLITS_DIR, read_split_lines, resolve_split

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------
# item 4: your own video
# ----------------------------------------------------------------------------------------------
def test_fov_gives_a_centred_pinhole():
    K = folder.intrinsics_from_fov(90.0, (100, 200))
    assert K[0, 0] == pytest.approx(100.0) and K[1, 1] == K[0, 0] and (K[0, 2], K[1, 2]) == (100.0, 50.0)
    assert folder.intrinsics_from_fov(60.0, (10, 20))[0, 0] == pytest.approx(10 / math.tan(math.radians(30)))
    with pytest.raises(InputError, match="--fov"):
        folder.intrinsics_from_fov(0.0, (10, 20))


def _frames(root: Path, n: int = 4, hw: tuple[int, int] = (24, 40)) -> Path:
    for i in range(n):
        save_image(root / "seq" / f"{i:04d}.png", np.random.default_rng(i).integers(0, 256, (*hw, 3), dtype=np.uint8))
    return root


def test_folder_without_intrinsics_needs_a_file_or_fov(tmp_path):
    root = _frames(tmp_path / "clip")
    with pytest.raises(InputError, match="--fov DEGREES / data.fov"):
        folder.frame_refs(root, "", [0, -1, 1])
    with pytest.warns(SemhintWarning, match="assuming a horizontal field of view of 70 degrees"):
        refs = folder.frame_refs(root, "", [0, -1, 1], fov=70.0)
    assert len(refs) == 2 and refs[0].K_hw == (24, 40)
    np.testing.assert_allclose(refs[0].K, folder.intrinsics_from_fov(70.0, (24, 40)))


def test_an_intrinsics_file_wins_over_fov(tmp_path):
    root = _frames(tmp_path / "clip")
    (root / "seq" / "intrinsics.yaml").write_text("fx: 33\nfy: 33\ncx: 20\ncy: 12\n")
    refs = folder.frame_refs(root, "", [0, -1, 1], fov=70.0)
    assert refs[0].K[0, 0] == 33


def test_video_config_is_generic_and_validates_fov(tmp_path):
    cfg = load_config("video", ["data.path=clip.mp4", "data.fov=65"])
    assert cfg.data.kind == "folder" and cfg.data.unit == "m" and cfg.data.fov == 65
    assert cfg.model.min_depth < 1 < 50 < cfg.model.max_depth and cfg.eval.protocol == "generic"
    with pytest.raises(ConfigError, match="data.fov"):
        load_config("video", ["data.fov=200"])
    args = argparse.Namespace(overrides=["optim.lr=1e-4"], fov=60.0)
    assert train_overrides(args) == ["optim.lr=1e-4", "data.fov=60.0"]


def test_video_config_builds_a_dataset_with_fov(tmp_path):
    root = _frames(tmp_path / "clip", n=5)
    cfg = load_config("video", [f"data.path={root}", "data.fov=70"])
    with pytest.warns(SemhintWarning, match="field of view of 70 degrees"):
        data = build_dataset(cfg.data, "train")
    assert len(data) == 3


# ----------------------------------------------------------------------------------------------
# item 5: KITTI
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,count", [("eigen/test_files.txt", 697), ("eigen_benchmark/test_files.txt", 652),
                                        ("eigen_zhou/train_files.txt", 39810), ("eigen_zhou/val_files.txt", 4424)])
def test_standard_kitti_splits_ship_with_the_package(name, count):
    path = resolve_split(f"splits/{name}")
    assert path == SPLITS_DIR / name
    lines = read_split_lines(path)
    assert len(lines) == count
    folder_, frame, side = kitti.parse_split_line(lines[0][1], 1, path)
    assert side in ("l", "r") and frame >= 0 and folder_.count("/") == 1


def test_split_citation_and_package_data():
    readme = (SPLITS_DIR / "README.md").read_text()
    for who in ("Eigen", "Zhou", "Godard", "Uhrig", "monodepth2"):
        assert who in readme
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["semhint"]
    assert {"splits/*.txt", "splits/**/*.txt", "splits/*.md"} <= set(data)


DATE = "2011_09_26"
H, W = 32, 96


def _kitti_jpg(root: Path, drive: str, frames: list[int]) -> None:
    """A KITTI raw drive whose frames are stored as .jpg (the Monodepth2 habit), for the given indices."""
    date_dir = root / DATE
    date_dir.mkdir(parents=True, exist_ok=True)
    (date_dir / "calib_cam_to_cam.txt").write_text(
        f"S_rect_02: {W}.0 {H}.0\nR_rect_00: 1 0 0 0 1 0 0 0 1\nP_rect_02: 40 0 47.5 0 0 40 15.5 0 0 0 1 0\n"
        f"S_rect_03: {W}.0 {H}.0\nP_rect_03: 40 0 47.5 -20 0 40 15.5 0 0 0 1 0\n")
    (date_dir / "calib_velo_to_cam.txt").write_text("R: 0 -1 0 0 0 -1 1 0 0\nT: 0 0 0\n")
    for side in ("image_02", "image_03"):
        for i in frames:
            save_image(root / drive / side / "data" / f"{i:010d}.jpg",
                       np.random.default_rng(i).integers(0, 256, (H, W, 3), dtype=np.uint8))


def test_kitti_eigen_zhou_config_runs_on_jpg_frames_of_the_shipped_split(tmp_path):
    shipped = [text for _, text in read_split_lines(resolve_split("splits/eigen_zhou/train_files.txt"))]
    drive = shipped[0].split()[0]
    lines = [t for t in shipped if t.split()[0] == drive][:3]
    needed = sorted({int(t.split()[1]) + f for t in lines for f in (-1, 0, 1)})
    _kitti_jpg(tmp_path / "kitti", drive, needed)
    split = tmp_path / "subset.txt"
    split.write_text("\n".join(lines) + "\n")
    cfg = load_config("kitti_eigen_zhou", [f"data.path={tmp_path / 'kitti'}", f"data.train_split={split}",
                                           "data.height=32", "data.width=96"])
    data = build_dataset(cfg.data, "train")
    assert len(data) == 3
    assert all(p.suffix == ".jpg" for p in data.frames[0].images.values())
    sample = data[0]
    assert sample["image/0"].shape == (3, 32, 96)


def _monodepth2_gt(path: Path, maps: list[np.ndarray]) -> Path:
    data = np.empty(len(maps), dtype=object)
    for i, m in enumerate(maps):
        data[i] = m
    np.savez_compressed(path, data=data)  # what Monodepth2's export_gt_depth.py writes
    return path


def test_evaluate_reads_monodepth2_gt_depths(tmp_path):
    rng = np.random.default_rng(0)
    maps = [rng.uniform(1, 50, (20, 64)).astype(np.float32), rng.uniform(1, 50, (22, 70)).astype(np.float32)]
    gt = _monodepth2_gt(tmp_path / "gt_depths.npz", maps)
    depths, frames = kitti.load_gt_depths(gt)
    assert frames == [] and [d.shape for d in depths] == [(20, 64), (22, 70)]
    np.testing.assert_array_equal(depths[1], maps[1])
    preds = np.stack([np.full((20, 64), 0.1, np.float32), np.full((20, 64), 0.1, np.float32)])  # disparities
    np.save(tmp_path / "disps.npy", preds)
    result = run_evaluation(gt, predictions=tmp_path / "disps.npy", protocol="generic", max_depth=80.0)
    assert result.metrics()["abs_rel"] > 0


def test_monodepth2_gt_with_something_else_than_arrays_is_refused(tmp_path):
    data = np.empty(2, dtype=object)
    data[0], data[1] = np.ones((4, 4), np.float32), {"not": "an array"}
    np.savez(tmp_path / "bad.npz", data=data)
    with pytest.raises(InputError, match="'data' item 1 is not a numeric array"):
        kitti.load_gt_depths(tmp_path / "bad.npz")
