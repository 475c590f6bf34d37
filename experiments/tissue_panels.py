"""Depth panels of SynthTissue test frames: input, noisy labels, exact depth, baseline, SemHint.

Each arm's prediction is median-scaled to the exact depth as the evaluation protocol does, and each
row shares one colour scale (taken from the exact depth), so the arms compare by colour.

    python experiments/tissue_panels.py --data runs/synth_tissue_scared --labels corrupt0.5 \\
        --baseline runs/tissue_kin5/runs/synth_tissue_scared_kinematics/seed0/checkpoints/last.ckpt \\
        --semhint runs/tissue_kin5/runs/semhint_synth_tissue_scared_kinematics-corrupt0.5/seed0/checkpoints/last.ckpt \\
        --out docs/images/tissue_depth_panels.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from semhint.core.fileio import read_depth_png, read_image_array, read_label_png
from semhint.core.pictures import colorize_labels, depth_panels
from semhint.inference import load_predictor


def test_frames(root: Path, count: int) -> list[tuple[str, int]]:
    """``count`` frames spread evenly over the test split (sequence, index)."""
    split = root / "splits" / "test.txt"
    if not split.is_file():
        raise SystemExit(f"{split}: not found (render with `semhint synth tissue --out {root}`)")
    lines = [ln.split() for ln in split.read_text().splitlines() if ln.strip()]
    picks = np.linspace(0, len(lines) - 1, count).round().astype(int)
    return [(lines[i][0], int(lines[i][1])) for i in picks]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="a `semhint synth tissue` output")
    ap.add_argument("--baseline", type=Path, required=True, help="baseline checkpoint")
    ap.add_argument("--semhint", type=Path, required=True, help="SemHint checkpoint")
    ap.add_argument("--labels", default="", help="noisy label folder under --data to show (e.g. corrupt0.5)")
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = ap.parse_args()
    for path in (args.baseline, args.semhint):
        if not path.is_file():
            raise SystemExit(f"{path}: checkpoint not found")
    frames = test_frames(args.data, args.frames)
    images = [read_image_array(args.data / "data" / s / f"{i:06d}.png", "image", convert="RGB") for s, i in frames]
    arms = {"baseline": load_predictor(args.baseline), "SemHint": load_predictor(args.semhint)}
    predictions = {name: p.predict_depth_batch(images) for name, p in arms.items()}
    rows = []
    for n, (seq, index) in enumerate(frames):
        exact = read_depth_png(args.data / "gt_depth" / seq / f"{index:06d}.png")
        valid = exact > 0
        row = {"input": images[n]}
        if args.labels:
            labels = read_label_png(args.data / args.labels / seq / f"{index:06d}.png")
            row["noisy labels"] = colorize_labels(labels, "tissue")
        row["exact depth"] = exact
        for name, depth in predictions.items():
            pred = depth[n]
            row[name] = pred * np.median(exact[valid]) / np.median(pred[valid])  # the protocol's median scaling
        rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    depth_panels(rows, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
