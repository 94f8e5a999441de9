"""``nslf compare``: the paper's comparison tables (fusion 3-D and 2-D, segmentation) for NSLF and baselines.

See :mod:`nslfcore.compare`. Resumable: run the same command again after an interruption.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nslfcore.data.validation import DataValidationError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from nslfcore.compare import DEFAULT_METHODS

    parser = subparsers.add_parser("compare", help="comparison tables of NSLF and baselines on labelled cases")
    parser.add_argument("--data", type=Path, required=True, help="folder of labelled BraTS-layout cases")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for tables.md, cases/<method>.csv and the figures (resumes what is in it)")  # fmt: skip
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                        help="shipped, model ids or .pt files (NSLF or segmentation baselines), classical:NAME "
                             f"(default: {' '.join(DEFAULT_METHODS)})")  # fmt: skip
    parser.add_argument("--hd95", choices=("pooled", "max"), default="pooled",
                        help="HD95 definition (default pooled: medpy's, as the authors' scripts)")  # fmt: skip
    parser.add_argument("--metrics-2d", type=int, nargs="?", const=120, default=None, metavar="N",
                        help="also FSIM, VIFP, NMI and IFC on N axial slice pairs per case (N default 120, the paper's)")
    parser.add_argument("--no-figures", action="store_true", help="tables only (no matplotlib needed)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--limit", type=int, default=None, help="only the first N cases")
    parser.add_argument("--window", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                        help="every method infers with a sliding window of this size in voxels (default: the whole "
                             "brain box where it fits); e.g. the training crop (group- or instance-norm networks)")  # fmt: skip
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nslfcore.compare import compare
    from nslfcore.data.output import OutputBusyError

    def progress(method: str, i: int, n: int, name: str) -> None:
        print(f"[{method} {i}/{n}] {name}", file=sys.stderr, flush=True)

    try:
        written = compare(args.data, args.out, args.methods, args.device, args.hd95, args.metrics_2d, args.limit,
                          figures=not args.no_figures, progress=progress, window=args.window)  # fmt: skip
    except (ValueError, FileNotFoundError, DataValidationError, ImportError, OutputBusyError) as error:
        print(f"nslf compare: error: {error}", file=sys.stderr)
        return 1
    print("nslf compare: wrote " + ", ".join(str(p) for p in written.values()))
    return 0
