"""`semhint labels corrupt|train|predict`: noisy label maps, from damaged ground truth or from a small
segmentation model fitted on a handful of labelled frames, each with its mIoU where ground truth exists.
"""

from __future__ import annotations

import argparse

from semhint.core.config import parse_size
from semhint.labelmaker.corrupt import corrupt_label_dir, default_class_set
from semhint.labelmaker.labeler import format_summary, predict_labels, train_labeler


def corrupt(args: argparse.Namespace) -> None:
    classes = args.classes or default_class_set(args.gt)
    report = corrupt_label_dir(args.gt, args.out, args.strength, args.seed, classes)
    print(f"wrote {report['files']} noisy {classes} label maps to {args.out} (strength {args.strength}, "
          f"seed {args.seed}): mIoU vs ground truth = {report['miou']:.4f}")


def train(args: argparse.Namespace) -> None:
    summary = train_labeler(args.images, args.labels, args.out, args.classes, parse_size(args.size), args.steps,
                            args.frames, args.batch_size, args.lr, args.encoder, args.pretrained, args.gt_labels,
                            seed=args.seed)
    print(f"labeler saved to {args.out}: trained on {summary['frames']} frames, {args.steps} steps, "
          f"{summary['seconds']} s, final loss {summary['final_loss']:.3f}")
    if "eval" in summary:
        print(format_summary({**summary, "frames": summary["eval"]["frames"]}).splitlines()[-1])


def predict(args: argparse.Namespace) -> None:
    summary = predict_labels(args.model, args.data_path, args.out, args.gt_labels, args.batch_size,
                             preview=args.preview)
    print(f"labels written to {args.out}: " + format_summary(summary).replace("\n", "; "))
    if args.preview:
        print(f"preview: {args.preview}")
