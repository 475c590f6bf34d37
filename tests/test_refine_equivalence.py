"""The faster refinement code against the straightforward computation it replaced (issue 22, item 1).

Every optimisation of the training step that is meant to leave the numbers alone is checked here
on random inputs against the plain version, kept below as it was written: operator A with its
symmetric kernels and vectorised range guard, the channel argmax, the source frames' segmentation
without the depth branch. The cost switches that DO change the numbers (``refine.hint_scale``,
``refine.pseudo_seg_scale``) are checked for what they promise instead.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from semhint import refine
from semhint.core.config import ConfigError, from_dict
from semhint.core.conventions import IGNORE_INDEX
from semhint.models import build_depth_net
from semhint.refine.common import EPS, as_labels, channel_max, shifted, window_offsets
from semhint.refine.smoothing import _local_linear_value
from semhint.training import SemHintModule, frozen_norm_stats, source_segmentation


# ----------------------------------------------------------------------------------------------
# operator A: the plain filter, one kernel per offset, as it was before the speed-up
# ----------------------------------------------------------------------------------------------
def plain_smoothing(depth, seg_labels, image, radius=4, sigma_color=0.1, sigma_space=3.0, source_weight=None,
                    dilation=1, iterations=1, domain="log", local_linear=False):
    labels = as_labels(seg_labels)
    b, _, h, w = depth.shape
    log_d = depth.clamp_min(EPS).log() if domain == "log" else 1.0 / depth.clamp_min(EPS)
    weight = torch.ones_like(depth) if source_weight is None else source_weight.to(depth.dtype)
    known = (labels != IGNORE_INDEX).unsqueeze(1)
    pad = radius * dilation
    lab_p = F.pad(labels.unsqueeze(1), (pad,) * 4, value=-1)
    img_p = F.pad(image, (pad,) * 4, mode="replicate")
    colour_scale = 1.0 / (2 * sigma_color ** 2 * image.shape[1])
    lab = labels.unsqueeze(1)

    def kernel(dy, dx, i, j):
        space = (i * i + j * j) / (2 * sigma_space ** 2)
        colour = (image - shifted(img_p, pad, dy, dx, h, w)).square_().sum(1, keepdim=True)
        k = colour.mul_(-colour_scale).sub_(space).exp_()
        return k.mul_((shifted(lab_p, pad, dy, dx, h, w) == lab) & known)

    offsets = list(window_offsets(radius, dilation))
    for _ in range(max(1, iterations)):
        x_p = F.pad(log_d, (pad,) * 4)
        w_p = F.pad(weight * known, (pad,) * 4)
        m = {k: torch.zeros_like(log_d) for k in ("1", "x", "kden", "s", "t", "ss", "tt", "st", "xs", "xt")}
        lo, hi = log_d.clone(), log_d.clone()
        for dy, dx, i, j in offsets:
            kern = kernel(dy, dx, i, j)
            m["kden"] += kern
            ws = kern * shifted(w_p, pad, dy, dx, h, w)
            x_q = shifted(x_p, pad, dy, dx, h, w)
            wx = ws * x_q
            m["1"] += ws
            m["x"] += wx
            if local_linear:
                lo = torch.minimum(lo, torch.where(ws > 0, x_q, lo))
                hi = torch.maximum(hi, torch.where(ws > 0, x_q, hi))
                if i or j:
                    m["s"].add_(ws, alpha=i), m["t"].add_(ws, alpha=j)
                    m["ss"].add_(ws, alpha=i * i), m["tt"].add_(ws, alpha=j * j), m["st"].add_(ws, alpha=i * j)
                    m["xs"].add_(wx, alpha=i), m["xt"].add_(wx, alpha=j)
        den = m["1"]
        if local_linear:
            filtered = torch.minimum(torch.maximum(_local_linear_value(m), lo), hi)
        else:
            filtered = m["x"] / den.clamp_min(EPS)
        log_d = torch.where(known & (den > EPS), filtered, log_d)
        weight = torch.maximum(weight, den / m["kden"].clamp_min(EPS))
    return 1.0 / log_d.clamp_min(EPS) if domain == "disp" else log_d.exp()


def _scene(seed: int, b: int = 2, h: int = 21, w: int = 34, classes: int = 4, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    image = (F.interpolate(torch.rand(b, 3, max(1, h // 3), w // 3, generator=g), size=(h, w), mode="bilinear")
             + 0.05 * torch.rand(b, 3, h, w, generator=g)).to(dtype)
    depth = (1 + 20 * torch.rand(b, 1, h, w, generator=g)).to(dtype)
    labels = F.interpolate(torch.randint(0, classes, (b, 1, max(1, h // 4), w // 4), generator=g).float(), size=(h, w),
                           mode="nearest")[:, 0].long()
    labels[torch.rand(b, h, w, generator=g) < 0.1] = IGNORE_INDEX  # scattered ignored pixels
    return depth, labels, image


SMOOTHING_CASES = [
    dict(radius=4, local_linear=True, weight=True),  # what make_depth_hint runs (operator A)
    dict(radius=4),
    dict(radius=2, domain="disp", local_linear=True),
    dict(radius=3, iterations=3, weight=True),
    dict(radius=2, dilation=2, iterations=2, local_linear=True, weight=True),
    dict(radius=1, sigma_color=0.02, sigma_space=0.7, local_linear=True),
    dict(radius=5, sigma_color=1.0),  # a window wider than some segments
]


@pytest.mark.parametrize("case", range(len(SMOOTHING_CASES)))
def test_smoothing_gives_the_plain_filters_numbers(case):
    kw = dict(SMOOTHING_CASES[case])
    depth, labels, image = _scene(case)
    if kw.pop("weight", False):
        kw["source_weight"] = refine.texture_weight(image)
    fast = refine.segment_aware_smoothing(depth, labels, image, **kw)
    assert torch.equal(fast, plain_smoothing(depth, labels, image, **kw))  # bit for bit


def test_smoothing_gives_the_plain_numbers_from_logits_in_float64_and_on_one_pixel_rows():
    depth, labels, image = _scene(7, b=1, h=9, w=40, dtype=torch.float64)
    logits = F.one_hot(labels.clamp_max(3), 4).permute(0, 3, 1, 2).double() + 0.01 * torch.rand(1, 4, 9, 40,
                                                                                                 dtype=torch.float64)
    for seg in (labels, logits):
        kw = dict(radius=4, local_linear=True, source_weight=refine.texture_weight(image))
        assert torch.equal(refine.segment_aware_smoothing(depth, seg, image, **kw),
                           plain_smoothing(depth, seg, image, **kw))
    thin = _scene(8, b=1, h=1, w=30)
    assert torch.equal(refine.segment_aware_smoothing(*thin, radius=3, local_linear=True),
                       plain_smoothing(*thin, radius=3, local_linear=True))


# ----------------------------------------------------------------------------------------------
# the channel argmax
# ----------------------------------------------------------------------------------------------
def test_channel_max_is_max_over_channels_ties_and_nan_included():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 3, (2, 19, 7, 9), generator=g).float()  # many ties: the first maximum must win
    values, index = channel_max(x)
    ref = x.max(1)
    assert torch.equal(values, ref.values) and torch.equal(index, ref.indices) and torch.equal(index, x.argmax(1))
    y = torch.randn(1, 5, 4, 4, generator=g)
    y[0, 3, 1, 2] = float("nan")  # NaN wins, as it does in max(1)
    assert torch.equal(channel_max(y)[1], y.max(1).indices) and channel_max(y)[1][0, 1, 2] == 3
    assert torch.equal(as_labels(x), x.argmax(1)) and torch.equal(channel_max(x[:, :1])[1], torch.zeros(2, 7, 9).long())


# ----------------------------------------------------------------------------------------------
# the source frames' segmentation
# ----------------------------------------------------------------------------------------------
def _net(classes: int = 5, k: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = from_dict({"model": {"num_classes": classes, "shared_layers": k, "seg_scales": [0, 1]}})
    return build_depth_net(cfg.model).train()


@pytest.mark.parametrize("k", [0, 4, 10])
def test_segment_is_the_full_forwards_segmentation_and_moves_batch_norm_alike(k):
    a, b = _net(k=k), _net(k=k)
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        full, seg = a(x), b.segment(x)
    assert set(seg) == {"seg/0", "seg/1"}
    for key, value in seg.items():
        assert torch.equal(value, full[key])
    for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(ta, tb), name  # the running statistics were updated the same way


def test_segment_needs_a_segmentation_branch():
    with pytest.raises(ValueError, match="no segmentation branch"):
        _net(classes=0).segment(torch.rand(1, 3, 64, 64))


def test_coarse_source_segmentation_is_full_size_and_leaves_running_statistics_alone():
    net = _net()
    x = torch.rand(2, 3, 64, 96)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        assert torch.equal(source_segmentation(net, x)["seg/0"], net.segment(x)["seg/0"])
    moved = {k: v.clone() for k, v in net.state_dict().items()}
    assert any(not torch.equal(before[k], moved[k]) for k in before)  # full resolution: statistics move, as before
    with torch.no_grad():
        out = source_segmentation(net, x, scale=1)
    assert out["seg/0"].shape == (2, 5, 64, 96) and out["seg/1"].shape == (2, 5, 64, 96)
    for key, value in net.state_dict().items():
        assert torch.equal(value, moved[key]), key
    momenta = [m.momentum for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with frozen_norm_stats(net):
        pass
    assert momenta == [m.momentum for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)] and momenta[0] == 0.1


def _step_cfg(**refine_extra):
    return from_dict({"data": {"height": 64, "width": 96, "frame_ids": [0, -1, 1]},
                      "model": {"num_classes": 5, "shared_layers": 4, "min_depth": 0.1, "max_depth": 100.0},
                      "optim": {"batch_size": 2, "pose_warmup_steps": 0},
                      "refine": {"hint": True, "hint_operators": ["smooth", "contact"], "stuff_classes": [0, 1],
                                 "upright_classes": [3], "pseudo_seg": True, "warmup_epochs": 0, **refine_extra}})


def test_training_objective_gives_the_losses_of_full_source_forwards(monkeypatch):
    """The objective's source frames now skip the depth branch: the losses are those of the old
    path, which ran the whole depth net on them."""
    from semhint.lab.timing import synthetic_batch

    cfg = _step_cfg()
    batch = synthetic_batch(64, 96, 2, [0, -1, 1], "cpu", num_classes=5, seed=1)

    def losses(full_sources: bool) -> dict:
        torch.manual_seed(0)
        module = SemHintModule(cfg).train()
        if full_sources:
            monkeypatch.setattr("semhint.training.source_segmentation", lambda net, images, scale=0: net(images))
        out, _, _ = module.objective(batch)
        monkeypatch.undo()
        return out

    fast, plain = losses(False), losses(True)
    assert fast.keys() == plain.keys()
    for key in fast:
        assert torch.equal(fast[key], plain[key]), key


def test_cost_switches_are_off_by_default_checked_and_run():
    cfg = from_dict({})
    assert cfg.refine.hint_scale == 0 and cfg.refine.pseudo_seg_scale == 0
    with pytest.raises(ConfigError, match="refine.hint_scale"):
        from_dict({"refine": {"hint_scale": -1}})
    with pytest.raises(ConfigError, match="refine.pseudo_seg_scale"):
        from_dict({"refine": {"pseudo_seg_scale": 9}})
    from semhint.lab.timing import synthetic_batch

    cfg = _step_cfg(hint_scale=1, pseudo_seg_scale=1)
    torch.manual_seed(0)
    losses, maps, _ = SemHintModule(cfg).train().objective(synthetic_batch(64, 96, 2, [0, -1, 1], "cpu", 5, seed=1))
    assert torch.isfinite(losses["loss"]) and maps["hint/0"].shape == (2, 1, 64, 96)


# ----------------------------------------------------------------------------------------------
# the coarse hint (refine.hint_scale): changes the numbers, keeps the promises
# ----------------------------------------------------------------------------------------------
def test_coarse_hint_leaves_untouched_pixels_exact_and_fits_a_plane_at_half_resolution():
    h, w, f = 32, 64, 40.0
    K = torch.tensor([[f, 0, w / 2, 0], [0, f, 4.0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]).unsqueeze(0)
    v = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1).expand(1, 1, h, w)
    road = 1.5 * f / (v - 4.0 + 0.5)  # a ground plane seen by a level camera, horizon above the image
    labels = torch.full((1, h, w), 7, dtype=torch.long)
    labels[:, h // 2:] = 0  # road below, an unfitted class above
    noisy_road = road * (1 + 0.02 * (torch.rand(1, 1, h, w) - 0.5))
    depth = torch.where(labels.unsqueeze(1) == 0, noisy_road, torch.full_like(road, 30.0))
    cfg = from_dict({"refine": {"hint_operators": ["surface"], "stuff_classes": [0], "hint_scale": 1}}).refine
    inputs = refine.HintInputs(labels=labels, image=torch.rand(1, 3, h, w), K=K,
                               generator=torch.Generator().manual_seed(0))
    hint = refine.coarse_hint(["surface"], depth, inputs, cfg, 1)
    assert hint.shape == depth.shape
    assert torch.equal(hint[..., : h // 2 - 1, :], depth[..., : h // 2 - 1, :])  # the unfitted class is left exact
    inner = (..., slice(h // 2 + 2, -1), slice(1, -1))
    assert ((hint - road).abs() / road)[inner].max() < 0.03  # the plane, not the noise
    full = refine.make_depth_hint(depth, labels, inputs.image, K, cfg, generator=torch.Generator().manual_seed(0))
    assert torch.equal(full, hint)  # make_depth_hint follows the switch
