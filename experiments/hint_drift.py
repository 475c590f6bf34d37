"""Is the true depth a fixed point of operator A? Its drift when applied again and again to exact depth.

In training the hint is rebuilt from the current depth at every step and the depth is pulled
towards it, so whatever the operator does to a *correct* depth map compounds like repeated
filtering. This applies operator A (texture-weighted, local-linear, segment-aware smoothing, as
``make_depth_hint`` does) 1, 5 and 20 times to the exact rendered depth of the test frames, with
the segments of the ground-truth labels and of a noisy label folder, in the two domains
``refine.smooth_domain`` offers: log-depth (METHOD.md) and inverse depth. Reported per class: the
mean signed and absolute relative change (hint - true) / true. Zero means the operator leaves the
truth alone; a positive signed drift pushes that class away from the camera.

    python experiments/hint_drift.py --data runs/semhint_bench/drive --labels corrupt0.5 --size 64x208
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from semhint import refine
from semhint.core.config import load_config
from semhint.core.conventions import CITYSCAPES
from semhint.data.build import build_dataset
from semhint.lab.records import markdown_table, write_record
from semhint.training import collate_snippets

CLASSES = {name: CITYSCAPES.id(name) for name in ("road", "sidewalk", "building", "vegetation", "car")}
SKY_DEPTH = 80.0  # sky has no ground truth: it gets the evaluation cap, and its own segment keeps it apart


def load_test_set(data: Path, labels: str, size: tuple[int, int]):
    overrides = [f"data.path={data / 'data'}", f"data.val_split={data / 'splits' / 'test.txt'}",
                 f"data.labels={data / labels}", f"data.gt_labels={data / 'gt_labels'}",
                 f"data.gt_depth={data / 'gt_depth'}", f"data.height={size[0]}", f"data.width={size[1]}"]
    cfg = load_config("ablations/drive_hint_smooth", overrides)  # operator A's settings
    return build_dataset(cfg.data, "val"), cfg


def drift_sums(dataset, cfg, iterations: list[int], batch_size: int = 8) -> dict[tuple, np.ndarray]:
    """(labels, domain, iterations, class) -> [pixels, sum |rel|, sum rel] over the test frames."""
    r = cfg.refine
    sums: dict[tuple, np.ndarray] = {}
    for start in range(0, len(dataset), batch_size):
        batch = collate_snippets([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        image = batch["image/0"]
        gt = F.interpolate(batch["depth_gt"].float(), size=image.shape[-2:], mode="nearest")
        valid = gt > 0
        truth = torch.where(valid, gt, torch.full_like(gt, SKY_DEPTH))
        gt_labels = batch["gt_labels/0"].long()
        masks = {name: valid & (gt_labels == c).unsqueeze(1) for name, c in CLASSES.items()} | {"all": valid}
        weight = refine.texture_weight(image)
        for source, labels in (("ground truth", gt_labels), ("noisy", batch["labels/0"].long())):
            for domain in ("log", "disp"):
                depth = truth
                for it in range(1, max(iterations) + 1):
                    depth = refine.segment_aware_smoothing(
                        depth, labels, image, radius=r.bilateral_radius, sigma_color=r.bilateral_sigma_color,
                        sigma_space=r.bilateral_sigma_space, source_weight=weight, local_linear=True, domain=domain)
                    if it not in iterations:
                        continue
                    rel = (depth - gt) / gt.clamp_min(1e-6)
                    for name, mask in masks.items():
                        acc = sums.setdefault((source, domain, it, name), np.zeros(3))
                        acc += [int(mask.sum()), float(rel[mask].abs().sum()), float(rel[mask].sum())]
    return sums


def drift_rows(sums: dict[tuple, np.ndarray]) -> list[dict]:
    rows: dict[tuple, dict] = {}
    for (source, domain, it, name), (n, abs_sum, signed_sum) in sorted(sums.items(), key=lambda kv: kv[0][:3]):
        row = rows.setdefault((source, domain, it), {"labels": source, "domain": domain, "applications": it})
        row[f"{name} signed"] = signed_sum / max(n, 1)
        row[f"{name} abs"] = abs_sum / max(n, 1)
    return list(rows.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="rendered SynthDrive root (splits/, gt_labels/, gt_depth/)")
    parser.add_argument("--labels", default="corrupt0.5", help="noisy label folder under --data")
    parser.add_argument("--size", default="64x208", help="HxW the operator runs at (the training size)")
    parser.add_argument("--iterations", default="1,5,20")
    parser.add_argument("--key", default="hint_drift")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for path in (args.data / "splits" / "test.txt", args.data / args.labels):
        if not path.exists():
            raise SystemExit(f"{path}: not found")
    size = tuple(int(v) for v in args.size.split("x"))
    iterations = sorted(int(v) for v in args.iterations.split(","))
    dataset, cfg = load_test_set(args.data, args.labels, size)
    rows = drift_rows(drift_sums(dataset, cfg, iterations))
    for row in rows:
        print(row, flush=True)
    command = (f"python experiments/hint_drift.py --data {args.data} --labels {args.labels} --size {args.size} "
               f"--iterations {args.iterations}")
    columns = ["labels", "domain", "applications"] + [f"{n} {k}" for n in ("all", *CLASSES) for k in ("signed", "abs")]
    body = (f"Operator A (radius {cfg.refine.bilateral_radius}, sigma_color {cfg.refine.bilateral_sigma_color}, "
            f"sigma_space {cfg.refine.bilateral_sigma_space}, texture-weighted, local-linear) applied repeatedly to the "
            f"exact depth of the {len(dataset)} test frames of `{args.data}` at {args.size}, segments from the ground-truth "
            f"labels or from `{args.labels}`. Per class (ground-truth labels, valid pixels): mean signed and mean absolute "
            "relative change (hint - true) / true; 0 = the truth is a fixed point, > 0 = pushed away from the camera.\n\n"
            + markdown_table(rows, columns))
    write_record(args.key, "Does operator A leave the true depth alone? (drift under repeated application)",
                 command, body, {"rows": rows})


if __name__ == "__main__":
    main()
