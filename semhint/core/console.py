"""A quiet console: semhint's own warnings as one line, and the known third-party chatter filtered.

A normal run should print what semhint has to say (progress, results, warnings that change what a
result means) and nothing a user cannot act on: Lightning's tips and hardware banner, deprecation
notices from inside Lightning, notes about settings semhint chose on purpose. Each filter below
names one specific message, so an unexpected warning still shows. Installed by the command line
(``semhint.app.cli.main``) for the process it runs; a library user's own warning filters are left
alone unless they call :func:`quiet_third_party` themselves.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any, TextIO

from tqdm import tqdm

from semhint.core.errors import SemhintWarning

# (message regex, why it is noise for a semhint user)
NOISE: tuple[tuple[str, str], ...] = (
    (r".*isinstance\(treespec, LeafSpec\)` is deprecated", "a deprecation inside Lightning, not in semhint"),
    (r".*LeafSpec.* is deprecated", "the same, worded by other torch versions"),
    (r"Total length of `.*` across ranks is zero", "Lightning on a validation epoch with no batches (no val split)"),
    (r"Checkpoint directory .* exists and is not empty", "semhint guards the run folder itself (runfolder.claim)"),
    (r"The number of training batches \(\d+\) is smaller than the logging interval",
     "short runs: semhint logs every step to the CSV anyway"),
    (r".*does not have many workers which may be a bottleneck", "data.num_workers is the user's choice, 0 on purpose"),
    (r"The '(train|val)_dataloader' does not have many workers", "the same, older wording"),
    (r".*`srun` command is available on your system but is not used", "a SLURM hint on machines that have srun"),
)

# The loggers of Lightning's rank_zero_info: the GPU/TPU banner, the "💡 Tip" lines (litlogger,
# litmodels), "`Trainer.fit` stopped", the limit_*_batches note. Set on these children because
# Lightning resets its top logger to INFO when it is imported; its warnings go through the warnings
# module and stay visible.
LIGHTNING_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                     "pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero")


def quiet_third_party() -> None:
    """Filter the known third-party chatter (:data:`NOISE`) and lower Lightning's info logs to warnings."""
    for pattern, _ in NOISE:
        warnings.filterwarnings("ignore", message=pattern)
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None, _default: Any = None) -> None:
    if issubclass(category, SemhintWarning):
        stream = file or sys.stderr
        text = " ".join(str(message).split())
        try:  # through tqdm, so a warning raised under a progress bar gets its own line
            tqdm.write(f"semhint: warning: {text}", file=stream)
        except OSError:
            pass
        return
    _default(message, category, filename, lineno, file, line)


def one_line_warnings() -> None:
    """Print :class:`SemhintWarning` as ``semhint: warning: ...`` (no file, no source line); others as before."""
    default = warnings.showwarning
    if getattr(default, "_semhint", False):
        return

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 (the warnings hook's signature)
        _show_warning(message, category, filename, lineno, file, line, _default=default)

    show._semhint = True  # type: ignore[attr-defined]
    warnings.showwarning = show
