"""Outputs people can use (issue 21, item 7): range-scaled 16-bit depth PNGs that say their scale,
PLY units, ONNX files that say how to use them, `track` printing the 3D error."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from semhint.app.predict import predict_inputs
from semhint.app.track import score_lines
from semhint.core.config import from_dict
from semhint.core.errors import SemhintWarning
from semhint.core.fileio import (
    DEPTH_SCALE_KEY,
    InputError,
    depth_png_scale,
    read_scaled_depth_png,
    save_image,
    write_scaled_depth_png,
)
from semhint.export import export_model
from semhint.training import SemHintModule, save_model_checkpoint

H, W = 64, 96


def _checkpoint(folder, encoder: str = "resnet18"):
    torch.manual_seed(0)
    cfg = from_dict({"data": {"height": H, "width": W}, "model": {"encoder": encoder, "pose_encoder": encoder}}, "t")
    return save_model_checkpoint(SemHintModule(cfg), folder / f"{encoder}.ckpt")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("outputs"))


def test_scaled_depth_png_uses_the_range_and_reads_back():
    depth = np.linspace(0.1, 0.4, 50 * 60, dtype=np.float32).reshape(50, 60)  # relative depth, as a model gives
    depth[0, 0] = 0.0  # invalid
    scale = depth_png_scale(depth)
    assert scale == pytest.approx(65535 / 0.4)
    raw_levels = len(np.unique(np.round(depth[depth > 0] * 256)))  # the old fixed KITTI scale
    assert raw_levels < 100


def test_scaled_depth_png_round_trip(tmp_path):
    depth = np.random.default_rng(0).uniform(0.1, 0.4, (30, 40)).astype(np.float32)
    meta = write_scaled_depth_png(tmp_path / "d.png", depth, depth_png_scale(depth), unit="m")
    back = read_scaled_depth_png(tmp_path / "d.png")
    assert np.abs(back - depth).max() <= 0.5 / meta["scale"] + 1e-7
    with Image.open(tmp_path / "d.png") as im:
        assert im.text[DEPTH_SCALE_KEY] and im.text["semhint:depth_unit"] == "m"
    save_image(tmp_path / "plain.png", np.zeros((4, 4), np.uint16))
    with pytest.raises(InputError, match="plain.png"):
        read_scaled_depth_png(tmp_path / "plain.png")


def test_predict_writes_recoverable_png_sidecar_and_ply_units(checkpoint, tmp_path):
    frames = tmp_path / "frames"
    for i in range(2):
        save_image(frames / f"{i:03d}.png", np.random.default_rng(i).integers(0, 256, (40, 60, 3), dtype=np.uint8))
    with pytest.warns(SemhintWarning, match="horizontal field of view of 90 degrees"):
        summary = predict_inputs(checkpoint, [frames], tmp_path / "out", ply=True, fov=90.0)
    out = tmp_path / "out" / "frames"
    exact = np.load(out / "000_depth.npy")
    sidecar = json.loads((out / "000_depth.json").read_text())
    assert sidecar["unit"] == "m" and sidecar["depth"] == "value / scale"
    raw = np.asarray(Image.open(out / "000_depth.png")).astype(np.float64)
    assert raw.max() == 65535  # the frame's largest depth uses the whole range
    np.testing.assert_allclose(raw / sidecar["scale"], exact, atol=0.5 / sidecar["scale"] + 1e-6)
    np.testing.assert_allclose(read_scaled_depth_png(out / "000_depth.png"), exact, atol=0.5 / sidecar["scale"] + 1e-6)
    header = (out / "000.ply").read_bytes().split(b"end_header")[0].decode()
    assert "comment semhint depth: x y z in m" in header and "z forward" in header
    assert summary["depth_unit"] == "m" and "90" in summary["intrinsics"]


def test_predict_ply_without_intrinsics_or_fov_is_an_error(checkpoint, tmp_path):
    save_image(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(InputError, match="--fov"):
        predict_inputs(checkpoint, [tmp_path / "a.png"], tmp_path / "out", ply=True)
    with pytest.raises(InputError, match="0 < fov < 180"):
        predict_inputs(checkpoint, [tmp_path / "a.png"], tmp_path / "out", ply=True, fov=200.0)


def _metadata(path) -> dict[str, str]:
    onnx = pytest.importorskip("onnx")
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_onnx_export_says_how_to_use_it_and_has_dynamic_size(checkpoint, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    result = export_model(checkpoint, "onnx", tmp_path / "depth.onnx")
    assert result["max_abs_diff"] < 1e-4 and result["dynamic_hw"] is True
    meta = _metadata(tmp_path / "depth.onnx")
    assert "RGB" in meta["input"] and "[0, 1]" in meta["input"] and "NCHW" in meta["input"]
    assert meta["input_size"] == f"{H}x{W}" and meta["dynamic_hw"] == "true"
    assert float(meta["min_depth"]) == 0.1 and float(meta["max_depth"]) == 100.0 and meta["depth_unit"] == "m"
    session = ort.InferenceSession(str(tmp_path / "depth.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 3, H + 64, W + 32), dtype=np.float32)
    out = session.run(None, {"image": x})[0]
    assert out.shape == (1, 1, H + 64, W + 32)
    # the recipe in the metadata gives the predictor's depth
    lo, hi = float(meta["min_depth"]), float(meta["max_depth"])
    depth = 1.0 / (1.0 / hi + (1.0 / lo - 1.0 / hi) * out)
    assert np.isfinite(depth).all() and depth.min() >= lo - 1e-4 and depth.max() <= hi + 1e-3


def test_onnx_export_keeps_a_fixed_size_where_the_graph_is_traced_to_it(tmp_path):
    pytest.importorskip("onnxruntime")
    result = export_model(_checkpoint(tmp_path, "efficientnet_lite0"), "onnx", tmp_path / "lite.onnx")
    assert result["max_abs_diff"] < 1e-4
    assert result["dynamic_hw"] is False and _metadata(tmp_path / "lite.onnx")["dynamic_hw"] == "false"


def test_track_prints_the_3d_error_when_it_has_one():
    stats = {"count": 3, "mean_px": 1.5, "median_px": 1.0, "mean_mm": 2.25, "median_mm": 2.0, "delta_avg": 0.5}
    scores = {"method": {"2d": stats, "3d": stats}, "zero_motion": {"2d": stats}}
    lines = score_lines(scores)
    assert lines[0].startswith("2D error 1.50 px") and "zero motion 1.50 px" in lines[0]
    assert lines[1].startswith("3D error 2.25 mm") and "zero motion" not in lines[1]
    assert len(score_lines({"method": {"2d": stats}, "zero_motion": {"2d": stats}})) == 1
