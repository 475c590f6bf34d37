"""Writes benchmark results: a JSON file per benchmark and its own section of docs/RESULTS.md.

Each benchmark owns one section between HTML comment markers, so benchmarks can be rerun in any
order without clobbering each other's tables.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from semhint.core.fileio import write_json, write_text  # noqa: E402

RESULTS_MD = REPO / "docs" / "RESULTS.md"
RESULTS_DIR = REPO / "benchmarks" / "results"

HEADER = "# Measured results\n\nEvery table below was produced by the command written above it.\n"


def machine_summary() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {gpu}"


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_section(key: str, title: str, command: str, body_markdown: str, data: dict) -> None:
    """Store ``data`` as benchmarks/results/KEY.json and replace section KEY of docs/RESULTS.md."""
    write_json(RESULTS_DIR / f"{key}.json", data)
    section = (
        f"<!-- section:{key}:start -->\n## {title}\n\n```\n{command}\n```\n\n"
        f"Machine: {machine_summary()}\n\n{body_markdown.strip()}\n<!-- section:{key}:end -->"
    )
    text = RESULTS_MD.read_text() if RESULTS_MD.is_file() else HEADER
    pattern = re.compile(rf"<!-- section:{re.escape(key)}:start -->.*?<!-- section:{re.escape(key)}:end -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    write_text(RESULTS_MD, text)
