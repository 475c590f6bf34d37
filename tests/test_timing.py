"""The speed benchmarks' building blocks (semhint.lab.timing) and the one-shot GPU benchmark on CPU.

Timings themselves never appear in an assertion here: only that a step trains, that a budget cuts
a call that overruns it, and that the GPU script, run at a tiny size on the CPU, writes a record
whose rows say what happened to each of them.
"""

from __future__ import annotations

import json
import math
import os
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


def _benchmark(name: str):
    """benchmarks/NAME.py as a module (a script, not part of the package)."""
    import importlib.util  # lazy: only these tests load the scripts

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scaling_cost_model_recovers_a_known_cost_and_predicts_with_it():
    bench = _benchmark("bench_scaling")
    truth = {"baseline": (0.05, 2.0, 0.0), "semhint": (0.08, 3.0, 0.02)}  # a (s), b (s / Mpx), c (s / Mpx / class)
    rows = []
    for arm, (a, b, c) in truth.items():
        for pixels, classes in ((0.05, 19), (0.12, 19), (0.5, 19), (0.12, 3), (0.12, 11)):
            rows.append({"arm": arm, "pixels_per_step": pixels * 1e6, "classes": classes if arm == "semhint" else 0,
                         "s_per_step": a + pixels * (b + c * (classes if arm == "semhint" else 0))})
    models = bench.fit_cost_model(rows)
    for arm, (a, b, c) in truth.items():
        assert models[arm]["a_s"] == pytest.approx(a, abs=1e-9) and models[arm]["b_s_per_mpx"] == pytest.approx(b)
        assert models[arm]["max_fit_error"] < 1e-9
    assert models["semhint"]["c_s_per_mpx_per_class"] == pytest.approx(0.02)
    assert bench.predict(models["semhint"], "semhint", 192, 640, 12, 19) == pytest.approx(0.08 + 1.47456 * 3.38)
    # more classes measured as (slightly) cheaper is noise: no negative per-class cost is kept
    noisy = [dict(r, s_per_step=(0.08 + 3.0 * r["pixels_per_step"] / 1e6) * (1 - 0.01 * r["classes"] / 19))
             for r in rows if r["arm"] == "semhint"]
    model = bench.fit_cost_model(noisy)["semhint"]
    assert model["c_s_per_mpx_per_class"] == 0.0 and model["b_s_per_mpx"] > 0


@pytest.mark.slow  # tens of seconds: a few SemHint and baseline steps at the smallest sizes
def test_scaling_benchmark_writes_its_record(tmp_path):
    args = [sys.executable, "benchmarks/bench_scaling.py", "--sizes", "64x64", "96x64", "--batches", "1",
            "--classes", "3", "--ref-size", "64x64", "--repeats", "1", "--warmup", "0", "--lab-dir", str(tmp_path)]
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((tmp_path / "step_scaling.json").read_text())
    assert {(r["axis"], r["arm"]) for r in record["rows"]} == {
        ("resolution", "baseline"), ("resolution", "semhint"), ("resolution", "semhint coarse"),
        ("resolution", "semhint branch only"),
        ("batch", "baseline"), ("batch", "semhint"), ("classes", "semhint")}
    assert set(record["cost_model"]) == {"baseline", "semhint", "semhint coarse", "semhint branch only"}
    assert record["command"].startswith(".venv/bin/python benchmarks/bench_scaling.py")
    assert "Cost model" in (tmp_path / "step_scaling.md").read_text()
    refit = ["benchmarks/bench_scaling.py", "--refit", str(tmp_path / "step_scaling.json"), "--lab-dir", str(tmp_path)]
    again = subprocess.run([sys.executable, *refit], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    refitted = json.loads((tmp_path / "step_scaling.json").read_text())
    assert "refit" in refitted and refitted["command"] == record["command"]
    assert [r["s_per_step"] for r in refitted["rows"]] == [r["s_per_step"] for r in record["rows"]]


def test_loader_extrapolation_is_bound_by_the_slower_stage():
    bench = _benchmark("bench_loader")
    # workers bound: 8 workers at 40 ms each deliver 200 snippets/s; the main process could take 500
    assert bench.extrapolated_rate(40.0, 2.0, 8) == pytest.approx(200.0)
    # hand-over bound: cheap workers, but the main process needs 5 ms per snippet
    assert bench.extrapolated_rate(4.0, 5.0, 8) == pytest.approx(200.0)


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc (Linux)")
def test_loader_reads_a_process_cpu_time_that_grows_with_work():
    bench = _benchmark("bench_loader")
    before = bench.process_cpu_seconds(os.getpid())
    end = time.process_time() + 0.1
    while time.process_time() < end:  # 0.1 s of CPU in this process
        pass
    assert bench.process_cpu_seconds(os.getpid()) - before >= 0.05
    assert math.isnan(bench.process_cpu_seconds(2**22 + 12345))  # no such process
