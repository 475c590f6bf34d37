"""Losses against the Monodepth2 reference outputs, the segmentation losses' definitions, and the
per-step objective on a hand-made scene whose true depth and pose are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from semhint import losses as L
from semhint.core import geometry as G
from semhint.core.config import Config, from_dict
from semhint.core.errors import ConfigError


def _t(arrays, key: str) -> torch.Tensor:
    return torch.from_numpy(arrays[key])


# ---------------------------------------------------------------------------------------------- oracles
def test_ssim_and_photometric_match_oracle(oracle):
    d = oracle("losses.npz")
    x, y = _t(d, "x"), _t(d, "y")
    np.testing.assert_allclose(L.ssim_map(x, y).numpy(), d["ssim_map"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(L.photometric_error(x, y).numpy(), d["photometric_map"], rtol=1e-5, atol=1e-6)


def test_smoothness_matches_oracle(oracle):
    d = oracle("losses.npz")
    value = L.smoothness_loss(_t(d, "disp"), _t(d, "x"))
    np.testing.assert_allclose(value.item(), d["smooth_loss_normalised_disp"], rtol=1e-5)


def test_min_reprojection_matches_oracle(oracle):
    d = oracle("min_reprojection.npz")
    target = _t(d, "target")
    # the oracle stacks frames source-major: warped[s] is B x 3 x H x W
    warped = torch.cat([L.photometric_error(w, target) for w in _t(d, "warped")], 1)
    identity = torch.cat([L.photometric_error(w, target) for w in _t(d, "identity")], 1)
    per_pixel, automask = L.min_reprojection(warped, identity, automask=True)
    assert per_pixel.shape == automask.shape == (2, 1, 24, 40)
    np.testing.assert_allclose(per_pixel[:, 0].numpy(), d["per_pixel"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(automask[:, 0].numpy(), d["automask"])
    np.testing.assert_allclose(per_pixel.mean().item(), d["loss"], rtol=1e-5)


def test_min_reprojection_without_automask_is_the_minimum_over_sources():
    errors = torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    per_pixel, mask = L.min_reprojection(errors, torch.zeros(2, 3, 4, 5), automask=False)
    torch.testing.assert_close(per_pixel, errors.min(1, keepdim=True).values)
    assert bool((mask == 1).all())


def test_photometric_error_is_zero_for_identical_images_and_l1_without_ssim():
    a = torch.rand(1, 3, 6, 7, generator=torch.Generator().manual_seed(1))
    assert L.photometric_error(a, a).abs().max() < 1e-6
    b = a + 0.1
    torch.testing.assert_close(L.photometric_error(a, b, ssim_weight=0.0), torch.full((1, 1, 6, 7), 0.1))


# ---------------------------------------------------------------------------------------------- seg losses
def _seg_example():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 4, 5, 6, generator=g, requires_grad=True)
    labels = torch.randint(0, 4, (2, 5, 6), generator=g)
    labels[0, :2] = 255
    return logits, labels


def _valid_log_py(logits, labels):
    valid = labels != 255
    log_p = F.log_softmax(logits, 1).permute(0, 2, 3, 1)[valid]
    return log_p, log_p.gather(1, labels[valid][:, None])[:, 0]


def test_cross_entropy_matches_torch_with_ignore_index():
    logits, labels = _seg_example()
    torch.testing.assert_close(L.cross_entropy(logits, labels), F.cross_entropy(logits, labels, ignore_index=255))


def test_symmetric_ce_is_ce_plus_beta_reverse_ce_with_clamped_one_hot():
    logits, labels = _seg_example()
    log_p, log_py = _valid_log_py(logits, labels)
    one_hot = F.one_hot(labels[labels != 255], 4).float().clamp(1e-4, 1)
    reverse = -(log_p.exp() * one_hot.log()).sum(1)
    expected = (-log_py).mean() + 0.5 * reverse.mean()
    torch.testing.assert_close(L.symmetric_cross_entropy(logits, labels, beta=0.5), expected, rtol=1e-5, atol=1e-6)


def test_generalized_ce_definition_and_limits():
    logits, labels = _seg_example()
    _, log_py = _valid_log_py(logits, labels)
    expected = ((1 - log_py.exp() ** 0.7) / 0.7).mean()
    torch.testing.assert_close(L.generalized_cross_entropy(logits, labels, q=0.7), expected)
    # q -> 0 recovers CE; q = 1 is the mean absolute error 1 - p_y
    torch.testing.assert_close(L.generalized_cross_entropy(logits, labels, q=1e-4), L.cross_entropy(logits, labels),
                               rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(L.generalized_cross_entropy(logits, labels, q=1.0), (1 - log_py.exp()).mean())


def test_bootstrapped_ce_soft_and_hard_targets():
    logits, labels = _seg_example()
    log_p, log_py = _valid_log_py(logits, labels)
    one_hot = F.one_hot(labels[labels != 255], 4).float()
    soft_target = 0.8 * one_hot + 0.2 * log_p.exp()
    torch.testing.assert_close(L.bootstrapped_cross_entropy(logits, labels, beta=0.8),
                               -(soft_target * log_p).sum(1).mean())
    hard_target = 0.8 * one_hot + 0.2 * F.one_hot(log_p.argmax(1), 4).float()
    torch.testing.assert_close(L.bootstrapped_cross_entropy(logits, labels, beta=0.8, hard=True),
                               -(hard_target * log_p).sum(1).mean())
    torch.testing.assert_close(L.bootstrapped_cross_entropy(logits, labels, beta=1.0), L.cross_entropy(logits, labels))


@pytest.mark.parametrize("name", sorted(L.SEG_LOSSES))
def test_every_seg_loss_is_zero_with_grad_when_all_pixels_are_ignored(name):
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    labels = torch.full((1, 4, 4), 255, dtype=torch.long)
    value = L.segmentation_loss(logits, labels, name)
    assert value.item() == 0.0
    value.backward()
    assert logits.grad is not None and bool((logits.grad == 0).all())


@pytest.mark.parametrize("name", sorted(L.SEG_LOSSES))
def test_every_seg_loss_prefers_the_labelled_class(name):
    labels = torch.zeros(1, 3, 3, dtype=torch.long)
    right = torch.zeros(1, 2, 3, 3)
    right[:, 0] = 3.0
    wrong = torch.zeros(1, 2, 3, 3)
    wrong[:, 1] = 3.0
    assert L.segmentation_loss(right, labels, name) < L.segmentation_loss(wrong, labels, name)


def test_segmentation_loss_default_params_and_errors():
    logits, labels = _seg_example()
    torch.testing.assert_close(L.segmentation_loss(logits, labels, "gce", 0.0),
                               L.generalized_cross_entropy(logits, labels, q=0.7))
    torch.testing.assert_close(L.segmentation_loss(logits, labels, "gce", 0.3),
                               L.generalized_cross_entropy(logits, labels, q=0.3))
    with pytest.raises(ValueError, match="unknown segmentation loss"):
        L.segmentation_loss(logits, labels, "focal")
    with pytest.raises(ValueError, match="label 7 outside 0..3"):
        L.cross_entropy(logits, torch.full_like(labels, 7))


def test_hint_loss_is_log1p_error_over_the_mask():
    depth = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], requires_grad=True)
    hint = torch.tensor([[[[2.0, 2.0], [0.0, 9.0]]]])
    mask = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    expected = (math.log(2.0) + math.log(4.0)) / 2
    assert L.hint_loss(depth, hint, mask).item() == pytest.approx(expected, rel=1e-6)
    empty = L.hint_loss(depth, hint, torch.zeros_like(mask))
    assert empty.item() == 0.0
    empty.backward()
    assert depth.grad is not None


# ---------------------------------------------------------------------------------------------- objective
H, W, FX, Z_TRUE, BASELINE = 24, 48, 30.0, 6.0, 0.6  # sideways motion of 3 px at the true depth


def _textured_plane_batch(num_classes: int = 0) -> tuple[dict, dict[int, torch.Tensor]]:
    """A fronto-parallel textured plane seen by three cameras translated along x.

    The true target->source pose of frame f is a translation of f * BASELINE along x (the source
    camera sits at -f * BASELINE), so a target pixel x appears at x + f * FX * BASELINE / Z_TRUE in
    source f: frame f shows the texture shifted by -f * that many pixels.
    """
    shift = FX * BASELINE / Z_TRUE
    xs = torch.arange(W + 20, dtype=torch.float32) - 10
    ys = torch.arange(H, dtype=torch.float32)
    g = torch.Generator().manual_seed(3)
    freqs = torch.rand(3, 4, generator=g) * 0.6 + 0.2

    def render(offset: float) -> torch.Tensor:
        x = xs[10:10 + W] + offset
        yy, xx = torch.meshgrid(ys, x, indexing="ij")
        channels = [0.5 + 0.25 * torch.sin(freqs[c, 0] * xx + freqs[c, 1] * yy) * torch.cos(freqs[c, 2] * xx - freqs[c, 3] * yy)
                    for c in range(3)]
        return torch.stack(channels)[None]

    K = G.intrinsics_matrix(FX, FX, (W - 1) / 2, (H - 1) / 2)[None]
    batch = {"K": K, "inv_K": torch.linalg.inv(K)}
    poses = {}
    for f in (0, -1, 1):
        batch[f"image/{f}"] = render(-f * shift)
        T = torch.eye(4)[None].clone()
        T[0, 0, 3] = f * BASELINE
        poses[f] = T
    if num_classes:
        labels = torch.zeros(1, H, W, dtype=torch.long)
        labels[:, :, W // 2:] = 1
        labels[:, :2] = 255
        batch["labels/0"] = labels
    return batch, poses


def _cfg(**loss) -> Config:
    return from_dict({"data": {"height": 32, "width": 48}, "model": {"scales": [0, 1]}, "loss": loss})


def _outputs_for_depth(depth: float, cfg: Config, requires_grad: bool = False) -> dict:
    disp_value = float(G.depth_to_disp(torch.tensor(depth), cfg.model.min_depth, cfg.model.max_depth))
    outputs = {}
    for s in cfg.model.scales:
        d = torch.full((1, 1, H // 2**s, W // 2**s), disp_value, requires_grad=requires_grad)
        outputs[f"disp/{s}"] = d
    return outputs


def test_objective_is_lower_at_the_true_depth_of_a_textured_plane():
    cfg = _cfg()
    batch, poses = _textured_plane_batch()
    right, maps = L.self_supervised_objective(batch, _outputs_for_depth(Z_TRUE, cfg), poses, cfg)
    wrong, _ = L.self_supervised_objective(batch, _outputs_for_depth(2.0, cfg), poses, cfg)
    assert right["photo"] < 0.5 * wrong["photo"]
    # away from the border (where the warp samples outside the source), the true warp is exact
    assert maps["reproj/0"][..., 4:-4].max() < 0.02
    torch.testing.assert_close(maps["warped/1"][..., 4:-4], batch["image/0"][..., 4:-4], rtol=0, atol=1e-3)
    assert maps["automask/0"][..., 4:-4].mean() > 0.9
    assert right["automask_frac"] > 0.8


def test_objective_outputs_are_finite_differentiable_and_named():
    cfg = _cfg()
    batch, poses = _textured_plane_batch()
    outputs = _outputs_for_depth(4.0, cfg, requires_grad=True)
    poses = {f: T.clone().requires_grad_(True) for f, T in poses.items()}
    losses, maps = L.self_supervised_objective(batch, outputs, poses, cfg)
    assert set(losses) == {"loss", "photo", "smooth", "automask_frac"}
    assert {"depth/0", "warped/-1", "warped/1", "reproj/0", "identity_reproj", "automask/0"} <= set(maps)
    for key in ("reproj/0", "identity_reproj", "automask/0", "depth/0"):
        assert maps[key].shape == (1, 1, H, W), key
    assert all(torch.isfinite(v).all() for v in losses.values())
    torch.testing.assert_close(losses["loss"], losses["photo"] + losses["smooth"])
    losses["loss"].backward()
    for s in cfg.model.scales:
        assert outputs[f"disp/{s}"].grad is not None and torch.isfinite(outputs[f"disp/{s}"].grad).all()
    assert poses[1].grad is not None and poses[1].grad.abs().sum() > 0


def test_objective_switches_average_reprojection_and_automask():
    batch, poses = _textured_plane_batch()
    on = _cfg()
    off = _cfg(automask=False, min_reprojection=False)
    outputs = _outputs_for_depth(3.0, on)
    l_on, m_on = L.self_supervised_objective(batch, outputs, poses, on)
    l_off, m_off = L.self_supervised_objective(batch, outputs, poses, off)
    assert bool((m_off["automask/0"] == 1).all()) and l_off["automask_frac"] == 1
    assert l_on["photo"] <= l_off["photo"]  # a minimum never exceeds the average it replaces


def test_depth_norm_makes_the_warp_independent_of_the_depth_scale():
    batch, poses = _textured_plane_batch()
    cfg = _cfg(depth_norm=True)
    near, m_near = L.self_supervised_objective(batch, _outputs_for_depth(2.0, cfg), poses, cfg)
    far, m_far = L.self_supervised_objective(batch, _outputs_for_depth(8.0, cfg), poses, cfg)
    # a constant depth normalises to 1 whatever its value: same warp, same photometric loss
    torch.testing.assert_close(m_near["depth/0"], torch.ones_like(m_near["depth/0"]))
    torch.testing.assert_close(near["photo"], far["photo"])
    # and the scale then lives in the pose alone: depth 1 with the true translation / Z_TRUE is exact
    scaled = {f: T.clone() for f, T in poses.items()}
    for T in scaled.values():
        T[0, 0, 3] /= Z_TRUE
    right, maps = L.self_supervised_objective(batch, _outputs_for_depth(2.0, cfg), scaled, cfg)
    assert right["photo"] < 0.5 * near["photo"]
    assert maps["reproj/0"][..., 4:-4].max() < 0.02


def test_normalise_depth_has_no_gradient_along_the_global_scale():
    depth = torch.rand(2, 1, 5, 7) + 0.5
    depth.requires_grad_(True)
    weights = torch.rand(2, 1, 5, 7)
    (L.normalise_depth(depth) * weights).sum().backward()
    # d/dc f(c * depth) at c = 1 is sum(grad * depth): zero for a scale-invariant function
    assert (depth.grad * depth).sum(dim=(1, 2, 3)).abs().max() < 1e-5


def test_objective_adds_the_weighted_segmentation_term():
    cfg = from_dict({"data": {"height": 32, "width": 48}, "model": {"scales": [0], "num_classes": 2, "seg_scales": [0, 1]},
                     "loss": {"seg_weight": 0.5, "seg_loss": "gce"}})
    batch, poses = _textured_plane_batch(num_classes=2)
    outputs = _outputs_for_depth(Z_TRUE, cfg)
    g = torch.Generator().manual_seed(4)
    outputs["seg/0"] = torch.randn(1, 2, H, W, generator=g, requires_grad=True)
    outputs["seg/1"] = torch.randn(1, 2, H // 2, W // 2, generator=g, requires_grad=True)
    losses, _ = L.self_supervised_objective(batch, outputs, poses, cfg)
    up = F.interpolate(outputs["seg/1"], size=(H, W), mode="bilinear", align_corners=False)
    expected = 0.5 * (L.generalized_cross_entropy(outputs["seg/0"], batch["labels/0"])
                      + L.generalized_cross_entropy(up, batch["labels/0"])) / 2
    torch.testing.assert_close(losses["seg"], expected)
    torch.testing.assert_close(losses["loss"], losses["photo"] + losses["smooth"] + losses["seg"])
    losses["loss"].backward()
    assert outputs["seg/1"].grad is not None


def test_objective_stays_float32_under_bfloat16_autocast():
    """Mixed-precision training must not degrade warping and SSIM to bfloat16."""
    cfg = _cfg()
    batch, poses = _textured_plane_batch()
    # disparities exactly representable in bfloat16, so the network output itself loses nothing
    outputs = {k: v.bfloat16().float() for k, v in _outputs_for_depth(4.0, cfg).items()}
    reference, _ = L.self_supervised_objective(batch, outputs, poses, cfg)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half_outputs = {k: v.bfloat16() for k, v in outputs.items()}
        mixed, maps = L.self_supervised_objective(batch, half_outputs, poses, cfg)
    assert maps["reproj/0"].dtype == torch.float32
    torch.testing.assert_close(mixed["photo"], reference["photo"], rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------------- planar prior
def _plane_disp(h: int = 20, w: int = 30, tilt: float = 0.02) -> torch.Tensor:
    """Inverse depth of a tilted plane seen by a pinhole camera: affine in the pixel coordinates."""
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return (0.1 + tilt * v + 0.005 * u)[None, None]


def test_planar_loss_is_zero_for_any_tilted_plane_where_first_order_smoothness_is_not():
    disp = _plane_disp()
    road = torch.zeros(1, 20, 30, dtype=torch.long)
    assert float(L.planar_loss(disp, road, [0])) < 1e-6
    assert float(L.planar_loss(_plane_disp(tilt=0.2), road, [0])) < 1e-6
    assert float(L.smoothness_loss(disp, torch.zeros(1, 3, 20, 30))) > 0.01  # it penalises the tilt


def test_planar_loss_sees_a_bump_only_inside_planar_segments_and_never_across_a_border():
    disp = _plane_disp()
    bumped = disp.clone()
    bumped[..., 8:12, 5:9] += 0.3  # an object standing on the plane
    road = torch.zeros(1, 20, 30, dtype=torch.long)
    assert float(L.planar_loss(bumped, road, [0])) > 0.01
    labelled = road.clone()
    labelled[:, 8:12, 5:9] = 13  # the bump is labelled car: not a planar class, so no penalty
    assert float(L.planar_loss(bumped, labelled, [0])) < 1e-6
    assert float(L.planar_loss(bumped, road, [1])) == 0  # no pixel of the planar classes: no term
    ignored = road.clone()
    ignored[:, 8:12, 5:9] = 255
    assert float(L.planar_loss(bumped, ignored, [0])) < 1e-6
    # two different planes meeting at a labelled border: each is planar, the crease is not penalised
    crease = torch.where(torch.arange(30) < 15, disp, 2 * disp + 0.5)
    split = road.clone()
    split[..., 15:] = 2
    assert float(L.planar_loss(crease, split, [0, 2])) < 1e-6
    assert float(L.planar_loss(crease, road, [0])) > 0


def test_planar_loss_resizes_full_resolution_segments_to_a_coarse_scale_and_has_a_gradient():
    disp = _plane_disp()
    disp[..., 10, 10] += 0.2
    disp.requires_grad_(True)
    road = torch.zeros(1, 40, 60, dtype=torch.long)
    loss = L.planar_loss(disp, road, [0])
    loss.backward()
    assert loss > 0 and disp.grad[..., 10, 10] > 0  # the gradient flattens the spike


def test_objective_adds_the_weighted_planar_term_from_labels_or_from_the_branch():
    batch, poses = _textured_plane_batch(num_classes=2)
    cfg = from_dict({"data": {"height": 32, "width": 48, "labels": "x"}, "model": {"scales": [0, 1]},
                     "loss": {"planar_weight": 0.5, "planar_classes": [0, 1]}})
    outputs = _outputs_for_depth(Z_TRUE, cfg)
    outputs["disp/0"] = outputs["disp/0"] + 0.01 * torch.rand(1, 1, H, W, generator=torch.Generator().manual_seed(5))
    losses, _ = L.self_supervised_objective(batch, outputs, poses, cfg)
    expected = 0.5 * (L.planar_loss(outputs["disp/0"], batch["labels/0"], [0, 1])
                      + L.planar_loss(outputs["disp/1"], batch["labels/0"], [0, 1]) / 2) / 2
    torch.testing.assert_close(losses["planar"], expected)
    assert losses["planar"] > 0
    torch.testing.assert_close(losses["loss"], losses["photo"] + losses["smooth"] + losses["planar"])
    branch = from_dict({"data": {"height": 32, "width": 48}, "model": {"scales": [0], "num_classes": 2},
                        "loss": {"planar_weight": 0.5, "planar_segments": "prediction", "seg_weight": 0}})
    outputs["seg/0"] = torch.zeros(1, 2, H, W)
    outputs["seg/0"][:, 1, :, : W // 2] = 1  # the branch calls the left half class 1, the right half class 0
    losses, _ = L.self_supervised_objective({k: v for k, v in batch.items() if k != "labels/0"}, outputs, poses, branch)
    torch.testing.assert_close(losses["planar"], 0.5 * L.planar_loss(outputs["disp/0"], outputs["seg/0"].argmax(1), [0, 1, 2, 3]))


# ---------------------------------------------------------------------------------------------- moving light
def _relit(batch: dict, gain: float, offset: float) -> dict:
    """The batch with both source frames seen under another light: gain * image + offset."""
    return {k: (gain * v + offset if k in ("image/-1", "image/1") else v) for k, v in batch.items()}


def test_affine_fit_recovers_gain_and_offset_from_valid_pixels_only_and_is_detached():
    g = torch.Generator().manual_seed(5)
    source = torch.rand(2, 3, 10, 12, generator=g, requires_grad=True)
    target = torch.stack([1.3 * source[0] + 0.05, 0.7 * source[1] - 0.02]).detach()
    valid = torch.ones(2, 1, 10, 12, dtype=torch.bool)
    target[:, :, :, :3] = 1.0  # garbage where the pair is not valid
    valid[:, :, :, :3] = False
    gain, offset = L.fit_affine_brightness(source, target, valid)
    assert gain.shape == offset.shape == (2, 1, 1, 1) and gain.grad_fn is None and offset.grad_fn is None
    torch.testing.assert_close(gain.flatten(), torch.tensor([1.3, 0.7]), rtol=0, atol=1e-4)
    torch.testing.assert_close(offset.flatten(), torch.tensor([0.05, -0.02]), rtol=0, atol=1e-4)


def test_affine_fit_falls_back_to_identity_and_clamps_the_gain():
    flat, target = torch.full((1, 3, 8, 8), 0.4), torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    gain, offset = L.fit_affine_brightness(flat, target, torch.ones(1, 1, 8, 8, dtype=torch.bool))
    assert gain.item() == 1 and offset.item() == 0  # a flat source explains nothing
    few = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    few[..., 0, :3] = True
    gain, offset = L.fit_affine_brightness(target, 2 * target, few)
    assert gain.item() == 1 and offset.item() == 0  # too few pixels to fit
    gain, _ = L.fit_affine_brightness(target, 5 * target, torch.ones(1, 1, 8, 8, dtype=torch.bool))
    assert gain.item() == L.AFFINE_GAIN_RANGE[1]


def test_affine_brightness_explains_a_global_light_change():
    """A source that equals the target up to a gain and offset: ~zero error with the affine model, a
    clear error without; in the objective at the true depth the relit sources cost what unchanged
    sources cost, and without the model much more."""
    batch, poses = _textured_plane_batch()
    target = batch["image/0"]
    relit = 0.75 * target + 0.1
    assert L.pair_errors([relit], target, brightness="affine").max() < 1e-4
    assert L.pair_errors([relit], target).mean() > 0.01
    cfg_plain, cfg_affine = _cfg(), _cfg(brightness="affine")
    outputs = _outputs_for_depth(Z_TRUE, cfg_plain)
    same_light, _ = L.self_supervised_objective(batch, outputs, poses, cfg_plain)
    other_light = _relit(batch, 0.75, 0.1)
    plain, _ = L.self_supervised_objective(other_light, outputs, poses, cfg_plain)
    affine, maps = L.self_supervised_objective(other_light, outputs, poses, cfg_affine)
    assert same_light["photo"] < 1e-5 and affine["photo"] < 1e-5 and plain["photo"] > 1e-3
    assert maps["reproj/0"][..., 4:-4].max() < 0.02
    wrong, _ = L.self_supervised_objective(other_light, _outputs_for_depth(2.0, cfg_affine), poses, cfg_affine)
    assert affine["photo"] < 0.5 * wrong["photo"]  # the model does not explain a wrong depth away


def test_saturated_pixels_are_left_out():
    """A highlight in the target (clipped at 1, absent from the sources) adds error without the mask;
    with ``specular_threshold`` its pixels (and a one-pixel margin) leave the loss, and the loss is the
    mean over the rest."""
    batch, poses = _textured_plane_batch()
    batch["image/0"] = batch["image/0"].clone()
    batch["image/0"][..., 8:14, 20:28] = 1.0
    hot = L.saturated(batch["image/0"], 0.98)
    assert hot.sum() == 8 * 10 and bool(hot[..., 7:15, 19:29].all())
    errors = L.pair_errors([batch["image/1"]], batch["image/0"], specular_threshold=0.98)
    assert bool(torch.isinf(errors[hot[:, 0:1]]).all()) and bool(torch.isfinite(errors[~hot]).all())
    one_scale = {"data": {"height": 32, "width": 48}, "model": {"scales": [0]}}
    cfg_plain, cfg_mask = from_dict(one_scale), from_dict({**one_scale, "loss": {"specular_threshold": 0.98}})
    outputs = _outputs_for_depth(Z_TRUE, cfg_plain, requires_grad=True)
    plain, _ = L.self_supervised_objective(batch, outputs, poses, cfg_plain)
    masked, maps = L.self_supervised_objective(batch, outputs, poses, cfg_mask)
    assert masked["photo"] < 0.5 * plain["photo"]
    assert bool(torch.isinf(maps["reproj/0"][hot]).all()) and bool(torch.isfinite(maps["reproj/0"][~hot]).all())
    per_pixel = torch.minimum(maps["identity_reproj"], maps["reproj/0"])  # the auto-masked minimum
    torch.testing.assert_close(masked["photo"], per_pixel[~hot].mean())
    masked["loss"].backward()
    assert torch.isfinite(outputs["disp/0"].grad).all()


def test_defaults_keep_the_photometric_loss_exactly():
    """With loss.brightness none and no specular mask the photo term is, bit for bit, the plain
    warp + SSIM/L1 + per-pixel minimum with auto-mask + mean of before these switches."""
    batch, poses = _textured_plane_batch()
    cfg = from_dict({"data": {"height": 32, "width": 48}, "model": {"scales": [0]}})
    assert (cfg.loss.brightness, cfg.loss.specular_threshold) == ("none", 0.0)
    outputs = _outputs_for_depth(4.5, cfg)
    losses, _ = L.self_supervised_objective(batch, outputs, poses, cfg)
    _, depth = G.disp_to_depth(outputs["disp/0"], cfg.model.min_depth, cfg.model.max_depth)
    target = batch["image/0"]
    reproj = torch.cat([L.photometric_error(G.warp(batch[f"image/{f}"], depth, poses[f], batch["K"], batch["inv_K"]), target)
                        for f in (-1, 1)], 1)
    identity = torch.cat([L.photometric_error(batch[f"image/{f}"], target) for f in (-1, 1)], 1)
    per_pixel, _ = L.min_reprojection(reproj, identity)
    assert torch.equal(losses["photo"], per_pixel.mean())
    warped, inside = L.warp_inside(batch["image/1"], depth, poses[1], batch["K"], batch["inv_K"])
    assert torch.equal(warped, G.warp(batch["image/1"], depth, poses[1], batch["K"], batch["inv_K"]))
    shift = round(FX * BASELINE / 4.5)  # px: target column x samples source column x + shift
    assert bool(inside[..., :W - shift].all()) and not bool(inside[..., W - shift:].any())


def test_affine_and_mask_train_finite_and_the_hint_gate_uses_the_same_error():
    from semhint.refine import reprojection_error

    batch, poses = _textured_plane_batch()
    batch = _relit(batch, 1.2, -0.05)
    batch["image/0"] = batch["image/0"].clone()
    batch["image/0"][..., 3:6, 30:34] = 1.0
    cfg = _cfg(brightness="affine", specular_threshold=0.95)
    outputs = _outputs_for_depth(4.0, cfg, requires_grad=True)
    losses, maps = L.self_supervised_objective(batch, outputs, poses, cfg)
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    assert all(torch.isfinite(outputs[f"disp/{s}"].grad).all() for s in cfg.model.scales)
    gate_error = reprojection_error(maps["depth/0"].detach(), batch, {f: poses[f] for f in (-1, 1)},
                                    brightness="affine", specular_threshold=0.95)
    torch.testing.assert_close(gate_error, maps["reproj/0"])


def _lit_from_the_camera(batch: dict) -> dict:
    """The plane batch under a point light at each camera: every frame's pixel x, y darkened by
    1 / r^2, r = Z_TRUE * |ray(x, y)| (the plane is at Z_TRUE in every camera of the batch)."""
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    K = batch["K"][0]
    ray2 = ((xs - K[0, 2]) / K[0, 0]) ** 2 + ((ys - K[1, 2]) / K[1, 1]) ** 2 + 1
    return {k: (v / ray2 if k.startswith("image/") else v) for k, v in batch.items()}


def test_inverse_square_light_relights_the_warp_from_depth_and_pose():
    """Frames lit from their own camera: at the true depth the relit warp matches the target (the
    light's change is explained, not bent into geometry), the plain loss does not; the gate's error
    uses the same model; the factor has a gradient into depth and does not see the monocular scale."""
    from semhint.refine import reprojection_error

    batch, poses = _lit_from_the_camera(_textured_plane_batch()[0]), _textured_plane_batch()[1]
    one_scale = {"data": {"height": 32, "width": 48}, "model": {"scales": [0]}, "loss": {"automask": False}}
    plain_cfg = from_dict(one_scale)
    lit_cfg = from_dict({**one_scale, "loss": {"automask": False, "brightness": "inverse_square"}})
    outputs = _outputs_for_depth(Z_TRUE, lit_cfg, requires_grad=True)
    plain, _ = L.self_supervised_objective(batch, outputs, poses, plain_cfg)
    lit, maps = L.self_supervised_objective(batch, outputs, poses, lit_cfg)
    inner = (..., slice(None), slice(4, -4))  # away from the border the warp pads
    assert maps["reproj/0"][inner].max() < 1e-3 < plain["photo"].item() / 4
    lit["loss"].backward()
    assert torch.isfinite(outputs["disp/0"].grad).all() and outputs["disp/0"].grad.abs().sum() > 0
    gate_error = reprojection_error(maps["depth/0"].detach(), batch, {f: poses[f] for f in (-1, 1)},
                                    brightness="inverse_square")
    torch.testing.assert_close(gate_error, maps["reproj/0"])
    depth = torch.full((1, 1, H, W), Z_TRUE)
    twice = poses[1].clone()
    twice[:, :3, 3] *= 2
    relit, _ = L.warp_inside(batch["image/1"], depth, poses[1], batch["K"], batch["inv_K"], light_at_camera=True)
    relit_2x, _ = L.warp_inside(batch["image/1"], 2 * depth, twice, batch["K"], batch["inv_K"], light_at_camera=True)
    torch.testing.assert_close(relit, relit_2x)
    with pytest.raises(ConfigError, match="loss.brightness"):
        from_dict({"loss": {"brightness": "inverse_cube"}})


def _fine_texture_shift_batch(shift_px: int) -> tuple[dict, torch.Tensor]:
    """A plane at depth 1 with texture about 2 px across, the sources shifted by +-shift_px (a camera
    translation along x): the motion is several times the texture's size, as on SynthTissue."""
    h, w, fx = 32, 64, 40.0
    g = torch.Generator().manual_seed(0)
    wide = F.avg_pool2d(torch.rand(1, 3, h, w + 4 * shift_px, generator=g), 3, stride=1, padding=1)

    def crop(offset: int) -> torch.Tensor:
        return wide[..., 2 * shift_px + offset:2 * shift_px + offset + w]

    K = G.intrinsics_matrix(fx, fx, (w - 1) / 2, (h - 1) / 2)[None]
    batch = {"K": K, "inv_K": torch.linalg.inv(K), "image/0": crop(0), "image/-1": crop(shift_px), "image/1": crop(-shift_px)}
    return batch, torch.tensor(shift_px / fx)  # the true baseline of frame 1 at depth 1


def test_image_pyramid_gives_the_loss_a_slope_towards_a_motion_larger_than_the_texture():
    batch, baseline = _fine_texture_shift_batch(6)
    cfg_of = {n: from_dict({"data": {"height": 32, "width": 64}, "model": {"scales": [0], "min_depth": 0.1},
                            "loss": {"image_pyramid": n, "automask": False}}) for n in (0, 3)}
    disp = {"disp/0": torch.full((1, 1, 32, 64), float(G.depth_to_disp(torch.tensor(1.0), 0.1, 100.0)))}

    def photo(levels: int, fraction: float) -> float:
        poses = {}
        for f in (-1, 1):
            T = torch.eye(4)[None].clone()
            T[0, 0, 3] = f * fraction * float(baseline)
            poses[f] = T
        return float(L.self_supervised_objective(batch, disp, poses, cfg_of[levels])[0]["photo"])

    # halfway to the true motion: at full resolution alone the texture does not overlap yet and the
    # loss is no lower than at zero motion (gradient descent from a zero start stays there); the
    # pyramid's blurred levels already overlap, so the loss falls all the way to the motion
    full = [photo(0, a) for a in (0.0, 0.5, 1.0)]
    pyramid = [photo(3, a) for a in (0.0, 0.5, 1.0)]
    assert full[2] < 0.2 * full[0] and pyramid[2] < 0.2 * pyramid[0]  # both are exact at the true motion
    assert full[1] > 0.97 * full[0]
    assert pyramid[1] < 0.85 * pyramid[0]


def test_image_pyramid_off_is_the_plain_loss_and_levels_are_validated():
    batch, poses = _textured_plane_batch()
    plain, _ = L.self_supervised_objective(batch, _outputs_for_depth(Z_TRUE, _cfg()), poses, _cfg())
    off, _ = L.self_supervised_objective(batch, _outputs_for_depth(Z_TRUE, _cfg()), poses, _cfg(image_pyramid=0))
    torch.testing.assert_close(plain["photo"], off["photo"])
    with pytest.raises(ConfigError, match="loss.image_pyramid"):
        _cfg(image_pyramid=5)
