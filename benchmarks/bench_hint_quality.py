"""Are the semantic hints better than the depth they replace? Measured on a TRAINED model's test depth.

For a trained run (its config.yaml and checkpoints/last.ckpt) and a rendered synthetic dataset,
this predicts depth and pose on the test snippets, applies each hint operator (alone and in the
combinations the configs use) with the segments taken from the ground-truth labels and from a noisy
label folder (and, for a run with a segmentation branch, from the branch's own prediction: the
segments training takes its hints from), and reports, on the pixels each operator changes and on
those the Depth Hints gate then accepts: how many there are, and the AbsRel against exact depth of
the prediction and of the hint (both scaled by the prediction's per-image median ratio). A hint
operator is only worth training on where its hint column beats its prediction column. The
diagnostic operator "oracle" (the ground truth scaled to the prediction) shows how many pixels the
gate would let a perfect hint train.

    python benchmarks/bench_hint_quality.py --run RUN --data runs/semhint_bench/drive --labels corrupt0.5
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _results import markdown_table, write_section  # noqa: E402

from semhint import losses, refine  # noqa: E402
from semhint.core import geometry
from semhint.core.config import load_config  # noqa: E402

OPERATOR_SETS = (["smooth"], ["surface"], ["border"], ["contact"], ["smooth", "contact"], ["contact", "surface"],
                 ["facade"], ["contact", "surface", "facade"], ["oracle"])
CAR, ROAD, BUILDING = 13, 0, 2


def load_run(run: Path, data: Path, labels: str, split: str):
    """(module in eval mode, validation-style dataset of the split with noisy and GT labels)."""
    from semhint.data.build import build_dataset
    from semhint.training import SemHintModule

    cfg = load_config(run / "config.yaml")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(
        cfg.data, val_split=str(data / "splits" / f"{split}.txt"), labels=str(data / labels),
        gt_labels=str(data / "gt_labels"), gt_depth=str(data / "gt_depth")))
    module = SemHintModule(cfg)
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state, strict=False)  # a baseline checkpoint has no branch: nothing else differs
    return module.eval(), build_dataset(cfg.data, "val"), cfg


def _abs_rel_sums(pred: torch.Tensor, hint: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """[pixels, sum of prediction AbsRel, sum of hint AbsRel] over ``mask``, per-image median scaling."""
    out = np.zeros(3)
    for b in range(gt.shape[0]):
        valid = gt[b] > 0
        sel = valid & mask[b]
        if not sel.any():
            continue
        scale = gt[b][valid].median() / pred[b][valid].median().clamp_min(1e-6)
        out += [int(sel.sum()), float(((pred[b][sel] * scale - gt[b][sel]).abs() / gt[b][sel]).sum()),
                float(((hint[b][sel] * scale - gt[b][sel]).abs() / gt[b][sel]).sum())]
    return out


def moving_masks(dataset, data: Path, indices: range) -> torch.Tensor | None:
    """B x 1 x H x W bool of the renderer's independently moving pixels, or None without gt_dynamic/."""
    from semhint.data.frames import mirrored_path
    from semhint.core.fileio import read_label_png

    paths = [mirrored_path(data / "gt_dynamic", dataset.frames[i].target, dataset.frames[i].data_root) for i in indices]
    if not all(p.is_file() for p in paths):
        return None
    return torch.stack([torch.from_numpy(read_label_png(p) > 0) for p in paths]).unsqueeze(1)


def measure(module, dataset, cfg, upright: list[int], data: Path, batch_size: int = 8,
            surface_band: float = 0.0, surface_order: int | None = None, surface_inlier: float | None = None,
            max_ratio: float = 0.0) -> list[dict]:
    from semhint.training import collate_snippets, predict_poses

    sums: dict[tuple, np.ndarray] = {}
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            indices = range(start, min(start + batch_size, len(dataset)))
            batch = collate_snippets([dataset[i] for i in indices])
            moving = moving_masks(dataset, data, indices)
            image = batch["image/0"]
            outputs = module.depth_net(image)
            disp = outputs["disp/0"]
            _, depth = geometry.disp_to_depth(F.interpolate(disp, size=image.shape[-2:], mode="bilinear",
                                                            align_corners=False), cfg.model.min_depth, cfg.model.max_depth)
            poses = predict_poses(module.pose_net, batch, cfg.data.frame_ids)
            pred_err = refine.reprojection_error(depth, batch, poses, cfg.loss.ssim_weight)
            identity = torch.cat([losses.photometric_error(batch[f"image/{f}"], image, cfg.loss.ssim_weight)
                                  for f in poses], 1)
            _, automask = losses.min_reprojection(pred_err, identity)
            gt = F.interpolate(batch["depth_gt"].float(), size=depth.shape[-2:], mode="nearest")
            gt_labels = batch["gt_labels/0"].long()
            sources = [("ground truth", gt_labels), ("noisy", batch["labels/0"].long())]
            if "seg/0" in outputs:  # a SemHint run: the segments training takes the hints from
                sources.append(("branch", outputs["seg/0"].argmax(1)))
            for source, labels in sources:
                for ops in OPERATOR_SETS:
                    rcfg = dataclasses.replace(cfg.refine, hint_operators=ops, upright_classes=upright,
                                               surface_band=surface_band)
                    if surface_order is not None:
                        rcfg = dataclasses.replace(rcfg, surface_order=surface_order)
                    if surface_inlier is not None:
                        rcfg = dataclasses.replace(rcfg, surface_inlier=surface_inlier)
                    hint = refine.make_depth_hint(depth, labels, image, batch["K"], rcfg, depth_gt=batch["depth_gt"],
                                                  generator=torch.Generator().manual_seed(start))
                    if max_ratio > 0:  # training's trust region (refine.hint_max_ratio)
                        hint = refine.trust_region(hint, depth, max_ratio, cfg.model.min_depth, cfg.model.max_depth)
                    changed = (hint - depth).abs() > 1e-3 * depth
                    hint_err = refine.reprojection_error(hint, batch, poses, cfg.loss.ssim_weight)
                    gate = refine.hint_gate(hint_err, pred_err) & changed
                    on_masked = refine.hint_gate(hint_err, pred_err, automask, on_masked=True) & changed
                    car, road = (gt_labels == CAR).unsqueeze(1), (gt_labels == ROAD).unsqueeze(1)
                    building = (gt_labels == BUILDING).unsqueeze(1)
                    groups = [("changed", changed), ("gated", gate), ("gated or auto-masked", on_masked),
                              ("changed, car", changed & car), ("gated, car", gate & car),
                              ("gated or auto-masked, car", on_masked & car), ("changed, road", changed & road),
                              ("gated, road", gate & road), ("changed, building", changed & building),
                              ("gated, building", gate & building)]
                    if moving is not None and moving.shape[-2:] == car.shape[-2:]:
                        groups += [("changed, car moving", changed & car & moving),
                                   ("changed, car parked", changed & car & ~moving)]
                    for where, mask in groups:
                        key = ("+".join(ops), source, where)
                        sums[key] = sums.get(key, np.zeros(4)) + np.r_[_abs_rel_sums(depth, hint, gt, mask),
                                                                       int((gt > 0).sum())]
    rows = []
    for (ops, source, where), (n, pred_sum, hint_sum, total) in sums.items():
        rows.append({"operators": ops, "labels": source, "pixels": where, "share of valid": n / max(total, 1),
                     "prediction AbsRel": pred_sum / max(n, 1) if n else "", "hint AbsRel": hint_sum / max(n, 1) if n else ""})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="trained run folder (config.yaml, checkpoints/last.ckpt)")
    parser.add_argument("--data", required=True, type=Path, help="rendered SynthDrive root (splits/, gt_labels/, gt_depth/)")
    parser.add_argument("--labels", default="corrupt0.5", help="noisy label folder under --data")
    parser.add_argument("--split", default="test")
    parser.add_argument("--upright", default="5,13", help="operator D's upright classes")
    parser.add_argument("--surface-band", type=float, default=0.0, help="operator B's refine.surface_band (0: off)")
    parser.add_argument("--surface-order", type=int, default=None,
                        help="refine.surface_order for B and D (default: the run's; 0 = level ground plane)")
    parser.add_argument("--surface-inlier", type=float, default=None,
                        help="refine.surface_inlier, RANSAC's relative inlier threshold (default: the run's)")
    parser.add_argument("--max-ratio", type=float, default=0.0,
                        help="clamp hints to training's trust region refine.hint_max_ratio (0: off, as before)")
    parser.add_argument("--key", default="hint_quality_trained")
    parser.add_argument("--title", default="", help="section title (default names operator D's classes)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for path in (args.run / "config.yaml", args.run / "checkpoints" / "last.ckpt", args.data / "splits" / f"{args.split}.txt"):
        if not path.is_file():
            raise SystemExit(f"{path}: not found")
    module, dataset, cfg = load_run(args.run, args.data, args.labels, args.split)
    rows = measure(module, dataset, cfg, [int(c) for c in args.upright.split(",")], args.data,
                   surface_band=args.surface_band, surface_order=args.surface_order, surface_inlier=args.surface_inlier, max_ratio=args.max_ratio)
    for r in rows:
        print(r, flush=True)
    command = (f"python benchmarks/bench_hint_quality.py --run {args.run} --data {args.data} --labels {args.labels} "
               f"--split {args.split} --upright {args.upright} --surface-band {args.surface_band} --key {args.key}"
               + (f" --surface-order {args.surface_order}" if args.surface_order is not None else "")
               + (f" --surface-inlier {args.surface_inlier}" if args.surface_inlier is not None else "")
               + (f" --max-ratio {args.max_ratio}" if args.max_ratio else "")
               + (f" --title {shlex.quote(args.title)}" if args.title else ""))
    body = (f"The trained run `{args.run}` ({cfg.name}), its depth and pose on the {len(dataset)} {args.split} snippets of "
            f"`{args.data}`. Each operator set makes a hint from the predicted depth with the segments of the ground-truth "
            f"labels, of the noisy labels `{args.labels}` or (runs with a segmentation branch) of the branch's "
            "prediction; 'changed': pixels the operators moved (> 0.1 %), 'gated': "
            "those where the hint also reprojects better (the Depth Hints gate), 'gated or auto-masked': the gate with "
            "refine.hint_on_masked (pixels the auto-mask drops take the hint ungated); ', car' / ', road' / "
            "', building': those on cars / the road / buildings (ground-truth labels); ', car moving' / ', car parked' (renders with gt_dynamic/): car "
            "pixels that move on their own or not. "
            "Share of valid: fraction of pixels with ground truth. AbsRel against exact depth, both maps scaled by the "
            "prediction's per-image median ratio: where the hint column is lower, the operator corrects the trained "
            f"model. Operator D's upright classes: {args.upright}; operator B's band (refine.surface_band): "
            f"{args.surface_band or 'off'}; surface order (B and D; 0 = level ground plane): "
            f"{cfg.refine.surface_order if args.surface_order is None else args.surface_order}; RANSAC inlier threshold: "
            f"{cfg.refine.surface_inlier if args.surface_inlier is None else args.surface_inlier}; trust region "
            f"(refine.hint_max_ratio): {args.max_ratio or 'off'}.\n\n"
            + markdown_table(rows, ["operators", "labels", "pixels", "share of valid", "prediction AbsRel", "hint AbsRel"]))
    title = args.title or f"Hint quality on a trained model's depth (SynthDrive, operator D on classes {args.upright})"
    write_section(args.key, title, command, body,
                  {"run": str(args.run), "rows": rows})


if __name__ == "__main__":
    main()
