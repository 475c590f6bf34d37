"""Training: pose conventions, a few real steps on a tiny SynthDrive set, exact resume, DDP over gloo."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from semhint.core import geometry
from semhint.core.checkpoints import CONFIG_KEY
from semhint.core.config import from_dict, load_config
from semhint.training import SemHintModule, fit, predict_poses

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------
# unit: the pose convention
# ----------------------------------------------------------------------------------------------
class _RecordingPoseNet(torch.nn.Module):
    """Returns a fixed motion and records which frames it was fed, in which order."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, a, b):
        self.calls.append((float(a.mean()), float(b.mean())))
        axisangle = torch.tensor([[[0.0, 0.1, 0.0]]]).expand(a.shape[0], 1, 3)
        translation = torch.tensor([[[0.0, 0.0, 0.5]]]).expand(a.shape[0], 1, 3)
        return axisangle, translation


def test_poses_fed_in_time_order_and_inverted_for_past_frames():
    batch = {f"image_aug/{f}": torch.full((2, 3, 4, 4), float(v)) for f, v in ((0, 0.5), (-1, 0.1), (1, 0.9))}
    net = _RecordingPoseNet()
    poses = predict_poses(net, batch, [0, -1, 1])
    assert net.calls == [(pytest.approx(0.1), pytest.approx(0.5)), (pytest.approx(0.5), pytest.approx(0.9))]
    # the same motion between (past, target) and (target, future): T_{-1} is the inverse of T_{+1}
    assert poses[1].shape == (2, 4, 4)
    torch.testing.assert_close(poses[-1] @ poses[1], torch.eye(4).expand(2, 4, 4), atol=1e-6, rtol=0)
    torch.testing.assert_close(poses[-1], geometry.invert_pose(poses[1]), atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------------------------
# integration: a few steps on a tiny rendered drive
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_drive(tmp_path_factory) -> Path:
    from semhint.data.synthetic import render_drive

    root = tmp_path_factory.mktemp("drive")
    render_drive(root, preset="tiny", seed=0, progress=False)
    return root


def tiny_overrides(root: Path, out: Path, **extra) -> list[str]:
    values = {
        "data.path": root / "data", "data.train_split": root / "splits" / "train.txt",
        "data.val_split": root / "splits" / "val.txt", "data.gt_depth": root / "gt_depth",
        "data.height": 32, "data.width": 96, "data.num_workers": 0,
        "optim.batch_size": 2, "optim.epochs": 1, "optim.grad_clip": 1.0,
        "trainer.out_dir": out, "trainer.accelerator": "cpu", "trainer.limit_train_batches": 2,
        "trainer.limit_val_batches": 1, "trainer.log_every_n_steps": 1, "trainer.image_log_every_n_steps": 1,
        "trainer.num_threads": 1, "eval.protocol": "generic", "eval.crop": "none",
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


class _StartState(Callback):
    """What the loop holds when training (re)starts: proves what resume restored."""

    def on_train_start(self, trainer, pl_module):
        opt = trainer.optimizers[0]
        self.global_step = trainer.global_step
        self.epoch = trainer.current_epoch
        self.adam_steps = {float(s["step"]) for s in opt.state.values()}
        self.lr = opt.param_groups[0]["lr"]


def _csv_columns(path: Path) -> set[str]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {k for row in rows for k, v in row.items() if v not in ("", None)}


def test_train_logs_checkpoints_and_resumes_exactly(tiny_drive, tmp_path):
    out = tmp_path / "run"
    cfg = load_config(REPO / "semhint" / "configs" / "synth_drive.yaml", tiny_overrides(tiny_drive, out))
    fit(cfg)
    last = out / "checkpoints" / "last.ckpt"
    assert last.is_file() and (out / "config.yaml").is_file()
    assert any(p.name.startswith("best") for p in (out / "checkpoints").iterdir())
    assert list((out / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    columns = _csv_columns(out / "logs" / "csv" / "metrics.csv")
    assert {"train/loss_step", "train/photo", "val/abs_rel", "val/a1"} <= columns
    assert any(c.startswith("lr-") for c in columns)
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert saved[CONFIG_KEY]["data"]["height"] == 32 and saved["global_step"] == 2
    saved_adam = {float(s["step"]) for s in saved["optimizer_states"][0]["state"].values()}

    start = _StartState()
    cfg2 = load_config(REPO / "semhint" / "configs" / "synth_drive.yaml", tiny_overrides(tiny_drive, out, **{"optim.epochs": 2}))
    fit(cfg2, resume="auto", extra_callbacks=[start])
    assert (start.global_step, start.epoch) == (2, 1)
    assert start.adam_steps == saved_adam == {2.0}
    assert start.lr == pytest.approx(cfg.optim.lr)
    resumed = torch.load(last, map_location="cpu", weights_only=True)
    assert resumed["global_step"] == 4


class _Weights(Callback):
    """Depth- and pose-net parameters at the start and at the end of training."""

    def on_train_start(self, trainer, pl_module):
        self.start = {k: v.detach().clone() for k, v in pl_module.named_parameters()}

    def on_train_end(self, trainer, pl_module):
        self.end = {k: v.detach().clone() for k, v in pl_module.named_parameters()}

    def changed(self, prefix: str) -> bool:
        return any(not torch.equal(self.start[k], self.end[k]) for k in self.start if k.startswith(prefix))


def test_pose_warmup_trains_the_pose_net_alone(tiny_drive, tmp_path):
    weights = _Weights()
    cfg = load_config(REPO / "semhint" / "configs" / "synth_drive.yaml",
                      tiny_overrides(tiny_drive, tmp_path / "warm", **{"optim.pose_warmup_steps": 2}))
    fit(cfg, extra_callbacks=[weights])
    assert weights.changed("pose_net.") and not weights.changed("depth_net.")
    after = _Weights()
    cfg = load_config(REPO / "semhint" / "configs" / "synth_drive.yaml",
                      tiny_overrides(tiny_drive, tmp_path / "after", **{"optim.pose_warmup_steps": 1}))
    fit(cfg, extra_callbacks=[after])
    assert after.changed("depth_net.")  # the second step (past the warm-up) trains depth too


@pytest.mark.slow
def test_training_beats_a_constant_depth_on_a_tiny_world(tmp_path):
    """The product, not the parts: the baseline recipe (configs/synth_drive.yaml), trained 100 steps of
    which 25 are the pose warm-up, predicts held-out frames of a world it never saw clearly better than
    the best constant depth (both median-scaled, generic protocol, exact rendered depth).

    Measured at 32 x 96 on 3 drives of 12 frames (2 for training, 1 held out) against AbsRel 0.613 for
    constant depth: 100 steps (25 warm-up) gave 0.433 / 0.418 (seeds 0 / 1), 80 steps (20) 0.43-0.48 and
    120 steps (30) 0.34-0.38 (seeds 0-2). The assertion asks for 15 % lower (< 0.52), so it fails on a depth
    net that did not learn, not on a seed; about 1 min on a busy 2-core machine.
    """
    from semhint.data.synthetic import render_drive
    from semhint.lab.evaluator import REPORTS, constant_depth_report, evaluate_run, load_split

    root = render_drive(tmp_path / "world", preset="tiny", seed=0, sequences=3, frames=12, size="48x160",
                        progress=False, workers=1)
    weights = _Weights()
    cfg = load_config(REPO / "semhint" / "configs" / "synth_drive.yaml", tiny_overrides(root, tmp_path / "run", **{
        "optim.batch_size": 4, "optim.epochs": 1000, "optim.milestones": [1000], "optim.max_steps": 100,
        "optim.pose_warmup_steps": 25, "optim.grad_clip": 0.0, "trainer.limit_train_batches": 1.0,
        "trainer.log_every_n_steps": 4, "trainer.image_log_every_n_steps": 0, "trainer.progress_bar": False,
        "trainer.seed": 0}))
    fit(cfg, extra_callbacks=[weights])
    assert weights.changed("depth_net.") and weights.changed("pose_net.")
    test = load_split(cfg, root / "splits" / "test.txt", root)
    assert len(test.names) == 10
    trained = evaluate_run(tmp_path / "run" / "checkpoints" / "last.ckpt", test, REPORTS["drive"], cfg=cfg)
    constant = constant_depth_report(test, cfg.eval, REPORTS["drive"])["metrics"]["abs_rel"]
    abs_rel = trained["metrics"]["abs_rel"]
    assert 0.4 < constant < 0.9  # the reference itself is what was measured: the world did not change
    assert abs_rel < 0.85 * constant, f"AbsRel {abs_rel:.3f} vs {constant:.3f} for constant depth"
    assert trained["depth_spread"] > 2.0  # a depth map, not a collapsed plane


def test_pose_warmup_step_sees_a_plane_at_the_mean_depth_and_no_automask():
    from semhint.training import pose_warmup_config, pose_warmup_outputs

    disp = torch.rand(2, 1, 4, 6, requires_grad=True)
    seg = torch.rand(2, 3, 4, 6, requires_grad=True)
    warm = pose_warmup_outputs({"disp/0": disp, "seg/0": seg})
    torch.testing.assert_close(warm["disp/0"], disp.mean(dim=(1, 2, 3), keepdim=True).expand_as(disp))
    (warm["disp/0"].sum() + warm["seg/0"].sum()).backward()  # in the graph (DDP), with zero gradient
    assert bool((disp.grad == 0).all()) and bool((seg.grad == 0).all())
    cfg = from_dict({"loss": {"automask": True}})
    assert pose_warmup_config(cfg).loss.automask is False and cfg.loss.automask is True


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    from semhint.core.fileio import InputError

    cfg = from_dict({"trainer": {"out_dir": str(tmp_path / "nothing")}})
    with pytest.raises(InputError, match="last.ckpt: checkpoint to resume from not found"):
        fit(cfg, resume="auto")


def _random_batch(batch_size: int) -> dict:
    """Random 32x96 snippets (frames 0, -1, +1) with intrinsics: a batch shaped like the loader's."""
    g = torch.Generator().manual_seed(0)
    batch = {}
    for f in (0, -1, 1):
        batch[f"image/{f}"] = batch[f"image_aug/{f}"] = torch.rand(batch_size, 3, 32, 96, generator=g)
    K = geometry.intrinsics_matrix(50.0, 50.0, 47.5, 15.5).expand(batch_size, 4, 4)
    batch["K"], batch["inv_K"] = K, torch.linalg.inv(K)
    return batch


def test_objective_returns_the_documented_terms():
    cfg = from_dict({"data": {"height": 32, "width": 96}, "optim": {"batch_size": 2}})
    module = SemHintModule(cfg)
    losses, maps, outputs = module.objective(_random_batch(2))
    assert {"loss", "photo", "smooth", "automask_frac"} <= set(losses)
    assert outputs["disp/0"].shape == (2, 1, 32, 96) and maps["automask/0"].shape == (2, 1, 32, 96)
    losses["loss"].backward()
    assert module.pose_net.parameters().__next__().grad is not None


def test_saturated_depth_is_measured_and_logged():
    from semhint.training import saturated_fraction

    disp = torch.tensor([0.0, 0.0005, 0.5, 0.9995, 1.0]).view(1, 1, 1, 5)
    assert float(saturated_fraction(disp)) == pytest.approx(0.8)
    module = SemHintModule(from_dict({"data": {"height": 32, "width": 96}, "optim": {"batch_size": 2}}))
    losses, _, _ = module.objective(_random_batch(2))
    assert 0 <= float(losses["depth_saturated"]) < 0.5  # a fresh net sits well inside its range


def test_light_profile_learns_beside_the_networks_and_starts_flat():
    """loss.light_profile radial: two coefficients in the module, zero at the start (the loss is then
    the one without the switch), optimised with the networks, in the checkpoint's weights."""
    plain_cfg = from_dict({"data": {"height": 32, "width": 96}, "optim": {"batch_size": 2}})
    cfg = from_dict({"data": {"height": 32, "width": 96}, "optim": {"batch_size": 2}, "loss": {"light_profile": "radial"}})
    torch.manual_seed(0)
    plain = SemHintModule(plain_cfg)
    torch.manual_seed(0)
    module = SemHintModule(cfg)
    assert plain.light is None and torch.equal(module.light.ab(), torch.zeros(2))
    batch = _random_batch(2)
    losses, _, outputs = module.objective(batch)
    assert outputs["light/log_profile"].shape == (2, 1, 32, 96) and float(outputs["light/log_profile"].detach().abs().max()) == 0
    torch.testing.assert_close(losses["photo"], plain.objective(batch)[0]["photo"])
    losses["loss"].backward()
    assert module.light.coeffs.grad is not None and float(module.light.coeffs.grad.abs().sum()) > 0
    optimised = {id(p) for group in module.configure_optimizers()["optimizer"].param_groups for p in group["params"]}
    assert id(module.light.coeffs) in optimised
    assert "light.coeffs" in module.state_dict()
    with torch.no_grad():
        module.light.coeffs.fill_(-0.5 / module.light.step_gain)  # a beam that darkens off axis; centre factor 1
    profile = module.light(batch["inv_K"], 32, 96)
    assert float(profile.detach().max()) <= 0 and float(profile[0, 0, 16, 0].detach()) < float(profile[0, 0, 16, 48].detach()) - 0.1


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_trainer_compile_uses_one_lazily_compiled_objective_never_pickled(monkeypatch):
    """trainer.compile: the step calls torch.compile(objective) once; pickling drops the compiled function."""
    import pickle

    compiles, compiled_calls = [], []

    def fake_compile(fn):  # a real compile takes minutes on CPU; the wiring is what is tested here
        compiles.append(fn)

        def wrapped(*args, **kwargs):
            compiled_calls.append(1)
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(torch, "compile", fake_compile)
    cfg = from_dict({"data": {"height": 32, "width": 96}, "optim": {"batch_size": 1},
                     "trainer": {"compile": True, "image_log_every_n_steps": 0}})
    module = SemHintModule(cfg)
    batch = _random_batch(1)
    with torch.no_grad():
        for _ in range(2):
            assert torch.isfinite(module.training_step(batch, 0))
    compiled = module._compiled
    assert compiled is not None and len(compiles) == 1 and len(compiled_calls) == 2
    assert "_compiled" not in module.state_dict() and not any("_compiled" in k for k in module.state_dict())
    clone = pickle.loads(pickle.dumps(module))
    assert clone._compiled is None and module._compiled is compiled


@pytest.mark.slow
def test_ddp_two_cpu_processes_over_gloo(tiny_drive, tmp_path):
    """`semhint train` with 2 processes: trains (past the 1-step pose warm-up), reduces val metrics,
    rank 0 writes, resumes."""
    out = tmp_path / "ddp"
    base = [sys.executable, "-m", "semhint", "train", str(REPO / "semhint" / "configs" / "synth_drive.yaml"),
            *tiny_overrides(tiny_drive, out, **{"trainer.devices": 2, "trainer.strategy": "ddp", "optim.batch_size": 1,
                                                "trainer.image_log_every_n_steps": 0, "optim.pose_warmup_steps": 1})]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PL_DISABLE_FORK": "1"}
    subprocess.run(base, check=True, env=env, cwd=tmp_path, timeout=120, capture_output=True)
    last = out / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 2
    assert "val/abs_rel" in _csv_columns(out / "logs" / "csv" / "metrics.csv")
    assert len(list((out / "logs" / "tensorboard").glob("events.out.tfevents.*"))) == 1  # rank 0 only
    subprocess.run([*base, "optim.epochs=2", "--resume", "auto"], check=True, env=env, cwd=tmp_path, timeout=120,
                   capture_output=True)
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 4


# Run as a script by the DDP test: Lightning's launcher starts rank 1 by re-running this file with the
# same arguments, so every rank adds the callback that saves its own weights at the start and the end.
_DDP_SCRIPT = """
import sys
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from semhint.core.config import load_config
from semhint.training import fit


class SaveRankWeights(Callback):
    def _save(self, trainer, pl_module, when):
        state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        torch.save({"global_step": trainer.global_step, "state": state},
                   Path(sys.argv[1]) / f"{when}_rank{trainer.global_rank}.pt")

    def on_train_start(self, trainer, pl_module):
        self._save(trainer, pl_module, "start")

    def on_train_end(self, trainer, pl_module):
        self._save(trainer, pl_module, "end")


if __name__ == "__main__":
    fit(load_config(sys.argv[2], sys.argv[3:]), extra_callbacks=[SaveRankWeights()])
"""


@pytest.mark.slow
def test_ddp_ranks_end_with_equal_weights_and_a_trained_depth_net(tiny_drive, tmp_path):
    """Two gloo ranks, each on its own half of the data, 3 steps of which 2 are past the pose warm-up:
    both start from the same weights, end with the same weights (gradients were all-reduced, every
    buffer broadcast), and the depth net, not only the pose net, moved from its initial weights."""
    script = tmp_path / "ddp_fit.py"
    script.write_text(_DDP_SCRIPT)
    saved = tmp_path / "weights"
    saved.mkdir()
    overrides = tiny_overrides(tiny_drive, tmp_path / "ddp", **{
        "trainer.devices": 2, "trainer.strategy": "ddp", "optim.batch_size": 1, "optim.pose_warmup_steps": 1,
        "trainer.limit_train_batches": 3, "trainer.image_log_every_n_steps": 0, "trainer.progress_bar": False})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PL_DISABLE_FORK": "1"}
    config = REPO / "semhint" / "configs" / "synth_drive.yaml"
    done = subprocess.run([sys.executable, str(script), str(saved), str(config), *overrides], env=env, cwd=tmp_path,
                          timeout=150, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    w = {f"{when}{r}": torch.load(saved / f"{when}_rank{r}.pt", map_location="cpu", weights_only=True)
         for when in ("start", "end") for r in (0, 1)}
    assert w["end0"]["global_step"] == w["end1"]["global_step"] == 3
    for when in ("start", "end"):
        a, b = w[f"{when}0"]["state"], w[f"{when}1"]["state"]
        assert a.keys() == b.keys()
        unequal = [k for k in a if not torch.equal(a[k], b[k])]
        assert not unequal, f"ranks differ at {when}: {unequal[:5]}"

    def moved(prefix: str) -> bool:  # learnt weights only: batch-norm statistics move in the warm-up too
        start, end = w["start0"]["state"], w["end0"]["state"]
        keys = [k for k in start if k.startswith(prefix) and not k.endswith(("running_mean", "running_var",
                                                                               "num_batches_tracked"))]
        return any(not torch.equal(start[k], end[k]) for k in keys)

    assert moved("depth_net.") and moved("pose_net.")


def test_collate_keeps_ground_truth_of_different_sizes_as_a_list():
    from semhint.training import collate_snippets

    a = {"image/0": torch.zeros(3, 8, 8), "depth_gt": torch.ones(1, 5, 7)}
    b = {"image/0": torch.ones(3, 8, 8), "depth_gt": torch.ones(1, 6, 7)}
    batch = collate_snippets([dict(a), dict(b)])
    assert batch["image/0"].shape == (2, 3, 8, 8)
    assert [g.shape for g in batch["depth_gt"]] == [(1, 5, 7), (1, 6, 7)]
    assert collate_snippets([dict(a), dict(a)])["depth_gt"].shape == (2, 1, 5, 7)


def test_road_roll_votes_reach_the_hint_and_survive_a_checkpoint():
    """refine.ground_roll_votes: the voted roll goes into the step's hint, each image's own roll comes out
    as its vote, and the votes are written with the checkpoint and read back by a resumed run."""
    refine = {"hint": True, "hint_operators": ["surface"], "ground_travel": True, "ground_roll_votes": 4,
              "warmup_epochs": 0}
    cfg = from_dict({"data": {"height": 32, "width": 96}, "optim": {"batch_size": 2}, "model": {"num_classes": 19},
                     "refine": refine})
    module = SemHintModule(cfg)
    module.roll_votes.add(torch.tensor([0.1, float("nan")]))
    losses, maps, _ = module.objective(_random_batch(2))
    assert float(losses["refine/ground_roll_deg"]) == pytest.approx(math.degrees(0.1), rel=1e-5)
    assert maps["ground_roll/0"].shape == (2,)
    checkpoint = {"state_dict": {}}
    module.on_save_checkpoint(checkpoint)
    resumed = SemHintModule(cfg)
    resumed.on_load_checkpoint(checkpoint)
    assert resumed.roll_votes.votes == pytest.approx([0.1])
    assert SemHintModule(from_dict({"model": {"num_classes": 19}, "refine": {**refine, "ground_roll_votes": 0}})
                         ).roll_votes is None
