"""Loader speed: training snippets per second from PNG at 192 x 640, with and without the resize cache.

Usage: python benchmarks/bench_loader.py [--data-path ROOT] [--workers 0 1 2] [--epochs 3]
       [--batch-size 12] [--extrapolate 8] [--no-record]

Reads the KITTI sample (../shared/data/kitti_sample) when present, else generates KITTI-sized PNG
frames in a temporary folder. Each configuration runs one untimed warm-up epoch (worker start-up,
page cache; with the cache on, this epoch writes it) and then times ``--epochs`` epochs of the
augmented training dataset. The cache's one-off cost is reported separately ("first epoch").

Wall-clock rates on a shared 2-core machine say little about a GPU host, so the benchmark also
reads the CPU time each worker process spent per snippet (from /proc, Linux) and the main process's
CPU per snippet (collation and the hand-over through shared memory). With N workers on N free cores
the loader can deliver at most min(N / worker CPU, 1 / main CPU) snippets per second; the
"extrapolated" row writes that bound down for ``--extrapolate`` workers. Pinning batches needs CUDA
and is not measured here.
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


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc (NaN where /proc is not there)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


def snippets_per_second(ds, workers: int, batch_size: int, epochs: int) -> tuple[float, float, float]:
    """(snippets per wall-clock second, main-process CPU ms per snippet, worker CPU ms per snippet).

    Timed after an untimed warm-up epoch; worker CPU is summed over the worker processes (NaN with
    no workers: then the main process does all the work and its CPU is the whole cost).
    """
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         persistent_workers=workers > 0, worker_init_fn=_worker_init)
    it = iter(loader)
    for _ in it:  # warm-up epoch (untimed); persistent workers keep their processes for the timed epochs
        pass
    pids = [w.pid for w in getattr(it, "_workers", [])]
    worker_cpu = sum(process_cpu_seconds(p) for p in pids)
    count, start, cpu = 0, time.perf_counter(), time.process_time()
    for _ in range(epochs):
        for batch in loader:
            count += len(batch["index"])
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    worker_cpu = sum(process_cpu_seconds(p) for p in pids) - worker_cpu if pids else float("nan")
    return count / wall, 1000 * cpu / count, 1000 * worker_cpu / count


def extrapolated_rate(worker_cpu_ms: float, main_cpu_ms: float, workers: int) -> float:
    """Snippets per second that ``workers`` workers on free cores can deliver: the slower of the two stages."""
    return min(workers * 1000 / worker_cpu_ms, 1000 / main_cpu_ms)


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
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--extrapolate", type=int, default=8, help="workers to extrapolate the cached rate to")
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
                         "snippets_per_s": cold, "ms_per_snippet": 1000 / cold, "main_cpu_ms_per_snippet": cpu,
                         "worker_cpu_ms_per_snippet": float("nan")})
            for workers in args.workers:
                rate, cpu, wcpu = snippets_per_second(ds, workers, args.batch_size, args.epochs)
                rows.append({"workers": workers, "cache": "on" if cache else "off", "epoch": "steady",
                             "snippets_per_s": rate, "ms_per_snippet": 1000 / rate, "main_cpu_ms_per_snippet": cpu,
                             "worker_cpu_ms_per_snippet": wcpu})
                print(rows[-1], flush=True)
            with_workers = [r for r in rows[-len(args.workers):] if r["workers"] > 0 and r["worker_cpu_ms_per_snippet"] > 0]
            if with_workers:  # the cost per snippet with the most workers measured (their hand-over included)
                last = with_workers[-1]
                rate = extrapolated_rate(last["worker_cpu_ms_per_snippet"], last["main_cpu_ms_per_snippet"],
                                         args.extrapolate)
                rows.append({"workers": args.extrapolate, "cache": "on" if cache else "off",
                             "epoch": f"extrapolated from {last['workers']}", "snippets_per_s": rate,
                             "ms_per_snippet": 1000 / rate, "main_cpu_ms_per_snippet": last["main_cpu_ms_per_snippet"],
                             "worker_cpu_ms_per_snippet": last["worker_cpu_ms_per_snippet"]})
        n_frames = len(data.frame_ids)
        cols = ["workers", "cache", "epoch", "snippets_per_s", "ms_per_snippet", "main_cpu_ms_per_snippet",
                "worker_cpu_ms_per_snippet"]
        load = os.getloadavg()[0]
        for row in rows:
            print(" ".join(f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in cols))
        if not args.no_record:
            from semhint.lab.records import markdown_table, write_record

            body = (f"Data: {source}; {len(ds)} snippets of {n_frames} frames at {args.height}x{args.width}, "
                    f"training augmentation on, batch {args.batch_size}. 'first' = one epoch in the main process "
                    f"(with the cache on: the epoch that decodes and writes it); 'steady' = {args.epochs} epochs "
                    "after an untimed warm-up epoch. main_cpu = CPU time of the main process only (the whole cost when "
                    "workers = 0; with workers it is collation and transfer); worker_cpu = CPU time of all worker "
                    "processes per snippet (from /proc). 'extrapolated' = what that many workers on free cores "
                    "deliver at the measured CPU costs: min(workers / worker_cpu, 1 / main_cpu); pinning needs CUDA "
                    f"and is not in these numbers. Load average at the end: {load:.1f} "
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
