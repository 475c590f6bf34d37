"""Depth inference at 192x640, batch 1, on 2 CPU threads: the plain reference, PyTorch per encoder, ONNX
Runtime float and int8, and what int8 costs in accuracy.

Timing: every encoder of ``ENCODERS`` (random weights: speed does not depend on them) as the package
runs it in PyTorch (``Predictor``'s channels_last, ``torch.inference_mode``; ``lab.timing.DepthForward``),
and the files ``semhint export --format onnx`` and ``semhint export --format onnx --int8 FRAMES`` write
for it, run by ONNX Runtime with every graph optimisation on (``semhint.export.onnx_session``, what
``semhint predict MODEL.onnx`` uses), all interleaved call by call with the plain reference of
``reference_step.py`` (``ReferenceInference``), so machine load hits all alike. ``vs_reference`` =
time / reference time (the issue's goal: at most 0.35). Each row gives the median and the best of the
timed calls: on a loaded machine the best is the one least disturbed.

Accuracy (``--checkpoint`` and ``--data``, or ``--train-steps N`` to train one first): the checkpoint's
depth on the rendered world's test split against its exact ground truth (generic protocol, per-image
median scaling) in PyTorch float32, as an ONNX Runtime float file and as an int8 file calibrated on
frames of the train split; ``abs_rel_change`` = AbsRel / PyTorch's AbsRel - 1 (the issue's limit: 1 %),
and the median over test pixels of |depth / PyTorch depth - 1|.

    .venv/bin/python benchmarks/bench_inference.py --quick --no-write           # smoke check
    .venv/bin/python benchmarks/bench_inference.py --train-steps 300 --load '...'   # render, train, time, score
    .venv/bin/python benchmarks/bench_inference.py --checkpoint CKPT --data ROOT   # a trained SynthDrive model
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from reference_step import ReferenceInference  # noqa: E402

from semhint.core.config import ENCODERS, from_dict  # noqa: E402
from semhint.data.build import frame_refs  # noqa: E402
from semhint.data.synthetic import render_drive  # noqa: E402
from semhint.evaluation.protocols import evaluate_depth  # noqa: E402
from semhint.export import (  # noqa: E402
    INT8_FLOAT_NODES, calibration_frames, export_model, load_onnx_predictor, onnx_session, quantize_int8)
from semhint.inference import load_predictor  # noqa: E402
from semhint.lab.evaluator import load_split, predict_disparities  # noqa: E402
from semhint.lab.timing import bench_size  # noqa: E402
from semhint.lab.records import markdown_table, write_record  # noqa: E402
from semhint.lab.sweep import Sweep, ensure_data, run_config  # noqa: E402
from semhint.lab.timing import DepthForward, time_interleaved  # noqa: E402
from semhint.training import SemHintModule, fit, save_model_checkpoint  # noqa: E402

REF_KEY = ("reference (plain)", "resnet18", "monodepth2", "PyTorch", "float32")
# decoder styles (model.decoder_pad, model.decoder_act): Monodepth2's, and the one whose convs ONNX Runtime
# runs as single fused kernels (a model trained with it: configs/kitti_sample_fused.yaml)
DECODERS = {"monodepth2": ("reflect", "elu"), "fused": ("zeros", "relu")}
GOAL = 0.35  # the goal: at most this fraction of the reference's time
ACCURACY_LIMIT = 0.01  # and at most this relative change of AbsRel against the float32 model


# ----------------------------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------------------------
class Recorded:
    """A callable that keeps the duration of each of its calls (``time_interleaved`` keeps medians only)."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, []

    def __call__(self) -> None:
        t0 = time.perf_counter()
        self.fn()
        self.seconds.append(time.perf_counter() - t0)


def calibration_source(folder: Path, data: str | None) -> list[str]:
    """Frames that calibrate the timing models' int8 files: the --data train split, or a tiny SynthDrive render."""
    if data:
        cfg = from_dict({"data": {"path": str(Path(data) / "data")}}, "calibration")
        return [str(r.target) for r in frame_refs(cfg.data, str(Path(data) / "splits" / "train.txt"))]
    root = render_drive(folder / "synth_tiny", preset="tiny", progress=False, workers=1)
    return [str(p) for p in sorted((root / "data").rglob("*.png"))]


def timing_models(encoders: list[str], decoders: list[str], h: int, w: int, folder: Path,
                  calibration: list[str]) -> dict:
    """Per (encoder, decoder style): (torch callable, ONNX float export result, ONNX int8 export result)."""
    models = {}
    for encoder in encoders:
        for decoder in decoders:
            pad, act = DECODERS[decoder]
            cfg = from_dict({"data": {"height": h, "width": w},
                             "model": {"encoder": encoder, "pretrained": "", "pose_encoder": "resnet18",
                                       "decoder_pad": pad, "decoder_act": act}}, "bench")
            torch.manual_seed(0)
            name = f"{encoder}-{decoder}"
            ckpt = save_model_checkpoint(SemHintModule(cfg), folder / f"{name}.ckpt")
            fp32 = export_model(ckpt, "onnx", folder / f"{name}.onnx")
            int8 = export_model(ckpt, "onnx", folder / f"{name}.int8.onnx", int8=calibration)
            models[encoder, decoder] = (DepthForward(cfg, "cpu", 1, channels_last=True), fp32, int8)
            print(f"{name}: exported float and int8 (median |depth int8 / PyTorch - 1| "
                  f"{int8['depth_rel_diff_median']:.2%} on calibration frames)", flush=True)
    return models


def run_timing(args, folder: Path) -> list[dict]:
    torch.set_num_threads(args.threads)
    h, w = args.size
    calibration = calibration_source(folder, args.data)
    models = timing_models(args.encoders, args.decoders, h, w, folder, calibration)
    x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
    fns: dict = {REF_KEY: Recorded(ReferenceInference(h, w))}
    for (encoder, decoder), (forward, fp32, int8) in models.items():
        fns[("semhint", encoder, decoder, "PyTorch", "float32")] = Recorded(forward)
        for result, precision in ((fp32, "float32"), (int8, "int8")):
            session = onnx_session(result["path"], args.threads)
            fns[("semhint", encoder, decoder, "ONNX Runtime", precision)] = Recorded(
                lambda s=session: s.run(None, {"image": x}))
    medians = time_interleaved(fns, torch.device("cpu"), args.repeats, args.warmup)
    ref_ms = 1000 * medians[REF_KEY]
    ref_best = 1000 * min(fns[REF_KEY].seconds[args.warmup:])
    rows = []
    for key, s in medians.items():
        variant, encoder, decoder, runtime, precision = key
        best = 1000 * min(fns[key].seconds[args.warmup:])
        rows.append({"variant": variant, "encoder": encoder, "decoder": decoder, "runtime": runtime, "precision": precision,
                     "ms": 1000 * s, "ms_best": best, "vs_reference": 1000 * s / ref_ms,
                     "vs_reference_best": best / ref_best, "calls": len(fns[key].seconds) - args.warmup})
        print(rows[-1], flush=True)
    return rows


# ----------------------------------------------------------------------------------------------
# accuracy
# ----------------------------------------------------------------------------------------------
def trained_checkpoint(work: Path, steps: int, seed: int = 0) -> tuple[Path, Path]:
    """(checkpoint, data root) of the shipped ``synth_drive`` recipe (EfficientNet-Lite0, 96x320) trained
    ``steps`` steps on the SynthDrive demo render; both are made once under ``work`` and reused."""
    sweep = Sweep(world="drive", out=str(work), data=str(work / "synth_drive"), steps=steps, seeds=[seed])
    data = ensure_data("drive", Path(sweep.data), 5, 80, "96x320", seed=seed, preset="demo")
    run = work / f"synth_drive-{steps}steps-s{seed}"
    last = run / "checkpoints" / "last.ckpt"
    if not last.is_file():
        fit(run_config("synth_drive", sweep, seed, run, None), overwrite=True)
    return last, data


def _metrics(disparities: list[np.ndarray], split, cfg) -> dict:
    e = cfg.eval
    return evaluate_depth(disparities, split.depths, min_depth=e.min_depth, max_depth=e.max_depth, crop=e.crop,
                          median_scaling=e.median_scaling).metrics()


def run_accuracy(checkpoint: Path, data: Path, folder: Path, threads: int, model: str = "") -> list[dict]:
    """AbsRel on the test split: PyTorch float32, ONNX Runtime float32 and int8 (calibrated on the train split)."""
    torch.set_num_threads(threads)
    predictor = load_predictor(checkpoint)
    cfg = predictor.config
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, path=str(data / "data")))  # frames of --data
    split = load_split(cfg, data / "splits" / "test.txt", data)
    train = [str(r.target) for r in frame_refs(cfg.data, str(data / "splits" / "train.txt"))]
    base = predict_disparities(predictor, split.images)
    paths = {"float32": export_model(checkpoint, "onnx", folder / "trained.onnx")["path"],
             "int8": export_model(checkpoint, "onnx", folder / "trained.int8.onnx", int8=train)["path"]}
    base_metrics = _metrics(base, split, cfg)
    rows = [{"model": model or checkpoint.name, "encoder": cfg.model.encoder, "size": f"{cfg.data.height}x{cfg.data.width}", "runtime": "PyTorch",
             "precision": "float32", "abs_rel": base_metrics["abs_rel"], "abs_rel_change": 0.0,
             "a1": base_metrics["a1"], "depth_vs_float_median": 0.0, "depth_vs_float_p95": 0.0}]
    for precision, path in paths.items():
        onnx_predictor = load_onnx_predictor(path, threads)
        disps = [onnx_predictor.predict_disparity_batch([image])[0] for image in split.images]
        m = _metrics(disps, split, cfg)
        # depth is 1 / scaled disparity: |depth / float depth - 1| = |float disp / disp - 1|
        rel = np.concatenate([np.abs(b / d - 1).ravel() for b, d in zip(base, disps)])
        rows.append({"model": rows[0]["model"], "encoder": cfg.model.encoder, "size": rows[0]["size"], "runtime": "ONNX Runtime",
                     "precision": precision, "abs_rel": m["abs_rel"],
                     "abs_rel_change": m["abs_rel"] / base_metrics["abs_rel"] - 1, "a1": m["a1"],
                     "depth_vs_float_median": float(np.median(rel)), "depth_vs_float_p95": float(np.percentile(rel, 95))})
    for row in rows:
        print(row, flush=True)
    return rows


def layer_group(node: str) -> str | None:
    """The layer group of an exported node name (None: the disparity head, always float)."""
    if "disp_heads" in node:
        return None
    for pattern, name in ((r"encoder/normalize", "input normalisation"),
                          (r"encoder/(stem|act/|conv1|bn1|relu|maxpool)", "encoder stem"),
                          (r"encoder/(blocks\.\d+|layer\d)/", None), (r"decoder/depth/(upconv_\d_\d)/", None),
                          (r"decoder/depth/Concat", "decoder concatenations")):
        match = re.search(pattern, node)
        if match:
            return name or match.group(1)
    return "other (resize, shapes)"


def run_sensitivity(checkpoint: Path, data: Path, folder: Path, threads: int) -> list[dict]:
    """Per layer group: the depth change when ONLY that group is int8 (everything else float), on the test
    split: how :data:`semhint.export.INT8_FLOAT_NODES` was chosen."""
    import onnx  # lazy: the onnx extra, needed only here

    torch.set_num_threads(threads)
    predictor = load_predictor(checkpoint)
    cfg = predictor.config
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, path=str(data / "data")))
    split = load_split(cfg, data / "splits" / "test.txt", data)
    train = [str(r.target) for r in frame_refs(cfg.data, str(data / "splits" / "train.txt"))]
    frames = calibration_frames(train, predictor.size)
    base = predict_disparities(predictor, split.images)
    base_abs_rel = _metrics(base, split, cfg)["abs_rel"]
    fp32 = Path(export_model(checkpoint, "onnx", folder / "sens.onnx")["path"])
    names = [node.name for node in onnx.load(str(fp32)).graph.node]
    groups = list(dict.fromkeys(g for g in map(layer_group, names) if g))
    rows = []
    for group in groups:
        others = [n for n in names if layer_group(n) != group]
        quantize_int8(fp32, folder / "sens.int8.onnx", frames, keep_float="^(" + "|".join(map(re.escape, others)) + ")$")
        onnx_predictor = load_onnx_predictor(folder / "sens.int8.onnx", threads)
        disps = [onnx_predictor.predict_disparity_batch([image])[0] for image in split.images]
        rel = np.concatenate([np.abs(b / d - 1).ravel() for b, d in zip(base, disps)])
        abs_rel = _metrics(disps, split, cfg)["abs_rel"]
        kept = any(re.search(INT8_FLOAT_NODES, n) for n in names if layer_group(n) == group)
        rows.append({"int8 only": group, "abs_rel_change": abs_rel / base_abs_rel - 1,
                     "depth_vs_float_median": float(np.median(rel)), "depth_vs_float_mean": float(rel.mean()),
                     "float in --int8": "yes" if kept else "no"})
        print(rows[-1], flush=True)
    return rows


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------


def _notes(args, timing: list[dict], accuracy: list[dict], trained: str) -> str:
    lines = []
    if timing:
        fast = min((r for r in timing if r["variant"] == "semhint"), key=lambda r: r["ms"])
        lines.append(f"Fastest path: {fast['encoder']} ({fast['decoder']} decoder) on {fast['runtime']} "
                     f"{fast['precision']}, {fast['ms']:.1f} ms "
                     f"median = {fast['vs_reference']:.3f} x the reference (best call {fast['vs_reference_best']:.3f} x); "
                     f"goal at most {GOAL} x: {'met' if fast['vs_reference'] <= GOAL else 'not met'} on the median.")
    for row in accuracy:
        if row["runtime"] == "PyTorch":
            base = row
            continue
        lines.append(f"{row['model']}: {row['encoder']} {row['precision']} ({row['runtime']}): AbsRel {row['abs_rel']:.4f} "
                     f"vs {base['abs_rel']:.4f} in PyTorch float32, change {row['abs_rel_change']:+.2%} (limit "
                     f"{ACCURACY_LIMIT:.0%}: {'within' if abs(row['abs_rel_change']) <= ACCURACY_LIMIT else 'over'}); "
                     f"median |depth / float depth - 1| {row['depth_vs_float_median']:.2%}.")
    if trained:
        lines.append(trained)
    return "\n\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="resnet18 and efficientnet_lite0, 2 timed calls each")
    parser.add_argument("--size", type=bench_size, default=(192, 640), help="timing size HxW (multiples of 32)")
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime intra-op threads")
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds (one call of every variant each)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=list(ENCODERS))
    parser.add_argument("--decoders", nargs="+", default=list(DECODERS), choices=list(DECODERS),
                        help="decoder styles: monodepth2 (reflection padding, ELU) and fused (zero padding, ReLU)")
    parser.add_argument("--checkpoint", default=None, help="a trained checkpoint for the accuracy rows (with --data)")
    parser.add_argument("--data", default=None, help="its rendered world (splits/test.txt scored against gt_depth/, "
                        "splits/train.txt calibrates int8)")
    parser.add_argument("--train-steps", type=int, default=0,
                        help="without --checkpoint: render the SynthDrive demo world and train the synth_drive "
                             "recipe this many steps first (both cached under --work)")
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[0], help="seeds of the --train-steps models")
    parser.add_argument("--sensitivity", action="store_true",
                        help="also score int8 one layer group at a time on the first scored model (minutes)")
    parser.add_argument("--work", default="runs/bench_inference", help="where --train-steps keeps its render and run")
    parser.add_argument("--skip-timing", action="store_true", help="accuracy rows only")
    parser.add_argument("--load", default="", help="a note on machine load at measurement time")
    parser.add_argument("--key", default="inference_speed", help="record key (docs/lab/KEY.md); another key keeps the full record")
    parser.add_argument("--no-write", action="store_true", help="print only; do not write the lab record")
    args = parser.parse_args()
    if args.quick:
        args.encoders = [e for e in ("resnet18", "efficientnet_lite0") if e in args.encoders] or args.encoders[:1]
        args.repeats, args.warmup = 2, 1
    if bool(args.checkpoint) != bool(args.data):
        parser.error("--checkpoint and --data go together (a trained model and the world it is scored on)")
    models: list[tuple[Path, Path, str]] = []  # (checkpoint, data, label) scored for accuracy
    trained = ""
    if args.checkpoint:
        models.append((Path(args.checkpoint), Path(args.data), Path(args.checkpoint).name))
    elif args.train_steps > 0:
        t0 = time.monotonic()
        for seed in args.train_seeds:
            ckpt, data = trained_checkpoint(Path(args.work), args.train_steps, seed)
            models.append((ckpt, data, f"seed {seed}"))
        args.data = str(models[0][1])
        trained = (f"Scored models: the shipped `synth_drive` recipe (EfficientNet-Lite0 depth and pose nets, 96x320) "
                   f"trained {args.train_steps} steps on the SynthDrive demo render, seeds "
                   f"{', '.join(map(str, args.train_seeds))} (`{Path(args.work)}`; made or reused in "
                   f"{time.monotonic() - t0:.0f} s).")
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as scratch:
        folder = Path(scratch)
        timing = [] if args.skip_timing else run_timing(args, folder)
        accuracy = [row for ckpt, data, label in models for row in run_accuracy(ckpt, data, folder, args.threads, label)]
        sensitivity = run_sensitivity(models[0][0], models[0][1], folder, args.threads) \
            if args.sensitivity and models else []
    notes = _notes(args, timing, accuracy, trained)
    print(notes)
    if args.no_write:
        return
    omp = os.environ.get("OMP_NUM_THREADS")
    command = (f"OMP_NUM_THREADS={omp} " if omp else "") + ".venv/bin/python " + shlex.join(sys.argv)
    h, w = args.size
    md = (f"Depth inference, batch 1, {h}x{w}, {args.threads} threads (torch and ONNX Runtime intra-op). "
          "`reference (plain)` is `benchmarks/reference_step.py`'s `ReferenceInference` (ResNet-18 Monodepth2-style "
          "depth net, PyTorch fp32); `semhint` rows are each encoder and decoder style (`monodepth2`: reflection "
          "padding and ELU; `fused`: zero padding and ReLU, `model.decoder_pad: zeros`, `model.decoder_act: relu`) "
          "in PyTorch as `Predictor` runs it (channels_last, "
          "inference_mode) and the files `semhint export --format onnx [--int8 FRAMES]` writes for it, run by ONNX "
          "Runtime with every graph optimisation on (what `semhint predict MODEL.onnx` runs). All are timed "
          f"interleaved call by call ({args.repeats} timed rounds after {args.warmup} warm-up rounds); `ms` is the "
          "median, `ms_best` the fastest call; `vs_reference` = time / reference time (the goal: at most "
          f"{GOAL}). Weights are random for timing (speed does not depend on them); int8 files are calibrated on "
          f"{'the --data train split' if args.data else 'a tiny SynthDrive render'}.\n\n"
          f"Load during measurement: {args.load or 'not noted (pass --load)'}\n\n")
    if notes:
        md += notes + "\n\n"
    if timing:
        md += markdown_table(timing, ["variant", "encoder", "decoder", "runtime", "precision", "ms", "ms_best", "vs_reference",
                                      "vs_reference_best", "calls"])
    if accuracy:
        md += ("\n\nAccuracy against exact ground truth, on the test split of `--data` at the checkpoint's own size "
               "(generic protocol, per-image median scaling): `abs_rel_change` = AbsRel / PyTorch float32 AbsRel - 1; "
               "`depth_vs_float_*` = median and 95th percentile over test pixels of |depth / PyTorch depth - 1| "
               "(before median scaling). The int8 file is calibrated on the train split.\n\n")
        md += markdown_table(accuracy, ["model", "encoder", "size", "runtime", "precision", "abs_rel", "abs_rel_change", "a1",
                                        "depth_vs_float_median", "depth_vs_float_p95"])
    if sensitivity:
        md += (f"\n\nPer-layer sensitivity ({models[0][2]}): only the named layer group is int8, everything else "
               "float, scored as above. The groups that cost most are those `semhint export --int8` keeps float "
               "(`semhint.export.INT8_FLOAT_NODES`, column `float in --int8`); they were chosen from this table.\n\n")
        md += markdown_table(sensitivity, ["int8 only", "abs_rel_change", "depth_vs_float_median", "depth_vs_float_mean",
                                           "float in --int8"])
    write_record(args.key, "Depth inference speed: PyTorch, ONNX Runtime, int8", command, md,
                 {"timing": timing, "accuracy": accuracy, "sensitivity": sensitivity, "load": args.load, "command": command,
                  "size": [h, w], "threads": args.threads, "goal_vs_reference": GOAL,
                  "accuracy_limit": ACCURACY_LIMIT, "checkpoint": args.checkpoint, "data": args.data})


if __name__ == "__main__":
    main()
