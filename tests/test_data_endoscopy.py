"""SCARED and Hamlyn layouts, read from small fabricated copies (no real endoscopic data is reachable here),
and the SCARED evaluation protocol."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from semhint.app.cli import build_parser, main
from semhint.core.config import EVAL_PROTOCOLS, ConfigError, DataConfig, from_dict
from semhint.core.fileio import InputError
from semhint.data import endoscopy, splits
from semhint.data.build import build_dataset
from semhint.evaluation.protocols import PROTOCOLS, evaluate_depth, resolve_protocol

H, W = 32, 40  # SCARED's 1280 x 1024 aspect (1.25), 32x smaller
M1 = np.array([[1035.0, 0.0, 597.0], [0.0, 1033.0, 521.0], [0.0, 0.0, 1.0]])
M2 = np.array([[1040.0, 0.0, 610.0], [0.0, 1039.0, 515.0], [0.0, 0.0, 1.0]])


def frame(seed: int, hw: tuple[int, int] = (H, W)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (*hw, 3), dtype=np.uint8)


def write_calibration(path, **matrices) -> None:
    """An endoscope_calibration.yaml as OpenCV writes it (FileStorage YAML, !!opencv-matrix tags)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    storage = cv2.FileStorage(str(path), cv2.FILE_STORAGE_WRITE)
    for name, value in (matrices or {"R": np.eye(3), "T": np.array([[-4.3], [0.0], [0.0]]), "M1": M1,
                                     "D1": np.zeros((1, 5)), "M2": M2, "D2": np.zeros((1, 5))}).items():
        storage.write(name, value)
    storage.release()


def scene_points(z_left: float, z_right: float) -> np.ndarray:
    """A SCARED scene-points map (left view over right view, x y z in mm per pixel), in file channel order."""
    points = np.zeros((2 * H, W, 3), np.float32)
    points[:H, :, 2], points[H:, :, 2] = z_left, z_right
    points[:H, :, 0] = np.arange(W)  # x varies: a wrong channel would not be constant
    points[0, 0] = np.nan  # a pixel without a measurement
    return points


def make_scared(root, frames=(1, 2, 3, 4, 5), with_gt=True):
    """ROOT/dataset1/keyframe1 in the AF-SfMLearner layout: image_02/data/{frame:010d}.png, groundtruth
    scene_points{frame - 1:06d}.tiff, and the keyframe's calibration."""
    keyframe = root / "dataset1" / "keyframe1"
    data = keyframe / "image_02" / "data"
    (data / "groundtruth").mkdir(parents=True)
    for f in frames:
        Image.fromarray(frame(f)).save(data / f"{f:010d}.png")
        if with_gt:  # cv2 writes channels reversed, so the file holds x, y, z
            cv2.imwrite(str(data / "groundtruth" / f"scene_points{f - 1:06d}.tiff"), scene_points(10.0 * f, 99.0)[..., ::-1])
    write_calibration(keyframe / endoscopy.SCARED_CALIBRATION)
    return keyframe


def make_hamlyn(root, frames=(1, 2, 3, 4), intrinsics="30 0 19.5\n0 31 15.5\n0 0 1\n"):
    """ROOT/rectified01: image01/*.jpg (left), depth01/*.png (uint16 mm), intrinsics.txt."""
    seq = root / "rectified01"
    (seq / "image01").mkdir(parents=True)
    (seq / "depth01").mkdir()
    for f in frames:
        Image.fromarray(frame(f)).save(seq / "image01" / f"{f:010d}.jpg", quality=95)
        depth = np.full((H, W), 40 + f, np.uint16)
        depth[0, 0] = 0
        Image.fromarray(depth).save(seq / "depth01" / f"{f:010d}.png")
    (seq / "intrinsics.txt").write_text(intrinsics)
    return seq


def scaled(K: np.ndarray, old_hw, new_hw) -> np.ndarray:
    sx, sy = new_hw[1] / old_hw[1], new_hw[0] / old_hw[0]
    return np.array([[K[0, 0] * sx, 0, (K[0, 2] + 0.5) * sx - 0.5], [0, K[1, 1] * sy, (K[1, 2] + 0.5) * sy - 0.5]])


# ----------------------------------------------------------------------------------------------
# SCARED
# ----------------------------------------------------------------------------------------------
def test_scared_calibration_reads_m1_and_m2_from_opencv_yaml(tmp_path):
    path = tmp_path / "endoscope_calibration.yaml"
    write_calibration(path)
    np.testing.assert_allclose(endoscopy.read_scared_calibration(path, "l"), M1)
    np.testing.assert_allclose(endoscopy.read_scared_calibration(path, "r"), M2)
    # the header the SCARED files carry (OpenCV 3 wrote %YAML:1.0) reads the same
    path.write_text(path.read_text().replace("%YAML 1.2\n---\n", "%YAML:1.0\n"))
    np.testing.assert_allclose(endoscopy.read_scared_calibration(path, "l"), M1)


@pytest.mark.parametrize("content,message", [
    (None, r"missing.yaml: SCARED calibration file not found"),
    ("%YAML:1.0\nM1: [1, 2\n", r"bad.yaml: cannot parse calibration"),
    ({"M2": M2}, r"bad.yaml: no M1 camera matrix"),
    ({"M1": np.eye(2)}, r"bad.yaml: M1 must be a 3 x 3 matrix"),
    ({"M1": np.where(M1 == 597.0, np.nan, M1)}, r"bad.yaml: M1: intrinsics have non-finite values"),
    ({"M1": np.diag([-5.0, 1000.0, 1.0])}, r"bad.yaml: M1: fx and fy must be positive"),
    ({"M1": np.where(M1 == 597.0, 5000.0, M1)}, r"bad.yaml: M1: cx = 5000 lies far outside the 1280x1024 image"),
])
def test_scared_calibration_errors_name_the_file(tmp_path, content, message):
    path = tmp_path / ("missing.yaml" if content is None else "bad.yaml")
    if isinstance(content, str):
        path.write_text(content)
    elif isinstance(content, dict):
        write_calibration(path, **content)
    with pytest.raises(InputError, match=message) as err:
        endoscopy.read_scared_calibration(path, "l")
    assert "\n" not in str(err.value)


def test_scared_snippets_intrinsics_and_ground_truth_in_mm(tmp_path):
    root = tmp_path / "scared"
    make_scared(root)
    split = tmp_path / "val.txt"
    split.write_text("dataset1/keyframe1\t2\tl\ndataset1/keyframe1 4\n")  # tabs as in AF-SfMLearner's files
    cfg = DataConfig(kind="scared", path=str(root), val_split=str(split), gt_depth="layout", unit="mm",
                     height=64, width=80, augment=False)
    ds = build_dataset(cfg, "val")
    assert [r.key for r in ds.frames] == ["dataset1/keyframe1 2 l", "dataset1/keyframe1 4 l"]
    assert ds.frames[0].images[-1].name == "0000000001.png" and ds.frames[0].images[1].name == "0000000003.png"
    assert ds.frames[0].K_hw == endoscopy.SCARED_HW and ds.frames[0].image_hw == (H, W)
    sample = ds[0]
    np.testing.assert_allclose(sample["K"][:2, :3].numpy(), scaled(M1, (1024, 1280), (64, 80)), rtol=1e-5)
    assert sample["image/-1"].shape == (3, 64, 80)
    np.testing.assert_array_equal(sample["image/1"].numpy(), build_dataset(cfg, "val")[1]["image/-1"].numpy())
    depth = sample["depth_gt"][0].numpy()
    assert depth.shape == (H, W) and depth[0, 0] == 0  # the left view only; NaN = no measurement
    assert np.all(depth.ravel()[1:] == 20.0)  # frame 2 -> scene_points000001, z channel, mm
    assert ds[1]["depth_gt"][0, 5, 5] == 40.0


def test_scared_scan_split_and_export_gt(tmp_path, capsys):
    root = tmp_path / "scared"
    make_scared(root)
    assert endoscopy.scan_split_lines("scared", root, [0, -1, 1]) == [f"dataset1/keyframe1 {i} l" for i in (2, 3, 4)]
    out = tmp_path / "train.txt"
    assert main(["split", "make", "--data-path", str(root), "--kind", "scared", "--out", str(out)]) == 0
    assert out.read_text().splitlines() == ["dataset1/keyframe1 2 l", "dataset1/keyframe1 3 l", "dataset1/keyframe1 4 l"]
    gt = tmp_path / "gt.npz"
    assert main(["endoscopy", "export-gt", "--kind", "scared", "--data-path", str(root), "--split", str(out),
                 "--output", str(gt)]) == 0
    data = np.load(gt)
    assert data["gt_depths"].shape == (3, H, W) and list(data["frames"]) == out.read_text().splitlines()
    assert data["gt_depths"][2, 3, 3] == 40.0
    # a perfect prediction up to scale scores zero under the scared protocol
    np.save(tmp_path / "pred.npy", 1.0 / (data["gt_depths"] * 0.01 + (data["gt_depths"] == 0)))
    capsys.readouterr()
    assert main(["evaluate", "--gt", str(gt), "--predictions", str(tmp_path / "pred.npy"), "--protocol", "scared"]) == 0
    assert "scared: 3 images, depth in (0.001, 150), crop none, median scaling" in capsys.readouterr().out


def test_scared_layout_errors_are_one_line(tmp_path, capsys):
    root = tmp_path / "scared"
    keyframe = make_scared(root, with_gt=False)
    split = tmp_path / "s.txt"
    split.write_text("dataset1/keyframe1 x l\n")
    with pytest.raises(InputError, match=r"s.txt line 1: expected 'datasetN/keyframeM FRAME l\|r'"):
        endoscopy.frame_refs("scared", root, split, [0, -1, 1])
    split.write_text("dataset1/keyframe1 5 l\n")
    with pytest.raises(InputError, match=r"s.txt line 1: neighbour \+1 \(frame 6\) not found"):
        endoscopy.frame_refs("scared", root, split, [0, -1, 1])
    split.write_text("dataset1/keyframe1 3 l\n")
    refs = endoscopy.frame_refs("scared", root, split, [0, -1, 1])
    with pytest.raises(InputError, match=r"scene_points000002.tiff: ground-truth depth not found \(frame 'dataset1/keyframe1 3 l'\)"):
        endoscopy.LayoutDepths("scared", refs)
    assert main(["endoscopy", "export-gt", "--kind", "scared", "--data-path", str(root), "--split", str(split),
                 "--output", str(tmp_path / "gt.npz")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "scene_points000002.tiff: ground-truth depth not found" in err
    (keyframe / endoscopy.SCARED_CALIBRATION).unlink()
    with pytest.raises(InputError, match=r"endoscope_calibration.yaml: SCARED calibration file not found"):
        endoscopy.frame_refs("scared", root, split, [0, -1, 1])
    write_calibration(keyframe.parent / endoscopy.SCARED_CALIBRATION)  # one per dataset folder serves every keyframe
    assert endoscopy.frame_refs("scared", root, split, [0, -1, 1])[0].K[0, 0] == M1[0, 0]
    Image.fromarray(frame(9, (H, H))).save(keyframe / "image_02" / "data" / "0000000001.png")  # square frames
    with pytest.raises(InputError, match=r"endoscope_calibration.yaml .*describe 1280x1024 images but the frames are 32x32"):
        endoscopy.frame_refs("scared", root, split, [0, -1, 1])
    bad = tmp_path / "bad.tiff"
    cv2.imwrite(str(bad), np.zeros((H, W), np.float32))
    with pytest.raises(InputError, match=r"bad.tiff: scene points must be an H x W x 3 float image"):
        endoscopy.read_scene_points(bad)
    bad.write_bytes(b"not a tiff")
    with pytest.raises(InputError, match=r"bad.tiff: cannot decode scene points"):
        endoscopy.read_scene_points(bad)


# ----------------------------------------------------------------------------------------------
# Hamlyn
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["30 0 19.5\n0 31 15.5\n0 0 1\n", "30 31 19.5 15.5\n",
                                  "30 0 19.5 0\n0 31 15.5 0\n0 0 1 0\n", "[[30, 0, 19.5], [0, 31, 15.5], [0, 0, 1]]"])
def test_hamlyn_intrinsics_forms(tmp_path, text):
    path = tmp_path / "intrinsics.txt"
    path.write_text(text)
    np.testing.assert_allclose(endoscopy.read_hamlyn_intrinsics(path), [[30, 0, 19.5], [0, 31, 15.5], [0, 0, 1]])


@pytest.mark.parametrize("text,message", [
    ("30 31 19.5\n", r"expected 9 numbers \(3 x 3 K\), 12 \(3 x 4 P\) or 4 \(fx fy cx cy\), got 3"),
    ("30 31 abc 15.5\n", r"intrinsics must be numbers, got 'abc'"),
    ("nan 31 19.5 15.5\n", r"intrinsics have non-finite values"),
    ("30 0 31 15.5\n", r"fx and fy must be positive, got 30, 0"),
    ("30 0 19.5\n0 31 15.5\n0 1 1\n", r"the last row of K must be 0 0 1"),
])
def test_hamlyn_intrinsics_errors_name_the_file(tmp_path, text, message):
    path = tmp_path / "intrinsics.txt"
    path.write_text(text)
    with pytest.raises(InputError, match=r"intrinsics.txt: " + message):
        endoscopy.read_hamlyn_intrinsics(path)


def test_hamlyn_snippets_intrinsics_and_ground_truth_in_mm(tmp_path):
    root = tmp_path / "hamlyn"
    make_hamlyn(root)
    assert endoscopy.sequences("hamlyn", root) == ["rectified01"]
    cfg = DataConfig(kind="hamlyn", path=str(root), train_split="", gt_depth="layout", unit="mm", height=16, width=20,
                     augment=False)
    ds = build_dataset(cfg, "train", train_gt=True)
    assert [r.key for r in ds.frames] == ["rectified01 2 l", "rectified01 3 l"]
    assert ds.frames[1].images[1].name == "0000000004.jpg" and ds.frames[1].K_hw == (H, W)
    sample = ds[0]
    K = np.array([[30, 0, 19.5], [0, 31, 15.5], [0, 0, 1]])
    np.testing.assert_allclose(sample["K"][:2, :3].numpy(), scaled(K, (H, W), (16, 20)), rtol=1e-5)
    depth = sample["depth_gt"][0].numpy()
    assert depth.shape == (H, W) and depth[0, 0] == 0 and depth[1, 1] == 42.0  # uint16 value = mm, not x 256
    # a ROOT that is one sequence folder reads the same frames, named "."
    refs = endoscopy.frame_refs("hamlyn", root / "rectified01", "", [0, -1, 1])
    assert [r.key for r in refs] == [". 2 l", ". 3 l"]


def test_hamlyn_layout_errors_are_one_line(tmp_path):
    root = tmp_path / "hamlyn"
    seq = make_hamlyn(root, intrinsics="30 0 500\n0 31 15.5\n0 0 1\n")
    with pytest.raises(InputError, match=r"intrinsics.txt \(frames in .*image01\): cx = 500 lies far outside the 40x32 image"):
        endoscopy.frame_refs("hamlyn", root, "", [0, -1, 1])
    (seq / "intrinsics.txt").unlink()
    with pytest.raises(InputError, match=r"rectified01/intrinsics.txt: Hamlyn intrinsics file not found"):
        endoscopy.frame_refs("hamlyn", root, "", [0, -1, 1])
    (root / "intrinsics.txt").write_text("30 31 19.5 15.5")  # one for every sequence
    refs = endoscopy.frame_refs("hamlyn", root, "", [0, -1, 1])
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(seq / "depth01" / "0000000002.png")  # 8-bit RGB: not depth
    with pytest.raises(InputError, match=r"0000000002.png: Hamlyn depth PNG must be 16-bit single-channel"):
        endoscopy.LayoutDepths("hamlyn", refs)[0]
    Image.fromarray(np.zeros((H, H), np.uint16)).save(seq / "depth01" / "0000000002.png")
    with pytest.raises(InputError, match=r"0000000002.png: depth is 32x32 but its frame is 40x32"):
        endoscopy.LayoutDepths("hamlyn", refs)[0]
    (seq / "depth01" / "0000000003.png").unlink()
    with pytest.raises(InputError, match=r"0000000003.png: ground-truth depth not found \(frame 'rectified01 3 l'\)"):
        endoscopy.LayoutDepths("hamlyn", refs)
    with pytest.raises(InputError, match=r"no Hamlyn sequences with frames"):
        endoscopy.frame_refs("hamlyn", tmp_path / "hamlyn" / "rectified01" / "depth01", "", [0, -1, 1])


def test_hamlyn_split_make(tmp_path):
    root = tmp_path / "hamlyn"
    make_hamlyn(root, frames=(1, 2, 3, 4, 5, 6))
    out, val = tmp_path / "train.txt", tmp_path / "val.txt"
    counts = splits.make_split(root, "hamlyn", out, val_fraction=0.25, val_out=val)
    assert out.read_text().split("\n")[:3] == ["rectified01 2 l", "rectified01 3 l", "rectified01 4 l"]
    assert val.read_text() == "rectified01 5 l\n" and counts == {"candidates": 4, "train": 3, "val": 1}


# ----------------------------------------------------------------------------------------------
# protocol and config
# ----------------------------------------------------------------------------------------------
def test_scared_protocol_constants_and_cap():
    assert PROTOCOLS["scared"] == {"min_depth": 1e-3, "max_depth": 150.0, "crop": "none", "median_scaling": True}
    assert resolve_protocol("scared", max_depth=None)["max_depth"] == 150.0
    gt = np.full((8, 10), 50.0, np.float32)
    gt[:, :5] = 200.0  # beyond the 150 mm cap: not scored
    pred = np.where(gt > 150, 0.5, 1.0).astype(np.float32)  # depth; wrong only where it is not scored
    result = evaluate_depth([pred], [gt], pred_is_disp=False, **resolve_protocol("scared"))
    assert result.metrics()["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    assert result.ratios[0] == pytest.approx(50.0)  # median scaling per image
    # the config and the command line offer exactly the named protocols
    evaluate = build_parser()._subparsers._group_actions[0].choices["evaluate"]
    protocol = next(a for a in evaluate._actions if a.dest == "protocol")
    assert set(EVAL_PROTOCOLS) == set(PROTOCOLS) == set(protocol.choices)


def test_config_accepts_the_endoscopy_kinds_and_layout_ground_truth():
    for kind in ("scared", "hamlyn"):
        cfg = from_dict({"data": {"kind": kind, "gt_depth": "layout", "unit": "mm"}, "eval": {"protocol": "scared"}})
        assert cfg.data.kind == kind
    with pytest.raises(ConfigError, match=r"data.gt_depth: 'layout' .* needs data.kind scared or hamlyn"):
        from_dict({"data": {"kind": "folder", "gt_depth": "layout"}})
