"""Guarding a run folder: one writer at a time, nothing overwritten, no leftovers, one metrics history.

A run folder (``trainer.out_dir``) is the only record of a training run, and the mistakes that
lose it are ordinary ones: a second `semhint train` into the same folder, a re-run of a command
without ``--resume``, a kill during a checkpoint save, a resume that rewrites the CSV log. This
module holds the rules; ``semhint.training`` applies them from global rank 0 before Lightning
writes anything:

- a lock file held with ``flock`` for the whole run: a second run is refused with one line, and
  the kernel drops the lock when its holder dies (kill -9 included), so it is never stale;
- a folder that holds anything is refused unless the run resumes, or ``--overwrite`` moves the
  old contents into a sibling ``<name>.old-<UTC time>`` folder (never deleted);
- hidden temporary files of a killed atomic write are removed before the run starts;
- on resume, the CSV history is cut back to the steps the checkpoint had taken, so the resumed
  run appends to it without duplicated steps and without losing anything before the checkpoint.
"""

from __future__ import annotations

import csv
import io
import os
import re
import warnings
from datetime import datetime, timezone
from pathlib import Path

from semhint.core.errors import InputError
from semhint.core.fileio import write_text

try:
    import fcntl
except ImportError:  # Windows: no flock; the run folder's other guards still hold
    fcntl = None

LOCK_NAME = ".semhint-train.lock"
METRICS_CSV = Path("logs") / "csv" / "metrics.csv"
# what atomic_path (".<stem>.<random><suffix>") and save_config ("<name>.tmp") leave behind when killed
_TEMP_PATTERNS = (re.compile(r"^\.[^/]+\.[A-Za-z0-9_]{8}\.[A-Za-z0-9]+$"), re.compile(r"^[^.].*\.tmp$"))


class RunFolderLock:
    """An exclusive ``flock`` on ``<folder>/.semhint-train.lock``, held until :meth:`release`.

    The file stays after release (deleting it would let a waiting process lock an unlinked file
    while a third creates a new one); only the kernel lock matters, and it dies with its process.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunFolderLock:
        """Take the lock or raise InputError naming the folder and the pid that holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        if fcntl is None:
            warnings.warn(f"{self.folder}: no file locking on this platform; do not start two runs into one folder",
                          stacklevel=2)
            self._fd = fd
            return self
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder else "another process"
            raise InputError(f"{self.folder}: run folder is in use by another `semhint train` ({who}); "
                             "wait for it to finish or choose another trainer.out_dir") from None
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            if fcntl is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunFolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 32).decode(errors="replace").strip()
    except OSError:
        return ""


def folder_contents(folder: str | Path) -> list[Path]:
    """What a run folder holds besides its lock file (an absent folder holds nothing)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name != LOCK_NAME)


def move_aside(folder: str | Path) -> Path | None:
    """Move everything in ``folder`` (but the lock) into a new sibling ``<name>.old-<UTC time>``.

    A rename within one file system: instant, and nothing is copied or deleted. Returns the new
    folder, or None when there was nothing to move.
    """
    folder = Path(folder)
    contents = folder_contents(folder)
    if not contents:
        return None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    aside = folder.parent / f"{folder.name}.old-{stamp}"
    n = 1
    while aside.exists():
        aside = folder.parent / f"{folder.name}.old-{stamp}-{n}"
        n += 1
    aside.mkdir()
    for entry in contents:
        os.replace(entry, aside / entry.name)
    return aside


def check_modes(folder: str | Path, resume: bool, overwrite: bool) -> None:
    """Resuming continues the run in the folder, overwriting moves it aside: asking for both is a mistake."""
    if resume and overwrite:
        raise InputError(f"{folder}: --resume and --overwrite contradict each other (resume continues the run "
                         "in this folder; overwrite moves it aside to start afresh): pass one of them")


def claim(folder: str | Path, resume: bool, overwrite: bool) -> Path | None:
    """Make ``folder`` ready for a new run (call it with the lock held); returns where old contents went.

    Resuming writes into the folder it resumes; a new run needs an empty folder, or ``overwrite``
    to move the old contents aside first.
    """
    folder = Path(folder)
    check_modes(folder, resume, overwrite)
    if resume:
        return None
    if overwrite:
        return move_aside(folder)
    contents = folder_contents(folder)
    if contents:
        raise InputError(f"{folder}: run folder is not empty (holds {', '.join(p.name for p in contents[:3])}"
                         f"{', ...' if len(contents) > 3 else ''}); pass --resume auto to continue that run, "
                         "--overwrite to move its contents aside, or choose another trainer.out_dir")
    return None


def remove_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temporary files a killed atomic write left in the run folder (not in its logs)."""
    folder = Path(folder)
    removed = []
    for sub in (folder, folder / "checkpoints", (folder / METRICS_CSV).parent):
        if not sub.is_dir():
            continue
        for p in sub.iterdir():
            if p.is_file() and p.name != LOCK_NAME and any(rx.match(p.name) for rx in _TEMP_PATTERNS):
                p.unlink()
                removed.append(p)
    return removed


def trim_metrics(folder: str | Path, before_step: int) -> int:
    """Keep only the CSV rows logged before ``before_step`` (the resumed checkpoint's step); returns their number.

    Rows of a killed run past its last checkpoint are dropped: the resumed run logs those steps
    again. A last line cut off by the kill is dropped too. The file is replaced atomically, so a
    kill during the trim leaves the old history.
    """
    path = Path(folder) / METRICS_CSV
    if not path.is_file():
        return 0
    text = path.read_text(errors="replace")
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # a row cut off mid-write
    reader = csv.DictReader(io.StringIO(text, newline=""))
    fields = reader.fieldnames or []
    kept = [row for row in reader if _step_of(row) < before_step]
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\r\n")
    if fields:
        writer.writeheader()
    writer.writerows(kept)
    write_text(path, out.getvalue())
    return len(kept)


def _step_of(row: dict) -> float:
    """A row's step; a row without one (never written by the CSV logger) sorts after every step."""
    try:
        return float(row.get("step") or "inf")
    except ValueError:
        return float("inf")
