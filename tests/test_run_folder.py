"""The run folder protects itself: lock, no silent overwrite, atomic checkpoints, one metrics history,
divergence stopped with the last good checkpoint kept, and a resume equal to an uninterrupted run."""

from __future__ import annotations

import csv
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from semhint.app.cli import main
from semhint.core import runfolder
from semhint.core.config import from_dict, load_config
from semhint.core.errors import ConfigError, InputError
from semhint.core.runfolder import RunFolderLock
from semhint.training import SemHintModule, TrainingDiverged, _AtomicCheckpointIO, fit, first_non_finite

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "semhint" / "configs" / "synth_drive.yaml"


@pytest.fixture(scope="module")
def tiny_drive(tmp_path_factory) -> Path:
    from semhint.data.synthetic import render_drive

    root = tmp_path_factory.mktemp("drive")
    render_drive(root, preset="tiny", seed=0, progress=False)
    return root


def overrides(root: Path, out: Path, **extra) -> list[str]:
    """A tiny run: 32 x 96, 2 steps an epoch (5 training snippets, batch 2), CPU, one thread, no images."""
    values = {
        "data.path": root / "data", "data.train_split": root / "splits" / "train.txt",
        "data.val_split": root / "splits" / "val.txt", "data.gt_depth": root / "gt_depth",
        "data.height": 32, "data.width": 96, "data.num_workers": 0,
        "optim.batch_size": 2, "optim.epochs": 1, "optim.grad_clip": 1.0,
        "trainer.out_dir": out, "trainer.accelerator": "cpu", "trainer.limit_train_batches": 2,
        "trainer.limit_val_batches": 1, "trainer.log_every_n_steps": 1, "trainer.image_log_every_n_steps": 0,
        "trainer.num_threads": 1, "trainer.progress_bar": False, "eval.protocol": "generic", "eval.crop": "none",
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def tiny_config(root: Path, out: Path, **extra):
    return load_config(CONFIG, overrides(root, out, **extra))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def csv_rows(out: Path) -> list[dict]:
    with open(out / "logs" / "csv" / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def logged_steps(rows: list[dict], column: str = "train/loss_step") -> list[int]:
    return [int(r["step"]) for r in rows if r.get(column)]


def temp_files(out: Path) -> list[Path]:
    return [p for p in out.rglob(".*") if p.name != runfolder.LOCK_NAME]


# ----------------------------------------------------------------------------------------------
# one writer at a time
# ----------------------------------------------------------------------------------------------
def test_a_second_run_into_a_locked_folder_is_one_clear_line(tiny_drive, tmp_path, capsys):
    out = tmp_path / "run"
    with RunFolderLock(out):
        in_use = rf"{out}: run folder is in use by another `semhint train` \(pid {os.getpid()}\)"
        with pytest.raises(InputError, match=in_use):
            fit(tiny_config(tiny_drive, out))
        assert main(["train", str(CONFIG), *overrides(tiny_drive, out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "in use by another `semhint train`" in err and str(out) in err
    assert runfolder.folder_contents(out) == []  # the refused run wrote nothing


def test_the_lock_dies_with_its_process(tmp_path):
    """kill -9 leaves the lock file but not the lock: the next run is never blocked by a stale one."""
    code = ("import sys, time; from semhint.core.runfolder import RunFolderLock; "
            "RunFolderLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(InputError, match=f"pid {holder.pid}"):
            RunFolderLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    RunFolderLock(tmp_path).acquire().release()


# ----------------------------------------------------------------------------------------------
# nothing overwritten without --overwrite, and then only moved aside
# ----------------------------------------------------------------------------------------------
def test_without_flock_the_lock_warns_instead_of_failing_to_import(tmp_path, monkeypatch):
    # Windows has no fcntl: the run still starts (with a warning), it does not die on an import
    monkeypatch.setattr(runfolder, "fcntl", None)
    with pytest.warns(UserWarning, match="no file locking"):
        lock = runfolder.RunFolderLock(tmp_path).acquire()
    lock.release()


def test_a_non_empty_folder_is_refused_and_overwrite_moves_it_aside(tiny_drive, tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.ckpt").write_bytes(b"an earlier run's weights")
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match=rf"{out}: run folder is not empty .*--resume auto.*--overwrite"):
        fit(tiny_config(tiny_drive, out))
    assert main(["train", str(CONFIG), *overrides(tiny_drive, out), "--overwrite", "--resume", "auto"]) == 2
    assert "contradict" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me"  # refused: untouched

    assert main(["train", str(CONFIG), *overrides(tiny_drive, out), "--overwrite"]) == 0
    (aside,) = tmp_path.glob("run.old-*")
    assert (aside / "notes.txt").read_text() == "keep me"
    assert (aside / "checkpoints" / "last.ckpt").read_bytes() == b"an earlier run's weights"
    assert torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 2
    assert not (out / "notes.txt").exists()


def test_move_aside_never_reuses_a_name(tmp_path):
    out = tmp_path / "run"
    asides = []
    for i in range(2):
        out.mkdir(exist_ok=True)
        (out / "f.txt").write_text(str(i))
        asides.append(runfolder.move_aside(out))
    assert asides[0] != asides[1] and [(a / "f.txt").read_text() for a in asides] == ["0", "1"]
    assert runfolder.move_aside(out) is None  # nothing left to move


# ----------------------------------------------------------------------------------------------
# checkpoints: every N steps, atomic, never non-finite
# ----------------------------------------------------------------------------------------------
class _Saves(Callback):
    def __init__(self):
        self.steps = []

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        self.steps.append(trainer.global_step)


def test_step_checkpoints_between_epoch_ends(tiny_drive, tmp_path):
    """Batch 1: 5 steps an epoch. Every 2 steps: saves at 2 and 4, then the epoch-end saves at 5."""
    out = tmp_path / "run"
    saves = _Saves()
    fit(tiny_config(tiny_drive, out, **{"optim.batch_size": 1, "trainer.limit_train_batches": 1.0,
                                        "trainer.checkpoint_every_n_steps": 2}), extra_callbacks=[saves])
    assert saves.steps[:2] == [2, 4] and set(saves.steps[2:]) == {5}
    assert torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 5
    assert temp_files(out) == []


def test_checkpoint_interval_is_validated():
    with pytest.raises(ConfigError, match="trainer.checkpoint_every_n_steps: must be >= 0"):
        from_dict({"trainer": {"checkpoint_every_n_steps": -1}})


def test_a_failed_checkpoint_write_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    _AtomicCheckpointIO().save_checkpoint({"global_step": 1}, path)
    before = digest(path)

    def torn_save(obj, fh, *args, **kwargs):
        fh.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(OSError, match="No space left"):
        _AtomicCheckpointIO().save_checkpoint({"global_step": 2}, path)
    assert digest(path) == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


def test_non_finite_weights_are_never_written():
    module = SemHintModule(from_dict({"data": {"height": 32, "width": 96}}))
    state = module.state_dict()
    state["depth_net.encoder.conv1.weight"] = state["depth_net.encoder.conv1.weight"].clone().fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="weight 'depth_net.encoder.conv1.weight' is not finite"):
        module.on_save_checkpoint({"state_dict": state})


# ----------------------------------------------------------------------------------------------
# divergence: one line naming the step and the term; the last good checkpoint kept
# ----------------------------------------------------------------------------------------------
def test_first_non_finite_names_a_term_before_the_total():
    losses = {"loss": torch.tensor(float("nan")), "photo": torch.tensor(float("inf")), "smooth": torch.tensor(0.1),
              "maps": torch.zeros(2, 2)}
    assert first_non_finite(losses) == ("photo", float("inf"))
    assert first_non_finite({"loss": torch.tensor(1.0), "photo": torch.tensor(0.5)}) is None


def test_a_nan_loss_stops_training_with_one_line_and_keeps_the_last_checkpoint(tiny_drive, tmp_path, monkeypatch,
                                                                               capsys):
    import semhint.training as training

    out = tmp_path / "run"
    fit(tiny_config(tiny_drive, out))
    last = out / "checkpoints" / "last.ckpt"
    before = digest(last)
    real = training.self_supervised_objective

    def diverging(*args, **kwargs):  # what lr 1e6 does within a step or two, made certain
        losses, maps = real(*args, **kwargs)
        losses = dict(losses, photo=losses["photo"] * float("nan"))
        losses["loss"] = losses["loss"] + losses["photo"]
        return losses, maps

    monkeypatch.setattr(training, "self_supervised_objective", diverging)
    code = main(["train", str(CONFIG), *overrides(tiny_drive, out, **{"optim.epochs": 2}), "--resume", "auto"])
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if ": error: " in line]  # warnings (a warm-up note) may precede it
    assert code == 2 and len(errors) == 1 and err.splitlines()[-1] == errors[0], err
    assert "training diverged at step 2: loss term 'photo' is nan" in err and "optim.lr" in err
    assert f"{last}, is kept" in err
    assert digest(last) == before
    assert temp_files(out) == []


# ----------------------------------------------------------------------------------------------
# resume: the same run, the same history
# ----------------------------------------------------------------------------------------------
def test_trim_metrics_keeps_rows_before_the_checkpoint_and_drops_a_torn_line(tmp_path):
    path = tmp_path / runfolder.METRICS_CSV
    path.parent.mkdir(parents=True)
    path.write_text("epoch,step,train/loss\r\n0,0,1.0\r\n0,1,0.9\r\n0,1,\r\n1,2,0.8\r\n1,3,0.7\r\n1,4,0.")
    assert runfolder.trim_metrics(tmp_path, before_step=2) == 3
    assert path.read_bytes() == b"epoch,step,train/loss\r\n0,0,1.0\r\n0,1,0.9\r\n0,1,\r\n"
    assert runfolder.trim_metrics(tmp_path / "no-run", before_step=2) == 0


def _nets_and_adam(ckpt: Path) -> tuple[dict, dict, float]:
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    opt = saved["optimizer_states"][0]
    return saved["state_dict"], opt["state"], opt["param_groups"][0]["lr"]


def test_resume_equals_an_uninterrupted_run_and_keeps_the_whole_history(tiny_drive, tmp_path):
    """2 steps, then 2 more from last.ckpt, against 4 in one go: the same weights and Adam moments.

    Past the pose warm-up (1 step: the depth net trains in steps 2-4) and across an lr milestone
    (epoch 1: steps 3-4 at lr * 0.1). The resumed run first finds what a kill leaves behind: a
    temporary checkpoint, rows logged after the checkpoint, a line cut off mid-write.
    """
    extra = {"optim.pose_warmup_steps": 1, "optim.milestones": "[1]", "optim.gamma": 0.1}
    straight_cfg = tiny_config(tiny_drive, tmp_path / "straight", **extra, **{"optim.epochs": 2})
    fit(straight_cfg)
    out = tmp_path / "resumed"
    fit(tiny_config(tiny_drive, out, **extra))
    first = _nets_and_adam(out / "checkpoints" / "last.ckpt")
    history = csv_rows(out)
    (out / "checkpoints" / ".last.k1ll3d00.ckpt").write_bytes(b"torn")
    with open(out / "logs" / "csv" / "metrics.csv", "a", newline="") as fh:
        fh.write(",,2,1.0,,12345.0,12345.0,0.0,0.0,,,,,,,\r\n,,3,1.0,,123")

    fit(tiny_config(tiny_drive, out, **extra, **{"optim.epochs": 2}), resume="auto")
    straight = _nets_and_adam(tmp_path / "straight" / "checkpoints" / "last.ckpt")
    resumed = _nets_and_adam(out / "checkpoints" / "last.ckpt")
    assert resumed[2] == straight[2] == pytest.approx(straight_cfg.optim.lr * 0.1)
    assert any(not torch.equal(first[0][k], resumed[0][k]) for k in first[0] if k.startswith("depth_net."))
    for k, v in straight[0].items():
        assert torch.equal(v, resumed[0][k]), k
    for i, moments in straight[1].items():
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(moments[name], resumed[1][i][name]), (i, name)

    rows = csv_rows(out)
    assert rows[:len(history)] == history  # the first run's rows, untouched
    assert logged_steps(rows) == logged_steps(csv_rows(tmp_path / "straight")) == [0, 1, 2, 3]
    assert logged_steps(rows, "val/abs_rel") == [1, 3]
    assert not any("12345" in value for row in rows for value in row.values() if value)
    assert temp_files(out) == []


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_loses_at_most_one_interval_and_no_history(tiny_drive, tmp_path):
    """`semhint train` killed with SIGKILL mid-epoch, then `--resume auto`: every step logged once."""
    out = tmp_path / "run"
    every, epochs = 3, 4  # batch 1: 5 steps an epoch, 20 in all
    cmd = [sys.executable, "-m", "semhint", "train", str(CONFIG),
           *overrides(tiny_drive, out, **{"optim.batch_size": 1, "optim.epochs": epochs,
                                          "trainer.limit_train_batches": 1.0,
                                          "trainer.checkpoint_every_n_steps": every})]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "first.log", "w") as log:
        run = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    killed_after = -1
    while killed_after < 8 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        if (out / runfolder.METRICS_CSV).is_file():
            killed_after = max(logged_steps(csv_rows(out)), default=-1)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert run.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-2000:]
    saved = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]
    assert saved >= killed_after + 1 - every  # at most one checkpoint interval lost

    subprocess.run([*cmd, "--resume", "auto"], check=True, env=env, cwd=tmp_path, timeout=120, capture_output=True)
    rows = csv_rows(out)
    assert logged_steps(rows) == list(range(5 * epochs))
    assert logged_steps(rows, "val/abs_rel") == [4, 9, 14, 19]
    assert torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 20
    assert temp_files(out) == []
