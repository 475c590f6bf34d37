"""benchmarks/bench_error_budget.py: the per-class split of the error adds up to the overall error."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_error_budget")


def test_contributions_add_up_and_rank_by_contribution(bench):
    # class: [pixels, sum of AbsRel, sum of log ratio]; building: many pixels, small error; car: few, large
    sums = {2: np.array([600.0, 60.0, -30.0]), 13: np.array([300.0, 90.0, 24.0]), 0: np.array([100.0, 10.0, 0.0])}
    rows = bench.budget_rows("run", sums, runs=2, min_share=0.0)
    overall, *per_class = rows
    assert overall["class"] == "all" and overall["AbsRel"] == pytest.approx(160 / 1000)
    assert sum(r["contribution"] for r in per_class) == pytest.approx(overall["AbsRel"])
    assert [r["class"] for r in per_class] == ["car", "building", "road"]  # largest contribution first
    car = per_class[0]
    assert car["AbsRel"] == pytest.approx(0.3) and car["share of valid"] == pytest.approx(0.3)
    assert car["log bias"] == pytest.approx(0.08)
    assert [r["class"] for r in bench.budget_rows("run", sums, 2, min_share=0.2)[1:]] == ["car", "building"]


def test_range_slope_is_one_for_the_right_range_and_below_one_for_a_compressed_one(bench):
    x = np.log(np.array([5.0, 10.0, 20.0, 40.0, 80.0]))

    def sums(y: np.ndarray) -> np.ndarray:
        return np.array([len(x), 0.0, (y - x).sum(), x.sum(), y.sum(), (x * x).sum(), (x * y).sum()])

    assert bench.range_slope(sums(x + 0.3)) == pytest.approx(1.0)  # an offset is not a range error
    assert bench.range_slope(sums(0.5 * x + 1.0)) == pytest.approx(0.5)
    assert np.isnan(bench.range_slope(sums(np.zeros(5)) * np.array([1, 1, 1, 0, 1, 0, 0])))  # no spread of truth
    rows = bench.budget_rows("run", {2: sums(0.5 * x), 0: sums(x)}, runs=1, min_share=0.0)
    assert {r["class"]: round(r["range slope"], 6) for r in rows[1:]} == {"building": 0.5, "road": 1.0}
