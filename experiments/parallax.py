"""Is there enough camera motion between training frames for photometric self-supervision to see depth?

For a rendered synthetic world (`semhint synth drive|tissue`: poses/, gt_depth/, meta.json), the
camera's translation from one frame to the next and the parallax it produces at the median scene
depth, in pixels of a given training width: parallax = f * |t| / z. Depth is learned from how that
parallax varies across the image; when the parallax itself is a fraction of a pixel, the
photometric loss has almost nothing to learn from, whatever the network or the method.

    python experiments/parallax.py --data runs/semhint_bench/drive --width 208 \\
        --data runs/semhint_bench/tissue7 --width 80
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from semhint.core.fileio import read_depth_png
from semhint.lab.records import markdown_table, write_record


def camera_steps(root: Path) -> np.ndarray:
    """Frame-to-frame camera translation (scene units) over every pose file of the render."""
    files = sorted((root / "poses").rglob("*.txt"))
    if not files:
        raise SystemExit(f"{root / 'poses'}: no pose files (is this a `semhint synth` output?)")
    steps = [np.linalg.norm(np.diff(np.loadtxt(f).reshape(-1, 3, 4)[:, :, 3], axis=0), axis=1) for f in files]
    return np.concatenate(steps)


def median_depth(root: Path, every: int = 10) -> float:
    """Median ground-truth depth over every ``every``-th depth map (valid pixels only)."""
    files = sorted((root / "gt_depth").rglob("*.png"))[::every]
    if not files:
        raise SystemExit(f"{root / 'gt_depth'}: no depth PNGs")
    return float(np.median(np.concatenate([d[d > 0] for d in map(read_depth_png, files)])))


def parallax_row(root: Path, width: int) -> dict:
    meta = json.loads((root / "meta.json").read_text())
    K = meta["intrinsics"]
    f = K["fx"] * width / K["width"]
    steps, z = camera_steps(root), median_depth(root)
    return {"data": str(root), "units": meta.get("units", ""), "camera step (mean)": float(steps.mean()),
            "camera step (max)": float(steps.max()), "median depth": z, "train width": width,
            "parallax px (mean)": f * float(steps.mean()) / z}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", action="append", required=True, type=Path, help="a `semhint synth` output (repeatable)")
    ap.add_argument("--width", action="append", required=True, type=int, help="training width for each --data")
    args = ap.parse_args()
    if len(args.data) != len(args.width):
        raise SystemExit("give one --width per --data")
    rows = [parallax_row(root, w) for root, w in zip(args.data, args.width)]
    columns = list(rows[0])
    print(markdown_table(rows, columns))
    command = "python experiments/parallax.py " + " ".join(f"--data {d} --width {w}" for d, w in zip(args.data, args.width))
    body = ("Camera translation between consecutive frames and the parallax it makes at the median depth, "
            "in pixels at the training width (f * |t| / z; frame ids -1 and +1 see one step). Photometric "
            "self-supervision learns depth from how this parallax varies over the image.\n\n"
            + markdown_table(rows, columns))
    write_record("parallax", "Camera motion between training frames (parallax)", command, body, {"rows": rows})


if __name__ == "__main__":
    main()
