"""Are the ground hints better than the depth they replace on REAL frames? Trained KITTI runs, LiDAR, noisy labels.

For each trained run (e.g. the baseline seeds of `make real-kitti`) this predicts depth and pose on the
scored snippets, makes the ground hints as training would (operator B alone, D + B; free plane or
along the direction of travel, `refine.ground_travel`) from the noisy labels, and scores hint and
prediction against LiDAR where the hint changes depth and where the gate accepts it, overall and by
noisy class. LiDAR only diagnoses here; nothing is trained. Written as docs/lab/KEY.md.

    python experiments/hint_quality_kitti.py --runs runs/real_kitti/baseline-s{0,1,2,3,4} --key hint_quality_kitti
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from semhint.core.conventions import CITYSCAPES
from semhint.lab.hint_quality import kitti_run_problem, load_kitti_run, measure_real, real_rows
from semhint.lab.records import markdown_table, write_record

# the gate is on in every variant whatever the config says: the 'gated' rows are what it would accept
VARIANTS = {
    "B, free plane": {"hint_operators": ["surface"], "ground_travel": False, "hint_gate": True},
    "B, along travel": {"hint_operators": ["surface"], "ground_travel": True, "hint_gate": True},
    "D + B, free plane": {"hint_operators": ["contact", "surface"], "ground_travel": False, "hint_gate": True},
    "D + B, along travel": {"hint_operators": ["contact", "surface"], "ground_travel": True, "hint_gate": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, nargs="+", type=Path,
                        help="trained KITTI run folders (checkpoints/last.ckpt, diagnostics_split.txt)")
    parser.add_argument("--config", default="semhint_kitti_sample", help="the hinted config whose refine settings are used")
    parser.add_argument("--labels", default="runs/real_kitti/labels", help="the noisy label folder the runs were scored with")
    parser.add_argument("--key", default="hint_quality_kitti")
    parser.add_argument("--title", default="Ground hints against LiDAR on real KITTI frames: free plane vs along the direction of travel")
    args = parser.parse_args()
    torch.set_num_threads(1)
    problem = kitti_run_problem(args.runs, args.labels)
    if problem:
        raise SystemExit(problem)
    classes = {name: CITYSCAPES.id(name) for name in ("road", "sidewalk", "car")}
    sums: dict[tuple, np.ndarray] = {}
    per_run = []  # one run's own rows: a pooled mean can hide the one run whose hint went wrong
    for run in args.runs:
        module, dataset, cfg = load_kitti_run(run, args.config, args.labels, run / "diagnostics_split.txt")
        measured = measure_real(module, dataset, cfg, VARIANTS, classes)
        for key, value in measured.items():
            sums[key] = sums.get(key, np.zeros(4)) + value
        per_run += [{"run": str(run), **row} for row in real_rows(measured)
                    if row["pixels"] in ("changed", "changed, road")]
        print(f"{run}: measured {len(dataset)} snippets", flush=True)
    rows = real_rows(sums)
    for r in rows:
        print(r, flush=True)
    command = (f"python experiments/hint_quality_kitti.py --runs {' '.join(str(r) for r in args.runs)} "
               f"--config {args.config} --labels {args.labels} --key {args.key} --title '{args.title}'")
    body = (f"{len(args.runs)} trained runs ({', '.join(str(r) for r in args.runs)}), each on its scored KITTI snippets "
            "(the sample's LiDAR frames with both neighbours). Hints made as training makes them, with the refine "
            f"settings of `{args.config}` and the noisy labels of `{args.labels}` as segments, from each run's "
            "predicted depth and pose; 'changed': LiDAR pixels the hint moves (> 0.1 %), 'gated': those where it "
            "also reprojects better (the Depth Hints gate); ', road' etc.: by the NOISY label at the pixel. Share of "
            "valid: fraction of LiDAR pixels, pooled over runs. AbsRel against LiDAR, both maps scaled by the "
            "prediction's per-image median ratio over all LiDAR pixels: where the hint column is lower, the hint "
            "corrects the trained model there. Nothing here trains; the frames are the ones the runs are scored on.\n\n"
            + markdown_table(rows, ["variant", "pixels", "share of valid", "prediction AbsRel", "hint AbsRel"])
            + "\n\n## Per run\n\n"
            + markdown_table(per_run, ["run", "variant", "pixels", "share of valid", "prediction AbsRel", "hint AbsRel"]))
    write_record(args.key, args.title, command, body,
                 {"runs": [str(r) for r in args.runs], "rows": rows, "per_run": per_run})


if __name__ == "__main__":
    main()
