"""SemHint vs the depth-only baseline on real KITTI frames with real noisy labels: `make real-kitti`.

1. fits a labeler on CamVid train + val (real hand labels from another city and camera) and scores it
   on CamVid test;
2. labels the 48-frame KITTI sample with it (Cityscapes train ids) and draws a contact sheet;
3. trains the baseline (configs kitti_sample), SemHint (semhint_kitti_sample: the road-plane hint along the
   direction of travel, ungated; no decoder layer shared) and the segmentation branch alone
   (semhint_kitti_sample_branch: SemHint without hints)
   per seed with the configs' own schedule, one torch thread each, into OUT/<baseline|semhint|branch>-s<seed>/;
4. scores every run on the sample's 23 LiDAR frames (Eigen protocol) and writes OUT/report.md and
   the lab record docs/lab/real_kitti.md.

``--holdout first|second`` trains on one half of the clip only (targets whose neighbours all lie in it)
and scores on the LiDAR frames of the other half, which no run has seen: a check on real frames a recipe
was not chosen on (the clip's 23 LiDAR frames also chose the recipe).

Training never sees LiDAR: the sweep clears data.gt_depth for training and reloads it to score
(semhint.lab.sweep.run_config / scoring_config). Every step is cached, so a stopped run resumes.

    python experiments/real_kitti.py --out runs/real_kitti --seeds 0 1 2 3 4 --jobs 2
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from semhint.core.config import load_config
from semhint.core.fileio import write_text
from semhint.core.pictures import colorize_labels, depth_panels
from semhint.data import kitti
from semhint.data.frames import SPLITS_DIR, read_split_lines, write_split
from semhint.inference import load_predictor
from semhint.lab import sweep as S
from semhint.lab.records import write_record

ARMS = {"kitti_sample": "baseline", "semhint_kitti_sample": "semhint", "semhint_kitti_sample_branch": "branch",
        "semhint_kitti_sample_street": "street", "semhint_kitti_sample_ground": "ground",
        "semhint_kitti_sample_plane": "plane", "kitti_sample_fused": "fused", "semhint_kitti_sample_votes": "votes"}
DEFAULT_ARMS = ["baseline", "semhint", "branch"]  # `make real-kitti`; street, ground, plane, fused, votes: on demand


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/real_kitti")
    p.add_argument("--kitti", default="../shared/data/kitti_sample")
    p.add_argument("--camvid", default="../shared/data/camvid")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--labeler-steps", type=int, default=600)
    p.add_argument("--labeler", help="use this labeler checkpoint instead of fitting one (its sha256 goes in the record): "
                                     "a re-measurement then changes one thing at a time")
    p.add_argument("--reevaluate", action="store_true", help="re-score finished runs from their last.ckpt")
    p.add_argument("--arms", nargs="+", choices=list(ARMS.values()), default=DEFAULT_ARMS,
                   help="arms to train (the report shows every arm's finished runs)")
    p.add_argument("--report-only", action="store_true", help="train nothing: write the report from finished runs")
    p.add_argument("--key", default="real_kitti", help="lab record key (docs/lab/KEY.md)")
    p.add_argument("--title", default="SemHint vs baseline on real KITTI frames, labels from a CamVid labeler")
    p.add_argument("--set", action="append", default=[], help="extra SECTION.KEY=VALUE applied to every run")
    p.add_argument("--holdout", choices=["first", "second"],
                   help="train on this half of the clip only and score on the other half's LiDAR frames")
    p.add_argument("--one", nargs=4, metavar=("CONFIG", "SEED", "RUN_DIR", "LABELS"), help=argparse.SUPPRESS)
    return p.parse_args()


def holdout_paths(out: Path, half: str) -> tuple[Path, Path]:
    """(train split, scored split) of a held-out run: files under OUT/holdout/."""
    return out / "holdout" / f"train_{half}.txt", out / "holdout" / f"scored_{half}.txt"


def same_step_budget(train_split: Path, kitti_root: str) -> list[str]:
    """--set items that give a run on ``train_split`` the full clip's optimiser steps and schedule shape:
    the configs count in epochs, and half the frames make an epoch half as long."""
    base, hinted = load_config("kitti_sample"), load_config("semhint_kitti_sample")
    batch = base.optim.batch_size
    full = len(kitti.scan_split_lines(kitti_root, base.data.frame_ids)) // batch
    held = max(1, len(split_lines(train_split)) // batch)

    def scaled(epochs: int) -> int:
        return max(1, round(epochs * full / held))

    return [f"optim.epochs={scaled(base.optim.epochs)}",
            f"optim.milestones=[{', '.join(str(scaled(m)) for m in base.optim.milestones)}]",
            f"refine.warmup_epochs={scaled(hinted.refine.warmup_epochs)}"]


def make_sweep(args: argparse.Namespace) -> S.Sweep:
    scored, extra = SPLITS_DIR / "kitti_sample_even.txt", []
    if args.holdout:
        train, scored = holdout_paths(Path(args.out), args.holdout)
        extra = [f"data.train_split={train}", *same_step_budget(train, args.kitti)]
    return S.Sweep(world="kitti", out=args.out, data=args.out, configs=list(ARMS), seeds=args.seeds, steps=0,
                   labels="labels", arms=ARMS, eval_split=str(scored), reevaluate=args.reevaluate,
                   set=[*extra, *args.set])


def split_lines(path: Path) -> list[str]:
    return [text for _, text in read_split_lines(path)]


def write_holdout_splits(kitti_root: str, out: Path, half: str) -> tuple[int, int]:
    """The held-out run's split files (semhint.lab.sweep.holdout_lines, cut at the clip's middle frame);
    returns (training targets, scored frames)."""
    frames = sorted({int(line.split()[1]) for line in kitti.scan_split_lines(kitti_root, [0])})
    if not frames:
        sys.exit(f"real_kitti: --holdout: no KITTI frames under {kitti_root}")
    frame_ids = load_config("kitti_sample").data.frame_ids
    train, scored = S.holdout_lines(kitti.scan_split_lines(kitti_root, frame_ids),
                                    split_lines(SPLITS_DIR / "kitti_sample_even.txt"), frame_ids,
                                    middle=(frames[0] + frames[-1] + 1) // 2, half=half)
    if not train or not scored:
        sys.exit(f"real_kitti: --holdout {half}: {kitti_root} leaves no training frames or no scored frames")
    train_path, scored_path = holdout_paths(out, half)
    write_split(train_path, train)
    write_split(scored_path, scored)
    return len(train), len(scored)


def semhint(*argv: str) -> None:
    """Run a semhint command as a user would; a failure stops the experiment with its message."""
    result = subprocess.run([sys.executable, "-m", "semhint", *argv])
    if result.returncode != 0:
        sys.exit(f"real_kitti: `semhint {' '.join(argv)}` failed (exit {result.returncode})")


def make_labels(args: argparse.Namespace, out: Path) -> dict:
    """Labeler on CamVid (once), KITTI labels with their contact sheet (once); the labeler's test scores."""
    camvid = Path(args.camvid)
    model = Path(args.labeler) if args.labeler else out / "labeler.ckpt"
    if args.labeler and not model.is_file():
        sys.exit(f"real_kitti: --labeler {model}: no such file")
    if not model.is_file():
        semhint("labels", "train", "--images", str(camvid / "train/images"), str(camvid / "val/images"),
                "--labels", str(camvid / "train/labels"), str(camvid / "val/labels"), "--classes", "camvid",
                "--test-images", str(camvid / "test/images"), "--test-labels", str(camvid / "test/labels"),
                "--frames", "0", "--size", "96x320", "--steps", str(args.labeler_steps),
                "--encoder", "efficientnet_lite0", "--pretrained", "package", "--out", str(model))
    if not (out / "labels" / "labels_info.json").is_file():
        semhint("labels", "predict", "--model", str(model), "--data-path", args.kitti, "--out", str(out / "labels"),
                "--preview", str(out / "labels_sheet.png"))
    meta = torch.load(model, map_location="cpu", weights_only=False)
    return {**meta.get("train", {}).get("test", {}), "sha256": weights_sha256(model)}


def weights_sha256(path: Path) -> str:
    """The labeler's fingerprint: a hash of its weights alone (names, shapes, values), so that two fits with
    identical weights share it; the file also holds the fit's wall time, which differs on every fit."""
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().contiguous().cpu()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def ensure_ground_truth(args: argparse.Namespace) -> None:
    """The LiDAR depth of the scored frames (what the configs' eval reads; never training)."""
    gt = Path(load_config("kitti_sample").data.gt_depth)
    if not gt.is_file():
        semhint("kitti", "export-gt", "--data-path", args.kitti, "--split", str(SPLITS_DIR / "kitti_sample_even.txt"),
                "--output", str(gt))


def panel_arm(arms: list[str]) -> str:
    """The hinted arm the panels show beside the baseline: SemHint, else the first hinted variant trained."""
    return next((a for a in ["semhint", *arms] if a not in ("baseline", "branch") and a in arms), "semhint")


def real_panels(sweep: S.Sweep, out: Path, arm: str = "semhint", frames: int = 4) -> Path | None:
    """Input | noisy labels | baseline | SemHint (``arm``) | LiDAR points, for a few scored frames (seed 0 of each arm)."""
    ckpts = {a: out / f"{a}-s{sweep.seeds[0]}" / "checkpoints" / "last.ckpt" for a in ("baseline", arm)}
    if not all(p.is_file() for p in ckpts.values()):
        return None
    cfg = S.run_config("semhint_kitti_sample", sweep, sweep.seeds[0], out / "panels", "labels")
    data = S.eval_data(sweep, "semhint_kitti_sample", cfg)
    picks = np.linspace(0, len(data.images) - 1, frames).round().astype(int)
    images = [data.images[i] for i in picks]
    depths = {a: load_predictor(p).predict_depth_batch(images) for a, p in ckpts.items()}
    rows = []
    for n, i in enumerate(picks):
        lidar = data.depths[i]
        # LiDAR covers ~5 % of the pixels in thin scan lines: grown to 5x5 dots to be seen at this size
        # (the nearest point wins, so a far point never hides a near one; display only, scoring is above)
        far = np.float32(1e6)
        seen = cv2.erode(np.where(lidar > 0, lidar, far).astype(np.float32), np.ones((5, 5), np.uint8))
        row = {"input": images[n], "noisy labels": colorize_labels(data.noisy[i], "cityscapes"),
               "LiDAR points": np.where(seen < far, seen, 0.0).astype(np.float32)}
        for a, title in (("baseline", "baseline"), (arm, "SemHint" if arm == "semhint" else f"SemHint ({arm})")):
            pred = cv2.resize(depths[a][n], lidar.shape[::-1], interpolation=cv2.INTER_LINEAR)
            row[title] = pred * np.median(lidar[lidar > 0]) / np.median(pred[lidar > 0])  # the protocol's scaling
        rows.append(row)
    path = out / "panels.png"
    depth_panels(rows, path)
    return path


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    if args.one:  # a launched process: one (config, seed)
        torch.set_num_threads(1)
        config, seed, run_dir, labels = args.one
        S.one_run(make_sweep(args), config, int(seed), Path(run_dir), labels or None)
        return
    out.mkdir(parents=True, exist_ok=True)
    holdout = write_holdout_splits(args.kitti, out, args.holdout) if args.holdout else None
    sweep = make_sweep(args)
    labeler = make_labels(args, out)
    ensure_ground_truth(args)
    flags = sys.argv[1:]
    todo = dataclasses.replace(sweep, configs=[c for c in sweep.configs if ARMS[c] in args.arms])
    if not args.report_only:
        S.launch(todo, lambda run: [sys.executable, __file__, *flags, "--one", run[0], str(run[1]), str(run[2]),
                                     run[3] or ""], jobs=args.jobs)
    groups = S.collect(sweep)
    groups = {"constant depth (reference)": [S.constant_depth_result(sweep)], **groups}
    markdown, raw = S.table(groups, "kitti")
    panels = real_panels(sweep, out, panel_arm(args.arms))
    lab_line = (f"Labeler (EfficientNet-Lite0, CamVid train + val, {args.labeler_steps} steps at 96x320): "
                f"CamVid test mIoU {100 * labeler['miou']:.1f} %, pixel accuracy {100 * labeler['pixel_accuracy']:.1f} % "
                f"(IoU per class: {', '.join(f'{c} {100 * v:.1f}' for c, v in labeler['per_class_iou'].items())}); "
                f"weights sha256 {labeler['sha256'][:16]}."
                if labeler.get("miou") is not None else "Labeler: no CamVid test score recorded.")
    scored = len(split_lines(Path(sweep.eval_split)))
    where = (f"Held out: trained on the {args.holdout} half of the clip only ({holdout[0]} training targets, "
             f"every neighbour inside that half; epochs, milestones and the hint warm-up scaled to the full clip's "
             f"optimiser steps: {', '.join(same_step_budget(holdout_paths(out, args.holdout)[0], args.kitti))}), scored on the other half's {scored} LiDAR frames, "
             "which no run saw. " if holdout else "")
    notes = (f"{lab_line} {where}Scored on the KITTI sample's {scored} "
             "LiDAR frames (Eigen protocol: Garg crop, 1e-3..80 m, per-image median scaling); per-class rows group "
             "LiDAR pixels by the NOISY label at the pixel (no ground-truth classes exist for these frames). "
             + ("Every arm uses its config's schedule, rescaled as above (300 steps of batch 4), one torch thread each."
                if holdout else
                "Every arm uses its config's schedule unchanged (kitti_sample: 300 steps of batch 4), one torch thread each."))
    body = notes + "\n\n" + markdown + (f"\n\n![panels]({panels.resolve()})" if panels else "")
    write_text(out / "report.md", "# SemHint vs baseline on real KITTI frames\n\n" + body + "\n")
    write_text(out / "report.json", json.dumps({"labeler_test": labeler, "runs": raw}, indent=1, default=str))
    write_record(args.key, args.title,
                 S.python_command("experiments/real_kitti.py"), body.split("\n\n![panels]")[0], {"runs": raw})
    print(markdown)


if __name__ == "__main__":
    main()
