"""TensorBoard panels: the labelled grid helper, the panels of a SemHint step, and a tiny run's events."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from semhint.core.config import load_config
from semhint.core.pictures import compose_panels

REPO = Path(__file__).resolve().parents[1]
MAIN_DRIVE = REPO / "semhint" / "configs" / "semhint_synth_drive.yaml"


# ----------------------------------------------------------------------------------------------
# the grid helper on synthetic pictures
# ----------------------------------------------------------------------------------------------
def test_compose_panels_layout():
    h, w, label, gap = 10, 40, 12, 2
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    panels = {f"p{i}": np.broadcast_to(np.array(c, np.uint8), (h, w, 3)).copy() for i, c in enumerate(colours)}
    panels["grey"] = np.full((h, w), 200, np.uint8)  # 2-D panels are drawn in grey
    panels["fifth"] = np.zeros((h, w, 3), np.uint8)
    grid = compose_panels(panels, columns=2, label_height=label, gap=gap)
    rows = 3
    assert grid.shape == (rows * (label + h) + (rows - 1) * gap, 2 * w + gap, 3) and grid.dtype == np.uint8
    for i, (name, panel) in enumerate(panels.items()):
        top, left = (i // 2) * (label + h + gap) + label, (i % 2) * (w + gap)
        expected = panel if panel.ndim == 3 else np.repeat(panel[..., None], 3, axis=2)
        np.testing.assert_array_equal(grid[top:top + h, left:left + w], expected, err_msg=name)
        strip = grid[top - label:top, left:left + w]
        assert (strip > 200).any(), f"the name of {name} is written above it"
    empty = grid[2 * (label + h + gap):, w + gap:]  # the last row's unused cell
    assert (empty == 64).all()
    # no names: panels only; one panel: columns capped
    assert compose_panels(panels, columns=5, label_height=0, gap=0).shape == (h, 5 * w, 3)
    assert compose_panels({"a": panels["p0"]}, columns=3).shape == (12 + h, w, 3)


def test_compose_panels_rejects_mixed_sizes():
    with pytest.raises(ValueError, match="'b'"):
        compose_panels({"a": np.zeros((4, 4, 3), np.uint8), "b": np.zeros((4, 5, 3), np.uint8)})
    with pytest.raises(ValueError, match="no panels"):
        compose_panels({})


# ----------------------------------------------------------------------------------------------
# a SemHint step: its maps carry the refinement's pictures, and adding them changed nothing
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_drive_with_labels(tmp_path_factory) -> Path:
    from semhint.data.synthetic import render_drive
    from semhint.labelmaker.corrupt import corrupt_label_dir

    root = tmp_path_factory.mktemp("drive")
    render_drive(root, preset="tiny", seed=0, progress=False)
    corrupt_label_dir(root / "gt_labels", root / "noisy", 0.5, seed=0)
    return root


def _overrides(root: Path, out: Path, **extra) -> list[str]:
    values = {
        "data.path": root / "data", "data.train_split": root / "splits" / "train.txt",
        "data.val_split": root / "splits" / "val.txt", "data.gt_depth": root / "gt_depth",
        "data.labels": root / "noisy", "data.gt_labels": root / "gt_labels",
        "data.height": 32, "data.width": 96, "data.num_workers": 0, "optim.batch_size": 2,
        "optim.epochs": 1, "optim.pose_warmup_steps": 0,
        "trainer.out_dir": out, "trainer.accelerator": "cpu", "trainer.num_threads": 1,
        "trainer.limit_train_batches": 2, "trainer.limit_val_batches": 1, "trainer.log_every_n_steps": 1,
        "trainer.image_log_every_n_steps": 1, "trainer.progress_bar": False, "refine.warmup_epochs": 0,
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def _batch(cfg) -> dict:
    from semhint.data.build import build_dataset
    from semhint.training import collate_snippets

    dataset = build_dataset(cfg.data, "train")
    return collate_snippets([dataset[0], dataset[1]])


ALL_PANELS = ["input", "disparity", "hint gate", "depth hint", "noisy labels", "segmentation", "automask",
              "pseudo labels"]


def test_step_panels_of_a_semhint_step_and_the_loss_is_unchanged(tiny_drive_with_labels, tmp_path, monkeypatch):
    from semhint.refine import terms
    from semhint.training import SemHintModule, step_panels

    cfg = load_config(MAIN_DRIVE, _overrides(tiny_drive_with_labels, tmp_path))
    torch.manual_seed(0)
    module = SemHintModule(cfg)
    batch = _batch(cfg)
    torch.manual_seed(1)
    losses, maps, outputs = module.objective(batch)
    assert {"hint/0", "hint_gate/0", "hint_changed/0", "pseudo_labels/0"} <= set(maps)
    assert not any(maps[k].requires_grad for k in ("hint/0", "hint_gate/0", "pseudo_labels/0"))

    panels = step_panels(batch, outputs, maps, cfg.model.num_classes)
    assert list(panels) == ALL_PANELS
    for name, p in panels.items():
        assert p.shape[:2] == (32, 96) and p.dtype == np.uint8, name
    # the gate is drawn from the accepted pixels: white exactly there
    np.testing.assert_array_equal(panels["hint gate"] == 255, maps["hint_gate/0"][0, 0].numpy())
    # where the operators left the depth alone the hint is the depth: same colour as the disparity
    same = ~maps["hint_changed/0"][0, 0].numpy()
    assert same.any()
    diff = np.abs(panels["depth hint"].astype(int) - panels["disparity"].astype(int))[same]
    assert diff.max() <= 2  # one colour scale (the two are computed from disp and 1 / depth: rounding only)

    # the maps are only added: the same step with the refinement terms' dict writes discarded
    # gives the same loss, to the bit
    class _NoWrites(dict):
        def __setitem__(self, key, value):
            if not key.startswith(("hint", "pseudo_labels")):
                super().__setitem__(key, value)

        def update(self, other=(), **kw):
            for k, v in dict(other, **kw).items():
                self[k] = v

    original = terms.refinement_losses

    def without_writes(batch, outputs, maps, *args):
        return original(batch, outputs, _NoWrites(maps), *args)

    monkeypatch.setattr("semhint.training.refinement_losses", without_writes)
    torch.manual_seed(1)
    losses2, maps2, _ = module.objective(batch)
    assert "hint/0" not in maps2
    assert {k: float(v.detach()) for k, v in losses.items()} == {k: float(v.detach()) for k, v in losses2.items()}


def test_step_panels_before_the_refinements_and_without_a_branch(tiny_drive_with_labels, tmp_path):
    from semhint.training import SemHintModule, step_panels

    cfg = load_config(MAIN_DRIVE, _overrides(tiny_drive_with_labels, tmp_path, **{"refine.warmup_epochs": 1}))
    module = SemHintModule(cfg)
    batch = _batch(cfg)
    _, maps, outputs = module.objective(batch)  # epoch 0 < warmup: no refinement maps
    assert list(step_panels(batch, outputs, maps, cfg.model.num_classes)) == [
        "input", "disparity", "noisy labels", "segmentation", "automask"]
    no_seg = {k: v for k, v in outputs.items() if not k.startswith("seg/")}
    assert list(step_panels(batch, no_seg, maps, 0)) == ["input", "disparity", "automask"]


# ----------------------------------------------------------------------------------------------
# a tiny run writes the grid to TensorBoard
# ----------------------------------------------------------------------------------------------
def test_tiny_semhint_run_writes_the_panels(tiny_drive_with_labels, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

    from semhint.training import fit

    out = tmp_path / "run"
    fit(load_config(MAIN_DRIVE, _overrides(tiny_drive_with_labels, out)))
    events = list((out / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent), size_guidance={IMAGES: 0})
    acc.Reload()
    assert "images/panels" in acc.Tags()[IMAGES]
    images = acc.Images("images/panels")
    assert [im.step for im in images] == [0, 1]
    # 8 panels of 32 x 96 in 2 columns: 4 rows of (12 + 32) with 2-pixel gaps, 2 x 96 + 2 wide
    assert (images[0].height, images[0].width) == (4 * 44 + 3 * 2, 2 * 96 + 2)
