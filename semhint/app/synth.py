"""`semhint synth drive|tissue`: render a built-in world with exact depth, poses, semantics (and tracks)."""

from __future__ import annotations

import argparse

from semhint.data.synthetic import render_drive, render_tissue


def run(args: argparse.Namespace) -> None:
    if args.world == "drive":
        path = render_drive(args.out, args.preset, args.seed, args.sequences, args.frames, args.size,
                            moving_cars=False if args.static_cars else None, stops=False if args.no_stops else None,
                            preview=args.preview, workers=args.workers)
        made = "gt_dynamic/"
    else:
        path = render_tissue(args.out, args.preset, args.seed, args.sequences, args.frames, args.size,
                             preview=args.preview, workers=args.workers, sweep_mm=args.sweep_mm)
        made = "tracks/"
    print(f"wrote {path} (data/, gt_depth/, gt_labels/, {made}, poses/, splits/, meta.json)"
          + (f"; preview: {path / 'preview.png'}" if args.preview else ""))
