"""Cost of cross-task refinement per training step on CPU: each operator and the whole refinement_losses.

Inputs are synthetic but shaped like a training step (batch 4, 19 classes in blocky segments, a
smooth depth map, two source frames, the real self-supervised objective for the maps). Reports the
median of --repeats runs in milliseconds. Usage:

    python benchmarks/bench_refine.py [--threads 1] [--repeats 3] [--sizes 96x320,192x640]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import time

import torch
import torch.nn.functional as F

from semhint import losses, refine
from semhint.core import geometry
from semhint.core.config import Config
from semhint.lab.records import markdown_table, write_record

NUM_CLASSES = 19


def make_step(h: int, w: int, batch: int, seed: int = 0):
    """batch, outputs, maps, poses, source_outputs, cfg for one fake training step."""
    g = torch.Generator().manual_seed(seed)
    cfg = Config()
    cfg.model.num_classes = NUM_CLASSES
    cfg.refine.hint = cfg.refine.pseudo_seg = True
    cfg.refine.hint_operators = ["smooth", "surface", "border"]
    cfg.refine.warmup_epochs = 0
    K = geometry.scale_intrinsics(geometry.intrinsics_matrix(0.58, 1.92, 0.5, 0.5), w, h)[None].repeat(batch, 1, 1)
    images = {f: F.interpolate(torch.rand(batch, 3, h // 8, w // 8, generator=g), size=(h, w), mode="bilinear")
              for f in (0, -1, 1)}
    batch_d = {**{f"image/{f}": im for f, im in images.items()}, "K": K, "inv_K": torch.linalg.inv(K)}
    poses = {}
    for f in (-1, 1):
        T = torch.eye(4).repeat(batch, 1, 1)
        T[:, 2, 3] = -0.5 * f
        poses[f] = T

    def logits() -> torch.Tensor:
        return F.interpolate(torch.randn(batch, NUM_CLASSES, h // 16, w // 16, generator=g) * 4, size=(h, w), mode="nearest")

    outputs = {f"disp/{s}": torch.sigmoid(F.interpolate(torch.randn(batch, 1, 4, 8, generator=g), size=(h >> s, w >> s),
                                                        mode="bilinear")).requires_grad_(True) for s in cfg.model.scales}
    outputs["seg/0"] = logits().requires_grad_(True)
    batch_d["labels/0"] = outputs["seg/0"].detach().argmax(1)
    _, maps = losses.self_supervised_objective(batch_d, outputs, poses, cfg)
    source_outputs = {f: {"seg/0": logits()} for f in (-1, 1)}
    return batch_d, outputs, maps, poses, source_outputs, cfg


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median (wall ms, process CPU ms): on a shared machine the CPU time is the steadier number."""
    fn()  # warm-up (allocator, first-call overheads)
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return 1000 * statistics.median(wall), 1000 * statistics.median(cpu)


def bench_size(h: int, w: int, batch: int, repeats: int) -> list[dict]:
    b, outputs, maps, poses, src, cfg = make_step(h, w, batch)
    r = cfg.refine
    depth = maps["depth/0"].detach()
    labels = outputs["seg/0"].detach().argmax(1)
    image = b["image/0"]
    probs = outputs["seg/0"].detach().softmax(1)
    travel = refine.camera_translation(poses)  # what the training step gives operators D and E

    def fuse_all() -> torch.Tensor:
        warped = [refine.warp_probabilities(s["seg/0"].softmax(1), depth, poses[f], b["K"], b["inv_K"])
                  for f, s in src.items()]
        return refine.fuse_probabilities(probs, [p for p, _ in warped], [v for _, v in warped])

    cases = {
        "A smooth (r=4, mean)": lambda: refine.segment_aware_smoothing(depth, labels, image, r.bilateral_radius,
                                                                       r.bilateral_sigma_color, r.bilateral_sigma_space,
                                                                       refine.texture_weight(image)),
        "A smooth (r=4, local-linear: make_depth_hint)": lambda: refine.segment_aware_smoothing(
            depth, labels, image, r.bilateral_radius, r.bilateral_sigma_color, r.bilateral_sigma_space,
            refine.texture_weight(image), local_linear=True),
        "B surface (RANSAC plane, 2 classes)": lambda: refine.segment_surface_fit(depth, labels, b["K"], r.stuff_classes),
        "C border (band 3)": lambda: refine.border_morphing(depth, labels),
        "D contact (RANSAC plane + walk to the foot)": lambda: refine.ground_contact(
            depth, labels, b["K"], r.stuff_classes, [5, 13], translation=travel),
        "E facade (ground plane + median per side and class)": lambda: refine.facade_planes(
            depth, labels, b["K"], r.facade_classes, r.stuff_classes, travel),
        "planar prior (loss.planar_weight) + backward": lambda: losses.planar_loss(
            outputs["disp/0"], labels, [0, 1, 2, 3]).backward(retain_graph=True),
        "gate: hint reprojection (2 sources)": lambda: refine.reprojection_error(depth, b, poses),
        "warp + fuse probabilities (2 sources)": fuse_all,
        "snap borders (band 2)": lambda: refine.snap_borders(labels, depth),
        "refinement_losses (A+B+C, gate, pseudo-seg)": lambda: refine.refinement_losses(b, outputs, maps, poses, src, cfg, 1),
        "refinement_losses + backward": lambda: refine.refinement_losses(b, outputs, maps, poses, src, cfg, 1)[0]["loss"]
        .backward(retain_graph=True),
    }
    rows = []
    for name, fn in cases.items():
        wall, cpu = timed(fn, repeats)
        rows.append({"size": f"{h}x{w}", "batch": batch, "what": name, "wall_ms": wall, "cpu_ms": cpu})
        print(f"{h}x{w} b{batch}  {name:<45} wall {wall:9.1f} ms  cpu {cpu:9.1f} ms", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--sizes", default="96x320,192x640")
    ap.add_argument("--no-write", action="store_true", help="print only; do not write the lab record")
    ap.add_argument("--key", default="refine", help="lab record to (re)write")
    ap.add_argument("--title", default="Cross-task refinement: cost per step (CPU)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for size in args.sizes.split(","):
        h, w = (int(v) for v in size.split("x"))
        rows += bench_size(h, w, args.batch, args.repeats)
    if args.no_write:
        return
    command = f"python benchmarks/bench_refine.py --threads {args.threads} --repeats {args.repeats} " \
              f"--batch {args.batch} --sizes {args.sizes}"
    body = ("Median wall and process-CPU time per call (torch threads = %d) on a synthetic step shaped like "
            "training: %d classes in blocky segments, two source frames, the real self-supervised objective "
            "for the maps. The machine was shared with other jobs: wall times are upper bounds, CPU times "
            "the steadier figure.\n\n" % (args.threads, NUM_CLASSES)) + markdown_table(
        rows, ["size", "batch", "what", "wall_ms", "cpu_ms"])
    if args.key != "refine" or args.title != "Cross-task refinement: cost per step (CPU)":
        command += f" --key {args.key} --title {shlex.quote(args.title)}"
    write_record(args.key, args.title, command, body, {"threads": args.threads, "repeats": args.repeats, "rows": rows})


if __name__ == "__main__":
    main()
