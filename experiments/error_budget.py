"""Where is a trained model's depth error? AbsRel by ground-truth class (semhint.lab.budget), pooled over
the runs of each config (pass every seed of it), written as the lab record docs/lab/KEY.md.

    python experiments/error_budget.py --runs runs/semhint_bench/r4/runs/synth_drive-late_warmup/seed* \\
        --data runs/semhint_bench/drive
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import numpy as np
import torch

from semhint.core.conventions import get_class_set
from semhint.lab.budget import budget_rows, run_sums
from semhint.lab.records import markdown_table, write_record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, type=Path, help="trained run folders (pool a config's seeds)")
    parser.add_argument("--data", required=True, type=Path, help="rendered world root (splits/, gt_labels/, gt_depth/)")
    parser.add_argument("--classes", default="cityscapes", help="the world's class set (cityscapes | tissue)")
    parser.add_argument("--labels", default="", help="ignored (ground-truth classes only); kept so older records' commands run")
    parser.add_argument("--split", default="test")
    parser.add_argument("--min-share", type=float, default=0.005, help="list classes with at least this share")
    parser.add_argument("--key", default="error_budget")
    parser.add_argument("--title", default="Where the depth error is: AbsRel by ground-truth class")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for run in args.runs:
        if not (run / "checkpoints" / "last.ckpt").is_file():
            raise SystemExit(f"{run / 'checkpoints' / 'last.ckpt'}: not found")
    class_set = get_class_set(args.classes)
    pooled: dict[str, tuple[int, dict[str, np.ndarray]]] = {}
    for run in args.runs:
        name, sums = run_sums(run, args.data, args.split, class_set)
        count, total = pooled.get(name, (0, {}))
        for cls, s in sums.items():
            total[cls] = total.get(cls, 0) + s
        pooled[name] = (count + 1, total)
        print(f"[error_budget] {run}", flush=True)
    rows = [r for name, (count, sums) in pooled.items() for r in budget_rows(name, sums, count, args.min_share)]
    command = (f"python experiments/error_budget.py --runs {' '.join(str(r) for r in args.runs)} --data {args.data} "
               f"--classes {args.classes} --split {args.split} --key {args.key} --title {shlex.quote(args.title)}")
    body = (f"Test frames of `{args.data}` ({args.split} split) at full resolution, exact depth, each run's own "
            "evaluation protocol (per-image median scaling), pixels pooled over the runs of each config. Share of "
            "valid: the class's fraction of pixels with ground truth; log bias: mean log(prediction / truth), negative "
            "= predicted too near; contribution: share x AbsRel, the class's part of the overall AbsRel; range slope: "
            "least-squares slope of log prediction on log truth, 1 = the right depth range, below 1 = compressed "
            f"(classes under {args.min_share:.1%} of the pixels are left out of the list, not of 'all').\n\n"
            + markdown_table(rows, ["config", "runs", "class", "share of valid", "AbsRel", "log bias", "contribution",
                                    "range slope"]))
    write_record(args.key, args.title, command, body, {"rows": rows})


if __name__ == "__main__":
    main()
