"""``nslf check-data DIR``: list complete, incomplete and rejected cases (see :mod:`nslfcore.data.validation`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check-data",
        help="check a BraTS-style data folder and list usable and unusable cases",
        description="Read every case in DIR (BraTS 2021, BraTS 2023+ or plain-folder layout) and print a table of "
        "complete, incomplete and rejected cases with the reasons. Exits 1 when no case is usable.",
    )
    parser.add_argument("folder", type=Path, metavar="DIR", help="folder holding the cases")
    parser.add_argument("--no-labels", action="store_true", help="do not require segmentation files")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nslfcore.data.validation import check_folder

    try:
        report = check_folder(args.folder, require_label=not args.no_labels)
    except FileNotFoundError as error:
        print(f"error: {error}")
        return 1
    if not report.cases:
        print(f"{args.folder}: no cases found; expected case folders with image files (.nii.gz, .nrrd, .mha).")
        return 1
    print(report.table())
    if not report.usable:
        print(f"error: no usable case in {args.folder}; fix the problems listed above.")
        return 1
    return 0
