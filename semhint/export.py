"""The depth network alone as an ONNX or TorchScript file, with a dynamic batch axis, verified after writing.

Verification runs the written file and PyTorch on a random batch of 2 (the export traced batch 1,
so this also proves the batch axis is dynamic) and reports the largest absolute difference.

An ONNX file also says how to use it, in its ``metadata_props`` (:func:`onnx_metadata`): the input
format (RGB, float32 in [0, 1], NCHW, the trained size) and how the output (sigmoid disparity)
becomes depth (the min/max depth of the conversion). Height and width are dynamic when the network
allows it: the export is tried with free H x W and checked at a second size; a network whose
padding depends on the traced size (EfficientNet's "same" padding) is exported at its fixed size.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from semhint.core.config import Config
from semhint.core.errors import InputError
from semhint.core.fileio import atomic_path
from semhint.core.version import __version__
from semhint.inference import load_depth_net

FORMATS = ("onnx", "torchscript")


class DisparityOnly(torch.nn.Module):
    """The depth network with a single tensor output (sigmoid disparity at scale 0) for export."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)["disp/0"]


def export_model(checkpoint: str | Path, fmt: str, out: str | Path | None = None, seed: int = 0) -> dict:
    """The depth net alone as ONNX or TorchScript, dynamic batch, verified.

    Verification runs the exported model and PyTorch on a random batch of 2 (the export traced
    batch 1, so this also proves the batch axis is dynamic) and reports the max absolute difference.
    """
    if fmt not in FORMATS:
        raise InputError(f"--format must be onnx or torchscript, got {fmt!r}")
    cfg, net = load_depth_net(checkpoint)
    model = DisparityOnly(net).eval()
    h, w = cfg.data.height, cfg.data.width
    suffix = ".onnx" if fmt == "onnx" else ".pt"
    out = Path(out) if out is not None else Path(checkpoint).with_suffix(suffix)
    example = torch.rand(1, 3, h, w)
    test = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        expected = model(test).numpy()
    result = {"format": fmt, "path": str(out), "input": [-1, 3, h, w]}
    if fmt == "onnx":
        got, dynamic_hw = _export_onnx(model, example, test, out, cfg)
        result["dynamic_hw"] = dynamic_hw
    else:
        got = _export_torchscript(model, example, test, out)
    result["max_abs_diff"] = float(np.abs(got - expected).max())
    return result


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
        raise InputError("ONNX export needs the onnx extra: pip install 'semhint[onnx]'") from None
    return ort


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
