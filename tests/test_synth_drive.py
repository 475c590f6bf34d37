"""SynthDrive: ground truth that can be trusted (warp, road geometry, determinism), its disk layout,
and the town's departures from the straight street (pitch, curve, crossing, setbacks, trees)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import numpy as np
import pytest
import torch

from semhint.core import geometry
from semhint.core.errors import InputError
from semhint.data.synthetic import build_drive_scene, drive, render_drive, resolve_preset
from semhint.data.synthetic.raycast import OBOX
from semhint.data.synthetic.writer import read_poses

CFG = drive.DriveConfig(height=64, width=208, frames=6, seed=0)
TOWN = drive.DriveConfig(height=64, width=208, frames=8, seed=0, streets="town")


@pytest.fixture(scope="module")
def clip():
    scene = drive.build_scene(CFG, 7)
    return scene, [drive.render_frame(scene, CFG, i) for i in range(3)]


@pytest.fixture(scope="module")
def town_clip():
    scene = build_drive_scene(TOWN, 7)
    return scene, [drive.render_frame(scene, TOWN, i) for i in range(TOWN.frames)]


@pytest.fixture(params=["street", "town"])
def any_clip(request, clip, town_clip):
    return clip if request.param == "street" else town_clip


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


def test_gt_warp_reproduces_the_target_frame(any_clip):
    scene, frames = any_clip
    P = scene.poses
    # poses are camera-to-world: T(target -> source) = inv(P_source) @ P_target
    err_next, cover = _warp_error(frames[1], frames[2], np.linalg.inv(P[2]) @ P[1])
    err_prev, _ = _warp_error(frames[1], frames[0], np.linalg.inv(P[0]) @ P[1])
    assert cover > 0.5
    assert err_next < 0.015 and err_prev < 0.015
    wrong = P[2].copy()
    wrong[:3, :3] = wrong[:3, :3] @ np.array([[math.cos(0.02), 0, math.sin(0.02)], [0, 1, 0], [-math.sin(0.02), 0, math.cos(0.02)]])
    err_wrong, _ = _warp_error(frames[1], frames[2], np.linalg.inv(wrong) @ P[1])
    # the town's pitched camera sees twice the street's share of low-texture road: a wrong turn shows less
    assert err_wrong > (2.5 if scene.town is None else 2.0) * err_next


def test_flat_road_depth_is_camera_height_over_ray_slope(any_clip):
    scene, frames = any_clip
    R = scene.poses[0][:3, :3]
    K_inv = np.linalg.inv(drive.intrinsics(CFG))
    ys, xs = np.nonzero(frames[0]["labels"] == drive.ROAD)
    assert ys.size > 100
    rays = R @ (K_inv @ np.stack([xs, ys, np.ones_like(xs)]).astype(np.float64))  # unit camera-z rays in the world
    expected = (CFG.camera_height - scene.poses[0][1, 3]) / rays[1]
    np.testing.assert_allclose(frames[0]["depth"][ys, xs], expected, rtol=1e-4)


def test_sky_is_infinite_and_only_sky(any_clip):
    _, frames = any_clip
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


def _fingerprint(rendered: dict, poses: np.ndarray) -> dict:
    """A render in a few numbers: the label map's hash, the dynamic pixel count, fixed random
    projections of image and depth (any change of a pixel moves them), the poses' sum."""
    rng = np.random.default_rng(0)
    image = rendered["image"].astype(np.float64)
    depth = np.where(np.isfinite(rendered["depth"]), rendered["depth"], -1.0).astype(np.float64)
    w_image, w_depth = rng.uniform(-1, 1, (3, *image.shape)), rng.uniform(-1, 1, (3, *depth.shape))
    return dict(labels=hashlib.sha256(np.ascontiguousarray(rendered["labels"]).tobytes()).hexdigest()[:16],
                dynamic=int(rendered["dynamic"].sum()), image=[float((image * w).sum()) for w in w_image],
                depth=[float((depth * w).sum()) for w in w_depth], poses=float(np.abs(poses).sum()))


# computed with the renderer before the town (and turned boxes) existed
_BEFORE_TOWN = [
    (("demo", dict(size="32x96", frames=4), 3, 2),
     dict(labels="4cc00a4a6427aea0", dynamic=85, image=[3.0061, 12.1574, 14.358], depth=[1937.626, 636.473, 729.113],
          poses=27.365416)),
    (("demo", dict(size="32x96", frames=20), 5, 12),
     dict(labels="d624da158af80382", dynamic=88, image=[-4.2046, 27.8853, -15.9131], depth=[-145.974, 52.616, 1091.311],
          poses=316.519513)),
    (("tiny", dict(size="32x96", moving_cars=False), 11, 5),
     dict(labels="d49e7ebbb599d688", dynamic=0, image=[8.3786, -4.2135, -10.8738], depth=[-901.032, -596.904, 527.203],
          poses=72.089351)),
]


@pytest.mark.parametrize("case,expected", _BEFORE_TOWN, ids=lambda v: str(v[0]) if isinstance(v, tuple) else None)
def test_street_presets_render_as_before_the_town(case, expected):
    preset, overrides, seed, frame = case
    settings = resolve_preset("drive", preset, **overrides)
    fields = {f.name for f in dataclasses.fields(drive.DriveConfig)}
    cfg = drive.DriveConfig(seed=0, **{k: v for k, v in settings.items() if k in fields})
    scene = build_drive_scene(cfg, seed)
    got = _fingerprint(drive.render_frame(scene, cfg, frame), scene.poses)
    assert (got["labels"], got["dynamic"]) == (expected["labels"], expected["dynamic"])
    np.testing.assert_allclose(got["image"], expected["image"], atol=2e-3)
    np.testing.assert_allclose(got["depth"], expected["depth"], atol=5e-2)
    np.testing.assert_allclose(got["poses"], expected["poses"], atol=1e-5)


def test_kinds_of_streets_are_checked():
    with pytest.raises(InputError, match="streets"):
        build_drive_scene(drive.DriveConfig(streets="village"), 0)
    with pytest.raises(InputError, match="build_drive_scene"):
        drive.build_scene(TOWN, 0)


def _road_normal_in_camera(frame: dict, cfg: drive.DriveConfig) -> np.ndarray:
    """Unit normal of the plane fitted to the road pixels' 3D points (depth map and K alone)."""
    ys, xs = np.nonzero((frame["labels"] == drive.ROAD) & np.isfinite(frame["depth"]) & (frame["depth"] < 40))
    rays = np.linalg.inv(drive.intrinsics(cfg)) @ np.stack([xs, ys, np.ones_like(xs)]).astype(np.float64)
    points = (rays * frame["depth"][ys, xs]).T
    _, _, vt = np.linalg.svd(points - points.mean(0), full_matrices=False)
    return vt[-1] * np.sign(vt[-1][1])


def test_town_camera_is_pitched_and_the_street_camera_level(clip, town_clip):
    tilt = {}
    for name, (_, frames), cfg in (("street", clip, CFG), ("town", town_clip, TOWN)):
        normal = _road_normal_in_camera(frames[0], cfg)
        tilt[name] = math.degrees(math.acos(min(1.0, normal[1])))  # angle between the road normal and camera y
    assert tilt["street"] < 0.5
    assert 1.5 < tilt["town"] < 8.0  # 2-6 degrees of pitch and up to one of roll


def _travel_off_axis_deg(poses: np.ndarray) -> np.ndarray:
    """Per moving frame pair, the angle between the camera's motion (in its own frame) and its optical axis."""
    out = []
    for a, b in zip(poses[:-1], poses[1:]):
        t = (np.linalg.inv(a) @ b)[:3, 3]
        if np.linalg.norm(t) > 0.1:
            out.append(math.degrees(math.acos(t[2] / np.linalg.norm(t))))
    return np.array(out)


def _heading_deg(pose: np.ndarray) -> float:
    forward = pose[:3, 2]
    return math.degrees(math.atan2(forward[0], forward[2]))


def test_town_camera_follows_a_curve_and_does_not_travel_along_its_axis():
    street = drive.build_scene(dataclasses.replace(CFG, frames=80), 3).poses
    town = build_drive_scene(dataclasses.replace(TOWN, frames=80), 3).poses
    assert _travel_off_axis_deg(street).max() < 1.0
    assert _travel_off_axis_deg(town).max() > 2.0
    assert abs(_heading_deg(town[-1]) - _heading_deg(town[0])) > 10.0  # the street bends, the camera with it
    assert abs(_heading_deg(street[-1]) - _heading_deg(street[0])) < 12.0  # the weave alone: under 5.4 deg each way


def test_town_facades_stand_at_several_setbacks(town_clip):
    scene, _ = town_clip
    town, prims = scene.town, scene.static
    setbacks = []
    for k in (prims.cls == drive.BUILDING).nonzero().squeeze(1).tolist():
        assert prims.kind[k] == OBOX
        centre, half, yaw = prims.a[k].double(), prims.b[k].double(), float(prims.r[k])
        s, lat = town.main.locate(centre[0:1], centre[2:3])
        if abs(lat) < 40 and 0 < float(s) < 60 and abs(math.sin(yaw - town.main.at(float(s))[2])) < 0.05:
            setbacks.append(float(lat.abs()) - float(half[0]) - town.kerb)  # facade to back of sidewalk
    setbacks = np.array(setbacks)
    assert setbacks.size >= 4 and setbacks.min() > -0.5
    assert (setbacks < 1.0).any() and (setbacks > 2.5).any()


def test_town_crossing_opens_the_road_across_the_image(clip, town_clip):
    """At the crossing some image row is road from edge to edge; a street always shows a kerb beside it."""
    def full_rows(frames):
        return sum(int((f["labels"] == drive.ROAD).all(1).sum()) for f in frames)

    assert full_rows(town_clip[1]) > 0
    assert full_rows(clip[1]) == 0


def test_town_trees_stand_in_front_of_facades(town_clip):
    scene, frames = town_clip
    bare = dataclasses.replace(scene, static=scene.static.select(scene.static.cls != drive.VEGETATION))
    hidden = 0
    for i in (0, 4, 7):
        without = drive.render_frame(bare, TOWN, i)
        hidden += int(((frames[i]["labels"] == drive.VEGETATION) & (without["labels"] == drive.BUILDING)).sum())
    assert hidden > 20


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


def test_town_preset_renders_in_the_same_layout(tmp_path):
    from semhint.app.cli import main

    assert resolve_preset("drive", "town")["height"] == resolve_preset("drive", "demo")["height"]
    assert main(["synth", "drive", "--out", str(tmp_path), "--preset", "town", "--sequences", "1", "--frames", "3",
                 "--size", "32x96"]) == 0
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["preset"] == "town" and meta["settings"]["streets"] == "town"
    poses = read_poses(tmp_path / "poses" / "2000_01_01" / "2000_01_01_drive_0001_sync.txt")
    assert poses.shape == (3, 4, 4)
    for root in ("data", "gt_depth", "gt_labels", "gt_dynamic"):
        assert (tmp_path / root / "2000_01_01/2000_01_01_drive_0001_sync/image_02/data/0000000002.png").is_file()


def test_cli_synth_drive_with_preview(tmp_path):
    from semhint.app.cli import main

    rc = main(["synth", "drive", "--out", str(tmp_path), "--preset", "tiny", "--sequences", "1", "--frames", "3",
               "--size", "32x96", "--preview"])
    assert rc == 0 and (tmp_path / "preview.png").is_file()
    assert main(["synth", "drive", "--out", str(tmp_path), "--size", "bogus"]) == 2
