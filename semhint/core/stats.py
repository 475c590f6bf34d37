"""Whether one training recipe beats another over seeded runs: the difference of means with its interval.

Short self-supervised runs scatter by several hundredths of AbsRel from seed to seed, as much as most
ablation effects, so a table of means alone invites reading noise as a gain. Every comparison the
benchmarks print therefore carries Welch's interval (unequal variances: a method can change the
spread as well as the mean) and, where both sides share seeds, how many of those seeds it won.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from scipy import stats


@dataclass(frozen=True)
class SeedComparison:
    """``candidate - reference`` for one metric; lower is better for errors such as AbsRel."""

    diff: float
    low: float  # the confidence interval of diff
    high: float
    p: float  # two-sided Welch t-test
    wins: int  # shared seeds where the candidate is better
    shared: int  # seeds both sides ran


def compare_seeds(reference: Mapping[int, float], candidate: Mapping[int, float], level: float = 0.95,
                  lower_is_better: bool = True) -> SeedComparison:
    """Welch's interval for mean(candidate) - mean(reference); both need at least two seeds."""
    if len(reference) < 2 or len(candidate) < 2:
        raise ValueError(f"need >= 2 seeds on each side, got {len(reference)} and {len(candidate)}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    a, b = list(reference.values()), list(candidate.values())
    diff = sum(b) / len(b) - sum(a) / len(a)
    if len(set(a)) == 1 and len(set(b)) == 1:  # two constant samples: no spread to test against
        p, low, high = (1.0 if diff == 0 else 0.0), diff, diff
    else:
        test = stats.ttest_ind(b, a, equal_var=False)
        interval = test.confidence_interval(level)
        p, low, high = float(test.pvalue), float(interval.low), float(interval.high)
    shared = sorted(set(reference) & set(candidate))
    better = (lambda s: candidate[s] < reference[s]) if lower_is_better else (lambda s: candidate[s] > reference[s])
    return SeedComparison(diff=diff, low=low, high=high, p=p, wins=sum(better(s) for s in shared), shared=len(shared))


def format_comparison(c: SeedComparison) -> str:
    """One table cell: '-0.029 [-0.064, +0.006] p=0.10, 7/10 seeds'."""
    cell = f"{c.diff:+.3f} [{c.low:+.3f}, {c.high:+.3f}] p={c.p:.2f}"
    return cell + (f", {c.wins}/{c.shared} seeds" if c.shared else "")
