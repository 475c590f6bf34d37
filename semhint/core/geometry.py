"""Camera math shared by losses, refinement, data and tracking: one place for every convention.

Conventions (see docs/DESIGN.md): intrinsics are 4 x 4 matrices in pixels of the image they belong to;
poses are 4 x 4 matrices mapping target-camera points into the source camera; pixel grids are
normalised with (W - 1), (H - 1) and sampled with ``align_corners=True``. Nothing here keeps state
that depends on batch size or resolution, so every function works for any B, H, W.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_EPS = 1e-7


# ----------------------------------------------------------------------------------------------
# disparity <-> depth
# ----------------------------------------------------------------------------------------------
def disp_to_depth(disp: torch.Tensor, min_depth: float, max_depth: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Map a sigmoid output in [0, 1] to (scaled disparity, depth) within [min_depth, max_depth].

    Interpolating in inverse depth keeps far range (sky, 100 m) and near range equally reachable
    for a sigmoid, which is why the whole Monodepth2 family parameterises depth this way.
    """
    min_disp = 1.0 / max_depth
    max_disp = 1.0 / min_depth
    scaled_disp = min_disp + (max_disp - min_disp) * disp
    return scaled_disp, 1.0 / scaled_disp


def depth_to_disp(depth: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """Inverse of :func:`disp_to_depth`: the sigmoid-range disparity that yields ``depth``."""
    min_disp = 1.0 / max_depth
    max_disp = 1.0 / min_depth
    depth = depth.clamp(min_depth, max_depth)
    return (1.0 / depth - min_disp) / (max_disp - min_disp)


# ----------------------------------------------------------------------------------------------
# intrinsics
# ----------------------------------------------------------------------------------------------
def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float) -> torch.Tensor:
    """A 4 x 4 float32 intrinsics matrix (the homogeneous form the warping code multiplies with)."""
    K = torch.eye(4, dtype=torch.float32)
    K[0, 0], K[1, 1], K[0, 2], K[1, 2] = fx, fy, cx, cy
    return K


def scale_intrinsics(K: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    """Intrinsics after resizing the image by (sx, sy) = (new_w / old_w, new_h / old_h).

    Uses the pixel-edge model (pixel centres at integer coordinates, image spanning [-0.5, W - 0.5]),
    under which resize maps x -> (x + 0.5) * s - 0.5. That is what cv2.resize and
    F.interpolate(align_corners=False) do, so the principal point stays on the same scene ray.
    """
    K = K.clone()
    K[..., 0, 0] *= sx
    K[..., 0, 1] *= sx
    K[..., 1, 1] *= sy
    K[..., 0, 2] = (K[..., 0, 2] + 0.5) * sx - 0.5
    K[..., 1, 2] = (K[..., 1, 2] + 0.5) * sy - 0.5
    return K


def resize_intrinsics(K: torch.Tensor, old_hw: tuple[int, int], new_hw: tuple[int, int]) -> torch.Tensor:
    """Intrinsics of an image resized from ``old_hw`` to ``new_hw`` (both (height, width))."""
    return scale_intrinsics(K, new_hw[1] / old_hw[1], new_hw[0] / old_hw[0])


def crop_intrinsics(K: torch.Tensor, x0: float, y0: float) -> torch.Tensor:
    """Intrinsics after cropping the image so that pixel (x0, y0) becomes the new origin."""
    K = K.clone()
    K[..., 0, 2] -= x0
    K[..., 1, 2] -= y0
    return K


def flip_intrinsics(K: torch.Tensor, width: int) -> torch.Tensor:
    """Intrinsics of a horizontally flipped image (the principal point mirrors about the centre)."""
    K = K.clone()
    K[..., 0, 2] = (width - 1) - K[..., 0, 2]
    return K


# ----------------------------------------------------------------------------------------------
# poses
# ----------------------------------------------------------------------------------------------
def axisangle_to_matrix(axisangle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula: (B, 1, 3) axis-angle vectors v to (B, 4, 4) rotation matrices.

    Written as R = I + (sin t / t) [v]x + ((1 - cos t) / t^2) [v]x^2 with t = |v|, the two factors
    taken from their Taylor series near t = 0, so that the gradient at v = 0 is the true one
    (dR = [dv]x). The textbook form through a unit axis v / (t + eps) has zero gradient at exactly
    v = 0: a pose net whose head starts at zero motion (``model.pose_zero_init``) would then never
    learn any rotation at all.
    """
    v = axisangle.squeeze(-2)  # B x 3
    t2 = (v * v).sum(-1)[..., None, None]  # B x 1 x 1
    small = t2 < 1e-8  # |v| < 1e-4 rad: the series are exact to float precision there
    t = torch.sqrt(torch.where(small, torch.ones_like(t2), t2))  # no sqrt(0) in the graph
    sinc = torch.where(small, 1 - t2 / 6, torch.sin(t) / t)
    half = torch.sin(t / 2) / t  # (1 - cos t) / t^2 = 2 sin^2(t/2) / t^2, without cancellation
    cosc = torch.where(small, 0.5 - t2 / 24, 2 * half * half)
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    zero = torch.zeros_like(x)
    skew = torch.stack([torch.stack([zero, -z, y], -1),
                        torch.stack([z, zero, -x], -1),
                        torch.stack([-y, x, zero], -1)], -2)  # B x 3 x 3
    eye = torch.eye(3, dtype=v.dtype, device=v.device)
    R3 = eye + sinc * skew + cosc * (skew @ skew)
    R = torch.zeros(*R3.shape[:-2], 4, 4, dtype=axisangle.dtype, device=axisangle.device)
    R[..., :3, :3] = R3
    R[..., 3, 3] = 1
    return R


def translation_matrix(translation: torch.Tensor) -> torch.Tensor:
    """(B, 1, 3) or (B, 3) translations to (B, 4, 4) homogeneous translation matrices."""
    t = translation.reshape(-1, 3)
    T = torch.eye(4, dtype=t.dtype, device=t.device).repeat(t.shape[0], 1, 1)
    T[:, :3, 3] = t
    return T


def pose_from_axisangle(axisangle: torch.Tensor, translation: torch.Tensor, invert: bool = False) -> torch.Tensor:
    """The 4 x 4 pose [R | t] from the pose network's output; ``invert`` gives [R^T | -R^T t].

    The pose network predicts the motion for the frame order it was fed; for a source frame that
    precedes the target the pair is fed (source, target) and the result inverted, so that every
    returned pose maps target-camera points into the source camera.
    """
    R = axisangle_to_matrix(axisangle)
    if invert:
        R = R.transpose(-2, -1)
        return R @ translation_matrix(-translation)
    return translation_matrix(translation) @ R


def invert_pose(T: torch.Tensor) -> torch.Tensor:
    """Closed-form inverse of rigid 4 x 4 transforms (cheaper and better conditioned than inverse())."""
    R = T[..., :3, :3].transpose(-2, -1)
    out = torch.zeros_like(T)
    out[..., :3, :3] = R
    out[..., :3, 3:] = -R @ T[..., :3, 3:]
    out[..., 3, 3] = 1
    return out


# ----------------------------------------------------------------------------------------------
# back-projection, projection, warping
# ----------------------------------------------------------------------------------------------
def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Homogeneous pixel coordinates (3, H * W): rows x, y, 1 with pixel centres at integers."""
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype),
        torch.arange(width, device=device, dtype=dtype),
        indexing="ij",
    )
    return torch.stack([xs.reshape(-1), ys.reshape(-1), torch.ones(height * width, device=device, dtype=dtype)])


def backproject(depth: torch.Tensor, inv_K: torch.Tensor) -> torch.Tensor:
    """Depth (B, 1, H, W) to homogeneous camera points (B, 4, H * W)."""
    b, _, h, w = depth.shape
    pix = pixel_grid(h, w, device=depth.device, dtype=depth.dtype)
    rays = inv_K[:, :3, :3] @ pix  # B x 3 x HW
    points = depth.reshape(b, 1, -1) * rays
    ones = torch.ones(b, 1, h * w, device=depth.device, dtype=depth.dtype)
    return torch.cat([points, ones], dim=1)


def project_to_pixels(points: torch.Tensor, K: torch.Tensor, T: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Homogeneous points (B, 4, N) through pose T and intrinsics K to pixels (B, 2, N) and depth (B, 1, N)."""
    P = K[:, :3, :] if T is None else (K @ T)[:, :3, :]
    cam = P @ points
    z = cam[:, 2:3]
    return cam[:, :2] / (z + _EPS), z


def project(points: torch.Tensor, K: torch.Tensor, T: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Homogeneous points (B, 4, H*W) to a sampling grid (B, H, W, 2) in [-1, 1] for grid_sample."""
    pix, _ = project_to_pixels(points, K, T)
    pix = pix.reshape(points.shape[0], 2, height, width).permute(0, 2, 3, 1)
    return normalise_pixels(pix, height, width)


def normalise_pixels(pix: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixel coordinates (..., 2) to [-1, 1] with the (W - 1), (H - 1) convention of align_corners=True."""
    scale = torch.tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)], device=pix.device, dtype=pix.dtype)
    return pix * scale - 1.0


def sample(image: torch.Tensor, grid: torch.Tensor, mode: str = "bilinear", padding_mode: str = "border") -> torch.Tensor:
    """grid_sample with the project's pixel convention (align_corners=True).

    A NaN coordinate (a diverged pose or depth) is sampled as 0 and the whole result made NaN:
    PyTorch's CPU grid_sample backward segfaults on NaN coordinates, and with border padding
    its forward pass even hides them, whereas a NaN result reaches the loss, where training
    stops with a clear error (semhint.training) before any backward pass.
    """
    nan = torch.isnan(grid)
    out = F.grid_sample(image, grid.masked_fill(nan, 0.0), mode=mode, padding_mode=padding_mode, align_corners=True)
    return out.masked_fill(nan.any(), float("nan"))


def warp(source: torch.Tensor, depth: torch.Tensor, T: torch.Tensor, K: torch.Tensor, inv_K: torch.Tensor | None = None,
         padding_mode: str = "border") -> torch.Tensor:
    """Resample ``source`` into the target view given target depth and the target->source pose."""
    if inv_K is None:
        inv_K = torch.linalg.inv(K)
    h, w = depth.shape[-2:]
    grid = project(backproject(depth, inv_K), K, T, h, w)
    return sample(source, grid, padding_mode=padding_mode)


def depth_to_points(depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Depth (H, W) and a 3x3 or 4x4 K to an (H*W, 3) point cloud in the camera frame."""
    h, w = depth.shape[-2:]
    inv_K = torch.linalg.inv(K[:3, :3].to(torch.float64)).to(depth.dtype)
    pix = pixel_grid(h, w, device=depth.device, dtype=depth.dtype)
    return ((inv_K @ pix) * depth.reshape(1, -1)).T
