"""``nslf baseline --arch NAME``: train a segmentation baseline (:mod:`nslfcore.baseline`).

The networks and their sizes: :mod:`nslfcore.segmentation_baselines`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nslfcore.data.validation import DataValidationError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "baseline", help="train a segmentation baseline (same crops, loss and schedule as NSLF's stage 3)"
    )
    from nslfcore.segmentation_baselines import ARCHITECTURES

    parser.add_argument("--arch", choices=ARCHITECTURES, default="unet", help="the network (default: unet, the plain 3-D U-Net)")
    parser.add_argument("--data", type=Path, required=True, help="BraTS-layout folder (same split rules as nslf train)")
    parser.add_argument("--out", type=Path, required=True, help="folder for baseline_best.pt and baseline_log.jsonl")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--crop", type=int, nargs=3, default=(48, 112, 112), metavar=("Z", "Y", "X"))
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps-per-epoch", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run in --out after its last completed epoch (same settings)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nslfcore.baseline import train_baseline
    from nslfcore.training.run import TrainingSetupError

    if (args.out / "baseline_best.pt").exists() and not args.resume:
        print(f"nslf baseline: error: {args.out / 'baseline_best.pt'} exists; use another --out, or --resume.",
              file=sys.stderr)  # fmt: skip
        return 1
    try:
        path = train_baseline(args.data, args.out, args.epochs, tuple(args.crop), args.lr, args.seed,
                              args.steps_per_epoch, args.device, args.arch, resume=args.resume)  # fmt: skip
    except (TrainingSetupError, DataValidationError, FileNotFoundError, ValueError) as error:
        print(f"nslf baseline: error: {error}", file=sys.stderr)
        return 1
    print(f"nslf baseline: wrote {path}")
    return 0
