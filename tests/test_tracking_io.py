"""Tracking loaders (SuPer, generic, SynthTissue layout) on fabricated fixtures, outputs, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from semhint.app.cli import main
from semhint.core.fileio import InputError, load_npz, save_image
from semhint.tracking import evaluate_tracks, load_clip, track
from semhint.tracking.io import load_generic, load_super
from semhint.tracking.toy import make_toy_clip, write_toy_clip


def _frames(folder, names, h=24, w=32):
    rng = np.random.default_rng(0)
    for name in names:
        save_image(folder / name, rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


@pytest.fixture
def super_root(tmp_path):
    root = tmp_path / "grasp1"
    _frames(root / "rgb", [f"{i:06d}-left.png" for i in range(1, 6)])
    gt = np.zeros((3, 2, 2))
    gt[:, 0] = [[5.0, 7.0], [6.0, 8.0], [7.0, 9.0]]  # (row, col)
    gt[:, 1] = [[10.0, 12.0], [0.0, 0.0], [11.0, 13.0]]  # point 1 unlabelled in the middle frame
    np.save(root / "labelPts.npy", {"gt": gt, "SURF": gt}, allow_pickle=True)
    np.save(root / "eva_id.npy", np.array([1, 3, 5]))
    return root


def test_super_loader_reads_exact_layout(super_root):
    clip = load_clip(super_root)
    assert len(clip) == 5 and clip.frame_paths[0].name == "000001-left.png"
    np.testing.assert_allclose(clip.queries, [[7.0, 5.0], [12.0, 10.0]])  # (row, col) -> (x, y)
    assert clip.truth.frames.tolist() == [0, 2, 4]
    assert clip.truth.visible.tolist() == [[True, True], [True, False], [True, True]]
    assert np.isnan(clip.truth.xy[1, 1]).all()  # the (0, 0) placeholder never survives as a position
    assert clip.K is None


def test_super_loader_errors(super_root):
    (super_root / "rgb" / "000005-left.png").unlink()
    with pytest.raises(InputError, match="no rgb/NNNNNN-left.png"):
        load_super(super_root)
    np.save(super_root / "eva_id.npy", np.array([1, 3]))
    with pytest.raises(InputError, match="2 frame ids but"):
        load_super(super_root)
    (super_root / "eva_id.npy").unlink()
    with pytest.raises(InputError, match="eva_id.npy: file not found"):
        load_super(super_root)
    (super_root / "labelPts.npy").write_bytes(b"not a numpy file")
    with pytest.raises(InputError, match="labelPts.npy: cannot read"):
        load_super(super_root)


@pytest.fixture
def generic(tmp_path):
    folder = tmp_path / "clip"
    _frames(folder, [f"f{i:03d}.png" for i in range(6)])
    return folder


def test_generic_csv_and_json_points(generic, tmp_path):
    csv_path = tmp_path / "points.csv"
    csv_path.write_text("frame,point,x,y,visible\n1,0,3,4,1\n1,1,10,11,1\n3,0,4,5,1\n3,1,,,\n5,1,12,13,0\n")
    clip = load_generic(generic, csv_path)
    assert len(clip) == 5  # tracking starts at the first labelled frame (1)
    assert clip.truth.frames.tolist() == [0, 2, 4]
    np.testing.assert_allclose(clip.queries, [[3, 4], [10, 11]])
    assert clip.truth.visible.tolist() == [[True, True], [True, False], [False, False]]
    json_path = tmp_path / "points.json"
    json_path.write_text(json.dumps({"frames": [0, 2], "xy": [[[1, 2], [3, 4]], [[1.5, 2.5], None]]}))
    clip = load_clip(generic, json_path)
    assert len(clip) == 6 and clip.truth.visible.tolist() == [[True, True], [True, False]]


@pytest.mark.parametrize("text, message", [
    ("f,p,x,y\n0,0,1,1\n", "header must contain"),
    ("frame,point,x,y\n0,0,1,oops\n", r"points.csv:2: bad row"),
    ("frame,point,x,y\n0,0,1,1\n2,1,3,3\n", "must label every point"),
    ("frame,point,x,y\n0,0,1,1\n9,0,1,1\n", "only 6 frames"),
])
def test_generic_points_errors(generic, tmp_path, text, message):
    path = tmp_path / "points.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        load_generic(generic, path)


def test_generic_needs_points_and_rejects_bad_json(generic, tmp_path):
    with pytest.raises(InputError, match="--points is required"):
        load_clip(generic)
    bad = tmp_path / "p.json"
    bad.write_text('{"frames": [0], "xy": [[[1, 2]], [[3, 4]]]}')
    with pytest.raises(InputError, match="bad points JSON"):
        load_clip(generic, bad)
    with pytest.raises(InputError, match="not found"):
        load_clip(generic / "missing")


@pytest.fixture(scope="module")
def toy_seq(tmp_path_factory):
    clip = make_toy_clip(72, 96, frames=6, points=16, seed=4, instrument=True)
    return clip, write_toy_clip(clip, tmp_path_factory.mktemp("synth"), "seq0")


def test_synth_tissue_layout_roundtrip(toy_seq):
    toy, seq = toy_seq
    clip = load_clip(seq)
    np.testing.assert_allclose(clip.K, toy.K, rtol=1e-6)
    np.testing.assert_allclose(clip.gt_depth(2), toy.depth[2], atol=1 / 256)
    assert clip.truth.visible.tolist() == toy.visible.tolist()
    result = track(clip, "graph", "gt", progress=False, occluder_classes=(2,))
    scores = evaluate_tracks(result, clip)
    assert scores["method"]["2d"]["mean_px"] < scores["zero_motion"]["2d"]["mean_px"]
    assert scores["method"]["3d"]["count"] > 0 and scores["edge_points"] is not None
    with pytest.raises(InputError, match="per-frame-median"):
        track(clip, "graph", "gt", scale="per-frame-median", progress=False)


def test_cli_track_writes_tracks_json_video_scores(toy_seq, tmp_path):
    import cv2

    toy, seq = toy_seq
    out = tmp_path / "out"
    assert main(["track", str(seq), "--mode", "graph+flow", "--depth", "gt", "--out", str(out), "--semantic",
                 "--flow-width", "64"]) == 0
    arrays = load_npz(out / "tracks.npz")
    assert arrays["tracks_2d"].shape == (6, 16, 2) and arrays["tracks_3d"].shape == (6, 16, 3)
    doc = json.loads((out / "tracks.json").read_text())
    assert doc["meta"]["mode"] == "graph+flow" and len(doc["visibility"]) == 6
    scores = json.loads((out / "scores.json").read_text())
    assert scores["method"]["2d"]["mean_px"] < scores["zero_motion"]["2d"]["mean_px"]
    cap = cv2.VideoCapture(str(out / "overlay.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    cap.release()
    assert not list(out.glob(".*"))  # no temporary files left behind


def test_cli_track_errors_exit_nonzero(toy_seq, generic, tmp_path, capsys):
    _, seq = toy_seq
    assert main(["track", str(seq), "--mode", "graph", "--out", str(tmp_path / "o")]) == 2
    assert "needs depth" in capsys.readouterr().err
    points = tmp_path / "p.csv"
    points.write_text("frame,point,x,y\n0,0,5,5\n")
    assert main(["track", str(generic), "--points", str(points), "--mode", "flow+lift", "--depth", "gt",
                 "--out", str(tmp_path / "o")]) == 2
    assert "needs camera intrinsics" in capsys.readouterr().err
    assert main(["track", str(generic), "--points", str(points), "--out", str(tmp_path / "o2"), "--no-video"]) == 0
    assert (tmp_path / "o2" / "tracks.npz").is_file() and not (tmp_path / "o2" / "overlay.mp4").exists()


@pytest.mark.slow
def test_track_with_a_depth_checkpoint_fixes_scale_at_first_frame(toy_seq, tmp_path):
    import torch

    from semhint.core.config import from_dict
    from semhint.tracking import depth_source, resolve_scale
    from semhint.training import SemHintModule, save_model_checkpoint

    torch.manual_seed(0)
    cfg = from_dict({"data": {"height": 32, "width": 48}, "model": {"min_depth": 0.1, "max_depth": 100.0}}, "test")
    ckpt = save_model_checkpoint(SemHintModule(cfg), tmp_path / "model.ckpt")
    _, seq = toy_seq
    clip = load_clip(seq)
    assert resolve_scale(clip, str(ckpt), "auto") == "first-frame"
    depth = depth_source(clip, str(ckpt), "auto")
    gt0 = clip.gt_depth(0)
    assert np.median(depth(0)) == pytest.approx(np.median(gt0), rel=1e-3)  # one factor, fixed at frame 0
    result = track(clip, "graph", str(ckpt), progress=False)
    assert np.isfinite(result.xy).all() and np.isfinite(result.xyz).all()
    with pytest.raises(InputError, match="checkpoint"):
        track(clip, "graph", str(tmp_path / "missing.ckpt"), progress=False)
