"""Cross-task refinement on hand-made scenes whose right answer is known by construction."""

from __future__ import annotations

import math

import pytest
import torch

from semhint import losses, refine
from semhint.core import geometry
from semhint.core.config import Config, ConfigError, from_dict

H, W = 24, 32


def _two_segments(split: int = 16) -> torch.Tensor:
    """Labels: class 0 left of column ``split``, class 1 from it on."""
    lab = torch.zeros(1, H, W, dtype=torch.long)
    lab[..., split:] = 1
    return lab


def _flat_image(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.5 + 0.05 * torch.rand(1, 3, H, W, generator=g)


# ----------------------------------------------------------------------------------------------
# Operator A
# ----------------------------------------------------------------------------------------------
def test_smoothing_fills_hole_from_same_segment_only():
    lab = _two_segments()
    depth = torch.full((1, 1, H, W), 2.0)
    depth[..., 16:] = 10.0
    depth[..., 8:16, 10:16] = 5.0  # a wrong-depth hole touching the border with the far segment
    trust = torch.ones_like(depth)
    trust[..., 8:16, 10:16] = 0.01
    out = refine.segment_aware_smoothing(depth, lab, _flat_image(), radius=3, source_weight=trust, iterations=3)
    hole = out[..., 8:16, 10:16]
    assert (hole - 2.0).abs().max() < 0.1  # filled from its own segment (2), not pulled towards 10
    assert torch.allclose(out[..., 16:], depth[..., 16:])  # the other segment is untouched
    assert (out[..., :4, :6] - 2.0).abs().max() < 0.01  # good parts barely move


def test_smoothing_keeps_depth_edge_on_semantic_border():
    lab = _two_segments()
    depth = torch.full((1, 1, H, W), 2.0)
    depth[..., 16:] = 10.0
    noisy = depth * (1 + 0.05 * torch.randn(1, 1, H, W, generator=torch.Generator().manual_seed(1)))
    out = refine.segment_aware_smoothing(noisy, lab, _flat_image(), radius=4, sigma_color=1.0)
    assert out[..., :16].max() < 2.3 and out[..., 16:].min() > 9.0  # no blur across the border
    assert (out - depth).abs().mean() < (noisy - depth).abs().mean()  # and noise is reduced


def test_local_linear_smoothing_is_unbiased_on_a_slanted_plane():
    u = torch.arange(W, dtype=torch.float32)
    depth = (1.0 / (0.1 + 0.01 * u)).expand(1, 1, H, W).clone()  # a plane: disparity affine in u
    trust = torch.ones_like(depth)
    trust[..., W // 2:] = 0.02  # texture on the left half only: lopsided weights
    lab = torch.zeros(1, H, W, dtype=torch.long)
    args = (depth, lab, _flat_image(), 3, 1.0, 3.0, trust)
    inner = (..., slice(4, -4), slice(4, -4))
    mean_err = ((refine.segment_aware_smoothing(*args) - depth).abs() / depth)[inner].max()
    linear = refine.segment_aware_smoothing(*args, domain="disp", local_linear=True)
    assert ((linear - depth).abs() / depth)[inner].max() < 0.01 < 0.05 < mean_err  # 20x smaller worst error


def test_hint_leaves_a_perspective_road_alone_only_in_disparity():
    """The hint is rebuilt from the current depth every step, so its bias on the *true* depth
    compounds. A flat road seen in perspective (z = f h / (y - y_horizon)) must be a fixed point:
    it is in inverse depth (affine in y); in log-depth (convex in y) repeated smoothing pushes the
    far road away."""
    f, cam_h, horizon = 30.0, 1.5, -6.0
    y = torch.arange(H, dtype=torch.float32)
    road = (f * cam_h / (y - horizon)).view(1, 1, H, 1).expand(1, 1, H, W).clone()
    lab = torch.zeros(1, H, W, dtype=torch.long)
    image = _flat_image()
    K = torch.tensor([[[f, 0, W / 2], [0, f, horizon], [0, 0, 1]]])
    drift = {}
    for domain in ("log", "disp"):
        cfg = Config().refine
        cfg.hint_operators, cfg.smooth_domain = ["smooth"], domain
        d = road
        for _ in range(5):
            d = refine.make_depth_hint(d, lab, image, K, cfg)
        drift[domain] = ((d - road) / road)[..., 6:-6, :]  # one-sided windows at the image edges fit less well
    assert drift["disp"].abs().max() < 2e-3
    assert drift["log"].max() > 0.02 and drift["log"].mean() > 0  # the log-domain hint moves the road away


def test_texture_weight_is_low_on_flat_regions():
    img = torch.zeros(1, 3, H, W)
    img[..., :, :16] = torch.rand(1, 3, H, 16, generator=torch.Generator().manual_seed(2))
    wgt = refine.texture_weight(img, floor=0.05)
    assert wgt[..., 4:-4, 2:12].mean() > 0.4
    assert torch.allclose(wgt[..., :, 20:], torch.full_like(wgt[..., :, 20:], 0.05))


# ----------------------------------------------------------------------------------------------
# Operator B
# ----------------------------------------------------------------------------------------------
def _ground_plane_scene(height: float = 1.5, f: float = 40.0):
    K = geometry.intrinsics_matrix(f, f, (W - 1) / 2, (H - 1) / 2)[None]
    v = torch.arange(H, dtype=torch.float32).view(H, 1).expand(H, W)
    below = v > (H - 1) / 2 + 0.5
    depth = torch.where(below, height * f / (v - (H - 1) / 2).clamp_min(0.5), torch.tensor(50.0))[None, None]
    lab = torch.where(below, 0, 2)[None].long()
    return K, depth.clone(), lab


def test_ransac_recovers_ground_plane_under_outliers():
    K, depth, lab = _ground_plane_scene()
    g = torch.Generator().manual_seed(0)
    noisy = depth.clone()
    outlier = torch.rand(depth.shape, generator=g) < 0.3
    noisy[outlier] *= 0.2 + 3 * torch.rand(depth.shape, generator=g)[outlier]
    fit, valid = refine.segment_surface_fit(noisy, lab, K, classes=[0], min_pixels=20, generator=g)
    road = lab[:, None] == 0
    assert torch.equal(valid, road)
    assert ((fit - depth).abs() / depth)[road].max() < 0.01  # outliers are replaced by the plane
    assert torch.equal(fit[~road], noisy[~road])  # other classes keep their depth


def test_surface_band_leaves_a_mislabelled_object_alone():
    """A car the labels call road stands in front of the plane: with a band the plane does not flatten it."""
    K, depth, lab = _ground_plane_scene()
    scene = depth.clone()
    scene[..., -6:-2, 8:14] = scene[..., -2:, 8:14].min() * 0.5  # an object nearer than the road behind it, labelled road
    road_off = scene.clone()
    road_off[..., H // 2 + 2:H // 2 + 4, 20:24] *= 1.2  # a badly predicted road patch, 20 % off the plane
    g = torch.Generator().manual_seed(0)
    fit, valid = refine.segment_surface_fit(road_off, lab, K, classes=[0], min_pixels=20, band=0.3, generator=g)
    car = torch.zeros_like(valid)
    car[..., -6:-2, 8:14] = True
    assert not valid[car].any() and torch.equal(fit[car], road_off[car])  # the object keeps its depth
    patch = (slice(None), slice(None), slice(H // 2 + 2, H // 2 + 4), slice(20, 24))
    assert valid[patch].all() and ((fit - depth).abs() / depth)[patch].max() < 0.01  # the road patch is corrected
    fit0, valid0 = refine.segment_surface_fit(road_off, lab, K, classes=[0], min_pixels=20,
                                              generator=torch.Generator().manual_seed(0))
    assert valid0[car].all() and ((fit0 - depth).abs() / depth)[car].max() < 0.01  # without: pushed onto the road


def test_level_ground_plane_undoes_a_compressed_depth_range_that_a_free_plane_keeps():
    """A short run's road is a plane with too little range (inverse depth = a true + b, b > 0: the far
    road too near). A free plane fits that exactly; the level plane (order 0) has no intercept, so it
    returns the true road up to scale, with noise and outliers on top."""
    K, depth, lab = _ground_plane_scene()
    road = lab[:, None] == 0
    g = torch.Generator().manual_seed(1)
    compressed = 1 / (0.5 / depth + 0.5 * (1 / depth)[road].mean())
    noisy = compressed * (1 + 0.03 * torch.randn(depth.shape, generator=g))
    noisy[torch.rand(depth.shape, generator=g) < 0.2] *= 3.0
    free, _ = refine.segment_surface_fit(noisy, lab, K, classes=[0], order=1, min_pixels=20,
                                         generator=torch.Generator().manual_seed(0))
    level, valid = refine.segment_surface_fit(noisy, lab, K, classes=[0], order=0, min_pixels=20,
                                              inlier_threshold=0.3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(valid, road)

    def scaled_abs_rel(pred: torch.Tensor) -> float:
        p, t = pred[road], depth[road]
        return float(((p * (t.median() / p.median()) - t).abs() / t).mean())

    assert scaled_abs_rel(level) < 0.01 < 0.1 < scaled_abs_rel(free)
    # operator D on the level plane: class 2 (the upper half) stands on the road's first row
    contact, ok = refine.ground_contact(noisy, lab, K, [0], [2], ground_order=0, inlier_threshold=0.3,
                                        generator=torch.Generator().manual_seed(0))
    first_road = int(road[0, 0, :, 0].nonzero()[0])
    assert torch.equal(ok, ~road)
    torch.testing.assert_close(contact[ok], level[..., first_road, :].expand_as(contact)[ok])


def test_surface_fit_order2_and_rejects_non_surfaces():
    K, _, _ = _ground_plane_scene()
    x = (torch.arange(W) - (W - 1) / 2) / 40.0
    y = (torch.arange(H) - (H - 1) / 2) / 40.0
    inv = 0.1 + 0.02 * y.view(H, 1) ** 2 + 0.03 * x.view(1, W) ** 2 + 0.01 * x.view(1, W)
    depth = (1 / inv)[None, None]
    lab = torch.zeros(1, H, W, dtype=torch.long)
    fit, valid = refine.segment_surface_fit(depth, lab, K, classes=[0], order=2, min_pixels=20,
                                            generator=torch.Generator().manual_seed(0))
    assert valid.all() and ((fit - depth).abs() / depth).max() < 1e-3
    rough = depth * (0.3 + 2 * torch.rand(depth.shape, generator=torch.Generator().manual_seed(3)))
    _, valid = refine.segment_surface_fit(rough, lab, K, classes=[0], order=1, min_pixels=20,
                                          generator=torch.Generator().manual_seed(0))
    assert not valid.any()


# ----------------------------------------------------------------------------------------------
# Operator E (facades along the direction of travel) and the camera geometry of B, D, E:
# tests/test_refine_geometry.py
# ----------------------------------------------------------------------------------------------
def _street_canyon(f: float = 40.0, left: float = 6.0, right: float = 9.0):
    """Facades on both sides of a camera looking along the street: z = X / |x|, x = (u - cx) / f."""
    K = geometry.intrinsics_matrix(f, f, (W - 1) / 2, (H - 1) / 2)[None]
    x = ((torch.arange(W, dtype=torch.float32) - (W - 1) / 2) / f).view(1, W).expand(H, W)
    depth = torch.where(x < 0, left / x.abs().clamp_min(1e-3), right / x.abs().clamp_min(1e-3)).clamp_max(80.0)
    lab = torch.full((1, H, W), 2, dtype=torch.long)
    lab[:, :, (x[0].abs() < 0.1)] = 10  # sky down the middle
    return K, depth[None, None].clone(), lab


# ----------------------------------------------------------------------------------------------
# Operator D: ground contact
# ----------------------------------------------------------------------------------------------
def test_vertical_run_end_finds_the_last_row_of_each_run():
    lab = torch.tensor([[0], [0], [1], [1], [1], [0]]).view(1, 6, 1)
    assert refine.vertical_run_end(lab).view(-1).tolist() == [1, 1, 4, 4, 4, 5]


def _box_on_ground(box_class: int = 13):
    """The ground plane scene with an upright box standing on it (true depth: the ground's at its foot)."""
    K, depth, lab = _ground_plane_scene()
    top, foot, left, right = 6, 16, 10, 20  # box rows top..foot, it touches the ground at row foot + 1
    box_depth = depth[0, 0, foot + 1, left].item()
    depth[..., top:foot + 1, left:right] = box_depth
    lab[:, top:foot + 1, left:right] = box_class
    return K, depth, lab, (slice(top, foot + 1), slice(left, right)), box_depth


def test_ground_contact_puts_a_misplaced_object_back_on_the_ground():
    K, truth, lab, box, box_depth = _box_on_ground()
    wrong = truth.clone()
    wrong[..., box[0], box[1]] *= 3.0  # a textureless box predicted three times too far
    hint, valid = refine.ground_contact(wrong, lab, K, ground_classes=[0], upright_classes=[13],
                                        generator=torch.Generator().manual_seed(0))
    assert valid[..., box[0], box[1]].all() and valid.sum() == valid[..., box[0], box[1]].sum()
    assert torch.allclose(hint[..., box[0], box[1]], torch.tensor(box_depth), rtol=1e-3)
    assert torch.equal(hint[~valid], wrong[~valid])  # everything else keeps its depth


def test_ground_contact_leaves_objects_not_standing_on_ground_alone():
    K, truth, lab, box, _ = _box_on_ground()
    lab[:, box[0].stop, box[1]] = 2  # the row under the box is not ground (e.g. another object)
    _, valid = refine.ground_contact(truth, lab, K, ground_classes=[0], upright_classes=[13],
                                     generator=torch.Generator().manual_seed(0))
    assert not valid.any()
    _, valid = refine.ground_contact(truth, _box_on_ground(box_class=7)[2], K, ground_classes=[0],
                                     upright_classes=[13], generator=torch.Generator().manual_seed(0))
    assert not valid.any()  # a class that is not upright-on-ground (e.g. a sign) is not moved


def test_contact_operator_needs_its_classes_in_the_config():
    import pytest

    from semhint.core.config import ConfigError, from_dict

    cfg = {"model": {"num_classes": 19}, "refine": {"hint": True, "hint_operators": ["contact"], "upright_classes": []}}
    with pytest.raises(ConfigError, match="upright_classes"):
        refine.check_config(from_dict(cfg, "test.yaml"))


# ----------------------------------------------------------------------------------------------
# Operator C and border snapping
# ----------------------------------------------------------------------------------------------
def test_border_morphing_moves_discontinuity_onto_border():
    lab = _two_segments(16)
    depth = torch.full((1, 1, H, W), 2.0)
    depth[..., 14:] = 10.0  # the depth edge sits 2 px inside class 0 (edge fattening)
    out = refine.border_morphing(depth, lab, band=3)
    expected = torch.where(torch.arange(W) < 16, 2.0, 10.0).expand(1, 1, H, W)
    assert torch.allclose(out, expected, rtol=1e-5)
    # a misplacement in the other direction, too
    depth = torch.full((1, 1, H, W), 2.0)
    depth[..., 18:] = 10.0
    assert torch.allclose(refine.border_morphing(depth, lab, band=3), expected, rtol=1e-5)


def test_border_morphing_keeps_correct_gradients():
    lab = _two_segments(16)
    ramp = torch.linspace(2.0, 3.0, W).expand(1, 1, H, W).clone()
    ramp[..., 16:] += 10.0
    assert torch.allclose(refine.border_morphing(ramp, lab, band=3), ramp)


def test_snap_borders_moves_class_edge_to_depth_edge():
    labels = torch.where(torch.arange(W) < 14, 0, 1).expand(1, H, W).clone()
    depth = torch.where(torch.arange(W) < 16, 2.0, 10.0).expand(1, 1, H, W)
    snapped = refine.snap_borders(labels, depth, band=2)
    assert torch.equal(snapped, _two_segments(16))


# ----------------------------------------------------------------------------------------------
# the gate on a scene with known depth: textured fronto-parallel plane, sideways camera motion
# ----------------------------------------------------------------------------------------------
def _plane_scene(z: float = 5.0, tx: float = 0.4, f: float = 40.0):
    """Target and source images of a textured plane at depth z; the source camera sits tx to the
    right (T maps target points x -> x - tx into it). Texture is an analytic function of the plane
    coordinates, so both views are exact renderings."""
    K = geometry.intrinsics_matrix(f, f, (W - 1) / 2, (H - 1) / 2)[None]
    u = torch.arange(W, dtype=torch.float32).view(1, W)
    v = torch.arange(H, dtype=torch.float32).view(H, 1)

    def render(shift: float) -> torch.Tensor:
        X = (u - (W - 1) / 2) * z / f + shift
        Y = (v - (H - 1) / 2) * z / f
        chans = [0.5 + 0.2 * torch.sin(3.1 * X + 1.7 * Y * c) * torch.cos(2.3 * Y - 0.9 * X * c) for c in (1, 2, 3)]
        return torch.stack([ch.expand(H, W) for ch in chans])[None]

    T = torch.eye(4)[None].clone()
    T[0, 0, 3] = -tx
    batch = {"image/0": render(0.0), "image/1": render(tx), "K": K, "inv_K": torch.linalg.inv(K)}
    return batch, {1: T}, torch.full((1, 1, H, W), z)


def test_gate_accepts_improving_hint_and_rejects_worsening_one():
    batch, poses, true_depth = _plane_scene()
    wrong = true_depth * 1.6
    err_true = refine.reprojection_error(true_depth, batch, poses)
    err_wrong = refine.reprojection_error(wrong, batch, poses)
    inner = (slice(None), slice(None), slice(3, -3), slice(8, -8))  # away from the out-of-view strip
    accept = refine.hint_gate(err_true, err_wrong)
    reject = refine.hint_gate(err_wrong, err_true)
    assert accept[inner].float().mean() > 0.9
    assert reject[inner].float().mean() < 0.1
    assert not refine.hint_gate(err_true, err_wrong, torch.zeros_like(accept)).any()  # automask vetoes


def test_gate_margin_breaks_ties_but_still_rejects_a_clearly_worse_hint():
    pred = torch.full((1, 1, 2, 2), 0.10)
    hint = torch.tensor([0.10, 0.105, 0.13, 0.09]).view(1, 1, 2, 2)  # tie, a bit worse, clearly worse, better
    assert refine.hint_gate(hint, pred).view(-1).tolist() == [False, False, False, True]
    assert refine.hint_gate(hint, pred, margin=0.01).view(-1).tolist() == [True, True, False, True]


def test_gate_on_masked_lets_semantics_decide_where_photometry_has_no_say():
    """A surface moving with the camera: both views show it unchanged although the camera moved.

    The photometric comparison prefers the wrong (far) depth, and the auto-mask drops the pixels;
    the paper's gate rejects the right hint there, ``on_masked`` accepts it."""
    batch, poses, true_depth = _plane_scene()
    batch = {**batch, "image/1": batch["image/0"].clone()}  # the surface kept pace with the camera
    far, hint = true_depth * 50, true_depth
    err_far, err_hint = refine.reprojection_error(far, batch, poses), refine.reprojection_error(hint, batch, poses)
    identity = losses.photometric_error(batch["image/1"], batch["image/0"])
    _, automask = losses.min_reprojection(err_far, identity)
    inner = (slice(None), slice(None), slice(3, -3), slice(8, -8))
    assert (err_hint > err_far)[inner].float().mean() > 0.9  # photometry favours infinity
    assert automask[inner].mean() < 0.1  # and the auto-mask drops the pixels
    assert refine.hint_gate(err_hint, err_far, automask)[inner].float().mean() < 0.1
    assert refine.hint_gate(err_hint, err_far, automask, on_masked=True)[inner].float().mean() > 0.9
    # where the auto-mask keeps a pixel, the photometric comparison still decides
    kept = torch.ones_like(automask)
    assert refine.hint_gate(err_hint, err_far, kept, on_masked=True)[inner].float().mean() < 0.1


def test_hint_segments_follow_the_noisy_labels_where_they_exist():
    logits = torch.zeros(1, 3, 2, 2)
    logits[:, 2] = 1.0  # the branch says class 2 everywhere
    labels = torch.tensor([[[0, 1], [255, 0]]])
    outputs, batch = {"seg/0": logits}, {"labels/0": labels}
    assert refine.hint_segments(outputs, batch, "prediction").tolist() == [[[2, 2], [2, 2]]]
    assert refine.hint_segments(outputs, batch, "labels").tolist() == [[[0, 1], [2, 0]]]  # ignored -> branch
    assert refine.hint_segments(outputs, {}, "labels").tolist() == [[[2, 2], [2, 2]]]  # no labels in the batch


# ----------------------------------------------------------------------------------------------
# pseudo-semantics
# ----------------------------------------------------------------------------------------------
def test_temporal_fusion_of_static_scene_returns_same_labels():
    batch, poses, depth = _plane_scene(tx=0.2)
    labels = (torch.arange(W) * 5 // W).expand(1, H, W)  # 5 vertical stripes fixed in the target
    # the source sees the same stripes shifted by the true disparity f * tx / z = 1.6 px
    probs = torch.nn.functional.one_hot(labels, 5).permute(0, 3, 1, 2).float()
    shifted = torch.roll(probs, shifts=-2, dims=-1)  # integer shift close to the disparity
    warped, valid = refine.warp_probabilities(shifted, depth, poses[1], batch["K"], batch["inv_K"])
    fused = refine.fuse_probabilities(probs, [warped], [valid])
    assert torch.equal(fused.argmax(1), labels)
    assert not valid[..., 0].any() and valid[..., 2:].all()  # the left strip leaves the source view
    # with the exact pose and a warp of the target itself, fusion is the identity
    same, ok = refine.warp_probabilities(probs, depth, torch.eye(4)[None], batch["K"])
    assert ok.all() and torch.allclose(refine.fuse_probabilities(probs, [same], [ok]), probs, atol=1e-5)


def test_label_selection_ignores_disagreeing_unconfident_pixels():
    fused = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.55, 0.45], [0.9, 0.1]]).T.reshape(1, 2, 1, 4)
    noisy = torch.tensor([[[0, 1, 0, 1]]])
    photo = torch.tensor([[[[0.5, 0.5, 0.01, 0.01]]]])
    out = refine.select_pseudo_labels(fused, noisy, photo, confidence=0.7, max_photo=0.1)
    # agree+confident -> kept; disagree+inconsistent -> ignored; unconfident -> ignored;
    # disagree but photometrically consistent -> kept
    assert out.tolist() == [[[0, 255, 255, 0]]]


# ----------------------------------------------------------------------------------------------
# the training-step entry point
# ----------------------------------------------------------------------------------------------
def _step_inputs():
    """A real objective on the plane scene: a patch of the prediction is too far, the seg logits random."""
    from semhint import losses

    batch, poses, depth = _plane_scene()
    cfg = Config()
    cfg.data.frame_ids = [0, 1]
    cfg.model.num_classes = 3
    cfg.model.scales = [0, 1]
    cfg.refine.hint = cfg.refine.pseudo_seg = True
    cfg.refine.hint_operators = ["smooth", "surface", "border"]
    cfg.refine.warmup_epochs = 1
    cfg.refine.pseudo_seg_confidence = 0.4
    g = torch.Generator().manual_seed(0)
    wrong = depth.clone()
    wrong[..., 8:16, 12:20] *= 1.5
    disp = geometry.depth_to_disp(wrong, cfg.model.min_depth, cfg.model.max_depth)
    outputs = {
        "disp/0": disp.clone().requires_grad_(True),
        "disp/1": torch.nn.functional.avg_pool2d(disp, 2).requires_grad_(True),
        "seg/0": torch.randn(1, 3, H, W, generator=g).requires_grad_(True),
    }
    batch["labels/0"] = outputs["seg/0"].detach().argmax(1)
    batch["gt_labels/0"] = torch.randint(0, 3, (1, H, W), generator=g)
    _, maps = losses.self_supervised_objective(batch, outputs, poses, cfg)
    source_outputs = {1: {"seg/0": torch.randn(1, 3, H, W, generator=g)}}
    return batch, outputs, maps, poses, source_outputs, cfg


def test_refinement_losses_zero_before_warmup():
    batch, outputs, maps, poses, src, cfg = _step_inputs()
    losses, stats = refine.refinement_losses(batch, outputs, maps, poses, src, cfg, epoch=0)
    assert set(losses) == {"loss", "hint", "pseudo_seg"}
    assert all(float(v.detach()) == 0.0 for v in losses.values()) and stats == {}


def test_refinement_losses_finite_and_differentiable_after_warmup():
    batch, outputs, maps, poses, src, cfg = _step_inputs()
    losses, stats = refine.refinement_losses(batch, outputs, maps, poses, src, cfg, epoch=1)
    assert all(math.isfinite(float(v.detach())) for v in losses.values())
    assert float(losses["hint"].detach()) > 0 and float(losses["pseudo_seg"].detach()) > 0
    losses["loss"].backward()
    assert outputs["disp/0"].grad.abs().sum() > 0 and outputs["disp/1"].grad.abs().sum() > 0
    assert outputs["seg/0"].grad.abs().sum() > 0
    for key in ("hint_accept_rate", "pseudo_label_rate", "pseudo_label_agreement", "pseudo_label_gt_accuracy",
                "noisy_label_gt_accuracy"):
        assert 0.0 <= stats[key] <= 1.0


def test_refinement_losses_all_ignored_is_zero_not_nan():
    batch, outputs, maps, poses, src, cfg = _step_inputs()
    cfg.refine.hint = False
    cfg.refine.pseudo_seg_confidence = 1.0  # nothing is that confident
    losses, stats = refine.refinement_losses(batch, outputs, maps, poses, src, cfg, epoch=3)
    assert float(losses["pseudo_seg"].detach()) == 0.0 and stats["pseudo_label_rate"] == 0.0


def _wrong_patch_step(seg: torch.Tensor, stuff_classes: list[int], hint_classes: list[int]):
    """A plane scene whose depth has a patch pushed back (a local minimum), with operator B's hint on:
    (batch, outputs, maps, poses, cfg, exact depth) ready for refinement_losses."""
    batch, poses, depth = _plane_scene()
    cfg = Config()
    cfg.data.frame_ids = [0, 1]
    cfg.model.num_classes = seg.shape[1]
    cfg.model.scales = [0]
    cfg.refine.hint = True
    cfg.refine.hint_operators = ["surface"]
    cfg.refine.stuff_classes = stuff_classes
    cfg.refine.hint_classes = hint_classes
    cfg.refine.warmup_epochs = 0
    wrong = depth.clone()
    wrong[..., 8:16, 12:20] *= 1.5
    outputs = {"disp/0": geometry.depth_to_disp(wrong, 0.1, 100.0).requires_grad_(True), "seg/0": seg}
    _, maps = losses.self_supervised_objective(batch, outputs, poses, cfg)
    return batch, outputs, maps, poses, cfg, depth


def test_hint_is_accepted_where_it_fixes_a_wrong_patch():
    batch, outputs, maps, poses, cfg, depth = _wrong_patch_step(torch.zeros(1, 1, H, W), [0], [])
    batch["depth_gt"] = torch.nn.functional.interpolate(depth, scale_factor=2.0)  # GT at its own resolution
    terms, stats = refine.refinement_losses(batch, outputs, maps, poses, {}, cfg, epoch=0)
    assert float(terms["hint"].detach()) > 0
    assert stats["hint_gt_absrel"] < 0.01 < 0.3 < stats["pred_gt_absrel"]  # the accepted hints are right
    assert 0.05 < stats["hint_accept_rate"] < 0.2  # about the patch (64 of 768 pixels), not the rest
    assert stats["hint_accept_of_changed"] > 0.8
    terms["loss"].backward()
    grad = outputs["disp/0"].grad[0, 0]
    assert grad[8:16, 12:20].abs().sum() > 10 * grad[:4].abs().sum()


def test_hint_classes_restrict_the_hint_to_their_segments():
    seg = torch.zeros(1, 2, H, W)  # each half of the image is its own plane segment; the wrong patch
    seg[:, 0, :, :16] = 1.0        # (columns 12-19) straddles the class border at column 16
    seg[:, 1, :, 16:] = 1.0
    batch, outputs, maps, poses, cfg, _ = _wrong_patch_step(seg, [0, 1], [1])
    terms, stats = refine.refinement_losses(batch, outputs, maps, poses, {}, cfg, epoch=0)
    terms["loss"].backward()
    grad = outputs["disp/0"].grad[0, 0].abs()
    assert grad[8:16, 16:20].sum() > 0 and grad[:, :16].sum() == 0  # class 0's half of the patch is left alone
    assert 0 < stats["hint_accept_rate"] < 0.05  # ~32 of 768 pixels


def test_oracle_hint_is_the_scaled_ground_truth_where_it_exists():
    depth = torch.full((1, 1, 4, 4), 2.0)
    gt = torch.full((1, 1, 8, 8), 10.0)
    gt[..., :2, :] = 0.0  # no ground truth in the top rows
    gt[..., 4:, :] = 20.0
    hint = refine.oracle_hint(depth, gt)
    scale = 2.0 / 20.0  # prediction median / ground-truth median (rows 1-3 of the 4x4 map hold GT)
    assert torch.equal(hint[..., 0, :], depth[..., 0, :])  # no GT: the prediction, i.e. unchanged
    assert torch.allclose(hint[..., 1, :], torch.full((4,), 10.0 * scale))
    assert torch.allclose(hint[..., 2:, :], torch.full((2, 4), 20.0 * scale))
    with pytest.raises(ValueError, match="ground-truth depth"):
        refine.oracle_hint(depth, None)


def test_oracle_operator_needs_ground_truth_in_the_config():
    with pytest.raises(ConfigError, match="oracle"):
        refine.check_config(from_dict({"model": {"num_classes": 19}, "refine": {"hint": True, "hint_operators": ["oracle"]}},
                                      "test.yaml"))


def test_config_validation_reads_the_operator_registry(monkeypatch):
    cfg = from_dict({"model": {"num_classes": 19}, "refine": {"hint": True, "hint_operators": ["surface", "plane9"]}})
    with pytest.raises(ConfigError, match=r"refine\.hint_operators: unknown \['plane9'\]; choose from smooth, surface"):
        refine.check_config(cfg)
    # registering an operator is all it takes for the config and the hint to accept it
    monkeypatch.setitem(refine.OPERATORS, "plane9", refine.Operator("F", lambda depth, x, r: depth * 2))
    refine.check_config(cfg)
    K, depth, lab = _street_canyon()
    hint = refine.make_depth_hint(depth, lab, torch.rand(1, 3, H, W), K,
                                  from_dict({"refine": {"hint_operators": ["plane9"]}}).refine)
    torch.testing.assert_close(hint, depth * 2)


def test_hint_class_mask_and_its_config_check():
    labels = torch.tensor([[[0, 13], [14, 255]]])
    assert refine.hint_class_mask(labels, [13, 14]).view(-1).tolist() == [False, True, True, False]
    assert refine.hint_class_mask(labels, []).all()
    cfg = {"model": {"num_classes": 19}, "refine": {"hint": True, "hint_classes": [13, 19]}}
    with pytest.raises(ConfigError, match=r"refine.hint_classes.*\[19\]"):
        from_dict(cfg, "test.yaml")


def test_trust_region_bounds_the_hint_by_ratio_and_depth_range():
    depth = torch.tensor([1.0, 1.0, 1.0, 50.0]).view(1, 1, 2, 2)
    hint = torch.tensor([1.5, 10.0, 0.1, 1e6]).view(1, 1, 2, 2)  # fine, too far, too near, past max_depth
    out = refine.trust_region(hint, depth, 2.0, 0.01, 80.0)
    assert out.view(-1).tolist() == [1.5, 2.0, 0.5, 80.0]
    assert refine.trust_region(hint, depth, 0.0, 0.01, 80.0).view(-1).tolist() == [1.5, 10.0, 0.10000000149011612, 80.0]
