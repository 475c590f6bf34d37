"""SynthDrive: ground truth that can be trusted (warp, road geometry, determinism) and its disk layout."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from semhint.core import geometry
from semhint.data.synthetic import drive, render_drive
from semhint.data.synthetic.writer import read_poses

CFG = drive.DriveConfig(height=64, width=208, frames=6, seed=0)


@pytest.fixture(scope="module")
def clip():
    scene = drive.build_scene(CFG, 7)
    return scene, [drive.render_frame(scene, CFG, i) for i in range(3)]


def _K4() -> torch.Tensor:
    K = torch.eye(4)
    K[:3, :3] = torch.tensor(drive.intrinsics(CFG), dtype=torch.float32)
    return K


def _warp_error(target: dict, source: dict, T_np: np.ndarray) -> tuple[float, float]:
    """Mean |warped source - target| over static, visible, non-sky pixels, and that mask's coverage."""
    K = _K4()[None]
    T = torch.tensor(T_np, dtype=torch.float32)[None]
    depth = np.where(np.isfinite(target["depth"]), target["depth"], 1e3).astype(np.float32)
    d = torch.tensor(depth)[None, None]
    src = torch.tensor(source["image"]).permute(2, 0, 1)[None]
    warped = geometry.warp(src, d, T, K)[0].permute(1, 2, 0).numpy()
    pix, z = geometry.project_to_pixels(geometry.backproject(d, torch.linalg.inv(K)), K, T)
    h, w = depth.shape
    x, y, z = pix[0, 0].reshape(h, w).numpy(), pix[0, 1].reshape(h, w).numpy(), z[0, 0].reshape(h, w).numpy()
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    xi, yi = np.clip(np.round(x).astype(int), 0, w - 1), np.clip(np.round(y).astype(int), 0, h - 1)
    visible = np.abs(source["depth"][yi, xi] - z) < 0.03 * z  # not occluded in the source view
    static = ~target["dynamic"] & ~source["dynamic"][yi, xi]
    mask = inside & visible & static & np.isfinite(target["depth"])
    err = np.abs(warped - target["image"]).mean(-1)
    return float(err[mask].mean()), float(mask.mean())


def test_gt_warp_reproduces_the_target_frame(clip):
    scene, frames = clip
    P = scene.poses
    # poses are camera-to-world: T(target -> source) = inv(P_source) @ P_target
    err_next, cover = _warp_error(frames[1], frames[2], np.linalg.inv(P[2]) @ P[1])
    err_prev, _ = _warp_error(frames[1], frames[0], np.linalg.inv(P[0]) @ P[1])
    assert cover > 0.5
    assert err_next < 0.015 and err_prev < 0.015
    wrong = P[2].copy()
    wrong[:3, :3] = wrong[:3, :3] @ np.array([[math.cos(0.02), 0, math.sin(0.02)], [0, 1, 0], [-math.sin(0.02), 0, math.cos(0.02)]])
    err_wrong, _ = _warp_error(frames[1], frames[2], np.linalg.inv(wrong) @ P[1])
    assert err_wrong > 2.5 * err_next


def test_flat_road_depth_is_camera_height_over_ray_slope(clip):
    scene, frames = clip
    R = scene.poses[0][:3, :3]
    K_inv = np.linalg.inv(drive.intrinsics(CFG))
    ys, xs = np.nonzero(frames[0]["labels"] == drive.ROAD)
    assert ys.size > 100
    rays = R @ (K_inv @ np.stack([xs, ys, np.ones_like(xs)]).astype(np.float64))  # unit camera-z rays in the world
    expected = (CFG.camera_height - scene.poses[0][1, 3]) / rays[1]
    np.testing.assert_allclose(frames[0]["depth"][ys, xs], expected, rtol=1e-4)


def test_sky_is_infinite_and_only_sky(clip):
    _, frames = clip
    f = frames[0]
    assert np.isinf(f["depth"]).any()
    np.testing.assert_array_equal(np.isinf(f["depth"]), f["labels"] == drive.SKY)


def test_lead_car_moves_with_the_camera(clip):
    """The classic infinite-depth hole: a car at the camera's speed keeps its depth between frames."""
    _, frames = clip
    a, b = frames[0], frames[1]
    both = a["dynamic"] & b["dynamic"] & (a["labels"] == drive.CAR) & (b["labels"] == drive.CAR)
    assert both.sum() > 20
    np.testing.assert_allclose(np.median(a["depth"][both]), np.median(b["depth"][both]), rtol=0.05)


def test_rendering_is_deterministic_for_a_seed():
    cfg = drive.DriveConfig(height=32, width=96, frames=4, seed=0)
    one = drive.render_frame(drive.build_scene(cfg, 3), cfg, 2)
    two = drive.render_frame(drive.build_scene(cfg, 3), cfg, 2)
    other = drive.render_frame(drive.build_scene(cfg, 4), cfg, 2)
    for key in ("image", "depth", "labels"):
        np.testing.assert_array_equal(one[key], two[key])
    assert not np.array_equal(one["image"], other["image"])


def _parse_calib(path) -> dict[str, np.ndarray]:
    out = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(":")
        try:
            out[key] = np.array([float(v) for v in value.split()])
        except ValueError:
            pass
    return out


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_drive")
    render_drive(out, preset="tiny", seed=1, progress=False)
    return out


def test_output_layout_is_kitti_raw(written):
    out = written
    meta = json.loads((out / "meta.json").read_text())
    h, w = meta["settings"]["height"], meta["settings"]["width"]
    calib = _parse_calib(out / "data" / "2000_01_01" / "calib_cam_to_cam.txt")
    P2 = calib["P_rect_02"].reshape(3, 4)
    cfg = drive.DriveConfig(height=h, width=w)
    np.testing.assert_allclose(P2[:, :3], drive.intrinsics(cfg), rtol=1e-6)
    assert calib["S_rect_02"].tolist() == [w, h] and calib["R_rect_00"].size == 9
    for name in ("calib_velo_to_cam.txt", "calib_imu_to_velo.txt"):
        assert (out / "data" / "2000_01_01" / name).is_file()
    rel = "2000_01_01/2000_01_01_drive_0001_sync/image_02/data/0000000003.png"
    for root in ("data", "gt_depth", "gt_labels"):
        assert (out / root / rel).is_file()
    poses = read_poses(out / "poses" / "2000_01_01" / "2000_01_01_drive_0001_sync.txt")
    assert poses.shape == (meta["settings"]["frames"], 4, 4)
    for split in ("train", "val", "test"):
        lines = (out / "splits" / f"{split}.txt").read_text().split("\n")
        for line in filter(None, lines):
            folder, frame, side = line.split()
            assert side == "l" and 1 <= int(frame) <= meta["settings"]["frames"] - 2
    test_drives = {line.split()[0] for line in (out / "splits" / "test.txt").read_text().split("\n") if line}
    train_drives = {line.split()[0] for line in (out / "splits" / "train.txt").read_text().split("\n") if line}
    assert test_drives and not test_drives & train_drives


def test_kitti_loader_reads_the_output_unchanged(written):
    from semhint.core.fileio import read_depth_png, read_label_png
    from semhint.data.kitti import frame_refs

    refs = frame_refs(written / "data", written / "splits" / "train.txt", [0, -1, 1])
    assert refs and refs[0].K_hw == (64, 208)
    rel = refs[0].target.relative_to(written / "data")
    depth = read_depth_png(written / "gt_depth" / rel)
    labels = read_label_png(written / "gt_labels" / rel)
    assert depth.shape == labels.shape == (64, 208)
    assert (depth[labels == drive.SKY] == 0).all()
    assert (depth[labels == drive.ROAD] > 0).mean() > 0.95  # only road beyond the PNG range (255 m) is 0


def test_dynamic_masks_mark_moving_cars_only(written):
    from semhint.core.fileio import read_label_png

    moving = 0
    for path in sorted((written / "gt_dynamic").rglob("*.png")):
        mask = read_label_png(path)
        labels = read_label_png(written / "gt_labels" / path.relative_to(written / "gt_dynamic"))
        assert set(np.unique(mask)) <= {0, 1}
        assert (labels[mask == 1] == drive.CAR).all()  # only cars move in SynthDrive
        moving += int(mask.sum())
    assert moving > 0  # the lead car is in view


def test_cli_synth_drive_with_preview(tmp_path):
    from semhint.app.cli import main

    rc = main(["synth", "drive", "--out", str(tmp_path), "--preset", "tiny", "--sequences", "1", "--frames", "3",
               "--size", "32x96", "--preview"])
    assert rc == 0 and (tmp_path / "preview.png").is_file()
    assert main(["synth", "drive", "--out", str(tmp_path), "--size", "bogus"]) == 2
