"""`semhint export`: the depth network as ONNX or TorchScript, verified against PyTorch after writing."""

from __future__ import annotations

import argparse

from semhint.export import export_model


def run(args: argparse.Namespace) -> None:
    result = export_model(args.checkpoint, args.format, args.out)
    h, w = result["input"][2:]
    print(f"exported {result['format']} -> {result['path']}  (input N x 3 x {h} x {w}; max |exported - PyTorch| = "
          f"{result['max_abs_diff']:.2e} on a random batch of 2)")
