"""Accuracy of CPU-sized runs, recorded as lab records (docs/lab/) with the commands that made them.

``kitti``: train kitti_sample on the 48 real KITTI frames of ../shared/data/kitti_sample and evaluate
its last checkpoint with semhint.lab.evaluator (the config's Eigen protocol: Garg crop, 1e-3..80 m,
per-image median scaling) against the LiDAR of the even frames, next to the median-scaled
constant-depth baseline. ``demo``: run `semhint demo` and record its metrics.

    python experiments/quality.py kitti [overrides...]
    python experiments/quality.py demo   # = semhint demo (600 steps per arm)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from semhint.app.demo import run_demo
from semhint.core.checkpoints import read_checkpoint
from semhint.core.config import load_config
from semhint.data.kitti import export_gt
from semhint.evaluation.metrics import METRIC_NAMES
from semhint.lab.evaluator import REPORTS, constant_depth_report, evaluate_run, load_kitti_split
from semhint.lab.records import markdown_table, write_record
from semhint.training import fit

SAMPLE_SPLIT = "splits/kitti_sample_even.txt"  # the even frames of ../shared/data/kitti_sample, which have LiDAR


def kitti(args) -> None:
    cfg = load_config("kitti_sample", args.overrides)
    gt_path = Path(cfg.data.gt_depth)
    if not gt_path.is_file():
        export_gt(cfg.data.path, SAMPLE_SPLIT, gt_path, progress=False)
    ckpt = Path(cfg.trainer.out_dir) / "checkpoints" / "last.ckpt"
    if not args.no_train:
        fit(cfg, overwrite=True)  # a re-run retrains; the previous run is moved aside, not deleted
    if args.checkpoint:
        ckpt = Path(args.checkpoint)
    step = read_checkpoint(ckpt).global_step
    frames = load_kitti_split(cfg.data.path, SAMPLE_SPLIT, gt_path)
    model = evaluate_run(ckpt, frames, REPORTS["kitti"], cfg=cfg)["metrics"]
    constant = constant_depth_report(frames, cfg.eval, REPORTS["kitti"])["metrics"]
    rows = [{"model": "constant depth, median-scaled", **constant},
            {"model": f"{cfg.model.encoder}, {ckpt.name} (step {step})", **model}]
    md = (f"{len(frames.depths)} even frames of ../shared/data/kitti_sample (real KITTI, LiDAR GT), Eigen protocol (Garg crop, "
          f"1e-3..80 m, per-image median scaling). The model trains self-supervised on all 46 frames that have both "
          f"neighbours (the evaluated frames included: this is a fit-to-one-drive check, not a generalisation "
          f"result), {cfg.data.height}x{cfg.data.width}, batch {cfg.optim.batch_size}, {cfg.optim.epochs} epochs.\n\n")
    if args.load:
        md += f"Load during measurement: {args.load}\n\n"
    if args.note:
        md += args.note + "\n\n"
    md += markdown_table(rows, ["model", *METRIC_NAMES])
    overrides = " ".join(args.overrides)
    command = (f"python experiments/quality.py kitti {overrides}\n"
               f"# = semhint kitti export-gt --data-path {cfg.data.path} --split {SAMPLE_SPLIT} --output {gt_path}\n"
               f"#   semhint train kitti_sample {overrides}\n"
               f"#   semhint evaluate --gt {gt_path} --checkpoint {ckpt} --split {SAMPLE_SPLIT} "
               f"--data-path {cfg.data.path} --protocol kitti-eigen")
    write_record("kitti_sample", "Real KITTI sample: trained model vs constant depth (Eigen protocol)", command, md,
                 {"rows": rows, "checkpoint": str(ckpt), "step": step, "overrides": args.overrides, "load": args.load})


def demo(args) -> None:
    out = Path(args.out) if args.no_run else run_demo(args.out, preset="demo", seed=args.seed)
    result = json.loads((Path(out) / "metrics.json").read_text())
    rows = [{"model": "constant depth, median-scaled", **result["constant_depth_baseline"]}]
    rows += [{"model": name, **run["metrics"]} for name, run in result["runs"].items()]
    md = (f"SynthDrive demo preset, {result['test_frames']} held-out test frames, exact depth, generic protocol "
          f"(per-image median scaling); {result['steps']} steps per run at {result['size']}, seed {result['seed']}. Whole demo (render + train + evaluate + report): "
          f"{result['seconds'] / 60:.1f} min.\n\n")
    if args.load:
        md += f"Load during measurement: {args.load}\n\n"
    if args.note:
        md += args.note + "\n\n"
    md += markdown_table(rows, ["model", *METRIC_NAMES])
    write_record("demo", "`semhint demo`: SynthDrive, both arms 600 steps on CPU",
                 f"semhint demo --out {args.out} --seed {result['seed']}", md, {"rows": rows, **result, "load": args.load})


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
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--load", default="")
    d.add_argument("--no-run", action="store_true", help="record the report already in --out without rerunning")
    d.add_argument("--note", default="", help="a sentence on the run, written above the table")
    args = parser.parse_args()
    (kitti if args.what == "kitti" else demo)(args)


if __name__ == "__main__":
    main()
