"""Lab records: each experiment writes its own ``docs/lab/KEY.md`` (title, command, date, machine, notes and
tables) and ``KEY.json`` (the data behind them), and puts itself at the top of the index.

A record is rewritten whole when its experiment runs again, so reruns never leave stale tables
behind, and no table is typed by hand: docs/RESULTS.md only copies from these files.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
from pathlib import Path

import torch

from semhint.core.fileio import write_json, write_text

LAB_DIR = Path("docs") / "lab"  # relative to the repository root, where experiments run from
INDEX_HEADING = "## Index, newest first"


def machine_summary() -> str:
    """The machine a measurement ran on, in one line (CPU, cores, torch, GPU)."""
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {gpu}"


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """A markdown table of ``rows`` (missing cells empty; floats to four significant digits)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_record(key: str, title: str, command: str, body_markdown: str, data: dict,
                 lab_dir: str | Path = LAB_DIR, date: str | None = None) -> Path:
    """Write ``lab_dir/KEY.md`` and ``KEY.json`` and list the record first in ``lab_dir/README.md``."""
    if not re.fullmatch(r"[\w.-]+", key):
        raise ValueError(f"record key {key!r}: letters, digits, '.', '-' and '_' only")
    lab_dir = Path(lab_dir)
    date = date or datetime.date.today().isoformat()
    text = (f"# {title}\n\n```\n{command}\n```\n\nDate: {date} · Machine: {machine_summary()}\n\n"
            f"{body_markdown.strip()}\n")
    write_json(lab_dir / f"{key}.json", data)
    write_text(lab_dir / f"{key}.md", text)
    _update_index(lab_dir, key, title, date)
    return lab_dir / f"{key}.md"


def _update_index(lab_dir: Path, key: str, title: str, date: str) -> None:
    """Put ``key`` at the top of the index in ``lab_dir/README.md`` (replacing its old line)."""
    readme = lab_dir / "README.md"
    text = readme.read_text() if readme.is_file() else f"# Lab records\n\n{INDEX_HEADING}\n"
    if INDEX_HEADING not in text:
        text = text.rstrip("\n") + f"\n\n{INDEX_HEADING}\n"
    head, _, index = text.partition(INDEX_HEADING)
    lines = [line for line in index.strip("\n").splitlines() if line and f"]({key}.md)" not in line]
    entry = f"- {date} · [{title}]({key}.md)"
    write_text(readme, head + INDEX_HEADING + "\n\n" + "\n".join([entry, *lines]) + "\n")
