"""What ``nslf phantom`` and ``nslf synth`` share: a line per case written, one sentence on failure, a total."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

Progress = Callable[[int, Path], None]


def write_cases(command: str, args: argparse.Namespace, write: Callable[[Progress], object]) -> int:
    """Run ``write(progress)`` for cases ``args.start .. args.start + args.n - 1`` into ``args.out``; the exit status.

    Prints ``case i/n: FOLDER (seconds)`` per case and the total; a missing package, file, a folder
    already holding the cases or a bad value is one line ``nslf COMMAND: ...`` and status 1.
    """
    start = time.perf_counter()
    last = [start]

    def progress(index: int, folder: Path) -> None:
        now = time.perf_counter()
        print(f"case {index - args.start + 1}/{args.n}: {folder} ({now - last[0]:.1f} s)", flush=True)
        last[0] = now

    try:
        write(progress)
    except (ModuleNotFoundError, FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"nslf {command}: {error}")
        return 1
    total = time.perf_counter() - start
    print(f"wrote {args.n} cases to {args.out} in {total:.1f} s ({total / args.n:.2f} s per case)")
    return 0
