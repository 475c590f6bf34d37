"""The `semhint` command line: argument parsing only; each command runs in its own module of semhint.app.

The parsers live here, with no heavy imports, so that `semhint --help` is instant; a command's
module (and with it torch, Lightning, OpenCV) is imported only when that command runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from semhint.core.console import one_line_warnings, quiet_third_party
from semhint.core.errors import ConfigError, InputError
from semhint.core.version import __version__


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a depth network from a config (a shipped name or a YAML file)")
    p.add_argument("config", help="a shipped config's name (e.g. synth_drive; `semhint config list`) or a YAML file")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=2e-4 model.shared_layers=6")
    p.add_argument("--resume", default=None, help="checkpoint to resume from, or 'auto' for the run's last.ckpt")
    p.add_argument("--overwrite", action="store_true",
                   help="train into a run folder that is not empty: its contents are moved aside "
                   "(to OUT_DIR.old-<UTC time>), never deleted")
    p.add_argument("--fov", type=float, default=None, metavar="DEGREES",
                   help="folder/video data without an intrinsics file: assume this horizontal field of view "
                   "(same as data.fov=DEGREES; an estimate, with a warning)")
    p.set_defaults(handler="train:run")


def _add_kitti(sub) -> None:
    p = sub.add_parser("kitti", help="KITTI raw tools")
    ksub = p.add_subparsers(dest="kitti_command", metavar="KITTI_COMMAND", required=True)
    e = ksub.add_parser("export-gt", help="project LiDAR into the camera: ground truth for the Eigen protocol")
    e.add_argument("--data-path", required=True, help="KITTI raw root (DATE/DRIVE/...)")
    e.add_argument("--split", required=True, help="split file, lines 'DATE/DRIVE FRAME l|r'")
    e.add_argument("--output", required=True, help="output .npz (gt_depths, sizes, frames)")
    e.add_argument("--camera-z", action="store_true", help="store camera z instead of velodyne forward distance")
    e.set_defaults(handler="kitti:export_gt")


def _add_endoscopy(sub) -> None:
    p = sub.add_parser("endoscopy", help="SCARED and Hamlyn tools (export-gt: a split's ground-truth depth in mm)")
    esub = p.add_subparsers(dest="endoscopy_command", metavar="ENDOSCOPY_COMMAND", required=True)
    e = esub.add_parser("export-gt", help="ground-truth depth (mm) of a SCARED or Hamlyn split, for `semhint evaluate`")
    e.add_argument("--kind", required=True, choices=["scared", "hamlyn"])
    e.add_argument("--data-path", required=True, help="dataset root (docs/DATA.md, 'Endoscopy')")
    e.add_argument("--split", required=True, help="split file, lines 'FOLDER FRAME l|r'")
    e.add_argument("--output", required=True, help="npz to write (gt_depths, sizes, frames)")
    e.set_defaults(handler="endoscopy:export_gt")


def _add_split(sub) -> None:
    p = sub.add_parser("split", help="split-file tools")
    ssub = p.add_subparsers(dest="split_command", metavar="SPLIT_COMMAND", required=True)
    m = ssub.add_parser("make", help="write a split file: frames with all neighbours, minus static frames")
    m.add_argument("--data-path", required=True, help="dataset root (or a video file for --kind folder)")
    m.add_argument("--kind", required=True, choices=["folder", "kitti", "scared", "hamlyn"])
    m.add_argument("--out", required=True, help="training split file to write")
    m.add_argument("--frame-ids", type=int, nargs="+", default=[0, -1, 1], help="frame offsets (default 0 -1 1)")
    m.add_argument("--stride", type=int, default=1, help="keep every N-th frame (default 1)")
    m.add_argument("--static-threshold", type=float, default=0.0,
                   help="drop frames whose motion to a neighbour is below this (flow: pixels; photometric: mean |diff| in [0,1])")
    m.add_argument("--static-measure", choices=["flow", "photometric"], default="flow")
    m.add_argument("--val-fraction", type=float, default=0.0, help="hold out this tail fraction of each sequence")
    m.add_argument("--val-out", default=None, help="validation split file to write")
    m.add_argument("--cache-dir", default="", help="where a video file is decoded (default ~/.cache/semhint)")
    m.set_defaults(handler="split:make")


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="depth metrics (KITTI Eigen, SCARED or a generic protocol) of predictions or a checkpoint")
    p.add_argument("--gt", required=True, help="ground-truth npz: `semhint kitti export-gt`'s (gt_depths N x H x W) or "
                   "Monodepth2's gt_depths.npz (key data, an object array: read with pickling allowed for that key)")
    p.add_argument("--predictions", default=None, help=".npy/.npz of N x H x W disparities or depths")
    p.add_argument("--pred-type", choices=["disp", "depth"], default="disp", help="what --predictions holds")
    p.add_argument("--checkpoint", default=None, help="evaluate this checkpoint (or a .onnx from `semhint export`, "
                   "run by ONNX Runtime as `semhint predict` runs it) instead of stored predictions")
    p.add_argument("--split", default=None, help="with --checkpoint: split file ('FOLDER FRAME l|r' lines)")
    p.add_argument("--data-path", default=None, help="with --checkpoint: the dataset root (layout per --kind)")
    p.add_argument("--kind", choices=["kitti", "scared", "hamlyn"], default="kitti",
                   help="with --checkpoint: the dataset layout (default kitti)")
    p.add_argument("--device", default="cpu", help="with --checkpoint: cpu or cuda")
    p.add_argument("--protocol", choices=["kitti-eigen", "generic", "scared"], default="kitti-eigen",
                   help="preset: kitti-eigen (1e-3..80, Garg crop), generic (no crop) or scared (1e-3..150 mm, "
                   "no crop); all median-scaled; options below override it")
    p.add_argument("--min-depth", type=float, default=None)
    p.add_argument("--max-depth", type=float, default=None, help="e.g. 150 for endoscopy in mm (SCARED)")
    p.add_argument("--crop", choices=["garg", "eigen", "none"], default=None)
    p.add_argument("--no-median-scaling", dest="median_scaling", action="store_const", const=False, default=None,
                   help="use predictions as metric (stereo / known-scale models)")
    p.add_argument("--scale", type=float, default=None, help="multiply predicted depth by this fixed factor first")
    p.add_argument("--labels", default=None, help="folder of label PNGs at GT size (sorted = GT order): per-class AbsRel")
    p.add_argument("--class-names", default=None, help="comma-separated class names for --labels (index order)")
    p.add_argument("--out", default=None, help="write the JSON report here")
    p.set_defaults(handler="evaluate:run")


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="depth for images, folders of frames or video files from a checkpoint")
    p.add_argument("checkpoint", help="a .ckpt written by `semhint train`, or a .onnx written by `semhint export` "
                   "(float or --int8; run by ONNX Runtime on the CPU, the fastest path)")
    p.add_argument("inputs", nargs="+", help="image files, folders of images, or video files")
    p.add_argument("--out", required=True, help="output folder (depth .npy, 16-bit PNG, previews, videos)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--no-png16", action="store_true", help="skip the 16-bit depth PNGs (value = depth * scale, the "
                   "scale per frame in the PNG's text chunk and in NAME_depth.json)")
    p.add_argument("--ply", action="store_true", help="also write a coloured point cloud per frame (needs --intrinsics "
                   "or --fov); points in the model's unit, camera frame x right, y down, z forward")
    p.add_argument("--intrinsics", default=None, help="YAML/JSON with fx fy cx cy (and width height) of the inputs")
    p.add_argument("--fov", type=float, default=None, metavar="DEGREES",
                   help="without --intrinsics: estimate them from this horizontal field of view (with a warning)")
    p.add_argument("--ply-ascii", action="store_true", help="write ASCII PLY instead of binary")
    p.set_defaults(handler="predict:run")


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export the depth network (dynamic batch) to ONNX or TorchScript, verified")
    p.add_argument("checkpoint", help="a .ckpt written by `semhint train`")
    p.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    p.add_argument("--out", default=None, help="output file (default: beside the checkpoint, .onnx / .pt / .int8.onnx)")
    p.add_argument("--int8", nargs="+", default=None, metavar="FRAMES",
                   help="ONNX only: quantise to int8 for fast CPU inference, calibrated on these images, folders or "
                        "videos (8-32 frames like those the model will see; more are subsampled)")
    p.set_defaults(handler="export:run")


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="render a small synthetic driving set, train on CPU, evaluate, write a report")
    p.add_argument("--out", default="runs/demo", help="report folder (default runs/demo)")
    p.add_argument("--steps", type=int, default=0,
                   help="training steps of each run, baseline and SemHint alike (default 0 = the preset's: 600 for demo)")
    p.add_argument("--preset", default="demo", choices=["tiny", "demo"],
                   help="demo: the 600-step SynthDrive setting of docs/RESULTS.md (~15 min on 2 cores); tiny: seconds, for tests")
    p.add_argument("--seed", type=int, default=0, help="training seed of both runs (the render is always seed 0)")
    p.set_defaults(handler="demo:run")


def _add_track(sub) -> None:
    p = sub.add_parser("track", help="track tissue points through a video (flow, flow+lift, deformation graph) and score them")
    p.add_argument("source", help="folder of frames, video file, SuPer folder (rgb/NNNNNN-left.png) or SynthTissue OUT/data/SEQ")
    p.add_argument("--points", default=None, help="labelled points: CSV (frame,point,x,y[,visible]) or JSON; SuPer: labelPts.npy")
    p.add_argument("--depth", default="none", help="'gt', 'none' or a depth checkpoint (default none)")
    p.add_argument("--mode", default="flow", choices=["flow", "flow+lift", "graph", "graph+flow"])
    p.add_argument("--out", default="tracks", help="output folder: tracks.npz, tracks.json, overlay.mp4, scores.json")
    p.add_argument("--intrinsics", default=None, help="intrinsics YAML/JSON (fx fy cx cy) if not beside the frames")
    p.add_argument("--labels", default=None, help="folder of class-map PNGs named like the frames (instrument = occluder)")
    p.add_argument("--flow", default="dis", choices=["dis", "lk"], help="2D tracker (default dis)")
    p.add_argument("--scale", default="auto", choices=["auto", "metric", "first-frame", "per-frame-median"],
                   help="depth scale policy (auto: metric for gt, first-frame for a network when GT depth exists)")
    p.add_argument("--no-video", action="store_true", help="skip the overlay video")
    p.add_argument("--device", default="cpu")
    p.add_argument("--flow-width", type=int, default=None, help="compute DIS flow at this image width (faster on large frames)")
    p.add_argument("--semantic", action="store_true", help="graph modes: skin within one class, drop data that changed class")
    p.set_defaults(handler="track:run")


def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="render a built-in synthetic world with exact depth, poses, semantics (and tracks)")
    worlds = p.add_subparsers(dest="world", metavar="WORLD", required=True)
    for world, text in (("drive", "driving video in the KITTI raw layout (Cityscapes train ids)"),
                        ("tissue", "endoscopic video of deforming tissue, with 2D/3D point tracks (mm)")):
        w = worlds.add_parser(world, help=text)
        w.add_argument("--out", required=True, help="output folder (data/, gt_depth/, gt_labels/, poses/, splits/, meta.json)")
        presets = ["tiny", "demo", "bench"] + (["town"] if world == "drive" else ["scared"])
        w.add_argument("--preset", default="demo", choices=presets,
                       help="size preset (default demo)" + ("; town: demo's sizes, a curving street with a crossing and "
                                                            "a pitched camera" if world == "drive" else
                                                            "; scared: demo's sizes, a SCARED/Hamlyn-like scope (pan about "
                                                            "the trocar, dolly, roll: 2-10 px of motion per frame at "
                                                            "160 px wide), spot light, mostly rigid tissue, an instrument "
                                                            "that enters and leaves"))
        w.add_argument("--sequences", type=int, default=None, help="number of sequences (overrides the preset)")
        w.add_argument("--frames", type=int, default=None, help="frames per sequence (overrides the preset)")
        w.add_argument("--size", default=None, help="HEIGHTxWIDTH, e.g. 192x640 (overrides the preset)")
        w.add_argument("--seed", type=int, default=0)
        w.add_argument("--preview", action="store_true", help="also write OUT/preview.png (image, depth, semantics, tracks)")
        w.add_argument("--workers", type=int, default=None, help="parallel render processes (default: up to 2, 1 for tiny jobs)")
        if world == "drive":
            w.add_argument("--static-cars", action="store_true", help="no moving cars (by default a lead car moves with the camera)")
            w.add_argument("--no-stops", action="store_true", help="the camera never stands still")
        else:
            w.add_argument("--sweep-mm", type=float, default=None,
                           help="amplitude (mm) of a back-and-forth camera sweep across the tissue, for depth training "
                                "(default 0: the near-static camera of the tracking clips)")
    p.set_defaults(handler="synth:run")


def _add_labels_corrupt(labels_sub) -> None:
    p = labels_sub.add_parser("corrupt", help="make noisy label maps from ground truth and report their mIoU")
    p.add_argument("--gt", required=True, help="folder of ground-truth label PNGs (e.g. OUT/gt_labels of `semhint synth`)")
    p.add_argument("--out", required=True, help="output folder (mirrors --gt; corruption.json holds the mIoU)")
    p.add_argument("--strength", type=float, default=0.5, help="noise strength in [0, 1] (0 = ground truth)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", default=None, help="class set: cityscapes or tissue (default: from ../meta.json of --gt, else cityscapes)")
    p.set_defaults(handler="labels:corrupt")


def _add_labels_train(labels_sub) -> None:
    p = labels_sub.add_parser("train", help="fit a small segmentation model on labelled frames (e.g. CamVid)")
    p.add_argument("--images", required=True, nargs="+", help="image root(s) (e.g. OUT/data of `semhint synth`, "
                   "or camvid/train/images camvid/val/images)")
    p.add_argument("--labels", required=True, nargs="+",
                   help="label root(s) mirroring --images, paired in order (same relative path, .png)")
    p.add_argument("--out", required=True, help="checkpoint to write (e.g. labeler.ckpt)")
    p.add_argument("--classes", default="cityscapes", help="class set the labels are in: cityscapes | camvid | tissue "
                   "| a class-set YAML file | comma-separated names | a count (default cityscapes)")
    p.add_argument("--size", default="96x320", help="network input HEIGHTxWIDTH (default 96x320); frames of "
                   "another aspect train on crops of this aspect, never squashed")
    p.add_argument("--scale", default="1,1.5", help="random crop scale range MIN,MAX (1 = the largest crop with "
                   "the network's aspect; > 1 zooms in, < 1 out; default 1,1.5)")
    p.add_argument("--steps", type=int, default=300, help="optimisation steps (default 300)")
    p.add_argument("--frames", type=int, default=16, help="labelled frames to use, spread evenly (0 = all; default 16)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--encoder", default=None, help="resnet18 | resnet34 | resnet50 | efficientnet_lite0 (default: "
                   "the ImageNet-pretrained efficientnet_lite0 when the effnet extra is installed, else a random resnet18)")
    p.add_argument("--pretrained", default=None, help="encoder weights: a torchvision file, 'package' for "
                   "efficientnet_lite0, or '' for none (ImageNet weights help most when only a few frames are labelled)")
    p.add_argument("--gt-labels", default=None, nargs="+",
                   help="ground-truth label root(s) for --images: report mIoU on frames training did not use")
    p.add_argument("--test-images", default=None, nargs="+", help="held-out test image root(s): mIoU, per-class IoU "
                   "and pixel accuracy go to the summary and the checkpoint")
    p.add_argument("--test-labels", default=None, nargs="+", help="label root(s) mirroring --test-images")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler="labels:train")


def _add_labels_predict(labels_sub) -> None:
    p = labels_sub.add_parser("predict", help="write a label map for every frame with a `labels train` model")
    p.add_argument("--model", required=True, help="checkpoint from `semhint labels train`")
    p.add_argument("--data-path", required=True, help="image root; every image below it gets a label map")
    p.add_argument("--out", required=True, help="label root to write (mirrors --data-path; labels_info.json summary)")
    p.add_argument("--gt-labels", default=None, help="ground-truth label root mirroring --data-path, in the model's "
                   "own class set: report mIoU (in those ids)")
    p.add_argument("--source-ids", action="store_true", help="write the model's own class ids, not those of the set "
                   "its class set maps onto (e.g. camvid ids instead of cityscapes train ids)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--preview", default=None, help="also write this PNG contact sheet: image | labels over it "
                   "(| ground truth over it), and a legend")
    p.add_argument("--preview-frames", type=int, default=8, help="frames on the contact sheet, spread evenly (default 8)")
    p.set_defaults(handler="labels:predict")


# `semhint labels X` sub-commands: append an _add_labels_X here
_LABELS_COMMANDS = [_add_labels_corrupt, _add_labels_train, _add_labels_predict]


def _add_labels(sub) -> None:
    p = sub.add_parser("labels", help="label maps: make noisy labels from ground truth (corrupt), and more")
    labels_sub = p.add_subparsers(dest="labels_command", metavar="ACTION", required=True)
    for add in _LABELS_COMMANDS:
        add(labels_sub)


def _add_config(sub) -> None:
    p = sub.add_parser("config", help="configs: print one resolved (bases and overrides applied), list the shipped ones")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = csub.add_parser("show", help="print the resolved config of a NAME (e.g. synth_drive) or a YAML PATH")
    show.add_argument("config", help="a shipped config's name (`semhint config list`) or a YAML file")
    show.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=2e-4")
    show.set_defaults(handler="config:show")
    lst = csub.add_parser("list", help="the configs shipped with semhint")
    lst.set_defaults(handler="config:list_configs")


_COMMANDS = [_add_train, _add_kitti, _add_endoscopy, _add_split, _add_evaluate, _add_predict, _add_export, _add_demo, _add_track,
             _add_synth, _add_labels, _add_config]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semhint", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"semhint {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="on an error, show the full Python traceback instead of one line (anywhere on the line)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


# Output paths of each command (handler -> (attribute, option, "file" | "dir")): checked before any
# work, so an --out that is a folder where a file is meant (or the other way round), or that sits
# under a file, is one line naming it, not a traceback after minutes of work.
_OUTPUTS: dict[str, list[tuple[str, str, str]]] = {
    "kitti:export_gt": [("output", "--output", "file")],
    "endoscopy:export_gt": [("output", "--output", "file")],
    "split:make": [("out", "--out", "file"), ("val_out", "--val-out", "file")],
    "evaluate:run": [("out", "--out", "file")],
    "predict:run": [("out", "--out", "dir")],
    "export:run": [("out", "--out", "file")],
    "demo:run": [("out", "--out", "dir")],
    "track:run": [("out", "--out", "dir")],
    "synth:run": [("out", "--out", "dir")],
    "labels:corrupt": [("out", "--out", "dir")],
    "labels:train": [("out", "--out", "file")],
    "labels:predict": [("out", "--out", "dir"), ("preview", "--preview", "file")],
}


def preflight(args: argparse.Namespace) -> None:
    """Checks that need no work done first: output paths, and a --resume checkpoint that is not one."""
    from semhint.core.fileio import check_output_dir, check_output_file  # lazy: numpy/PIL only once a command runs

    for attr, option, kind in _OUTPUTS.get(args.handler, []):
        value = getattr(args, attr, None)
        if value:
            (check_output_file if kind == "file" else check_output_dir)(value, option)
    resume = getattr(args, "resume", None)
    if args.handler == "train:run" and resume and resume != "auto":
        from semhint.core.checkpoints import read_checkpoint  # lazy: torch only for train

        read_checkpoint(resume)


def one_line(exc: BaseException) -> str:
    """An error message on one line; a DataLoader worker's re-raised error keeps only its last line
    (torch puts the worker's whole traceback into the message)."""
    text = str(exc).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        head, sep, rest = last.partition(": ")
        text = rest if sep and head.replace(".", "").replace("_", "").isalnum() else last
    return " ".join(text.split()) or exc.__class__.__name__


def os_error_line(exc: OSError) -> str:
    """'PATH: what went wrong' for an OSError (permission denied, is a directory, disk full...)."""
    if exc.filename is not None:
        where = f"{exc.filename} -> {exc.filename2}" if exc.filename2 is not None else str(exc.filename)
        return f"{where}: {exc.strerror or exc.__class__.__name__}"
    return one_line(exc)


def main(argv: list[str] | None = None) -> int:
    """Parse, run one command, and turn every user mistake into one line on stderr and exit status 2.

    Bad input (InputError, ConfigError) and every OSError (permission denied, a folder where a file
    is meant, disk full...) are the user's to fix: one line naming the path or key, status 2. Any
    other exception is a bug: one line and status 1. ``--debug`` (anywhere on the line) re-raises
    instead, with the traceback. Ctrl-C is status 130.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    module_name, function = args.handler.split(":")
    command = " ".join(v for v in (args.command, *(getattr(args, k, None) for k in
                                                   ("kitti_command", "endoscopy_command", "split_command", "labels_command",
                                                    "config_command", "world"))) if v)
    quiet_third_party()
    one_line_warnings()
    try:
        preflight(args)
        # lazy: a command pays only for its own imports (torch, Lightning, OpenCV), and --help stays instant
        module = importlib.import_module(f"semhint.app.{module_name}")
        result = getattr(module, function)(args)
    except KeyboardInterrupt:
        print(f"semhint {command}: interrupted", file=sys.stderr)
        return 130
    except (InputError, ConfigError) as exc:
        if debug:
            raise
        print(f"semhint {command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        if debug:
            raise
        print(f"semhint {command}: error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: still one line, and the way to see more
        if debug:
            raise
        print(f"semhint {command}: internal error: {exc.__class__.__name__}: {one_line(exc)} "
              "(run again with --debug for the traceback)", file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
