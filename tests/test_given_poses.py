"""data.poses: camera motion given with the video (kinematics) replaces the pose net in the warp."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from semhint.core import geometry
from semhint.core.config import from_dict
from semhint.core.errors import ConfigError
from semhint.core.fileio import InputError, read_depth_png
from semhint.data.build import build_dataset
from semhint.data.poses import flip_pose, read_pose_file
from semhint.data.synthetic import render_tissue
from semhint.losses import photometric_error
from semhint.training import SemHintModule


@pytest.fixture(scope="module")
def scared(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scared")
    render_tissue(out, preset="scared", sequences=2, frames=7, size="96x128", progress=False)
    return out


def _data_cfg(root: Path, **extra) -> dict:
    return {"kind": "folder", "path": str(root / "data"), "train_split": str(root / "splits" / "train.txt"),
            "height": 96, "width": 128, "frame_ids": [0, -2, 2], "augment": False, "num_workers": 0,
            "poses": str(root / "poses"), **extra}


def test_given_pose_warps_the_source_onto_the_target_with_the_true_depth(scared):
    dataset = build_dataset(from_dict({"data": _data_cfg(scared)}).data, "train")
    sample = dataset[0]
    seq, index = dataset.frames[0].key.rsplit(" ", 1)
    P = read_pose_file(scared / "poses" / f"{seq}.txt")
    np.testing.assert_allclose(sample["pose/2"].numpy(), np.linalg.inv(P[int(index) + 2]) @ P[int(index)], atol=1e-5)
    depth = torch.from_numpy(read_depth_png(scared / "gt_depth" / seq / f"{int(index):06d}.png"))[None, None]
    K = sample["K"][None]
    target = sample["image/0"][None]
    for f in (-2, 2):
        source = sample[f"image/{f}"][None]
        warped = geometry.warp(source, depth, sample[f"pose/{f}"][None], K)
        inner = (..., slice(8, -8), slice(8, -8))
        assert photometric_error(warped, target)[inner].mean() < 0.5 * photometric_error(source, target)[inner].mean()


def test_flipped_pose_matches_flipped_intrinsics():
    """A point seen at pixel u is seen at W - 1 - u in the flipped image; its motion, flipped, must
    carry the mirrored point to the mirror of where the true motion carries it."""
    K = geometry.intrinsics_matrix(80.0, 80.0, 60.3, 40.0)
    T = geometry.pose_from_axisangle(torch.tensor([[[0.02, -0.05, 0.01]]]), torch.tensor([[[0.3, -0.1, 0.2]]]))[0]
    X = torch.tensor([0.4, -0.2, 5.0, 1.0])
    mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0]))
    u, _ = geometry.project_to_pixels(X.view(1, 4, 1), K[None], T[None])
    K_flip = geometry.flip_intrinsics(K, 128)
    T_flip = torch.from_numpy(flip_pose(T.numpy()))
    u_flip, _ = geometry.project_to_pixels((mirror @ X).view(1, 4, 1), K_flip[None], T_flip[None])
    torch.testing.assert_close(u_flip[0, 0], 127 - u[0, 0], atol=1e-4, rtol=0)
    torch.testing.assert_close(u_flip[0, 1], u[0, 1], atol=1e-4, rtol=0)


def test_objective_uses_the_given_poses_and_not_the_pose_net(scared):
    cfg = from_dict({"data": _data_cfg(scared), "model": {"scales": [0]}, "optim": {"batch_size": 2}})
    dataset = build_dataset(cfg.data, "train")
    batch = torch.utils.data.default_collate([dataset[0], dataset[1]])
    module = SemHintModule(cfg)

    def no_pose_net(*_):
        raise AssertionError("the pose net ran although the poses were given")

    module.pose_net.forward = no_pose_net
    losses, _, _ = module.objective(batch)
    torch.testing.assert_close(losses["pose_translation"],
                               torch.stack([batch[f"pose/{f}"][:, :3, 3].norm(dim=1).mean() for f in (-2, 2)]).mean())


def test_bad_pose_files_and_kinds_are_one_line_errors(scared, tmp_path):
    with pytest.raises(ConfigError, match="data.poses"):
        from_dict({"data": {"kind": "kitti", "poses": "somewhere"}})
    with pytest.raises(InputError, match="pose file not found"):
        build_dataset(from_dict({"data": _data_cfg(scared, poses=str(tmp_path))}).data, "train")
    short = tmp_path / "short"
    short.mkdir()
    for seq in ("tissue_01", "tissue_02"):
        lines = (scared / "poses" / f"{seq}.txt").read_text().splitlines()
        (short / f"{seq}.txt").write_text("\n".join(lines[:3]) + "\n")
    with pytest.raises(InputError, match="3 poses, but frame"):
        build_dataset(from_dict({"data": _data_cfg(scared, poses=str(short))}).data, "train")
    (short / "tissue_01.txt").write_text("1 2 3\n")
    with pytest.raises(InputError, match="12 numbers"):
        read_pose_file(short / "tissue_01.txt")


def test_given_poses_leave_the_pose_net_frozen_and_out_of_the_optimiser(scared):
    cfg = from_dict({"data": _data_cfg(scared), "model": {"scales": [0]}})
    module = SemHintModule(cfg)
    optimised = {id(p) for group in module.configure_optimizers()["optimizer"].param_groups for p in group["params"]}
    assert not any(p.requires_grad for p in module.pose_net.parameters())
    assert not any(id(p) in optimised for p in module.pose_net.parameters())
    assert all(id(p) in optimised for p in module.depth_net.parameters())
    with pytest.raises(ValueError, match="data.poses is set"):
        batch = torch.utils.data.default_collate([build_dataset(cfg.data, "train")[0]])
        module.objective({k: v for k, v in batch.items() if not k.startswith("pose/")})
