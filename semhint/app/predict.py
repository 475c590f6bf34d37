"""`semhint predict`: depth for image files, folders and videos from a checkpoint, as files people can use.

Per frame: depth ``.npy`` (exact, float32, the model's unit), a 16-bit PNG whose scale spans the
frame's range (value = round(depth * scale), the scale in the PNG's text chunk and in
``NAME_depth.json``; 0 = invalid), a colour preview and (with intrinsics or ``--fov``) a PLY point
cloud in the model's unit, camera frame; per video a side-by-side input | depth video (H.264, which
browsers play, with the ``video`` extra installed; mp4v, which desktop players play, without); a
summary with the network's frame rate. Depth is relative: up to one unknown scale factor.

The model is a checkpoint (PyTorch, CPU or GPU) or an ONNX file written by ``semhint export`` (float
or int8), which ONNX Runtime runs on the CPU with the same pre- and post-processing.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from semhint.core.errors import InputError
from semhint.core.fileio import (
    depth_png_scale,
    check_output_dir,
    is_within,
    refuse_inside,
    remove_stale_temps,
    save_image,
    save_npy,
    write_json,
    write_scaled_depth_png,
)
from semhint.core.pictures import colorize_depth
from semhint.core.video import Mp4Writer
from semhint.data.folder import fov_warning, intrinsics_from_fov, read_intrinsics
from semhint.data.media import classify_inputs, frame_count, iter_frames, video_fps
from semhint.export import OnnxPredictor, load_any_predictor
from semhint.inference import depth_to_point_cloud, read_intrinsics_file, write_ply


def run(args: argparse.Namespace) -> None:
    predict_inputs(args.checkpoint, args.inputs, args.out, device=args.device, png16=not args.no_png16, ply=args.ply,
                   intrinsics=args.intrinsics, ply_ascii=args.ply_ascii, fov=args.fov)


@dataclass
class PredictOptions:
    out_dir: Path
    png16: bool = True
    ply: bool = False
    intrinsics: str | None = None
    ply_ascii: bool = False
    fov: float | None = None  # horizontal field of view (degrees) standing in for missing intrinsics
    unit: str = "m"


def ply_comment(unit: str) -> str:
    """What a PLY's numbers mean, stated in its header: a viewer shows no units by itself."""
    return (f"semhint depth: x y z in {unit} (the model's unit, up to the monocular scale), camera frame: "
            "x right, y down, z forward")


def _save_depth_png16(path: Path, depth: np.ndarray, unit: str) -> None:
    """16-bit PNG with a per-frame scale that maps the frame's largest depth to 65535, recorded twice:
    in the PNG's text chunk and in a JSON sidecar (``NAME_depth.json``) for tools that drop chunks."""
    meta = write_scaled_depth_png(path, depth, depth_png_scale(depth), unit=unit)
    meta["png"] = path.name
    write_json(path.with_suffix(".json"), meta)


def _write_frame_outputs(name: str, rgb: np.ndarray, depth: np.ndarray, opts: PredictOptions, K: np.ndarray | None,
                         max_depth: float) -> np.ndarray:
    """depth .npy, 16-bit PNG (+ scale sidecar), colour preview and optional PLY for one frame; returns the preview."""
    base = opts.out_dir / name
    save_npy(base.with_name(base.name + "_depth.npy"), depth)
    if opts.png16:
        _save_depth_png16(base.with_name(base.name + "_depth.png"), depth, opts.unit)
    preview = colorize_depth(depth)
    save_image(base.with_name(base.name + "_preview.png"), preview)
    if K is not None:
        points, colors = depth_to_point_cloud(depth, K, rgb, max_depth=max_depth)
        write_ply(base.with_name(base.name + ".ply"), points, colors, binary=not opts.ply_ascii,
                  comment=ply_comment(opts.unit))
    return preview


def _frame_intrinsics(opts: PredictOptions, hw: tuple[int, int], warned: set) -> np.ndarray | None:
    """K for a frame of size ``hw``: the --intrinsics file scaled to it, or the --fov estimate (warned once a size)."""
    if not opts.ply:
        return None
    if opts.intrinsics:
        return read_intrinsics_file(opts.intrinsics, hw)
    K = intrinsics_from_fov(opts.fov, hw)
    if hw not in warned:
        warned.add(hw)
        fov_warning("--ply", opts.fov, K, remedy="give --intrinsics FILE (fx fy cx cy)")
    return K


def predict_inputs(checkpoint: str | Path, inputs: list[str | Path], out_dir: str | Path, device: str = "cpu",
                   png16: bool = True, ply: bool = False, intrinsics: str | None = None, ply_ascii: bool = False,
                   fov: float | None = None) -> dict:
    """Depth files for every frame of every input; returns a summary."""
    if ply and not intrinsics and fov is None:
        raise InputError("--ply needs --intrinsics FILE (fx fy cx cy of the input images) or an estimate from the "
                         "horizontal field of view, --fov DEGREES, to place points in 3-D")
    if ply and intrinsics:
        read_intrinsics(intrinsics)  # a bad file fails before any work, not after the network is loaded
    elif ply:
        intrinsics_from_fov(fov, (1, 1))  # a bad --fov fails before any work too
    check_output_dir(out_dir, "--out")
    sources = classify_inputs(inputs)
    # outputs inside an input folder would overwrite nothing, but become that folder's frames next time
    refuse_inside(out_dir, [s.path for s in sources if s.kind == "folder"], "--out")
    for source in sources:  # --out above an input folder: its mirrored outputs would land in the input itself
        if source.kind == "folder" and is_within(Path(out_dir) / source.out_name, source.path):
            raise InputError(f"{out_dir}: --out would write {source.path}'s outputs into {source.path} itself; "
                             "write the output elsewhere")
    predictor = load_any_predictor(checkpoint, device)
    opts = PredictOptions(Path(out_dir), png16=png16, ply=ply, intrinsics=intrinsics, ply_ascii=ply_ascii, fov=fov,
                          unit=predictor.unit)
    remove_stale_temps(opts.out_dir, recursive=True)  # what a killed run left behind
    frames, seconds, warned = 0, 0.0, set()
    for source in sources:
        # input | colour-mapped depth, published only when the whole video went through
        video = Mp4Writer(opts.out_dir / f"{source.out_name}_depth.mp4", video_fps(source.path)) \
            if source.kind == "video" else None
        try:
            # a total (frames of a folder, or a video's frame count) gives the bar its percentage and ETA
            bar = tqdm(iter_frames(source), desc=source.path.name, unit="frame", total=frame_count(source),
                       leave=len(sources) == 1, dynamic_ncols=True)
            for name, rgb in bar:
                t0 = time.perf_counter()
                depth = predictor.predict_depth(rgb)
                seconds += time.perf_counter() - t0
                frames += 1
                K = _frame_intrinsics(opts, rgb.shape[:2], warned)
                preview = _write_frame_outputs(name, rgb, depth, opts, K, predictor.max_depth)
                if video is not None:
                    video.add(np.concatenate([rgb, preview], axis=1))
        except BaseException:
            if video is not None:
                video.abort()
            raise
        if video is not None:
            video.close()
    fps = frames / seconds if seconds > 0 else float("nan")
    summary = {"frames": frames, "network_fps": fps, "out_dir": str(opts.out_dir), "checkpoint": str(checkpoint),
               "runtime": (f"ONNX Runtime ({predictor.precision})" if isinstance(predictor, OnnxPredictor)
                           else f"PyTorch ({predictor.device})"),
               "depth_unit": opts.unit, "depth_note": "relative depth: up to one unknown scale factor",
               "png16": "value = round(depth * scale), scale per frame in NAME_depth.json and the PNG text chunk "
                        "'semhint:depth_scale'; 0 = invalid" if png16 else None,
               "ply": ply_comment(opts.unit) if ply else None,
               "intrinsics": intrinsics or (f"estimated from --fov {fov:g} degrees" if ply else None)}
    write_json(opts.out_dir / "predict_summary.json", summary)
    print(f"predicted {frames} frame(s) at {fps:.1f} frames/s (network only) -> {opts.out_dir}")
    return summary
