"""`semhint train`: load and validate a config (a shipped name or a YAML file, plus dotted overrides), then train."""

from __future__ import annotations

import argparse

from semhint.training import fit, load_training_config


def train_overrides(args: argparse.Namespace) -> list[str]:
    """The dotted overrides of the command line, with the shortcut options (``--fov``) turned into keys."""
    overrides = list(args.overrides)
    if getattr(args, "fov", None) is not None:
        overrides.append(f"data.fov={args.fov}")
    return overrides


def run(args: argparse.Namespace) -> None:
    fit(load_training_config(args.config, train_overrides(args)), resume=args.resume, overwrite=args.overwrite)
