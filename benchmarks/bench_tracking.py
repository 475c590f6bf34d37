"""Tissue-tracking speed: frames per second of each mode at 320x240 and 640x480 (record "tracking").

    python benchmarks/bench_tracking.py

It renders a small deforming toy clip (semhint.tracking.toy) at each resolution, writes it
in the SynthTissue layout and times ``track`` per mode (frame decoding and depth reading included,
set-up on the first frame excluded). The accuracy table on SynthTissue is experiments/tracking.py.
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("OMP_NUM_THREADS", "2")

import cv2  # noqa: E402  (after OMP_NUM_THREADS: the thread pools read it when they start)
import torch  # noqa: E402

from semhint.lab.records import markdown_table, write_record  # noqa: E402
from semhint.tracking import load_clip, track  # noqa: E402
from semhint.tracking.toy import make_toy_clip, write_toy_clip  # noqa: E402

SPEED_MODES = [("flow", "dis", None), ("flow", "dis", 320), ("flow", "lk", None), ("flow+lift", "dis", None),
               ("graph", "dis", None), ("graph+flow", "dis", None), ("graph+flow", "dis", 320)]


def bench_speed(frames: int, points: int) -> None:
    torch.set_num_threads(2)
    rows, data = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for h, w in ((240, 320), (480, 640)):
            seq = write_toy_clip(make_toy_clip(h, w, frames=frames, points=points, seed=0), tmp, f"toy{w}")
            clip = load_clip(seq)
            for mode, flow, flow_width in SPEED_MODES:
                result = track(clip, mode, "gt", flow=flow, flow_width=flow_width, progress=False)
                name = mode if mode == "graph" else f"{mode} ({flow}{f', flow at width {flow_width}' if flow_width else ''})"
                data.setdefault(name, {})[f"{w}x{h}"] = result.fps
                print(f"{w}x{h} {name}: {result.fps:.2f} fps", flush=True)
    for name, by_res in data.items():
        rows.append({"mode": name, **{f"fps {k}": v for k, v in by_res.items()}})
    body = (f"Frames per second of `semhint track` on CPU ({frames}-frame toy clip, {points} points, cv2 "
            f"threads {cv2.getNumThreads()}, frame PNG decoding included; DIS preset 'medium', 4 flows a frame "
            f"with re-anchoring). The machine was shared with other jobs, so treat these as lower bounds.\n\n"
            + markdown_table(rows, ["mode", "fps 320x240", "fps 640x480"]))
    write_record("tracking", "Tissue tracking speed (CPU)", "python benchmarks/bench_tracking.py", body,
                 {"frames": frames, "points": points, "fps": data})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--points", type=int, default=64)
    args = parser.parse_args()
    bench_speed(args.frames, args.points)


if __name__ == "__main__":
    main()
