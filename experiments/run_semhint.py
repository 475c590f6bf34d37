"""SemHint vs the depth-only baseline on a synthetic world: same data, same step budget, N seeds.

A thin script over semhint.lab.sweep (see its docstring): renders or reuses the world, makes the
noisy labels, launches every missing (config, seed) run as a subprocess of this script (``--jobs``
at a time), then writes the table as the lab record docs/lab/KEY.md (+ .json).

    python experiments/run_semhint.py --world drive --out runs/semhint_bench --steps 300 --seeds 0 1 2 \\
        --configs synth_drive semhint_synth_drive --labels corrupt0.5
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from semhint.lab import sweep as S
from semhint.lab.records import markdown_table, write_record

SWEEP_FIELDS = ("world", "out", "data", "configs", "seeds", "steps", "batch_size", "size", "encoder", "labels",
                "labeler_steps", "accelerator", "set", "tag", "also", "reevaluate")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", choices=list(S.REPORTS), default="drive")
    p.add_argument("--out", default="runs/semhint_bench", help="where runs and their results are cached")
    p.add_argument("--data", default="", help="rendered data root (default OUT/<world>; rendered if missing)")
    p.add_argument("--sequences", type=int, default=None, help="render: sequences (drive default 4; tissue: the preset's)")
    p.add_argument("--frames", type=int, default=None, help="render: frames per sequence (drive default 40; tissue: the preset's)")
    p.add_argument("--render-size", default=None, help="render size HxW (drive default 64x208; tissue: the preset's)")
    p.add_argument("--preset", default="demo",
                   help="render preset when OUT/<world> must be rendered (drive: demo | town; tissue: demo | scared)")
    p.add_argument("--render-seed", type=int, default=0, help="the world's seed when it must be rendered")
    p.add_argument("--size", default="", help="network input HxW (default: the config's)")
    p.add_argument("--encoder", default="", help="override model.encoder for every run")
    p.add_argument("--configs", nargs="+", default=["synth_drive", "semhint_synth_drive"])
    p.add_argument("--labels", default=None, help="label folder for every SemHint config (labels<N> | corrupt<S>)")
    p.add_argument("--labeler-steps", type=int, default=200)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu",
                   help="where runs train (evaluation is always on CPU); several jobs may share one GPU")
    p.add_argument("--set", action="append", default=[], help="extra SECTION.KEY=VALUE applied to every run")
    p.add_argument("--tag", default="", help="suffix of the run names (to keep variants of --set apart)")
    p.add_argument("--key", default="", help="record key (default semhint_synth_<world>)")
    p.add_argument("--title", default="")
    p.add_argument("--notes", default="", help="markdown appended under the table")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--also", nargs="+", default=[], help="more result caches (OUT folders) to pool seeds from")
    p.add_argument("--grad-norms", action="store_true",
                   help="print each loss term's gradient norm per network part at initialisation, then stop")
    p.add_argument("--reevaluate", action="store_true", help="re-measure finished runs from their last.ckpt")
    p.add_argument("--one", nargs=4, metavar=("CONFIG", "SEED", "RUN_DIR", "LABELS"), help=argparse.SUPPRESS)
    return p.parse_args()


def rendered_size(root: Path) -> str:
    """HxW of a finished render, from its meta.json (a tissue preset's own size)."""
    settings = json.loads((root / "meta.json").read_text())["settings"]
    return f"{settings['height']}x{settings['width']}"


def main() -> None:
    args = parse_args()
    if args.world != "tissue":  # the drive records were rendered at these sizes: keep them reproducible
        args.sequences, args.frames = args.sequences or 4, args.frames or 40
        args.render_size = args.render_size or "64x208"
    sweep = S.Sweep(**{k: getattr(args, k) for k in SWEEP_FIELDS})
    if args.one:  # a launched process: one (config, seed)
        torch.set_num_threads(1)
        config, seed, run_dir, labels = args.one
        S.one_run(sweep, config, int(seed), Path(run_dir), labels or None)
        return
    if args.grad_norms:
        rows = S.gradient_norms(sweep)
        print(markdown_table(rows, list(rows[0])))
        return
    if not args.report_only:
        S.ensure_data(sweep.world, Path(sweep.data), args.sequences, args.frames, args.render_size,
                      seed=args.render_seed, preset=args.preset)
        size = args.size or args.render_size or rendered_size(Path(sweep.data))
        h, w = (int(v) for v in size.split("x"))
        for name in S.label_folders(sweep):
            S.ensure_labels(Path(sweep.data), name, sweep.world, (h, w), args.labeler_steps)
        flags = [a for a in sys.argv[1:] if a not in ("--report-only",)]
        S.launch(sweep, lambda run: [sys.executable, __file__, *flags, "--one", run[0], str(run[1]), str(run[2]),
                                     run[3] or ""], jobs=args.jobs)
    groups = S.collect(sweep)
    if not groups:
        print("no results yet")
        return
    groups = {"constant depth (reference)": [S.constant_depth_result(sweep)], **groups}
    markdown, raw = S.table(groups, sweep.world)
    print(markdown)
    key = args.key or f"semhint_synth_{sweep.world}"
    body = S.table_notes(sweep) + "\n\n" + markdown + ("\n\n" + args.notes if args.notes else "")
    write_record(key, args.title or f"SemHint vs baseline on Synth{sweep.world.capitalize()}",
                 S.python_command("experiments/run_semhint.py"), body, {"runs": raw})


if __name__ == "__main__":
    main()
