"""Camera math against the Monodepth2 reference outputs (oracles) and its own algebraic properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from semhint.core import geometry as G


def _t(arrays, key: str) -> torch.Tensor:
    return torch.from_numpy(arrays[key])


def _random_K(b: int = 2, h: int = 24, w: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    K = torch.eye(4).repeat(b, 1, 1)
    K[:, 0, 0] = w * (0.5 + torch.rand(b, generator=g))
    K[:, 1, 1] = h * (0.8 + torch.rand(b, generator=g))
    K[:, 0, 2] = w / 2 + torch.randn(b, generator=g)
    K[:, 1, 2] = h / 2 + torch.randn(b, generator=g)
    return K


# ---------------------------------------------------------------------------------------------- oracles
def test_pose_from_axisangle_matches_oracle(oracle):
    w = oracle("warp.npz")
    T = G.pose_from_axisangle(_t(w, "axisangle"), _t(w, "translation"))
    T_inv = G.pose_from_axisangle(_t(w, "axisangle"), _t(w, "translation"), invert=True)
    np.testing.assert_allclose(T.numpy(), w["T"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(T_inv.numpy(), w["T_inverted"], rtol=1e-5, atol=1e-6)


def test_backproject_project_warp_match_oracle(oracle):
    w = oracle("warp.npz")
    K = _t(w, "K")
    depth = _t(w, "depth")
    h, wd = depth.shape[-2:]
    T = torch.from_numpy(w["T"])
    cam = G.backproject(depth, torch.linalg.inv(K))
    np.testing.assert_allclose(cam.numpy(), w["cam_points"], rtol=1e-5, atol=1e-6)
    grid = G.project(cam, K, T, h, wd)
    np.testing.assert_allclose(grid.numpy(), w["pix_coords_normalised"], rtol=1e-5, atol=1e-5)
    warped = G.sample(_t(w, "source"), grid, padding_mode="border")
    np.testing.assert_allclose(warped.numpy(), w["warped"], rtol=1e-5, atol=1e-5)
    # the one-call helper gives the same image
    np.testing.assert_allclose(G.warp(_t(w, "source"), depth, T, K).numpy(), w["warped"], rtol=1e-5, atol=1e-5)


def test_disp_to_depth_matches_oracle(oracle):
    d = oracle("losses.npz")
    scaled, depth = G.disp_to_depth(_t(d, "disp"), 0.1, 100.0)
    np.testing.assert_allclose(scaled.numpy(), d["scaled_disp"], rtol=1e-5)
    np.testing.assert_allclose(depth.numpy(), d["depth_min0p1_max100"], rtol=1e-5)


# ---------------------------------------------------------------------------------------------- properties
def test_project_of_backproject_with_identity_pose_is_the_pixel_grid():
    b, h, w = 2, 6, 9
    K = _random_K(b, h, w)
    depth = 0.5 + torch.rand(b, 1, h, w, generator=torch.Generator().manual_seed(1)) * 20
    points = G.backproject(depth, torch.linalg.inv(K))
    pix, z = G.project_to_pixels(points, K, torch.eye(4).repeat(b, 1, 1))
    expected = G.pixel_grid(h, w)[:2].expand(b, 2, h * w)
    torch.testing.assert_close(pix, expected, rtol=0, atol=1e-4)
    torch.testing.assert_close(z.reshape(b, 1, h, w), depth, rtol=1e-5, atol=1e-5)
    grid = G.project(points, K, torch.eye(4).repeat(b, 1, 1), h, w)
    assert grid.min() >= -1 - 1e-5 and grid.max() <= 1 + 1e-5
    torch.testing.assert_close(grid[:, 0, 0], torch.full((b, 2), -1.0), rtol=0, atol=1e-5)
    torch.testing.assert_close(grid[:, -1, -1], torch.full((b, 2), 1.0), rtol=0, atol=1e-5)


def test_identity_pose_warps_an_image_onto_itself():
    b, h, w = 2, 8, 12
    image = torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(2))
    depth = torch.full((b, 1, h, w), 7.0)
    warped = G.warp(image, depth, torch.eye(4).repeat(b, 1, 1), _random_K(b, h, w))
    torch.testing.assert_close(warped, image, rtol=0, atol=1e-4)


def test_sideways_translation_shifts_a_plane_by_the_disparity():
    """A camera moved by t along x sees a plane at depth Z shifted by fx * t / Z pixels."""
    h, w, fx, Z, t = 10, 30, 20.0, 5.0, 0.5  # shift = 2 px
    K = G.intrinsics_matrix(fx, fx, (w - 1) / 2, (h - 1) / 2)[None]
    image = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(3))
    T = torch.eye(4)[None].clone()
    T[0, 0, 3] = t  # target points land 2 px to the right in the source
    warped = G.warp(image, torch.full((1, 1, h, w), Z), T, K)
    torch.testing.assert_close(warped[..., :-2], image[..., 2:], rtol=0, atol=1e-4)


def test_scale_and_resize_intrinsics_round_trip():
    K = G.intrinsics_matrix(721.5, 721.5, 609.6, 172.9)
    K_small = G.resize_intrinsics(K, (375, 1242), (192, 640))
    torch.testing.assert_close(G.resize_intrinsics(K_small, (192, 640), (375, 1242)), K, rtol=1e-6, atol=1e-4)
    sx, sy = 640 / 1242, 192 / 375
    torch.testing.assert_close(G.scale_intrinsics(K, sx, sy), K_small)
    assert K_small[0, 0] == pytest.approx(721.5 * sx)
    # pixel-edge model: the image's left edge (-0.5) and right edge (W - 0.5) map onto the new edges
    assert (-0.5 - 609.6) * sx == pytest.approx(-0.5 - float(K_small[0, 2]), rel=1e-5)
    assert (1242 - 0.5 - 609.6) * sx == pytest.approx(640 - 0.5 - float(K_small[0, 2]), rel=1e-5)


def test_scaled_intrinsics_keep_rays_of_downsampled_pixels():
    """A 2x downsample: new pixel (x, y) covers old pixels 2x .. 2x + 1, centred at 2x + 0.5."""
    K = G.intrinsics_matrix(100.0, 90.0, 31.5, 23.5)
    K2 = G.scale_intrinsics(K, 0.5, 0.5)
    new_px = torch.tensor([[3.0], [5.0], [1.0]])
    old_px = torch.tensor([[6.5], [10.5], [1.0]])
    ray_new = torch.linalg.inv(K2[:3, :3]) @ new_px
    ray_old = torch.linalg.inv(K[:3, :3]) @ old_px
    torch.testing.assert_close(ray_new, ray_old)


def test_crop_and_flip_intrinsics():
    K = G.intrinsics_matrix(50.0, 50.0, 20.0, 12.0)
    Kc = G.crop_intrinsics(K, 4, 3)
    assert (float(Kc[0, 2]), float(Kc[1, 2])) == (16.0, 9.0)
    assert float(Kc[0, 0]) == 50.0
    Kf = G.flip_intrinsics(K, 40)
    assert float(Kf[0, 2]) == 19.0  # mirrored about (W - 1) / 2 = 19.5
    torch.testing.assert_close(G.flip_intrinsics(Kf, 40), K)
    # a point's flipped projection is the mirrored pixel
    point = torch.tensor([[1.0], [0.5], [4.0], [1.0]])
    x = float((K @ point)[0, 0] / 4.0)
    mirrored = torch.tensor([[-1.0], [0.5], [4.0], [1.0]])
    x_f = float((Kf @ mirrored)[0, 0] / 4.0)
    assert x_f == pytest.approx(39 - x)
    assert K[0, 2] == 20.0  # inputs are not modified in place


def test_invert_pose_matches_inverted_axisangle_and_composes_to_identity():
    g = torch.Generator().manual_seed(4)
    axisangle = torch.randn(3, 1, 3, generator=g) * 0.3
    translation = torch.randn(3, 1, 3, generator=g)
    T = G.pose_from_axisangle(axisangle, translation)
    T_inv = G.invert_pose(T)
    torch.testing.assert_close(T_inv, G.pose_from_axisangle(axisangle, translation, invert=True), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(T @ T_inv, torch.eye(4).expand(3, 4, 4), rtol=0, atol=1e-5)
    R = T[:, :3, :3]
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3).expand(3, 3, 3), rtol=0, atol=1e-5)


def test_depth_to_disp_inverts_disp_to_depth():
    disp = torch.rand(2, 1, 5, 7, generator=torch.Generator().manual_seed(5))
    _, depth = G.disp_to_depth(disp, 0.1, 100.0)
    assert depth.min() >= 0.1 - 1e-6 and depth.max() <= 100.0 + 1e-3
    torch.testing.assert_close(G.depth_to_disp(depth, 0.1, 100.0), disp, rtol=1e-4, atol=1e-5)


def test_depth_to_points_matches_backproject():
    K = _random_K(1, 5, 6)
    depth = torch.rand(1, 1, 5, 6, generator=torch.Generator().manual_seed(6)) + 1
    cloud = G.depth_to_points(depth[0, 0], K[0])
    torch.testing.assert_close(cloud, G.backproject(depth, torch.linalg.inv(K))[0, :3].T, rtol=1e-5, atol=1e-5)


def test_axisangle_to_matrix_matches_opencv_rodrigues_from_tiny_to_large_angles():
    cv2 = pytest.importorskip("cv2")
    g = np.random.default_rng(0)
    vectors = [g.normal(size=3) * scale for scale in (1e-9, 1e-6, 1e-4, 1e-2, 0.3, 1.0, 3.0)]
    R = G.axisangle_to_matrix(torch.tensor(np.array(vectors))[:, None])
    for v, got in zip(vectors, R):
        np.testing.assert_allclose(got[:3, :3].numpy(), cv2.Rodrigues(v)[0], atol=1e-12)
        assert got[3, 3] == 1 and not got[:3, 3].any() and not got[3, :3].any()


def test_axisangle_to_matrix_has_the_true_gradient_at_zero():
    """dR/dv at v = 0 is the skew matrix of dv; a zero-initialised pose head depends on it."""
    jac = torch.autograd.functional.jacobian(lambda v: G.axisangle_to_matrix(v)[0, :3, :3],
                                             torch.zeros(1, 1, 3, dtype=torch.float64))[..., 0, 0, :]
    e = torch.eye(3, dtype=torch.float64)
    for k in range(3):
        skew = torch.linalg.cross(e[k].expand(3, 3), e, dim=-1).T  # [e_k]x: column j is e_k x e_j
        torch.testing.assert_close(jac[..., k], skew)
