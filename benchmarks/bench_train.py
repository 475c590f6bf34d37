"""Training throughput (snippets/s through the whole Lightning loop, data loading included) and
end-to-end inference latency (Predictor: resize + network + upsampling), at 192x640 on CPU.

Renders a small SynthDrive set at KITTI network resolution, trains configs/synth_drive.yaml at
192x640 for a few steps (the first steps are warm-up and not counted), then times
``Predictor.predict_depth`` on the rendered frames.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_train.py --steps 8
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from semhint.core.config import load_config  # noqa: E402
from semhint.core.fileio import read_rgb  # noqa: E402
from semhint.lab.records import markdown_table, write_record  # noqa: E402


class StepTimer(Callback):
    """Wall time of every training batch, from its start (data already loaded) to the next one's."""

    def __init__(self):
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.starts.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module):
        self.starts.append(time.perf_counter())


def _throughput(timer: StepTimer, warmup: int, batch_size: int, precision: str) -> dict:
    times = [b - a for a, b in zip(timer.starts[warmup:-1], timer.starts[warmup + 1:])]
    median = statistics.median(times)
    return {"precision": precision, "batch": batch_size, "steps_timed": len(times), "s_per_step": median,
            "snippets_per_s": batch_size / median}


def inference_latency(checkpoint: Path, images: list[Path], repeats: int) -> dict:
    from semhint.inference import load_predictor

    predictor = load_predictor(checkpoint)
    rgbs = [read_rgb(p) for p in images]
    predictor.predict_depth(rgbs[0])  # warm-up
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        predictor.predict_depth(rgbs[i % len(rgbs)])
        times.append(time.perf_counter() - t0)
    h, w = rgbs[0].shape[:2]
    return {"input": f"{h}x{w}", "network": "192x640", "ms_per_frame": 1000 * statistics.median(times),
            "fps": 1 / statistics.median(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="timed training steps (after 2 warm-up steps)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"])
    parser.add_argument("--load", default="", help="a note on machine load at measurement time")
    args = parser.parse_args()

    from semhint.data.synthetic import render_drive

    with tempfile.TemporaryDirectory(prefix="semhint-bench-") as tmp:
        root = render_drive(Path(tmp) / "drive", preset="bench", sequences=1, frames=args.steps * args.batch_size // 2 + 8,
                            seed=0, progress=False)
        rows = []
        for precision in args.precisions:
            timer = StepTimer()
            from semhint.training import fit

            out = Path(tmp) / f"run-{precision}"
            overrides = [
                f"data.path={root / 'data'}", f"data.train_split={root / 'splits' / 'train.txt'}", "data.val_split=",
                "data.gt_depth=", "data.height=192", "data.width=640", "data.num_workers=0",
                f"optim.batch_size={args.batch_size}", f"optim.max_steps={args.steps + 2}", f"trainer.out_dir={out}",
                f"trainer.precision={precision}", "trainer.accelerator=cpu", "trainer.image_log_every_n_steps=0",
                "trainer.log_every_n_steps=1000", "optim.pose_warmup_steps=0",  # time full steps, not warm-up ones
            ]
            fit(load_config("synth_drive", overrides), extra_callbacks=[timer])
            rows.append(_throughput(timer, 2, args.batch_size, precision))
            print(rows[-1], flush=True)
        images = sorted((root / "data").rglob("*.png"))[:8]
        latency = inference_latency(Path(tmp) / "run-32-true" / "checkpoints" / "last.ckpt", images, repeats=10)
        print(latency, flush=True)

    md = (f"configs/synth_drive.yaml at 192x640, batch {args.batch_size}, frames (0, -1, +1), through `semhint.training.fit` "
          f"(data loading, logging and the optimiser included); {torch.get_num_threads()} CPU threads; median over "
          f"{args.steps} steps after 2 warm-up steps.\n\n")
    if args.load:
        md += f"Load during measurement: {args.load}\n\n"
    md += markdown_table(rows, ["precision", "batch", "steps_timed", "s_per_step", "snippets_per_s"])
    md += "\n\nEnd-to-end inference (`Predictor.predict_depth`: resize, network at 192x640, upsample, invert), batch 1:\n\n"
    md += markdown_table([latency], ["input", "network", "ms_per_frame", "fps"])
    write_record("train_throughput", "Training throughput and inference latency (CPU, 192x640)",
                  f"OMP_NUM_THREADS={torch.get_num_threads()} .venv/bin/python benchmarks/bench_train.py --steps {args.steps} "
                  f"--precisions {' '.join(args.precisions)}",
                  md, {"training": rows, "inference": latency, "threads": torch.get_num_threads(), "load": args.load})


if __name__ == "__main__":
    main()
