"""Training-step cost against resolution, batch and number of classes, and a cost model to predict a run's.

One optimiser step (``semhint.lab.timing.TrainStep``: ``SemHintModule.objective``, backward, Adam, the
refinement on from the first step) of the depth-only baseline (``kitti_eigen_zhou``) and of SemHint
(``semhint_kitti_eigen_zhou``: segmentation branch, hint operators A + D with the gate, pseudo-semantics),
timed along three axes, one at a time:

- resolution (``--sizes``, batch 4, 19 classes), where SemHint is also timed with its cost switches on
  (``refine.hint_scale=1 refine.pseudo_seg_scale=1``: the hint operators and the source frames'
  segmentation at half resolution; they change the numbers and are off by default), and with its
  segmentation branch alone (``refine.hint=false refine.pseudo_seg=false``: no refinement, the floor
  that any refinement speed-up leaves);
- batch (``--batches`` at ``--ref-size``);
- number of classes (``--classes`` at ``--ref-size``, batch 4; SemHint only, the baseline has no classes).

At every grid point the arms are timed interleaved, one step of each per round
(``semhint.lab.timing.time_interleaved``), so load from other processes hits them alike and their
ratio stays meaningful where absolute times drift; the record gives medians. From the rows it fits,
per arm, seconds per step ~ a + b * P (P = height x width x batch, pixels per step) and for SemHint
a + P * (b + c * classes), least squares on relative error, and predicts from them the optimiser
steps of a run (20 epochs of eigen_zhou at 640x192, batch 12).

    .venv/bin/python benchmarks/bench_scaling.py --load "idle"      # default grid (a few minutes at 1 thread)
    .venv/bin/python benchmarks/bench_scaling.py --quick --no-write   # smoke check
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

import numpy as np
import torch

from semhint.lab.records import LAB_DIR, markdown_table, write_record
from semhint.lab.timing import TrainStep, bench_config, split_size, time_interleaved

BASELINE, SEMHINT, COARSE, BRANCH = "baseline", "semhint", "semhint coarse", "semhint branch only"
CONFIGS = {BASELINE: "kitti_eigen_zhou", SEMHINT: "semhint_kitti_eigen_zhou", COARSE: "semhint_kitti_eigen_zhou",
           BRANCH: "semhint_kitti_eigen_zhou"}
OVERRIDES = {COARSE: ["refine.hint_scale=1", "refine.pseudo_seg_scale=1"],
             BRANCH: ["refine.hint=false", "refine.pseudo_seg=false"]}
GOAL_RATIO = 1.25  # issue 22: a SemHint step at most 1.25x the baseline's, at 96x320 and 192x640
RATIO_SIZES = [(96, 320), (192, 640)]
RUN = {"epochs": 20, "height": 192, "width": 640, "batch": 12, "classes": 19}  # the prediction's example run
FIELDS = ["axis", "arm", "size", "batch", "classes", "pixels_per_step", "s_per_step", "vs_baseline", "fit_s",
          "fit_error"]


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r}: expected HxW, e.g. 96x320") from None
    if min(h, w) < 64:
        raise argparse.ArgumentTypeError(f"size {text!r}: height and width must be at least 64")
    return h, w


def grid(args) -> list[dict]:
    """The grid points: one axis varied at a time around (``--ref-size``, batch 4, 19 classes)."""
    rh, rw = args.ref_size
    points = [{"axis": "resolution", "h": h, "w": w, "batch": 4, "classes": 19,
               "arms": [BASELINE, SEMHINT] + ([COARSE] if args.coarse else []) + ([BRANCH] if args.branch else [])}
              for h, w in args.sizes]
    points += [{"axis": "batch", "h": rh, "w": rw, "batch": b, "classes": 19, "arms": [BASELINE, SEMHINT]}
               for b in args.batches if not ((rh, rw) in args.sizes and b == 4)]
    points += [{"axis": "classes", "h": rh, "w": rw, "batch": 4, "classes": c, "arms": [SEMHINT]}
               for c in args.classes if not ((rh, rw) in args.sizes and c == 19)]
    return points


def measure(points: list[dict], repeats: int, warmup: int, ratio_repeats: int | None = None,
            semhint_set: list[str] | None = None) -> list[dict]:
    """Median seconds per step of every arm at every point; the goal sizes' resolution points get
    ``ratio_repeats`` timed rounds (their ratio is the number the issue asks for). ``semhint_set``: config
    overrides (``SECTION.KEY=VALUE``) for every arm but the baseline."""
    device = torch.device("cpu")
    rows = []
    for p in points:
        goal = p["axis"] == "resolution" and (p["h"], p["w"]) in RATIO_SIZES
        fns = {arm: TrainStep(bench_config(CONFIGS[arm], p["h"], p["w"], p["batch"],
                                           p["classes"] if arm != BASELINE else None,
                                           OVERRIDES.get(arm, []) + (semhint_set or []) if arm != BASELINE else None),
                              device)
               for arm in p["arms"]}
        medians = time_interleaved(fns, device, max(repeats, ratio_repeats or 0) if goal else repeats, warmup)
        del fns
        for arm, s in medians.items():
            row = {"axis": p["axis"], "arm": arm, "size": f"{p['h']}x{p['w']}", "h": p["h"], "w": p["w"],
                   "batch": p["batch"], "classes": p["classes"] if arm != BASELINE else 0,
                   "pixels_per_step": p["h"] * p["w"] * p["batch"], "s_per_step": s}
            rows.append(row)
            print({k: row[k] for k in ("axis", "arm", "size", "batch", "classes", "s_per_step")}, flush=True)
    # the ratio to the baseline measured at the same size and batch (interleaved with it, where it was)
    base = {(r["h"], r["w"], r["batch"]): r["s_per_step"] for r in rows if r["arm"] == BASELINE}
    for r in rows:
        ref = base.get((r["h"], r["w"], r["batch"]))
        r["vs_baseline"] = r["s_per_step"] / ref if ref else ""
    return rows


def _features(arm: str, pixels: float, classes: float) -> list[float]:
    return [1.0, pixels, pixels * classes] if arm == SEMHINT else [1.0, pixels]


def fit_cost_model(rows: list[dict]) -> dict[str, dict]:
    """Per arm, least squares on relative error: seconds = a + b * P (+ c * P * classes for SemHint),
    P = pixels per step. Coefficients in seconds, seconds per megapixel (per class and megapixel)."""
    models = {}
    for arm in dict.fromkeys(r["arm"] for r in rows):
        own = [r for r in rows if r["arm"] == arm]
        X = np.array([_features(arm, r["pixels_per_step"] / 1e6, r["classes"]) for r in own])
        y = np.array([r["s_per_step"] for r in own])
        if arm == SEMHINT and len({r["classes"] for r in own}) < 2:
            X = X[:, :2]  # one class count: its cost cannot be told from the per-pixel cost
        if len(own) < X.shape[1]:
            continue
        coef, *_ = np.linalg.lstsq(X / y[:, None], np.ones_like(y), rcond=None)
        if len(coef) == 3 and coef[2] < 0:  # classes cost nothing measurable here: no negative per-class cost
            X = X[:, :2]
            coef = np.append(np.linalg.lstsq(X / y[:, None], np.ones_like(y), rcond=None)[0], 0.0)
        names = ["a_s", "b_s_per_mpx", "c_s_per_mpx_per_class"][:len(coef)]
        models[arm] = {n: float(v) for n, v in zip(names, coef)}
        for r, pred in zip(own, X @ coef[:X.shape[1]]):
            r["fit_s"] = float(pred)
            r["fit_error"] = float(pred / r["s_per_step"] - 1)
        models[arm]["max_fit_error"] = max(abs(r["fit_error"]) for r in own)
    return models


def predict(model: dict, arm: str, height: int, width: int, batch: int, classes: int) -> float:
    """Seconds per step of ``arm`` from its fitted model."""
    terms = _features(arm, height * width * batch / 1e6, classes)
    coef = [model["a_s"], model["b_s_per_mpx"], model.get("c_s_per_mpx_per_class", 0.0)]
    return float(sum(c * t for c, t in zip(coef, terms)))


def summary(rows: list[dict], models: dict) -> dict:
    out: dict = {"goal_ratio": GOAL_RATIO, "ratios": {}}
    for h, w in RATIO_SIZES:
        for arm in (SEMHINT, COARSE, BRANCH):
            r = next((r for r in rows if r["axis"] == "resolution" and r["arm"] == arm and (r["h"], r["w"]) == (h, w)),
                     None)
            if r is not None:
                out["ratios"][f"{arm} {h}x{w}"] = r["vs_baseline"]
    out["meets_goal"] = {k: v <= GOAL_RATIO for k, v in out["ratios"].items()}
    # where SemHint's extra cost goes, in units of a baseline step: the branch (its decoder and loss),
    # the refinement terms on top of it, and what the cost switches take off them
    out["extra_over_baseline"] = {}
    for h, w in RATIO_SIZES:
        r = {arm: out["ratios"].get(f"{arm} {h}x{w}") for arm in (SEMHINT, COARSE, BRANCH)}
        if r[SEMHINT] is not None and r[BRANCH] is not None:
            split = {"branch": r[BRANCH] - 1, "refinement": r[SEMHINT] - r[BRANCH]}
            if r[COARSE] is not None:
                split["saved_by_cost_switches"] = r[SEMHINT] - r[COARSE]
            out["extra_over_baseline"][f"{h}x{w}"] = split
    steps = RUN["epochs"] * (split_size() // RUN["batch"])
    out["example_run"] = dict(RUN, optimiser_steps=steps)
    out["example_run_hours"] = {arm: predict(m, arm, RUN["height"], RUN["width"], RUN["batch"], RUN["classes"]) * steps
                                / 3600 for arm, m in models.items()}
    return out


def markdown(rows: list[dict], models: dict, summ: dict, args, load_avg: tuple) -> str:
    md = ("One optimiser step (`semhint.lab.timing.TrainStep`: objective, backward, Adam; refinement on from the "
          f"first step), CPU, {args.threads} thread(s), frames (0, -1, +1); `{BASELINE}` = `{CONFIGS[BASELINE]}`, "
          f"`{SEMHINT}` = `{CONFIGS[SEMHINT]}`, `{COARSE}` = SemHint with `{' '.join(OVERRIDES[COARSE])}` (cost "
          f"switches, off by default: they change the numbers), `{BRANCH}` = SemHint with "
          f"`{' '.join(OVERRIDES[BRANCH])}` (the segmentation branch and its loss, no refinement)"
          + (f"; every SemHint arm also with `{' '.join(args.semhint_set)}`" if args.semhint_set else "")
          + ". At each grid "
          f"point the arms are timed interleaved, one step of each per round, {args.warmup} warm-up + "
          f"{args.repeats} timed rounds ({max(args.repeats, args.ratio_repeats)} at 96x320 and 192x640 on the "
          "resolution axis); medians. `vs_baseline` = step time / the baseline's at the same size and batch.\n\n"
          f"Load during measurement: {args.load or 'not noted (pass --load)'}; load average (1 min) "
          f"{load_avg[0]:.1f} at the start, {load_avg[1]:.1f} at the end. Absolute times on a loaded machine are "
          "inflated; the interleaved ratios are what carries over.\n\n")
    md += "## SemHint / baseline, batch 4\n\n"
    md += markdown_table([{"arm size": k, "vs_baseline": v, f"<= {GOAL_RATIO}x": summ["meets_goal"][k]}
                          for k, v in summ["ratios"].items()], ["arm size", "vs_baseline", f"<= {GOAL_RATIO}x"])
    if summ.get("extra_over_baseline"):
        md += ("\n\nSemHint's extra cost in baseline steps: `branch` = the segmentation branch and its loss "
               f"({BRANCH} - 1), `refinement` = the hint and pseudo-semantic terms ({SEMHINT} - {BRANCH}), "
               f"`saved_by_cost_switches` = {SEMHINT} - {COARSE}.\n\n")
        md += markdown_table([{"size": k, **v} for k, v in summ["extra_over_baseline"].items()],
                             ["size", "branch", "refinement", "saved_by_cost_switches"])
    md += ("\n\n## Cost model\n\nseconds per step = a + b * P (+ c * P * classes for SemHint), P = height x width x "
           "batch in megapixels; least squares on relative error over the arm's rows (`fit_s`, `fit_error` below); "
           "c = 0 where the fit found the class count to cost nothing measurable (a negative c is not kept).\n\n")
    md += markdown_table([{"arm": arm, **m} for arm, m in models.items()],
                         ["arm", "a_s", "b_s_per_mpx", "c_s_per_mpx_per_class", "max_fit_error"])
    run = summ["example_run"]
    md += (f"\n\nPrediction for {run['epochs']} epochs of eigen_zhou at {run['width']}x{run['height']}, batch "
           f"{run['batch']} ({run['optimiser_steps']} optimiser steps; on this machine and load, optimiser steps "
           "only): "
           + ", ".join(f"{arm} {h:.1f} h" for arm, h in summ["example_run_hours"].items()) + ". Multiply a, b, c by "
           "(your step time / this record's) at one measured point to carry the model to another machine.\n\n")
    md += "## Measurements\n\n" + markdown_table(rows, FIELDS)
    return md


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=_size, default=[(64, 208), (96, 320), (192, 640)],
                        help="resolution axis, HxW (batch 4, 19 classes); 96x320 and 192x640 give the goal ratios")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 2, 4, 8], help="batch axis, at --ref-size")
    parser.add_argument("--classes", nargs="+", type=int, default=[3, 11, 19],
                        help="class axis, at --ref-size, batch 4")
    parser.add_argument("--ref-size", type=_size, default=(96, 320), help="the size of the batch and class axes")
    parser.add_argument("--no-coarse", dest="coarse", action="store_false",
                        help="leave out the SemHint arm with the cost switches on")
    parser.add_argument("--no-branch", dest="branch", action="store_false",
                        help="leave out the SemHint arm without refinement (the segmentation branch alone)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per grid point")
    parser.add_argument("--ratio-repeats", type=int, default=5,
                        help="timed rounds at the goal sizes (96x320, 192x640) of the resolution axis")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds per grid point")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: on a shared machine a second thread mostly waits for the other "
                             "process and distorts the many small refinement ops far more than the convolutions)")
    parser.add_argument("--set", dest="semhint_set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a config override for every SemHint arm (the baseline runs its config unchanged)")
    parser.add_argument("--quick", action="store_true", help="a small grid, one timed round (smoke check)")
    parser.add_argument("--load", default="", help="a note on machine load at measurement time (goes into the record)")
    parser.add_argument("--key", default="step_scaling", help="record key (docs/lab/KEY.md); another key keeps the full grid's record")
    parser.add_argument("--lab-dir", default=str(LAB_DIR), help="where the record goes (default docs/lab)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not write the lab record")
    parser.add_argument("--refit", default="",
                        help="a step_scaling.json: rebuild its cost model and record from its rows, measuring nothing")
    args = parser.parse_args()
    if args.refit:
        refit(args)
        return
    if args.quick:
        args.sizes, args.batches, args.classes = [(64, 208), (96, 320)], [1, 4], [3, 19]
        args.repeats = args.ratio_repeats = 1
    torch.set_num_threads(args.threads)
    start_load = os.getloadavg()[0]
    rows = measure(grid(args), args.repeats, args.warmup, args.ratio_repeats, args.semhint_set)
    models = fit_cost_model(rows)
    summ = summary(rows, models)
    load_avg = (start_load, os.getloadavg()[0])
    print(summ, flush=True)
    print(models, flush=True)
    if args.no_write:
        return
    command = ".venv/bin/python " + shlex.join(sys.argv)
    write_record(args.key, "Training-step cost against resolution, batch and classes", command,
                 markdown(rows, models, summ, args, load_avg),
                 {"rows": rows, "cost_model": models, "summary": summ, "threads": args.threads, "load": args.load,
                  "load_average_1min": list(load_avg), "command": command}, lab_dir=args.lab_dir)


def refit(args) -> None:
    """The record of ``args.refit`` rebuilt from its measured rows with this script's fit and tables."""
    with open(args.refit) as fh:
        old = json.load(fh)
    rows = [{k: v for k, v in r.items() if k not in ("fit_s", "fit_error")} for r in old["rows"]]
    for r in rows:  # older records did not store h, w
        r.setdefault("h", int(r["size"].split("x")[0]))
        r.setdefault("w", int(r["size"].split("x")[1]))
    models = fit_cost_model(rows)
    summ = summary(rows, models)
    print(summ, models, sep="\n")
    command = old["command"]
    again = shlex.join([".venv/bin/python", "benchmarks/bench_scaling.py", "--refit", args.refit])
    note = f"(measured by the command above; the cost model and tables rebuilt from its rows by `{again}`)"
    measured = argparse.Namespace(**vars(args))
    measured.threads, measured.load = old["threads"], old["load"]
    words = shlex.split(command)
    for flag, key, cast in (("--repeats", "repeats", int), ("--ratio-repeats", "ratio_repeats", int),
                            ("--warmup", "warmup", int)):
        if flag in words:
            setattr(measured, key, cast(words[words.index(flag) + 1]))
    if args.no_write:
        return
    write_record(args.key, "Training-step cost against resolution, batch and classes", command,
                 note + "\n\n" + markdown(rows, models, summ, measured, tuple(old["load_average_1min"])),
                 dict(old, rows=rows, cost_model=models, summary=summ, refit=note), lab_dir=args.lab_dir)


if __name__ == "__main__":
    main()
