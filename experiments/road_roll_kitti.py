"""Is a run's road rolled against LiDAR's, and would photometry have seen it? Trained KITTI runs, LiDAR, noisy labels.

For each trained run this fits, per scored frame, the road plane of the LiDAR points, of the prediction and
of the shipped hint (operator B along the direction of travel) on the pixels the noisy labels call road,
and reports the signed roll of the last two from LiDAR's about the direction of travel. Then it turns the
hint's plane about that axis by fixed offsets and reports which offset the photometric error (the gate's
rule) prefers and which LiDAR prefers. LiDAR only diagnoses; nothing is trained. Written as docs/lab/KEY.md.

    python experiments/road_roll_kitti.py --runs runs/real_kitti/semhint-s{0,1,2,3,4} --key road_roll_kitti
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from semhint.core.conventions import CITYSCAPES
from semhint.lab.hint_quality import kitti_run_problem, load_kitti_run
from semhint.lab.records import markdown_table, write_record
from semhint.lab.road_roll import measure_road_roll, summarise_road_roll


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, nargs="+", type=Path,
                        help="trained KITTI run folders (checkpoints/last.ckpt, diagnostics_split.txt)")
    parser.add_argument("--config", default="semhint_kitti_sample",
                        help="the hinted config whose refine settings are used")
    parser.add_argument("--labels", default="runs/real_kitti/labels",
                        help="the noisy label folder the runs were scored with")
    parser.add_argument("--key", default="road_roll_kitti")
    parser.add_argument("--title",
                        default="Road-plane roll against LiDAR on real KITTI frames, and what photometry prefers")
    args = parser.parse_args()
    torch.set_num_threads(1)
    problem = kitti_run_problem(args.runs, args.labels)
    if problem:
        raise SystemExit(problem)
    summary, frames = [], []
    for run in args.runs:
        module, dataset, cfg = load_kitti_run(run, args.config, args.labels, run / "diagnostics_split.txt")
        rows = measure_road_roll(module, dataset, cfg, CITYSCAPES.id("road"))
        summary.append({"run": str(run), **summarise_road_roll(rows)})
        frames += [{"run": str(run), **row} for row in rows]
        print(summary[-1], flush=True)
    command = (f"python experiments/road_roll_kitti.py --runs {' '.join(str(r) for r in args.runs)} "
               f"--config {args.config} --labels {args.labels} --key {args.key} --title '{args.title}'")
    body = (f"{len(args.runs)} trained runs, each on its scored KITTI snippets (the sample's LiDAR frames with both "
            "neighbours). Per frame, least-squares planes (1/z = a . r) through the LiDAR points, the prediction and "
            f"the hint (refine settings of `{args.config}`, made from the run's own depth and pose as training makes "
            f"it) on the pixels the noisy labels of `{args.labels}` call road; roll: the signed angle (degrees) about "
            "the direction of travel from LiDAR's plane to the other; LiDAR roll: LiDAR's plane against "
            "t x (the camera's x axis), the basis refine.ground_rolls votes in (a camera on a car: the same on "
            "every frame). Offsets: the hint's plane turned about the "
            "direction of travel by -40..40 degrees; 'photometry prefers' the offset with the lowest mean "
            "min-reprojection error over the hint's road pixels (the gate's rule), 'LiDAR prefers' the one with the "
            "lowest AbsRel there (per-image median scaling by the prediction's ratio); they agree when within 5 "
            "degrees.\n\n"
            + markdown_table(summary, ["run", "frames", "LiDAR roll range", "median |prediction roll|",
                                       "median |hint roll|", "worst |hint roll|", "photometry agrees with LiDAR"])
            + "\n\n## Per frame\n\n"
            + markdown_table(frames, ["run", "frame", "LiDAR roll", "prediction roll", "hint roll", "photometry prefers",
                                      "LiDAR prefers", "hint AbsRel", "AbsRel at LiDAR's offset"]))
    write_record(args.key, args.title, command, body, {"runs": [str(r) for r in args.runs], "summary": summary,
                                                       "frames": frames})


if __name__ == "__main__":
    main()
