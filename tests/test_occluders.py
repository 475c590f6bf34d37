"""Operator F: an occluder (an instrument) is no farther than the surface around it; ungated classes."""

from __future__ import annotations

import pytest
import torch

from semhint.core.config import ConfigError, from_dict
from semhint.refine import GatedHint, accepted_pixels, occluders_in_front
from semhint.refine.operators import OPERATORS, check_config

TISSUE, INSTRUMENT = 0, 2


def scene(h: int = 24, w: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Tissue at 50 mm on the left half, 80 mm on the right; one instrument blob in each half."""
    depth = torch.full((1, 1, h, w), 50.0)
    depth[..., w // 2:] = 80.0
    labels = torch.full((1, h, w), TISSUE, dtype=torch.long)
    labels[0, 8:14, 4:10] = INSTRUMENT
    labels[0, 8:14, 22:28] = INSTRUMENT
    return depth, labels


def test_an_occluder_behind_its_surface_is_brought_to_the_surface_and_one_in_front_is_kept():
    depth, labels = scene()
    depth[0, 0, 8:14, 4:10] = 120.0  # the left instrument learnt behind the tissue (as an unmodelled mover is)
    depth[0, 0, 8:14, 22:28] = 30.0  # the right one already in front
    out = occluders_in_front(depth, labels, [INSTRUMENT])
    assert torch.allclose(out[0, 0, 8:14, 4:10], torch.tensor(50.0))  # each blob has its own ring: 50, not 80
    assert torch.equal(out[0, 0, 8:14, 22:28], depth[0, 0, 8:14, 22:28])
    assert torch.equal(out[labels[:, None] != INSTRUMENT], depth[labels[:, None] != INSTRUMENT])
    assert depth[0, 0, 10, 6] == 120.0  # the input is not changed in place


def test_a_blob_without_surface_around_it_and_unknown_ring_pixels_are_left_alone():
    depth, labels = scene()
    labels[:] = INSTRUMENT  # the instrument fills the frame: no ring
    assert torch.equal(occluders_in_front(depth, labels, [INSTRUMENT]), depth)
    depth, labels = scene(); depth[0, 0, 8:14, 4:10] = 120.0
    labels[0, 4:18, 0:14][labels[0, 4:18, 0:14] != INSTRUMENT] = 255  # the ring is unknown (ignore label)
    assert torch.equal(occluders_in_front(depth, labels, [INSTRUMENT])[0, 0, 8:14, 4:10], depth[0, 0, 8:14, 4:10])


def test_occluders_check_shapes():
    with pytest.raises(ValueError, match="B x 1 x H x W"):
        occluders_in_front(torch.ones(1, 24, 32), torch.zeros(1, 24, 32, dtype=torch.long), [2])


def test_ungated_classes_take_the_hint_where_the_photometric_gate_refuses_it():
    _, labels = scene()
    cfg = from_dict({"model": {"num_classes": 3}, "refine": {"hint": True, "hint_operators": ["occluder"],
                                                            "occluder_classes": [2], "hint_ungated_classes": [2]}})
    changed = torch.ones(1, 1, 24, 32, dtype=torch.bool)
    worse = GatedHint(torch.ones(1, 1, 24, 32), changed, torch.full((1, 1, 24, 32), 0.5))
    gate = accepted_pixels(worse, torch.full((1, 1, 24, 32), 0.1), None, labels, cfg.refine)
    assert torch.equal(gate, labels[:, None] == INSTRUMENT)  # instrument pixels only: the tissue stays gated
    cfg.refine.hint_ungated_classes = []
    assert not accepted_pixels(worse, torch.full((1, 1, 24, 32), 0.1), None, labels, cfg.refine).any()


def test_occluder_config_is_checked_at_load():
    assert OPERATORS["occluder"].letter == "F"
    with pytest.raises(ConfigError, match="refine.occluder_classes"):
        check_config(from_dict({"model": {"num_classes": 3}, "refine": {"hint": True, "hint_operators": ["occluder"]}}))
    with pytest.raises(ConfigError, match="refine.hint_ungated_classes"):
        from_dict({"model": {"num_classes": 3}, "refine": {"hint": True, "hint_ungated_classes": [5]}})
