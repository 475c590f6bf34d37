"""What a run tells its user (issue 21, items 2, 9, 10): the warm-up that covers the whole run, the
labeler's default encoder, and a console without third-party chatter."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pytest
from lightning.pytorch.callbacks import Callback

from semhint.core import console
from semhint.core.config import load_config
from semhint.core.errors import SemhintWarning
from semhint.labelmaker import labeler
from semhint.training import fit, pose_warmup_note

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------
# item 2: a pose warm-up as long as the run
# ----------------------------------------------------------------------------------------------
def test_warmup_note_only_when_the_warmup_covers_the_run():
    assert pose_warmup_note(0, 10) is None and pose_warmup_note(9, 10) is None
    assert pose_warmup_note(5, float("inf")) is None
    note = pose_warmup_note(50, 24)
    assert "optim.pose_warmup_steps (50)" in note and "24" in note and "optim.max_steps" in note
    assert "depth net learns nothing" in note and "\n" not in note


@pytest.fixture(scope="module")
def tiny_drive(tmp_path_factory) -> Path:
    from semhint.data.synthetic import render_drive

    root = tmp_path_factory.mktemp("drive")
    render_drive(root, preset="tiny", seed=0, progress=False)
    return root


class _DepthWeights(Callback):
    def on_train_start(self, trainer, pl_module):
        self.start = {k: v.detach().clone() for k, v in pl_module.depth_net.named_parameters()}

    def on_train_end(self, trainer, pl_module):
        self.changed = any(not (self.start[k] == v).all() for k, v in pl_module.depth_net.named_parameters())


def _cfg(root: Path, out: Path, warmup: int):
    values = {"data.path": root / "data", "data.train_split": root / "splits" / "train.txt", "data.val_split": "",
              "data.gt_depth": "", "data.height": 32, "data.width": 96, "data.num_workers": 0,
              "optim.batch_size": 2, "optim.epochs": 1, "optim.pose_warmup_steps": warmup, "trainer.out_dir": out,
              "trainer.accelerator": "cpu", "trainer.limit_train_batches": 2, "trainer.num_threads": 1,
              "trainer.progress_bar": False, "trainer.image_log_every_n_steps": 0}
    return load_config(REPO / "semhint" / "configs" / "synth_drive.yaml", [f"{k}={v}" for k, v in values.items()])


def test_a_warmup_covering_the_run_warns_and_a_shorter_one_trains_depth(tiny_drive, tmp_path):
    weights = _DepthWeights()
    with pytest.warns(SemhintWarning, match=r"optim.pose_warmup_steps \(5\) >= the run's 2"):
        fit(_cfg(tiny_drive, tmp_path / "long", 5), extra_callbacks=[weights])
    assert not weights.changed  # what the warning is about
    weights = _DepthWeights()
    with warnings.catch_warnings():
        warnings.simplefilter("error", SemhintWarning)
        fit(_cfg(tiny_drive, tmp_path / "short", 1), extra_callbacks=[weights])
    assert weights.changed


# ----------------------------------------------------------------------------------------------
# item 9: the labeler's encoder
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("installed,encoder,pretrained,expected", [
    (True, None, None, ("efficientnet_lite0", "package", False)),
    (False, None, None, ("resnet18", "", True)),
    (True, "resnet18", None, ("resnet18", "", False)),
    (True, "efficientnet_lite0", None, ("efficientnet_lite0", "package", False)),
    (False, "efficientnet_lite0", None, ("efficientnet_lite0", "", False)),
    (True, None, "", ("resnet18", "", False)),
    (True, None, "/w/resnet18.pth", ("resnet18", "/w/resnet18.pth", False)),
])
def test_labels_train_defaults_to_the_pretrained_encoder(monkeypatch, installed, encoder, pretrained, expected):
    monkeypatch.setattr(labeler.importlib.util, "find_spec",
                        lambda name: object() if installed and name == labeler.EFFNET_PACKAGE else None)
    enc, pre, note = labeler.choose_encoder(encoder, pretrained)
    assert (enc, pre, bool(note)) == expected
    if note:
        assert "semhint[effnet]" in note and "\n" not in note


# ----------------------------------------------------------------------------------------------
# item 10: a quiet console
# ----------------------------------------------------------------------------------------------
def test_known_third_party_chatter_is_filtered_and_nothing_else():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        console.quiet_third_party()
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)`")
        warnings.warn("Total length of `list` across ranks is zero. Please make sure this was your intention.")
        warnings.warn("Checkpoint directory /x/checkpoints exists and is not empty.")
        warnings.warn("something a user should see")
    assert [str(w.message) for w in caught] == ["something a user should see"]


def test_lightning_tips_are_below_the_log_level():
    import logging

    console.quiet_third_party()
    # levels, not isEnabledFor: another test may have called logging.disable, which isEnabledFor reads
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    assert logger.getEffectiveLevel() == logging.WARNING


def test_semhint_warnings_print_as_one_line(monkeypatch):
    passed_on = []
    monkeypatch.setattr(warnings, "showwarning", lambda message, *args, **kwargs: passed_on.append(str(message)))
    console.one_line_warnings()
    console.one_line_warnings()  # idempotent
    stream = io.StringIO()
    warnings.showwarning(SemhintWarning("a\n  b"), SemhintWarning, "f.py", 1, file=stream)
    warnings.showwarning(UserWarning("other"), UserWarning, "f.py", 3, file=stream)
    assert stream.getvalue() == "semhint: warning: a b\n"
    assert passed_on == ["other"]  # every other warning keeps its usual form
