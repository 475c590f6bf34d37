"""`semhint split make`: a training (and validation) split file for a folder of frames, a video or KITTI raw."""

from __future__ import annotations

import argparse

from semhint.data.splits import make_split


def make(args: argparse.Namespace) -> None:
    counts = make_split(args.data_path, args.kind, args.out, args.frame_ids, args.stride, args.static_threshold,
                        args.static_measure, args.val_fraction, args.val_out, args.cache_dir)
    print(" ".join(f"{k}={v}" for k, v in counts.items()))
