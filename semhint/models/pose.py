"""The pose network: a separate encoder (ResNet or EfficientNet-Lite0) on a stacked frame pair, then a
small conv decoder.

Output is the relative camera motion as axis-angle and translation, each ``B x 1 x 3``. Both are
multiplied by 0.01 (Monodepth2): at initialisation the predicted motion is then near identity, which
keeps the first warps sensible and the photometric loss informative.
"""

from __future__ import annotations

import torch
import torch.nn as nn

POSE_SCALE = 0.01


class PoseDecoder(nn.Module):
    """1x1 squeeze, two 3x3 convs, 1x1 to 6 numbers per pixel, averaged over the image."""

    def __init__(self, c_in: int, width: int = 256) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(c_in, width, 1)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.out = nn.Conv2d(width, 6, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.relu(self.squeeze(feature))
        x = self.relu(self.conv1(x))
        x = self.relu(self.conv2(x))
        pose = POSE_SCALE * self.out(x).mean(dim=(2, 3)).view(-1, 1, 6)
        return pose[..., :3], pose[..., 3:]


class PoseNet(nn.Module):
    """``forward(frame_a, frame_b) -> (axisangle, translation)``, each ``B x 1 x 3``.

    ``encoder`` takes the two frames concatenated along channels in the given order (6 channels);
    the training step decides which is the target and inverts the transform as needed
    (ARCHITECTURE.md).
    """

    def __init__(self, encoder: nn.Module, zero_init: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = PoseDecoder(self.encoder.num_ch_enc[-1])
        if zero_init:
            # Exactly zero motion at the start. A randomly initialised head predicts a small motion
            # in a random direction, and the depth net (pretrained, fast) fits its depth to that
            # direction within a few dozen steps, locking both into a sideways-motion solution.
            # At zero motion the warp ignores depth, so depth gets no gradient until the pose net
            # has moved, and its first moves follow the photometric gradient of the real motion.
            nn.init.zeros_(self.decoder.out.weight)
            nn.init.zeros_(self.decoder.out.bias)

    def forward(self, frame_a: torch.Tensor, frame_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder(torch.cat([frame_a, frame_b], dim=1))
        return self.decoder(features[-1])
