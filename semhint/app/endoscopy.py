"""`semhint endoscopy`: SCARED and Hamlyn tools (export-gt: a split's ground-truth depth in mm, for `semhint evaluate`)."""

from __future__ import annotations

import argparse

from semhint.data.endoscopy import export_gt as export_gt_file


def export_gt(args: argparse.Namespace) -> None:
    print(export_gt_file(args.kind, args.data_path, args.split, args.output))
