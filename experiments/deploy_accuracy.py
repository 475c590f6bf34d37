"""What deployment costs in accuracy on real frames: each checkpoint scored as PyTorch runs it, as the float
ONNX file `semhint export --format onnx` writes, and as the int8 file `--int8 FRAMES` writes, with the same
`semhint evaluate` protocol (Eigen on the KITTI sample's LiDAR frames by default).

Timing lives in benchmarks/bench_inference.py; this script only scores. Each exported file is checked by the
exporter against PyTorch on a batch, then scored here like the checkpoint it came from; ``abs_rel_change`` =
file AbsRel / checkpoint AbsRel - 1 (issue 22's limit: 1 %).

    python experiments/deploy_accuracy.py --checkpoints runs/real_kitti_fast/fused-s*/checkpoints/last.ckpt \\
        --int8-frames ../shared/data/kitti_sample --key deploy_accuracy_fused
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
from pathlib import Path

from semhint.app.evaluate import run_evaluation
from semhint.data.frames import SPLITS_DIR
from semhint.export import export_model
from semhint.lab.records import markdown_table, write_record
from semhint.lab.sweep import python_command

LIMIT = 0.01  # issue 22: AbsRel may change by at most 1 % relative


def score(model: Path, args: argparse.Namespace) -> dict[str, float]:
    """`semhint evaluate --checkpoint MODEL` (a .ckpt or a .onnx) on the split, its table not printed."""
    with contextlib.redirect_stdout(io.StringIO()):
        result = run_evaluation(args.gt, checkpoint=model, split=args.split, data_path=args.data_path,
                                protocol=args.protocol)
    return result.metrics()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", nargs="+", required=True)
    p.add_argument("--int8-frames", nargs="*", default=None,
                   help="images or folders that calibrate the int8 files (none: float ONNX only)")
    p.add_argument("--gt", default="runs/kitti_sample_gt.npz")
    p.add_argument("--split", default=str(SPLITS_DIR / "kitti_sample_even.txt"))
    p.add_argument("--data-path", default="../shared/data/kitti_sample")
    p.add_argument("--protocol", default="kitti-eigen")
    p.add_argument("--key", default="deploy_accuracy")
    args = p.parse_args()
    for path in args.checkpoints:
        if not Path(path).is_file():
            sys.exit(f"deploy_accuracy: {path}: no such checkpoint")
    rows = []
    with tempfile.TemporaryDirectory(prefix="semhint-deploy-") as scratch:
        for n, ckpt in enumerate(map(Path, args.checkpoints)):
            base = score(ckpt, args)
            rows.append({"checkpoint": str(ckpt), "runtime": "PyTorch float32", "abs_rel": base["abs_rel"],
                         "rmse": base["rmse"], "a1": base["a1"], "abs_rel_change": 0.0})
            files = {"ONNX Runtime float32": export_model(ckpt, "onnx", Path(scratch) / f"m{n}.onnx")["path"]}
            if args.int8_frames:
                with contextlib.redirect_stdout(io.StringIO()):
                    files["ONNX Runtime int8"] = export_model(ckpt, "onnx", Path(scratch) / f"m{n}.int8.onnx",
                                                              int8=args.int8_frames)["path"]
            for runtime, path in files.items():
                m = score(Path(path), args)
                rows.append({"checkpoint": str(ckpt), "runtime": runtime, "abs_rel": m["abs_rel"], "rmse": m["rmse"],
                             "a1": m["a1"], "abs_rel_change": m["abs_rel"] / base["abs_rel"] - 1})
            for row in rows[-len(files) - 1:]:
                print(row, flush=True)
    lines = []
    for runtime in dict.fromkeys(r["runtime"] for r in rows if r["runtime"] != "PyTorch float32"):
        changes = [r["abs_rel_change"] for r in rows if r["runtime"] == runtime]
        worst = max(changes, key=abs)
        lines.append(f"{runtime}: AbsRel change against PyTorch float32, mean {statistics.mean(changes):+.3%}, "
                     f"largest {worst:+.3%} over {len(changes)} checkpoints (limit {LIMIT:.0%}: "
                     f"{'within' if abs(worst) <= LIMIT else 'over'}).")
    body = (f"Each checkpoint scored by `semhint evaluate --checkpoint` (protocol {args.protocol}, split "
            f"`{args.split}`, data `{args.data_path}`) as a .ckpt (PyTorch), as the float ONNX file and"
            + (" as the int8 file calibrated on the frames given" if args.int8_frames else "")
            + ".\n\n" + "\n\n".join(lines) + "\n\n"
            + markdown_table(rows, ["checkpoint", "runtime", "abs_rel", "abs_rel_change", "rmse", "a1"]))
    print("\n".join(lines))
    write_record(args.key, "What deployment costs in accuracy: PyTorch, ONNX float32 and int8 on real frames",
                 python_command("experiments/deploy_accuracy.py"), body, {"rows": rows, "limit": LIMIT})


if __name__ == "__main__":
    main()
