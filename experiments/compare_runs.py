"""Two sets of finished runs compared seed by seed: AbsRel difference with Welch's 95 % interval, p, seeds won.

The sweeps compare each arm with the baseline trained beside it. This compares any two arms that were
trained in different folders, e.g. a switch (``--set``) against the recipe it changes:

    python experiments/compare_runs.py --reference runs/real_kitti/votes-s{0..4} \
        --candidate runs/real_kitti_narrow/votes-s{0..4}

Each folder must hold the ``result.json`` a sweep writes (its ``seed`` pairs the runs); ``--class``
compares one reported class's AbsRel instead of the whole frame's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from semhint.lab.sweep import vs_baseline


def load_results(folders: list[str]) -> list[dict]:
    """The ``result.json`` of each run folder; exits with a one-line error on a missing or unreadable one."""
    results = []
    for folder in folders:
        path = Path(folder) / "result.json"
        try:
            results.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            sys.exit(f"compare_runs: {path}: {exc.__class__.__name__}: cannot read a finished run's result")
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", nargs="+", required=True, help="run folders of the reference arm")
    p.add_argument("--candidate", nargs="+", required=True, help="run folders of the arm compared with it")
    p.add_argument("--class", dest="cls", default=None, help="one reported class (e.g. road) instead of all pixels")
    args = p.parse_args()
    reference, candidate = load_results(args.reference), load_results(args.candidate)
    mean = {name: sum(r["metrics"]["abs_rel"] for r in rs) / len(rs)
            for name, rs in (("reference", reference), ("candidate", candidate))}
    print(f"AbsRel: reference {mean['reference']:.4f} ({len(reference)} runs), "
          f"candidate {mean['candidate']:.4f} ({len(candidate)} runs)")
    print(f"candidate - reference{' (' + args.cls + ')' if args.cls else ''}: "
          f"{vs_baseline(reference, candidate, args.cls)}")


if __name__ == "__main__":
    main()
