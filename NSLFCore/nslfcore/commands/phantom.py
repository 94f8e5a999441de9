"""``nslf phantom``: write BraTS 2021-layout phantom cases (see :mod:`nslfcore.data.phantom`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "phantom",
        help="generate BraTS-like phantom cases (BraTS 2021 layout)",
        description="Generate BraTS-like phantom cases: T1, T1ce, T2, FLAIR and labels {0,1,2,4} in the BraTS 2021 "
        "layout. Realistic cases (240 x 240 x 155, 1 mm) need nslfcore[phantom]; --tiny makes small procedural cases.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--n", type=int, default=1, help="number of cases")
    parser.add_argument("--seed", type=int, default=0, help="random seed; case i depends only on (seed, i)")
    parser.add_argument("--start", type=int, default=0, help="index of the first case (names BraTS2021_XXXXX)")
    parser.add_argument("--tiny", action="store_true", help="small procedural phantoms (numpy + torch only)")
    parser.add_argument("--raw", action="store_true",
                        help="simulated raw exams instead (nslfcore.data.raw_exam): the whole head, each sequence on its own "
                        "oblique 3-6 mm grid, moved, with bias field, noise and scanner units; the truth on the T1ce's grid. "
                        "For trying nslf run --preprocess")  # fmt: skip
    parser.add_argument("--size", type=int, nargs=3, metavar=("Z", "Y", "X"),
                        help="tiny phantom size in voxels (z y x), default 48 48 48")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace cases of the same names already in --out")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nslfcore.commands.case_writing import write_cases
    from nslfcore.data.phantom import write_phantom_dataset

    if args.n < 1:
        print("nslf phantom: --n must be at least 1.")
        return 2
    if args.size is not None and not args.tiny:
        print("nslf phantom: --size needs --tiny; realistic phantoms are always 240 x 240 x 155 voxels (x, y, z).")
        return 2
    if args.raw:
        if args.tiny:
            print("nslf phantom: --raw makes whole-head exams from realistic phantoms; leave out --tiny.")
            return 2
        from nslfcore.data.raw_exam import write_raw_dataset

        return write_cases("phantom", args, lambda progress: write_raw_dataset(
            args.out, args.n, args.seed, args.start, progress, args.overwrite))  # fmt: skip
    return write_cases("phantom", args, lambda progress: write_phantom_dataset(
        args.out, args.n, args.seed, args.tiny, args.size, args.start, progress, args.overwrite))
