"""semhint.lab: the seed sweep's launch order and pooling, the error budget, and the lab records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from semhint.evaluation.metrics import class_error_sums
from semhint.lab.budget import budget_rows
from semhint.lab.hint_quality import kitti_run_problem
from semhint.lab.records import write_record
from semhint.lab.road_roll import fit_plane, roll_about, rotate_about, summarise_road_roll
from semhint.lab.evaluator import REPORTS
from semhint.lab import sweep as S
from semhint.lab.sweep import Sweep, collect, plan_runs, run_config, scoring_config

BASELINE, SEMHINT = "synth_drive", "semhint_synth_drive"


def _sweep(out: Path, seeds: list[int], also: list[str] | None = None) -> Sweep:
    return Sweep(out=str(out), also=also or [], configs=[BASELINE, SEMHINT], labels="corrupt0.5", seeds=seeds)


def _fake_result(out: Path, name: str, seed: int, abs_rel: float) -> None:
    run = out / "runs" / name / f"seed{seed}"
    run.mkdir(parents=True)
    (run / "result.json").write_text(json.dumps({"seed": seed, "metrics": {"abs_rel": abs_rel}}))


def test_plan_is_seed_major_and_skips_finished_runs(tmp_path):
    _fake_result(tmp_path, "synth_drive", 0, 0.2)
    todo, done = plan_runs(_sweep(tmp_path, [0, 1]))
    assert [(Path(c).stem, s) for c, s, *_ in todo] == [("semhint_synth_drive", 0), ("synth_drive", 1),
                                                        ("semhint_synth_drive", 1)]
    assert [(Path(c).stem, s) for c, s, *_ in done] == [("synth_drive", 0)]
    assert todo[0][3] == "corrupt0.5" and todo[1][3] is None  # labels only for configs with a branch


def test_collect_pools_seeds_across_caches_first_cache_wins(tmp_path):
    cpu, gpu = tmp_path / "cpu", tmp_path / "gpu"
    _fake_result(cpu, "synth_drive", 0, 0.20)
    _fake_result(gpu, "synth_drive", 0, 0.99)  # the same seed again: the first cache's copy counts
    _fake_result(gpu, "synth_drive", 1, 0.21)
    _fake_result(gpu, "semhint_synth_drive-corrupt0.5", 1, 0.19)
    groups = collect(_sweep(cpu, [0, 1, 2], also=[str(gpu)]))
    assert {k: [(r["seed"], r["metrics"]["abs_rel"]) for r in v] for k, v in groups.items()} == {
        "synth_drive": [(0, 0.20), (1, 0.21)], "semhint_synth_drive-corrupt0.5": [(1, 0.19)]}
    assert set(collect(_sweep(cpu, [0, 1]))) == {"synth_drive"}  # without the second cache: one


def test_error_budget_contributions_add_up_and_rank_by_contribution():
    gt = np.full(1000, 10.0)
    pred = np.concatenate([np.full(600, 11.0), np.full(300, 13.0), np.full(100, 10.0)])  # building, car, road
    labels = np.concatenate([np.full(600, 2), np.full(300, 13), np.full(100, 0)])
    rows_of = class_error_sums(labels, gt, pred, 19)
    sums = {"building": rows_of[2], "car": rows_of[13], "road": rows_of[0]}
    overall, *per_class = budget_rows("run", sums, runs=2, min_share=0.0)
    assert overall["class"] == "all" and overall["AbsRel"] == pytest.approx((600 * 0.1 + 300 * 0.3) / 1000)
    assert sum(r["contribution"] for r in per_class) == pytest.approx(overall["AbsRel"])
    assert [r["class"] for r in per_class] == ["car", "building", "road"]  # largest contribution first
    car = per_class[0]
    assert car["AbsRel"] == pytest.approx(0.3) and car["share of valid"] == pytest.approx(0.3)
    assert car["log bias"] == pytest.approx(np.log(1.3))
    assert [r["class"] for r in budget_rows("run", sums, 2, min_share=0.2)[1:]] == ["car", "building"]


def test_records_are_written_whole_and_indexed_newest_first(tmp_path):
    (tmp_path / "README.md").write_text("# Lab\n\nintro\n\n## Index, newest first\n\n- 2026-01-01 · [Old](old.md)\n")
    write_record("alpha", "Alpha", "python x.py", "| a |\n|---|\n| 1 |", {"a": 1}, lab_dir=tmp_path, date="2026-02-01")
    write_record("beta", "Beta", "python y.py", "body", {}, lab_dir=tmp_path, date="2026-02-02")
    write_record("alpha", "Alpha again", "python x.py --more", "new body", {"a": 2}, lab_dir=tmp_path,
                 date="2026-02-03")
    index = (tmp_path / "README.md").read_text().split("## Index, newest first")[1].strip().splitlines()
    assert index == ["- 2026-02-03 · [Alpha again](alpha.md)", "- 2026-02-02 · [Beta](beta.md)",
                     "- 2026-01-01 · [Old](old.md)"]
    text = (tmp_path / "alpha.md").read_text()
    assert text.startswith("# Alpha again\n\n```\npython x.py --more\n```\n\nDate: 2026-02-03 · Machine: ")
    assert "new body" in text and "| 1 |" not in text and json.loads((tmp_path / "alpha.json").read_text()) == {"a": 2}
    assert "intro" in (tmp_path / "README.md").read_text()


def test_named_arms_live_at_out_arm_dash_seed_and_collect_from_there(tmp_path):
    arms = {BASELINE: "baseline", SEMHINT: "semhint"}
    sweep = Sweep(out=str(tmp_path), configs=[BASELINE, SEMHINT], labels="labels", seeds=[0, 1], arms=arms)
    run = tmp_path / "baseline-s1"
    run.mkdir()
    (run / "result.json").write_text(json.dumps({"seed": 1, "metrics": {"abs_rel": 0.3}}))
    todo, done = plan_runs(sweep)
    assert [r[2].name for r in todo] == ["baseline-s0", "semhint-s0", "semhint-s1"]
    assert [r[2] for r in done] == [run]
    assert {k: [r["seed"] for r in v] for k, v in collect(sweep).items()} == {"baseline": [1]}


def test_real_frames_train_without_lidar_and_report_by_noisy_label(tmp_path):
    sweep = Sweep(world="kitti", out=str(tmp_path), data=str(tmp_path), configs=["kitti_sample", "semhint_kitti_sample"],
                  labels="labels", steps=0, seeds=[0])
    cfg = run_config("semhint_kitti_sample", sweep, 0, tmp_path / "run", "labels")
    assert cfg.data.gt_depth == "" and cfg.data.labels == str(tmp_path / "labels")
    assert cfg.optim.epochs == 30  # steps=0 keeps the config's schedule
    assert scoring_config(sweep, "semhint_kitti_sample", cfg).data.gt_depth.endswith("kitti_sample_gt.npz")
    assert REPORTS["kitti"].classes_from == "noisy" and "road" in REPORTS["kitti"].classes


def test_a_held_out_half_never_reaches_training_not_even_as_a_neighbour():
    clip = [f"d {i} l" for i in range(3, 45)]  # targets with neighbours 3 away in a 48-frame clip
    lidar = [f"d {i} l" for i in range(2, 47, 2)]
    train, scored = S.holdout_lines(clip, lidar, [0, -3, 3], middle=24, half="first")
    assert [int(t.split()[1]) for t in train] == list(range(3, 21))  # 21 would need frame 24
    assert [int(t.split()[1]) for t in scored] == list(range(24, 47, 2))
    train, scored = S.holdout_lines(clip, lidar, [0, -3, 3], middle=24, half="second")
    assert [int(t.split()[1]) for t in train] == list(range(27, 45))  # 26 would need frame 23
    assert [int(t.split()[1]) for t in scored] == list(range(2, 23, 2))
    with pytest.raises(ValueError, match="half"):
        S.holdout_lines(clip, lidar, [0, -3, 3], middle=24, half="middle")


def test_sweeps_rebase_the_render_a_config_names_and_rerender_an_interrupted_one(tmp_path, monkeypatch):
    sweep = Sweep(world="drive", out=str(tmp_path), data=str(tmp_path / "town"), configs=["synth_town", "semhint_synth_town"],
                  labels="labels16", seeds=[0])
    cfg = run_config("semhint_synth_town", sweep, 0, tmp_path / "run", "labels16")
    assert cfg.data.path == str(tmp_path / "town" / "data") and cfg.data.labels == str(tmp_path / "town" / "labels16")
    tissue = Sweep(world="tissue", out=str(tmp_path), data=str(tmp_path / "scared"), seeds=[0])
    cfg = run_config("synth_tissue_scared_kinematics", tissue, 0, tmp_path / "run", None)
    assert cfg.data.poses == str(tmp_path / "scared" / "poses")  # given motion follows the render too
    root = tmp_path / "town"
    (root / "splits").mkdir(parents=True)
    (root / "splits" / "test.txt").write_text("x 0 l\n")  # what a render stopped half-way leaves
    calls = []
    monkeypatch.setattr(S, "render_drive", lambda out, **kw: calls.append(kw) or (out / "meta.json").write_text("{}"))
    S.ensure_data("drive", root, 1, 3, "32x96", preset="town")
    assert calls and calls[0]["preset"] == "town"
    S.ensure_data("drive", root, 1, 3, "32x96", preset="town")
    assert len(calls) == 1  # a finished render is reused


def test_a_run_whose_scoring_failed_is_scored_again_without_retraining(tmp_path, monkeypatch):
    sweep = _sweep(tmp_path, [0])
    fits, scores = [], []
    monkeypatch.setattr(S, "fit", lambda cfg: fits.append(cfg.trainer.out_dir))
    monkeypatch.setattr(S, "eval_data", lambda *a: None)
    monkeypatch.setattr(S, "diagnostics_split", lambda *a: None)

    def score(*a, **kw):
        scores.append(1)
        if len(scores) == 1:
            raise RuntimeError("scoring failed")
        return {"metrics": {"abs_rel": 0.3}}

    monkeypatch.setattr(S, "evaluate_run", score)
    run = tmp_path / "run"
    with pytest.raises(RuntimeError):
        S.one_run(sweep, BASELINE, 0, run, None)
    result = S.one_run(sweep, BASELINE, 0, run, None)
    assert len(fits) == 1 and len(scores) == 2 and result["metrics"]["abs_rel"] == 0.3
    assert json.loads((run / "result.json").read_text())["train_seconds"] >= 0


def test_the_constant_reference_reads_the_sweeps_labels_when_the_first_arm_is_semhint(tmp_path, monkeypatch):
    # a sweep of SemHint variants only: the reference must not fall back to the labels the YAML names
    sweep = Sweep(world="drive", out=str(tmp_path), data=str(tmp_path / "town"), configs=["semhint_synth_town"],
                  labels="corrupt0.5", seeds=[0])
    seen = []
    monkeypatch.setattr(S, "eval_data", lambda sweep, config, cfg: seen.append(cfg.data.labels) or "data")
    monkeypatch.setattr(S, "constant_depth_report", lambda data, eval_cfg, report: {"abs_rel": 0.5})
    assert S.constant_depth_result(sweep) == {"abs_rel": 0.5}
    assert seen == [str(tmp_path / "town" / "corrupt0.5")]


def test_road_roll_is_the_turn_about_travel_between_two_planes_and_ignores_their_distance():
    """A road plane seen by a camera rolled by 12 degrees about the direction of travel: its fitted plane is
    12 degrees from the level one about that axis whatever the camera height, and turning it back by
    -12 degrees gives the level plane again (the offsets the diagnostic tries)."""
    travel = torch.tensor([0.05, -0.02, 1.0])
    level = torch.tensor([0.0, 1.0, 0.02]) / 1.5  # a . X = 1: the ground 1.5 m below, holding the travel direction
    level = level - travel * (travel @ level) / (travel @ travel)
    rolled = rotate_about(level, travel, 12.0) * 0.7  # rolled, and at another height
    u, v = torch.meshgrid(torch.linspace(-0.5, 0.5, 20), torch.linspace(0.1, 0.4, 10), indexing="xy")
    rays = torch.stack([u.flatten(), v.flatten(), torch.ones(200)])  # rays below the horizon, r_z = 1
    fitted = fit_plane(rays, rolled @ rays)  # the plane through the points z r with 1/z = a . r
    assert torch.allclose(fitted, rolled, atol=1e-5)
    assert roll_about(level, fitted, travel) == pytest.approx(12.0, abs=1e-3)
    assert roll_about(fitted, level, travel) == pytest.approx(-12.0, abs=1e-3)
    back = rotate_about(fitted, travel, -12.0)
    assert roll_about(level, back, travel) == pytest.approx(0.0, abs=1e-3)
    assert (back / back.norm()) @ (level / level.norm()) == pytest.approx(1.0, abs=1e-6)


def test_road_roll_summary_counts_where_photometry_and_lidar_pick_the_same_offset():
    keys = ("LiDAR roll", "prediction roll", "hint roll", "photometry prefers", "LiDAR prefers")
    rows = [dict(zip(keys, values)) for values in [(0.5, -20.0, 10.0, 0, -10), (-1.3, 4.0, -2.0, 5, 0),
                                                   (0.0, 2.0, 1.0, 0, 0)]]
    summary = summarise_road_roll(rows)
    assert summary["LiDAR roll range"] == "-1.3..0.5"
    assert summary["frames"] == 3 and summary["photometry agrees with LiDAR"] == "2/3"
    assert summary["median |prediction roll|"] == pytest.approx(4.0)
    assert summary["median |hint roll|"] == pytest.approx(2.0) and summary["worst |hint roll|"] == pytest.approx(10.0)


def test_kitti_diagnostics_name_the_first_missing_file_or_folder(tmp_path):
    run = tmp_path / "semhint-s0"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert kitti_run_problem([run], tmp_path).endswith("diagnostics_split.txt: not found "
                                                      "(train and score the run first: experiments/real_kitti.py)")
    (run / "diagnostics_split.txt").write_text("")
    assert kitti_run_problem([run], tmp_path / "labels") == f"{tmp_path / 'labels'}: no such label folder"
    assert kitti_run_problem([run], tmp_path) is None
