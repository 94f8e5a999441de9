"""``nslf`` command line: one sub-command per module in :mod:`nslfcore.commands`.

Each command module exposes ``add_parser(subparsers)`` which registers its sub-parser and sets
``func`` (a callable taking the parsed namespace and returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from nslfcore import __version__

#: Command modules, in the order ``nslf --help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "nslfcore.commands.demo",
    "nslfcore.commands.phantom",
    "nslfcore.commands.check_data",
    "nslfcore.commands.train",
    "nslfcore.commands.infer",
    "nslfcore.commands.evaluate",
    "nslfcore.commands.score",
    "nslfcore.commands.baseline",
)


def build_parser() -> argparse.ArgumentParser:
    """The ``nslf`` parser with every available sub-command registered."""
    parser = argparse.ArgumentParser(prog="nslf", description="NSLF multi-modal brain MRI fusion and segmentation.")
    parser.add_argument("--version", action="version", version=f"nslfcore {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name == name:  # command not built yet
                continue
            raise
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``nslf`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
