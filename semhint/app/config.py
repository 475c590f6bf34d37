"""`semhint config show|list`: the resolved config of a name or file (bases and overrides applied), and the
configs that ship with semhint."""

from __future__ import annotations

import argparse

import yaml

from semhint.core.config import load_config, shipped_configs, to_dict
from semhint.refine import check_config


def show(args: argparse.Namespace) -> None:
    print(yaml.safe_dump(to_dict(check_config(load_config(args.config, args.overrides), args.config)), sort_keys=False), end="")


def list_configs(args: argparse.Namespace) -> None:
    for name in shipped_configs():
        print(name)
