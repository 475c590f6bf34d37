"""The `semhint` command line: parses arguments and calls one library function per command.

Each command's section below belongs to the module that implements it; imports are lazy so that
`semhint --help` stays instant and a command only pays for what it uses.
"""

from __future__ import annotations

import argparse
import sys


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a depth network from a YAML config")
    p.add_argument("config", help="YAML config file (see configs/)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=2e-4 model.shared_layers=6")
    p.add_argument("--resume", default=None, help="checkpoint to resume from, or 'auto' for the run's last.ckpt")
    p.set_defaults(func=_run_train)


def _run_train(args) -> None:
    from semhint.training import train_from_config_file

    train_from_config_file(args.config, args.overrides, resume=args.resume)


# ---- (other commands are added below by their modules' owners) -------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semhint", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


_COMMANDS = [_add_train]


def main(argv: list[str] | None = None) -> int:
    from semhint.config import ConfigError
    from semhint.fileio import InputError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from semhint import __version__

        print(__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except (InputError, ConfigError, FileNotFoundError) as exc:
        print(f"semhint {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"semhint {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
