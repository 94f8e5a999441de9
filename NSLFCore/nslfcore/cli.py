"""``nslf`` command line: one sub-command per module in :mod:`nslfcore.commands`.

Each command module exposes ``add_parser(subparsers)`` which registers its sub-parser and sets
``func`` (a callable taking the parsed namespace and returning an exit code). A command module that
cannot be imported is still listed by ``nslf --help``, as unavailable with the reason; running it
says which module failed and why.

Errors: an :class:`~nslfcore.errors.NSLFError` is printed as its one-sentence message (exit 1);
any other exception is unexpected, described in one sentence by :func:`describe_error` (exit 1),
or shown with its traceback under ``--debug``.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
from collections.abc import Sequence

from nslfcore import __version__
from nslfcore.errors import NSLFError

#: Command modules, in the order ``nslf --help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "nslfcore.commands.demo",
    "nslfcore.commands.phantom",
    "nslfcore.commands.synth",
    "nslfcore.commands.check_data",
    "nslfcore.commands.train",
    "nslfcore.commands.infer",
    "nslfcore.commands.evaluate",
    "nslfcore.commands.compare",
    "nslfcore.commands.score",
    "nslfcore.commands.baseline",
)


def build_parser() -> argparse.ArgumentParser:
    """The ``nslf`` parser with every sub-command registered; a module that fails to import is listed as unavailable."""
    parser = argparse.ArgumentParser(prog="nslf", description="NSLF multi-modal brain MRI fusion and segmentation.")
    parser.add_argument("--version", action="version", version=f"nslfcore {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an unexpected error")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except Exception as error:  # one broken command must not hide the others
            _add_unavailable(subparsers, name, error)
            continue
        module.add_parser(subparsers)
    return parser


def _add_unavailable(subparsers: argparse._SubParsersAction, module: str, error: Exception) -> None:
    """Register the command of ``module`` (named after it: ``check_data`` -> ``check-data``) as unavailable.

    Running it raises :class:`NSLFError` naming the module and the import error (``--debug``: the
    import error itself, with its traceback); it accepts any arguments (see :func:`main`) so that the
    reason is what a user sees.
    """
    reason = f"{type(error).__name__}: {' '.join(str(error).split())}".rstrip(".")
    parser = subparsers.add_parser(module.rsplit(".", 1)[-1].replace("_", "-"), help=f"unavailable ({reason})")

    def unavailable(args: argparse.Namespace) -> int:
        if args.debug:
            raise error
        raise NSLFError(f"the command module {module} cannot be imported ({reason}); "
                        "reinstall nslfcore with its dependencies, or run with --debug for the traceback.")  # fmt: skip

    parser.set_defaults(func=unavailable, unavailable=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``nslf`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "unavailable", False):  # what parse_args does
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"nslf {args.command}: interrupted.", file=sys.stderr)
        return 130
    except NSLFError as error:  # an error the user can act on: its message says what to do
        print(f"nslf {args.command}: error: {describe_error(error)}", file=sys.stderr)
        return 1
    except Exception as error:  # unexpected: one sentence too, unless --debug asks for the traceback
        if args.debug:
            raise
        print(f"nslf {args.command}: error: {describe_error(error)}", file=sys.stderr)
        return 1


def describe_error(error: BaseException) -> str:
    """One sentence for an error that reached the command line: the cause and, where known, what to do."""
    if isinstance(error, OSError) and error.errno is not None:
        where = error.filename or "a file"
        if error.errno == errno.ENOSPC:
            return f"the disk is full while writing {where}; free some space or choose another output folder."
        if error.errno in (errno.EACCES, errno.EPERM):
            return f"permission denied for {where}; choose a folder you can write to, or fix its permissions."
        if error.errno == errno.EROFS:
            return f"{where} is on a read-only file system; choose another output folder."
        if error.errno == errno.ELOOP:
            return f"{where} is a symbolic link loop; point it at a real file."
        if error.errno == errno.ENOTDIR:
            return f"{where}: a path component is a file, not a folder; choose another path."
        if error.errno == errno.EEXIST:
            return f"{where} already exists; choose another path."
    text = " ".join(str(error).split()) or type(error).__name__
    return text if text.endswith((".", "?", "!")) else text + "."


if __name__ == "__main__":
    sys.exit(main())
