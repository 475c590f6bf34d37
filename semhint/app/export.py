"""`semhint export`: the depth network as ONNX or TorchScript, verified against PyTorch after writing."""

from __future__ import annotations

import argparse

from semhint.export import export_model


def run(args: argparse.Namespace) -> None:
    result = export_model(args.checkpoint, args.format, args.out)
    h, w = result["input"][2:]
    size = f"{h} x {w}" + (" (height/width dynamic)" if result.get("dynamic_hw") else "")
    print(f"exported {result['format']} -> {result['path']}  (input N x 3 x {size}, RGB in [0, 1]; "
          f"max |exported - PyTorch| = {result['max_abs_diff']:.2e} on a random batch of 2)")
    if result["format"] == "onnx":
        print("its metadata_props say how to feed it and how its disparity output becomes depth")
