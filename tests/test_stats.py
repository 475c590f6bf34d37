"""Seed comparisons: Welch's interval and p-value agree with scipy's test; wins count shared seeds only."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from semhint.core.stats import compare_seeds, format_comparison


def test_welch_p_value_and_interval_agree_with_scipy():
    rng = np.random.default_rng(0)
    a = dict(enumerate(rng.normal(0.27, 0.045, 10)))
    b = dict(enumerate(rng.normal(0.24, 0.03, 7)))
    c = compare_seeds(a, b)
    ref = stats.ttest_ind(list(b.values()), list(a.values()), equal_var=False)
    assert c.p == pytest.approx(ref.pvalue, rel=1e-9)
    assert c.diff == pytest.approx(np.mean(list(b.values())) - np.mean(list(a.values())))
    ci = ref.confidence_interval(0.95)
    assert (c.low, c.high) == (pytest.approx(ci.low), pytest.approx(ci.high))


def test_a_clear_gain_excludes_zero_and_noise_does_not():
    base = {s: 0.30 + 0.01 * (s % 3) for s in range(6)}
    better = {s: v - 0.05 for s, v in base.items()}
    c = compare_seeds(base, better)
    assert c.high < 0 and c.p < 0.01 and (c.wins, c.shared) == (6, 6)
    shuffled = {s: base[(s + 1) % 6] for s in base}  # same values, other seeds: no difference of means
    c = compare_seeds(base, shuffled)
    assert c.diff == pytest.approx(0) and c.low < 0 < c.high and c.p == pytest.approx(1)


def test_wins_count_only_seeds_both_sides_ran_and_respect_the_direction():
    c = compare_seeds({0: 0.3, 1: 0.2, 2: 0.25}, {1: 0.1, 2: 0.3, 7: 0.0})
    assert (c.wins, c.shared) == (1, 2)
    c = compare_seeds({0: 0.5, 1: 0.6}, {0: 0.7, 1: 0.8}, lower_is_better=False)  # e.g. delta < 1.25
    assert (c.wins, c.shared) == (2, 2) and c.diff > 0
    assert format_comparison(c).endswith("2/2 seeds")


def test_one_seed_is_refused():
    with pytest.raises(ValueError, match=">= 2 seeds"):
        compare_seeds({0: 0.3}, {0: 0.2, 1: 0.25})


def test_constant_samples_have_no_spread_to_test_against():
    c = compare_seeds({0: 0.2, 1: 0.2}, {0: 0.1, 1: 0.1})
    assert (c.diff, c.low, c.high, c.p) == (pytest.approx(-0.1), pytest.approx(-0.1), pytest.approx(-0.1), 0.0)
    assert compare_seeds({0: 0.2, 1: 0.2}, {0: 0.2, 1: 0.2}).p == 1.0
