"""KITTI raw: calibration, split files, per-sample intrinsics, LiDAR ground truth (oracle-exact)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from semhint.app.cli import main
from semhint.core.config import DataConfig
from semhint.core.fileio import InputError
from semhint.data import kitti
from semhint.data.build import build_dataset

SAMPLE_DRIVE = "2011_09_26/2011_09_26_drive_sfnd_sync"
FX, CX, CY = 721.5377, 609.5593, 172.854


# ----------------------------------------------------------------------------------------------
# a tiny KITTI tree in a tmp dir (drive name deliberately not four digits)
# ----------------------------------------------------------------------------------------------
DATE, DRIVE = "2011_01_01", "2011_01_01_drive_7_sync"
H, W = 24, 80


def write_calib(date_dir: Path, with_p2: bool = True, hw: tuple[int, int] = (H, W)) -> None:
    date_dir.mkdir(parents=True, exist_ok=True)
    p2 = "P_rect_02: 40 0 39.5 0 0 40 11.5 0 0 0 1 0\n" if with_p2 else ""
    (date_dir / "calib_cam_to_cam.txt").write_text(
        "calib_time: 01-Jan-2011 00:00:00\n"
        f"S_rect_02: {hw[1]}.0 {hw[0]}.0\nR_rect_00: 1 0 0 0 1 0 0 0 1\n" + p2
    )
    # velodyne (x fwd, y left, z up) -> camera (x right, y down, z fwd)
    (date_dir / "calib_velo_to_cam.txt").write_text("R: 0 -1 0 0 0 -1 1 0 0\nT: 0 0 0\n")


def make_kitti(root: Path, n: int = 5) -> Path:
    from PIL import Image

    write_calib(root / DATE)
    img_dir = root / DATE / DRIVE / "image_02" / "data"
    velo_dir = root / DATE / DRIVE / "velodyne_points" / "data"
    img_dir.mkdir(parents=True)
    velo_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(img_dir / f"{i:010d}.png")
        np.array([[10.0, 0.0, 0.0, 0.5]], dtype=np.float32).tofile(velo_dir / f"{i:010d}.bin")
    return root


def write_split(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


# ----------------------------------------------------------------------------------------------
# real sample: export-gt reproduces the oracle exactly; intrinsics from P_rect_02
# ----------------------------------------------------------------------------------------------
def test_lidar_projection_reproduces_oracle(kitti_sample, oracle):
    ref = oracle("kitti_sample_lidar_gt.npz")
    expected = ref["depth_velodyne_x"]  # an npz member decompresses on every access: read it once
    P, hw = kitti.velodyne_to_image(kitti_sample / "2011_09_26")
    for i, frame in enumerate(ref["frames"]):
        scan = kitti.read_velodyne(kitti_sample / SAMPLE_DRIVE / "velodyne_points" / "data" / f"{int(frame):010d}.bin")
        np.testing.assert_array_equal(kitti.project_velodyne(scan, P, hw), expected[i])


def test_export_gt_file_matches_oracle(kitti_sample, oracle, tmp_path):
    ref = oracle("kitti_sample_lidar_gt.npz")
    lines = [f"{SAMPLE_DRIVE} {int(i)} l" for i in ref["frames"][:4]]
    split = write_split(tmp_path / "test.txt", lines)
    gt = np.load(kitti.export_gt(kitti_sample, split, tmp_path / "gt.npz", progress=False))
    assert gt["gt_depths"].dtype == np.float32 and list(gt["frames"]) == lines
    np.testing.assert_array_equal(gt["gt_depths"], ref["depth_velodyne_x"][:4])
    assert main(["kitti", "export-gt", "--data-path", str(kitti_sample), "--split", str(split),
                 "--output", str(tmp_path / "gtz.npz"), "--camera-z"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "gtz.npz")["gt_depths"], ref["depth_camera_z"][:4])


def test_sample_dataset_intrinsics_and_val_ground_truth(kitti_sample, oracle, tmp_path):
    ref = oracle("kitti_sample_lidar_gt.npz")
    split = write_split(tmp_path / "val.txt", [f"{SAMPLE_DRIVE} 2 l", f"{SAMPLE_DRIVE} 4 l"])
    kitti.export_gt(kitti_sample, split, tmp_path / "gt.npz", progress=False)
    cfg = DataConfig(path=str(kitti_sample), val_split=str(split), gt_depth=str(tmp_path / "gt.npz"), height=96, width=320)
    ds = build_dataset(cfg, "val")
    sample = ds[1]
    assert sample["image/0"].shape == (3, 96, 320) and sample["image/-1"].shape == (3, 96, 320)
    torch.testing.assert_close(sample["image_aug/1"], sample["image/1"])
    K = sample["K"]
    assert K[0, 0].item() == pytest.approx(FX * 320 / 1242, rel=1e-6)
    assert K[1, 1].item() == pytest.approx(FX * 96 / 375, rel=1e-6)
    assert K[0, 2].item() == pytest.approx((CX + 0.5) * 320 / 1242 - 0.5, rel=1e-6)
    assert K[1, 2].item() == pytest.approx((CY + 0.5) * 96 / 375 - 0.5, rel=1e-6)
    torch.testing.assert_close(sample["inv_K"] @ K, torch.eye(4), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(sample["depth_gt"][0].numpy(), ref["depth_velodyne_x"][2])  # frames 0, 2, 4, ...
    train = build_dataset(DataConfig(path=str(kitti_sample)), "train")
    assert len(train) == 46 and "depth_gt" not in train[0]  # every frame with both neighbours


# ----------------------------------------------------------------------------------------------
# projection, calibration, split lines
# ----------------------------------------------------------------------------------------------
def test_projection_keeps_nearest_point_and_uses_velodyne_x(tmp_path):
    write_calib(tmp_path / DATE)
    P, hw = kitti.velodyne_to_image(tmp_path / DATE)
    assert hw == (H, W)
    # both points on the optical axis: u = 39.5 -> round 40 - 1 = 39; v = 11.5 -> 12 - 1 = 11 (round half even)
    pts = np.array([[10, 0, 0, 1], [5, 0, 0, 1], [-3, 0, 0, 1]], dtype=np.float32)
    depth = kitti.project_velodyne(pts, P, hw)
    assert depth[11, 39] == 5.0 and np.count_nonzero(depth) == 1
    # an off-axis point: camera z equals velodyne x here, so both values agree
    off = np.array([[8, -2, 0, 1]], dtype=np.float32)  # 2 m to the right: u = 39.5 + 40 * 2 / 8 = 49.5
    assert kitti.project_velodyne(off, P, hw, camera_z=True)[11, 49] == 8.0


def test_calibration_errors(tmp_path):
    write_calib(tmp_path / "d", with_p2=False)
    with pytest.raises(InputError, match=r"calib_cam_to_cam.txt: no P_rect_02"):
        kitti.camera_intrinsics(tmp_path / "d")
    with pytest.raises(InputError, match=r"nowhere/calib_cam_to_cam.txt: calibration file not found"):
        kitti.camera_intrinsics(tmp_path / "nowhere")
    write_calib(tmp_path / "e")
    K, hw = kitti.camera_intrinsics(tmp_path / "e")
    np.testing.assert_allclose(K, [[40, 0, 39.5], [0, 40, 11.5], [0, 0, 1]])
    assert hw == (H, W)


@pytest.mark.parametrize("line", ["2011_01_01/x", "2011_01_01/x five l", "2011_01_01/x 5 left", "a b c d"])
def test_malformed_split_line_names_the_line(tmp_path, line):
    root = make_kitti(tmp_path / "kitti")
    split = write_split(tmp_path / "s.txt", [f"{DATE}/{DRIVE} 1 l", line])
    with pytest.raises(InputError, match=r"s.txt line 2: expected 'DATE/DRIVE FRAME l\|r'"):
        kitti.frame_refs(root, split, [0, -1, 1])


def test_missing_frame_and_missing_neighbour(tmp_path):
    root = make_kitti(tmp_path / "kitti")
    with pytest.raises(InputError, match=r"line 1: frame not found"):
        kitti.frame_refs(root, write_split(tmp_path / "a.txt", [f"{DATE}/{DRIVE} 9 l"]), [0])
    with pytest.raises(InputError, match=r"line 2: neighbour -1 \(frame -1\) not found"):
        kitti.frame_refs(root, write_split(tmp_path / "b.txt", [f"{DATE}/{DRIVE} 2 l", f"{DATE}/{DRIVE} 0 l"]), [0, -1, 1])
    with pytest.raises(InputError, match=r"line 1: no images in .*image_03"):
        kitti.frame_refs(root, write_split(tmp_path / "c.txt", [f"{DATE}/{DRIVE} 2 r"]), [0])


def test_scan_uses_any_drive_name_and_drops_sequence_ends(tmp_path):
    root = make_kitti(tmp_path / "kitti", n=5)
    assert kitti.scan_split_lines(root, [0, -1, 1]) == [f"{DATE}/{DRIVE} {i} l" for i in (1, 2, 3)]
    assert kitti.scan_split_lines(root, [0, -2, 2]) == [f"{DATE}/{DRIVE} 2 l"]
    refs = kitti.frame_refs(root, "", [0, -1, 1])
    assert [r.key for r in refs] == [f"{DATE}/{DRIVE} {i} l" for i in (1, 2, 3)]
    assert refs[0].images[-1].name == "0000000000.png" and refs[0].K_hw == (H, W)


def test_export_gt_bad_inputs(tmp_path):
    root = make_kitti(tmp_path / "kitti", n=3)
    velo = root / DATE / DRIVE / "velodyne_points" / "data"
    (velo / "0000000001.bin").unlink()
    split = write_split(tmp_path / "s.txt", [f"{DATE}/{DRIVE} 1 l"])
    with pytest.raises(InputError, match=r"0000000001.bin: velodyne scan not found \(split line"):
        kitti.export_gt(root, split, tmp_path / "gt.npz", progress=False)
    (velo / "0000000002.bin").write_bytes(b"\x00" * 10)
    with pytest.raises(InputError, match=r"0000000002.bin: corrupt velodyne scan"):
        kitti.export_gt(root, write_split(tmp_path / "t.txt", [f"{DATE}/{DRIVE} 2 l"]), tmp_path / "gt.npz", progress=False)
    (root / DATE / "calib_velo_to_cam.txt").unlink()
    assert main(["kitti", "export-gt", "--data-path", str(root), "--split", str(tmp_path / "t.txt"),
                 "--output", str(tmp_path / "gt.npz")]) == 2
    assert not (tmp_path / "gt.npz").exists()


def test_export_gt_pads_mixed_sizes_and_load_crops(tmp_path):
    root = make_kitti(tmp_path / "kitti", n=3)
    other = root / "2011_02_02" / "drive_b" / "velodyne_points" / "data"
    write_calib(root / "2011_02_02", hw=(30, 60))
    other.mkdir(parents=True)
    np.array([[10.0, 0.0, 0.0, 0.5]], dtype=np.float32).tofile(other / "0000000004.bin")
    split = write_split(tmp_path / "s.txt", [f"{DATE}/{DRIVE} 0 l", "2011_02_02/drive_b 4 l"])
    out = kitti.export_gt(root, split, tmp_path / "gt.npz", progress=False)
    assert np.load(out)["gt_depths"].shape == (2, 30, W)
    depths, frames = kitti.load_gt_depths(out)
    assert [d.shape for d in depths] == [(H, W), (30, 60)] and frames[1] == "2011_02_02/drive_b 4 l"
    assert depths[0][11, 39] == 10.0 and depths[1][11, 39] == 10.0
