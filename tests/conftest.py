"""Shared test fixtures: where ../shared lives, and skips when it is absent (a user's fresh clone)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SEMHINT_SHARED", REPO.parent / "shared"))
ORACLES = SHARED / "oracles"
KITTI_SAMPLE = SHARED / "data" / "kitti_sample"

# One thread: tests use tiny tensors, where thread start-up costs more than it saves, and CI has 2 cores.
torch.set_num_threads(1)


@pytest.fixture
def oracle():
    """Load an oracle npz by name, skipping the test when ../shared/oracles is absent."""

    def load(name: str):
        import numpy as np

        path = ORACLES / name
        if not path.is_file():
            pytest.skip(f"oracle {path} not present")
        return np.load(path)

    return load


@pytest.fixture
def kitti_sample() -> Path:
    if not (KITTI_SAMPLE / "2011_09_26" / "calib_cam_to_cam.txt").is_file():
        pytest.skip(f"{KITTI_SAMPLE} not present")
    return KITTI_SAMPLE
