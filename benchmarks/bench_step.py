"""Time one training step and depth inference, through the package's own training code.

A step is exactly what ``SemHintModule.training_step`` optimises: ``SemHintModule.objective``
(depth + pose forward, every loss) then backward and an Adam update from
``SemHintModule.configure_optimizers``. Batch 4, 3-frame snippets, at 96x320 and 192x640;
inference is the depth net alone at 192x640, batch 1. Variants: fp32 / bf16 autocast,
channels_last, thread count, and with ``--compile`` ``torch.compile(module.objective)`` (its first
call, compilation included, is reported as ``compile_s``). Times are the median of the measured
repeats after warm-up.

The issue's reference numbers were measured on another machine, so every (threads, size) group
also times the plain reference of ``reference_step.py`` in this same process, interleaved repeat by
repeat with the package's variants (one reference step, then one step of each variant, and again),
so that load from other processes hits both alike. ``vs_reference_here`` = reference time /
package time on this machine (> 1: the package is faster); ``vs_issue_reference`` divides the
issue's numbers instead and is context only.

    .venv/bin/python benchmarks/bench_step.py            # full grid (several minutes on 2 cores)
    .venv/bin/python benchmarks/bench_step.py --quick    # one repeat each, for a smoke check
    .venv/bin/python benchmarks/bench_step.py --compile  # plus a torch.compile row (minutes of compile)
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

import torch
from reference_step import ReferenceInference, ReferenceStep  # noqa: E402

from semhint.core.config import from_dict  # noqa: E402
from semhint.lab.records import markdown_table, write_record  # noqa: E402
from semhint.lab.timing import DepthForward, TrainStep, first_call_seconds, time_interleaved  # noqa: E402

# the numbers (a plain implementation, fp32, 2 threads, measured on another machine)
REFERENCE = {"step_96x320_s": 0.89, "step_192x640_s": 3.5, "infer_192x640_ms": 117.0}
REF_KEY = "reference (plain)"


def package_step(height: int, width: int, device: torch.device, bf16: bool, channels_last: bool,
                compile_objective: bool = False) -> TrainStep:
    """One optimiser step of the default config at ``height x width``, batch 4 (``semhint.lab.timing.TrainStep``)."""
    cfg = from_dict({"data": {"height": height, "width": width}, "optim": {"batch_size": 4}}, "bench")
    return TrainStep(cfg, device, bf16, channels_last, compile_objective)


def package_inference(height: int, width: int, device: torch.device, bf16: bool, channels_last: bool,
                     mode: str) -> DepthForward:
    """One depth-net forward at batch 1 (``mode``: inference_mode | no_grad)."""
    cfg = from_dict({"data": {"height": height, "width": width}}, "bench")
    return DepthForward(cfg, device, 1, bf16, channels_last, mode)


def _ratio(num: float | None, den: float) -> float | str:
    return num / den if num else ""


def run(args) -> tuple[list[dict], list[dict]]:
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    reps, warm = (1, 1) if args.quick else (args.repeats, 2)
    step_rows, infer_rows = [], []
    for device in devices:
        threads_list = args.threads if device.type == "cpu" else [torch.get_num_threads()]
        for threads in threads_list:
            torch.set_num_threads(threads)
            for (h, w) in args.sizes:
                variants = [(bf16, cl, False) for bf16 in args.bf16 for cl in (False, True)
                            if not ((args.quick and cl) or (bf16 and (h, w) not in args.bf16_sizes))]
                if args.compile:
                    variants.append((False, False, True))
                fns: dict = {}
                compile_s: dict = {}
                for bf16, cl, comp in variants:
                    fn = package_step(h, w, device, bf16, cl, comp)
                    if comp:  # compile outside the timed rounds; its first call is the compile time
                        compile_s[(bf16, cl, comp)] = first_call_seconds(fn, device)
                    fns[(bf16, cl, comp)] = fn
                # the plain reference runs on the CPU only (it is the CPU baseline)
                if device.type == "cpu":
                    fns[REF_KEY] = ReferenceStep(h, w)
                medians = time_interleaved(fns, device, reps, warm)
                ref_here = medians.get(REF_KEY)
                if ref_here is not None:
                    row = {"device": device.type, "threads": threads, "size": f"{h}x{w}", "variant": REF_KEY,
                           "precision": "fp32", "channels_last": False, "compiled": False, "s_per_step": ref_here,
                           "snippets_per_s": 4 / ref_here, "vs_reference_here": 1.0,
                           "vs_issue_reference": _ratio(REFERENCE.get(f"step_{h}x{w}_s"), ref_here)}
                    step_rows.append(row)
                    print(row, flush=True)
                for (bf16, cl, comp) in variants:
                    s = medians[(bf16, cl, comp)]
                    row = {"device": device.type, "threads": threads, "size": f"{h}x{w}", "variant": "semhint",
                           "precision": "bf16 autocast" if bf16 else "fp32", "channels_last": cl, "compiled": comp,
                           "s_per_step": s, "snippets_per_s": 4 / s, "vs_reference_here": _ratio(ref_here, s),
                           "vs_issue_reference": _ratio(REFERENCE.get(f"step_{h}x{w}_s"), s),
                           "compile_s": compile_s.get((bf16, cl, comp), "")}
                    step_rows.append(row)
                    print(row, flush=True)
                del fns
            variants = [(bf16, cl, mode) for bf16 in args.bf16 for cl in (False, True)
                        for mode in ("inference_mode", "no_grad")
                        if not ((args.quick and (cl or mode == "no_grad")) or (bf16 and (mode == "no_grad" or cl)))]
            fns = {v: package_inference(192, 640, device, *v) for v in variants}
            if device.type == "cpu":
                fns[REF_KEY] = ReferenceInference(192, 640)
            medians = time_interleaved(fns, device, max(reps, 3), warm)
            ref_here = medians.get(REF_KEY)
            if ref_here is not None:
                row = {"device": device.type, "threads": threads, "size": "192x640", "variant": REF_KEY,
                       "precision": "fp32", "channels_last": False, "mode": "inference_mode", "ms": 1000 * ref_here,
                       "vs_reference_here": 1.0,
                       "vs_issue_reference": REFERENCE["infer_192x640_ms"] / (1000 * ref_here)}
                infer_rows.append(row)
                print(row, flush=True)
            for (bf16, cl, mode) in variants:
                ms = 1000 * medians[(bf16, cl, mode)]
                row = {"device": device.type, "threads": threads, "size": "192x640", "variant": "semhint",
                       "precision": "bf16 autocast" if bf16 else "fp32", "channels_last": cl, "mode": mode, "ms": ms,
                       "vs_reference_here": _ratio(ref_here and 1000 * ref_here, ms),
                       "vs_issue_reference": REFERENCE["infer_192x640_ms"] / ms}
                infer_rows.append(row)
                print(row, flush=True)
    return step_rows, infer_rows


def _size(text: str) -> tuple[int, int]:
    """'96x320' -> (96, 320); the plain reference needs multiples of 32, at least 64 (e.g. 64x192 for a smoke check)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r}: expected HxW, e.g. 96x320") from None
    if h % 32 or w % 32 or min(h, w) < 64:
        raise argparse.ArgumentTypeError(f"size {text!r}: height and width must be multiples of 32 and at least 64")
    return h, w


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat, fewer variants (smoke check)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"],
                        help="bf16 = torch.autocast(bfloat16); slow on CPUs without native bf16 (no AVX512-BF16/AMX)")
    parser.add_argument("--sizes", nargs="+", type=_size, default=[(96, 320), (192, 640)],
                        help="training step sizes HxW, multiples of 32 and >= 64 (64x192 for a smoke check)")
    parser.add_argument("--bf16-sizes", nargs="+", type=_size, default=None,
                        help="sizes that get bf16 step rows (default: all)")
    parser.add_argument("--compile", action="store_true",
                        help="add a row with torch.compile(module.objective); compile time reported as compile_s")
    parser.add_argument("--load", default="", help="a note on machine load at measurement time")
    parser.add_argument("--no-write", action="store_true", help="print only; do not write the lab record")
    args = parser.parse_args()
    args.bf16 = [p == "bf16" for p in args.precisions]
    args.bf16_sizes = args.bf16_sizes or args.sizes
    step_rows, infer_rows = run(args)
    if args.no_write:
        return
    omp = os.environ.get("OMP_NUM_THREADS")
    command = (f"OMP_NUM_THREADS={omp} " if omp else "") + ".venv/bin/python " + shlex.join(sys.argv)
    md = ("Training step = `SemHintModule.objective` (ResNet-18 depth + pose forward, all losses) + backward + Adam, "
          "batch 4, frames (0, -1, +1); inference = the depth net alone, batch 1. "
          f"Command: `{command}`.\n\n"
          "`reference (plain)` rows are `benchmarks/reference_step.py`, an independent plain Monodepth2-style "
          "implementation of the same step, timed in the same process interleaved round by round with the "
          "package's variants, so machine load affects both alike. `vs_reference_here` = reference time / package "
          "time on this machine (> 1: the package is faster). `vs_issue_reference` divides the issue's numbers "
          f"instead ({REFERENCE['step_96x320_s']} s at 96x320, {REFERENCE['step_192x640_s']} s at 192x640, "
          f"{REFERENCE['infer_192x640_ms']} ms inference; fp32, 2 threads, another machine): context only. "
          "`compile_s` is the first call of the `torch.compile`d objective (compilation + one step).\n\n"
          f"Load during measurement: {args.load or 'not noted (pass --load)'}\n\n")
    md += markdown_table(step_rows, ["device", "threads", "size", "variant", "precision", "channels_last", "compiled",
                                     "s_per_step", "snippets_per_s", "vs_reference_here", "vs_issue_reference",
                                     "compile_s"])
    md += "\n\nDepth inference, batch 1:\n\n"
    md += markdown_table(infer_rows, ["device", "threads", "size", "variant", "precision", "channels_last", "mode",
                                      "ms", "vs_reference_here", "vs_issue_reference"])
    write_record("step", "Training step and inference time", command, md,
                  {"steps": step_rows, "inference": infer_rows, "issue_reference": REFERENCE, "load": args.load,
                   "command": command})


if __name__ == "__main__":
    main()
