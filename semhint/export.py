"""The depth network alone as an ONNX or TorchScript file, with a dynamic batch axis, verified after writing.

Verification runs the written file and PyTorch on a random batch of 2 (the export traced batch 1,
so this also proves the batch axis is dynamic) and reports the largest absolute difference.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from semhint.core.errors import InputError
from semhint.core.fileio import atomic_path
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
    if fmt == "onnx":
        got = _export_onnx(model, example, test, out)
    else:
        got = _export_torchscript(model, example, test, out)
    max_diff = float(np.abs(got - expected).max())
    result = {"format": fmt, "path": str(out), "input": [-1, 3, h, w], "max_abs_diff": max_diff}
    return result


def _export_onnx(model: torch.nn.Module, example: torch.Tensor, test: torch.Tensor, out: Path) -> np.ndarray:
    try:
        import onnxruntime as ort  # lazy: an optional extra (semhint[onnx])
    except ImportError:
        raise InputError("ONNX export needs the onnx extra: pip install 'semhint[onnx]'") from None
    with atomic_path(out, suffix=".onnx") as tmp, warnings.catch_warnings():
        # the TorchScript-based exporter (dynamo=False: no onnxscript graph capture needed) warns
        # about its own deprecation and constant folding; the max-diff check below is what counts
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(tmp), input_names=["image"], output_names=["disparity"],
                          dynamic_axes={"image": {0: "batch"}, "disparity": {0: "batch"}}, opset_version=17,
                          dynamo=False)
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        return session.run(None, {"image": test.numpy()})[0]


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
