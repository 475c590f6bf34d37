"""Are the semantic hints better than the depth they replace? Measured on a TRAINED model's test depth
(semhint.lab.hint_quality), written as the lab record docs/lab/KEY.md.

    python experiments/hint_quality.py --run RUN --data runs/semhint_bench/drive --labels corrupt0.5
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import torch

from semhint.lab.hint_quality import load_run, measure
from semhint.lab.records import markdown_table, write_record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="trained run folder (config.yaml, checkpoints/last.ckpt)")
    parser.add_argument("--data", required=True, type=Path, help="rendered SynthDrive root (splits/, gt_labels/, gt_depth/)")
    parser.add_argument("--labels", default="corrupt0.5", help="noisy label folder under --data")
    parser.add_argument("--split", default="test")
    parser.add_argument("--upright", default="5,13", help="operator D's upright classes")
    parser.add_argument("--surface-band", type=float, default=0.0, help="operator B's refine.surface_band (0: off)")
    parser.add_argument("--surface-order", type=int, default=None,
                        help="refine.surface_order for B and D (default: the run's; 0 = level ground plane)")
    parser.add_argument("--surface-inlier", type=float, default=None,
                        help="refine.surface_inlier, RANSAC's relative inlier threshold (default: the run's)")
    parser.add_argument("--max-ratio", type=float, default=0.0,
                        help="clamp hints to training's trust region refine.hint_max_ratio (0: off, as before)")
    parser.add_argument("--ground-travel", action="store_true",
                        help="refine.ground_travel: B's and D's ground plane contains the direction of travel")
    parser.add_argument("--key", default="hint_quality_trained")
    parser.add_argument("--title", default="", help="section title (default names operator D's classes)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for path in (args.run / "checkpoints" / "last.ckpt", args.data / "splits" / f"{args.split}.txt"):
        if not path.is_file():
            raise SystemExit(f"{path}: not found")
    module, dataset, cfg = load_run(args.run, args.data, args.labels, args.split)
    rows = measure(module, dataset, cfg, [int(c) for c in args.upright.split(",")], args.data,
                   surface_band=args.surface_band, surface_order=args.surface_order, surface_inlier=args.surface_inlier, max_ratio=args.max_ratio,
                   ground_travel=args.ground_travel)
    for r in rows:
        print(r, flush=True)
    command = (f"python experiments/hint_quality.py --run {args.run} --data {args.data} --labels {args.labels} "
               f"--split {args.split} --upright {args.upright} --surface-band {args.surface_band} --key {args.key}"
               + (f" --surface-order {args.surface_order}" if args.surface_order is not None else "")
               + (f" --surface-inlier {args.surface_inlier}" if args.surface_inlier is not None else "")
               + (f" --max-ratio {args.max_ratio}" if args.max_ratio else "")
               + (" --ground-travel" if args.ground_travel else "")
               + (f" --title {shlex.quote(args.title)}" if args.title else ""))
    body = (f"The trained run `{args.run}` ({cfg.name}), its depth and pose on the {len(dataset)} {args.split} snippets of "
            f"`{args.data}`. Each operator set makes a hint from the predicted depth with the segments of the ground-truth "
            f"labels, of the noisy labels `{args.labels}` or (runs with a segmentation branch) of the branch's "
            "prediction; 'changed': pixels the operators moved (> 0.1 %), 'gated': "
            "those where the hint also reprojects better (the Depth Hints gate), 'gated or auto-masked': the gate with "
            "refine.hint_on_masked (pixels the auto-mask drops take the hint ungated); ', car' / ', road' / "
            "', building': those on cars / the road / buildings (ground-truth labels); ', car moving' / ', car parked' (renders with gt_dynamic/): car "
            "pixels that move on their own or not. "
            "Share of valid: fraction of pixels with ground truth. AbsRel against exact depth, both maps scaled by the "
            "prediction's per-image median ratio: where the hint column is lower, the operator corrects the trained "
            f"model. Operator D's upright classes: {args.upright}; operator B's band (refine.surface_band): "
            f"{args.surface_band or 'off'}; surface order (B and D; 0 = level ground plane): "
            f"{cfg.refine.surface_order if args.surface_order is None else args.surface_order}; RANSAC inlier threshold: "
            f"{cfg.refine.surface_inlier if args.surface_inlier is None else args.surface_inlier}; trust region "
            f"(refine.hint_max_ratio): {args.max_ratio or 'off'}; ground plane along the direction of travel "
            f"(refine.ground_travel): {'on' if args.ground_travel else 'off'}.\n\n"
            + markdown_table(rows, ["operators", "labels", "pixels", "share of valid", "prediction AbsRel", "hint AbsRel"]))
    title = args.title or f"Hint quality on a trained model's depth (SynthDrive, operator D on classes {args.upright})"
    write_record(args.key, title, command, body, {"run": str(args.run), "rows": rows})


if __name__ == "__main__":
    main()
