"""``nslf evaluate``: per-case CSV and a Markdown summary in the paper's layout."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nslfcore.data.validation import DataValidationError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate", help="evaluate a model on labelled cases (paper metrics)")
    parser.add_argument("--data", type=Path, required=True, help="folder of labelled BraTS-layout cases")
    parser.add_argument("--model", required=True, help="a model id from models.json or a .pt file")
    parser.add_argument("--out", type=Path, required=True, help="folder for metrics.csv and summary.md")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N cases")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nslfcore.data.brats import find_cases
    from nslfcore.evaluation import evaluate, summary_markdown, write_csv
    from nslfcore.model_store import load_model

    try:
        if not args.data.is_dir():
            raise FileNotFoundError(f"--data {args.data}: no such folder.")
        cases = find_cases(args.data)[: args.limit]
        if not cases:
            raise ValueError(f"--data {args.data}: no cases found.")
        model, info = load_model(args.model)
        rows = evaluate(cases, model, args.device, progress=lambda i, n, name: print(f"[{i}/{n}] {name}", file=sys.stderr))
    except (ValueError, FileNotFoundError, DataValidationError) as error:
        print(f"nslf evaluate: error: {error}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, args.out / "metrics.csv")
    title = f"NSLF evaluation: {info.id if info else args.model} on {args.data}"
    (args.out / "summary.md").write_text(summary_markdown(rows, title))
    print(f"nslf evaluate: wrote {args.out / 'metrics.csv'} and {args.out / 'summary.md'}")
    return 0
