"""Rendering speed of the built-in synthetic worlds (SynthDrive, SynthTissue).

Three numbers per world and size:
- render-only, 1 core: frames per CPU-second of one single-threaded process (``time.process_time``),
  the rate of one core, insensitive to other jobs sharing the machine;
- render-only, 2 processes at once: two single-threaded processes rendering concurrently (what
  ``--workers 2`` does), frames per wall-clock second; scene building and file writing excluded;
- end to end: `render_drive` / `render_tissue` writing every PNG with 2 worker processes (one per
  core), frames per wall-clock second. On a shared machine this is a lower bound; the load average
  at the time is recorded beside it.

    python benchmarks/bench_render.py [--frames 20]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch  # noqa: E402

from semhint.lab.records import markdown_table, write_record  # noqa: E402


def render_only(kind: str, height: int, width: int, frames: int) -> float:
    """Frames per CPU-second of one thread (scene building excluded, one warm-up frame)."""
    return frames / _render_loop(kind, height, width, frames, time.process_time)


def render_wall_seconds(args: tuple[str, int, int, int]) -> float:
    """Wall seconds one single-threaded process takes to render ``frames`` frames (a pool worker)."""
    return _render_loop(*args, clock=time.perf_counter)


def render_two_processes(kind: str, height: int, width: int, frames: int) -> float:
    """Frames per wall-clock second of two single-threaded processes rendering at once (2 cores)."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2) as pool:
        walls = list(pool.map(render_wall_seconds, [(kind, height, width, frames)] * 2))
    return 2 * frames / max(walls)


def _render_loop(kind: str, height: int, width: int, frames: int, clock) -> float:
    from semhint.data.synthetic import drive, tissue

    torch.set_num_threads(1)
    if kind == "drive":
        cfg = drive.DriveConfig(height=height, width=width, frames=frames + 1, seed=0)
        scene = drive.build_scene(cfg, 0)
        render = drive.render_frame
    else:
        cfg = tissue.TissueConfig(height=height, width=width, frames=frames + 1, seed=0)
        scene = tissue.build_scene(cfg, 0)
        render = tissue.render_frame
    render(scene, cfg, 0)
    start = clock()
    for i in range(1, frames + 1):
        render(scene, cfg, i)
    return clock() - start


def end_to_end(kind: str, height: int, width: int, frames: int) -> float:
    """Frames per wall-clock second of the full writer (2 processes, PNG output included)."""
    from semhint.data.synthetic import render_drive, render_tissue

    fn = render_drive if kind == "drive" else render_tissue
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        fn(tmp, preset="bench", sequences=2, frames=frames, size=(height, width), progress=False, workers=2)
        return 2 * frames / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20, help="frames per measurement")
    args = parser.parse_args()
    cases = [("drive", 192, 640), ("tissue", 240, 320), ("tissue", 480, 640)]
    rows = []
    for kind, h, w in cases:
        load = os.getloadavg()[0]
        one = render_only(kind, h, w, args.frames)
        two = render_two_processes(kind, h, w, args.frames)
        e2e = end_to_end(kind, h, w, args.frames)
        rows.append({"world": kind, "size (HxW)": f"{h}x{w}", "render-only fps, 1 core": one,
                     "render-only fps, 2 processes at once, wall": two,
                     "end-to-end fps, 2 processes, wall": e2e, "load average (1 min)": round(load, 2)})
        print(rows[-1], flush=True)
    write_results(rows, args.frames)


def write_results(rows: list[dict], frames: int) -> None:
    cols = list(rows[0])
    body = (markdown_table(rows, cols) + "\n\nRender-only: frames per CPU-second of one single-threaded process "
            "(`time.process_time`). Two processes at once: two single-threaded processes each render the frames of "
            "their own sequence concurrently (what `--workers 2` does), frames per wall-clock second of the slower "
            "one, scene building and PNG writing excluded. End to "
            "end: `render_drive`/`render_tissue` with 2 spawned worker processes (start-up included) writing all "
            "PNGs, frames per wall-clock second, measured on a machine shared with other jobs (load average "
            "beside it, on 2 cores), so it is a lower bound.")
    write_record("render", "Synthetic world rendering speed", f"python benchmarks/bench_render.py --frames {frames}",
                  body, {"rows": rows, "frames": frames})


if __name__ == "__main__":
    main()
