"""The demo: the same steps for both arms, the same answer twice, and a verdict that never ranks
runs that learnt nothing."""

from __future__ import annotations

import json

import pytest

from semhint.app.cli import main as cli_main
from semhint.app.demo import DemoRun, SETTINGS, untrained_depth_warning, verdict
from semhint.core.config import load_config

CONSTANT = {"abs_rel": 0.60}


def _runs(baseline: float, semhint: float) -> list[DemoRun]:
    cfg = load_config("synth_drive")
    return [DemoRun("baseline", cfg, metrics={"abs_rel": baseline}), DemoRun("semhint", cfg, metrics={"abs_rel": semhint})]


def test_verdict_compares_the_arms_only_when_both_beat_a_constant():
    said = verdict(_runs(0.21, 0.17), CONSTANT)
    assert "19 % lower" in said and "10 seeds" in said
    assert "higher" in verdict(_runs(0.17, 0.21), CONSTANT)


def test_verdict_says_so_when_nothing_beats_a_constant():
    said = verdict(_runs(0.61, 0.65), CONSTANT)
    assert said.startswith("Neither run beats a constant depth") and "lower" not in said


def test_verdict_names_the_arm_that_learnt_nothing():
    said = verdict(_runs(0.30, 0.70), CONSTANT)
    assert "`semhint` does not beat" in said and "SemHint vs the baseline" not in said


def test_a_budget_inside_the_pose_warmup_is_flagged():
    cfg = load_config("synth_drive")
    assert "pose warm-up" in untrained_depth_warning(cfg.optim.pose_warmup_steps, cfg)
    assert untrained_depth_warning(SETTINGS["demo"].steps, cfg) is None


def test_the_demo_preset_is_the_measured_setting():
    """Changing these means the demo no longer reproduces a seed of the 600-step sweep in RESULTS."""
    demo = SETTINGS["demo"]
    assert (demo.steps, demo.size, demo.warmup_epochs, demo.sequences, demo.frames) == (600, "64x208", 12, 4, 40)


@pytest.mark.slow
def test_demo_tiny_writes_the_report_and_says_the_same_twice(tmp_path):
    reports = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert cli_main(["demo", "--out", str(out), "--preset", "tiny", "--steps", "3"]) == 0
        reports.append(json.loads((out / "metrics.json").read_text()))
    metrics = reports[0]
    assert metrics["test_frames"] > 0 and metrics["steps"] == 3
    baseline = metrics["runs"]["baseline"]["metrics"]
    assert 0 < baseline["abs_rel"] < 10 and 0 <= baseline["a1"] <= 1
    assert 0 < metrics["constant_depth_baseline"]["abs_rel"] < 10
    semhint = metrics["runs"]["semhint"]  # the comparison: same data, same step budget
    assert semhint["steps"] == metrics["runs"]["baseline"]["steps"] == 3
    assert 0 < semhint["metrics"]["abs_rel"] < 10 and 0 <= semhint["metrics"]["seg_miou"] <= 1
    assert 0 < metrics["noisy_labels"]["miou"] < 1
    assert "pose warm-up" in metrics["warning"]  # 3 steps cannot train depth, and the report says so
    report = (tmp_path / "a" / "report.md").read_text()
    assert "constant depth" in report and "| baseline |" in report and "| semhint |" in report
    assert "**Warning:**" in report and "lower" not in report.split("**Warning:**")[1]
    for picture in ("depth_panels.png", "training_curves.png"):
        assert (tmp_path / "a" / picture).stat().st_size > 5000
    for arm in ("baseline", "semhint"):  # deterministic: a second demo at the same seed says the same
        assert reports[1]["runs"][arm]["metrics"] == reports[0]["runs"][arm]["metrics"]


def test_without_the_effnet_package_the_demo_stops_before_rendering(tmp_path, monkeypatch, capsys):
    import semhint.app.demo as demo
    from semhint.core.errors import InputError

    def missing():
        raise InputError("EfficientNet-Lite0 pretrained weights need the optional package")

    monkeypatch.setattr(demo, "efficientnet_lite0_package_path", missing)
    assert cli_main(["demo", "--preset", "tiny", "--out", str(tmp_path / "demo")]) == 2
    assert "semhint[effnet]" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()
