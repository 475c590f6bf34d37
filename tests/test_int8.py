"""The int8 path (issue 22, item 2): `semhint export --format onnx --int8 FRAMES` writes a quantised ONNX file
that ONNX Runtime loads and whose depth stays close to the float model's, and `semhint predict MODEL.onnx`
runs such a file (or the float one) end to end. No timings are asserted here: benchmarks/bench_inference.py
measures them.

The model is the test_export_parity recipe at a small size: a ResNet-18 depth net with its decoder weights
x 2, so that depth varies about 1.5-fold over a rendered frame (as initialised it is nearly constant, and
any tolerance would be met by a broken quantisation too). Calibration and test frames are rendered
SynthDrive frames, distinct from one another.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from semhint.app.cli import main as cli_main
from semhint.app.predict import predict_inputs
from semhint.core.config import from_dict
from semhint.core.errors import InputError
from semhint.core.fileio import save_image
from semhint.export import INT8_FLOAT_NODES, export_model, load_onnx_predictor
from semhint.inference import load_predictor
from semhint.training import SemHintModule, save_model_checkpoint

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

H, W = 64, 192


def _render(n: int, first: int) -> list[np.ndarray]:
    """``n`` SynthDrive frames (uint8 RGB, 96 x 288: larger than the network, like a camera's)."""
    from semhint.data.synthetic import build_drive_scene, drive
    from semhint.data.synthetic.writer import to_uint8

    cfg = drive.DriveConfig(height=96, width=288, frames=first + n, seed=0)
    scene = build_drive_scene(cfg, 3)
    return [to_uint8(drive.render_frame(scene, cfg, i)["image"]) for i in range(first, first + n)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    """A checkpoint, a folder of 6 calibration frames, a folder of 2 other frames, and the int8 and float
    files written by the CLI."""
    root = tmp_path_factory.mktemp("int8")
    torch.manual_seed(0)
    cfg = from_dict({"data": {"height": H, "width": W}, "model": {"encoder": "resnet18"}}, "int8 test")
    module = SemHintModule(cfg)
    with torch.no_grad():
        for name, p in module.depth_net.named_parameters():
            if "decoder" in name and p.dim() > 1:
                p.mul_(2.0)
    files = {"ckpt": save_model_checkpoint(module, root / "model.ckpt"), "calib": root / "calib",
             "frames": root / "frames", "int8": root / "out" / "depth.int8.onnx", "float": root / "out" / "depth.onnx"}
    frames = _render(8, 0)
    for i, rgb in enumerate(frames[:6]):
        save_image(files["calib"] / f"{i:03d}.png", rgb)
    for i, rgb in enumerate(frames[6:]):
        save_image(files["frames"] / f"{i:03d}.png", rgb)
    assert cli_main(["export", str(files["ckpt"]), "--format", "onnx", "--int8", str(files["calib"]),
                     "--out", str(files["int8"])]) == 0
    assert cli_main(["export", str(files["ckpt"]), "--format", "onnx", "--out", str(files["float"])]) == 0
    return files


def _rel_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a / b - 1)


def test_int8_file_loads_in_onnxruntime_and_is_quantised(setup):
    path = setup["int8"]
    assert path.is_file() and not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp file left
    model = onnx.load(str(path))
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    # the disparity head stays float: its sigmoid is neither fed nor followed by a quantisation
    sigmoid = [n for n in model.graph.node if n.op_type == "Sigmoid"]
    assert len(sigmoid) == 1 and re.search(INT8_FLOAT_NODES, sigmoid[0].name)
    assert not [n for n in model.graph.node if n.op_type == "QuantizeLinear" and sigmoid[0].output[0] in n.input]
    assert path.stat().st_size < 0.4 * setup["float"].stat().st_size  # int8 weights: about a quarter
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["precision"].startswith("int8") and meta["calibration_frames"] == "6"
    assert meta["input_size"] == f"{H}x{W}" and "RGB" in meta["input"] and meta["dynamic_hw"] == "true"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((2, 3, H + 32, W + 64), dtype=np.float32)  # batch and size are dynamic
    assert session.run(None, {"image": x})[0].shape == (2, 1, H + 32, W + 64)


def test_int8_depth_is_close_to_the_float_model_on_frames_it_was_not_calibrated_on(setup):
    predictor = load_predictor(setup["ckpt"])
    int8 = load_onnx_predictor(setup["int8"], threads=1)
    assert int8.precision == "int8" and int8.size == (H, W) and int8.unit == "m"
    for rgb in _render(2, 6):
        expected = predictor.predict_depth(rgb)
        assert np.percentile(expected, 95) / np.percentile(expected, 5) > 1.3  # depth varies: the check has teeth
        got = int8.predict_depth(rgb)
        assert got.shape == expected.shape == rgb.shape[:2]
        rel = _rel_diff(got, expected)
        # quantised (not float in disguise), and close: wrong ranges or scales are far off
        assert 1e-4 < np.median(rel) < 0.015 and np.percentile(rel, 95) < 0.04


def test_export_reports_the_int8_difference(setup, tmp_path):
    result = export_model(setup["ckpt"], "onnx", tmp_path / "q.onnx", int8=[setup["calib"]])
    assert result["precision"] == "int8" and result["calibration_frames"] == 6 and result["dynamic_hw"] is True
    assert 0 < result["depth_rel_diff_median"] < 0.015 and result["depth_rel_diff_p95"] < 0.04
    assert export_model(setup["ckpt"], "onnx", tmp_path / "f.onnx")["precision"] == "float32"


@pytest.mark.parametrize("which", ["int8", "float"])
def test_predict_runs_an_onnx_file_end_to_end(setup, tmp_path, which, capsys):
    out = tmp_path / "out"
    assert cli_main(["predict", str(setup[which]), str(setup["frames"]), "--out", str(out)]) == 0
    assert "predicted 2 frame(s)" in capsys.readouterr().out
    reference = predict_inputs(setup["ckpt"], [setup["frames"]], tmp_path / "ref")
    summary = json.loads((out / "predict_summary.json").read_text())
    assert summary["frames"] == 2 and summary["runtime"] == f"ONNX Runtime ({'int8' if which == 'int8' else 'float32'})"
    assert reference["runtime"].startswith("PyTorch") and summary["depth_unit"] == reference["depth_unit"]
    for i in range(2):
        depth = np.load(out / "frames" / f"{i:03d}_depth.npy")
        expected = np.load(tmp_path / "ref" / "frames" / f"{i:03d}_depth.npy")
        assert depth.shape == expected.shape == (96, 288)
        assert (out / "frames" / f"{i:03d}_depth.png").is_file() and (out / "frames" / f"{i:03d}_preview.png").is_file()
        if which == "float":
            np.testing.assert_allclose(depth, expected, rtol=1e-3)
        else:
            assert np.median(_rel_diff(depth, expected)) < 0.015


def _one_line_error(capsys, argv: list[str], *fragments: str) -> None:
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err


def test_bad_int8_flags_are_one_line_errors(setup, tmp_path, capsys):
    ckpt = str(setup["ckpt"])
    _one_line_error(capsys, ["export", ckpt, "--format", "torchscript", "--int8", str(setup["calib"])],
                    "--int8", "--format onnx")
    _one_line_error(capsys, ["export", ckpt, "--format", "onnx", "--int8", str(tmp_path / "missing")],
                    str(tmp_path / "missing"), "not found")
    few = tmp_path / "few"
    save_image(few / "a.png", np.zeros((20, 30, 3), np.uint8))
    _one_line_error(capsys, ["export", ckpt, "--format", "onnx", "--int8", str(few)], str(few), "at least 4 frames")
    (tmp_path / "notes.txt").write_text("x")
    _one_line_error(capsys, ["export", ckpt, "--format", "onnx", "--int8", str(tmp_path / "notes.txt")],
                    "notes.txt", "unsupported")
    assert not list(tmp_path.glob("*.onnx"))


def test_bad_onnx_models_are_one_line_errors(setup, tmp_path, capsys):
    frames, out = str(setup["frames"]), str(tmp_path / "out")
    _one_line_error(capsys, ["predict", str(tmp_path / "none.onnx"), frames, "--out", out], "none.onnx", "not found")
    (tmp_path / "garbage.onnx").write_bytes(b"not a protobuf")
    _one_line_error(capsys, ["predict", str(tmp_path / "garbage.onnx"), frames, "--out", out], "garbage.onnx",
                    "not a readable ONNX file")
    # a valid ONNX file that `semhint export` did not write: no metadata saying how to use it
    foreign = onnx.load(str(setup["float"]))
    del foreign.metadata_props[:]
    onnx.save(foreign, str(tmp_path / "foreign.onnx"))
    _one_line_error(capsys, ["predict", str(tmp_path / "foreign.onnx"), frames, "--out", out], "foreign.onnx",
                    "semhint export")
    _one_line_error(capsys, ["predict", str(setup["int8"]), frames, "--out", out, "--device", "cuda"],
                    "--device cuda", "CPU")
    with pytest.raises(InputError, match="foreign.onnx"):
        load_onnx_predictor(tmp_path / "foreign.onnx")
