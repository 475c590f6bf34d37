"""The video's one ground roll: the median of the rolls recent images' road planes were fitted with.

A camera bolted to a car sees its road at one roll for the whole drive (LiDAR on the KITTI sample:
within 2 degrees on every frame, docs/lab/road_roll_kitti.md), but a short run's prediction leans the
road sideways on some frames, and a plane fitted to one image takes that lean with it. Many images
outvote a few leaning ones; the vote is kept across steps and in the checkpoint, so a resumed run
goes on with the same consensus.
"""

from __future__ import annotations

import math
import statistics

import torch


class RollVotes:
    """The last ``size`` images' ground rolls (radians, :func:`semhint.refine.ground_rolls`) and their median."""

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"RollVotes needs room for at least one vote, got size {size}")
        self.size = size
        self.votes: list[float] = []

    def add(self, rolls: torch.Tensor) -> None:
        """Add each image's roll; NaN (an image that could not vote) is left out, the oldest votes drop out."""
        self.votes += [float(r) for r in rolls.detach().flatten().cpu() if math.isfinite(float(r))]
        del self.votes[:-self.size]

    def consensus(self) -> torch.Tensor | None:
        """The votes' circular median (a 0-d tensor, radians), None before the first vote.

        Angles are taken around their circular mean before the median, so that votes either side
        of +-180 degrees (a camera mounted upside down) do not split into two far-apart groups.
        """
        if not self.votes:
            return None
        centre = math.atan2(sum(map(math.sin, self.votes)), sum(map(math.cos, self.votes)))
        offsets = [math.remainder(v - centre, 2 * math.pi) for v in self.votes]
        return torch.tensor(math.remainder(centre + statistics.median(offsets), 2 * math.pi))

    def state_dict(self) -> dict:
        return {"size": self.size, "votes": list(self.votes)}

    def load_state_dict(self, state: dict) -> None:
        self.votes = [float(v) for v in state["votes"]][-self.size:]
