"""SemHint vs the depth-only baseline on the synthetic worlds: same data, same step budget, N seeds.

One command renders (or reuses) a synthetic dataset, makes the noisy labels the configs ask for,
trains every (config, seed) pair for a fixed number of steps, evaluates each run on the test split
and writes a table into docs/RESULTS.md (benchmarks/_results.py). Runs are independent
subprocesses (``--jobs`` at a time, one torch thread each) whose results are cached as
``OUT/runs/<name>/seed<k>/result.json``, so an interrupted sweep resumes where it stopped and the
table can be rebuilt from the cache alone (``--report-only``).

Configs are the project's YAML files, unchanged except for what makes runs comparable: every
``runs/synth_<world>/...`` path is rebased onto ``--data``, the step budget, batch size, input size,
seed, thread count and output folder are set here, and (optionally) ``--labels`` replaces the
label folder of every SemHint config. Label folders are made on demand from their name:
``labels<N>`` = ``semhint labels train`` on N labelled frames + ``labels predict``;
``corrupt<S>`` = ``semhint labels corrupt --strength S`` of the ground truth.

Evaluation (test split, exact rendered depth, the config's generic protocol: median scaling,
depth cap): the seven standard metrics; AbsRel per class from the ground-truth labels (car, road,
pole; "sky-adjacent" = valid pixels within a few pixels of sky, where depth edges are hardest; tissue:
every class); for SemHint runs the branch's mIoU against ground truth next to the mIoU of the noisy
labels it learned from (does the branch denoise them?).

Example (the SynthDrive table in docs/RESULTS.md):
    python benchmarks/run_semhint.py --world drive --out runs/semhint_bench --steps 300 --seeds 0 1 2 \\
        --configs configs/synth_drive.yaml configs/semhint_synth_drive.yaml --labels corrupt0.5
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from semhint.core.config import Config, from_dict, load_config, to_dict  # noqa: E402

METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
WORLDS = {  # render preset overrides, the classes reported, the class set name
    "drive": {"classes": "cityscapes", "report": {"car": [13], "road": [0], "pole": [5]}, "sky": 10},
    "tissue": {"classes": "tissue", "report": {"tissue A": [0], "tissue B": [1], "instrument": [2]}, "sky": None},
}

MOVING_GROUPS = ("car moving", "car parked")  # reported where the render has gt_dynamic/ (SynthDrive)

# ----------------------------------------------------------------------------------------------
# data and labels
# ----------------------------------------------------------------------------------------------
def ensure_data(world: str, root: Path, sequences: int, frames: int, size: str, seed: int) -> Path:
    """Render the synthetic world once; an existing render (splits/test.txt present) is reused."""
    if (root / "splits" / "test.txt").is_file():
        return root
    from semhint.data.synthetic import render_drive, render_tissue

    render = render_drive if world == "drive" else render_tissue
    render(root, preset="demo", seed=seed, sequences=sequences, frames=frames, size=size)
    return root


def ensure_labels(root: Path, name: str, world: str, size: tuple[int, int], labeler_steps: int) -> Path:
    """Make the noisy label folder ``root/name`` from its name (see the module docstring)."""
    out = root / name
    if name == "gt_labels" or (out / "labels_info.json").is_file() or (out / "corruption.json").is_file():
        return out
    classes = WORLDS[world]["classes"]
    if name.startswith("corrupt"):
        from semhint.data.synthetic.corrupt import corrupt_label_dir

        corrupt_label_dir(root / "gt_labels", out, float(name[len("corrupt"):]), seed=0, classes=classes)
    elif name.startswith("labels"):
        from semhint.labelmaker import predict_labels, train_labeler

        model = root / f"labeler{name[len('labels'):]}.ckpt"
        train_labeler(root / "data", root / "gt_labels", model, classes=classes, size=size, steps=labeler_steps,
                      frames=int(name[len("labels"):]), encoder="efficientnet_lite0", pretrained="package",
                      gt_labels=root / "gt_labels")
        predict_labels(model, root / "data", out, gt_labels=root / "gt_labels")
    else:
        raise SystemExit(f"label folder name {name!r}: expected labels<N> or corrupt<S>")
    return out


def label_folders(args) -> list[str]:
    """The noisy label folders the sweep's SemHint configs read (or ``--labels`` for all of them)."""
    if args.labels:
        return [args.labels]
    names = {Path(load_config(c).data.labels).name for c in args.configs if load_config(c).model.num_classes > 0}
    return sorted(names)


# ----------------------------------------------------------------------------------------------
# one run
# ----------------------------------------------------------------------------------------------
def run_config(config_path: Path, args, seed: int, run_dir: Path, labels: str | None) -> Config:
    """The config file with paths rebased onto the benchmark data and the shared budget applied."""
    values = to_dict(load_config(config_path))
    prefix = f"runs/synth_{args.world}"
    data = values["data"]
    for key in ("path", "train_split", "val_split", "gt_depth", "labels", "gt_labels"):
        if data[key].startswith(prefix):
            data[key] = str(Path(args.data) / data[key][len(prefix) + 1:])
    if labels and values["model"]["num_classes"] > 0:
        data["labels"] = str(Path(args.data) / labels)
    data.update(val_split="", num_workers=0)  # no validation: the test split is evaluated afterwards
    if args.size:
        data["height"], data["width"] = (int(v) for v in args.size.split("x"))
    if args.encoder:
        values["model"]["encoder"] = args.encoder
        values["model"]["pretrained"] = "package" if args.encoder == "efficientnet_lite0" else ""
    values["optim"].update(max_steps=args.steps, epochs=10_000, milestones=[10_000], batch_size=args.batch_size)
    values["trainer"].update(out_dir=str(run_dir), seed=seed, accelerator=args.accelerator, devices=1, num_threads=1,
                             log_every_n_steps=5, image_log_every_n_steps=0)
    for item in args.set or []:
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        import yaml

        values[section][name] = yaml.safe_load(value)
    return from_dict(values, f"{config_path} (benchmark)")


def _frame_maps(cfg: Config, root: Path, split: Path, label_root: str) -> tuple[list, list, list, list, list]:
    """(rgb, gt depth, gt labels, noisy labels, moving-object masks) for every test frame.

    Noisy labels are [] without a label folder; the masks are [] unless the render wrote gt_dynamic/
    (SynthDrive renders before it existed did not: re-rendering with the same seed adds it, bit-identical).
    """
    from semhint.data.frames import mirrored_path
    from semhint.core.fileio import read_depth_png
    from semhint.core.fileio import read_label_png
    from semhint.data.build import frame_refs
    from semhint.core.fileio import read_rgb

    refs = frame_refs(cfg.data, str(split))
    rgbs = [read_rgb(r.target) for r in refs]
    depths = [read_depth_png(mirrored_path(root / "gt_depth", r.target, r.data_root)) for r in refs]
    gt_labels = [read_label_png(mirrored_path(root / "gt_labels", r.target, r.data_root)) for r in refs]
    noisy = [read_label_png(mirrored_path(label_root, r.target, r.data_root)) for r in refs] if label_root else []
    dynamic_paths = [mirrored_path(root / "gt_dynamic", r.target, r.data_root) for r in refs]
    dynamic = [read_label_png(p) for p in dynamic_paths] if all(p.is_file() for p in dynamic_paths) else []
    return rgbs, depths, gt_labels, noisy, dynamic


def class_groups(labels: np.ndarray, depth: np.ndarray, world: str, band: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(group map: index into WORLDS[world]['report'] or 255, sky-adjacent mask) of one frame."""
    spec = WORLDS[world]
    groups = np.full(labels.shape, 255, np.uint8)
    for g, ids in enumerate(spec["report"].values()):
        groups[np.isin(labels, ids)] = g
    sky_adjacent = np.zeros(labels.shape, np.uint8) + 255
    if spec["sky"] is not None:
        import cv2

        near = cv2.dilate((labels == spec["sky"]).astype(np.uint8), np.ones((2 * band + 1, 2 * band + 1), np.uint8))
        sky_adjacent[(near > 0) & (labels != spec["sky"]) & (depth > 0)] = 0
    return groups, sky_adjacent


def moving_groups(labels: np.ndarray, dynamic: np.ndarray, world: str) -> np.ndarray:
    """Group map of one frame: 0 = car moving on its own, 1 = parked car, 255 = neither.

    The two fail differently: a car that keeps the camera's speed looks static and reprojects best
    at infinite depth (a hole the auto-mask only hides), a parked car is plain rigid structure with
    textureless panels. Pooled into one "car" number the two causes cannot be told apart.
    """
    cars = np.isin(labels, WORLDS[world]["report"]["car"])
    groups = np.full(labels.shape, 255, np.uint8)
    groups[cars & (dynamic == 0)] = 1
    groups[dynamic > 0] = 0
    return groups


def depth_result(disps: list[np.ndarray], depths: list[np.ndarray], gt_labels: list[np.ndarray], cfg: Config,
                 world: str, dynamic: list[np.ndarray] | None = None) -> dict:
    """The seven metrics and AbsRel per reported class, sky-adjacent pixels and (with masks of
    independently moving objects) moving vs parked cars, of disparities."""
    from semhint.evaluation import evaluate_depth

    e = cfg.eval
    kw = dict(min_depth=e.min_depth, max_depth=e.max_depth, crop=e.crop, median_scaling=e.median_scaling)
    groups = [class_groups(lab, d, world) for lab, d in zip(gt_labels, depths)]
    names = list(WORLDS[world]["report"])
    result = evaluate_depth(disps, depths, labels=[g for g, _ in groups], class_names=names, **kw)
    out = {"metrics": result.metrics(), "per_class_abs_rel": {}, "per_class_log_bias": {}}
    passes = [result]
    if WORLDS[world]["sky"] is not None:
        passes.append(evaluate_depth(disps, depths, labels=[s for _, s in groups], class_names=["sky-adjacent"], **kw))
    if dynamic:
        passes.append(evaluate_depth(disps, depths, class_names=list(MOVING_GROUPS), **kw,
                                     labels=[moving_groups(lab, dyn, world) for lab, dyn in zip(gt_labels, dynamic)]))
    for one in passes:
        out["per_class_abs_rel"].update({n: v["abs_rel"] for n, v in one.per_class_abs_rel.items()})
        out["per_class_log_bias"].update({n: v["log_bias"] for n, v in one.per_class_abs_rel.items()})
    return out


def constant_depth_result(args) -> dict:
    """The trivial reference: one constant depth per image (median scaling picks its value)."""
    root = Path(args.data)
    cfg = run_config(Path(args.configs[0]), args, 0, Path(args.out) / "constant", None)
    _, depths, gt_labels, _, dynamic = _frame_maps(cfg, root, root / "splits" / "test.txt", "")
    return depth_result([np.ones_like(d) for d in depths], depths, gt_labels, cfg, args.world, dynamic)


def evaluate_run(checkpoint: Path, cfg: Config, args, labels: str) -> dict:
    """Depth metrics, per-class AbsRel and (with a branch) mIoU on the test split."""
    import torch

    from semhint.evaluation import evaluate_segmentation
    from semhint.inference import Predictor, load_depth_net

    root = Path(args.data)
    _, net = load_depth_net(checkpoint)
    predictor = Predictor(net, cfg)
    rgbs, depths, gt_labels, noisy, dynamic = _frame_maps(cfg, root, root / "splits" / "test.txt",
                                                          cfg.data.labels if cfg.model.num_classes else "")
    disps = [predictor.predict_disparity_batch(rgbs[i:i + 8]) for i in range(0, len(rgbs), 8)]
    disps = [d for chunk in disps for d in chunk]
    out = depth_result(disps, depths, gt_labels, cfg, args.world, dynamic)
    # a collapsed depth head predicts one depth everywhere: the spread of its (unscaled) depth shows it
    out["depth_spread"] = float(np.median([np.percentile(1 / d, 95) / np.percentile(1 / d, 5) for d in disps]))
    if cfg.model.num_classes:
        preds = []
        with torch.inference_mode():
            for i in range(0, len(rgbs), 8):
                logits = net(predictor.network_input(rgbs[i:i + 8]))["seg/0"]
                for lg, gt in zip(logits, gt_labels[i:i + 8]):
                    up = torch.nn.functional.interpolate(lg[None].float(), size=gt.shape, mode="bilinear",
                                                         align_corners=False)
                    preds.append(up[0].argmax(0).numpy().astype(np.uint8))
        c = cfg.model.num_classes
        out["branch_miou"] = evaluate_segmentation(gt_labels, preds, c)["miou"]
        out["noisy_labels_test_miou"] = evaluate_segmentation(gt_labels, noisy, c)["miou"]
        out["branch_vs_noisy_miou"] = evaluate_segmentation(noisy, preds, c)["miou"]
        if cfg.refine.hint or cfg.refine.pseudo_seg:
            out["refine_test"] = refine_diagnostics(checkpoint, cfg, root / "splits" / "test.txt")
    return out


def refine_diagnostics(checkpoint: Path, cfg: Config, test_split: Path, batches: int = 4) -> dict:
    """The refinement statistics of the TRAINED model on test snippets, with ground truth at hand.

    Runs the training objective (refinements forced on, no gradient) on the first ``batches``
    test batches: the gate's acceptance rate, and on accepted pixels the AbsRel of the hint vs
    the prediction it would replace (is the hint worth learning from?); the pseudo-label rate
    and the accuracy of pseudo vs noisy labels against ground truth (do they denoise?).
    """
    import dataclasses

    import torch

    from semhint.data.build import build_dataset
    from semhint.training import SemHintModule, collate_snippets

    cfg = dataclasses.replace(cfg, refine=dataclasses.replace(cfg.refine, warmup_epochs=0),
                              data=dataclasses.replace(cfg.data, val_split=str(test_split)))
    module = SemHintModule(cfg)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    module.eval()
    dataset = build_dataset(cfg.data, "val")
    picks = np.linspace(0, len(dataset) - 1, batches * cfg.optim.batch_size).round().astype(int)
    sums: dict[str, list[float]] = {}
    with torch.no_grad():
        for i in range(0, len(picks), cfg.optim.batch_size):
            batch = collate_snippets([dataset[int(j)] for j in picks[i:i + cfg.optim.batch_size]])
            batch.update({f"image_aug/{f}": batch[f"image/{f}"] for f in cfg.data.frame_ids})
            losses, _, _ = module.objective(batch)
            for key, value in losses.items():
                if key.startswith("refine/"):
                    sums.setdefault(key[len("refine/"):], []).append(float(value))
    return {k: float(np.mean(v)) for k, v in sums.items()}


def refine_stats(run_dir: Path) -> dict:
    """Mean of each logged refine/* training statistic over the logged steps (gate acceptance etc.)."""
    import csv

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


def one_run(args) -> None:
    """Train + evaluate one (config, seed) into its result.json (the subprocess entry point)."""
    import shutil

    from semhint.training import fit

    run_dir = Path(args.run_dir)
    cfg = run_config(Path(args.config), args, args.seed, run_dir, args.labels)
    previous = run_dir / "result.json"
    if args.reevaluate and previous.is_file():  # re-measure a trained run (e.g. after adding a metric)
        seconds = json.loads(previous.read_text())["train_seconds"]
    else:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        t0 = time.perf_counter()
        fit(cfg)
        seconds = time.perf_counter() - t0
    result = evaluate_run(run_dir / "checkpoints" / "last.ckpt", cfg, args, cfg.data.labels)
    from semhint.models import build_depth_net, parameter_report

    shared = parameter_report(build_depth_net(cfg.model))["shared_decoder"]
    result.update(config=args.config, seed=args.seed, steps=args.steps, train_seconds=seconds,
                  labels=Path(cfg.data.labels).name if cfg.model.num_classes else "",
                  shared_layers=cfg.model.shared_layers if cfg.model.num_classes else None,
                  shared_params=shared if cfg.model.num_classes else None,
                  refine=refine_stats(run_dir))
    from semhint.core.fileio import write_json

    write_json(run_dir / "result.json", result)
    for ckpt in (run_dir / "checkpoints").glob("best-*.ckpt"):  # keep last.ckpt only: disk is shared
        ckpt.unlink()


def gradient_norms(args) -> list[dict]:
    """Per loss term, the gradient norm it sends into each part of the depth net, at initialisation.

    A diagnostic for "which term drives the network early on": one batch of training snippets
    (first frames of the train split), the full objective with the refinements forced on.
    """
    import dataclasses

    import torch

    from semhint.data.build import build_dataset
    from semhint.training import SemHintModule, collate_snippets

    parts = ("encoder", "decoder.shared", "decoder.depth", "decoder.disp_heads", "decoder.seg")
    rows = []
    for config in args.configs:
        uses_labels = load_config(config).model.num_classes > 0
        cfg = run_config(Path(config), args, 0, Path(args.out) / "grad_norms", args.labels if uses_labels else None)
        cfg = dataclasses.replace(cfg, refine=dataclasses.replace(cfg.refine, warmup_epochs=0))
        torch.manual_seed(0)
        module = SemHintModule(cfg)
        dataset = build_dataset(cfg.data, "train")
        losses, _, _ = module.objective(collate_snippets([dataset[i] for i in range(args.batch_size)]))
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
            print(row, flush=True)
    return rows


# ----------------------------------------------------------------------------------------------
# the sweep and the table
# ----------------------------------------------------------------------------------------------
def run_name(config: str, labels: str | None, tag: str) -> str:
    name = Path(config).stem
    return f"{name}{'-' + labels if labels else ''}{'-' + tag if tag else ''}"


def plan_runs(args) -> tuple[list[tuple], list[tuple]]:
    """(to run, finished) lists of (config, seed, run_dir, labels), in launch order.

    Seed-major: a sweep stopped part-way (a time limit) leaves whole seeds, every config of
    each, i.e. results that pair up seed by seed.
    """
    root = Path(args.out) / "runs"
    todo, done = [], []
    for seed in args.seeds:
        for config in args.configs:
            labels = args.labels if load_config(config).model.num_classes > 0 else None
            run_dir = root / run_name(config, labels, args.tag) / f"seed{seed}"
            finished = (run_dir / "result.json").is_file() and not args.reevaluate
            (done if finished else todo).append((config, seed, run_dir, labels))
    return todo, done


def sweep(args) -> list[Path]:
    """Launch every missing (config, seed) run as a subprocess, ``--jobs`` at a time."""
    todo, done = plan_runs(args)
    procs: list[tuple[subprocess.Popen, Path]] = []
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    while todo or procs:
        while todo and len(procs) < args.jobs:
            config, seed, run_dir, labels = todo.pop(0)
            run_dir.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, __file__, "--one", "--config", config, "--seed", str(seed), "--run-dir", str(run_dir),
                   *_shared_flags(args)]
            if labels:
                cmd += ["--labels", labels]
            log = (run_dir.parent / f"seed{seed}{'.eval' if args.reevaluate else ''}.log").open("w")
            print(f"[run_semhint] start {run_dir}", flush=True)
            procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), run_dir))
        time.sleep(2)
        for proc, run_dir in list(procs):
            if proc.poll() is not None:
                procs.remove((proc, run_dir))
                ok = (run_dir / "result.json").is_file()
                print(f"[run_semhint] {'done' if ok else 'FAILED (see log)'} {run_dir}", flush=True)
    return [d for *_, d, _ in done]


def _shared_flags(args) -> list[str]:
    flags = ["--world", args.world, "--data", str(args.data), "--steps", str(args.steps),
             "--batch-size", str(args.batch_size), "--accelerator", args.accelerator]
    if args.size:
        flags += ["--size", args.size]
    if args.encoder:
        flags += ["--encoder", args.encoder]
    for item in args.set or []:
        flags += ["--set", item]
    if args.reevaluate:
        flags.append("--reevaluate")
    return flags


def collect(args) -> dict[str, list[dict]]:
    """Every cached result of this sweep's configs, grouped by run name.

    ``--also`` names more caches (e.g. the same sweep's other seeds, trained on another machine):
    a seed is read from the first cache that has it, so seeds pool across them.
    """
    roots = [Path(out) / "runs" for out in [args.out, *(args.also or [])]]
    groups: dict[str, list[dict]] = {}
    for config in args.configs:
        uses_labels = load_config(config).model.num_classes > 0
        labels = args.labels if uses_labels else None
        # a tag names variants made with --set; runs without one (e.g. the baseline) stay comparable
        names = [run_name(config, labels, args.tag), run_name(config, labels, "")]
        name = next((n for n in names if any((root / n).is_dir() for root in roots)), names[0])
        for seed in args.seeds:
            path = next((p for p in (root / name / f"seed{seed}" / "result.json" for root in roots) if p.is_file()), None)
            if path is not None:
                groups.setdefault(name, []).append(json.loads(path.read_text()))
    return groups


def _mean_std(values: list[float]) -> str:
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def _mean_of(dicts: list[dict], key: str) -> str:
    values = [d[key] for d in dicts if key in d]
    return f"{np.mean(values):.3f}" if values else "-"


def _baseline_results(groups: dict[str, list[dict]]) -> list[dict]:
    """The first depth-only (no branch) run group: what every row is compared with."""
    for results in groups.values():
        if "seed" in results[0] and "branch_miou" not in results[0]:
            return results
    return []


def _abs_rel_by_seed(results: list[dict], cls: str | None = None) -> dict[int, float]:
    """AbsRel per seed, overall or of one reported class."""
    return {r["seed"]: r["metrics"]["abs_rel"] if cls is None else r["per_class_abs_rel"][cls]
            for r in results if "seed" in r and (cls is None or r["per_class_abs_rel"].get(cls) is not None)}


def _vs_baseline(baseline: list[dict], results: list[dict], cls: str | None = None, short: bool = False) -> str:
    """Difference of mean AbsRel to the baseline with Welch's 95 % interval, p, and seeds won."""
    from semhint.core.stats import compare_seeds, format_comparison

    ref, mine = _abs_rel_by_seed(baseline, cls), _abs_rel_by_seed(results, cls)
    if len(ref) < 2 or len(mine) < 2 or results is baseline:
        return "-"
    c = compare_seeds(ref, mine)
    return f"{c.diff:+.3f} (p={c.p:.2f}, {c.wins}/{c.shared})" if short else format_comparison(c)


def table(groups: dict[str, list[dict]], world: str) -> tuple[str, list[dict]]:
    """Markdown rows (mean ± std over seeds) and the raw rows for the JSON (constant depth first)."""
    from _results import markdown_table  # benchmarks/ is on sys.path when run as a script

    classes = list(WORLDS[world]["report"]) + (["sky-adjacent"] if WORLDS[world]["sky"] is not None else [])
    classes += [g for g in MOVING_GROUPS if any(g in r["per_class_abs_rel"] for rs in groups.values() for r in rs)]
    baseline = _baseline_results(groups)
    rows, raw = [], []
    for name, results in groups.items():
        row = {"run": name, "seeds": len(results) if "seed" in results[0] else "-"}
        for m in METRICS:
            row[m] = _mean_std([r["metrics"][m] for r in results])
        row["AbsRel vs baseline"] = _vs_baseline(baseline, results)
        for c in classes:
            row[f"AbsRel {c}"] = _mean_std([r["per_class_abs_rel"].get(c) for r in results])
        per_class = [f"{c} {_vs_baseline(baseline, results, c, short=True)}" for c in classes]
        row["per class vs baseline"] = "; ".join(per_class) if row["AbsRel vs baseline"] != "-" else "-"
        biases = {c: [r["per_class_log_bias"][c] for r in results if c in r.get("per_class_log_bias", {})]
                  for c in classes}
        row["log(pred/GT) per class"] = "; ".join(f"{c} {np.mean(v):+.3f}" for c, v in biases.items() if v) or "-"
        if "branch_miou" in results[0]:
            row["branch mIoU"] = _mean_std([r["branch_miou"] for r in results])
            row["noisy-label mIoU"] = _mean_std([r["noisy_labels_test_miou"] for r in results])
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
    columns = ["run", "seeds", *METRICS, "AbsRel vs baseline", *[f"AbsRel {c}" for c in classes], "per class vs baseline",
               "log(pred/GT) per class", "branch mIoU", "noisy-label mIoU",
               "k (shared params)", "hint accept", "hint / pred AbsRel @accepted", "pseudo / noisy label acc", "depth p95/p5", "train min"]
    return markdown_table(rows, columns), raw


def report(args) -> None:
    from _results import write_section

    groups = collect(args)
    if not groups:
        print("no results yet")
        return
    groups = {"constant depth (reference)": [constant_depth_result(args)], **groups}
    markdown, raw = table(groups, args.world)
    key = args.key or f"semhint_synth_{args.world}"
    cmd = "python " + " ".join(shlex.quote(a) for a in [f"benchmarks/{Path(__file__).name}", *sys.argv[1:]]
                               if a != "--report-only")
    note = (f"Test split of the rendered data (`{args.data}`), exact depth, generic protocol (per-image median "
            f"scaling, cap {load_config(args.configs[0]).eval.max_depth:g}); mean ± sample std over seeds. "
            f"Budget: {args.steps} steps of batch {args.batch_size} for every run, 1 torch thread per run"
            f"{', trained on one GPU shared by the runs (evaluated on CPU)' if args.accelerator == 'gpu' else ''}. "
            "AbsRel per class pools all test pixels of the class (ground-truth labels); sky-adjacent = "
            "valid pixels within 3 px of sky; car moving / car parked (where the render wrote gt_dynamic/): car "
            "pixels the renderer moves on their own (the lead car at the camera's speed, oncoming cars) or not. "
            "log(pred/GT) per class: mean over the class's pixels of the log ratio of the scaled prediction to the "
            "ground truth, averaged over seeds (> 0: too far, < 0: too near). "
            "depth p95/p5: median over test frames of the ratio of the 95th to the 5th "
            "percentile of the predicted (unscaled) depth; about 1 means a collapsed, constant prediction. AbsRel vs "
            "baseline: mean AbsRel minus the depth-only baseline's, Welch's 95 % interval, two-sided p, and the shared "
            "seeds where the run beat the baseline (negative = better; an interval that holds 0 is no proven "
            "difference); per class: the same difference, p and seeds won for each class's AbsRel. Branch mIoU: the segmentation head vs ground truth; noisy-label "
            "mIoU: the labels it learned from, on the same test frames. Hint accept: mean fraction of pixels "
            "the Depth Hints gate let the hint train (over logged steps after warm-up).")
    print(markdown)
    write_section(key, args.title or f"SemHint vs baseline on Synth{args.world.capitalize()}", cmd,
                  note + "\n\n" + markdown + ("\n\n" + args.notes if args.notes else ""), {"runs": raw})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", choices=list(WORLDS), default="drive")
    p.add_argument("--out", default="runs/semhint_bench", help="where runs and their results are cached")
    p.add_argument("--data", default=None, help="rendered data root (default OUT/<world>; rendered if missing)")
    p.add_argument("--sequences", type=int, default=4)
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--render-size", default="64x208", help="render size HxW")
    p.add_argument("--size", default="", help="network input HxW (default: the config's)")
    p.add_argument("--encoder", default="", help="override model.encoder for every run")
    p.add_argument("--configs", nargs="+", default=["configs/synth_drive.yaml", "configs/semhint_synth_drive.yaml"])
    p.add_argument("--labels", default=None, help="label folder for every SemHint config (labels<N> | corrupt<S>)")
    p.add_argument("--labeler-steps", type=int, default=200)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu",
                   help="where runs train (evaluation is always on CPU); several jobs may share one GPU")
    p.add_argument("--set", action="append", help="extra SECTION.KEY=VALUE applied to every run")
    p.add_argument("--tag", default="", help="suffix of the run names (to keep variants of --set apart)")
    p.add_argument("--key", default="", help="results key (default semhint_synth_<world>)")
    p.add_argument("--title", default="")
    p.add_argument("--notes", default="", help="markdown appended under the table")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--also", nargs="+", help="more result caches (OUT folders) to pool seeds from in the report")
    p.add_argument("--grad-norms", action="store_true",
                   help="print each loss term's gradient norm per network part at initialisation, then stop")
    p.add_argument("--reevaluate", action="store_true", help="re-measure finished runs from their last.ckpt")
    # subprocess mode
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    p.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.data = args.data or str(Path(args.out) / args.world)
    if args.one:
        import torch

        torch.set_num_threads(1)
        one_run(args)
        return
    if args.grad_norms:
        from _results import markdown_table

        rows = gradient_norms(args)
        print(markdown_table(rows, list(rows[0])))
        return
    if not args.report_only:
        ensure_data(args.world, Path(args.data), args.sequences, args.frames, args.render_size, 0)
        h, w = (int(v) for v in (args.size or args.render_size).split("x"))
        for name in label_folders(args):
            ensure_labels(Path(args.data), name, args.world, (h, w), args.labeler_steps)
        sweep(args)
    report(args)


if __name__ == "__main__":
    main()
