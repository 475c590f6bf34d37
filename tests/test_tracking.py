"""Tracking core: flow trackers, lifting, the deformation graph, and the metrics."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from semhint.tracking import GRAPH_PRESETS
from semhint.tracking import graph as G
from semhint.tracking.flow import DISTracker, LKTracker, sample_field
from semhint.tracking.lift import (
    ScaledDepth,
    backproject_points,
    corrupt_depth,
    lift_tracks,
    median_scale,
    project_points,
    sample_depth,
)
from semhint.tracking.metrics import edge_points, high_motion_frames, score, summarise, survival
from semhint.tracking.toy import make_toy_clip


@pytest.fixture(scope="module")
def toy():
    return make_toy_clip(96, 128, frames=8, points=30, amp_mm=6.0, seed=1)


def _textured(h=96, w=128, seed=0):
    import cv2

    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (h, w)).astype(np.float32), (0, 0), 1.5)
    img = (img - img.min()) / (img.max() - img.min()) * 255
    return np.repeat(img[..., None], 3, 2).astype(np.uint8)


def _run_flow(tracker, frames, queries):
    tracker.start(frames[0], queries)
    return np.array([queries] + [tracker.step(f)[0] for f in frames[1:]])


def _err(pred, gt):
    return float(np.linalg.norm(pred[1:] - gt[1:], axis=-1).mean())


# ---- flow ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("tracker", [DISTracker(), LKTracker()], ids=["dis", "lk"])
def test_flow_recovers_known_translation(tracker):
    import cv2

    base = _textured()
    shifts = np.array([[0, 0], [1.5, 0.5], [3.0, 1.0], [4.5, 1.5], [6.0, 2.0]])
    frames = [cv2.warpAffine(base, np.float32([[1, 0, dx], [0, 1, dy]]), (128, 96), borderMode=cv2.BORDER_REFLECT)
              for dx, dy in shifts]
    rng = np.random.default_rng(0)
    q = np.stack([rng.uniform(20, 100, 20), rng.uniform(20, 70, 20)], 1)
    pred = _run_flow(tracker, frames, q)
    gt = q[None] + shifts[:, None]
    assert _err(pred, gt) < 0.5


@pytest.mark.parametrize("tracker", [DISTracker(), DISTracker(work_width=96), LKTracker()], ids=["dis", "dis-96", "lk"])
def test_flow_follows_smooth_deformation(toy, tracker):
    pred = _run_flow(tracker, toy.frames, toy.queries)
    zero = _err(np.repeat(toy.queries[None], len(toy.frames), 0), toy.xy)
    assert zero > 3.0  # the clip really moves
    assert _err(pred, toy.xy) < 1.0


def test_dis_reanchoring_recovers_points_after_instrument_passes():
    clip = make_toy_clip(96, 128, frames=8, points=30, seed=2, instrument=True)
    pred = _run_flow(DISTracker(), clip.frames, clip.queries)
    occluded_once = (~clip.visible).any(0)
    assert occluded_once.any()
    final = np.linalg.norm(pred[-1] - clip.xy[-1], axis=1)
    seen_again = occluded_once & clip.visible[-1]
    assert seen_again.any() and final[seen_again].max() < 1.5
    chained_only = _run_flow(DISTracker(reanchor=False), clip.frames, clip.queries)
    assert np.linalg.norm(chained_only[-1] - clip.xy[-1], axis=1)[seen_again].max() > final[seen_again].max()


def test_sample_field_is_bilinear():
    field = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = sample_field(field[..., None], np.array([[1.5, 1.0], [0.0, 0.5]]))[:, 0]
    np.testing.assert_allclose(out, [5.5, 2.0], atol=1e-5)


# ---- lifting ------------------------------------------------------------------------------------
def test_backproject_then_project_roundtrip():
    K = np.array([[200.0, 0, 63.5], [0, 210.0, 47.5], [0, 0, 1]])
    xy = np.array([[63.5, 47.5], [0.0, 0.0], [120.0, 90.0]])
    z = np.array([50.0, 40.0, 70.0])
    pts = backproject_points(xy, z, K)
    np.testing.assert_allclose(pts[0], [0, 0, 50])
    np.testing.assert_allclose(pts[1], [-63.5 / 200 * 40, -47.5 / 210 * 40, 40])
    np.testing.assert_allclose(project_points(pts, K), xy, atol=1e-9)


def test_sample_depth_bilinear_and_edge_median():
    depth = np.full((20, 20), 50.0, np.float32)
    depth[:, :10] = 50.0 + np.arange(10)[None] * 0.1  # smooth ramp
    np.testing.assert_allclose(sample_depth(depth, np.array([[2.5, 3.0]])), [50.25], atol=1e-4)
    depth[:, 10:] = 20.0  # a tool edge at x = 9.5
    z = sample_depth(depth, np.array([[9.5, 5.0], [8.4, 5.0]]), window=5)
    assert z[0] == pytest.approx(20.0)  # window median (3 tool pixels of 5), never the half-way 35
    assert z[1] == pytest.approx(50.84, abs=1e-3)  # left of the edge: plain bilinear
    depth[5, 5] = 0.0  # an invalid pixel next to a query: median of the valid neighbours
    assert np.isfinite(sample_depth(depth, np.array([[5.2, 5.2]])))[0]
    assert np.isnan(sample_depth(np.zeros((8, 8), np.float32), np.array([[3.0, 3.0]])))[0]


def test_scale_policies():
    gt = {t: np.full((4, 4), 50.0 + t, np.float32) for t in range(3)}
    pred = {t: gt[t] / (2.0 + t) for t in range(3)}  # scale drifts per frame
    metric = ScaledDepth(pred.__getitem__, "metric")
    first = ScaledDepth(pred.__getitem__, "first-frame", gt.__getitem__)
    per_frame = ScaledDepth(pred.__getitem__, "per-frame-median", gt.__getitem__)
    np.testing.assert_allclose(metric(1), pred[1])
    np.testing.assert_allclose(first(0), gt[0], rtol=1e-6)
    np.testing.assert_allclose(first(2), pred[2] * 2.0, rtol=1e-6)  # one factor, fixed at frame 0
    np.testing.assert_allclose(per_frame(2), gt[2], rtol=1e-6)
    with pytest.raises(ValueError):
        ScaledDepth(pred.__getitem__, "first-frame")
    with pytest.raises(ValueError):
        median_scale(np.zeros((2, 2)), np.ones((2, 2)))


def test_corrupt_depth_is_smooth_relative_noise():
    depth = np.full((64, 64), 50.0, np.float32)
    depth[0, 0] = 0
    noisy = corrupt_depth(depth, 0.05, np.random.default_rng(0))
    rel = noisy[depth > 0] / 50.0 - 1.0
    assert noisy[0, 0] == 0
    assert 0.03 < rel.std() < 0.07
    assert np.abs(np.diff(noisy, axis=1))[1:, 1:].mean() < 0.5  # spatially correlated, not white
    np.testing.assert_array_equal(corrupt_depth(depth, 0.0, np.random.default_rng(0)), depth)


def test_lift_tracks_matches_ground_truth_3d(toy):
    xyz = lift_tracks(toy.xy, lambda t: toy.depth[t], toy.K)
    assert np.nanmean(np.linalg.norm(xyz - toy.xyz, axis=-1)) < 0.2


# ---- deformation graph --------------------------------------------------------------------------
def _graph_error(clip, noise: float, **cfg) -> float:
    rng = np.random.default_rng(0)
    tracker = G.DeformationGraph(replace(GRAPH_PRESETS["graph"], **cfg))  # what `--mode graph` runs
    tracker.start(clip.depth[0], clip.K, clip.queries)
    pred = [clip.queries] + [tracker.step(corrupt_depth(d, noise, rng))[0] for d in clip.depth[1:]]
    return _err(np.array(pred), clip.xy)


def test_graph_with_exact_depth_beats_zero_motion(toy):
    zero = _err(np.repeat(toy.queries[None], len(toy.frames), 0), toy.xy)
    assert _graph_error(toy, 0.0) < 0.5 * zero


def test_graph_error_rises_monotonically_with_depth_noise(toy):
    errors = [_graph_error(toy, noise) for noise in (0.0, 0.02, 0.05)]
    assert errors[0] < errors[1] < errors[2], errors


def test_graph_flow_residuals_help(toy):
    import semhint.tracking as T

    assert T.MODES == ("flow", "flow+lift", "graph", "graph+flow")
    rng = np.random.default_rng(0)
    tracker = G.DeformationGraph(G.GraphConfig(w_flow=1.0))
    tracker.start(toy.depth[0], toy.K, toy.queries)
    flow = DISTracker()
    flow.start(toy.frames[0], tracker.sample_xy)
    pred = [toy.queries]
    for frame, depth in zip(toy.frames[1:], toy.depth[1:]):
        fxy, fok = flow.step(frame)
        pred.append(tracker.step(corrupt_depth(depth, 0.05, rng), None, fxy, fok)[0])
    assert _err(np.array(pred), toy.xy) < _graph_error(toy, 0.05)


def test_skinning_rows_sum_to_one_and_respect_classes():
    pts = np.array([[0, 0, 50.0], [10, 0, 50.0], [4, 0, 50.0]])
    nodes = np.array([[0, 0, 50.0], [2, 0, 50.0], [9, 0, 50.0], [11, 0, 50.0]])
    W = G.skinning_matrix(pts, nodes, 2, 3.0, np.array([0, 1, 1]), np.array([0, 0, 1, 1])).toarray()
    np.testing.assert_allclose(W.sum(1), 1.0)
    assert W[2, :2].sum() == 0  # point 2 sits nearer class-0 nodes but is class 1
    edges = G.node_edges(nodes, 1)
    assert {tuple(e) for e in edges} >= {(0, 1), (2, 3)}


def test_graph_marks_points_behind_an_occluder_invisible():
    clip = make_toy_clip(96, 128, frames=6, points=30, seed=3, instrument=True)
    tracker = G.DeformationGraph(G.GraphConfig())
    tracker.start(clip.depth[0], clip.K, clip.queries)
    vis = np.array([tracker.step(d)[2] for d in clip.depth[1:]])
    truth = clip.visible[1:]
    assert (~truth).any()
    assert (vis == truth).mean() > 0.9


# ---- metrics ------------------------------------------------------------------------------------
def test_metrics_on_hand_made_tracks():
    gt = np.zeros((2, 3, 2))
    pred = gt.copy()
    pred[0, :, 0] = [3.0, 10.0, 100.0]  # frame 0 errors 3, 10, 100
    pred[1, :, 0] = [1.0, 1.0, 1.0]
    valid = np.ones((2, 3), bool)
    s = summarise(np.linalg.norm(pred - gt, axis=-1), (4, 8, 16, 32, 64), "px")
    assert s["count"] == 6
    assert s["mean_px"] == pytest.approx(((3 + 10 + 100) / 3 + 1) / 2)  # per frame, then over frames
    assert s["median_px"] == pytest.approx(2.0)
    # fractions within 4/8/16/32/64: 4/6, 4/6, 5/6, 5/6, 5/6
    assert s["delta_avg"] == pytest.approx(np.mean([4, 4, 5, 5, 5]) / 6)
    out = score(pred, gt, valid)
    assert out["2d"]["mean_px"] == pytest.approx(s["mean_px"])


def test_metrics_never_read_placeholders_or_invisible_points():
    gt = np.zeros((2, 2, 2))
    pred = np.zeros((2, 2, 2))
    pred[:, 0, 0] = 2.0
    valid = np.array([[True, False], [True, False]])
    gt_placeholder = gt.copy()
    gt_placeholder[:, 1] = -1e6  # what an unlabelled entry might hold
    gt_nan = gt.copy()
    gt_nan[:, 1] = np.nan
    for g in (gt_placeholder, gt_nan):
        out = score(pred, g, valid)["2d"]
        assert out["count"] == 2 and out["mean_px"] == pytest.approx(2.0) and np.isfinite(out["std_px"])
    assert score(pred, gt, np.zeros((2, 2), bool))["2d"] == {"count": 0}


def test_survival_edge_and_high_motion_subsets():
    err = np.array([[1.0, 1.0], [20.0, 1.0], [1.0, np.nan], [1.0, 30.0]])
    # point 0 is lost at its 2nd scored frame (1/4 survived); point 1 at its 3rd scored frame (2/3)
    assert survival(err, 16.0) == pytest.approx((1 / 4 + 2 / 3) / 2)
    labels = np.zeros((20, 20), np.uint8)
    labels[:, 10:] = 2
    assert edge_points(np.array([[9.0, 5.0], [2.0, 5.0]]), labels, 3.0).tolist() == [True, False]
    gt = np.zeros((4, 2, 2))
    gt[:, :, 0] = np.array([1.0, 2.0, 30.0, 3.0])[:, None]
    high = high_motion_frames(gt, np.ones((4, 2), bool), np.zeros((2, 2)), threshold_px=10.0)
    assert high.tolist() == [False, False, True, False]
    pred = np.zeros_like(gt)
    out = score(pred, gt, np.ones((4, 2), bool), edge=np.array([True, False]), high_motion=high)
    assert out["subsets"]["high_motion"]["2d"]["mean_px"] == pytest.approx(30.0)
    assert out["subsets"]["edge"]["2d"]["count"] == 4
