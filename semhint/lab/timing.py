"""Building blocks of the speed benchmarks (``benchmarks/bench_step.py``, ``bench_gpu.py``,
``bench_scaling.py``): a synthetic training batch, one optimiser step of the real objective, the depth
net's forward, and timing that synchronises the GPU and keeps to a time budget.

A step is exactly what ``SemHintModule.training_step`` optimises: ``SemHintModule.objective`` (depth
+ pose forward, every loss, the refinement terms of a SemHint config) then backward and the Adam
update of ``configure_optimizers``. Benchmark configs start their refinement at once
(``refine.warmup_epochs=0``, ``optim.pose_warmup_steps=0``): the steps that dominate a run's cost are
the ones after warm-up.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from semhint.core import geometry
from semhint.core.config import Config, load_config
from semhint.training import SemHintModule

SPLITS_DIR = Path(__file__).resolve().parents[1] / "splits"


def split_size(name: str = "eigen_zhou", split: str = "train_files.txt") -> int:
    """Snippets in a shipped split file (eigen_zhou's train split: what a KITTI epoch goes through)."""
    with open(SPLITS_DIR / name / split) as fh:
        return sum(1 for line in fh if line.strip())


# ----------------------------------------------------------------------------------------------
# inputs and configs
# ----------------------------------------------------------------------------------------------
def synthetic_batch(height: int, width: int, batch_size: int, frame_ids: list[int], device: torch.device | str,
                    num_classes: int = 0, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch shaped like the data module's (docs/ARCHITECTURE.md): smooth images shifted frame to
    frame so the losses are typical, KITTI-like intrinsics and, with ``num_classes``, blocky label maps
    (``labels/{f}``, int64) with classes 0 and 1 along the bottom like a road and sidewalk."""
    g = torch.Generator().manual_seed(seed)
    base = F.interpolate(torch.rand(batch_size, 3, max(height // 8, 1), max(width // 8, 1), generator=g),
                         size=(height, width), mode="bilinear", align_corners=False)
    labels = None
    if num_classes > 0:
        coarse = torch.randint(0, num_classes, (batch_size, 1, max(height // 16, 1), max(width // 16, 1)), generator=g)
        labels = F.interpolate(coarse.float(), size=(height, width), mode="nearest")[:, 0].long()
        labels[:, (2 * height) // 3:] = torch.arange(width).lt(width // 2).long() if num_classes > 1 else 0
    batch = {}
    for i, f in enumerate(frame_ids):
        image = torch.roll(base, shifts=2 * i, dims=3).contiguous().to(device)
        batch[f"image/{f}"] = image
        batch[f"image_aug/{f}"] = image
        if labels is not None:
            batch[f"labels/{f}"] = torch.roll(labels, shifts=2 * i, dims=2).contiguous().to(device)
    K = geometry.intrinsics_matrix(0.58 * width, 1.92 * height, 0.5 * width, 0.5 * height)
    batch["K"] = K.expand(batch_size, 4, 4).contiguous().to(device)
    batch["inv_K"] = torch.linalg.inv(K).expand(batch_size, 4, 4).contiguous().to(device)
    return batch


def bench_config(name: str, height: int, width: int, batch_size: int, num_classes: int | None = None,
                 overrides: list[str] | None = None) -> Config:
    """A shipped (or given) config at ``height x width`` and ``batch_size``, refinement on from the first
    step. ``num_classes`` replaces the config's class count (a SemHint config's upright classes are
    moved below it when they would not exist)."""
    extra = [f"data.height={height}", f"data.width={width}", f"optim.batch_size={batch_size}",
             "optim.pose_warmup_steps=0", "refine.warmup_epochs=0"]
    if num_classes is not None:
        extra.append(f"model.num_classes={num_classes}")
    cfg = load_config(name, extra + list(overrides or []))
    classes = cfg.model.num_classes
    if classes and (cfg.refine.hint or cfg.refine.pseudo_seg):
        kept = [c for c in cfg.refine.upright_classes if c < classes]
        upright = kept or [c for c in range(classes) if c not in cfg.refine.stuff_classes][-2:]
        stuff = [c for c in cfg.refine.stuff_classes if c < classes]
        if upright != list(cfg.refine.upright_classes) or stuff != list(cfg.refine.stuff_classes):
            cfg = load_config(name, extra + list(overrides or []) + [f"refine.upright_classes={upright}",
                                                                     f"refine.stuff_classes={stuff}"])
    return cfg


def autocast(device: torch.device, bf16: bool):
    """``torch.autocast(bfloat16)`` on ``device`` (what ``trainer.precision=bf16-mixed`` runs), or nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def to_channels_last(batch: dict) -> dict:
    return {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for k, v in batch.items()}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------
# what is timed
# ----------------------------------------------------------------------------------------------
class TrainStep:
    """One optimiser step of the real training objective: ``module.objective``, backward, Adam.

    ``compile_objective`` wraps the objective in ``torch.compile`` (``trainer.compile``); its first
    call compiles, so time it with :func:`first_call_seconds` before timing the steps.
    """

    def __init__(self, cfg: Config, device: torch.device | str, bf16: bool = False, channels_last: bool = False,
                 compile_objective: bool = False, compile_backend: str = "inductor", seed: int = 0):
        self.device, self.bf16 = torch.device(device), bf16
        self.batch_size = cfg.optim.batch_size
        torch.manual_seed(seed)  # the same weights, hence the same work, on every run
        self.module = SemHintModule(cfg).to(self.device).train()
        self.optimizer = self.module.configure_optimizers()["optimizer"]
        self.batch = synthetic_batch(cfg.data.height, cfg.data.width, cfg.optim.batch_size, cfg.data.frame_ids,
                                     self.device, cfg.model.num_classes)
        if channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
            self.batch = to_channels_last(self.batch)
        self.objective = (torch.compile(self.module.objective, backend=compile_backend) if compile_objective
                          else self.module.objective)

    def __call__(self) -> None:
        with autocast(self.device, self.bf16):
            losses, _, _ = self.objective(self.batch)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        self.optimizer.step()


class DepthForward:
    """One forward of the depth net alone (a batch of ``batch_size`` images) in eval mode.

    ``mode``: ``inference_mode`` or ``no_grad``.
    """

    def __init__(self, cfg: Config, device: torch.device | str, batch_size: int = 1, bf16: bool = False,
                 channels_last: bool = False, mode: str = "inference_mode", seed: int = 0):
        self.device, self.bf16 = torch.device(device), bf16
        torch.manual_seed(seed)
        self.net = SemHintModule(cfg).depth_net.to(self.device).eval()
        self.x = torch.rand(batch_size, 3, cfg.data.height, cfg.data.width, device=self.device)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.guard = torch.inference_mode if mode == "inference_mode" else torch.no_grad

    def __call__(self) -> None:
        with self.guard(), autocast(self.device, self.bf16):
            self.net(self.x)


# ----------------------------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------------------------
def first_call_seconds(fn: Callable[[], None], device: torch.device) -> float:
    """Seconds of one call (for a compiled step: compilation plus the first step)."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def time_interleaved(fns: dict, device: torch.device, repeats: int, warmup: int) -> dict:
    """Median seconds per call of each function, calling them round-robin (one of each per round).

    Interleaving spreads any change in machine load over all of them alike, so their ratios stay
    meaningful on a shared machine where absolute times drift.
    """
    times: dict = {name: [] for name in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def time_calls(fn: Callable[[], None], device: torch.device, repeats: int, warmup: int,
               max_seconds: float | None = None) -> tuple[float, int]:
    """(median seconds per call, calls timed): ``warmup`` untimed calls, then up to ``repeats`` timed
    ones, stopping early (after at least one) once ``max_seconds`` of timed calls have passed."""
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    while len(times) < repeats and not (max_seconds is not None and times and sum(times) >= max_seconds):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float | None:
    """Peak GPU memory allocated by tensors since :func:`reset_peak_memory` (GiB); None off the GPU,
    where no per-measurement peak is kept."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


class BudgetExceeded(Exception):
    """The benchmark's overall time budget ran out in the middle of a measurement."""


class TimeBudget:
    """A hard wall-clock budget for a whole benchmark.

    ``left()`` says how many seconds remain; inside ``with budget.hard_stop():`` a SIGALRM raises
    :class:`BudgetExceeded` when the budget runs out, even in the middle of a long call (a
    ``torch.compile`` that takes minutes), so a benchmark can record what it has and stop on time.
    ``reserve_s`` is kept back for writing the results.
    """

    def __init__(self, seconds: float, reserve_s: float = 5.0, start: float | None = None):
        self.seconds, self.reserve_s = float(seconds), float(reserve_s)
        self.start = time.monotonic() if start is None else start  # a ``time.monotonic()`` reading

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.seconds - self.reserve_s - self.elapsed()

    @contextlib.contextmanager
    def hard_stop(self) -> Iterator[None]:
        left = self.left()
        if left <= 0:
            raise BudgetExceeded(f"the {self.seconds:g} s budget is spent")
        if not hasattr(signal, "SIGALRM"):  # no alarms (Windows): the checks between measurements remain
            yield
            return

        def _raise(signum, frame):
            raise BudgetExceeded(f"the {self.seconds:g} s budget ran out")

        previous = signal.signal(signal.SIGALRM, _raise)
        signal.setitimer(signal.ITIMER_REAL, left)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


def bench_size(text: str) -> tuple[int, int]:
    """argparse type for the benchmarks' sizes: '192x640' -> (192, 640), multiples of 32 and at least 64
    (the plain reference's decoder needs them)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r}: expected HxW, e.g. 192x640") from None
    if h % 32 or w % 32 or min(h, w) < 64:
        raise argparse.ArgumentTypeError(f"size {text!r}: height and width must be multiples of 32 and at least 64")
    return h, w
