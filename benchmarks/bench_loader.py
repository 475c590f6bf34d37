"""Loader speed: training snippets per second from PNG at 192 x 640, with and without the resize cache.

Usage: python benchmarks/bench_loader.py [--data-path ROOT] [--workers 0 1 2] [--epochs 3] [--no-record]

Reads the KITTI sample (../shared/data/kitti_sample) when present, else generates KITTI-sized PNG
frames in a temporary folder. Each configuration runs one untimed warm-up epoch (worker start-up,
page cache; with the cache on, this epoch writes it) and then times ``--epochs`` epochs of the
augmented training dataset. The cache's one-off cost is reported separately ("first epoch").
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np  # noqa: E402
import torch  # noqa: E402

from semhint.core.config import DataConfig  # noqa: E402
from semhint.data.build import build_dataset  # noqa: E402

KITTI_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "kitti_sample"


def generated_frames(root: Path, n: int = 48, hw: tuple[int, int] = (375, 1242)) -> Path:
    """A one-sequence folder dataset of textured KITTI-sized PNGs (noise compresses like real images badly; blur it)."""
    import cv2

    seq = root / "seq"
    seq.mkdir(parents=True)
    (seq / "intrinsics.yaml").write_text("fx: 721.5\nfy: 721.5\ncx: 609.6\ncy: 172.9\n")
    rng = np.random.default_rng(0)
    world = cv2.GaussianBlur(rng.integers(0, 255, (hw[0], hw[1] + 4 * n, 3), dtype=np.uint8), (0, 0), 3)
    for i in range(n):
        cv2.imwrite(str(seq / f"{i:06d}.png"), world[:, 4 * i : 4 * i + hw[1]])
    return root


def _worker_init(_: int) -> None:
    # Only torch's pool: calling cv2.setNumThreads in a forked worker after the parent used cv2
    # deadlocks (OpenCV's thread pool is not fork-safe).
    torch.set_num_threads(1)


def snippets_per_second(ds, workers: int, batch_size: int, epochs: int) -> tuple[float, float]:
    """(snippets per wall-clock second, main-process CPU ms per snippet) after a warm-up epoch."""
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         persistent_workers=workers > 0, worker_init_fn=_worker_init)
    for _ in loader:  # warm-up epoch (untimed)
        pass
    count, start, cpu = 0, time.perf_counter(), time.process_time()
    for _ in range(epochs):
        for batch in loader:
            count += len(batch["index"])
    return count / (time.perf_counter() - start), 1000 * (time.process_time() - cpu) / count


def first_epoch(ds) -> tuple[float, float]:
    """(snippets per second, CPU ms per snippet) of one epoch in the main process (cache on: the epoch that fills it)."""
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(len(ds)):
        ds[i]
    return len(ds) / (time.perf_counter() - start), 1000 * (time.process_time() - cpu) / len(ds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-path", default="", help="KITTI raw root (default: the KITTI sample, else generated frames)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--no-record", action="store_true", help="print only; do not write the lab record")
    args = parser.parse_args()
    torch.set_num_threads(1)

    tmp = Path(tempfile.mkdtemp(prefix="semhint_bench_loader_"))
    try:
        if args.data_path:
            data = DataConfig(kind="kitti", path=args.data_path)
            source = args.data_path
        elif (KITTI_SAMPLE / "2011_09_26" / "calib_cam_to_cam.txt").is_file():
            data = DataConfig(kind="kitti", path=str(KITTI_SAMPLE))
            source = "KITTI sample (48 frames, 1242x375 PNG)"
        else:
            data = DataConfig(kind="folder", path=str(generated_frames(tmp / "frames")))
            source = "generated frames (48, 1242x375 PNG)"
        data.height, data.width = args.height, args.width
        rows = []
        for cache in (False, True):
            data.cache_dir = str(tmp / "cache") if cache else ""
            ds = build_dataset(data, "train")
            cold, cpu = first_epoch(ds)
            rows.append({"workers": 0, "cache": "on" if cache else "off", "epoch": "first",
                         "snippets_per_s": cold, "ms_per_snippet": 1000 / cold, "main_cpu_ms_per_snippet": cpu})
            for workers in args.workers:
                rate, cpu = snippets_per_second(ds, workers, args.batch_size, args.epochs)
                rows.append({"workers": workers, "cache": "on" if cache else "off", "epoch": "steady",
                             "snippets_per_s": rate, "ms_per_snippet": 1000 / rate, "main_cpu_ms_per_snippet": cpu})
                print(rows[-1], flush=True)
        n_frames = len(data.frame_ids)
        cols = ["workers", "cache", "epoch", "snippets_per_s", "ms_per_snippet", "main_cpu_ms_per_snippet"]
        load = os.getloadavg()[0]
        for row in rows:
            print(" ".join(f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in cols))
        if not args.no_record:
            from semhint.lab.records import markdown_table, write_record

            body = (f"Data: {source}; {len(ds)} snippets of {n_frames} frames at {args.height}x{args.width}, "
                    f"training augmentation on, batch {args.batch_size}. 'first' = one epoch in the main process "
                    f"(with the cache on: the epoch that decodes and writes it); 'steady' = {args.epochs} epochs "
                    "after an untimed warm-up epoch. main_cpu = CPU time of the main process only (the whole cost when "
                    f"workers = 0; with workers it is collation and transfer). Load average at the end: {load:.1f} "
                    f"on {os.cpu_count()} cores (shared machine: wall-clock rates are only comparable within "
                    "this table).\n\n" + markdown_table(rows, cols))
            command = "python benchmarks/bench_loader.py " + " ".join(sys.argv[1:])
            write_record("loader", "Data loader throughput (snippets per second)", command.strip(), body,
                          {"source": source, "height": args.height, "width": args.width, "batch_size": args.batch_size,
                           "load_average": load, "rows": rows})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
