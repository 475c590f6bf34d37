"""Making noisy labels the way a user would (METHOD.md, 'Noisy labels'): `semhint labels train|predict`.

``train_labeler`` fits the project's encoder + decoder (all decoder layers shared, segmentation
head only) on a handful of labelled frames with flip / scale-crop / colour-jitter augmentation and
writes an atomic checkpoint that carries its class set and input size. ``predict_labels`` runs
it over every frame of a dataset and writes a label PNG per frame in the mirrored layout
(same relative path as the image, ``.png``). Where ground truth exists, both report mIoU: that
number is the noise level of the labels the depth training will see.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from semhint.core import conventions
from semhint.core.config import ModelConfig
from semhint.core.conventions import IGNORE_INDEX, IMAGE_SUFFIXES
from semhint.core.fileio import (
    InputError,
    atomic_path,
    read_label_png,
    read_rgb,
    save_image,
    write_json,
    write_label_png,
)
from semhint.core.pictures import colorize_labels
from semhint.core.version import __version__
from semhint.data.frames import mirrored_path
from semhint.evaluation.metrics import confusion_matrix, segmentation_summary
from semhint.losses import cross_entropy
from semhint.models.labeler import Labeler, labeler_model_config

CHECKPOINT_KIND = "semhint-labeler"


# ----------------------------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------------------------
def list_images(root: str | Path) -> list[Path]:
    """Every image file under ``root`` (recursive, sorted, hidden files skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: image folder not found")
    images = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                    and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not images:
        raise InputError(f"{root}: no images (.png/.jpg) found")
    return images


def labelled_pairs(images_root: str | Path, labels_root: str | Path) -> list[tuple[Path, Path]]:
    """(image, label map) for every image that has a mirrored label PNG under ``labels_root``."""
    labels_root = Path(labels_root)
    if not labels_root.is_dir():
        raise InputError(f"{labels_root}: label folder not found")
    pairs = [(img, mirrored_path(labels_root, img, images_root)) for img in list_images(images_root)]
    pairs = [(img, lab) for img, lab in pairs if lab.is_file()]
    if not pairs:
        raise InputError(f"{labels_root}: no label PNG mirrors an image of {images_root} (same relative path, .png)")
    return pairs


def pick_evenly(items: Sequence, count: int) -> list:
    """``count`` items spread evenly over the sequence (the frames a user would label: varied scenes)."""
    if count <= 0 or count >= len(items):
        return list(items)
    idx = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[i] for i in sorted(set(idx.tolist()))]


def class_names(classes: str) -> list[str]:
    """Class names of ``classes``: a named set of semhint.data.labels (``cityscapes``, ``tissue``),
    a comma-separated list of names (``road,car,sky``) or a class count (``5``)."""
    spec = classes.strip()
    if "," in spec:
        names = [n.strip() for n in spec.split(",")]
        if not all(names):
            raise InputError(f"--classes {classes!r}: empty class name in the list")
    elif spec.isdigit():
        names = [f"class_{i}" for i in range(int(spec))]
    else:
        names = list(conventions.class_names(spec))
    if not 1 <= len(names) <= 254:
        raise InputError(f"--classes {classes!r}: need 1..254 classes (255 is the ignore label), got {len(names)}")
    return names


def _load_image(path: Path, size: tuple[int, int]) -> torch.Tensor:
    """3 x H x W float in [0, 1] at the network size (area-filtered down, bilinear up)."""
    rgb = torch.tensor(read_rgb(path)).permute(2, 0, 1).float().div(255.0)
    return F.interpolate(rgb[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def _load_labels(path: Path, size: tuple[int, int] | None, num_classes: int) -> torch.Tensor:
    """H x W int64 labels (nearest resize); classes outside the set are an InputError naming the file."""
    lab = read_label_png(path)
    bad = (lab != IGNORE_INDEX) & (lab >= num_classes)
    if bad.any():
        raise InputError(f"{path}: label {int(lab[bad][0])} outside the class set 0..{num_classes - 1} (255 = ignore)")
    if size is not None and lab.shape != tuple(size):
        lab = np.asarray(Image.fromarray(lab).resize((size[1], size[0]), Image.NEAREST))
    return torch.from_numpy(lab.astype(np.int64))


# ----------------------------------------------------------------------------------------------
# augmentation (whole batch on tensors; labels follow the geometry, not the colour)
# ----------------------------------------------------------------------------------------------
def augment(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator, max_scale: float = 1.5,
            jitter: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Random horizontal flip, scale-up-and-crop back to the input size, colour jitter."""
    b, _, h, w = images.shape
    out_img, out_lab = [], []
    for i in range(b):
        img, lab = images[i:i + 1], labels[i:i + 1, None].float()
        if torch.rand((), generator=generator) < 0.5:
            img, lab = img.flip(-1), lab.flip(-1)
        s = 1.0 + (max_scale - 1.0) * torch.rand((), generator=generator).item()
        sh, sw = max(h, round(h * s)), max(w, round(w * s))
        img = F.interpolate(img, size=(sh, sw), mode="bilinear", align_corners=False)
        lab = F.interpolate(lab, size=(sh, sw), mode="nearest")
        y0 = int(torch.randint(0, sh - h + 1, (), generator=generator))
        x0 = int(torch.randint(0, sw - w + 1, (), generator=generator))
        out_img.append(img[..., y0:y0 + h, x0:x0 + w])
        out_lab.append(lab[..., y0:y0 + h, x0:x0 + w])
    images, labels = torch.cat(out_img), torch.cat(out_lab)[:, 0].long()
    return colour_jitter(images, generator, jitter), labels


def colour_jitter(images: torch.Tensor, generator: torch.Generator, strength: float = 0.2) -> torch.Tensor:
    """Per-image brightness, contrast and saturation factors in [1 - strength, 1 + strength]."""
    b = images.shape[0]

    def factor() -> torch.Tensor:
        return (1 + strength * (2 * torch.rand(b, 1, 1, 1, generator=generator) - 1)).to(images)

    images = images * factor()
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = (images - mean) * factor() + mean
    gray = images.mean(1, keepdim=True)
    images = (images - gray) * factor() + gray
    return images.clamp(0, 1)


# ----------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------
def save_labeler(path: str | Path, model: Labeler, classes: str, names: list[str], size: tuple[int, int],
                 extra: dict) -> None:
    """Atomic checkpoint: weights + everything needed to use them (no YAML needed later)."""
    state = {"kind": CHECKPOINT_KIND, "semhint_version": __version__, "model": asdict(model.cfg),
             "classes": classes, "class_names": names, "size": list(size),
             "state_dict": model.state_dict(), **extra}
    with atomic_path(path, suffix=".tmp") as tmp:
        torch.save(state, tmp)


def load_labeler(path: str | Path, device: str | torch.device = "cpu") -> tuple[Labeler, dict]:
    """(model in eval mode, checkpoint metadata) from a `labels train` checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: labeler checkpoint not found (make one with `semhint labels train`)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated zip, pickle errors: all mean 'not a checkpoint'
        raise InputError(f"{path}: cannot read checkpoint ({exc.__class__.__name__})") from None
    if not isinstance(state, dict) or state.get("kind") != CHECKPOINT_KIND:
        raise InputError(f"{path}: not a labeler checkpoint from `semhint labels train`")
    cfg = ModelConfig(**{**state["model"], "pretrained": ""})  # the weights are in the checkpoint
    model = Labeler(cfg)
    model.load_state_dict(state["state_dict"])
    meta = {k: v for k, v in state.items() if k != "state_dict"}
    return model.to(device).eval(), meta


# ----------------------------------------------------------------------------------------------
# evaluation (mIoU = the noise level of the labels)
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def predict_batch(model: Labeler, images: torch.Tensor, out_sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """Labels (uint8 H x W at each image's own size) for a batch of network-size images."""
    logits = model(images)
    out = []
    for i, size in enumerate(out_sizes):
        li = logits[i:i + 1]
        if tuple(li.shape[-2:]) != tuple(size):
            li = F.interpolate(li, size=size, mode="bilinear", align_corners=False)
        out.append(li.argmax(1)[0].to(torch.uint8).cpu().numpy())
    return out


class ConfusionAccumulator:
    """Running confusion matrix, so mIoU over thousands of frames never holds them all in memory."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.conf = np.zeros((len(names), len(names)), dtype=np.int64)
        self.frames = 0

    def add(self, gt: np.ndarray, pred: np.ndarray) -> None:
        if gt.shape != pred.shape:
            pred = np.asarray(Image.fromarray(pred).resize((gt.shape[1], gt.shape[0]), Image.NEAREST))
        self.conf += confusion_matrix(gt, pred, len(self.names))
        self.frames += 1

    def summary(self) -> dict:
        return {**segmentation_summary(self.conf, self.names), "frames": self.frames}


def _iterate_batches(paths: Sequence[Path], size: tuple[int, int], batch_size: int):
    """(paths, network-size images, original sizes) in batches."""
    for start in range(0, len(paths), batch_size):
        chunk = list(paths[start:start + batch_size])
        imgs, sizes = [], []
        for p in chunk:
            rgb = torch.tensor(read_rgb(p)).permute(2, 0, 1).float().div(255.0)
            sizes.append(tuple(rgb.shape[-2:]))
            imgs.append(F.interpolate(rgb[None], size=size, mode="bilinear", align_corners=False, antialias=True))
        yield chunk, torch.cat(imgs), sizes


def evaluate_labeler(model: Labeler, images: Sequence[Path], images_root: Path, gt_root: Path, names: list[str],
                     size: tuple[int, int], batch_size: int = 4) -> dict:
    """mIoU of the labeler's predictions against the GT maps mirroring ``images``."""
    acc = ConfusionAccumulator(names)
    pairs = [(img, mirrored_path(gt_root, img, images_root)) for img in images]
    gts = {img: gt for img, gt in pairs if gt.is_file()}
    for chunk, batch, sizes in _iterate_batches(list(gts), size, batch_size):
        for img, pred in zip(chunk, predict_batch(model, batch, sizes)):
            acc.add(_load_labels(gts[img], None, len(names)).numpy(), pred)
    return acc.summary()


# ----------------------------------------------------------------------------------------------
# the two commands
# ----------------------------------------------------------------------------------------------
def train_labeler(images: str | Path, labels: str | Path, out: str | Path, classes: str = "cityscapes",
                  size: tuple[int, int] = (96, 320), steps: int = 300, frames: int = 16, batch_size: int = 4,
                  lr: float = 1e-3, encoder: str = "resnet18", pretrained: str = "", gt_labels: str | Path | None = None,
                  eval_frames: int = 50, seed: int = 0, progress: bool = True) -> dict:
    """Fit a labeler on ``frames`` labelled frames (evenly spread) and save it to ``out``.

    Returns a summary (frames used, final loss, seconds, and with ``gt_labels`` the mIoU on up to
    ``eval_frames`` held-out frames that have ground truth: the noise level of its labels).
    """
    if steps < 1 or batch_size < 1:
        raise InputError(f"labels train: --steps and --batch-size must be >= 1, got {steps}, {batch_size}")
    if size[0] < 32 or size[1] < 32:
        raise InputError(f"labels train: --size must be at least 32x32, got {size[0]}x{size[1]}")
    if batch_size * (size[0] // 32) * (size[1] // 32) < 2:  # batch norm needs two values at the stride-32 bottleneck
        raise InputError(f"labels train: --size {size[0]}x{size[1]} with --batch-size {batch_size} is too small "
                         "(use a larger size or batch)")
    images, out = Path(images), Path(out)
    names = class_names(classes)
    pairs = pick_evenly(labelled_pairs(images, labels), frames)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    data_img = torch.stack([_load_image(img, size) for img, _ in pairs])
    data_lab = torch.stack([_load_labels(lab, size, len(names)) for _, lab in pairs])
    if not (data_lab != IGNORE_INDEX).any():
        raise InputError(f"{labels}: every pixel of the chosen label maps is 255 (ignore); nothing to learn from")

    model = Labeler(labeler_model_config(len(names), encoder, pretrained)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    start, loss_avg = time.time(), float("nan")
    bar = tqdm(range(steps), desc="labels train", unit="step", disable=not progress, dynamic_ncols=True)
    for _ in bar:
        idx = torch.randint(0, len(pairs), (batch_size,), generator=gen)
        x, y = augment(data_img[idx], data_lab[idx], gen)
        loss = cross_entropy(model(x), y, IGNORE_INDEX)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_avg = loss.item() if math.isnan(loss_avg) else 0.9 * loss_avg + 0.1 * loss.item()
        bar.set_postfix(loss=f"{loss_avg:.3f}")
    model.eval()
    summary = {"frames": len(pairs), "train_frames": [str(img.relative_to(images)) for img, _ in pairs],
               "steps": steps, "final_loss": loss_avg, "seconds": round(time.time() - start, 1)}
    if gt_labels:
        used = {img for img, _ in pairs}
        held_out = pick_evenly([p for p in list_images(images) if p not in used], eval_frames)
        summary["eval"] = evaluate_labeler(model, held_out, images, Path(gt_labels), names, size, batch_size)
    save_labeler(out, model, classes, names, size, {"train": summary})
    return summary


def colour_labels(labels: np.ndarray, classes: str, num_classes: int) -> np.ndarray:
    """H x W x 3 uint8: the named class set's palette, or matplotlib's tab20 for ad-hoc class lists."""
    try:
        return colorize_labels(labels, conventions.get_class_set(classes))
    except InputError:
        return colorize_labels(labels, num_classes)


def write_preview(path: str | Path, rows: list[list[np.ndarray]]) -> None:
    """A PNG grid: one row per frame (image | predicted labels | ground truth when present)."""
    h, w = rows[0][0].shape[:2]
    width = max(len(r) for r in rows) * w
    lines = []
    for r in rows:
        tiles = [np.asarray(Image.fromarray(t).resize((w, h), Image.NEAREST)) for t in r]
        line = np.concatenate(tiles, axis=1)
        lines.append(np.pad(line, ((0, 0), (0, width - line.shape[1]), (0, 0))))
    save_image(path, np.concatenate(lines, axis=0))


def predict_labels(model_path: str | Path, data_path: str | Path, out: str | Path,
                   gt_labels: str | Path | None = None, batch_size: int = 4, progress: bool = True,
                   preview: str | Path | None = None) -> dict:
    """Write a label PNG for every image under ``data_path`` into ``out`` (mirrored layout).

    With ``gt_labels`` (a root mirroring ``data_path``), also report mIoU over the frames that
    have ground truth. A summary (including the checkpoint and the mIoU) is written to
    ``out/labels_info.json`` so the label folder records where it came from. ``preview`` writes
    a PNG of four frames spread over the data: image | labels (| ground truth).
    """
    model, meta = load_labeler(model_path)
    data_path, out = Path(data_path), Path(out)
    size = tuple(meta["size"])
    names = list(meta["class_names"])
    paths = list_images(data_path)
    acc = ConfusionAccumulator(names) if gt_labels else None
    shown, preview_rows = set(pick_evenly(paths, 4)) if preview else set(), []
    start = time.time()
    bar = tqdm(total=len(paths), desc="labels predict", unit="frame", disable=not progress, dynamic_ncols=True)
    for chunk, batch, sizes in _iterate_batches(paths, size, batch_size):
        for img, pred in zip(chunk, predict_batch(model, batch, sizes)):
            write_label_png(mirrored_path(out, img, data_path), pred)
            gt = mirrored_path(gt_labels, img, data_path) if gt_labels else None
            gt_map = _load_labels(gt, None, len(names)).numpy().astype(np.uint8) if gt and gt.is_file() else None
            if acc is not None and gt_map is not None:
                acc.add(gt_map, pred)
            if img in shown:
                preview_rows.append([read_rgb(img), colour_labels(pred, meta["classes"], len(names))]
                                    + ([] if gt_map is None else [colour_labels(gt_map, meta["classes"], len(names))]))
        bar.update(len(chunk))
    bar.close()
    if preview_rows:
        write_preview(preview, preview_rows)
    summary = {"model": str(model_path), "classes": meta["classes"], "frames": len(paths),
               "seconds": round(time.time() - start, 1)}
    if acc is not None:
        summary["eval"] = acc.summary()
    write_json(out / "labels_info.json", summary)
    return summary


def format_summary(summary: dict) -> str:
    """One or two human lines for the CLI."""
    lines = [f"{summary['frames']} frames in {summary['seconds']} s"]
    ev = summary.get("eval")
    if ev:
        lines.append(f"mIoU vs ground truth: {100 * ev['miou']:.1f} % over {ev['frames']} frames "
                     f"(pixel accuracy {100 * ev['pixel_accuracy']:.1f} %)")
    return "\n".join(lines)
