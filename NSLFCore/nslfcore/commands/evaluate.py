"""``nslf evaluate``: per-case CSV and a Markdown summary in the paper's layout (optionally with the U-Net baseline)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nslfcore.data.validation import DataValidationError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate", help="evaluate a model on labelled cases (paper metrics)")
    parser.add_argument("--data", type=Path, required=True, help="folder of labelled BraTS-layout cases")
    parser.add_argument("--model", default=None, help="a model id from models.json or a .pt file (default: the shipped model)")
    parser.add_argument("--out", type=Path, required=True, help="folder for metrics.csv and summary.md")
    parser.add_argument("--baseline", type=Path, default=None, metavar="FILE",
                        help="also evaluate a plain U-Net baseline file (nslf baseline) and add its rows")  # fmt: skip
    parser.add_argument("--device", default="auto")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N cases")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nslfcore.baseline import load_baseline
    from nslfcore.data.brats import find_cases
    from nslfcore.evaluation import evaluate, summary_markdown, write_csv
    from nslfcore.model_store import load_model

    def progress(i: int, n: int, name: str) -> None:
        print(f"[{i}/{n}] {name}", file=sys.stderr)

    try:
        if not args.data.is_dir():
            raise FileNotFoundError(f"--data {args.data}: no such folder.")
        cases = find_cases(args.data)[: args.limit]
        if not cases:
            raise ValueError(f"--data {args.data}: no cases found.")
        model, info = load_model(args.model)
        baseline = load_baseline(args.baseline) if args.baseline is not None else None
        rows = evaluate(cases, model, args.device, progress=progress)
        baseline_rows = evaluate(cases, baseline, args.device, progress=progress) if baseline is not None else None
    except (ValueError, FileNotFoundError, DataValidationError) as error:
        print(f"nslf evaluate: error: {error}", file=sys.stderr)
        return 1
    from nslfcore.data.output import OutputLock, atomic_write_text

    args.out.mkdir(parents=True, exist_ok=True)
    with OutputLock(args.out, "nslf evaluate"):
        written = [write_csv(rows, args.out / "metrics.csv")]
        if baseline_rows is not None:
            written.append(write_csv(baseline_rows, args.out / "metrics_baseline.csv"))
        title = f"NSLF evaluation: {info.id} on {args.data}"
        written.append(atomic_write_text(args.out / "summary.md", summary_markdown(rows, title, baseline_rows)))
    print(f"nslf evaluate: wrote {', '.join(str(p) for p in written)}")
    return 0
