"""The demo end to end in a tiny mode: renders, trains a few steps, evaluates, writes the report."""

from __future__ import annotations

import json

import pytest

from semhint.app.cli import main as cli_main


@pytest.mark.slow
def test_demo_tiny_writes_the_report(tmp_path):
    out = tmp_path / "demo"
    assert cli_main(["demo", "--out", str(out), "--preset", "tiny", "--steps", "2", "--minutes", "1"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_frames"] > 0
    baseline = metrics["runs"]["baseline"]["metrics"]
    assert 0 < baseline["abs_rel"] < 10 and 0 <= baseline["a1"] <= 1
    assert 0 < metrics["constant_depth_baseline"]["abs_rel"] < 10
    semhint = metrics["runs"]["semhint"]  # the comparison: same data, same step budget
    assert semhint["steps"] == metrics["runs"]["baseline"]["steps"] == 2
    assert 0 < semhint["metrics"]["abs_rel"] < 10 and 0 <= semhint["metrics"]["seg_miou"] <= 1
    assert 0 < metrics["noisy_labels"]["miou"] < 1
    report = (out / "report.md").read_text()
    assert "constant depth" in report and "| baseline |" in report and "| semhint |" in report
    for picture in ("depth_panels.png", "training_curves.png"):
        assert (out / picture).stat().st_size > 5000
