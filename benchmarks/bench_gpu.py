"""Training throughput and inference latency on a GPU in one shot, inside a hard time budget.

Training rows: one optimiser step (``semhint.lab.timing.TrainStep``: ``SemHintModule.objective``,
backward, Adam) of the depth-only baseline (``kitti_eigen_zhou``) and of SemHint
(``semhint_kitti_eigen_zhou``: 19 classes, shared decoder, hint and pseudo-semantic refinement,
switched on from the first step) at 640x192, batch 12, frames (0, -1, +1), in each ``--train-variants``
entry (``fp32``, ``bf16`` = ``trainer.precision=bf16-mixed``, ``+cl`` channels_last, ``+compile``
``torch.compile(objective)``, i.e. ``trainer.compile``), beside the plain reference of
``reference_step.py`` (fp32, the same step written the obvious way) on the same device. Inference rows:
the depth net alone at batch 1 and 16, fp32 and bf16 autocast, and the reference's.

Every row reports its median time, throughput, the ratio to the reference, peak GPU memory (tensors
allocated, from ``torch.cuda.max_memory_allocated``) and, for training, the time 20 epochs of the
eigen_zhou split would take at that throughput (optimiser steps only: data loading, validation and
logging are not in it; ``benchmarks/bench_loader.py`` says whether the loader keeps up). The whole run
keeps to ``--budget-s``: a row that would not fit is skipped, one that overruns is cut, and the record
says which; compiled rows run last, being the slowest to start.

    python benchmarks/bench_gpu.py --device cuda                   # the GPU record docs/lab/gpu_bench.md
    python benchmarks/bench_gpu.py --device cpu --tiny --lab-dir /tmp/x   # smoke check, tiny sizes
"""

from __future__ import annotations

import time

STARTED = time.monotonic()  # the budget counts from here: imports and CUDA start-up are part of the run

import argparse  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from reference_step import ReferenceInference, ReferenceStep  # noqa: E402

from semhint.lab.records import LAB_DIR, markdown_table, write_record  # noqa: E402
from semhint.lab.timing import (  # noqa: E402
    bench_size,
    BudgetExceeded,
    DepthForward,
    TimeBudget,
    TrainStep,
    bench_config,
    first_call_seconds,
    peak_memory_gib,
    reset_peak_memory,
    split_size,
    time_calls,
)

ARMS = {"baseline": "kitti_eigen_zhou", "semhint": "semhint_kitti_eigen_zhou"}
REFERENCE = "reference (plain)"
EPOCHS = 20
GOAL_RATIO = 2.0  # the goals: SemHint >= 2x the plain reference, 20 eigen_zhou epochs in <= 2 h
GOAL_HOURS = 2.0
TRAIN_FIELDS = ["arm", "config", "variant", "size", "batch", "status", "s_per_step", "snippets_per_s", "steps_timed",
                "compile_s", "peak_mem_gib", "vs_reference", "eigen_zhou_20_epochs_h"]
INFER_FIELDS = ["arm", "variant", "size", "batch", "status", "ms", "images_per_s", "calls_timed", "peak_mem_gib",
                "vs_reference"]


def parse_variant(text: str) -> dict:
    """'bf16+cl+compile' -> {"bf16": True, "channels_last": True, "compile": True}."""
    parts = text.lower().split("+")
    if parts[0] not in ("fp32", "bf16") or any(p not in ("cl", "compile") for p in parts[1:]):
        raise argparse.ArgumentTypeError(f"variant {text!r}: fp32 or bf16, then optionally +cl and/or +compile")
    return {"name": text.lower(), "bf16": parts[0] == "bf16", "channels_last": "cl" in parts, "compile": "compile" in parts}




# ----------------------------------------------------------------------------------------------
# the rows, in the order they run
# ----------------------------------------------------------------------------------------------
def plan_rows(args) -> list[dict]:
    """Every row the run will try: plain training variants, inference, then compiled training (slowest to start)."""
    h, w = args.size
    size = f"{h}x{w}"
    train = [{"kind": "train", "arm": REFERENCE, "config": "benchmarks/reference_step.py", "variant": "fp32",
              "size": size, "batch": args.batch}]
    later = []
    for v in args.train_variants:
        for arm in args.arms:
            row = {"kind": "train", "arm": arm, "config": ARMS[arm], "variant": v["name"], "size": size,
                   "batch": args.batch}
            (later if v["compile"] else train).append(row)
    later.sort(key=lambda r: r["arm"] != "semhint")  # SemHint's compiled row first: it is the goal's
    infer = []
    for batch in args.infer_batches:
        infer.append({"kind": "infer", "arm": REFERENCE, "variant": "fp32", "size": size, "batch": batch})
        for v in args.infer_variants:
            for arm in args.arms:
                infer.append({"kind": "infer", "arm": arm, "variant": v["name"], "size": size, "batch": batch})
    return train + infer + later


def run_train_row(row: dict, args, device: torch.device) -> None:
    h, w = args.size
    reset_peak_memory(device)
    if row["arm"] == REFERENCE:
        fn = ReferenceStep(h, w, args.batch, device=str(device))
    else:
        v = parse_variant(row["variant"])
        cfg = bench_config(row["config"], h, w, args.batch)
        fn = TrainStep(cfg, device, v["bf16"], v["channels_last"], v["compile"], args.compile_backend)
        if v["compile"]:  # compiled on the first call: timed apart from the steps
            row["compile_s"] = first_call_seconds(fn, device)
    s, n = time_calls(fn, device, args.steps, args.warmup, args.max_row_s)
    row.update(status="ok", s_per_step=s, snippets_per_s=args.batch / s, steps_timed=n,
               peak_mem_gib=peak_memory_gib(device))


def run_infer_row(row: dict, args, device: torch.device) -> None:
    h, w = args.size
    reset_peak_memory(device)
    if row["arm"] == REFERENCE:
        fn = ReferenceInference(h, w, device=str(device), batch_size=row["batch"])
    else:
        v = parse_variant(row["variant"])
        cfg = bench_config(ARMS[row["arm"]], h, w, row["batch"])
        fn = DepthForward(cfg, device, row["batch"], v["bf16"], v["channels_last"])
    s, n = time_calls(fn, device, args.infer_repeats, args.warmup, args.max_row_s)
    row.update(status="ok", ms=1000 * s, images_per_s=row["batch"] / s, calls_timed=n,
               peak_mem_gib=peak_memory_gib(device))


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160] if text else ''}"


def run_rows(rows: list[dict], args, device: torch.device, budget: TimeBudget) -> None:
    """Measure each row in turn inside the budget; a row that fails says why and the next one runs."""
    for i, row in enumerate(rows):
        if budget.left() < args.min_row_s:
            for rest in rows[i:]:
                rest["status"] = f"skipped: budget ({budget.seconds:g} s) spent"
            print(f"budget spent after {budget.elapsed():.0f} s: {len(rows) - i} row(s) skipped", flush=True)
            return
        try:
            with budget.hard_stop():
                (run_train_row if row["kind"] == "train" else run_infer_row)(row, args, device)
        except BudgetExceeded:
            row["status"] = f"cut: the budget ({budget.seconds:g} s) ran out during this row"
        except Exception as exc:  # noqa: BLE001 - one failing row (out of memory, a compile error) is reported, not fatal
            row["status"] = f"error: {_short(exc)}"
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        print({k: v for k, v in row.items() if k != "kind"}, flush=True)


# ----------------------------------------------------------------------------------------------
# derived numbers and the record
# ----------------------------------------------------------------------------------------------
def derive(rows: list[dict], snippets: int) -> dict:
    """Ratios to the reference, the eigen_zhou estimate per training row, and the goals' verdict."""
    train = [r for r in rows if r["kind"] == "train"]
    ref = next((r for r in train if r["arm"] == REFERENCE and r.get("status") == "ok"), None)
    for r in train:
        if r.get("status") == "ok":
            r["eigen_zhou_20_epochs_h"] = snippets * EPOCHS / r["snippets_per_s"] / 3600
            r["vs_reference"] = r["snippets_per_s"] / ref["snippets_per_s"] if ref else None
    for r in rows:
        if r["kind"] == "infer" and r.get("status") == "ok":
            ref_i = next((x for x in rows if x["kind"] == "infer" and x["arm"] == REFERENCE and x["batch"] == r["batch"]
                          and x.get("status") == "ok"), None)
            r["vs_reference"] = ref_i["ms"] / r["ms"] if ref_i else None
    for r in rows:
        for f in TRAIN_FIELDS if r["kind"] == "train" else INFER_FIELDS:
            r.setdefault(f, None)
    semhint = [r for r in train if r["arm"] == "semhint" and r["status"] == "ok"]
    best = max(semhint, key=lambda r: r["snippets_per_s"], default=None)
    goal_rate = snippets * EPOCHS / (GOAL_HOURS * 3600)
    summary = {"eigen_zhou_snippets": snippets, "epochs": EPOCHS,
               "goal_vs_reference": GOAL_RATIO, "goal_hours": GOAL_HOURS, "goal_snippets_per_s": goal_rate,
               "best_semhint_variant": best and best["variant"], "best_semhint_snippets_per_s": best and best["snippets_per_s"],
               "best_semhint_vs_reference": best and best["vs_reference"],
               "best_semhint_eigen_zhou_20_epochs_h": best and best["eigen_zhou_20_epochs_h"]}
    summary["meets_vs_reference_goal"] = (None if not best or best["vs_reference"] is None
                                          else best["vs_reference"] >= GOAL_RATIO)
    summary["meets_hours_goal"] = None if not best else best["snippets_per_s"] >= goal_rate
    return summary


def _blank(rows: list[dict]) -> list[dict]:
    """Rows for a markdown table: a value not measured is an empty cell."""
    return [{k: ("" if v is None else v) for k, v in r.items()} for r in rows]


def _fmt(x, spec: str = ".3g") -> str:
    return "n/a" if x is None else format(x, spec)


def record_markdown(args, rows: list[dict], summary: dict, env: dict, command: str, budget: TimeBudget) -> str:
    h, w = args.size
    train = [r for r in rows if r["kind"] == "train"]
    infer = [r for r in rows if r["kind"] == "infer"]
    not_ok = [r for r in rows if r["status"] != "ok"]
    md = (f"Device: {env['device_name']} (torch {env['torch']}, CUDA {env['cuda']}; cudnn.benchmark "
          f"{env['cudnn_benchmark']}, TF32 convolutions {env['cudnn_allow_tf32']}, TF32 matmul {env['matmul_allow_tf32']}). "
          f"Command: `{command}`; budget {budget.seconds:g} s, used {budget.elapsed():.0f} s.\n\n"
          f"Training step at {h}x{w}, batch {args.batch}, frames (0, -1, +1): `SemHintModule.objective` + backward + "
          "Adam (`semhint.lab.timing.TrainStep`), the refinement on from the first step; baseline = "
          f"`{ARMS['baseline']}`, semhint = `{ARMS['semhint']}`; `{REFERENCE}` = `benchmarks/reference_step.py` "
          "(fp32). Variants: fp32; bf16 = autocast bfloat16 (`trainer.precision=bf16-mixed`); +cl = channels_last; "
          f"+compile = `torch.compile(objective, backend={args.compile_backend!r})` (`trainer.compile`), its first "
          "call (compilation) in `compile_s`. Median of up to "
          f"{args.steps} steps after {args.warmup} warm-up steps. `vs_reference` = throughput / the reference's on "
          f"this device; `eigen_zhou_20_epochs_h` = {summary['eigen_zhou_snippets']} snippets x {EPOCHS} / "
          "snippets_per_s, optimiser steps only (no data loading, validation or logging). `peak_mem_gib`: "
          "`torch.cuda.max_memory_allocated` over the row (empty off the GPU).\n\n")
    md += markdown_table(_blank(train), TRAIN_FIELDS)
    md += (f"\n\nDepth net alone (eval, `torch.inference_mode`), median of up to {args.infer_repeats} calls; "
           "`vs_reference` = the reference's time / this row's at the same batch:\n\n")
    md += markdown_table(_blank(infer), INFER_FIELDS)
    md += (f"\n\nGoals (issue 22): SemHint >= {GOAL_RATIO:g}x the plain reference's throughput on the same GPU, "
           f"and {EPOCHS} epochs of eigen_zhou in <= {GOAL_HOURS:g} h (>= {summary['goal_snippets_per_s']:.1f} "
           f"snippets/s). Fastest SemHint row: {summary['best_semhint_variant'] or 'none measured'}, "
           f"{_fmt(summary['best_semhint_snippets_per_s'])} snippets/s, "
           f"{_fmt(summary['best_semhint_vs_reference'])}x the reference, "
           f"{_fmt(summary['best_semhint_eigen_zhou_20_epochs_h'])} h for {EPOCHS} epochs; "
           f"meets the ratio goal: {summary['meets_vs_reference_goal']}, meets the time goal: "
           f"{summary['meets_hours_goal']}.\n")
    if not_ok:
        md += "\nRows not measured:\n\n" + "\n".join(
            f"- {r['kind']} {r['arm']} {r['variant']} batch {r['batch']}: {r['status']}" for r in not_ok) + "\n"
    return md


def environment(device: torch.device) -> dict:
    cuda = device.type == "cuda"
    return {"device": device.type, "device_name": torch.cuda.get_device_name(device) if cuda else "CPU",
            "torch": torch.__version__, "cuda": torch.version.cuda, "threads": torch.get_num_threads(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark, "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--budget-s", type=float, default=300.0, help="hard limit for the whole run (default 300)")
    parser.add_argument("--tiny", action="store_true",
                        help="smoke check: 64x192, batch 2, inference batches 1 and 2, 2 steps, eager compile backend")
    parser.add_argument("--size", type=bench_size, default=None, help="HxW (default 192x640; --tiny: 64x192)")
    parser.add_argument("--batch", type=int, default=None, help="training batch (default 12; --tiny: 2)")
    parser.add_argument("--infer-batches", type=int, nargs="+", default=None, help="default 1 16 (--tiny: 1 2)")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--train-variants", nargs="+", type=parse_variant, default=None,
                        help="fp32|bf16 [+cl] [+compile] (default fp32 bf16 bf16+cl bf16+compile)")
    parser.add_argument("--infer-variants", nargs="+", type=parse_variant, default=None,
                        help="fp32|bf16 [+cl] (default fp32 bf16)")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps per row (default 20; --tiny: 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 5; --tiny: 1)")
    parser.add_argument("--infer-repeats", type=int, default=None, help="timed forwards per row (default 50; --tiny: 2)")
    parser.add_argument("--max-row-s", type=float, default=20.0, help="stop timing a row after this many seconds")
    parser.add_argument("--min-row-s", type=float, default=5.0, help="do not start a row with less budget left")
    parser.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor; --tiny: eager)")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--key", default=None, help="lab record key (default gpu_bench, or gpu_bench_cpu on --device cpu)")
    parser.add_argument("--lab-dir", default=None,
                        help=f"where the record goes (default {LAB_DIR}; with --tiny nothing is written without it)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    budget = TimeBudget(args.budget_s, reserve_s=min(5.0, args.budget_s / 10), start=STARTED)
    tiny = args.tiny
    args.size = args.size or ((64, 192) if tiny else (192, 640))
    args.batch = args.batch or (2 if tiny else 12)
    args.infer_batches = args.infer_batches or ([1, 2] if tiny else [1, 16])
    args.train_variants = args.train_variants or [parse_variant(v) for v in ("fp32", "bf16", "bf16+cl", "bf16+compile")]
    args.infer_variants = args.infer_variants or [parse_variant(v) for v in ("fp32", "bf16")]
    if any(v["compile"] for v in args.infer_variants):
        parser.error("--infer-variants: +compile is for training rows only")
    args.steps = args.steps or (2 if tiny else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if tiny else 5)
    args.infer_repeats = args.infer_repeats or (2 if tiny else 50)
    args.compile_backend = args.compile_backend or ("eager" if tiny else "inductor")
    if min(args.batch, args.steps, args.infer_repeats, *args.infer_batches) < 1 or args.warmup < 0:
        parser.error("--batch, --steps, --infer-repeats and --infer-batches must be >= 1, --warmup >= 0")
    if args.budget_s <= 0:
        parser.error("--budget-s must be > 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: no CUDA GPU visible to torch (torch "
              f"{torch.__version__}); run on a GPU machine, or --device cpu --tiny for a smoke check", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark

    rows = plan_rows(args)
    print(f"{len(rows)} rows on {device}, budget {args.budget_s:g} s", flush=True)
    run_rows(rows, args, device, budget)
    summary = derive(rows, split_size("eigen_zhou"))
    env = environment(device)
    omp = os.environ.get("OMP_NUM_THREADS")
    command = (f"OMP_NUM_THREADS={omp} " if omp else "") + "python " + shlex.join(sys.argv if argv is None
                                                                                   else ["benchmarks/bench_gpu.py", *argv])
    md = record_markdown(args, rows, summary, env, command, budget)
    print(md, flush=True)
    lab_dir = args.lab_dir or (None if tiny else LAB_DIR)
    if not args.no_write and lab_dir is not None:
        key = args.key or ("gpu_bench" if device.type == "cuda" else "gpu_bench_cpu")
        data = {"train": [{k: v for k, v in r.items() if k != "kind"} for r in rows if r["kind"] == "train"],
                "inference": [{k: v for k, v in r.items() if k != "kind"} for r in rows if r["kind"] == "infer"],
                "summary": summary, "environment": env, "budget_s": args.budget_s, "elapsed_s": budget.elapsed(),
                "skipped": [f"{r['kind']} {r['arm']} {r['variant']} batch {r['batch']}: {r['status']}"
                            for r in rows if r["status"] != "ok"],
                "tiny": tiny, "command": command}
        path = write_record(key, f"GPU training throughput and inference latency ({env['device_name']})", command, md,
                            data, lab_dir=Path(lab_dir))
        print(f"record -> {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
