"""The small segmentation model that makes the NOISY labels (METHOD.md, idea 2).

It is the project's own encoder + decoder with the whole decoder shared (k = 10) and only the
segmentation head used: the same architecture family the depth net uses, fitted on a handful of
labelled frames, so the noise in its labels is the kind a user of the method would really have.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from semhint.core.config import ModelConfig
from semhint.models import build_depth_net


def labeler_model_config(num_classes: int, encoder: str = "resnet18", pretrained: str = "") -> ModelConfig:
    """The ModelConfig of a labeler: all decoder layers shared, one output scale, ``num_classes`` logits."""
    if num_classes < 1:
        raise ValueError(f"a labeler needs at least one class, got {num_classes}")
    return ModelConfig(encoder=encoder, pretrained=pretrained, num_classes=num_classes, shared_layers=10,
                       scales=[0], seg_scales=[0])


class Labeler(nn.Module):
    """``forward(images B x 3 x H x W in [0, 1]) -> logits B x C x H x W``.

    The depth net's single disparity head stays in the module (a few hundred parameters) so that
    a labeler checkpoint is a plain depth-net state dict; its output is simply not used.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.net = build_depth_net(cfg)

    @property
    def num_classes(self) -> int:
        return self.cfg.num_classes

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)["seg/0"]


def build_labeler(num_classes: int, encoder: str = "resnet18", pretrained: str = "") -> Labeler:
    """A labeler for ``num_classes`` classes on ``encoder`` (optionally with ImageNet weights)."""
    return Labeler(labeler_model_config(num_classes, encoder, pretrained))
