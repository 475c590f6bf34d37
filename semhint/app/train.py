"""`semhint train`: load and validate a config (a shipped name or a YAML file, plus dotted overrides), then train."""

from __future__ import annotations

import argparse

from semhint.core.config import load_config
from semhint.training import fit


def run(args: argparse.Namespace) -> None:
    fit(load_config(args.config, args.overrides), resume=args.resume)
