"""Accuracy of CPU-sized runs, recorded in docs/RESULTS.md with the commands that made them.

``kitti``: train configs/kitti_sample.yaml on the 48 real KITTI frames of ../shared/data/kitti_sample
and evaluate its last checkpoint with `semhint evaluate` (Eigen protocol: Garg crop, 1e-3..80 m,
per-image median scaling) against the LiDAR of the even frames, next to the median-scaled
constant-depth baseline. ``demo``: run `semhint demo` and record its metrics.

    .venv/bin/python benchmarks/bench_quality.py kitti [overrides...]
    .venv/bin/python benchmarks/bench_quality.py demo --minutes 3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import markdown_table, write_section  # noqa: E402

from semhint.evaluation import METRIC_NAMES  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "kitti_sample"
SPLIT = REPO / "configs" / "splits" / "kitti_sample_even.txt"


def kitti(args) -> None:
    from semhint.core.config import load_config
    from semhint.data.kitti import export_gt
    from semhint.evaluation import evaluate_depth, load_gt_depths, run_evaluation
    from semhint.training import fit

    cfg = load_config(REPO / "configs" / "kitti_sample.yaml", args.overrides)
    gt_path = Path(cfg.data.gt_depth)
    if not gt_path.is_file():
        export_gt(cfg.data.path, SPLIT, gt_path, progress=False)
    run_dir = Path(cfg.trainer.out_dir)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if not args.no_train:
        fit(cfg)
    if args.checkpoint:
        ckpt = Path(args.checkpoint)
    import torch

    step = torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"]
    model = run_evaluation(gt_path, checkpoint=ckpt, split=SPLIT, data_path=cfg.data.path, protocol="kitti-eigen")
    gts, _ = load_gt_depths(gt_path)
    constant = evaluate_depth([np.ones_like(g) for g in gts], gts, crop="garg", median_scaling=True, pred_is_disp=True)
    rows = [{"model": "constant depth, median-scaled", **constant.metrics()},
            {"model": f"{cfg.model.encoder}, {ckpt.name} (step {step})", **model.metrics()}]
    md = (f"{len(gts)} even frames of ../shared/data/kitti_sample (real KITTI, LiDAR GT), Eigen protocol (Garg crop, "
          f"1e-3..80 m, per-image median scaling). The model trains self-supervised on all 46 frames that have both "
          f"neighbours (the evaluated frames included: this is a fit-to-one-drive check, not a generalisation "
          f"result), {cfg.data.height}x{cfg.data.width}, batch {cfg.optim.batch_size}, {cfg.optim.epochs} epochs.\n\n")
    if args.load:
        md += f"Load during measurement: {args.load}\n\n"
    if args.note:
        md += args.note + "\n\n"
    md += markdown_table(rows, ["model", *METRIC_NAMES])
    overrides = " ".join(args.overrides)
    command = (f".venv/bin/python benchmarks/bench_quality.py kitti {overrides}\n"
               f"# = semhint kitti export-gt --data-path {cfg.data.path} --split {SPLIT.relative_to(REPO)} --output {gt_path}\n"
               f"#   semhint train configs/kitti_sample.yaml {overrides}\n"
               f"#   semhint evaluate --gt {gt_path} --checkpoint {ckpt} --split {SPLIT.relative_to(REPO)} "
               f"--data-path {cfg.data.path} --protocol kitti-eigen")
    write_section("kitti_sample", "Real KITTI sample: trained model vs constant depth (Eigen protocol)", command, md,
                  {"rows": rows, "checkpoint": str(ckpt), "step": step, "overrides": args.overrides, "load": args.load})


def demo(args) -> None:
    from semhint.demo import run_demo

    out = Path(args.out) if args.no_run else run_demo(args.out, minutes=args.minutes, preset="demo", seed=0)
    result = json.loads((Path(out) / "metrics.json").read_text())
    rows = [{"model": "constant depth, median-scaled", **result["constant_depth_baseline"]}]
    rows += [{"model": name, **run["metrics"]} for name, run in result["runs"].items()]
    md = (f"SynthDrive demo preset, {result['test_frames']} held-out test frames, exact depth, generic protocol "
          f"(per-image median scaling). Whole demo (render + train + evaluate + report): "
          f"{result['seconds'] / 60:.1f} min.\n\n")
    if args.load:
        md += f"Load during measurement: {args.load}\n\n"
    if args.note:
        md += args.note + "\n\n"
    md += markdown_table(rows, ["model", *METRIC_NAMES])
    write_section("demo", "`semhint demo`: SynthDrive, trained on CPU for a few minutes",
                  f"semhint demo --out {args.out} --minutes {args.minutes:g}", md, {"rows": rows, **result, "load": args.load})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    k = sub.add_parser("kitti")
    k.add_argument("overrides", nargs="*")
    k.add_argument("--load", default="")
    k.add_argument("--no-train", action="store_true", help="evaluate the run folder's last.ckpt without training")
    k.add_argument("--checkpoint", default="", help="with --no-train: evaluate this checkpoint instead of last.ckpt")
    k.add_argument("--note", default="", help="a sentence on the run, written above the table")
    d = sub.add_parser("demo")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--minutes", type=float, default=3.0)
    d.add_argument("--load", default="")
    d.add_argument("--no-run", action="store_true", help="record the report already in --out without rerunning")
    d.add_argument("--note", default="", help="a sentence on the run, written above the table")
    args = parser.parse_args()
    (kitti if args.what == "kitti" else demo)(args)


if __name__ == "__main__":
    main()
