"""The plain reference of benchmarks/reference_step.py (the speed baseline of bench_step.py) runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import reference_step  # noqa: E402


@pytest.mark.slow  # a few seconds for one ResNet-18 depth + pose step; more on a busy machine
def test_reference_step_and_inference_return_positive_times():
    assert reference_step.reference_step_seconds(64, 128, threads=1, repeats=1, warmup=0) > 0
    assert reference_step.reference_inference_ms(threads=1, repeats=1, warmup=0, height=64, width=96) > 0


def test_reference_step_rejects_sizes_its_decoder_cannot_take():
    with pytest.raises(ValueError, match="multiples of 32"):
        reference_step.ReferenceStep(96, 100)
