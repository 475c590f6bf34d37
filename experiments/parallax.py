"""Is there enough camera motion between training frames for photometric self-supervision to see depth?

For a rendered synthetic world (`semhint synth drive|tissue`: poses/, gt_depth/, meta.json), the
camera's translation from one frame to the next and the parallax it produces at the median scene
depth, in pixels of a given training width: parallax = f * |t| / z. Depth is learned from how that
parallax varies across the image; when the parallax itself is a fraction of a pixel, the
photometric loss has almost nothing to learn from, whatever the network or the method.

The same from the exact depth maps, pixel by pixel, for a camera that also turns (the scared
preset pans, dollies and rolls): the rigid flow of every valid pixel of frame t into frame t + 1
(back-projected with its depth, moved with the poses, projected), at the training size, and its
translation part (the flow minus what the rotation alone would do), which is the part that
depends on depth. Medians over pixels, then over frame pairs.

Not all of that translation part teaches depth: any plane in front of the camera (a constant depth
is one) moves the image by a homography, so a depth net that has only learnt a plane already
explains the part of the flow a homography fits. What is left after the best homography (fitted by
least squares to each pair's rigid flow) is the parallax of the scene's relief: the signal a
photometric loss has for shape. Reported as "relief px".

    python experiments/parallax.py --data runs/semhint_bench/drive --width 208 \\
        --data runs/semhint_bench/tissue7 --width 80
    python experiments/parallax.py --data runs/synth_tissue_scared --width 160 --height 128 --record parallax_scared
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


def pair_flow(depth: np.ndarray, K: np.ndarray, T: np.ndarray, stride: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Rigid flow (2 x N px) of the valid pixels (depth > 0, every ``stride``-th row and column) of a
    frame into the next one, given ``T`` = target->source (inv(P_next) @ P_this), and its translation
    part (the flow minus the flow the rotation alone makes, which no depth changes)."""
    ys, xs = np.nonzero(depth[::stride, ::stride] > 0)
    ys, xs = ys * stride, xs * stride
    pix = np.stack([xs, ys, np.ones_like(xs)]).astype(np.float64)
    rays = np.linalg.inv(K) @ pix
    moved = K @ (T[:3, :3] @ (rays * depth[ys, xs]) + T[:3, 3:4])
    turned = K @ T[:3, :3] @ rays
    flow = moved[:2] / moved[2] - pix[:2]
    return flow, moved[:2] / moved[2] - turned[:2] / turned[2]


def relief_parallax(flow: np.ndarray, pix: np.ndarray) -> np.ndarray:
    """|flow - the homography that best fits it| per pixel (same units as ``flow``): what no plane explains.

    Least squares on the direct linear form after normalising the points (Hartley), so pixels far
    from the centre do not dominate; the residual is measured in pixels of the reprojected points.
    """
    src, dst = pix[:2].T, (pix[:2] + flow).T
    centre, spread = src.mean(0), src.std() + 1e-12
    norm = np.array([[1 / spread, 0, -centre[0] / spread], [0, 1 / spread, -centre[1] / spread], [0, 0, 1]])
    a, b = (norm @ np.c_[src, np.ones(len(src))].T).T, (norm @ np.c_[dst, np.ones(len(dst))].T).T
    zero = np.zeros((len(a), 3))
    rows = np.concatenate([np.c_[a, zero, -b[:, :1] * a], np.c_[zero, a, -b[:, 1:2] * a]])
    H = np.linalg.svd(rows, full_matrices=False)[2][-1].reshape(3, 3)
    H = np.linalg.inv(norm) @ H @ norm
    mapped = H @ np.c_[src, np.ones(len(src))].T
    return np.hypot(*(mapped[:2] / mapped[2] - dst.T))


def flow_stats(root: Path, meta: dict, width: int, height: int, gap: int = 1) -> dict:
    """Median |flow| and median |translation part| between frames ``gap`` apart (a config's frame ids
    -gap and +gap) at the training size (``width`` x ``height``): per pair the median over pixels;
    reported as the median over pairs and the 10th / 90th percentiles."""
    intr = meta["intrinsics"]
    K = np.array([[intr["fx"], 0, intr["cx"]], [0, intr["fy"], intr["cy"]], [0, 0, 1]], dtype=np.float64)
    scale = np.array([[width / intr["width"]], [height / intr["height"]]])
    flows, parallaxes, reliefs = [], [], []
    for pose_file in sorted((root / "poses").rglob("*.txt")):
        rows = np.loadtxt(pose_file, ndmin=2).reshape(-1, 3, 4)
        poses = np.tile(np.eye(4), (len(rows), 1, 1))
        poses[:, :3] = rows
        depths = sorted((root / "gt_depth" / pose_file.relative_to(root / "poses").with_suffix("")).rglob("*.png"))
        if len(depths) != len(poses):
            raise SystemExit(f"{pose_file}: {len(poses)} poses but {len(depths)} depth maps")
        for t in range(len(poses) - gap):
            depth = read_depth_png(depths[t])
            flow, parallax = pair_flow(depth, K, np.linalg.inv(poses[t + gap]) @ poses[t])
            flows.append(float(np.median(np.hypot(*(flow * scale)))))
            parallaxes.append(float(np.median(np.hypot(*(parallax * scale)))))
            ys, xs = np.nonzero(depth[::2, ::2] > 0)  # the pixels pair_flow used, at the training size
            reliefs.append(float(np.median(relief_parallax(flow * scale, np.stack([xs * 2, ys * 2]) * scale))))
    flows_a, par_a, rel_a = np.array(flows), np.array(parallaxes), np.array(reliefs)
    return {"train size": f"{height}x{width}", "frame gap": gap, "pairs": len(flows),
            "flow px (median)": float(np.median(flows_a)), "flow px (p10)": float(np.percentile(flows_a, 10)),
            "flow px (p90)": float(np.percentile(flows_a, 90)), "parallax px (median)": float(np.median(par_a)),
            "parallax px (p10)": float(np.percentile(par_a, 10)), "parallax px (p90)": float(np.percentile(par_a, 90)),
            "relief px (median)": float(np.median(rel_a)), "relief px (p90)": float(np.percentile(rel_a, 90))}


def parallax_row(root: Path, width: int, height: int | None = None, gap: int = 1) -> dict:
    meta = json.loads((root / "meta.json").read_text())
    K = meta["intrinsics"]
    f = K["fx"] * width / K["width"]
    steps, z = camera_steps(root), median_depth(root)
    row = {"data": str(root), "units": meta.get("units", ""), "camera step (mean)": float(steps.mean()),
           "camera step (max)": float(steps.max()), "median depth": z, "train width": width,
           "parallax px (mean)": f * float(steps.mean()) / z}
    if height is not None:
        row.update(flow_stats(root, meta, width, height, gap))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", action="append", required=True, type=Path, help="a `semhint synth` output (repeatable)")
    ap.add_argument("--width", action="append", required=True, type=int, help="training width for each --data")
    ap.add_argument("--height", action="append", type=int, default=None,
                    help="training height for each --data: also measure the per-pixel flow from the depth maps")
    ap.add_argument("--gap", action="append", type=int, default=None,
                    help="frames between the pair for each --data (a config's frame ids -gap, +gap; default 1)")
    ap.add_argument("--record", default="parallax",
                    help="lab record to write (docs/lab/RECORD.md; default parallax; none: print only)")
    args = ap.parse_args()
    if len(args.data) != len(args.width):
        raise SystemExit("give one --width per --data")
    if args.height is not None and len(args.height) != len(args.data):
        raise SystemExit("give one --height per --data (or none)")
    if args.gap is not None and (len(args.gap) != len(args.data) or min(args.gap) < 1):
        raise SystemExit("give one --gap >= 1 per --data (or none)")
    heights = args.height or [None] * len(args.data)
    gaps = args.gap or [1] * len(args.data)
    rows = [parallax_row(root, w, h, g) for root, w, h, g in zip(args.data, args.width, heights, gaps)]
    columns = list(dict.fromkeys(c for row in rows for c in row))
    print(markdown_table(rows, columns))
    if args.record == "none":
        return
    command = "python experiments/parallax.py " + " ".join(
        f"--data {d} --width {w}" + (f" --height {h}" if h is not None else "") + (f" --gap {g}" if args.gap else "")
        for d, w, h, g in zip(args.data, args.width, heights, gaps))
    if args.record != "parallax":
        command += f" --record {args.record}"
    body = ("Camera translation between consecutive frames and the parallax it makes at the median depth, "
            "in pixels at the training width (f * |t| / z; frame ids -1 and +1 see one step). Photometric "
            "self-supervision learns depth from how this parallax varies over the image.\n\n"
            + (FLOW_NOTE if args.height else "") + markdown_table(rows, columns))
    write_record(args.record, f"Camera motion between training frames ({args.record})", command, body, {"rows": rows})


FLOW_NOTE = ("With a training height, also the rigid flow of every valid pixel from frame t to t + 1 at the "
             "training size, from the exact depth and the poses (median over pixels per pair; median, 10th and "
             "90th percentile over pairs), and its translation part (the flow minus the rotation's own flow): "
             "the part that depends on depth; relief px: the flow left after the homography that fits it best "
             "(median over pixels per pair, then median and 90th percentile over pairs), which no plane, a "
             "constant depth among them, explains: the parallax of the scene's shape.\n\n")


if __name__ == "__main__":
    main()
