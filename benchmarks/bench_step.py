"""Time one training step and depth inference, through the package's own training code.

A step is exactly what ``SemHintModule.training_step`` optimises: ``SemHintModule.objective``
(depth + pose forward, every loss) then backward and an Adam update from
``SemHintModule.configure_optimizers``. Batch 4, 3-frame snippets, at 96x320 and 192x640;
inference is the depth net alone at 192x640, batch 1. Variants: fp32 / bf16 autocast,
channels_last, thread count. Times are the median of the measured repeats after warm-up.

    .venv/bin/python benchmarks/bench_step.py            # full grid (several minutes on 2 cores)
    .venv/bin/python benchmarks/bench_step.py --quick    # one repeat each, for a smoke check
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import markdown_table, write_section  # noqa: E402

from semhint import geometry  # noqa: E402
from semhint.config import from_dict  # noqa: E402
from semhint.training import SemHintModule  # noqa: E402

REFERENCE = {"step_96x320_s": 0.89, "step_192x640_s": 3.5, "infer_192x640_ms": 117.0}


def make_batch(height: int, width: int, batch_size: int, frame_ids: list[int], device: torch.device) -> dict:
    """A batch shaped like the data module's (ARCHITECTURE.md): smooth images so the losses are typical."""
    g = torch.Generator().manual_seed(0)
    base = torch.nn.functional.interpolate(torch.rand(batch_size, 3, height // 8, width // 8, generator=g),
                                           size=(height, width), mode="bilinear", align_corners=False)
    batch = {}
    for i, f in enumerate(frame_ids):
        image = torch.roll(base, shifts=2 * i, dims=3).contiguous()
        batch[f"image/{f}"] = image.to(device)
        batch[f"image_aug/{f}"] = image.to(device)
    K = geometry.intrinsics_matrix(0.58 * width, 1.92 * height, 0.5 * width, 0.5 * height)
    batch["K"] = K.expand(batch_size, 4, 4).contiguous().to(device)
    batch["inv_K"] = torch.linalg.inv(K).expand(batch_size, 4, 4).contiguous().to(device)
    return batch


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def _to_channels_last(batch: dict) -> dict:
    return {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for k, v in batch.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_step(height: int, width: int, device: torch.device, bf16: bool, channels_last: bool, repeats: int,
              warmup: int) -> float:
    """Median seconds per optimiser step of the real training objective."""
    cfg = from_dict({"data": {"height": height, "width": width}, "optim": {"batch_size": 4}}, "bench")
    module = SemHintModule(cfg).to(device).train()
    optimizer = module.configure_optimizers()["optimizer"]
    batch = make_batch(height, width, 4, cfg.data.frame_ids, device)
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
        batch = _to_channels_last(batch)
    times = []
    for i in range(warmup + repeats):
        _sync(device)
        t0 = time.perf_counter()
        with _autocast(device, bf16):
            losses, _, _ = module.objective(batch)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_inference(height: int, width: int, device: torch.device, bf16: bool, channels_last: bool, mode: str,
                   repeats: int, warmup: int) -> float:
    """Median milliseconds of one depth-net forward at batch 1 (``mode``: inference_mode | no_grad)."""
    cfg = from_dict({"data": {"height": height, "width": width}}, "bench")
    net = SemHintModule(cfg).depth_net.to(device).eval()
    x = torch.rand(1, 3, height, width, device=device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    guard = torch.inference_mode if mode == "inference_mode" else torch.no_grad
    times = []
    with guard():
        for i in range(warmup + repeats):
            _sync(device)
            t0 = time.perf_counter()
            with _autocast(device, bf16):
                net(x)
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def run(args) -> tuple[list[dict], list[dict]]:
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    reps, warm = (1, 1) if args.quick else (args.repeats, 2)
    step_rows, infer_rows = [], []
    for device in devices:
        threads_list = args.threads if device.type == "cpu" else [torch.get_num_threads()]
        for threads in threads_list:
            torch.set_num_threads(threads)
            for (h, w) in args.sizes:
                for bf16 in args.bf16:
                    for cl in (False, True):
                        if (args.quick and cl) or (bf16 and (h, w) not in args.bf16_sizes):
                            continue
                        s = time_step(h, w, device, bf16, cl, reps, warm)
                        row = {"device": device.type, "threads": threads, "size": f"{h}x{w}",
                               "precision": "bf16 autocast" if bf16 else "fp32", "channels_last": cl, "s_per_step": s,
                               "snippets_per_s": 4 / s}
                        ref = REFERENCE.get(f"step_{h}x{w}_s")
                        row["vs_reference"] = ref / s if ref else ""
                        step_rows.append(row)
                        print(row, flush=True)
            for bf16 in args.bf16:
                for cl in (False, True):
                    for mode in ("inference_mode", "no_grad"):
                        if (args.quick and (cl or mode == "no_grad")) or (bf16 and (mode == "no_grad" or cl)):
                            continue
                        ms = time_inference(192, 640, device, bf16, cl, mode, max(reps, 3), warm)
                        row = {"device": device.type, "threads": threads, "size": "192x640", "precision":
                               "bf16 autocast" if bf16 else "fp32", "channels_last": cl, "mode": mode, "ms": ms,
                               "vs_reference": REFERENCE["infer_192x640_ms"] / ms}
                        infer_rows.append(row)
                        print(row, flush=True)
    return step_rows, infer_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat, fewer variants (smoke check)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"],
                        help="bf16 = torch.autocast(bfloat16); slow on CPUs without native bf16 (no AVX512-BF16/AMX)")
    parser.add_argument("--sizes", nargs="+", default=["96x320", "192x640"], help="training step sizes HxW")
    parser.add_argument("--bf16-sizes", nargs="+", default=None, help="sizes that get bf16 step rows (default: all)")
    parser.add_argument("--load", default="", help="a note on machine load at measurement time")
    parser.add_argument("--no-write", action="store_true", help="print only; do not touch docs/RESULTS.md")
    args = parser.parse_args()
    args.bf16 = [p == "bf16" for p in args.precisions]
    args.sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    args.bf16_sizes = [tuple(int(v) for v in s.split("x")) for s in args.bf16_sizes] if args.bf16_sizes else args.sizes
    step_rows, infer_rows = run(args)
    if args.no_write:
        return
    md = ("Training step = `SemHintModule.objective` (ResNet-18 depth + pose forward, all losses) + backward + Adam, "
          "batch 4, frames (0, -1, +1). Reference (plain implementation, fp32, 2 threads): "
          f"{REFERENCE['step_96x320_s']} s at 96x320, {REFERENCE['step_192x640_s']} s at 192x640, "
          f"{REFERENCE['infer_192x640_ms']} ms inference; `vs_reference` > 1 means faster than it.\n\n")
    if args.load:
        md += f"Load during measurement: {args.load}\n\n"
    md += markdown_table(step_rows, ["device", "threads", "size", "precision", "channels_last", "s_per_step",
                                     "snippets_per_s", "vs_reference"])
    md += "\n\nDepth inference, batch 1:\n\n"
    md += markdown_table(infer_rows, ["device", "threads", "size", "precision", "channels_last", "mode", "ms",
                                      "vs_reference"])
    omp = os.environ.get("OMP_NUM_THREADS")
    command = (f"OMP_NUM_THREADS={omp} " if omp else "") + ".venv/bin/python " + shlex.join(sys.argv)
    write_section("step", "Training step and inference time", command, md,
                  {"steps": step_rows, "inference": infer_rows, "reference": REFERENCE, "load": args.load})


if __name__ == "__main__":
    main()
