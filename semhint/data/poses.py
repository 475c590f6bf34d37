"""Camera poses given with the video (robot kinematics, a tracker, a renderer) as each snippet's motion.

A monocular video alone leaves the camera's motion to the pose net. Where the motion is known (the
da Vinci's kinematics in SCARED, SynthTissue's poses/), the warp can use it instead (``data.poses``):
the pose net then has nothing to learn, and depth comes out in the poses' unit. On SynthTissue's
scared scope this matters: it pans about its trocar, so turning and sliding sideways move the image
alike and the photometric loss cannot pin the motion down (docs/lab/depth_signal_scared.md).

Layout: ``POSES/<sequence>.txt``, one line per frame in the order of the sequence's frames, the 3 x 4
camera-to-world matrix row-major (the KITTI odometry format, what ``semhint synth`` writes). The
target->source motion of frame offset f is ``inv(P[i + f]) @ P[i]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from semhint.core.fileio import InputError
from semhint.data.frames import FrameRef

FLIP_X = np.diag([-1.0, 1.0, 1.0, 1.0])  # a horizontal image flip mirrors camera space in x


def read_pose_file(path: str | Path) -> np.ndarray:
    """Camera-to-world poses (N x 4 x 4, float64) from a file of 12 numbers per line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: pose file not found (data.poses needs one <sequence>.txt per sequence)")
    try:
        rows = np.loadtxt(path, ndmin=2, dtype=np.float64)
    except ValueError as exc:
        raise InputError(f"{path}: cannot parse poses ({str(exc).splitlines()[0]})") from None
    if rows.shape[1] != 12:
        raise InputError(f"{path}: each line must hold 12 numbers (a 3 x 4 camera-to-world matrix), got {rows.shape[1]}")
    if not np.isfinite(rows).all():
        raise InputError(f"{path}: poses hold non-finite values")
    out = np.tile(np.eye(4), (rows.shape[0], 1, 1))
    out[:, :3, :4] = rows.reshape(-1, 3, 4)
    return out


def snippet_poses(frames: list[FrameRef], poses_root: str | Path, frame_ids: list[int]) -> list[dict[int, np.ndarray]]:
    """Per frame, the 4 x 4 target->source motion (float32) of every source offset in ``frame_ids``.

    Frames are the folder layout's (key ``"<sequence> <index>"``); a sequence with fewer poses than
    a snippet needs is an error naming the pose file.
    """
    root, cache, out = Path(poses_root), {}, []
    for ref in frames:
        seq, index = ref.key.rsplit(" ", 1)
        i = int(index)
        if seq not in cache:
            cache[seq] = read_pose_file(root / f"{seq}.txt")
        P = cache[seq]
        needed = [i + f for f in frame_ids]
        if max(needed) >= len(P) or min(needed) < 0:
            raise InputError(f"{root / f'{seq}.txt'}: {len(P)} poses, but frame '{ref.key}' needs pose {max(needed)}")
        out.append({f: (np.linalg.inv(P[i + f]) @ P[i]).astype(np.float32) for f in frame_ids if f != 0})
    return out


def flip_pose(T: np.ndarray) -> np.ndarray:
    """The motion seen in horizontally flipped images: the same motion with camera x mirrored."""
    return (FLIP_X @ T @ FLIP_X).astype(T.dtype)
