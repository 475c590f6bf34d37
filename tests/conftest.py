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


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Every test runs torch on one thread and restores the count afterwards.

    Tests use tiny tensors, where OpenMP hand-off costs more than a second thread saves (10x and
    worse on a busy 2-core CI machine), and a test that changes the count must not leak it.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


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
