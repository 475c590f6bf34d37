"""Where is a trained model's depth error? Its AbsRel split by ground-truth class.

A hint operator can only move the overall error as much as the pixels it touches carry. For each
trained run (folders with config.yaml and checkpoints/last.ckpt) this predicts depth on the test
snippets of a rendered SynthDrive set and pools, per ground-truth class: its share of the valid
pixels, its AbsRel, its mean log(prediction / truth) (negative: too near) and its contribution
to the overall AbsRel (share x AbsRel; the contributions add up to the overall number), and its
range slope (log prediction regressed on log truth: below 1, the class's depth range is compressed).
Runs of the same config are pooled, so pass every seed of it.

    python benchmarks/bench_error_budget.py --runs runs/semhint_bench/r4/runs/synth_drive-late_warmup/seed* \
        --data runs/semhint_bench/drive
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _results import markdown_table, write_section  # noqa: E402
from bench_hint_quality import load_run  # noqa: E402

from semhint.core import geometry  # noqa: E402
from semhint.core.conventions import CITYSCAPES  # noqa: E402


def class_sums(module, dataset, cfg, batch_size: int = 8) -> dict[int, np.ndarray]:
    """{class: [valid pixels, sum of AbsRel, sum of log ratio, and of x, y, x^2, x y with x = log truth and
    y = log prediction]} over the dataset, eval-protocol scaling."""
    from semhint.training import collate_snippets

    e = cfg.eval
    sums: dict[int, np.ndarray] = {}
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            batch = collate_snippets([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            image = batch["image/0"]
            disp = F.interpolate(module.depth_net(image)["disp/0"], size=image.shape[-2:], mode="bilinear",
                                 align_corners=False)
            _, depth = geometry.disp_to_depth(disp, cfg.model.min_depth, cfg.model.max_depth)
            gt = F.interpolate(batch["depth_gt"].float(), size=depth.shape[-2:], mode="nearest")
            for b in range(gt.shape[0]):
                g, p, lab = gt[b, 0].numpy(), depth[b, 0].numpy(), batch["gt_labels/0"][b].numpy()
                valid = (g > e.min_depth) & (g < e.max_depth)
                p = np.clip(p * np.median(g[valid]) / np.median(p[valid]), e.min_depth, e.max_depth)
                err, log_ratio = np.abs(p - g) / np.where(valid, g, 1), np.log(p / np.where(valid, g, 1))
                log_g = np.log(np.where(valid, g, 1))
                log_p = log_g + log_ratio
                for c in np.unique(lab[valid]):
                    m = valid & (lab == c)
                    x, y = log_g[m], log_p[m]
                    sums[int(c)] = sums.get(int(c), np.zeros(7)) + [m.sum(), err[m].sum(), log_ratio[m].sum(), x.sum(),
                                                                    y.sum(), (x * x).sum(), (x * y).sum()]
    return sums


def range_slope(s: np.ndarray) -> float:
    """Least-squares slope of log(prediction) on log(truth) from the sums: 1 = the right depth range.

    Below 1 the class's depth range is compressed: its far part predicted too near relative to its
    near part (what parallax too small to measure at the far end does), which no offset can fix.
    """
    if len(s) < 7:
        return float("nan")
    n, sx, sy, sxx, sxy = s[0], s[3], s[4], s[5], s[6]
    var = n * sxx - sx * sx
    return float((n * sxy - sx * sy) / var) if var > 1e-9 * max(n * sxx, 1.0) else float("nan")


def budget_rows(name: str, sums: dict[int, np.ndarray], runs: int, min_share: float) -> list[dict]:
    total = sum(s[0] for s in sums.values())
    rows = [{"config": name, "runs": runs, "class": "all", "share of valid": 1.0,
             "AbsRel": sum(s[1] for s in sums.values()) / total, "log bias": sum(s[2] for s in sums.values()) / total,
             "contribution": sum(s[1] for s in sums.values()) / total, "range slope": range_slope(sum(sums.values()))}]
    for c, s in sorted(sums.items(), key=lambda kv: -kv[1][1]):
        n, err, log_ratio = s[:3]
        if n / total >= min_share:
            cls = CITYSCAPES.names[c] if c < len(CITYSCAPES.names) else str(c)
            rows.append({"config": name, "runs": runs, "class": cls, "share of valid": n / total, "AbsRel": err / n,
                         "log bias": log_ratio / n, "contribution": err / total, "range slope": range_slope(s)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, type=Path, help="trained run folders (pool a config's seeds)")
    parser.add_argument("--data", required=True, type=Path, help="rendered SynthDrive root (splits/, gt_labels/, gt_depth/)")
    parser.add_argument("--labels", default="corrupt0.5", help="noisy label folder under --data (runs with a branch)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--min-share", type=float, default=0.005, help="list classes with at least this share")
    parser.add_argument("--key", default="error_budget")
    parser.add_argument("--title", default="Where the depth error is: AbsRel by ground-truth class")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for run in args.runs:
        for path in (run / "config.yaml", run / "checkpoints" / "last.ckpt"):
            if not path.is_file():
                raise SystemExit(f"{path}: not found")
    pooled: dict[str, tuple[int, dict[int, np.ndarray]]] = {}
    for run in args.runs:
        module, dataset, cfg = load_run(run, args.data, args.labels, args.split)
        count, sums = pooled.get(cfg.name, (0, {}))
        for c, s in class_sums(module, dataset, cfg).items():
            sums[c] = sums.get(c, np.zeros(7)) + s
        pooled[cfg.name] = (count + 1, sums)
        print(f"[error_budget] {run}", flush=True)
    rows = [r for name, (count, sums) in pooled.items() for r in budget_rows(name, sums, count, args.min_share)]
    command = (f"python benchmarks/bench_error_budget.py --runs {' '.join(str(r) for r in args.runs)} --data {args.data} "
               f"--labels {args.labels} --split {args.split} --key {args.key} --title {shlex.quote(args.title)}")
    body = (f"Test snippets of `{args.data}` ({args.split} split), exact depth, generic protocol (per-image median "
            "scaling, cap 80), pixels pooled over the runs of each config. Share of valid: the class's fraction of "
            "pixels with ground truth; log bias: mean log(prediction / truth), negative = predicted too near; "
            "contribution: share x AbsRel, the class's part of the overall AbsRel; range slope: least-squares slope "
            "of log prediction on log truth, 1 = the right depth range, below 1 = compressed (classes under "
            f"{args.min_share:.1%} of the pixels are left out of the list, not of 'all').\n\n"
            + markdown_table(rows, ["config", "runs", "class", "share of valid", "AbsRel", "log bias", "contribution",
                             "range slope"]))
    write_section(args.key, args.title, command, body, {"rows": rows})


if __name__ == "__main__":
    main()
