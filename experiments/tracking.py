"""Tissue tracking on SynthTissue: the sequences of a split under OUT/data scored against their exact tracks.

Rows: zero motion, flow (DIS, LK), the graph with ground-truth depth (exact, 2 % and 5 % smooth
relative noise) and, given checkpoints, with baseline and SemHint depth; written as a lab record
(default docs/lab/tracking_synth.md). Several checkpoints per arm (one per training seed) are each
tracked and averaged, and the arms' 3D errors are compared seed against seed (Welch's interval).
``--split test`` keeps to the sequences of OUT/splits/test.txt, which no depth net trained on;
``--split all`` (the default, as the first records were made) takes every sequence.

    python experiments/tracking.py --data OUT [--baseline CKPT ...] [--semhint CKPT ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from semhint.core.stats import compare_seeds, format_comparison
from semhint.lab.records import markdown_table, write_record
from semhint.tracking import evaluate_tracks, load_clip, track, zero_motion


def _rows_for(clip, specs) -> list[tuple[str, dict]]:
    out = []
    for label, kwargs in specs:
        if kwargs is None:
            out.append((label, None))
            continue
        result = zero_motion(clip) if kwargs == "zero" else track(clip, progress=False, **kwargs)
        scores = evaluate_tracks(result, clip)
        out.append((label, scores["zero_motion"] if kwargs == "zero" else scores["method"]))
    return out


def split_sequences(data_root: Path, split: str) -> set[str] | None:
    """Sequence names in OUT/splits/SPLIT.txt (None for ``all``)."""
    if split == "all":
        return None
    path = data_root / "splits" / f"{split}.txt"
    if not path.is_file():
        raise SystemExit(f"{path}: no such split file (use --split all to track every sequence)")
    return {line.split()[0] for line in path.read_text().splitlines() if line.strip()}


def bench_synth(data_root: Path, baseline: list[str], semhint: list[str], max_sequences: int,
                noise_draws: int = 3, split: str = "all", key: str = "tracking_synth",
                title: str = "Tissue tracking on SynthTissue") -> None:
    keep = split_sequences(data_root, split)
    seqs = sorted(p for p in (data_root / "data").iterdir() if (data_root / "tracks" / f"{p.name}.npz").is_file()
                  and (keep is None or p.name in keep))
    if not seqs:
        raise SystemExit(f"{data_root}: no SynthTissue sequences in split {split!r} (expected data/SEQ and tracks/SEQ.npz)")
    seqs = seqs[:max_sequences]
    specs = [
        ("zero motion", "zero"),
        ("flow only (DIS, re-anchored)", dict(mode="flow")),
        ("flow only (LK)", dict(mode="flow", flow="lk")),
        ("flow + lift, GT depth", dict(mode="flow+lift", depth="gt")),
        ("graph, GT depth", dict(mode="graph", depth="gt")),
        ("graph, GT depth + 2% noise", dict(mode="graph", depth="gt", depth_noise=0.02)),
        ("graph, GT depth + 5% noise", dict(mode="graph", depth="gt", depth_noise=0.05)),
        ("graph+flow, GT depth", dict(mode="graph+flow", depth="gt")),
        ("graph+flow, GT depth + 2% noise", dict(mode="graph+flow", depth="gt", depth_noise=0.02)),
        ("graph+flow, GT depth + 5% noise", dict(mode="graph+flow", depth="gt", depth_noise=0.05)),
    ]
    # one noise draw per sequence is itself noisy (a lucky draw can beat a milder noise level):
    # every noise row averages ``noise_draws`` draws
    specs = [(label, dict(kwargs, seed=k) if isinstance(kwargs, dict) and kwargs.get("depth_noise") else kwargs)
             for label, kwargs in specs
             for k in range(noise_draws if isinstance(kwargs, dict) and kwargs.get("depth_noise") else 1)]
    per_seed: dict[str, dict[str, list[tuple[int, str]]]] = {}  # row label -> arm, [(seed index, spec label)]
    for name, ckpts in (("baseline", baseline), ("SemHint", semhint)):
        for mode in ("graph", "graph+flow"):
            label = f"{mode}, {name} depth"
            if not ckpts:
                specs.append((label, None))
                continue
            for k, ckpt in enumerate(ckpts):
                specs.append((f"{label} #{k}", dict(mode=mode, depth=ckpt, scale="first-frame")))
                per_seed.setdefault(mode, {}).setdefault(name, []).append((k, f"{label} #{k}"))
    per_spec: dict[str, list[dict]] = {label: [] for label, _ in specs}  # keeps the first-seen order
    for seq in seqs:
        clip = load_clip(seq)
        for label, scores in _rows_for(clip, specs):
            if scores is not None:
                per_spec[label].append(scores)
        print(f"{seq.name}: done", flush=True)
    per_row: dict[str, list[dict]] = {}  # the checkpoints of one arm pool into one row (mean over seeds)
    for label, runs in per_spec.items():
        per_row.setdefault(label.split(" #")[0], []).extend(runs)
    rows = [_table_row(label, runs) for label, runs in per_row.items()]
    comparisons = _compare_arms(per_seed, per_spec)
    cols = ["method", "2D mean px", "2D median px", "delta_avg 2D", "3D mean mm", "delta_avg 3D", "edge px",
            "high-motion px", "survival", "fps"]
    command = f"python experiments/tracking.py --data {data_root}" + \
        (f" --baseline {' '.join(baseline)}" if baseline else "") + (f" --semhint {' '.join(semhint)}" if semhint else "") + \
        f" --noise-draws {noise_draws}" + (f" --split {split}" if split != "all" else "") + (f" --key {key}" if key != "tracking_synth" else "")
    pending = [label for label, runs in per_row.items() if not runs]
    body = (f"{len(seqs)} SynthTissue sequence(s) from `{data_root}` ({_provenance(data_root)}); each number is the mean over sequences of "
            "the per-sequence score (2D: per frame, then over frames; visible labelled points only; the query "
            "frame excluded). Noise rows: smooth relative noise on the ground-truth depth, drawn per frame "
            f"(seeds 0..{noise_draws - 1}; the row is the mean over sequences and draws). Depth networks: scale fixed at the first frame against ground truth; "
            f"{len(baseline)} baseline and {len(semhint)} SemHint checkpoint(s), one per training seed, each row the mean over them. How to read it: "
            "zero motion is the floor every tracker must beat; 'flow + lift' has the 2D error of flow by "
            "construction (depth only shows in its 3D error); the graph rows move points with depth, so there "
            "depth quality reaches the 2D error too. 'graph' is depth only (point-to-plane, as SuPer); "
            "'graph+flow' adds flow residuals.\n\n"
            + markdown_table(rows, cols))
    if comparisons:
        body += ("\n\n3D error (mm), SemHint depth minus baseline depth, over training seeds (Welch's 95 % interval, "
                 "two-sided p, seeds where SemHint tracked better; negative = SemHint better): "
                 + "; ".join(f"{mode}: {text}" for mode, text in comparisons.items()) + ".")
    if pending:
        body += ("\n\nRows without numbers await trained checkpoints (pass --baseline / --semhint): "
                 + ", ".join(pending) + ".")
    write_record(key, title, command, body,
                 {"sequences": [s.name for s in seqs], "split": split, "rows": rows, "raw": per_spec,
                  "comparisons": comparisons})


def _compare_arms(per_seed: dict, per_spec: dict) -> dict[str, str]:
    """Per tracker, SemHint's 3D error minus the baseline's over seeds (needs >= 2 checkpoints per arm)."""
    out = {}
    for mode, arms in per_seed.items():
        if len(arms.get("baseline", [])) < 2 or len(arms.get("SemHint", [])) < 2:
            continue
        seed_mean = {name: {k: _mean(per_spec[label], "3d", "mean_mm") for k, label in runs} for name, runs in arms.items()}
        out[mode] = format_comparison(compare_seeds(seed_mean["baseline"], seed_mean["SemHint"]))
    return out


def _provenance(data_root: Path) -> str:
    """How the data was made, from its meta.json (so the table can be regenerated)."""
    meta_file = data_root / "meta.json"
    if not meta_file.is_file():
        return "no meta.json"
    meta = json.loads(meta_file.read_text())
    st = meta.get("settings", {})
    return (f"made by `{meta.get('generator', '?')} --out OUT --preset {meta.get('preset', '?')} --seed {meta.get('seed', '?')}`: "
            f"{st.get('sequences', '?')} x {st.get('frames', '?')} frames at {st.get('width', '?')}x{st.get('height', '?')}")


def _mean(runs, *keys):
    vals = []
    for r in runs:
        for k in keys:
            r = r.get(k, {}) if isinstance(r, dict) else {}
        if isinstance(r, (int, float)) and np.isfinite(r):
            vals.append(float(r))
    return float(np.mean(vals)) if vals else ""


def _table_row(label: str, runs: list[dict]) -> dict:
    if not runs:
        return {"method": label}
    return {
        "method": label,
        "2D mean px": _mean(runs, "2d", "mean_px"),
        "2D median px": _mean(runs, "2d", "median_px"),
        "delta_avg 2D": _mean(runs, "2d", "delta_avg"),
        "3D mean mm": _mean(runs, "3d", "mean_mm"),
        "delta_avg 3D": _mean(runs, "3d", "delta_avg"),
        "edge px": _mean(runs, "subsets", "edge", "2d", "mean_px"),
        "high-motion px": _mean(runs, "subsets", "high_motion", "2d", "mean_px"),
        "survival": _mean(runs, "survival"),
        "fps": _mean(runs, "fps"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, type=Path, help="SynthTissue output folder (semhint synth tissue --out)")
    p.add_argument("--baseline", nargs="+", default=[], help="baseline depth checkpoint(s) trained on SynthTissue, one per seed")
    p.add_argument("--semhint", nargs="+", default=[], help="SemHint depth checkpoint(s) trained on SynthTissue (noisy labels)")
    p.add_argument("--split", default="all", help="all (default) or SPLIT: the sequences of OUT/splits/SPLIT.txt (test: "
                   "those no depth net trained on)")
    p.add_argument("--key", default="tracking_synth", help="lab record key (docs/lab/KEY.md)")
    p.add_argument("--title", default="Tissue tracking on SynthTissue")
    p.add_argument("--sequences", type=int, default=100, help="use at most this many sequences")
    p.add_argument("--noise-draws", type=int, default=3, help="noise draws averaged in each noisy-depth row")
    args = p.parse_args()
    bench_synth(args.data, args.baseline, args.semhint, args.sequences, args.noise_draws, args.split, args.key, args.title)


if __name__ == "__main__":
    main()
