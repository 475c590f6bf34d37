"""Seed sweeps: recipes compared over seeds on a synthetic world, same data and same step budget for every run.

A sweep renders (or reuses) a world, makes the noisy labels the configs ask for, trains every
(config, seed) pair for a fixed number of steps, evaluates each run with ``semhint.lab.evaluator``
and caches the result as ``OUT/runs/<name>/seed<k>/result.json``, so an interrupted sweep resumes
where it stopped and the table is rebuilt from the cache alone. Configs are used unchanged except
for what makes runs comparable: every ``runs/synth_<world>/...`` path is rebased onto the sweep's
data, and the step budget, batch, size, seed, thread count and output folder are set here.
Label folders are made on demand from their name: ``labels<N>`` = a labeler fitted on N labelled
frames; ``corrupt<S>`` = the ground truth corrupted at strength S.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml

from semhint.core.config import Config, from_dict, load_config, to_dict
from semhint.core.fileio import write_json
from semhint.core.stats import compare_seeds, format_comparison
from semhint.data.build import build_dataset
from semhint.data.synthetic import render_drive, render_tissue
from semhint.evaluation.metrics import METRIC_NAMES
from semhint.data import kitti
from semhint.lab.evaluator import (
    MOVING_GROUPS,
    REPORTS,
    SplitData,
    constant_depth_report,
    evaluate_run,
    load_kitti_split,
    load_split,
)
from semhint.lab.records import markdown_table
from semhint.labelmaker.corrupt import corrupt_label_dir
from semhint.labelmaker.labeler import predict_labels, train_labeler
from semhint.models import build_depth_net, parameter_report
from semhint.training import SemHintModule, collate_snippets, fit


@dataclass
class Sweep:
    """What a sweep trains and how: the settings every run shares."""

    world: str = "drive"
    out: str = "runs/semhint_bench"
    data: str = ""  # rendered world root (default OUT/<world>)
    configs: list[str] = field(default_factory=lambda: ["synth_drive", "semhint_synth_drive"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    steps: int = 300
    batch_size: int = 4
    size: str = ""  # network input HxW ('' = the config's)
    encoder: str = ""  # override model.encoder for every run
    labels: str | None = None  # label folder for every config with a branch (labels<N> | corrupt<S>)
    labeler_steps: int = 200
    accelerator: str = "cpu"
    set: list[str] = field(default_factory=list)  # extra SECTION.KEY=VALUE for every run
    tag: str = ""  # suffix of the run names, to keep variants of --set apart
    also: list[str] = field(default_factory=list)  # more result caches to pool seeds from
    reevaluate: bool = False
    arms: dict[str, str] = field(default_factory=dict)  # config -> short arm name: runs at OUT/<arm>-s<seed>
    eval_split: str = ""  # split scored after training ('' = DATA/splits/test.txt; real KITTI: a LiDAR split)

    def __post_init__(self) -> None:
        self.data = self.data or str(Path(self.out) / self.world)


# ----------------------------------------------------------------------------------------------
# data and labels
# ----------------------------------------------------------------------------------------------
def ensure_data(world: str, root: Path, sequences: int, frames: int, size: str, seed: int = 0,
                preset: str = "demo") -> Path:
    """Render the synthetic world once; a finished render is reused (meta.json, written last: an
    interrupted render has its splits but not it, and is rendered again)."""
    if (root / "meta.json").is_file() and (root / "splits" / "test.txt").is_file():
        return root
    render = render_drive if world == "drive" else render_tissue
    render(root, preset=preset, seed=seed, sequences=sequences, frames=frames, size=size)
    return root


def ensure_labels(root: Path, name: str, world: str, size: tuple[int, int], labeler_steps: int) -> Path:
    """Make the noisy label folder ``root/name`` from its name (see the module docstring)."""
    out = root / name
    if name == "gt_labels" or (out / "labels_info.json").is_file() or (out / "corruption.json").is_file():
        return out
    classes = REPORTS[world].class_set.name
    if name.startswith("corrupt"):
        corrupt_label_dir(root / "gt_labels", out, float(name[len("corrupt"):]), seed=0, classes=classes)
    elif name.startswith("labels"):
        model = root / f"labeler{name[len('labels'):]}.ckpt"
        train_labeler(root / "data", root / "gt_labels", model, classes=classes, size=size, steps=labeler_steps,
                      frames=int(name[len("labels"):]), encoder="efficientnet_lite0", pretrained="package",
                      gt_labels=root / "gt_labels")
        predict_labels(model, root / "data", out, gt_labels=root / "gt_labels")
    else:
        raise ValueError(f"label folder name {name!r}: expected labels<N> or corrupt<S>")
    return out


def label_folders(sweep: Sweep) -> list[str]:
    """The noisy label folders the sweep's SemHint configs read (or ``sweep.labels`` for all of them)."""
    if sweep.labels:
        return [sweep.labels]
    return sorted({Path(load_config(c).data.labels).name for c in sweep.configs if load_config(c).model.num_classes > 0})


# ----------------------------------------------------------------------------------------------
# one run
# ----------------------------------------------------------------------------------------------
def arm_labels(sweep: Sweep, config: str) -> str | None:
    """The sweep's label folder for a config with a segmentation branch; None for a depth-only one."""
    return sweep.labels if load_config(config).model.num_classes > 0 else None


def run_config(config: str, sweep: Sweep, seed: int, run_dir: Path, labels: str | None) -> Config:
    """The config with paths rebased onto the sweep's data and the shared budget applied."""
    values = to_dict(load_config(config))
    data = values["data"]
    # the render the config names (runs/synth_drive, runs/synth_town, ...) moves to the sweep's data
    named = Path(data["path"]).parts[:2]
    prefix = "/".join(named) if named[:1] == ("runs",) and named[1:2] and named[1].startswith("synth_") \
        else f"runs/synth_{sweep.world}"
    for key in ("path", "train_split", "val_split", "gt_depth", "labels", "gt_labels", "poses"):
        if data[key].startswith(prefix):
            data[key] = str(Path(sweep.data) / data[key][len(prefix) + 1:])
    if labels and values["model"]["num_classes"] > 0:
        data["labels"] = str(Path(sweep.data) / labels)
    data.update(val_split="", num_workers=0)  # no validation: the test split is evaluated afterwards
    if sweep.world == "kitti":
        data["gt_depth"] = ""  # real frames: LiDAR scores a run afterwards and never reaches training
    if sweep.size:
        data["height"], data["width"] = (int(v) for v in sweep.size.split("x"))
    if sweep.encoder:
        values["model"]["encoder"] = sweep.encoder
        values["model"]["pretrained"] = "package" if sweep.encoder == "efficientnet_lite0" else ""
    if sweep.steps > 0:  # a step budget replaces the config's epochs (0 keeps its schedule as written)
        values["optim"].update(max_steps=sweep.steps, epochs=10_000, milestones=[10_000])
    values["optim"]["batch_size"] = sweep.batch_size
    values["trainer"].update(out_dir=str(run_dir), seed=seed, accelerator=sweep.accelerator, devices=1, num_threads=1,
                             log_every_n_steps=5, image_log_every_n_steps=0)
    for item in sweep.set:
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        values[section][name] = yaml.safe_load(value)
    return from_dict(values, f"{config} (sweep)")


def eval_split(sweep: Sweep) -> Path:
    """The split a run is scored on: ``sweep.eval_split``, or the rendered world's test split."""
    return Path(sweep.eval_split) if sweep.eval_split else Path(sweep.data) / "splits" / "test.txt"


def holdout_lines(train_lines: list[str], scored_lines: list[str], frame_ids: list[int], middle: int, half: str
                  ) -> tuple[list[str], list[str]]:
    """Split one clip at frame ``middle``: (training lines whose target and every neighbour lie in ``half``,
    scored lines from the other half), so no scored frame is ever seen in training, not even as a
    neighbour. Lines are ``folder frame side`` as in KITTI split files; the first half is frames < middle."""
    if half not in ("first", "second"):
        raise ValueError(f"holdout half {half!r}: expected 'first' or 'second'")

    def in_half(frame: int, which: str) -> bool:
        return (frame < middle) == (which == "first")

    other = "second" if half == "first" else "first"
    train = [line for line in train_lines if all(in_half(int(line.split()[1]) + f, half) for f in frame_ids)]
    scored = [line for line in scored_lines if in_half(int(line.split()[1]), other)]
    return train, scored


def scoring_config(sweep: Sweep, config: str, cfg: Config) -> Config:
    """``cfg`` with the ground truth it was trained without (real KITTI: the LiDAR npz), for scoring only."""
    if sweep.world != "kitti":
        return cfg
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, gt_depth=load_config(config).data.gt_depth))


def eval_data(sweep: Sweep, config: str, cfg: Config) -> SplitData:
    """The scored frames with their ground truth and the noisy labels the run learned from (on real
    frames every arm gets the sweep's labels: they are the only classes to break its error down by)."""
    labels = cfg.data.labels if cfg.model.num_classes else ""
    if sweep.world == "kitti" and not labels and sweep.labels:
        labels = str(Path(sweep.data) / sweep.labels)
    if sweep.world == "kitti":
        return load_kitti_split(cfg.data.path, eval_split(sweep), load_config(config).data.gt_depth, labels)
    return load_split(cfg, eval_split(sweep), Path(sweep.data), labels)


def diagnostics_split(sweep: Sweep, cfg: Config, run_dir: Path) -> Path:
    """Where the hint statistics are measured: the scored split, less (on KITTI) frames without all neighbours."""
    split = eval_split(sweep)
    if sweep.world != "kitti":
        return split
    usable = set(kitti.scan_split_lines(cfg.data.path, cfg.data.frame_ids))
    lines = [line for line in split.read_text().split("\n") if " ".join(line.split()) in usable]
    path = run_dir / "diagnostics_split.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def refine_stats(run_dir: Path) -> dict:
    """Mean of each logged refine/* training statistic over the logged steps (gate acceptance etc.)."""
    path = run_dir / "logs" / "csv" / "metrics.csv"
    if not path.is_file():
        return {}
    sums: dict[str, list[float]] = {}
    with path.open() as fh:
        for row in csv.DictReader(fh):
            for key, value in row.items():
                if key.startswith("train/refine/") and value not in ("", None):
                    sums.setdefault(key[len("train/refine/"):], []).append(float(value))
    return {k: float(np.mean(v)) for k, v in sums.items()}


def one_run(sweep: Sweep, config: str, seed: int, run_dir: Path, labels: str | None) -> dict:
    """Train + evaluate one (config, seed) into ``run_dir/result.json`` (what each launched process does)."""
    cfg = run_config(config, sweep, seed, run_dir, labels)
    previous, trained = run_dir / "result.json", run_dir / "trained.json"
    if sweep.reevaluate and previous.is_file():  # re-measure a trained run (e.g. after adding a metric)
        seconds = json.loads(previous.read_text())["train_seconds"]
    elif trained.is_file():  # trained to the end, but scoring failed: score it again, do not retrain
        seconds = json.loads(trained.read_text())["train_seconds"]
    else:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        t0 = time.perf_counter()
        fit(cfg)
        seconds = time.perf_counter() - t0
        write_json(trained, {"train_seconds": seconds})
    data = eval_data(sweep, config, cfg)
    result = evaluate_run(run_dir / "checkpoints" / "last.ckpt", data, REPORTS[sweep.world],
                          split=diagnostics_split(sweep, cfg, run_dir), cfg=scoring_config(sweep, config, cfg))
    shared = parameter_report(build_depth_net(cfg.model))["shared_decoder"]
    result.update(config=config, seed=seed, steps=sweep.steps, train_seconds=seconds,
                  labels=Path(cfg.data.labels).name if cfg.model.num_classes else "",
                  shared_layers=cfg.model.shared_layers if cfg.model.num_classes else None,
                  shared_params=shared if cfg.model.num_classes else None, refine=refine_stats(run_dir))
    write_json(run_dir / "result.json", result)
    for ckpt in (run_dir / "checkpoints").glob("best-*.ckpt"):  # keep last.ckpt only: disk is shared
        ckpt.unlink()
    return result


def gradient_norms(sweep: Sweep) -> list[dict]:
    """Per loss term, the gradient norm it sends into each part of the depth net, at initialisation.

    A diagnostic for "which term drives the network early on": one batch of training snippets
    (first frames of the train split), the full objective with the refinements forced on.
    """
    parts = ("encoder", "decoder.shared", "decoder.depth", "decoder.disp_heads", "decoder.seg")
    rows = []
    for config in sweep.configs:
        cfg = run_config(config, sweep, 0, Path(sweep.out) / "grad_norms", arm_labels(sweep, config))
        cfg = dataclasses.replace(cfg, refine=dataclasses.replace(cfg.refine, warmup_epochs=0))
        torch.manual_seed(0)
        module = SemHintModule(cfg)
        dataset = build_dataset(cfg.data, "train")
        losses, _, _ = module.objective(collate_snippets([dataset[i] for i in range(sweep.batch_size)]))
        for term in ("photo", "seg", "refine/hint", "refine/pseudo_seg", "loss"):
            if term not in losses or not losses[term].requires_grad:
                continue
            module.zero_grad()
            losses[term].backward(retain_graph=True)
            row = {"config": Path(config).stem, "term": term, "value": float(losses[term])}
            for part in parts:
                sq = [p.grad.pow(2).sum() for n, p in module.depth_net.named_parameters()
                      if n.startswith(part) and p.grad is not None]
                row[part] = float(torch.stack(sq).sum().sqrt()) if sq else 0.0
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------
# the sweep
# ----------------------------------------------------------------------------------------------
def run_name(config: str, labels: str | None, tag: str) -> str:
    name = Path(config).stem
    return f"{name}{'-' + labels if labels else ''}{'-' + tag if tag else ''}"


Run = tuple[str, int, Path, "str | None"]  # (config, seed, run folder, labels)


def run_dir(sweep: Sweep, config: str, labels: str | None, seed: int, tag: str | None = None) -> Path:
    """OUT/<arm>-s<seed> for a config named in ``sweep.arms``, else OUT/runs/<run name>/seed<seed>."""
    if config in sweep.arms:
        return Path(sweep.out) / f"{sweep.arms[config]}-s{seed}"
    return Path(sweep.out) / "runs" / run_name(config, labels, sweep.tag if tag is None else tag) / f"seed{seed}"


def plan_runs(sweep: Sweep) -> tuple[list[Run], list[Run]]:
    """(to run, finished) lists of (config, seed, run_dir, labels), in launch order.

    Seed-major: a sweep stopped part-way (a time limit) leaves whole seeds, every config of
    each, i.e. results that pair up seed by seed.
    """
    todo, done = [], []
    for seed in sweep.seeds:
        for config in sweep.configs:
            labels = arm_labels(sweep, config)
            folder = run_dir(sweep, config, labels, seed)
            finished = (folder / "result.json").is_file() and not sweep.reevaluate
            (done if finished else todo).append((config, seed, folder, labels))
    return todo, done


def launch(sweep: Sweep, command: Callable[[Run], list[str]], jobs: int = 2) -> list[Path]:
    """Run every missing (config, seed) as a process ``command(run)``, ``jobs`` at a time, one torch thread each."""
    todo, done = plan_runs(sweep)
    procs: list[tuple[subprocess.Popen, Path]] = []
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    while todo or procs:
        while todo and len(procs) < jobs:
            run = todo.pop(0)
            folder = run[2]
            folder.mkdir(parents=True, exist_ok=True)
            log = (folder.parent / f"{folder.name}{'.eval' if sweep.reevaluate else ''}.log").open("w")
            print(f"[sweep] start {folder}", flush=True)
            procs.append((subprocess.Popen(command(run), stdout=log, stderr=subprocess.STDOUT, env=env), folder))
        time.sleep(2)
        for proc, run_dir in list(procs):
            if proc.poll() is not None:
                procs.remove((proc, run_dir))
                ok = (run_dir / "result.json").is_file()
                print(f"[sweep] {'done' if ok else 'FAILED (see log)'} {run_dir}", flush=True)
    return [d for _, _, d, _ in done]


def collect(sweep: Sweep) -> dict[str, list[dict]]:
    """Every cached result of this sweep's configs, grouped by run name.

    ``sweep.also`` names more caches (e.g. the same sweep's other seeds, trained on another machine):
    a seed is read from the first cache that has it, so seeds pool across them.
    """
    roots = [Path(out) / "runs" for out in [sweep.out, *sweep.also]]
    groups: dict[str, list[dict]] = {}
    for config in sweep.configs:
        labels = arm_labels(sweep, config)
        if config in sweep.arms:
            for seed in sweep.seeds:
                paths = [run_dir(dataclasses.replace(sweep, out=out), config, labels, seed) / "result.json"
                         for out in [sweep.out, *sweep.also]]
                path = next((p for p in paths if p.is_file()), None)
                if path is not None:
                    groups.setdefault(sweep.arms[config], []).append(json.loads(path.read_text()))
            continue
        # a tag names variants made with --set; runs without one (e.g. the baseline) stay comparable
        names = [run_name(config, labels, sweep.tag), run_name(config, labels, "")]
        name = next((n for n in names if any((root / n).is_dir() for root in roots)), names[0])
        for seed in sweep.seeds:
            path = next((p for p in (root / name / f"seed{seed}" / "result.json" for root in roots) if p.is_file()), None)
            if path is not None:
                groups.setdefault(name, []).append(json.loads(path.read_text()))
    return groups


def constant_depth_result(sweep: Sweep) -> dict:
    """The trivial reference on the sweep's test split: one constant depth per image."""
    config = sweep.configs[0]
    cfg = run_config(config, sweep, 0, Path(sweep.out) / "constant", arm_labels(sweep, config))
    data = eval_data(sweep, config, cfg)
    return constant_depth_report(data, cfg.eval, REPORTS[sweep.world])


# ----------------------------------------------------------------------------------------------
# the table
# ----------------------------------------------------------------------------------------------
def _mean_std(values: list[float | None]) -> str:
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def _mean_of(dicts: list[dict], key: str) -> str:
    values = [d[key] for d in dicts if key in d]
    return f"{np.mean(values):.3f}" if values else "-"


def has_branch(result: dict) -> bool:
    """Whether a run had a segmentation branch (its result records the shared decoder layers)."""
    return result.get("shared_layers") is not None or "branch_miou" in result


def baseline_results(groups: dict[str, list[dict]]) -> list[dict]:
    """The first depth-only (no branch) run group: what every row is compared with."""
    for results in groups.values():
        if "seed" in results[0] and not has_branch(results[0]):
            return results
    return []


def abs_rel_by_seed(results: list[dict], cls: str | None = None) -> dict[int, float]:
    """AbsRel per seed, overall or of one reported class."""
    return {r["seed"]: r["metrics"]["abs_rel"] if cls is None else r["per_class_abs_rel"][cls]
            for r in results if "seed" in r and (cls is None or r["per_class_abs_rel"].get(cls) is not None)}


def vs_baseline(baseline: list[dict], results: list[dict], cls: str | None = None, short: bool = False) -> str:
    """Difference of mean AbsRel to the baseline with Welch's 95 % interval, p, and seeds won."""
    ref, mine = abs_rel_by_seed(baseline, cls), abs_rel_by_seed(results, cls)
    if len(ref) < 2 or len(mine) < 2 or results is baseline:
        return "-"
    c = compare_seeds(ref, mine)
    return f"{c.diff:+.3f} (p={c.p:.2f}, {c.wins}/{c.shared})" if short else format_comparison(c)


def table(groups: dict[str, list[dict]], world: str) -> tuple[str, list[dict]]:
    """Markdown rows (mean ± std over seeds) and the raw rows for the JSON (constant depth first)."""
    spec = REPORTS[world]
    classes = list(spec.classes) + (["sky-adjacent"] if spec.sky is not None else [])
    classes += [g for g in MOVING_GROUPS if any(g in r["per_class_abs_rel"] for rs in groups.values() for r in rs)]
    baseline = baseline_results(groups)
    rows, raw = [], []
    for name, results in groups.items():
        row = {"run": name, "seeds": len(results) if "seed" in results[0] else "-"}
        for m in METRIC_NAMES:
            row[m] = _mean_std([r["metrics"][m] for r in results])
        row["AbsRel vs baseline"] = vs_baseline(baseline, results)
        for c in classes:
            row[f"AbsRel {c}"] = _mean_std([r["per_class_abs_rel"].get(c) for r in results])
        per_class = [f"{c} {vs_baseline(baseline, results, c, short=True)}" for c in classes]
        row["per class vs baseline"] = "; ".join(per_class) if row["AbsRel vs baseline"] != "-" else "-"
        biases = {c: [r["per_class_log_bias"][c] for r in results if c in r.get("per_class_log_bias", {})]
                  for c in classes}
        row["log(pred/GT) per class"] = "; ".join(f"{c} {np.mean(v):+.3f}" for c, v in biases.items() if v) or "-"
        if has_branch(results[0]):
            row["branch mIoU"] = _mean_std([r.get("branch_miou") for r in results])
            row["noisy-label mIoU"] = _mean_std([r.get("noisy_labels_test_miou") for r in results])
            row["branch vs its labels mIoU"] = _mean_std([r.get("branch_vs_noisy_miou") for r in results])
            row["k (shared params)"] = f"{results[0]['shared_layers']} ({results[0]['shared_params']:,})"
            diag = [r.get("refine_test", {}) for r in results]
            row["hint accept"] = _mean_of(diag, "hint_accept_rate")
            row["hint / pred AbsRel @accepted"] = f"{_mean_of(diag, 'hint_gt_absrel')} / {_mean_of(diag, 'pred_gt_absrel')}"
            row["pseudo / noisy label acc"] = (f"{_mean_of(diag, 'pseudo_label_gt_accuracy')} / "
                                               f"{_mean_of(diag, 'noisy_label_gt_accuracy')}")
        seconds = [r["train_seconds"] for r in results if "train_seconds" in r]
        spread = [r["depth_spread"] for r in results if "depth_spread" in r]
        row["depth p95/p5"] = f"{np.mean(spread):.2f}" if spread else "-"
        row["train min"] = f"{np.mean(seconds) / 60:.1f}" if seconds else "-"
        rows.append(row)
        raw.append({"run": name, "results": results})
    columns = ["run", "seeds", *METRIC_NAMES, "AbsRel vs baseline", *[f"AbsRel {c}" for c in classes], "per class vs baseline",
               "log(pred/GT) per class", "branch mIoU", "noisy-label mIoU", "branch vs its labels mIoU", "k (shared params)", "hint accept",
               "hint / pred AbsRel @accepted", "pseudo / noisy label acc", "depth p95/p5", "train min"]
    return markdown_table(rows, columns), raw


def table_notes(sweep: Sweep) -> str:
    """What the table's columns mean and under which budget its runs trained."""
    return (f"Test split of the rendered data (`{sweep.data}`), exact depth, generic protocol (per-image median "
            f"scaling, cap {load_config(sweep.configs[0]).eval.max_depth:g}); mean ± sample std over seeds. "
            f"Budget: {sweep.steps} steps of batch {sweep.batch_size} for every run, 1 torch thread per run"
            f"{', trained on one GPU shared by the runs (evaluated on CPU)' if sweep.accelerator == 'gpu' else ''}. "
            "AbsRel per class pools all test pixels of the class (ground-truth labels); sky-adjacent = "
            "valid pixels within 3 px of sky; car moving / car parked (where the render wrote gt_dynamic/): car "
            "pixels the renderer moves on their own (the lead car at the camera's speed, oncoming cars) or not. "
            "log(pred/GT) per class: mean over the class's pixels of the log ratio of the scaled prediction to the "
            "ground truth, averaged over seeds (> 0: too far, < 0: too near). "
            "depth p95/p5: median over test frames of the ratio of the 95th to the 5th "
            "percentile of the predicted (unscaled) depth; about 1 means a collapsed, constant prediction. AbsRel vs "
            "baseline: mean AbsRel minus the depth-only baseline's, Welch's 95 % interval, two-sided p, and the shared "
            "seeds where the run beat the baseline (negative = better; an interval that holds 0 is no proven "
            "difference); per class: the same difference, p and seeds won for each class's AbsRel. Branch mIoU: the "
            "segmentation head vs ground truth; noisy-label mIoU: the labels it learned from, on the same test frames. "
            "Hint accept: mean fraction of pixels the Depth Hints gate let the hint train (over logged steps after "
            "warm-up).")


def python_command(script: str) -> str:
    """The command line that made this record, as a reader would retype it."""
    return "python " + " ".join(shlex.quote(a) for a in [script, *(a for a in sys.argv[1:] if a != "--report-only")])
