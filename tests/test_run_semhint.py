"""benchmarks/run_semhint.py: launch order and pooling of cached results (no training)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from conftest import load_benchmark

REPO = Path(__file__).resolve().parents[1]
BASELINE, SEMHINT = "configs/synth_drive.yaml", "configs/semhint_synth_drive.yaml"


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("run_semhint")


def _args(out: Path, seeds: list[int], also: list[str] | None = None) -> argparse.Namespace:
    return argparse.Namespace(out=str(out), also=also, configs=[str(REPO / BASELINE), str(REPO / SEMHINT)],
                              labels="corrupt0.5", tag="", seeds=seeds, reevaluate=False)


def _fake_result(out: Path, name: str, seed: int, abs_rel: float) -> None:
    run = out / "runs" / name / f"seed{seed}"
    run.mkdir(parents=True)
    (run / "result.json").write_text(json.dumps({"seed": seed, "metrics": {"abs_rel": abs_rel}}))


def test_plan_is_seed_major_and_skips_finished_runs(bench, tmp_path):
    _fake_result(tmp_path, "synth_drive", 0, 0.2)
    todo, done = bench.plan_runs(_args(tmp_path, [0, 1]))
    assert [(Path(c).stem, s) for c, s, *_ in todo] == [("semhint_synth_drive", 0), ("synth_drive", 1),
                                                        ("semhint_synth_drive", 1)]
    assert [(Path(c).stem, s) for c, s, *_ in done] == [("synth_drive", 0)]
    assert todo[0][3] == "corrupt0.5" and todo[1][3] is None  # labels only for configs with a branch


def test_collect_pools_seeds_across_caches_first_cache_wins(bench, tmp_path):
    cpu, gpu = tmp_path / "cpu", tmp_path / "gpu"
    _fake_result(cpu, "synth_drive", 0, 0.20)
    _fake_result(gpu, "synth_drive", 0, 0.99)  # the same seed again: the first cache's copy counts
    _fake_result(gpu, "synth_drive", 1, 0.21)
    _fake_result(gpu, "semhint_synth_drive-corrupt0.5", 1, 0.19)
    groups = bench.collect(_args(cpu, [0, 1, 2], also=[str(gpu)]))
    assert {k: [(r["seed"], r["metrics"]["abs_rel"]) for r in v] for k, v in groups.items()} == {
        "synth_drive": [(0, 0.20), (1, 0.21)], "semhint_synth_drive-corrupt0.5": [(1, 0.19)]}
    assert set(bench.collect(_args(cpu, [0, 1]))) == {"synth_drive"}  # without --also: one cache
