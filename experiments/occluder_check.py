"""Would the instrument hint (operator F) change a trained depth-only model's depth, and for the better?

A diagnostic before training with the hint: for each frame of a split of a rendered tissue world
(`semhint synth tissue`), a trained checkpoint's depth is passed through
``semhint.refine.occluders_in_front`` with the frame's noisy labels (what training would do at the
end of its schedule, ungated) and both maps are scored against exact depth on the instrument's pixels
(ground-truth labels) and on all pixels: AbsRel after per-image median scaling of the prediction,
depth capped at --cap. Frames with fewer than 10 instrument pixels are skipped. If the hint hardly
moves the prediction on the training frames, training with it cannot teach much, whatever the test
error of the instruments.

    python experiments/occluder_check.py --data runs/synth_tissue_scared --labels corrupt0.5 \
        --checkpoints runs/tissue_kin5/runs/synth_tissue_scared_kinematics/seed*/checkpoints/last.ckpt --record occluder_check
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from semhint.core.errors import InputError
from semhint.core.fileio import read_depth_png, read_label_png, read_rgb
from semhint.data.folder import parse_split_line
from semhint.data.frames import read_split_lines
from semhint.inference import load_predictor
from semhint.lab.records import markdown_table, write_record
from semhint.refine import occluders_in_front

INSTRUMENT = 2  # SynthTissue's class ids: tissue A, tissue B, instrument
COLUMNS = ["split", "checkpoint", "frames", "changed px", "instrument pred", "instrument hint", "all pred", "all hint"]


def split_frames(root: Path, split: str) -> list[tuple[str, int]]:
    """(sequence, index) of every line of ``root/splits/<split>.txt``, read as the folder loader reads it."""
    path = root / "splits" / f"{split}.txt"
    return [parse_split_line(text, lineno, path) for lineno, text in read_split_lines(path)]


def abs_rel(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> float:
    return float(np.mean(np.abs(pred[mask] - gt[mask]) / gt[mask]))


def check(predictor, root: Path, labels: str, split: str, cap: float) -> dict:
    """Mean over the split's frames with instruments of: pixels the hint moves, AbsRel before and after."""
    rows = []
    for seq, index in split_frames(root, split):
        name = f"{index:06d}.png"
        image = root / "data" / seq / name
        noisy = read_label_png(root / labels / seq / name)
        gt = read_depth_png(root / "gt_depth" / seq / name)
        gt_labels = read_label_png(root / "gt_labels" / seq / name)
        valid = (gt > 0) & (gt <= cap)
        tool = valid & (gt_labels == INSTRUMENT)
        if tool.sum() < 10:
            continue
        depth = cv2.resize(predictor.predict_depth(read_rgb(image)), noisy.shape[::-1], interpolation=cv2.INTER_LINEAR)
        hint = occluders_in_front(torch.from_numpy(depth)[None, None],
                                  torch.from_numpy(noisy.astype(np.int64))[None], [INSTRUMENT])[0, 0].numpy()
        scale = np.median(gt[valid]) / np.median(depth[valid])
        rows.append([float((hint != depth).mean()), abs_rel(depth * scale, gt, tool), abs_rel(hint * scale, gt, tool),
                     abs_rel(depth * scale, gt, valid), abs_rel(hint * scale, gt, valid)])
    if not rows:
        raise SystemExit(f"{root}: no {split} frame has 10 instrument pixels")
    mean = np.mean(rows, axis=0)
    return {"split": split, "frames": len(rows), "changed px": round(float(mean[0]), 4),
            **{c: round(float(v), 4) for c, v in zip(COLUMNS[4:], mean[1:])}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="a `semhint synth tissue` output")
    ap.add_argument("--labels", default="corrupt0.5", help="noisy label folder inside --data")
    ap.add_argument("--checkpoints", nargs="+", required=True)
    ap.add_argument("--splits", nargs="+", default=["train", "test"])
    ap.add_argument("--cap", type=float, default=150.0, help="depth cap (mm), as the tissue protocol")
    ap.add_argument("--record", default="none", help="lab record key to write (default none: print only)")
    args = ap.parse_args()
    for path in args.checkpoints:
        if not Path(path).is_file():
            raise SystemExit(f"{path}: no such checkpoint")
    rows = []
    try:
        for n, path in enumerate(args.checkpoints):
            predictor = load_predictor(path)
            for split in args.splits:
                rows.append({"checkpoint": n, **check(predictor, args.data, args.labels, split, args.cap)})
                print(rows[-1], flush=True)
    except InputError as exc:  # a missing split, label or depth file: one line naming it
        raise SystemExit(f"occluder_check: {exc}") from None
    table = markdown_table(rows, COLUMNS)
    print(table)
    if args.record == "none":
        return
    command = (f"python experiments/occluder_check.py --data {args.data} --labels {args.labels} --checkpoints "
               f"{' '.join(args.checkpoints)} --splits {' '.join(args.splits)} --cap {args.cap:g} --record {args.record}")
    body = ("Per split, the mean over frames with at least 10 instrument pixels of: the fraction of pixels operator F "
            "(`occluders_in_front`, noisy labels) moves, and AbsRel (per-image median scaling, cap "
            f"{args.cap:g} mm) of the checkpoint's depth (pred) and of the hinted depth (hint), on the instrument's "
            "pixels (ground-truth labels) and on all pixels. Checkpoints in the order of the command.\n\n" + table)
    write_record(args.record, "Would the instrument hint move a trained model's depth?", command, body, {"rows": rows})


if __name__ == "__main__":
    main()
