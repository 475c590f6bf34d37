"""The speed benchmarks and experiment scripts start: their command lines parse and the plain reference runs.

They are scripts, not library code (the logic of the experiments lives in semhint.lab, tested
elsewhere), so they are run here the way a user runs them: as processes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([*(REPO / "benchmarks").glob("*.py"), *(REPO / "experiments").glob("*.py")])


def _run(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


HELP_ALL = """
import contextlib, io, os, runpy, sys
for script in sys.argv[1:]:
    sys.argv = [script, "--help"]
    sys.path[:0] = [os.path.dirname(script)]  # as `python script.py` does: its own folder first
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        assert exc.code == 0, f"{script}: exit {exc.code}"
    assert out.getvalue().startswith("usage:"), f"{script}: no usage"
    print("ok", script)
"""


def test_every_script_starts_and_parses_its_command_line():
    # one process for all: the scripts share their (heavy) imports
    done = _run("-c", HELP_ALL, *map(str, SCRIPTS), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("ok ") == len(SCRIPTS)


@pytest.mark.slow  # a few seconds for one ResNet-18 depth + pose step and one inference
def test_reference_step_runs_and_rejects_sizes_its_decoder_cannot_take():
    done = _run("benchmarks/reference_step.py", "--threads", "1", "--size", "64x128", "--repeats", "1", "--warmup", "0",
                timeout=300)
    assert done.returncode == 0, done.stderr
    assert "reference step 64x128" in done.stdout and "reference inference" in done.stdout
    bad = _run("benchmarks/reference_step.py", "--size", "96x100")
    assert bad.returncode != 0 and "multiples of 32" in bad.stderr


def _finished_run(folder: Path, seed: int, abs_rel: float) -> str:
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(
        f'{{"seed": {seed}, "metrics": {{"abs_rel": {abs_rel}}}, "per_class_abs_rel": {{"road": {abs_rel}}}}}')
    return str(folder)


def test_compare_runs_pairs_the_seeds_and_names_a_missing_run(tmp_path):
    ref = [_finished_run(tmp_path / f"ref-s{s}", s, v) for s, v in enumerate([0.30, 0.31, 0.32])]
    # the candidate's folders in another order: pairing goes by the recorded seed, not by position
    cand = [_finished_run(tmp_path / f"cand-s{s}", s, v) for s, v in [(2, 0.30), (0, 0.28), (1, 0.30)]]
    done = _run("experiments/compare_runs.py", "--reference", *ref, "--candidate", *cand)
    assert done.returncode == 0, done.stderr
    assert "reference 0.3100 (3 runs), candidate 0.2933 (3 runs)" in done.stdout
    assert "candidate - reference: -0.017 [" in done.stdout and "3/3 seeds" in done.stdout
    missing = _run("experiments/compare_runs.py", "--reference", *ref, str(tmp_path / "gone"), "--candidate", *cand)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert missing.stderr.strip() == (f"compare_runs: {tmp_path / 'gone' / 'result.json'}: FileNotFoundError: "
                                      "cannot read a finished run's result")
