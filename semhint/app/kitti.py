"""`semhint kitti`: KITTI raw tools (export-gt: LiDAR projected into the camera, for the Eigen protocol)."""

from __future__ import annotations

import argparse

from semhint.data.kitti import export_gt as export_gt_file


def export_gt(args: argparse.Namespace) -> None:
    print(export_gt_file(args.data_path, args.split, args.output, camera_z=args.camera_z))
