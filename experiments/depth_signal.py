"""How much depth can a frame's two training neighbours teach, with the camera motion known or not?

A diagnostic below any network: for a few training frames of a rendered world (`semhint synth`:
data/, gt_depth/, poses/, splits/), a depth map (free log-depth at quarter resolution, upsampled) is
optimised by Adam against the frame's neighbours at -gap and +gap with the project's photometric
loss (SSIM + L1, per-pixel minimum over the two sources, over an image pyramid of 1x, 2x, 4x, 8x),
starting from a constant map, in two settings:

- ``exact pose``: the rendered relative poses are held fixed; depth starts at the true median, so
  only the shape is to be found. This is the most a photometric loss on these two views can teach.
- ``free pose``: the two poses are optimised too, from zero motion, and depth starts at an arbitrary
  18 units (what a depth net trained from scratch has to solve, for one frame).

Each is scored by AbsRel after per-image median scaling, beside the constant map's AbsRel on the
same frame. When even the exact-pose shape is hardly better than a constant, the world gives a
depth net too little signal; when exact pose works and free pose does not, the motion is what the
loss cannot pin down (for a narrow camera, turning and sliding sideways move the image alike).

    python experiments/depth_signal.py --data runs/synth_tissue_scared --gap 2 --record depth_signal_scared
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from semhint.core.fileio import read_depth_png, read_image_array
from semhint.core.geometry import axisangle_to_matrix, intrinsics_matrix, resize_intrinsics
from semhint.data.synthetic.writer import read_poses
from semhint.lab.records import markdown_table, write_record
from semhint.losses import min_reprojection, pair_errors, pyramid_level, smoothness_loss, warp_inside

PYRAMID = (1, 2, 4, 8)
FREE_POSE_START_DEPTH = 18.0  # a depth net's start in the tissue configs (model.disp_init 0.05 of 1..200 mm)


def load_frame(root: Path, seq: str, index: int, size: tuple[int, int]) -> torch.Tensor:
    """1 x 3 x H x W image in [0, 1], area-resized to the training size."""
    image = read_image_array(root / "data" / seq / f"{index:06d}.png", "image", convert="RGB")
    image = torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    return F.interpolate(image, size=size, mode="area")


def load_depth(root: Path, seq: str, index: int, size: tuple[int, int]) -> torch.Tensor:
    """1 x 1 x H x W exact depth (invalid pixels filled with the median), nearest-resized."""
    depth = torch.from_numpy(read_depth_png(root / "gt_depth" / seq / f"{index:06d}.png")).float()
    depth = F.interpolate(depth[None, None], size=size, mode="nearest")
    return torch.where(depth > 0, depth, depth[depth > 0].median())


def intrinsics(root: Path, seq: str, size: tuple[int, int]) -> torch.Tensor:
    k = yaml.safe_load((root / "data" / seq / "intrinsics.yaml").read_text())
    K = intrinsics_matrix(k["fx"], k["fy"], k["cx"], k["cy"])
    return resize_intrinsics(K, (k["height"], k["width"]), size)


def pyramid_loss(target: torch.Tensor, sources: list[torch.Tensor], depth: torch.Tensor,
                 poses: list[torch.Tensor], K: torch.Tensor) -> torch.Tensor:
    """Mean over pyramid levels of the per-pixel minimum photometric error over the sources."""
    images = {0: target, **{i + 1: s for i, s in enumerate(sources)}}
    terms = []
    for f in PYRAMID:
        level, level_depth, K_f, inv_K_f, _ = pyramid_level(images, depth, K[None], None, f)
        warped = [warp_inside(level[i + 1], level_depth, T[None], K_f, inv_K_f)[0] for i, T in enumerate(poses)]
        per_pixel, _ = min_reprojection(pair_errors(warped, level[0]), None, automask=False)
        terms.append(per_pixel.mean())
    return torch.stack(terms).mean()


def fit_depth(target: torch.Tensor, sources: list[torch.Tensor], K: torch.Tensor, start_depth: float,
              exact_poses: list[torch.Tensor] | None, steps: int) -> torch.Tensor:
    """The optimised depth (1 x 1 x H x W); poses free from zero motion when ``exact_poses`` is None."""
    h, w = target.shape[-2:]
    log_depth = torch.full((1, 1, h // 4, w // 4), float(np.log(start_depth)), requires_grad=True)
    motion = [torch.zeros(1, 1, 6, requires_grad=True) for _ in sources]
    params = [log_depth] + ([] if exact_poses is not None else motion)
    opt = torch.optim.Adam(params, lr=1e-2)

    def poses() -> list[torch.Tensor]:
        if exact_poses is not None:
            return exact_poses
        out = []
        for m in motion:  # rotation in units of 0.1 rad so both halves move at a similar rate
            T = axisangle_to_matrix(m[..., :3] * 0.1)[0].clone()
            T[:3, 3] = m[0, 0, 3:]
            out.append(T)
        return out

    for _ in range(steps):
        depth = torch.exp(F.interpolate(log_depth, size=(h, w), mode="bilinear", align_corners=False))
        disp = 1 / depth
        loss = pyramid_loss(target, sources, depth, poses(), K) + 1e-3 * smoothness_loss(disp / disp.mean(), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return depth.detach()


def abs_rel(pred: torch.Tensor, gt: torch.Tensor) -> float:
    pred = pred * gt.median() / pred.median()
    return float(((pred - gt).abs() / gt).mean())


def frame_rows(root: Path, gap: int, frames: int, size: tuple[int, int], steps: int, seed: int) -> list[dict]:
    lines = [ln.split() for ln in (root / "splits" / "train.txt").read_text().splitlines() if ln.strip()]
    counts = {seq: len(list((root / "data" / seq).glob("*.png"))) for seq in {ln[0] for ln in lines}}
    usable = [(s, int(i)) for s, i in lines if gap <= int(i) < counts[s] - gap]
    if not usable:
        raise SystemExit(f"{root}/splits/train.txt: no frame has neighbours {gap} frames away")
    picks = np.random.default_rng(seed).choice(len(usable), min(frames, len(usable)), replace=False)
    rows = []
    for seq, index in sorted(usable[p] for p in picks):
        P = torch.from_numpy(read_poses(root / "poses" / f"{seq}.txt")).float()
        K = intrinsics(root, seq, size)
        target, gt = load_frame(root, seq, index, size), load_depth(root, seq, index, size)
        sources = [load_frame(root, seq, index + o, size) for o in (-gap, gap)]
        exact = [torch.linalg.inv(P[index + o]) @ P[index] for o in (-gap, gap)]
        known = fit_depth(target, sources, K, float(gt.median()), exact, steps)
        free = fit_depth(target, sources, K, FREE_POSE_START_DEPTH, None, steps)
        rows.append({"frame": f"{seq} {index}", "constant AbsRel": abs_rel(torch.ones_like(gt), gt),
                     "exact pose AbsRel": abs_rel(known, gt), "free pose AbsRel": abs_rel(free, gt)})
        print(rows[-1], flush=True)
    mean = {"frame": "mean"}
    for key in ("constant AbsRel", "exact pose AbsRel", "free pose AbsRel"):
        mean[key] = float(np.mean([r[key] for r in rows]))
    return rows + [mean]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="a `semhint synth` output")
    ap.add_argument("--gap", type=int, default=1, help="frames between target and each source (default 1)")
    ap.add_argument("--frames", type=int, default=6, help="training frames to test (default 6)")
    ap.add_argument("--size", default="128x160", help="HxW of the optimisation (default 128x160)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0, help="which frames are drawn")
    ap.add_argument("--record", default="none", help="lab record key to write (default none: print only)")
    args = ap.parse_args()
    if not (args.data / "meta.json").is_file():
        raise SystemExit(f"{args.data}: not a `semhint synth` output (no meta.json)")
    if args.gap < 1:
        raise SystemExit(f"--gap must be >= 1, got {args.gap}")
    try:
        size = tuple(int(v) for v in args.size.lower().split("x"))
        assert len(size) == 2 and min(size) >= 16
    except (ValueError, AssertionError):
        raise SystemExit(f"--size: expected HxW with both >= 16, got {args.size!r}") from None
    torch.manual_seed(args.seed)
    rows = frame_rows(args.data, args.gap, args.frames, size, args.steps, args.seed)
    columns = ["frame", "constant AbsRel", "exact pose AbsRel", "free pose AbsRel"]
    print(markdown_table(rows, columns))
    if args.record == "none":
        return
    command = (f"python experiments/depth_signal.py --data {args.data} --gap {args.gap} --frames {args.frames} "
               f"--size {args.size} --steps {args.steps} --seed {args.seed} --record {args.record}")
    body = (f"Per training frame of `{args.data}`, a free depth map optimised for {args.steps} Adam steps against the "
            f"frames {args.gap} before and after (photometric loss over a 1x/2x/4x/8x image pyramid, no light model): "
            "with the rendered poses held fixed (depth starting at the true median), and with both poses free "
            "from zero motion. AbsRel after per-image median scaling, beside a constant map (see the script's "
            "docstring for what each column says about the world).\n\n" + markdown_table(rows, columns))
    write_record(args.record, f"How much depth two views teach ({args.record})", command, body, {"rows": rows})


if __name__ == "__main__":
    main()
