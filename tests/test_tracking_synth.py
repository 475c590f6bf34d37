"""Integration: the trackers on SynthTissue's tiny preset, read through `semhint synth tissue`'s own output."""

from __future__ import annotations

import json

import pytest

from semhint.app.cli import main
from semhint.tracking import evaluate_tracks, load_clip, track


@pytest.fixture(scope="module")
def synth_clip(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_tissue")
    assert main(["synth", "tissue", "--out", str(out), "--preset", "tiny", "--sequences", "1", "--workers", "1"]) == 0
    return out, load_clip(out / "data" / "tissue_01")


@pytest.mark.slow
def test_synth_tissue_tracking_depth_quality_shows(synth_clip):
    out, clip = synth_clip
    assert clip.K is not None and clip.depth_paths is not None and clip.label_paths is not None
    flow = evaluate_tracks(track(clip, "flow", progress=False), clip)
    assert flow["method"]["2d"]["mean_px"] < flow["zero_motion"]["2d"]["mean_px"]
    scores = [evaluate_tracks(track(clip, "graph+flow", "gt", depth_noise=noise, progress=False), clip)["method"]
              for noise in (0.0, 0.02, 0.05)]
    err2 = [s["2d"]["mean_px"] for s in scores]
    err3 = [s["3d"]["mean_mm"] for s in scores]
    assert err2[0] < flow["zero_motion"]["2d"]["mean_px"]
    assert err3[0] < err3[1] < err3[2], err3
    assert err2[0] < err2[2], err2


@pytest.mark.slow
def test_cli_track_on_synth_tissue(synth_clip, tmp_path):
    out, clip = synth_clip
    dest = tmp_path / "tracks"
    assert main(["track", str(out / "data" / "tissue_01"), "--mode", "graph", "--depth", "gt", "--out", str(dest),
                 "--no-video"]) == 0
    scores = json.loads((dest / "scores.json").read_text())
    assert scores["frames_scored"] == len(clip) - 1 and scores["method"]["3d"]["count"] > 0
