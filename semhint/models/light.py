"""The light's profile over the image: how bright a surface looks by where it sits in the frame.

An endoscope's light guide throws a beam that is brightest on the optical axis, and its lens
vignettes; both are fixed to the camera. When the scope moves, a tissue point slides across that
profile, so it brightens or darkens between frames for reasons that have nothing to do with its
shape. ``RadialLightProfile`` is that profile as exp(a r^2 + b r^4), r the distance from the
principal point in normalised image coordinates (r = tan of the angle off the axis): two numbers,
learnt with the networks from the photometric loss (``loss.light_profile: radial``). A beam cos^k
and a lens vignette are both close to this form. It starts flat (a = b = 0), where the loss is the
one without the switch.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from semhint.core.geometry import pixel_grid


class RadialLightProfile(nn.Module):
    """``forward(inv_K, height, width) -> B x 1 x H x W`` log brightness factor of each pixel position.

    The coefficients are stored divided by ``step_gain``: Adam moves every parameter by about the
    learning rate per step, whatever its gradient, and a beam's coefficients are of order 1 (cos^4
    of the angle off axis is about exp(-2 r^2)), a hundred times a network weight; at the networks'
    learning rate they would need thousands of steps to get there.
    """

    def __init__(self, step_gain: float = 50.0) -> None:
        super().__init__()
        self.step_gain = step_gain
        self.coeffs = nn.Parameter(torch.zeros(2))  # (a, b) / step_gain

    def ab(self) -> torch.Tensor:
        """The profile's (a, b) in exp(a r^2 + b r^4)."""
        return self.step_gain * self.coeffs

    def forward(self, inv_K: torch.Tensor, height: int, width: int) -> torch.Tensor:
        pix = pixel_grid(height, width, device=inv_K.device, dtype=inv_K.dtype)
        rays = inv_K[:, :3, :3] @ pix  # B x 3 x HW, z = 1 for a pinhole K
        r2 = (rays[:, :2] ** 2).sum(1, keepdim=True)
        a, b = self.ab()
        log_gain = a * r2 + b * r2 * r2
        return log_gain.reshape(-1, 1, height, width)
