"""`semhint export`: the depth network as ONNX (float or, with ``--int8 FRAMES``, int8) or TorchScript, verified
against PyTorch after writing."""

from __future__ import annotations

import argparse

from semhint.export import export_model

INT8_WARN_MEDIAN = 0.02  # a larger median depth difference suggests calibration frames unlike the inputs


def run(args: argparse.Namespace) -> None:
    result = export_model(args.checkpoint, args.format, args.out, int8=args.int8)
    h, w = result["input"][2:]
    size = f"{h} x {w}" + (" (height/width dynamic)" if result.get("dynamic_hw") else "")
    if result["precision"] == "int8":
        print(f"exported int8 onnx -> {result['path']}  (input N x 3 x {size}, RGB in [0, 1]; calibrated on "
              f"{result['calibration_frames']} frames; depth vs PyTorch on two of them: median "
              f"{result['depth_rel_diff_median']:.2%}, 95th percentile {result['depth_rel_diff_p95']:.2%} relative "
              "difference)")
        if result["depth_rel_diff_median"] > INT8_WARN_MEDIAN:
            print(f"warning: int8 depth differs from float by {result['depth_rel_diff_median']:.1%} (median): are the "
                  "calibration frames like those the model will see? The float ONNX file (no --int8) is exact.")
    else:
        print(f"exported {result['format']} -> {result['path']}  (input N x 3 x {size}, RGB in [0, 1]; "
              f"max |exported - PyTorch| = {result['max_abs_diff']:.2e} on a random batch of 2)")
    if result["format"] == "onnx":
        print("its metadata_props say how to feed it and how its disparity output becomes depth; "
              f"`semhint predict {result['path']} FRAMES --out DIR` runs it with ONNX Runtime")
