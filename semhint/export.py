"""The depth network alone as an ONNX or TorchScript file, with a dynamic batch axis, verified after writing.

Verification runs the written file and PyTorch on a random batch of 2 (the export traced batch 1,
so this also proves the batch axis is dynamic) and reports the largest absolute difference.

An ONNX file also says how to use it, in its ``metadata_props`` (:func:`onnx_metadata`): the input
format (RGB, float32 in [0, 1], NCHW, the trained size) and how the output (sigmoid disparity)
becomes depth (the min/max depth of the conversion). Height and width are dynamic when the network
allows it: the export is tried with free H x W and checked at a second size; a network whose
padding depends on the traced size (EfficientNet's "same" padding) is exported at its fixed size.

``int8`` (``semhint export --format onnx --int8 FRAMES``) quantises the ONNX graph statically with
ONNX Runtime: weights int8 per output channel, activations uint8 with ranges calibrated on frames
the user passes (images, folders or videos of the kind the model will see), in the QDQ format that
ONNX Runtime fuses into integer kernels. The layers where 8 bits measurably cost depth accuracy stay
float (:data:`INT8_FLOAT_NODES`: the disparity head, the encoder's first layers, the decoder's
concatenations and two of its stages). The int8 file is verified on two of the calibration frames
against PyTorch (the relative depth difference is reported).

:class:`OnnxPredictor` runs either file with ONNX Runtime (all graph optimisations on), with the
same pre- and post-processing as :class:`semhint.inference.Predictor`: ``semhint predict
MODEL.onnx`` uses it.
"""

from __future__ import annotations

import contextlib
import io
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from semhint.core import geometry
from semhint.core.config import Config
from semhint.core.errors import InputError
from semhint.core.fileio import atomic_path
from semhint.core.version import __version__
from semhint.data.media import classify_inputs, iter_frames
from semhint.inference import Predictor, load_depth_net, load_predictor, network_batch

FORMATS = ("onnx", "torchscript")
# Nodes (a regular expression on their names) that int8 keeps float, where 8 bits measurably cost depth
# accuracy (int8 one layer group at a time on a trained SynthDrive model: `benchmarks/bench_inference.py
# --sensitivity`): the disparity head (an 8-bit sigmoid would give 256 depth levels), the input
# normalisation and the encoder's stride-2/4 layers (stem, ResNet layer1, Lite0 blocks 0-3), the decoder's concatenations (one scale for a
# skip feature and an upsampled one) and its full-resolution and stride-8 stages (upconv_0_*, upconv_3_*).
INT8_FLOAT_NODES = (r"disp_heads|decoder/(depth|seg)/Concat|upconv_[03]_"
                    r"|encoder/(normalize|stem|act/|blocks\.[0-3]/|conv1|bn1|relu|maxpool|layer1/)")
CALIBRATION_PERCENTILE = 99.99  # activation range: this percentile of the calibration frames' values
MAX_CALIBRATION_FRAMES = 32  # more frames are subsampled evenly: ranges settle well before that
MIN_CALIBRATION_FRAMES = 4
METADATA_REQUIRED = ("input_size", "min_depth", "max_depth", "depth_unit")


class DisparityOnly(torch.nn.Module):
    """The depth network with a single tensor output (sigmoid disparity at scale 0) for export."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)["disp/0"]


def export_model(checkpoint: str | Path, fmt: str, out: str | Path | None = None, seed: int = 0,
                 int8: list[str | Path] | None = None) -> dict:
    """The depth net alone as ONNX or TorchScript, dynamic batch, verified.

    Verification runs the exported model and PyTorch on a random batch of 2 (the export traced
    batch 1, so this also proves the batch axis is dynamic) and reports the max absolute difference.
    ``int8``: image files, folders or videos whose frames calibrate an int8 ONNX file (ONNX only);
    it is verified on two of them instead, with the relative depth difference to PyTorch reported.
    """
    if fmt not in FORMATS:
        raise InputError(f"--format must be onnx or torchscript, got {fmt!r}")
    if int8 is not None and fmt != "onnx":
        raise InputError(f"--int8 quantises an ONNX file: use it with --format onnx, not --format {fmt}")
    sources = classify_inputs(int8) if int8 is not None else None  # a bad path fails before any work
    cfg, net = load_depth_net(checkpoint)
    model = DisparityOnly(net).eval()
    h, w = cfg.data.height, cfg.data.width
    suffix = ".onnx" if fmt == "onnx" else ".pt"
    out = Path(out) if out is not None else Path(checkpoint).with_suffix(".int8.onnx" if int8 else suffix)
    example = torch.rand(1, 3, h, w)
    test = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(seed))
    result = {"format": fmt, "path": str(out), "input": [-1, 3, h, w], "precision": "int8" if int8 else "float32"}
    if sources is not None:
        frames = calibration_frames(sources, (h, w))
        test = torch.from_numpy(np.concatenate(frames[:2]))
    with torch.inference_mode():
        expected = model(test).numpy()
    if fmt == "onnx":
        if sources is not None:
            got, dynamic_hw = _export_onnx_int8(model, example, frames, out, cfg, test.numpy())
            result.update(calibration_frames=len(frames), **depth_difference(got, expected, cfg))
        else:
            got, dynamic_hw = _export_onnx(model, example, test, out, cfg)
        result["dynamic_hw"] = dynamic_hw
    else:
        got = _export_torchscript(model, example, test, out)
    result["max_abs_diff"] = float(np.abs(got - expected).max())
    return result


def depth_difference(sigmoid: np.ndarray, reference: np.ndarray, cfg_or_range) -> dict[str, float]:
    """Median and 95th percentile over pixels of |depth / reference depth - 1| for two disparity
    (sigmoid) outputs of the same images; ``cfg_or_range``: a Config or (min_depth, max_depth)."""
    lo, hi = ((cfg_or_range.model.min_depth, cfg_or_range.model.max_depth) if isinstance(cfg_or_range, Config)
              else cfg_or_range)
    _, depth = geometry.disp_to_depth(torch.from_numpy(np.asarray(sigmoid, np.float32)), lo, hi)
    _, ref = geometry.disp_to_depth(torch.from_numpy(np.asarray(reference, np.float32)), lo, hi)
    rel = (depth / ref - 1).abs().flatten().numpy()
    return {"depth_rel_diff_median": float(np.median(rel)), "depth_rel_diff_p95": float(np.percentile(rel, 95))}


def calibration_frames(sources, size: tuple[int, int], limit: int = MAX_CALIBRATION_FRAMES) -> list[np.ndarray]:
    """Up to ``limit`` frames, evenly spaced over all of ``sources`` (paths or
    :func:`~semhint.data.media.classify_inputs` sources), as 1 x 3 x h x w float32 network inputs
    pre-processed exactly as :class:`~semhint.inference.Predictor` does. Frames are read once and at
    most ``2 * limit`` are held (every ``stride``-th, the stride doubling as they come), so a long
    video costs no memory."""
    if sources and not hasattr(sources[0], "kind"):
        sources = classify_inputs(sources)
    kept: list[np.ndarray] = []
    stride, index = 1, 0
    for source in sources:
        for name, rgb in iter_frames(source):
            if index % stride == 0:
                try:
                    kept.append(network_batch([rgb], size).numpy())
                except InputError as exc:
                    raise InputError(f"--int8 {source.path} ({name}): {exc}") from None
                if len(kept) == 2 * limit:
                    kept, stride = kept[::2], stride * 2
            index += 1
    if len(kept) < MIN_CALIBRATION_FRAMES:
        where = ", ".join(str(s.path) for s in sources)
        raise InputError(f"--int8 {where}: {len(kept)} frame(s); calibration needs at least "
                         f"{MIN_CALIBRATION_FRAMES} frames like those the model will see (8 to {limit} is typical)")
    return [kept[i] for i in np.unique(np.linspace(0, len(kept) - 1, min(limit, len(kept))).round().astype(int))]


def onnx_metadata(cfg: Config, dynamic_hw: bool = False) -> dict[str, str]:
    """What a user of the ONNX file needs and cannot read from the graph: input format and output meaning."""
    m = cfg.model
    return {
        "semhint_version": __version__,
        "input": "image: float32 N x 3 x H x W (NCHW), RGB channel order (not BGR), values in [0, 1] (uint8 / 255)",
        "input_size": f"{cfg.data.height}x{cfg.data.width}",
        "input_size_note": ("trained at HEIGHTxWIDTH = input_size; other sizes run (dynamic height/width), "
                            "multiples of 32 are safest" if dynamic_hw else
                            "fixed: resize images to HEIGHTxWIDTH = input_size first"),
        "dynamic_hw": str(dynamic_hw).lower(),
        "output": "disparity: float32 N x 1 x H x W, the network's sigmoid output in [0, 1]",
        "output_to_depth": ("scaled = 1/max_depth + (1/min_depth - 1/max_depth) * disparity; depth = 1 / scaled "
                            "(in depth_unit, up to one unknown monocular scale factor)"),
        "min_depth": repr(float(m.min_depth)),
        "max_depth": repr(float(m.max_depth)),
        "depth_unit": cfg.data.unit,
    }


def _onnx_runtime():
    try:
        import onnxruntime as ort  # lazy: an optional extra (semhint[onnx])
    except ImportError:
        raise InputError("ONNX export and ONNX models need the onnx extra: pip install 'semhint[onnx]'") from None
    return ort


def onnx_session(path: str | Path, threads: int = 0):
    """An ONNX Runtime CPU session with every graph optimisation on (constant folding, node fusions,
    the NCHWc layout for float convolutions, QDQ pairs fused into integer kernels); ``threads``:
    intra-op threads (0 = ONNX Runtime's default, one per physical core)."""
    ort = _onnx_runtime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: ORT's own warnings (unused initialisers...) are not the user's
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types (InvalidProtobuf, Fail, NoSuchFile)
        if not Path(path).is_file():
            raise InputError(f"{path}: ONNX file not found") from None
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise InputError(f"{path}: not a readable ONNX file ({first})") from None


def _write_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path, dynamic_hw: bool) -> None:
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_hw else {0: "batch"}
    with warnings.catch_warnings():
        # the TorchScript-based exporter (dynamo=False: no onnxscript graph capture needed) warns
        # about its own deprecation and constant folding; the max-diff checks are what count
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), input_names=["image"], output_names=["disparity"],
                          dynamic_axes={"image": axes, "disparity": axes}, opset_version=17, dynamo=False)


def _hw_really_dynamic(model: torch.nn.Module, session, example: torch.Tensor, tol: float = 1e-4) -> bool:
    """Whether the exported graph matches PyTorch at a size it was not traced at (a graph can run at
    another size and still be wrong there: traced padding)."""
    _, _, h, w = example.shape
    other = torch.rand(1, 3, h + 32, w + 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = model(other).numpy()
    try:
        got = session.run(None, {"image": other.numpy()})[0]
    except Exception:  # onnxruntime raises its own types for a shape the graph cannot take
        return False
    return got.shape == expected.shape and float(np.abs(got - expected).max()) < tol


def _add_metadata(path: Path, metadata: dict[str, str]) -> None:
    import onnx  # lazy: an optional extra (semhint[onnx])
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def _export_onnx(model: torch.nn.Module, example: torch.Tensor, test: torch.Tensor, out: Path,
                 cfg: Config) -> tuple[np.ndarray, bool]:
    """Write the ONNX file (dynamic height/width when it verifies at a second size), with metadata;
    returns (its output on ``test``, whether height/width are dynamic)."""
    ort = _onnx_runtime()
    with atomic_path(out, suffix=".onnx") as tmp:
        _write_onnx(model, example, tmp, dynamic_hw=True)
        dynamic_hw = _hw_really_dynamic(model, ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"]),
                                        example)
        if not dynamic_hw:
            _write_onnx(model, example, tmp, dynamic_hw=False)
        _add_metadata(tmp, onnx_metadata(cfg, dynamic_hw))
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        return session.run(None, {"image": test.numpy()})[0], dynamic_hw


def _export_onnx_int8(model: torch.nn.Module, example: torch.Tensor, frames: list[np.ndarray], out: Path, cfg: Config,
                      test: np.ndarray) -> tuple[np.ndarray, bool]:
    """Write the float graph to a scratch folder, quantise it to int8 (static, calibrated on ``frames``)
    into ``out`` (through a temp file), with metadata; returns (its output on ``test``, dynamic H x W)."""
    ort = _onnx_runtime()
    with tempfile.TemporaryDirectory(prefix="semhint-int8-") as scratch, atomic_path(out, suffix=".onnx") as tmp:
        fp32 = Path(scratch) / "float.onnx"
        _write_onnx(model, example, fp32, dynamic_hw=True)
        dynamic_hw = _hw_really_dynamic(model, ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]),
                                        example)
        if not dynamic_hw:
            _write_onnx(model, example, fp32, dynamic_hw=False)
        quantize_int8(fp32, tmp, frames, scratch=Path(scratch))
        metadata = onnx_metadata(cfg, dynamic_hw)
        metadata.update(precision=("int8: static quantisation (ONNX Runtime QDQ), weights int8 per output channel, "
                                   f"activations uint8 ({CALIBRATION_PERCENTILE:g}th percentile ranges); the disparity head, the "
                                   "encoder's first layers and some decoder layers stay float32"),
                        calibration_frames=str(len(frames)))
        _add_metadata(tmp, metadata)
        return onnx_session(tmp).run(None, {"image": test})[0], dynamic_hw


def quantize_int8(fp32: str | Path, out: str | Path, frames: list[np.ndarray], scratch: Path | None = None,
                  keep_float: str = INT8_FLOAT_NODES, percentile: float = CALIBRATION_PERCENTILE) -> None:
    """Static int8 quantisation of a float ONNX depth graph with ONNX Runtime.

    QDQ format, int8 weights per output channel, uint8 activations whose ranges are calibrated on
    ``frames`` (1 x 3 x h x w float32 network inputs): the ``percentile`` of each activation's
    histogram over the frames (a rare outlier would otherwise stretch the range and coarsen every
    other value), one frame at a time so memory stays that of one frame. Nodes whose names match
    ``keep_float`` (a regular expression; :data:`INT8_FLOAT_NODES`) stay float. The graph is first
    cleaned up the way ONNX Runtime recommends (shape inference, constant folding: ``quant_pre_process``).
    """
    _onnx_runtime()
    from onnxruntime.quantization import (  # lazy: an optional extra (semhint[onnx])
        CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process  # lazy: an optional extra (semhint[onnx])
    import onnx  # lazy: an optional extra (semhint[onnx])

    class _Frames(CalibrationDataReader):
        """The frames, handed out in the index ranges the calibrator asks for (``CalibStridedMinMax``)."""

        def __init__(self):
            self._items: list[np.ndarray] = []

        def __len__(self) -> int:
            return len(frames)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._items = list(frames[start_index:end_index])

        def get_next(self):
            return {"image": self._items.pop(0)} if self._items else None

    with tempfile.TemporaryDirectory(prefix="semhint-quant-", dir=scratch) as folder:
        prepared = Path(folder) / "prepared.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(str(fp32), str(prepared))
        names = [node.name for node in onnx.load(str(prepared)).graph.node]
        exclude = [n for n in names if re.search(keep_float, n)]
        with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrator prints its progress
            quantize_static(str(prepared), str(out), _Frames(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                            calibrate_method=CalibrationMethod.Percentile, nodes_to_exclude=exclude,
                            extra_options={"CalibPercentile": percentile, "CalibStridedMinMax": 1})


def _export_torchscript(model: torch.nn.Module, example: torch.Tensor, test: torch.Tensor, out: Path) -> np.ndarray:
    with atomic_path(out, suffix=".pt") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated but still the TorchScript path
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # size-dependent padding: H x W are fixed by design
        with torch.no_grad():
            traced = torch.jit.trace(model, example, check_trace=False)
        traced.save(str(tmp))
        loaded = torch.jit.load(str(tmp))
        with torch.inference_mode():
            return loaded(test).numpy()


# ----------------------------------------------------------------------------------------------
# running an exported ONNX file
# ----------------------------------------------------------------------------------------------
class OnnxPredictor:
    """Depth for RGB images of any size from an ONNX file written by ``semhint export`` (float or int8),
    run by ONNX Runtime on the CPU with every graph optimisation on.

    The file's ``metadata_props`` give the network size, the depth range and unit; pre-processing
    (resize, [0, 1]) and post-processing (upsample the disparity, then invert) are those of
    :class:`semhint.inference.Predictor`, so the two give the same depth up to the graph's own
    precision. ``threads``: ONNX Runtime intra-op threads (0 = one per physical core).
    """

    def __init__(self, path: str | Path, threads: int = 0):
        self.path = Path(path)
        self.session = onnx_session(self.path, threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        missing = [key for key in METADATA_REQUIRED if key not in meta]
        if missing or [i.name for i in self.session.get_inputs()] != ["image"]:
            raise InputError(f"{path}: not an ONNX file written by `semhint export` (no {missing[0] if missing else 'image'}"
                             f" {'metadata' if missing else 'input'}); export the checkpoint with `semhint export`")
        try:
            h, w = (int(v) for v in meta["input_size"].split("x"))
            self.min_depth, self.max_depth = float(meta["min_depth"]), float(meta["max_depth"])
        except ValueError:
            raise InputError(f"{path}: unreadable metadata (input_size {meta['input_size']!r}, min_depth "
                             f"{meta['min_depth']!r}, max_depth {meta['max_depth']!r})") from None
        self.size = (h, w)
        self.unit = meta["depth_unit"]
        self.precision = "int8" if meta.get("precision", "").startswith("int8") else "float32"
        self.metadata = dict(meta)

    def network_input(self, images: list[np.ndarray], bgr: bool = False) -> np.ndarray:
        """B x 3 x h x w float32 in [0, 1] at network resolution (:func:`semhint.inference.network_batch`)."""
        return network_batch(images, self.size, bgr).numpy()

    def _scaled_disparity(self, images: list[np.ndarray], bgr: bool = False) -> torch.Tensor:
        sigmoid = self.session.run(None, {"image": self.network_input(images, bgr)})[0]
        scaled, _ = geometry.disp_to_depth(torch.from_numpy(sigmoid), self.min_depth, self.max_depth)
        return scaled

    def predict_disparity_batch(self, images: list[np.ndarray]) -> np.ndarray:
        """Scaled disparity (B x h x w) at network resolution: what the evaluation protocols resize themselves."""
        return self._scaled_disparity(images)[:, 0].numpy()

    def predict_depth(self, rgb: np.ndarray, bgr: bool = False) -> np.ndarray:
        """Depth (H x W float32, the model's unit, up to the monocular scale) at the input image's size."""
        return self.predict_depth_batch([rgb], bgr)[0]

    def predict_depth_batch(self, images: list[np.ndarray], bgr: bool = False) -> list[np.ndarray]:
        scaled = self._scaled_disparity(images, bgr)
        return [Predictor._upsampled_depth(disp, rgb.shape[:2]) for disp, rgb in zip(scaled, images)]


def load_onnx_predictor(path: str | Path, threads: int = 0) -> OnnxPredictor:
    """An :class:`OnnxPredictor` for a file written by ``semhint export``; InputError for anything else."""
    if not Path(path).is_file():
        raise InputError(f"{path}: ONNX file not found")
    return OnnxPredictor(path, threads)


def load_any_predictor(path: str | Path, device: str = "cpu") -> Predictor | OnnxPredictor:
    """A checkpoint's Predictor, or for a ``.onnx`` file (``semhint export``) an ONNX Runtime one (CPU only):
    what ``predict`` and ``evaluate`` run, so a deployed file is scored exactly as it will run."""
    if Path(path).suffix.lower() != ".onnx":
        return load_predictor(path, device)
    if device != "cpu":
        raise InputError(f"--device {device}: an ONNX model ({path}) runs on the CPU with ONNX Runtime; "
                         "drop --device, or pass the .ckpt to run on the GPU")
    return load_onnx_predictor(path)
