"""The `semhint` command line: parses arguments and calls one library function per command.

Each command's section below belongs to the module that implements it; imports are lazy so that
`semhint --help` stays instant and a command only pays for what it uses.
"""

from __future__ import annotations

import argparse
import sys


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a depth network from a YAML config")
    p.add_argument("config", help="YAML config file (see configs/)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=2e-4 model.shared_layers=6")
    p.add_argument("--resume", default=None, help="checkpoint to resume from, or 'auto' for the run's last.ckpt")
    p.set_defaults(func=_run_train)


def _run_train(args) -> None:
    from semhint.training import train_from_config_file

    train_from_config_file(args.config, args.overrides, resume=args.resume)


# ---- (other commands are added below by their modules' owners) -------------------------------


def _add_kitti(sub) -> None:
    p = sub.add_parser("kitti", help="KITTI raw tools")
    ksub = p.add_subparsers(dest="kitti_command", metavar="KITTI_COMMAND", required=True)
    e = ksub.add_parser("export-gt", help="project LiDAR into the camera: ground truth for the Eigen protocol")
    e.add_argument("--data-path", required=True, help="KITTI raw root (DATE/DRIVE/...)")
    e.add_argument("--split", required=True, help="split file, lines 'DATE/DRIVE FRAME l|r'")
    e.add_argument("--output", required=True, help="output .npz (gt_depths, sizes, frames)")
    e.add_argument("--camera-z", action="store_true", help="store camera z instead of velodyne forward distance")
    e.set_defaults(func=_run_kitti_export_gt)


def _run_kitti_export_gt(args) -> None:
    from semhint.data.kitti import export_gt

    print(export_gt(args.data_path, args.split, args.output, camera_z=args.camera_z))


def _add_split(sub) -> None:
    p = sub.add_parser("split", help="split-file tools")
    ssub = p.add_subparsers(dest="split_command", metavar="SPLIT_COMMAND", required=True)
    m = ssub.add_parser("make", help="write a split file: frames with all neighbours, minus static frames")
    m.add_argument("--data-path", required=True, help="dataset root (or a video file for --kind folder)")
    m.add_argument("--kind", required=True, choices=["folder", "kitti"])
    m.add_argument("--out", required=True, help="training split file to write")
    m.add_argument("--frame-ids", type=int, nargs="+", default=[0, -1, 1], help="frame offsets (default 0 -1 1)")
    m.add_argument("--stride", type=int, default=1, help="keep every N-th frame (default 1)")
    m.add_argument("--static-threshold", type=float, default=0.0,
                   help="drop frames whose motion to a neighbour is below this (flow: pixels; photometric: mean |diff| in [0,1])")
    m.add_argument("--static-measure", choices=["flow", "photometric"], default="flow")
    m.add_argument("--val-fraction", type=float, default=0.0, help="hold out this tail fraction of each sequence")
    m.add_argument("--val-out", default=None, help="validation split file to write")
    m.add_argument("--cache-dir", default="", help="where a video file is decoded (default ~/.cache/semhint)")
    m.set_defaults(func=_run_split_make)


def _run_split_make(args) -> None:
    from semhint.data.folder import make_split

    counts = make_split(args.data_path, args.kind, args.out, args.frame_ids, args.stride, args.static_threshold,
                        args.static_measure, args.val_fraction, args.val_out, args.cache_dir)
    print(" ".join(f"{k}={v}" for k, v in counts.items()))



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semhint", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


_COMMANDS = [_add_train, _add_kitti, _add_split]


def main(argv: list[str] | None = None) -> int:
    from semhint.config import ConfigError
    from semhint.fileio import InputError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from semhint import __version__

        print(__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except (InputError, ConfigError, FileNotFoundError) as exc:
        print(f"semhint {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"semhint {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
