"""SynthTissue: exact tracks (they land on the rendered surface points), determinism, layout."""

from __future__ import annotations

import json

import numpy as np
import pytest

from semhint.data.synthetic import render_tissue, tissue

CFG = tissue.TissueConfig(height=48, width=64, frames=6, seed=0, queries=40)


@pytest.fixture(scope="module")
def clip():
    scene = tissue.build_scene(CFG, 11)
    return scene, [out for _, out in tissue.render_sequence(CFG, 11, scene=scene)]


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    im = image.reshape(image.shape[0], image.shape[1], -1)
    top = im[y0, x0] * (1 - fx) + im[y0, x0 + 1] * fx
    bottom = im[y0 + 1, x0] * (1 - fx) + im[y0 + 1, x0 + 1] * fx
    out = top * (1 - fy) + bottom * fy
    return out[:, 0] if image.ndim == 2 else out


def test_tracks_start_exactly_on_their_pixels(clip):
    """Queries are the material points seen at pixel centres: their frame-0 track is that centre."""
    _, frames = clip
    first = frames[0]
    xy = first["tracks"]["xy"]
    uv = first["uv"]
    # each query's material coordinate is the one rendered at the nearest pixel centre
    px, py = np.round(xy[:, 0]).astype(int), np.round(xy[:, 1]).astype(int)
    np.testing.assert_allclose(uv[py, px], first["queries"], atol=1e-4)
    assert np.abs(xy - np.stack([px, py], 1)).max() < 0.1
    assert first["tracks"]["visible"].all()


def test_tracks_reproject_onto_rendered_surface_points(clip):
    """In later frames the rendered material-coordinate map, read at a track's 2D position, gives
    back the tracked point (within 0.1 px once projected), and the rendered depth gives its z."""
    scene, frames = clip
    K = tissue.intrinsics(CFG)
    checked = 0
    for k, fr in enumerate(frames[1:], start=1):
        xy, xyz, vis = fr["tracks"]["xy"], fr["tracks"]["xyz"], fr["tracks"]["visible"]
        inner = vis & (xy[:, 0] >= 0) & (xy[:, 0] < CFG.width - 1) & (xy[:, 1] >= 0) & (xy[:, 1] < CFG.height - 1)
        idx = np.flatnonzero(inner)
        uv = _bilinear(fr["uv"], xy[idx, 0], xy[idx, 1])
        ok = np.isfinite(uv).all(1)  # all four neighbours are tissue
        idx, uv = idx[ok], uv[ok]
        import torch

        P = tissue.camera_points(scene, CFG, k, torch.tensor(uv[:, 0], dtype=torch.float32),
                                 torch.tensor(uv[:, 1], dtype=torch.float32)).numpy()
        proj = np.stack([K[0, 0] * P[0] / P[2] + K[0, 2], K[1, 1] * P[1] / P[2] + K[1, 2]], 1)
        assert np.abs(proj - xy[idx]).max() < 0.1
        depth = _bilinear(fr["depth"], xy[idx, 0], xy[idx, 1])
        np.testing.assert_allclose(depth, xyz[idx, 2], rtol=2e-3)
        checked += idx.size
    assert checked > 50


def test_inversion_converges_everywhere(clip):
    _, frames = clip
    for fr in frames:
        assert (fr["labels"] != tissue.IGNORE_INDEX).all()
        assert (fr["depth"] > 20).all() and (fr["depth"] < 200).all()  # millimetres, close range


def test_scene_has_two_tissues_an_instrument_and_motion(clip):
    _, frames = clip
    labels = np.concatenate([f["labels"].ravel() for f in frames])
    counts = np.bincount(labels, minlength=3)
    assert (counts[:3] > 0).all()
    motion = np.linalg.norm(frames[-1]["tracks"]["xyz"] - frames[0]["tracks"]["xyz"], axis=1)
    assert motion.max() > 1.0  # mm: the tissue deforms


def test_rendering_is_deterministic_for_a_seed():
    cfg = tissue.TissueConfig(height=24, width=32, frames=3, seed=2, queries=8)
    one = [f for _, f in tissue.render_sequence(cfg, 5)]
    two = [f for _, f in tissue.render_sequence(cfg, 5)]
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["tracks"]["xy"], b["tracks"]["xy"])


def test_output_layout(tmp_path):
    from semhint.core.fileio import load_npz, read_depth_png
    from semhint.data.folder import frame_refs, read_intrinsics

    render_tissue(tmp_path, preset="tiny", seed=0, frames=4, progress=False)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["units"] == "mm" and meta["class_set"] == "tissue"
    K, hw = read_intrinsics(tmp_path / "data" / "tissue_01" / "intrinsics.yaml")
    np.testing.assert_allclose(K, tissue.intrinsics(tissue.TissueConfig(height=48, width=64)), rtol=1e-5)
    assert hw == (48, 64)
    tracks = load_npz(tmp_path / "tracks" / "tissue_01.npz")
    n = tracks["queries"].shape[0]
    assert tracks["tracks_2d"].shape == (4, n, 2) and tracks["tracks_3d"].shape == (4, n, 3)
    assert tracks["visibility"].dtype == bool and tracks["visibility"].shape == (4, n)
    depth = read_depth_png(tmp_path / "gt_depth" / "tissue_01" / "000002.png")
    assert depth.shape == (48, 64) and (depth > 0).all()
    refs = frame_refs(tmp_path / "data", tmp_path / "splits" / "train.txt", [0, -1, 1])
    assert refs and all(r.key.startswith("tissue_01 ") for r in refs)
    test_lines = (tmp_path / "splits" / "test.txt").read_text().split()
    assert test_lines[0] == "tissue_02"


def test_sweep_moves_the_camera_and_leaves_default_renders_alone():
    """The sweep only adds lateral motion of the asked amplitude; without it the scene (surface,
    deformation, drift) is the one the tracking clips were rendered with."""
    still = tissue.TissueConfig(height=24, width=32, frames=20, seed=0, queries=8)
    swept = tissue.TissueConfig(height=24, width=32, frames=20, seed=0, queries=8, sweep_mm=25.0)
    a, b = tissue.build_scene(still, 3), tissue.build_scene(swept, 3)
    assert a.distance == b.distance and torch_equal(a.bumps, b.bumps)
    extra = b.poses[:, :3, 3] - a.poses[:, :3, 3]
    np.testing.assert_allclose(b.poses[:, :3, :3], a.poses[:, :3, :3])
    assert np.abs(extra[:, 2]).max() == 0  # lateral only: the distance to the tissue is kept
    assert 20 < np.linalg.norm(extra[:, :2], axis=1).max() <= 25.0 + 1e-9
    np.testing.assert_allclose(extra[0], 0, atol=1e-9)  # world = first camera
    step_still = np.linalg.norm(np.diff(a.poses[:, :3, 3], axis=0), axis=1).mean()
    step_swept = np.linalg.norm(np.diff(b.poses[:, :3, 3], axis=0), axis=1).mean()
    assert step_swept > 10 * step_still


def test_tracks_stay_exact_under_the_sweep():
    cfg = tissue.TissueConfig(height=32, width=48, frames=4, seed=0, queries=16, sweep_mm=30.0, sweep_cycles=0.25)
    scene = tissue.build_scene(cfg, 4)
    frames = [f for _, f in tissue.render_sequence(cfg, 4, scene=scene)]
    K = tissue.intrinsics(cfg)
    last = frames[-1]
    seen = last["tracks"]["visible"]
    assert seen.any()
    xyz = last["tracks"]["xyz"][seen]
    proj = np.stack([K[0, 0] * xyz[:, 0] / xyz[:, 2] + K[0, 2], K[1, 1] * xyz[:, 1] / xyz[:, 2] + K[1, 2]], 1)
    np.testing.assert_allclose(proj, last["tracks"]["xy"][seen], atol=1e-3)
    shift = np.median(last["tracks"]["xy"][seen] - frames[0]["tracks"]["xy"][seen], axis=0)
    assert np.linalg.norm(shift) > 5  # px: the view has moved across the tissue


def test_render_rejects_a_negative_sweep(tmp_path):
    from semhint.core.fileio import InputError

    with pytest.raises(InputError, match="sweep"):
        render_tissue(tmp_path, preset="tiny", sweep_mm=-1.0, progress=False)


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_cli_sweep_lands_in_the_poses_and_meta(tmp_path):
    from semhint.app.cli import main

    base = ["synth", "tissue", "--preset", "tiny", "--sequences", "1", "--frames", "5", "--workers", "1"]
    assert main(base + ["--out", str(tmp_path / "swept"), "--sweep-mm", "12"]) in (None, 0)
    assert main(base + ["--out", str(tmp_path / "still")]) in (None, 0)
    meta = json.loads((tmp_path / "swept" / "meta.json").read_text())
    assert meta["settings"]["sweep_mm"] == 12
    swept, still = (np.loadtxt(tmp_path / d / "poses" / "tissue_01.txt").reshape(-1, 3, 4) for d in ("swept", "still"))
    np.testing.assert_allclose(np.linalg.norm(swept[:, :2, 3] - still[:, :2, 3], axis=1).max(), 12, rtol=1e-4)
