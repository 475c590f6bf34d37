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
