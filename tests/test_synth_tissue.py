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
        assert (fr["labels"] != tissue.IGNORE).all()
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
    from semhint.data import read_depth_png
    from semhint.data.folder import frame_refs, read_intrinsics
    from semhint.fileio import load_npz

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
