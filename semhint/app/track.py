"""`semhint track`: track tissue points through a video (flow, flow + depth, deformation graph) and score them."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from semhint.core.fileio import write_json
from semhint.tracking import GRAPH_PRESETS, evaluate_tracks, resolve_scale, track
from semhint.tracking.graph import GraphConfig
from semhint.tracking.io import load_clip, save_tracks, write_overlay


def run(args: argparse.Namespace) -> None:
    track_command(args.source, args.points, args.depth, args.mode, args.out, args.intrinsics, args.labels, args.flow,
                  args.scale, not args.no_video, args.device, args.flow_width, args.semantic)


def track_command(source: str, points: str | None = None, depth: str = "none", mode: str = "flow", out: str = "tracks",
                  intrinsics: str | None = None, labels: str | None = None, flow: str = "dis", scale: str = "auto",
                  video: bool = True, device: str = "cpu", flow_width: int | None = None, semantic: bool = False) -> dict:
    """Load, track, save NPZ + JSON (+ overlay), and score where the clip has labelled points."""
    clip = load_clip(source, points, intrinsics, labels)
    result = track(clip, mode, depth, flow=flow, scale=scale, device=device, flow_width=flow_width,
                   graph=replace(GRAPH_PRESETS.get(mode, GraphConfig()), semantic=semantic))
    out_dir = Path(out)
    meta = {"source": str(source), "mode": mode, "depth": str(depth), "flow": flow,
            "scale": resolve_scale(clip, depth, scale) if mode != "flow" else None,
            "frames": len(clip), "points": int(len(clip.queries)), "fps": round(result.fps, 2)}
    paths = save_tracks(out_dir, result.xy, result.visible, result.xyz, meta)
    if video:
        paths["video"] = write_overlay(out_dir / "overlay.mp4", clip, result.xy, result.visible)
    report = {"outputs": {k: str(v) for k, v in paths.items()}, "meta": meta}
    if clip.truth is not None and (clip.truth.frames > 0).any():
        report["scores"] = evaluate_tracks(result, clip)
        write_json(out_dir / "scores.json", report["scores"])
        for line in score_lines(report["scores"]):
            print(line)
    print(f"{len(clip)} frames, {len(clip.queries)} points, {result.fps:.1f} fps -> {out_dir}")
    return report


def score_lines(scores: dict) -> list[str]:
    """The console summary of a scored clip: the 2D error, and the 3D error when the clip and the mode have
    3D (a depth mode with 3D ground truth), each beside the zero-motion baseline."""
    lines = []
    for dim, unit in (("2d", "px"), ("3d", "mm")):
        m, z = scores["method"].get(dim), scores["zero_motion"].get(dim)
        if not m or not m.get("count"):
            continue
        base = f"; zero motion {z[f'mean_{unit}']:.2f} {unit}" if z and z.get("count") else ""
        lines.append(f"{dim.upper()} error {m[f'mean_{unit}']:.2f} {unit} (median {m[f'median_{unit}']:.2f}, "
                     f"delta_avg {m['delta_avg']:.3f}){base}")
    return lines
