"""The speed benchmarks' building blocks (semhint.lab.timing) and the one-shot GPU benchmark on CPU.

Timings themselves never appear in an assertion here: only that a step trains, that a budget cuts
a call that overruns it, and that the GPU script, run at a tiny size on the CPU, writes a record
whose rows say what happened to each of them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from semhint.lab.timing import BudgetExceeded, DepthForward, TimeBudget, TrainStep, bench_config, split_size

REPO = Path(__file__).resolve().parents[1]


def test_split_size_counts_the_shipped_eigen_zhou_train_split():
    assert split_size() == 39810  # Monodepth2's eigen_zhou train split (docs/DATA.md)


def test_a_train_step_changes_the_weights_and_a_forward_does_not():
    cfg = bench_config("kitti_eigen_zhou", 64, 64, batch_size=1)
    step = TrainStep(cfg, "cpu")
    before = [p.detach().clone() for p in step.module.depth_net.parameters()]
    step()
    assert any(not torch.equal(a, b) for a, b in zip(before, step.module.depth_net.parameters()))
    forward = DepthForward(cfg, "cpu", batch_size=1)
    weights = [p.detach().clone() for p in forward.net.parameters()]
    forward()
    assert all(torch.equal(a, b) for a, b in zip(weights, forward.net.parameters()))


def test_the_budget_cuts_a_call_that_overruns_it():
    budget = TimeBudget(0.3, reserve_s=0.0)
    t0 = time.monotonic()
    with pytest.raises(BudgetExceeded):
        with budget.hard_stop():
            time.sleep(5)
    assert time.monotonic() - t0 < 2
    with pytest.raises(BudgetExceeded, match="spent"):  # nothing starts once it is spent
        with budget.hard_stop():
            pass


@pytest.mark.slow  # tens of seconds: every row of the GPU benchmark at a tiny size on the CPU
def test_gpu_benchmark_runs_on_cpu_at_a_tiny_size_and_writes_its_record(tmp_path):
    args = [sys.executable, "benchmarks/bench_gpu.py", "--device", "cpu", "--tiny", "--lab-dir", str(tmp_path),
            "--train-variants", "fp32", "--infer-variants", "fp32"]
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((tmp_path / "gpu_bench_cpu.json").read_text())
    arms = {row["arm"] for row in record["train"] if row["status"] == "ok"}
    assert arms == {"reference (plain)", "baseline", "semhint"}
    assert all(row["snippets_per_s"] > 0 for row in record["train"])
    assert {row["batch"] for row in record["inference"] if row["status"] == "ok"} == {1, 2}
    assert (tmp_path / "gpu_bench_cpu.md").read_text().count("| semhint |") >= 2
    # a budget too small for any row: every row says it was skipped, and the record is still written
    spent = subprocess.run([*args, "--budget-s", "2"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert spent.returncode == 0, spent.stderr[-2000:]
    record = json.loads((tmp_path / "gpu_bench_cpu.json").read_text())
    assert record["train"] and all(row["status"].startswith("skipped") for row in record["train"] + record["inference"])
