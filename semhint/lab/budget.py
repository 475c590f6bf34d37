"""Where is a trained model's depth error? Its AbsRel split by ground-truth class, pooled over runs.

A hint operator can only move the overall error as much as the pixels it touches carry. Per class:
its share of the valid pixels, its AbsRel, its log bias (negative: too near), its contribution to
the overall AbsRel (share x AbsRel; the contributions add up to the overall number) and its range
slope (below 1: the class's depth range is compressed). The sums come from the one evaluation
protocol (``evaluation.metrics.CLASS_SUMS``), so they pool exactly over seeds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from semhint.core.checkpoints import read_checkpoint
from semhint.core.conventions import ClassSet
from semhint.evaluation.metrics import CLASS_SUMS, range_slope
from semhint.inference import load_predictor
from semhint.lab.evaluator import load_split, per_class_sums, predict_disparities


def run_sums(run: Path, data: Path, split: str, class_set: ClassSet) -> tuple[str, dict[str, np.ndarray]]:
    """(config name, per-class error sums) of a trained run folder on a rendered world's split."""
    checkpoint = run / "checkpoints" / "last.ckpt"
    cfg = read_checkpoint(checkpoint).config
    frames = load_split(cfg, data / "splits" / f"{split}.txt", data)
    disparities = predict_disparities(load_predictor(checkpoint), frames.images)
    return cfg.name, per_class_sums(disparities, frames, cfg.eval, class_set)


def budget_rows(name: str, sums: dict[str, np.ndarray], runs: int, min_share: float) -> list[dict]:
    """The overall row, then one row per class with at least ``min_share`` of the pixels, largest contribution first."""
    total_sums = np.sum(list(sums.values()), axis=0) if sums else np.zeros(len(CLASS_SUMS))
    total = max(total_sums[0], 1.0)
    rows = [{"config": name, "runs": runs, "class": "all", "share of valid": 1.0, "AbsRel": total_sums[1] / total,
             "log bias": total_sums[2] / total, "contribution": total_sums[1] / total,
             "range slope": range_slope(total_sums)}]
    for cls, s in sorted(sums.items(), key=lambda kv: -kv[1][1]):
        n, err, log_ratio = s[:3]
        if n / total >= min_share:
            rows.append({"config": name, "runs": runs, "class": cls, "share of valid": n / total, "AbsRel": err / n,
                         "log bias": log_ratio / n, "contribution": err / total, "range slope": range_slope(s)})
    return rows
