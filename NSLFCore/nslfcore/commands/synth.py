"""``nslf synth``: write synthesised training cases in the BraTS 2023 layout (see :mod:`nslfcore.synthesis`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="synthesise domain-randomised training cases (BraTS 2023 layout)",
        description="Synthesise training cases from label maps (MNI152 anatomy with vessels, sinuses, choroid plexus, "
        "white-matter hyperintensities and skull-stripping residue; glioblastoma, non-enhancing glioblastoma, "
        "lower-grade glioma or metastases), with random contrast, slice thickness, bias, noise and ghosting per "
        "sequence: <out>/Synth-XXXXX/Synth-XXXXX-{t1n,t1c,t2w,t2f,seg}.nii.gz, labels {0,1,2,3}. Needs nslfcore[phantom].",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--n", type=int, default=1, help="number of cases")
    parser.add_argument("--seed", type=int, default=0, help="random seed; case i depends only on (seed, i)")
    parser.add_argument("--start", type=int, default=0, help="index of the first case (names Synth-XXXXX)")
    parser.add_argument("--device", default="cpu", help="torch device of the image synthesis (cpu, cuda, cuda:N)")
    parser.add_argument("--overwrite", action="store_true", help="replace cases of the same names already in --out")
    parser.add_argument("--bank", action="store_true",
                        help="write label maps only (a label bank for nslf train --data synth:FOLDER: "
                             "<out>/labels-XXXXX.npy and bank.json; resumes an interrupted bank)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=1, help="with --bank: processes drawing label maps")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nslfcore.commands.case_writing import write_cases
    from nslfcore.synthesis.generator import write_synthetic_dataset

    if args.n < 1:
        print("nslf synth: --n must be at least 1.")
        return 2
    if args.bank:
        return _run_bank(args)
    return write_cases("synth", args, lambda progress: write_synthetic_dataset(
        args.out, args.n, args.seed, args.start, args.device, args.overwrite, progress))


def _run_bank(args: argparse.Namespace) -> int:
    """``nslf synth --bank``: label maps only (:func:`nslfcore.synthesis.bank.write_label_bank`)."""
    from nslfcore.errors import NSLFError
    from nslfcore.synthesis.bank import BankEntry, write_label_bank

    start = time.perf_counter()
    written = [0]

    def progress(entry: BankEntry) -> None:
        written[0] += 1
        print(f"label map {entry.name} ({entry.tumour_type}): {written[0]} new, "
              f"{time.perf_counter() - start:.1f} s", flush=True)  # fmt: skip

    try:
        bank = write_label_bank(args.out, args.n, args.seed, args.start, args.workers, progress)
    except (ModuleNotFoundError, NSLFError) as error:
        print(f"nslf synth: {error}")
        return 1
    total = time.perf_counter() - start
    print(f"label bank {args.out}: {len(bank)} maps ({written[0]} new in {total:.1f} s); "
          f"train with nslf train --data synth:{args.out}")  # fmt: skip
    return 0
