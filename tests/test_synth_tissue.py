"""SynthTissue: exact tracks (they land on the rendered surface points), determinism, layout; the
scared style's scope motion (2-10 px per training frame), spot light, rigidity, instrument and texture."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from semhint.core.config import load_config
from semhint.data.synthetic import PRESETS, render_tissue, resolve_preset, tissue

CFG = tissue.TissueConfig(height=48, width=64, frames=6, seed=0, queries=40)
STYLES = {"clip": CFG, "scared": dataclasses.replace(CFG, style="scared")}


@pytest.fixture(scope="module", params=sorted(STYLES))
def clip(request):
    """(config, scene, frames) of one short sequence of each style: every exactness test runs on both."""
    cfg = STYLES[request.param]
    scene = tissue.build_scene(cfg, 11)
    return cfg, scene, [out for _, out in tissue.render_sequence(cfg, 11, scene=scene)]


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
    _, _, frames = clip
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
    cfg, scene, frames = clip
    K = tissue.intrinsics(cfg)
    checked = 0
    for k, fr in enumerate(frames[1:], start=1):
        xy, xyz, vis = fr["tracks"]["xy"], fr["tracks"]["xyz"], fr["tracks"]["visible"]
        inner = vis & (xy[:, 0] >= 0) & (xy[:, 0] < cfg.width - 1) & (xy[:, 1] >= 0) & (xy[:, 1] < cfg.height - 1)
        idx = np.flatnonzero(inner)
        uv = _bilinear(fr["uv"], xy[idx, 0], xy[idx, 1])
        ok = np.isfinite(uv).all(1)  # all four neighbours are tissue
        idx, uv = idx[ok], uv[ok]
        P = tissue.camera_points(scene, cfg, k, torch.tensor(uv[:, 0], dtype=torch.float32),
                                 torch.tensor(uv[:, 1], dtype=torch.float32)).numpy()
        proj = np.stack([K[0, 0] * P[0] / P[2] + K[0, 2], K[1, 1] * P[1] / P[2] + K[1, 2]], 1)
        assert np.abs(proj - xy[idx]).max() < 0.1
        depth = _bilinear(fr["depth"], xy[idx, 0], xy[idx, 1])
        np.testing.assert_allclose(depth, xyz[idx, 2], rtol=2e-3)
        checked += idx.size
    assert checked > 50


def test_inversion_converges_everywhere(clip):
    _, _, frames = clip
    for fr in frames:
        assert (fr["labels"] != tissue.IGNORE_INDEX).all()
        assert (fr["depth"] > 20).all() and (fr["depth"] < 200).all()  # millimetres, close range


def test_scene_has_two_tissues_an_instrument_and_motion(clip):
    _, _, frames = clip
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


# ----------------------------------------------------------------------------------------------
# the default renders are the ones the tracking clips and earlier records were made with
# ----------------------------------------------------------------------------------------------
def _fingerprint(rendered: dict, poses: np.ndarray) -> dict:
    """A render in a few numbers: the label map's hash, the visible track count, fixed random
    projections of image and depth (any change of a pixel moves them), the tracks' and poses' sums."""
    rng = np.random.default_rng(0)
    image, depth = rendered["image"].astype(np.float64), rendered["depth"].astype(np.float64)
    w_image, w_depth = rng.uniform(-1, 1, (3, *image.shape)), rng.uniform(-1, 1, (3, *depth.shape))
    return dict(labels=hashlib.sha256(np.ascontiguousarray(rendered["labels"]).tobytes()).hexdigest()[:16],
                visible=int(rendered["tracks"]["visible"].sum()), image=[float((image * w).sum()) for w in w_image],
                depth=[float((depth * w).sum()) for w in w_depth],
                tracks=float(np.abs(rendered["tracks"]["xy"].astype(np.float64)).sum()), poses=float(np.abs(poses).sum()))


# computed with the renderer before the scared preset existed
_BEFORE_SCARED = [
    (("demo", dict(size="32x40", frames=4), 3, 2),
     dict(labels="fd7e0fb15d319545", visible=58, image=[-9.3595, 13.1676, 19.3665], depth=[2422.103, -144.798, 1424.869],
          tracks=2725.151, poses=41.477693)),
    (("bench", dict(size="30x40", frames=6, sweep_mm=20.0), 5, 5),
     dict(labels="44c5d4680b668572", visible=60, image=[-8.472, -3.309, 18.9391], depth=[98.375, 2472.426, 1848.851],
          tracks=2209.043, poses=99.056824)),
    (("tiny", dict(frames=4), 11, 3),
     dict(labels="286a538327e59787", visible=60, image=[3.3057, 32.5237, 2.234], depth=[-740.686, -1408.481, 2668.536],
          tracks=3354.097, poses=26.353794)),
]


@pytest.mark.parametrize("case,expected", _BEFORE_SCARED, ids=lambda v: str(v[0]) if isinstance(v, tuple) else None)
def test_clip_presets_render_as_before_the_scared_preset(case, expected):
    preset, overrides, seed, frame = case
    settings = resolve_preset("tissue", preset, **overrides)
    fields = {f.name for f in dataclasses.fields(tissue.TissueConfig)}
    cfg = tissue.TissueConfig(seed=0, **{k: v for k, v in settings.items() if k in fields})
    assert cfg.style == "clip"
    scene = tissue.build_scene(cfg, seed)
    frames = [f for _, f in tissue.render_sequence(cfg, seed, scene=scene)]
    got = _fingerprint(frames[frame], scene.poses)
    assert (got["labels"], got["visible"]) == (expected["labels"], expected["visible"])
    np.testing.assert_allclose(got["image"], expected["image"], atol=2e-3)
    np.testing.assert_allclose(got["depth"], expected["depth"], atol=5e-2)
    np.testing.assert_allclose([got["tracks"], got["poses"]], [expected["tracks"], expected["poses"]], atol=1e-3)


# ----------------------------------------------------------------------------------------------
# the scared style
# ----------------------------------------------------------------------------------------------
def _scared(frames: int, height: int = 48, width: int = 64, **kw) -> tissue.TissueConfig:
    return tissue.TissueConfig(height=height, width=width, frames=frames, seed=0, queries=64, style="scared", **kw)


def _rigid_flow(depth: np.ndarray, K: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flow (2 x N px) of every valid pixel into the other view from its exact depth and T
    (this camera -> that camera), and its translation part (flow minus the rotation's own flow)."""
    ys, xs = np.nonzero(depth > 0)
    pix = np.stack([xs, ys, np.ones_like(xs)]).astype(np.float64)
    rays = np.linalg.inv(K) @ pix
    moved = K @ (T[:3, :3] @ (rays * depth[ys, xs]) + T[:3, 3:4])
    turned = K @ T[:3, :3] @ rays
    return moved[:2] / moved[2] - pix[:2], moved[:2] / moved[2] - turned[:2] / turned[2]


@pytest.mark.parametrize("seed", [0, 7, 13])
def test_scared_scope_moves_2_to_10_px_between_training_frames(seed):
    """Between a target and its source frame (the frame step of the scared config's data.frame_ids), at
    the config's training size, the median parallax of the tissue (the translation part of its motion:
    what depth can be learnt from) lies in 2..10 px for every pair, and the rotation does not swamp it."""
    data = load_config("synth_tissue_scared").data
    step = max(abs(f) for f in data.frame_ids)
    preset = PRESETS["tissue"]["scared"]
    assert preset["split_margin"] >= step  # every split frame has its neighbours
    cfg = _scared(12, preset["height"] // 4, preset["width"] // 4)  # the preset's view, rendered small
    scale = np.array([[data.width / cfg.width], [data.height / cfg.height]])  # the loader's resize of the preset
    scene = tissue.build_scene(cfg, seed)
    K = tissue.intrinsics(cfg)
    flows, parallaxes = [], []
    for t in range(cfg.frames - step):
        depth = tissue.render_frame(scene, cfg, t)["depth"]
        T = np.linalg.inv(scene.poses[t + step]) @ scene.poses[t]
        flow, parallax = _rigid_flow(depth, K, T)
        flows.append(np.median(np.hypot(*(flow * scale))))
        parallaxes.append(np.median(np.hypot(*(parallax * scale))))
    assert 2 <= min(parallaxes) and max(parallaxes) <= 10, parallaxes
    assert np.median(np.array(parallaxes) / np.array(flows)) >= 0.4, (parallaxes, flows)


def test_clip_camera_barely_moves_by_comparison():
    """The reason for the preset: the demo preset's camera (60 frames) moves a fraction of a pixel per
    frame at the training width."""
    cfg = tissue.TissueConfig(height=48, width=64, frames=60, seed=0, queries=8)
    scene = tissue.build_scene(cfg, 0)
    flow, _ = _rigid_flow(tissue.render_frame(scene, cfg, 30)["depth"], tissue.intrinsics(cfg),
                          np.linalg.inv(scene.poses[31]) @ scene.poses[30])
    assert np.median(np.hypot(*flow)) * 160 / 64 < 1


def test_scared_scope_pans_dollies_and_rolls():
    """The path has all three motions: the view axis turns (pan) and rolls about itself, and the
    camera moves along its own axis (dolly) as well as sideways (the pivot at the trocar)."""
    scene = tissue.build_scene(_scared(150, 24, 32), 3)  # 10 s: every motion's full period
    R, t = scene.poses[:, :3, :3], scene.poses[:, :3, 3]
    np.testing.assert_allclose(scene.poses[0], np.eye(4), atol=1e-9)  # world = first camera
    axis = R[:, :, 2]
    pan = np.degrees(np.arccos(np.clip(axis @ axis[0], -1, 1)))
    assert pan.max() > 5
    along = np.einsum("ti,ti->t", np.diff(t, axis=0), axis[1:])  # motion along the current view axis
    assert np.abs(along).max() > 0.3 and (along > 0).any() and (along < 0).any()  # mm per frame, in and out
    # roll: the x axis turns about the view axis beyond what the pan alone explains
    rel = np.einsum("tji,tjk->tik", R[:-1], R[1:])  # frame-to-frame rotation in camera coordinates
    roll = np.degrees(np.arctan2(rel[:, 1, 0], rel[:, 0, 0]))
    assert np.abs(roll).max() > 0.1 and (roll > 0).any() and (roll < 0).any()


def test_scared_motion_does_not_depend_on_clip_length():
    """The path is defined in seconds: a longer clip continues the same motion."""
    short, long = tissue.build_scene(_scared(10, 24, 32), 5), tissue.build_scene(_scared(30, 24, 32), 5)
    np.testing.assert_allclose(short.poses, long.poses[:10], atol=1e-9)


def test_scared_instrument_enters_stays_leaves_and_hides_tracks():
    cfg = _scared(20)
    scene = tissue.build_scene(cfg, 1)
    frames = [f for _, f in tissue.render_sequence(cfg, 1, scene=scene)]
    reach = np.array([tissue.instrument_reach(scene, cfg, i) for i in range(cfg.frames)])
    seen = np.array([(f["labels"] == tissue.INSTRUMENT).sum() for f in frames])
    assert reach[0] == 0 and reach[-1] == 0 and (reach == 1).sum() >= 4
    assert seen[0] == 0 and seen[-1] == 0 and (seen[reach == 1] > 0).all()  # enters, stays, leaves
    first_in, last_in = np.flatnonzero(seen)[[0, -1]]
    assert (seen[first_in:last_in + 1] > 0).all()  # one visit, no flicker
    hidden = 0
    for f in frames:
        xy, vis, z = f["tracks"]["xy"], f["tracks"]["visible"], f["tracks"]["xyz"][:, 2]
        inside = (xy[:, 0] >= 1) & (xy[:, 0] <= cfg.width - 2) & (xy[:, 1] >= 1) & (xy[:, 1] <= cfg.height - 2)
        px, py = np.round(xy[:, 0]).astype(int).clip(0, cfg.width - 1), np.round(xy[:, 1]).astype(int).clip(0, cfg.height - 1)
        window = np.stack([f["labels"][(py + dy).clip(0, cfg.height - 1), (px + dx).clip(0, cfg.width - 1)]
                           for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
        under = inside & (window == tissue.INSTRUMENT).all(0)  # the instrument covers the track's pixel
        assert not vis[under].any()
        assert (z[under] > f["depth"][py[under], px[under]]).all()  # ...because it is in front
        hidden += int(under.sum())
    assert hidden > 10


def test_scared_tissue_is_mostly_rigid():
    """Breathing and heartbeat move the tissue by about a millimetre; only the tissue near the grasp
    point moves more, while the instrument pulls it; the clip style breathes several times as much."""
    g = torch.linspace(-40, 40, 41, dtype=torch.float32)
    u, v = (a.reshape(-1) for a in torch.meshgrid(g, g, indexing="ij"))
    spread = {}
    for style in ("clip", "scared"):
        cfg = tissue.TissueConfig(height=24, width=32, frames=30, style=style)
        for seed in range(3):
            scene = tissue.build_scene(cfg, seed)
            rest = tissue.world_points(scene, cfg, 0, u, v)
            moved = torch.stack([torch.linalg.vector_norm(tissue.world_points(scene, cfg, f, u, v) - rest, dim=0)
                                 for f in range(cfg.frames)]).amax(0)
            far = torch.hypot(u - scene.pull_uv[0], v - scene.pull_uv[1]) > 3 * scene.pull_sigma
            spread.setdefault(style, []).append(float(moved.median()))
            if style == "scared":
                assert float(moved[far].max()) < 1.0  # mm over the whole clip, away from the instrument
                assert float(moved[~far].max()) > 2.0  # the local pull
    assert max(spread["scared"]) < 1.0 and min(spread["clip"]) > 1.5 * max(spread["scared"])


def test_scared_spot_light_falls_off_off_axis():
    """The spot multiplies the lit (non-ambient) light by cos^SPOT_EXP of the angle off the axis."""
    cfg = tissue.TissueConfig(height=12, width=16)
    K = torch.tensor(tissue.intrinsics(cfg), dtype=tissue.DT)
    ys, xs = torch.meshgrid(torch.arange(12, dtype=tissue.DT), torch.arange(16, dtype=tissue.DT), indexing="ij")
    rays = torch.stack([(xs.reshape(-1) - K[0, 2]) / K[0, 0], (ys.reshape(-1) - K[1, 2]) / K[1, 1], torch.ones(192)])
    normal = -rays / torch.linalg.vector_norm(rays, dim=0)
    depth, albedo = torch.full((192,), 80.0), torch.full((3, 192), 0.5)
    args = (albedo, normal, rays, depth, 80.0, K, 12, 16, 0.0, 60.0)
    plain, spot = tissue._shade(*args), tissue._shade(*args, tissue.SPOT_EXP)
    ambient = 0.04 * albedo
    cos = 1 / torch.linalg.vector_norm(rays, dim=0)
    torch.testing.assert_close((spot - ambient) / (plain - ambient), cos[None].expand(3, -1) ** tissue.SPOT_EXP)
    assert float(cos.min() ** tissue.SPOT_EXP) < 0.75  # the corners are visibly darker


def test_scared_highlights_saturate_and_move_with_the_view():
    """Wet tissue: a few percent of the pixels are blown out by highlights, and they are not glued to
    the material (a specular pixel of one frame is mostly not specular where its point lands in the
    frame a training pair compares it with, 3 frames on)."""
    cfg = _scared(4, 96, 128)
    scene = tissue.build_scene(cfg, 0)
    frames = [tissue.render_frame(scene, cfg, i) for i in (0, 3)]
    blown = [(f["image"].max(-1) >= 0.99) & (f["labels"] != tissue.INSTRUMENT) for f in frames]
    assert 0.002 < blown[0].mean() < 0.2
    ys, xs = np.nonzero(blown[0])
    uv = frames[0]["uv"][ys, xs]
    P = tissue.camera_points(scene, cfg, 3, torch.tensor(uv[:, 0]), torch.tensor(uv[:, 1])).numpy()
    K = tissue.intrinsics(cfg)
    x, y = np.round(K[0, 0] * P[0] / P[2] + K[0, 2]).astype(int), np.round(K[1, 1] * P[1] / P[2] + K[1, 2]).astype(int)
    keep = (x >= 0) & (x < cfg.width) & (y >= 0) & (y < cfg.height)
    assert keep.sum() > 20 and blown[1][y[keep], x[keep]].mean() < 0.5


def test_scared_texture_has_detail_at_every_scale():
    """Band-pass energy of the albedo (0.25 mm samples) in three bands: fine grain (< 1.25 mm),
    small vessels (1.25-4 mm), large vessels and mottling (4-16 mm); the scared texture has more than
    the clip texture in each band, and clearly more in the finest."""
    g = torch.arange(0, 48, 0.25, dtype=torch.float32)
    u, v = (a.reshape(-1) for a in torch.meshgrid(g, g, indexing="ij"))
    for seed in range(3):
        bands = {}
        for style, albedo in (("clip", tissue._tissue_albedo), ("scared", tissue._tissue_albedo_scared)):
            scene = tissue.build_scene(tissue.TissueConfig(style=style), seed)
            image = albedo(scene, u, v).mean(0).reshape(1, 1, g.numel(), g.numel())

            def blur(k: int) -> torch.Tensor:
                return F.avg_pool2d(F.pad(image, (k // 2,) * 4, mode="reflect"), k, 1)

            bands[style] = [float((image - blur(5)).std()), float((blur(5) - blur(17)).std()),
                            float((blur(17) - blur(65)).std())]
        assert all(s > c for s, c in zip(bands["scared"], bands["clip"])), bands
        assert bands["scared"][0] > 0.02, bands


def test_scared_style_checks_its_inputs(tmp_path):
    from semhint.core.errors import InputError

    with pytest.raises(InputError, match="style"):
        tissue.build_scene(tissue.TissueConfig(style="hamlyn"), 0)
    with pytest.raises(InputError, match="sweep"):
        tissue.build_scene(_scared(4, sweep_mm=10.0), 0)
    with pytest.raises(InputError, match="--preset scared"):
        render_tissue(tmp_path, preset="scared", sweep_mm=5.0, progress=False)


def test_cli_scared_preset_writes_its_style(tmp_path):
    from semhint.app.cli import main

    base = ["synth", "tissue", "--sequences", "1", "--frames", "5", "--size", "24x32", "--workers", "1"]
    assert main(base + ["--out", str(tmp_path / "scared"), "--preset", "scared"]) in (None, 0)
    meta = json.loads((tmp_path / "scared" / "meta.json").read_text())
    assert meta["preset"] == "scared" and meta["settings"]["style"] == "scared"
    # its configs read frames 2 apart: the splits hold only frames with both such neighbours (of 0..4)
    assert (tmp_path / "scared" / "splits" / "train.txt").read_text().split() == ["tissue_01", "2"]
    poses = np.loadtxt(tmp_path / "scared" / "poses" / "tissue_01.txt").reshape(-1, 3, 4)
    assert np.abs(poses[:, :3, :3] - np.eye(3)).max() > 1e-3  # the scope turns
    assert main(base + ["--out", str(tmp_path / "bad"), "--preset", "scared", "--sweep-mm", "5"]) == 2
    assert main(["synth", "tissue", "--sequences", "1", "--frames", "4", "--size", "24x32", "--workers", "1",
                 "--out", str(tmp_path / "short"), "--preset", "scared"]) == 2  # no frame has neighbours 2 away


def _plane_residual(depth: np.ndarray) -> float:
    """Median relative distance of the inverse depth from its best plane in the image (a surface a
    homography maps exactly: no parallax of shape between two views of it)."""
    ys, xs = np.nonzero(depth > 0)
    inv = 1.0 / depth[ys, xs]
    A = np.stack([xs, ys, np.ones_like(xs)], 1).astype(np.float64)
    coef, *_ = np.linalg.lstsq(A, inv, rcond=None)
    return float(np.median(np.abs(A @ coef - inv) / inv))


def test_scared_surface_has_organ_scale_relief():
    """The scared style's lobes and cavity curvature take its surface well away from a plane (the
    clip surface stays within about 1-3 % of one), so there is a shape for parallax to reveal."""
    residuals = {}
    for style in ("clip", "scared"):
        cfg = tissue.TissueConfig(height=48, width=64, frames=1, seed=0, style=style, instrument=False)
        residuals[style] = [_plane_residual(tissue.render_frame(tissue.build_scene(cfg, s), cfg, 0)["depth"])
                            for s in range(4)]
    assert min(residuals["scared"]) > 0.02
    assert np.median(residuals["scared"]) > 2 * np.median(residuals["clip"])
