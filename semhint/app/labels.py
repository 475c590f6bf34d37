"""`semhint labels corrupt|train|predict`: noisy label maps, from damaged ground truth or from a small
segmentation model fitted on labelled frames, each with its mIoU where ground truth exists.
"""

from __future__ import annotations

import argparse

from semhint.core.config import parse_size
from semhint.core.errors import InputError
from semhint.labelmaker.corrupt import corrupt_label_dir, default_class_set
from semhint.labelmaker.labeler import choose_encoder, format_scores, format_summary, predict_labels, train_labeler


def corrupt(args: argparse.Namespace) -> None:
    classes = args.classes or default_class_set(args.gt)
    report = corrupt_label_dir(args.gt, args.out, args.strength, args.seed, classes)
    print(f"wrote {report['files']} noisy {classes} label maps to {args.out} (strength {args.strength}, "
          f"seed {args.seed}): mIoU vs ground truth = {report['miou']:.4f}")


def parse_scale_range(text: str) -> tuple[float, float]:
    """'MIN,MAX' (e.g. '1,1.5') to a pair of floats; a single number means that scale only."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 2
    if len(values) != 2:
        raise InputError(f"--scale {text!r}: expected MIN,MAX, e.g. 1,1.5")
    return values[0], values[1]


def train(args: argparse.Namespace) -> None:
    encoder, pretrained, note = choose_encoder(args.encoder, args.pretrained)
    if note:
        print(note)
    summary = train_labeler(args.images, args.labels, args.out, args.classes, parse_size(args.size), args.steps,
                            args.frames, args.batch_size, args.lr, encoder, pretrained, args.gt_labels,
                            seed=args.seed, test_images=args.test_images, test_labels=args.test_labels,
                            scale_range=parse_scale_range(args.scale))
    print(f"labeler saved to {args.out}: trained on {summary['frames']} frames, {args.steps} steps, "
          f"{summary['seconds']} s ({summary['seconds_per_step']} s/step), final loss {summary['final_loss']:.3f}")
    if "eval" in summary:
        print("held-out frames: " + format_scores(summary["eval"]))
    if "test" in summary:
        print("test set: " + format_scores(summary["test"]))


def predict(args: argparse.Namespace) -> None:
    summary = predict_labels(args.model, args.data_path, args.out, args.gt_labels, args.batch_size,
                             preview=args.preview, preview_frames=args.preview_frames, source_ids=args.source_ids)
    print(f"{summary['ids']} labels written to {args.out}: " + format_summary(summary).replace("\n", "; "))
    if "eval" in summary:
        print(f"per-class IoU ({summary['eval']['ids']} ids): " + format_scores(summary["eval"]).split(": ", 1)[1])
    if args.preview:
        print(f"preview: {args.preview}")
