"""What a semhint checkpoint holds, and the one reader and writer of that layout.

A checkpoint is Lightning's dict (``state_dict``, ``global_step``, ``epoch``, optimizer states...)
plus the resolved config under ``semhint_config`` and the version that wrote it, so loading one
never needs the YAML it was trained from. :func:`save_weights` writes the small model-only file
(weights, config, version) in the same layout, so every reader accepts both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from semhint.core.config import Config, from_dict, to_dict
from semhint.core.errors import ConfigError, InputError
from semhint.core.fileio import atomic_path
from semhint.core.version import __version__

CONFIG_KEY = "semhint_config"
VERSION_KEY = "semhint_version"


@dataclass
class Checkpoint:
    """A semhint checkpoint as read from disk: its config, every weight, and where training stood."""

    path: Path
    config: Config
    state_dict: dict[str, torch.Tensor]
    global_step: int  # optimiser steps taken (0 for a model-only file)
    epoch: int
    version: str
    resumable: bool = False  # it holds the optimiser and loop state that training resumes from

    def weights(self, prefix: str) -> dict[str, torch.Tensor]:
        """The weights of one network (``"depth_net"`` or ``"pose_net"``) with the prefix stripped."""
        head = prefix.rstrip(".") + "."
        return {k[len(head):]: v for k, v in self.state_dict.items() if k.startswith(head)}


def read_checkpoint(path: str | Path) -> Checkpoint:
    """A semhint checkpoint; an InputError names the file when it is missing, corrupt or foreign."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle garbage, not a torch file at all
        raise InputError(f"{path}: not a readable PyTorch checkpoint ({exc.__class__.__name__})") from None
    if not isinstance(raw, dict) or CONFIG_KEY not in raw or "state_dict" not in raw:
        raise InputError(f"{path}: not a semhint checkpoint (no '{CONFIG_KEY}' entry; was it written by `semhint train`?)")
    try:
        cfg = from_dict(raw[CONFIG_KEY], f"{path} (stored config)")
    except ConfigError as exc:
        raise InputError(str(exc)) from None
    return Checkpoint(path=path, config=cfg, state_dict=raw["state_dict"], global_step=int(raw.get("global_step", 0)),
                      epoch=int(raw.get("epoch", 0)), version=str(raw.get(VERSION_KEY, "unknown")),
                      resumable="optimizer_states" in raw and "loops" in raw)


def checkpoint_metadata(cfg: Config) -> dict:
    """The entries semhint adds to every checkpoint it writes (Lightning's and the model-only file)."""
    return {CONFIG_KEY: to_dict(cfg), VERSION_KEY: __version__}


def save_weights(state_dict: dict[str, torch.Tensor], cfg: Config, path: str | Path) -> Path:
    """Weights + config + version only (no optimizer state): a small file to share a trained model."""
    with atomic_path(path, suffix=".ckpt") as tmp:
        torch.save({"state_dict": state_dict, **checkpoint_metadata(cfg)}, tmp)
    return Path(path)
