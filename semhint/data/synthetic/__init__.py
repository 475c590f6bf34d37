"""Built-in synthetic worlds with exact ground truth: SynthDrive (street video) and SynthTissue
(endoscopic video), plus controlled label noise. No download needed: `semhint synth drive --out DIR`.

The output layout is described in :mod:`semhint.data.synthetic.writer`; drive data is the KITTI raw
layout (read by ``semhint.data.kitti``), tissue data one folder per sequence with intrinsics.yaml
(read by ``semhint.data.folder``).
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from semhint.core.config import parse_size
from semhint.core.conventions import CITYSCAPES, TISSUE
from semhint.core.errors import InputError
from semhint.core.fileio import save_npz
from semhint.core.version import __version__
from semhint.data.synthetic import drive, tissue, town, writer
from semhint.data.synthetic.preview import contact_sheet

PRESETS = {
    "drive": {
        "tiny": dict(sequences=2, frames=8, height=64, width=208),  # tests: seconds
        "demo": dict(sequences=5, frames=80, height=96, width=320),  # a few minutes of CPU training
        "bench": dict(sequences=4, frames=100, height=192, width=640),  # KITTI network resolution
        # demo's sizes in a town: a curving street, a crossing, setbacks, a pitched camera
        "town": dict(sequences=5, frames=80, height=96, width=320, streets="town"),
    },
    "tissue": {
        "tiny": dict(sequences=2, frames=8, height=48, width=64),
        "demo": dict(sequences=4, frames=60, height=192, width=256),
        "bench": dict(sequences=3, frames=60, height=240, width=320),
        # demo's sizes, modelled on SCARED / Hamlyn: a scope pivoting about its trocar with dolly and
        # roll, a spot light, mostly rigid tissue, an instrument that enters and leaves (tissue.py)
        # Its configs compare frames 2 apart (the parallax of shape at +-1 is a fifth of a pixel), so its
        # splits keep only frames with neighbours 2 away
        "scared": dict(sequences=4, frames=60, height=192, width=256, style="scared", split_margin=2),
    },
}

__all__ = ["PRESETS", "build_drive_scene", "render_drive", "render_tissue", "resolve_preset"]

_DRIVE_STREETS = {"straight": drive.build_scene, "town": town.build_scene}


def build_drive_scene(cfg: drive.DriveConfig, sequence_seed: int) -> drive.DriveScene:
    """The scene of one drive with ``cfg.streets`` (straight: drive.build_scene; town: town.build_scene)."""
    if cfg.streets not in _DRIVE_STREETS:
        raise InputError(f"unknown SynthDrive streets {cfg.streets!r} (choose from: {', '.join(_DRIVE_STREETS)})")
    return _DRIVE_STREETS[cfg.streets](cfg, sequence_seed)


def resolve_preset(kind: str, preset: str, **overrides) -> dict:
    """A preset's settings with every non-None override applied (``size`` may be 'HxW')."""
    if preset not in PRESETS[kind]:
        raise InputError(f"unknown {kind} preset {preset!r} (choose from: {', '.join(PRESETS[kind])})")
    settings = dict(PRESETS[kind][preset])
    size = overrides.pop("size", None)
    if size:
        settings["height"], settings["width"] = parse_size(size) if isinstance(size, str) else size
    settings.update({k: v for k, v in overrides.items() if v is not None})
    if settings["sequences"] < 1:
        raise InputError(f"--sequences must be at least 1, got {settings['sequences']}")
    margin = settings.get("split_margin", 1)
    if settings["frames"] < 2 * margin + 1:
        raise InputError(f"--frames must be at least {2 * margin + 1} for the {preset} preset (a target needs both "
                         f"neighbours {margin} frame{'s' if margin > 1 else ''} away), got {settings['frames']}")
    return settings


def _progress(total: int, desc: str):
    return tqdm(total=total, desc=desc, unit="frame")


def _preview_picks(n_frames: int, count: int = 4) -> list[int]:
    return sorted(set(int(round(x)) for x in np.linspace(0, n_frames - 1, count)))


def default_workers(sequences: int, frames: int) -> int:
    """Render sequences in parallel processes (one thread each) unless the job is tiny.

    Separate processes scale with cores without the thread-synchronisation cost that tensor
    threading pays on small per-primitive operations.
    """
    if sequences * frames <= 32:
        return 1
    return max(1, min(2, sequences, os.cpu_count() or 1))


def _init_worker() -> None:
    torch.set_num_threads(1)


def _run_jobs(fn, jobs: list, workers: int | None, frames: int, desc: str | None) -> list[dict]:
    """Run per-sequence render jobs (in ``workers`` processes when > 1); returns the preview frames."""
    workers = default_workers(len(jobs), frames) if workers is None else max(1, int(workers))
    bar = _progress(len(jobs) * frames, desc) if desc else None
    sheet: list[dict] = []
    if workers == 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # per-primitive ops are small: extra threads only add synchronisation
        try:
            for job in jobs:
                sheet += fn(job, bar)
        finally:
            torch.set_num_threads(threads)
    else:
        with mp.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
            for frames_done in pool.imap_unordered(_job_in_worker, [(fn, job) for job in jobs]):
                sheet += frames_done
                if bar is not None:
                    bar.update(frames)
    if bar is not None:
        bar.close()
    return sorted(sheet, key=lambda f: f["frame"])


def _job_in_worker(item) -> list[dict]:
    fn, job = item
    return fn(job, None)


def _drive_sequence(job, bar=None) -> list[dict]:
    """Render and write one drive; returns the frames picked for the preview."""
    out, cfg, seq, seq_seed, picks = job
    scene = build_drive_scene(cfg, seq_seed)
    sheet = []
    for i in range(cfg.frames):
        rendered = drive.render_frame(scene, cfg, i)
        writer.write_drive_frame(out, seq, i, rendered)
        if i in picks:
            sheet.append(dict(rendered, frame=i))
        if bar is not None:
            bar.update(1)
    writer.write_poses(out / "poses" / writer.DATE / f"{writer.drive_name(seq)}.txt", scene.poses)
    return sheet


def _tissue_sequence(job, bar=None) -> list[dict]:
    """Render and write one tissue sequence with its tracks; returns the frames picked for the preview."""
    out, cfg, seq, seq_seed, picks = job
    scene = tissue.build_scene(cfg, seq_seed)
    xy, xyz, vis, queries_uv, sheet = [], [], [], None, []
    for i, rendered in tissue.render_sequence(cfg, seq_seed, scene=scene):
        writer.write_tissue_frame(out, seq, i, rendered)
        queries_uv = rendered["queries"]
        xy.append(rendered["tracks"]["xy"])
        xyz.append(rendered["tracks"]["xyz"])
        vis.append(rendered["tracks"]["visible"])
        if i in picks:
            sheet.append(dict(rendered, frame=i, trail=np.stack(xy)))
        if bar is not None:
            bar.update(1)
    name = writer.tissue_name(seq)
    save_npz(out / "tracks" / f"{name}.npz", queries=queries_uv.astype(np.float32), query_frame=np.int64(0),
             tracks_2d=np.stack(xy).astype(np.float32), tracks_3d=np.stack(xyz).astype(np.float32),
             visibility=np.stack(vis).astype(bool))
    writer.write_poses(out / "poses" / f"{name}.txt", scene.poses)
    return sheet


def render_drive(out: str | Path, preset: str = "demo", seed: int = 0, sequences: int | None = None,
                 frames: int | None = None, size: str | tuple[int, int] | None = None, moving_cars: bool | None = None,
                 stops: bool | None = None, preview: bool = False, progress: bool = True, workers: int | None = None) -> Path:
    """Render SynthDrive into ``out`` (KITTI raw layout + GT depth, labels, poses, splits); returns ``out``.

    ``workers`` > 1 renders sequences in spawned processes (results are identical to ``workers=1``);
    a script that calls this with workers needs the usual ``if __name__ == "__main__":`` guard.
    """
    s = resolve_preset("drive", preset, sequences=sequences, frames=frames, size=size, moving_cars=moving_cars,
                       stops=stops)
    out = Path(out)
    fields = {f.name for f in dataclasses.fields(drive.DriveConfig)}
    cfg = drive.DriveConfig(seed=seed, **{k: v for k, v in s.items() if k in fields})
    K = drive.intrinsics(cfg)
    writer.start_render(out)
    writer.write_drive_static(out, K, cfg.width, cfg.height, s["sequences"], cfg.frames)
    picks = _preview_picks(cfg.frames) if preview else []
    jobs = [(out, cfg, seq, seed * 1000 + seq, picks if seq == 0 else []) for seq in range(s["sequences"])]
    sheet = _run_jobs(_drive_sequence, jobs, workers, cfg.frames, "synth drive" if progress else None)
    writer.write_drive_splits(out, s["sequences"], cfg.frames)  # after the frames, before meta.json (last)
    if preview:
        title = f"SynthDrive{' town' if cfg.streets == 'town' else ''} {cfg.height}x{cfg.width}, seed {seed}"
        contact_sheet(out / "preview.png", sheet, CITYSCAPES, title)
    writer.write_meta(out, {
        "generator": "semhint synth drive", "version": __version__, "seed": seed, "preset": preset, "settings": s,
        "layout": "kitti_raw", "date": writer.DATE, "sequences": [f"{writer.DATE}/{writer.drive_name(q)}" for q in range(s["sequences"])],
        "units": "m", "depth_png_scale": 256, "depth_invalid": "0 (sky, or beyond 255.99 m)",
        "class_set": "cityscapes", "num_classes": CITYSCAPES.num_classes, "ignore_index": 255,
        "intrinsics": {"fx": K[0, 0], "fy": K[1, 1], "cx": K[0, 2], "cy": K[1, 2], "width": cfg.width, "height": cfg.height},
        "camera_height_m": cfg.camera_height,
        "poses": "poses/DATE/DRIVE.txt: per frame the 3x4 camera-to-world matrix, row-major (KITTI odometry format); "
                 "world x right, y down, z forward; T(target->source) = inv(P_source) @ P_target",
    })
    return out


def render_tissue(out: str | Path, preset: str = "demo", seed: int = 0, sequences: int | None = None,
                  frames: int | None = None, size: str | tuple[int, int] | None = None, queries: int | None = None,
                  preview: bool = False, progress: bool = True, workers: int | None = None,
                  sweep_mm: float | None = None) -> Path:
    """Render SynthTissue into ``out`` (folder layout + GT depth in mm, labels, poses, tracks, splits).

    ``sweep_mm`` > 0 moves the camera back and forth across the tissue (TissueConfig.sweep_mm), so
    that depth can be learnt from parallax; the default keeps the tracking clips' near-static camera.
    ``preset="scared"`` has a moving scope of its own (TissueConfig.style), so it takes no sweep.
    """
    if sweep_mm is not None and not (sweep_mm >= 0 and math.isfinite(sweep_mm)):
        raise InputError(f"--sweep-mm must be a finite number >= 0, got {sweep_mm}")
    if sweep_mm and PRESETS["tissue"].get(preset, {}).get("style") == "scared":
        raise InputError("--sweep-mm applies to the clip presets (tiny, demo, bench); --preset scared moves its own scope")
    s = resolve_preset("tissue", preset, sequences=sequences, frames=frames, size=size, queries=queries,
                       sweep_mm=sweep_mm or None)
    out = Path(out)
    fields = {f.name for f in dataclasses.fields(tissue.TissueConfig)}
    cfg = tissue.TissueConfig(seed=seed, **{k: v for k, v in s.items() if k in fields})
    K = tissue.intrinsics(cfg)
    writer.start_render(out)
    writer.write_tissue_static(out, K, cfg.width, cfg.height, s["sequences"], cfg.frames)
    picks = _preview_picks(cfg.frames) if preview else []
    jobs = [(out, cfg, seq, seed * 1000 + seq, picks if seq == 0 else []) for seq in range(s["sequences"])]
    sheet = _run_jobs(_tissue_sequence, jobs, workers, cfg.frames, "synth tissue" if progress else None)
    writer.write_tissue_splits(out, s["sequences"], cfg.frames, s.get("split_margin", 1))  # after the frames, before meta.json (last)
    if preview:
        title = f"SynthTissue{' scared' if cfg.style == 'scared' else ''} {cfg.height}x{cfg.width}, seed {seed}"
        contact_sheet(out / "preview.png", sheet, TISSUE, title, tracks=True)
    writer.write_meta(out, {
        "generator": "semhint synth tissue", "version": __version__, "seed": seed, "preset": preset, "settings": s,
        "layout": "folder", "sequences": [writer.tissue_name(q) for q in range(s["sequences"])],
        "units": "mm", "depth_png_scale": 256, "depth_invalid": "0",
        "class_set": "tissue", "num_classes": TISSUE.num_classes, "ignore_index": 255,
        "intrinsics": {"fx": K[0, 0], "fy": K[1, 1], "cx": K[0, 2], "cy": K[1, 2], "width": cfg.width, "height": cfg.height},
        "fps": cfg.fps,
        "poses": "poses/SEQUENCE.txt: per frame the 3x4 camera-to-world matrix (mm), row-major; world = first camera; "
                 "T(target->source) = inv(P_source) @ P_target",
        "tracks": "tracks/SEQUENCE.npz: queries (N x 2 material coordinates, mm), query_frame, tracks_2d (T x N x 2 px), "
                  "tracks_3d (T x N x 3 mm, camera frame), visibility (T x N bool: in view, not hidden by the instrument)",
    })
    return out
