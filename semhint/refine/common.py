"""What every refinement operator shares: class maps from logits, window offsets, shifted views.

The operators are vectorised over pixels and batch; the only Python loops run over window offsets
(at most (2r+1)^2) or source frames, which is what these helpers serve.
"""

from __future__ import annotations

from typing import Iterator

import torch

EPS = 1e-6


def as_labels(seg: torch.Tensor) -> torch.Tensor:
    """Class logits/probabilities (B, C, H, W) or labels (B, H, W) / (B, 1, H, W) -> int64 (B, H, W)."""
    if seg.is_floating_point():
        if seg.dim() != 4:
            raise ValueError(f"segmentation logits must be B x C x H x W, got shape {tuple(seg.shape)}")
        return seg.argmax(1)
    if seg.dim() == 4:
        seg = seg[:, 0]
    return seg.long()


def window_offsets(radius: int, dilation: int = 1) -> Iterator[tuple[int, int, int, int]]:
    """Window offsets as (dy, dx, step_y, step_x): pixel offsets and their index in window steps."""
    for i in range(-radius, radius + 1):
        for j in range(-radius, radius + 1):
            yield i * dilation, j * dilation, i, j


def shifted(padded: torch.Tensor, pad: int, dy: int, dx: int, h: int, w: int) -> torch.Tensor:
    """View of a padded map shifted by (dy, dx): value at p is the original value at p + (dy, dx)."""
    return padded[..., pad + dy:pad + dy + h, pad + dx:pad + dx + w]
