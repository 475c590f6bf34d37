"""Prediction, point clouds, export and checkpoint errors, on a tiny untrained model (fast)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from semhint.app.cli import main as cli_main
from semhint.app.predict import predict_inputs
from semhint.core import geometry
from semhint.core.config import from_dict
from semhint.core.fileio import InputError
from semhint.export import export_model
from semhint.inference import Predictor, depth_to_point_cloud, load_predictor, write_ply
from semhint.training import SemHintModule, save_model_checkpoint

H, W = 64, 96


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    cfg = from_dict({"data": {"height": H, "width": W}, "model": {"min_depth": 0.1, "max_depth": 100.0}}, "test")
    return save_model_checkpoint(SemHintModule(cfg), tmp_path_factory.mktemp("ckpt") / "model.ckpt")


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_predictor_shapes_and_ranges(checkpoint):
    predictor = load_predictor(checkpoint)
    assert predictor.config.data.height == H
    rgb = _rgb(50, 173)  # any size: resized internally
    disp = predictor.predict_disparity(rgb)
    assert disp.shape == (H, W) and disp.dtype == np.float32
    assert (disp >= 1 / 100 - 1e-6).all() and (disp <= 1 / 0.1 + 1e-6).all()
    depth = predictor.predict_depth(rgb)
    assert depth.shape == (50, 173)
    assert np.isfinite(depth).all() and (depth > 0).all()
    batch = predictor.predict_depth_batch([rgb, _rgb(30, 40, 1)])
    assert [d.shape for d in batch] == [(50, 173), (30, 40)]
    np.testing.assert_allclose(batch[0], depth, rtol=1e-4)


def test_channels_last_predictor_matches_plain_net():
    """On CPU the Predictor runs channels_last; its output equals the plain (contiguous) net's."""
    import copy

    torch.manual_seed(0)
    cfg = from_dict({"data": {"height": H, "width": W}}, "test")
    net = SemHintModule(cfg).depth_net.eval()
    plain = copy.deepcopy(net)
    predictor = Predictor(net, cfg)  # CPU: channels_last by default
    assert predictor.channels_last
    assert next(p for p in predictor.net.parameters() if p.dim() == 4).is_contiguous(memory_format=torch.channels_last)
    rgb = _rgb(H, W, 3)  # network size: no resize, so the plain net sees the same tensor
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
    with torch.inference_mode():
        sigmoid = plain(x)["disp/0"]
        ours = predictor.net(predictor.network_input([rgb]))["disp/0"]
    np.testing.assert_allclose(ours.numpy(), sigmoid.numpy(), atol=1e-5, rtol=0)
    expected, _ = geometry.disp_to_depth(sigmoid, cfg.model.min_depth, cfg.model.max_depth)
    np.testing.assert_allclose(predictor.predict_disparity(rgb), expected[0, 0].numpy(), rtol=1e-5, atol=1e-6)
    contiguous = Predictor(copy.deepcopy(plain), cfg, channels_last=False)
    assert not contiguous.network_input([rgb]).is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_allclose(predictor.predict_depth(rgb), contiguous.predict_depth(rgb), rtol=1e-5)


def test_point_cloud_back_projects_with_K(tmp_path):
    depth = np.full((4, 6), 2.0, np.float32)
    depth[0, 0] = 0  # no measurement: dropped
    K = np.array([[10.0, 0, 2.5], [0, 10.0, 1.5], [0, 0, 1]])
    points, colors = depth_to_point_cloud(depth, K, np.zeros((4, 6, 3), np.uint8))
    assert points.shape == (23, 3) and colors.shape == (23, 3)
    np.testing.assert_allclose(points[:, 2], 2.0)
    # pixel (x=5, y=3) is the last one: X = (5 - 2.5) / 10 * 2
    np.testing.assert_allclose(points[-1], [0.5, 0.3, 2.0], rtol=1e-6)
    for binary in (True, False):
        path = tmp_path / f"cloud_{binary}.ply"
        write_ply(path, points, colors, binary=binary)
        head = path.read_bytes()[:200]
        assert b"element vertex 23" in head
        assert (b"binary_little_endian" in head) == binary


def test_predict_image_folder_and_video(checkpoint, tmp_path):
    import cv2
    from PIL import Image

    image = tmp_path / "in" / "frame.png"
    image.parent.mkdir()
    Image.fromarray(_rgb(40, 120)).save(image)
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (80, 48))
    for i in range(3):
        writer.write(_rgb(48, 80, i))
    writer.release()
    intr = tmp_path / "K.yaml"
    intr.write_text("fx: 50\nfy: 50\ncx: 59.5\ncy: 19.5\nwidth: 120\nheight: 40\n")
    out = tmp_path / "out"
    summary = predict_inputs(checkpoint, [image], out, ply=True, intrinsics=str(intr))
    assert summary["frames"] == 1
    depth = np.load(out / "frame_depth.npy")
    assert depth.shape == (40, 120)
    assert (out / "frame_depth.png").is_file() and (out / "frame_preview.png").is_file()
    assert b"element vertex" in (out / "frame.ply").read_bytes()[:200]
    summary = predict_inputs(checkpoint, [image.parent, video], out)
    assert summary["frames"] == 4
    assert np.load(out / "clip" / "000002_depth.npy").shape == (48, 80)
    assert (out / "in" / "frame_depth.npy").is_file()
    cap = cv2.VideoCapture(str(out / "clip_depth.mp4"))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    assert int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 160  # input | depth side by side
    cap.release()
    assert json.loads((out / "predict_summary.json").read_text())["frames"] == 4


def test_predict_errors(checkpoint, tmp_path):
    bad_video = tmp_path / "broken.mp4"
    bad_video.write_bytes(b"not a video at all")
    with pytest.raises(InputError, match="cannot read video"):
        predict_inputs(checkpoint, [bad_video], tmp_path / "o")
    image = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(_rgb(8, 8)).save(image)
    with pytest.raises(InputError, match="--intrinsics"):
        predict_inputs(checkpoint, [image], tmp_path / "o", ply=True)
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    with pytest.raises(InputError, match="unsupported input"):
        predict_inputs(checkpoint, [notes], tmp_path / "o")


@pytest.mark.parametrize("content,match", [
    (None, "checkpoint not found"),
    (b"garbage bytes", "not a readable PyTorch checkpoint"),
    ("foreign", "not a semhint checkpoint"),
])
def test_bad_checkpoints_are_clear_errors(tmp_path, content, match):
    path = tmp_path / "model.ckpt"
    if content == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(1)}}, path)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=match):
        load_predictor(path)
    assert cli_main(["predict", str(path), str(tmp_path), "--out", str(tmp_path / "o")]) == 2


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_pytorch(checkpoint, tmp_path, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    result = export_model(checkpoint, fmt, tmp_path / f"depth.{fmt}")
    assert result["max_abs_diff"] < 1e-4
    assert (tmp_path / f"depth.{fmt}").stat().st_size > 1000
