"""The multi-task U-Net decoder: a trunk shared by depth and segmentation, then two branches.

The Monodepth2 decoder has 10 conv layers, counted here from the bottleneck:
``upconv_4_0, upconv_4_1, upconv_3_0, ..., upconv_0_1``. Stage ``i`` runs ``upconv_i_0``, resizes
to the next finer resolution (nearest), concatenates the encoder skip feature of that resolution
(none at stage 0) and runs ``upconv_i_1``; the output of stage ``i`` is at stride ``2^i``.

``shared_layers = k`` (0..10) is the paper's studied variable: the first ``k`` layers form ONE
module used by both tasks; after layer ``k`` the decoder forks into a depth branch (the remaining
layers + sigmoid disparity heads) and a segmentation branch (its own copy of the remaining layers +
a 3x3 conv to class logits). ``k = 0`` shares only the encoder; ``k = 10`` shares everything but
the heads. With ``num_classes = 0`` there is no segmentation module at all and ``k`` is moot.

Resizing goes to the exact size of the skip feature (and of the input image at stage 0) rather than
a blind x2, so any input size works, not only multiples of 32.

Two switches serve cost, not accuracy. ``pad = "zeros"`` and ``act = "relu"`` make every conv one
fused kernel in ONNX Runtime (reflection padding and ELU each run as a separate pass over the
activations, and the pad forces a layout change around every conv: about a quarter of CPU inference
at 192x640). ``seg_stage = s`` stops the segmentation branch at decoder stage ``s`` and upsamples its
logits to the finer scales. The first pays at inference (Lite0 on ONNX Runtime, 0.43x -> 0.34x the plain
reference's time; a tie on real frames). The second saved nothing measurable in a training step beside
run-to-run noise (docs/lab/step_ratio_cost_switches.md), so no config turns it on: every stage of this
decoder costs about the same (channels double as the area quarters), and stage 1 with its wide skip
input costs more than stage 0, so dropping stage 0 saves little. ``seg_width = w`` instead narrows every
layer the segmentation branch owns to ``w`` times the channels (at least 4): about ``w`` to ``w^2`` of
its cost, at every stage. Layers shared with depth keep their width, so the depth path is unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from semhint.core.config import DECODER_ACTIVATIONS as ACTIVATIONS
from semhint.core.config import DECODER_PADDINGS as PADDINGS

NUM_LAYERS = 10
DEC_CHANNELS = (16, 32, 64, 128, 256)  # output channels of stage 0..4 (Monodepth2's num_ch_dec)


def layer_name(index: int) -> str:
    """Name of the ``index``-th decoder layer counted from the bottleneck (0 -> 'upconv_4_0')."""
    return f"upconv_{4 - index // 2}_{index % 2}"


class ReflectPad(nn.Module):
    """Pad by 1 pixel with reflection (no dark borders in disparity); replicate on 1-pixel maps.

    Reflection needs at least 2 pixels per side; the stride-32 map of an input of 32 pixels or
    fewer has 1. A traced (exported) graph always reflects: trace with more than 32 pixels a side.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tiny = not torch.jit.is_tracing() and min(x.shape[-2:]) < 2
        mode = "replicate" if tiny else "reflect"
        return F.pad(x, (1, 1, 1, 1), mode=mode)


def padded_conv(c_in: int, c_out: int, pad: str) -> list[nn.Module]:
    """A 3x3 conv keeping the size: ``[ReflectPad, Conv]`` or ``[Identity, Conv(padding=1)]``.

    Both are two modules, so a checkpoint's parameter names (``...1.weight``) do not depend on ``pad``.
    """
    if pad not in PADDINGS:
        raise ValueError(f"pad must be one of {PADDINGS}, got {pad!r}")
    if pad == "reflect":
        return [ReflectPad(), nn.Conv2d(c_in, c_out, 3)]
    return [nn.Identity(), nn.Conv2d(c_in, c_out, 3, padding=1)]


class ConvBlock(nn.Sequential):
    """3x3 conv (reflection or zero padding), then ELU or ReLU."""

    def __init__(self, c_in: int, c_out: int, pad: str = "reflect", act: str = "elu") -> None:
        if act not in ACTIVATIONS:
            raise ValueError(f"act must be one of {ACTIVATIONS}, got {act!r}")
        activation = nn.ELU(inplace=True) if act == "elu" else nn.ReLU(inplace=True)
        super().__init__(*padded_conv(c_in, c_out, pad), activation)


class Head(nn.Sequential):
    """3x3 conv to ``c_out`` maps; sigmoid for disparity, none for logits."""

    def __init__(self, c_in: int, c_out: int, sigmoid: bool, pad: str = "reflect") -> None:
        layers = padded_conv(c_in, c_out, pad)
        if sigmoid:
            layers.append(nn.Sigmoid())
        super().__init__(*layers)


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; multiplies the gradient by ``scale`` on the way back."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad * ctx.scale, None


def scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` unchanged, but its gradient multiplied by ``scale`` (SGDepth-style task balance)."""
    return x if scale == 1.0 else _ScaleGrad.apply(x, scale)


def scaled_channels(width: float) -> tuple[int, ...]:
    """Stage channels ``DEC_CHANNELS`` times ``width``, rounded, at least 4 (``width = 1``: unchanged)."""
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    return tuple(max(4, round(c * width)) for c in DEC_CHANNELS)


def _in_channels(index: int, num_ch_enc: list[int], previous: tuple[int, ...] = DEC_CHANNELS) -> int:
    """Input channels of decoder layer ``index`` given the encoder's channels and ``previous``, the stage
    channels of the layer that feeds it (another run's when ``index`` starts a branch)."""
    stage, part = 4 - index // 2, index % 2
    if part == 0:
        return num_ch_enc[4] if stage == 4 else previous[stage + 1]
    return previous[stage] + (num_ch_enc[stage - 1] if stage > 0 else 0)


class DecoderLayers(nn.Module):
    """A contiguous run ``[start, stop)`` of the 10 decoder layers, with their resize-and-skip steps.

    ``forward`` returns the last activation and the outputs of every stage completed inside the
    run (``{stage: tensor}``), which the heads read. ``channels`` are the run's stage widths; its
    first layer reads a full-width (``DEC_CHANNELS``) input, what the shared trunk hands over.
    """

    def __init__(self, num_ch_enc: list[int], start: int, stop: int, pad: str = "reflect", act: str = "elu",
                 channels: tuple[int, ...] = DEC_CHANNELS) -> None:
        super().__init__()
        self.start, self.stop, self.channels = start, stop, tuple(channels)
        self.layers = nn.ModuleDict(
            {layer_name(i): ConvBlock(_in_channels(i, num_ch_enc, DEC_CHANNELS if i == start else self.channels),
                                      self.channels[4 - i // 2], pad, act)
             for i in range(start, stop)}
        )

    def forward(
        self, x: torch.Tensor, features: list[torch.Tensor], out_size: tuple[int, int]
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        stages: dict[int, torch.Tensor] = {}
        for index in range(self.start, self.stop):
            stage = 4 - index // 2
            if index % 2 == 1:
                size = features[stage - 1].shape[-2:] if stage > 0 else out_size
                x = F.interpolate(x, size=size, mode="nearest")
                if stage > 0:
                    x = torch.cat([x, features[stage - 1]], dim=1)
            x = self.layers[layer_name(index)](x)
            if index % 2 == 1:
                stages[stage] = x
        return x, stages


class MultiTaskDecoder(nn.Module):
    """Shared trunk (first ``shared_layers`` layers) + depth branch + optional segmentation branch.

    Output: ``{"disp/{s}": B x 1 x h_s x w_s for s in scales, "seg/{s}": B x C x h_s x w_s for s in
    seg_scales}``, where ``h_s x w_s`` is the size of decoder stage ``s`` (the input size at s = 0).
    """

    def __init__(
        self,
        num_ch_enc: list[int],
        num_classes: int = 0,
        shared_layers: int = 0,
        scales: tuple[int, ...] | list[int] = (0, 1, 2, 3),
        seg_scales: tuple[int, ...] | list[int] = (0,),
        seg_grad_scale: float = 1.0,
        disp_init: float = 0.0,
        pad: str = "reflect",
        act: str = "elu",
        seg_stage: int = 0,
        seg_width: float = 1.0,
    ) -> None:
        super().__init__()
        if not 0 <= shared_layers <= NUM_LAYERS:
            raise ValueError(f"shared_layers must be in 0..{NUM_LAYERS}, got {shared_layers}")
        if not 0 <= seg_stage <= 3:
            raise ValueError(f"seg_stage must be in 0..3, got {seg_stage}")
        if num_classes > 0 and shared_layers > NUM_LAYERS - 2 * seg_stage:
            raise ValueError(f"shared_layers {shared_layers} runs past seg_stage {seg_stage}: the segmentation branch "
                             f"ends at layer {NUM_LAYERS - 2 * seg_stage}")
        self.num_classes = num_classes
        # Depth-only: nothing to share with, so keep every layer in the depth branch; the
        # checkpoint layout of a baseline then never depends on k.
        self.shared_layers = shared_layers if num_classes > 0 else 0
        self.scales = [int(s) for s in scales]
        self.seg_scales = [int(s) for s in seg_scales] if num_classes > 0 else []
        self.seg_grad_scale = float(seg_grad_scale)
        self.seg_stage = int(seg_stage) if num_classes > 0 else 0
        seg_channels = scaled_channels(seg_width)
        k = self.shared_layers
        self.shared = DecoderLayers(num_ch_enc, 0, k, pad, act)
        self.depth = DecoderLayers(num_ch_enc, k, NUM_LAYERS, pad, act)
        self.disp_heads = nn.ModuleDict({str(s): Head(DEC_CHANNELS[s], 1, True, pad) for s in self.scales})
        if disp_init > 0:
            # Start far from min_depth: at the default sigmoid output 0.5 the initial depth is only
            # ~2 x min_depth, so (the pose net learning its scale against that depth) anything more
            # than 2x nearer than the average scene point saturates at min_depth.
            for head in self.disp_heads.values():
                nn.init.constant_(head[1].bias, math.log(disp_init / (1 - disp_init)))
        if num_classes > 0:
            self.seg = DecoderLayers(num_ch_enc, k, NUM_LAYERS - 2 * self.seg_stage, pad, act, seg_channels)
            # a head reads its stage from the trunk (full width) when the trunk completed that stage
            in_trunk = {4 - i // 2 for i in range(1, k, 2)}
            self.seg_heads = nn.ModuleDict({
                str(s): Head((DEC_CHANNELS if max(s, self.seg_stage) in in_trunk else seg_channels)[max(s, self.seg_stage)],
                             num_classes, False, pad)
                for s in self.seg_scales})

    def forward(self, features: list[torch.Tensor], out_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Decode encoder ``features`` (strides 2..32); ``out_size`` is the input image's (H, W)."""
        trunk, trunk_stages = self.shared(features[4], features, out_size)
        _, depth_stages = self.depth(trunk, features, out_size)
        depth_stages.update(trunk_stages)
        outputs = {f"disp/{s}": self.disp_heads[str(s)](depth_stages[s]) for s in self.scales}
        if self.num_classes > 0:
            outputs.update(self._segment(features, trunk, trunk_stages, out_size))
        return outputs

    def segment(self, features: list[torch.Tensor], out_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """The ``seg/{s}`` outputs of :meth:`forward` alone: the shared trunk and the segmentation branch,
        the depth branch not run. The same operations as in ``forward``, so the same numbers; the
        decoder holds no normalisation layers, so skipping the depth branch changes no state either."""
        if self.num_classes == 0:
            raise ValueError("segment: this decoder has no segmentation branch (num_classes = 0)")
        trunk, trunk_stages = self.shared(features[4], features, out_size)
        return self._segment(features, trunk, trunk_stages, out_size)

    def _segment(self, features: list[torch.Tensor], trunk: torch.Tensor, trunk_stages: dict[int, torch.Tensor],
                 out_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        g = self.seg_grad_scale
        seg_features = [scale_grad(f, g) for f in features]
        _, seg_stages = self.seg(scale_grad(trunk, g), seg_features, out_size)
        seg_stages.update({s: scale_grad(t, g) for s, t in trunk_stages.items()})
        outputs = {}
        for s in self.seg_scales:
            logits = self.seg_heads[str(s)](seg_stages[max(s, self.seg_stage)])
            if s < self.seg_stage:  # a scale finer than the branch runs: its logits, upsampled
                size = out_size if s == 0 else features[s - 1].shape[-2:]
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            outputs[f"seg/{s}"] = logits
        return outputs
