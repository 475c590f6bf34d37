"""`semhint train`: load and validate a config (a shipped name or a YAML file, plus dotted overrides), then train."""

from __future__ import annotations

import argparse

from semhint.training import fit, load_training_config


def run(args: argparse.Namespace) -> None:
    fit(load_training_config(args.config, args.overrides), resume=args.resume, overwrite=args.overwrite)
